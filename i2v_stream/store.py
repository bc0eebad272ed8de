"""Durable model state in RocksDB (through rocksdict, raw mode).

One daemon process owns a store and writes it; readers (the query service,
exports, CLI snapshots taken while the daemon runs) open it as RocksDB
*secondary* instances and never write to it.

Layout
------
Column families, all keys and values raw bytes:

==============  ==================================  =====================================
family          key                                 value
==============  ==================================  =====================================
``meta``        ASCII name                          see ``META_*`` below
``offsets``     ``topic \\x00 partition(>u4)``       next offset to read, ``<i8``
``users``       row, ``>u4``                        ``count <i8 | vector <f4[dim] |
                                                    recent_items <i4[history_size]``
``items``       row, ``>u4``                        ``count <i8 | noise_count <i8 |
                                                    vector <f4[dim] | input <f4[dim]``
                                                    (``input`` only when ``window > 0``)
``user_ids``    row, ``>u4``                        encoded id
``user_index``  encoded id                          row, ``>u4``
``item_ids``    row, ``>u4``                        encoded id
``item_index``  encoded id                          row, ``>u4``
``changes``     commit sequence number, ``>u8``     item rows changed by it, ``<i4[]``
==============  ==================================  =====================================

Row keys are big-endian, so iterating a family visits rows in row order and a
bulk load is one pass per family. Values are little-endian and fixed-size per
family, so the rows of a family concatenate into one NumPy structured array.
Ids are encoded with their type: ``b"s" + UTF-8`` for ``str`` and
``b"i" + decimal`` for ``int``. The ``changes`` family is a short change log
that lets readers refresh only the item rows a commit touched; the writer
prunes it to the last ``changelog_keep`` commits, and a reader that falls
further behind reloads every item row.

Commit protocol
---------------
``Store.commit(model, offsets)`` makes the effect of a micro-batch durable:

1. Take the changed rows from the model (``model.take_dirty()``) and add
   the rows left over from a commit whose write failed, every row created
   since the last commit, and every item whose noise count differs from the
   persisted one (a noise-table rebuild changes counts of untouched items).
2. Check that the model matches the store (dimension, window, history size,
   row counts never shrinking); refuse with ``StoreMismatchError`` if not.
3. Put, in ONE ``WriteBatch``: every field of those user and item rows, the
   ids of new rows in both directions, the next offset of every partition
   the batch consumed, the metadata (``events_seen``, row counts, commit
   sequence number, commit time) and the change-log entry.
4. Write the batch. RocksDB applies a batch atomically: after a crash either
   all of it is visible or none of it, so the stored offsets always describe
   exactly the stored state, and replaying from them applies each event once.
5. Only after the write succeeds, advance the in-memory record of what is
   persisted (row counts, noise counts). If the write raises, the rows are
   kept and written by the next commit.

The caller commits offsets to Kafka only after step 4, for lag monitoring.

Durability: with the default ``sync=False`` the batch goes to the write-ahead
log (WAL) in the operating system's page cache before ``commit`` returns, so a
process crash (``kill -9``) loses nothing that was committed; a power loss or
kernel crash can lose the last commits (the store stays consistent and the
daemon replays them from the older offsets). ``sync=True`` fsyncs the WAL on
every commit and survives power loss at the price of commit latency.

Only one process may open a store for writing: RocksDB's ``LOCK`` file makes
a second open fail, which is reported as ``StoreLockedError``.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import logging
import operator
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rocksdict import AccessType, Checkpoint, Options, Rdict, WriteBatch, WriteOptions

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

CF_META = "meta"
CF_OFFSETS = "offsets"
CF_USERS = "users"
CF_ITEMS = "items"
CF_USER_IDS = "user_ids"
CF_USER_INDEX = "user_index"
CF_ITEM_IDS = "item_ids"
CF_ITEM_INDEX = "item_index"
CF_CHANGES = "changes"
COLUMN_FAMILIES = (
    CF_META, CF_OFFSETS, CF_USERS, CF_ITEMS, CF_USER_IDS, CF_USER_INDEX,
    CF_ITEM_IDS, CF_ITEM_INDEX, CF_CHANGES,
)

# meta keys; integers are "<i8", the others ASCII or JSON
META_SCHEMA_VERSION = b"schema_version"
META_DIM = b"dim"
META_HISTORY_SIZE = b"history_size"
META_HAS_INPUT = b"has_input_vectors"
META_PARAMS = b"params"
META_EVENTS_SEEN = b"events_seen"
META_N_USERS = b"n_users"
META_N_ITEMS = b"n_items"
META_COMMIT_SEQ = b"commit_seq"
META_CREATED_AT = b"created_at"
META_LAST_COMMIT_AT = b"last_commit_at"
_INT_META = (
    META_SCHEMA_VERSION, META_DIM, META_HISTORY_SIZE, META_HAS_INPUT, META_EVENTS_SEEN,
    META_N_USERS, META_N_ITEMS, META_COMMIT_SEQ,
)
_FLOAT_META = (META_CREATED_AT, META_LAST_COMMIT_AT)


# ---------------------------------------------------------------- errors


class StoreError(Exception):
    """Base class of every error raised by the store and its readers."""


class StoreLockedError(StoreError):
    """Another process holds the store open for writing."""


class StoreSchemaError(StoreError):
    """The store was written with a schema version this code does not read."""


class StoreMismatchError(StoreError):
    """The store and the model (or the requested parameters) disagree."""


class StoreNotFoundError(StoreError):
    """No store exists at the given path."""


class StoreCorruptError(StoreError):
    """The stored rows are inconsistent with the stored metadata."""


# ---------------------------------------------------------------- encoding


def encode_id(value: Any) -> bytes:
    """Encode a user or item id with its type: ``b"s" + utf-8`` or ``b"i" + decimal``."""
    if isinstance(value, str):
        return b"s" + value.encode("utf-8")
    if isinstance(value, (bool, np.bool_)):
        raise StoreError(f"ids must be str or int, got bool {value!r}; convert ids to str")
    try:
        return b"i" + str(operator.index(value)).encode("ascii")
    except TypeError as exc:
        raise StoreError(
            f"ids must be str or int, got {type(value).__name__} {value!r}; "
            "convert ids to str or int before training"
        ) from exc


def decode_id(raw: bytes) -> str | int:
    """Invert :func:`encode_id`."""
    tag, body = raw[:1], raw[1:]
    if tag == b"s":
        return body.decode("utf-8")
    if tag == b"i":
        return int(body)
    raise StoreCorruptError(f"unknown id type tag {tag!r} in stored id {raw!r}")


def row_key(row: int) -> bytes:
    return int(row).to_bytes(4, "big")


def row_keys(rows: np.ndarray) -> list[bytes]:
    """Big-endian uint32 keys for many rows at once."""
    buf = np.asarray(rows, dtype=">u4").tobytes()
    return [buf[i:i + 4] for i in range(0, len(buf), 4)]


def offset_key(topic: str, partition: int) -> bytes:
    return topic.encode("utf-8") + b"\x00" + int(partition).to_bytes(4, "big")


def decode_offset_key(raw: bytes) -> tuple[str, int]:
    # the partition is the last 4 bytes (and may itself contain NUL bytes)
    return raw[:-5].decode("utf-8"), int.from_bytes(raw[-4:], "big")


def _i8(value: int) -> bytes:
    return int(value).to_bytes(8, "little", signed=True)


def _from_i8(raw: bytes) -> int:
    return int.from_bytes(raw, "little", signed=True)


def user_dtype(dim: int, history_size: int) -> np.dtype:
    """Structured dtype of one stored user row."""
    return np.dtype([
        ("count", "<i8"), ("vector", "<f4", (dim,)), ("recent", "<i4", (history_size,)),
    ])


def item_dtype(dim: int, has_input: bool) -> np.dtype:
    """Structured dtype of one stored item row."""
    fields = [("count", "<i8"), ("noise_count", "<i8"), ("vector", "<f4", (dim,))]
    if has_input:
        fields.append(("input", "<f4", (dim,)))
    return np.dtype(fields)


def _split(buf: bytes, size: int) -> list[bytes]:
    return [buf[i:i + size] for i in range(0, len(buf), size)]


def _put_all(batch: WriteBatch, keys: list, values: list, family) -> None:
    # map() runs the puts from C: a Python for loop costs about as much per
    # row as the put itself, and a commit writes thousands of rows.
    collections.deque(map(batch.put, keys, values, itertools.repeat(family)), maxlen=0)


# ---------------------------------------------------------------- state


def _make_state(**fields) -> Any:
    # Imported here: the model imports the compiled kernel, which tools that
    # only inspect a store's metadata do not need.
    from i2v_stream.model import ModelState

    return ModelState(**fields)


@dataclass(frozen=True)
class CommitResult:
    """What one commit wrote; fed to the store metrics.

    Attributes
    ----------
    commit_seq : int
        Sequence number of this commit (1 for the first commit of a store).
    user_rows, item_rows : int
        Rows written.
    new_users, new_items : int
        Rows created since the previous commit.
    bytes_written : int
        Size of the WriteBatch in bytes.
    build_seconds, write_seconds : float
        Time to assemble the batch and to write it.
    duration_seconds : float
        Whole commit.
    """

    commit_seq: int
    user_rows: int
    item_rows: int
    new_users: int
    new_items: int
    bytes_written: int
    build_seconds: float
    write_seconds: float
    duration_seconds: float


# ---------------------------------------------------------------- opening


def _options(create: bool) -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(create)
    opts.create_missing_column_families(create)
    return opts


def _cf_options() -> dict[str, Options]:
    return {name: Options(raw_mode=True) for name in COLUMN_FAMILIES}


def store_exists(path: str | os.PathLike) -> bool:
    """True if ``path`` holds a RocksDB database (its ``CURRENT`` file)."""
    return (Path(path) / "CURRENT").is_file()


def _check_families(path: Path) -> None:
    try:
        families = set(Rdict.list_cf(str(path), Options(raw_mode=True)))
    except Exception as exc:  # rocksdict raises plain Exception
        raise StoreError(f"cannot read the column families of {path}: {exc}") from exc
    missing = set(COLUMN_FAMILIES) - families
    unknown = families - set(COLUMN_FAMILIES) - {"default"}
    if missing or unknown:
        raise StoreSchemaError(
            f"{path} is not an i2v-stream store of schema version {SCHEMA_VERSION} "
            f"(missing column families {sorted(missing)}, unknown {sorted(unknown)}); "
            "point --store at an i2v-stream store or at a new directory"
        )


def _open_rdict(path: Path, access: str, secondary_path: str | None = None) -> Rdict:
    """Open a RocksDB database with every column family; map errors to StoreError."""
    if access != "write" and not store_exists(path):
        raise StoreNotFoundError(f"no store at {path}; check --store or start the daemon first")
    if store_exists(path):
        _check_families(path)
    opts = _options(create=access == "write")
    if access == "write":
        access_type = AccessType.read_write()
    elif access == "secondary":
        # A secondary keeps every file open so that SST files the primary
        # deletes after a compaction stay readable until the next catch-up.
        opts.set_max_open_files(-1)
        access_type = AccessType.secondary(str(secondary_path))
    else:
        access_type = AccessType.read_only(False)
    try:
        return Rdict(str(path), options=opts, column_families=_cf_options(),
                     access_type=access_type)
    except Exception as exc:  # rocksdict raises plain Exception
        message = str(exc)
        if access == "write" and ("LOCK" in message or "lock" in message):
            raise StoreLockedError(
                f"store {path} is already open for writing by another process "
                f"(RocksDB: {message}); stop the daemon that owns it, or read it "
                "through a secondary instance (query, export and snapshot do)"
            ) from exc
        raise StoreError(f"cannot open store {path} ({access}): {message}") from exc


class StoreView:
    """Read access to a store's rows, ids, offsets and metadata.

    Base of the writer (:class:`Store`) and of the secondary-instance readers.
    ``catch_up()`` is meaningful only for secondary instances.
    """

    def __init__(self, path: str | os.PathLike, db: Rdict, access: str,
                 secondary_dir: str | None = None, owns_secondary_dir: bool = False):
        self.path = Path(path)
        self.access = access
        self._db = db
        self._cf = {name: db.get_column_family(name) for name in COLUMN_FAMILIES}
        self._secondary_dir = secondary_dir
        self._owns_secondary_dir = owns_secondary_dir

    # -- opening

    @classmethod
    def open_secondary(cls, path: str | os.PathLike,
                       secondary_path: str | os.PathLike | None = None) -> "StoreView":
        """Open ``path`` as a RocksDB secondary instance (never writes to the store).

        Parameters
        ----------
        path : path-like
            The store directory.
        secondary_path : path-like, optional
            Directory for the secondary's own info log; a fresh temporary
            directory (removed on ``close``) when omitted.
        """
        owns = secondary_path is None
        sec = tempfile.mkdtemp(prefix="i2v-secondary-") if owns else str(secondary_path)
        try:
            db = _open_rdict(Path(path), "secondary", sec)
        except StoreError:
            if owns:
                shutil.rmtree(sec, ignore_errors=True)
            raise
        view = cls(path, db, "secondary", sec, owns)
        view._check_schema()
        return view

    @classmethod
    def open_read_only(cls, path: str | os.PathLike) -> "StoreView":
        """Open a store that no process writes (a snapshot, a stopped daemon's store)."""
        view = cls(path, _open_rdict(Path(path), "read_only"), "read_only")
        view._check_schema()
        return view

    def close(self) -> None:
        """Release the RocksDB handle (and the temporary secondary directory)."""
        if self._db is not None:
            # column-family handles keep the database alive: drop them first,
            # or RocksDB's LOCK stays held after close
            self._cf = {}
            self._db.close()
            self._db = None
        if self._owns_secondary_dir and self._secondary_dir:
            shutil.rmtree(self._secondary_dir, ignore_errors=True)
            self._secondary_dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def catch_up(self) -> None:
        """Apply the primary's newer writes (secondary instances only).

        RocksDB replays whole WAL records, so a commit's batch becomes visible
        at once or not at all.
        """
        if self.access != "secondary":
            return
        try:
            self._db.try_catch_up_with_primary()
        except Exception as exc:  # rocksdict raises plain Exception
            raise StoreError(f"catch-up with the writer of {self.path} failed: {exc}") from exc

    # -- metadata

    def _get_meta(self, key: bytes) -> bytes | None:
        return self._cf[CF_META].get(key)

    def metadata(self) -> dict[str, Any]:
        """Every metadata entry, decoded; ``{}`` for a store never initialised."""
        out: dict[str, Any] = {}
        for key, raw in self._cf[CF_META].items():
            if key in _INT_META:
                out[key.decode()] = _from_i8(raw)
            elif key in _FLOAT_META:
                out[key.decode()] = float(raw.decode("ascii"))
            elif key == META_PARAMS:
                out["params"] = json.loads(raw.decode("utf-8"))
            else:
                out[key.decode()] = raw
        return out

    def _meta_int(self, key: bytes, default: int = 0) -> int:
        raw = self._get_meta(key)
        return default if raw is None else _from_i8(raw)

    @property
    def initialised(self) -> bool:
        return self._get_meta(META_SCHEMA_VERSION) is not None

    @property
    def dim(self) -> int | None:
        raw = self._get_meta(META_DIM)
        return None if raw is None else _from_i8(raw)

    @property
    def events_seen(self) -> int:
        return self._meta_int(META_EVENTS_SEEN)

    @property
    def n_users(self) -> int:
        return self._meta_int(META_N_USERS)

    @property
    def n_items(self) -> int:
        return self._meta_int(META_N_ITEMS)

    @property
    def commit_seq(self) -> int:
        return self._meta_int(META_COMMIT_SEQ)

    def _check_schema(self) -> None:
        raw = self._get_meta(META_SCHEMA_VERSION)
        if raw is not None and _from_i8(raw) != SCHEMA_VERSION:
            raise StoreSchemaError(
                f"store {self.path} has schema version {_from_i8(raw)}, this version of "
                f"i2v-stream reads version {SCHEMA_VERSION}; use the matching i2v-stream "
                "release or export the store and retrain into a new --store path"
            )

    def _layout(self) -> tuple[int, int, bool]:
        dim = self.dim
        if dim is None:
            raise StoreError(f"store {self.path} holds no model yet; commit a model first")
        return dim, self._meta_int(META_HISTORY_SIZE), bool(self._meta_int(META_HAS_INPUT))

    def raw_items(self, family: str):
        """Every ``(key, value)`` of a column family, in key order, as raw bytes."""
        return self._cf[family].items()

    def offsets(self) -> dict[tuple[str, int], int]:
        """Next offset to consume per ``(topic, partition)``."""
        return {decode_offset_key(k): _from_i8(v) for k, v in self._cf[CF_OFFSETS].items()}

    # -- rows

    def _read_family(self, name: str, dtype: np.dtype, expected: int) -> np.ndarray:
        """All rows of a row-keyed family as a structured array, checked against ``expected``."""
        family = self._cf[name]
        values = list(family.values())
        # Keys are unique big-endian rows in order: n of them running from 0 to
        # n - 1 are exactly the rows 0..n-1, so two keys check them all.
        first = next(iter(family.keys()), None)
        last = next(iter(family.keys(backwards=True)), None)
        if len(values) != expected or (expected and (
                first != row_key(0) or last != row_key(expected - 1))):
            raise StoreCorruptError(
                f"family {name} of {self.path} holds {len(values)} rows, metadata says "
                f"{expected}; restore a snapshot (i2v-stream snapshot restore)"
            )
        data = b"".join(values)
        del values
        if len(data) != expected * dtype.itemsize:
            raise StoreCorruptError(
                f"family {name} of {self.path}: rows are not {dtype.itemsize} bytes each; "
                "the store was written with another layout, restore a snapshot"
            )
        return np.frombuffer(data, dtype=dtype)

    def _read_ids(self, name: str, expected: int) -> list:
        ids = [decode_id(value) for value in self._cf[name].values()]
        if len(ids) != expected:
            raise StoreCorruptError(
                f"family {name} of {self.path} holds {len(ids)} ids, metadata says {expected}"
            )
        return ids

    def read_users(self) -> np.ndarray:
        """Every user row as a structured array (``count``, ``vector``, ``recent``)."""
        dim, history_size, _ = self._layout()
        return self._read_family(CF_USERS, user_dtype(dim, history_size), self.n_users)

    def read_items(self) -> np.ndarray:
        """Every item row as a structured array (``count``, ``noise_count``, ``vector``[,
        ``input``])."""
        dim, _, has_input = self._layout()
        return self._read_family(CF_ITEMS, item_dtype(dim, has_input), self.n_items)

    def read_item_rows(self, rows: Iterable[int]) -> np.ndarray:
        """Selected item rows (one multi-get) as a structured array."""
        dim, _, has_input = self._layout()
        keys = row_keys(np.asarray(list(rows), dtype=np.int64))
        values = self._cf[CF_ITEMS][keys] if keys else []
        if any(v is None for v in values):
            raise StoreCorruptError(f"item rows missing from {self.path}")
        return np.frombuffer(b"".join(values), dtype=item_dtype(dim, has_input))

    def read_user_ids(self) -> list:
        return self._read_ids(CF_USER_IDS, self.n_users)

    def read_item_ids(self) -> list:
        return self._read_ids(CF_ITEM_IDS, self.n_items)

    def read_item_ids_from(self, start: int, stop: int) -> list:
        """Item ids of rows ``start <= row < stop``."""
        keys = row_keys(np.arange(start, stop))
        values = self._cf[CF_ITEM_IDS][keys] if keys else []
        return [decode_id(v) for v in values]

    def user_row(self, user_id: Any) -> int | None:
        """Row of a user id, or None when the store does not know it."""
        raw = self._cf[CF_USER_INDEX].get(encode_id(user_id))
        return None if raw is None else int.from_bytes(raw, "big")

    def item_row(self, item_id: Any) -> int | None:
        """Row of an item id, or None when the store does not know it."""
        raw = self._cf[CF_ITEM_INDEX].get(encode_id(item_id))
        return None if raw is None else int.from_bytes(raw, "big")

    def read_user(self, row: int) -> np.void:
        """One user row (a structured scalar)."""
        dim, history_size, _ = self._layout()
        raw = self._cf[CF_USERS].get(row_key(row))
        if raw is None:
            raise StoreCorruptError(f"user row {row} missing from {self.path}")
        return np.frombuffer(raw, dtype=user_dtype(dim, history_size))[0]

    def changed_items_since(self, commit_seq: int) -> np.ndarray | None:
        """Item rows changed by the commits after ``commit_seq``.

        Returns None when the change log no longer reaches back that far (the
        caller reloads every item row).
        """
        head = self.commit_seq
        if head <= commit_seq:
            return np.empty(0, dtype=np.int64)
        entries = self._cf[CF_CHANGES].items(from_key=(commit_seq + 1).to_bytes(8, "big"))
        parts, expected = [], commit_seq + 1
        for key, value in entries:
            seq = int.from_bytes(key, "big")
            if seq != expected:
                return None
            if seq > head:
                break
            parts.append(np.frombuffer(value, dtype="<i4"))
            expected += 1
        if expected <= head:
            return None
        if not parts:
            return np.empty(0, dtype=np.int64)
        return np.unique(np.concatenate(parts)).astype(np.int64)

    def load_state(self) -> Any:
        """The whole stored model state (``ModelState`` when the model module exists).

        The arrays are read-only, non-contiguous views of the rows read
        (little-endian, the dtypes of ``ModelState``); copy them to modify.
        """
        meta = self.metadata()
        if not meta:
            raise StoreError(f"store {self.path} holds no model yet; commit a model first")
        users, items = self.read_users(), self.read_items()
        dim, history_size, has_input = self._layout()
        # Field views of the row buffers, not copies: from_state copies them into
        # its own tables, and a second copy here would double the load time.
        return _make_state(
            params=meta.get("params", {}),
            user_ids=self.read_user_ids(),
            item_ids=self.read_item_ids(),
            user_vectors=users["vector"],
            item_vectors=items["vector"],
            item_input_vectors=items["input"] if has_input else None,
            user_counts=users["count"],
            item_counts=items["count"],
            noise_counts=items["noise_count"],
            recent_items=users["recent"].reshape(len(users), history_size),
            events_seen=int(meta.get("events_seen", 0)),
        )

    def load_model(self):
        """An ``Interact2Vec`` rebuilt from the stored rows (``from_state``)."""
        from i2v_stream.model import Interact2Vec

        return Interact2Vec.from_state(self.load_state())

    def size_bytes(self) -> int:
        """Bytes of the files in the store directory."""
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())


# ---------------------------------------------------------------- writer


class Store(StoreView):
    """The single writer of a store. Open with :meth:`Store.open`.

    Parameters of :meth:`open` and :meth:`commit` are documented there; the
    commit protocol is in the module docstring.
    """

    def __init__(self, path, db, sync: bool, changelog_keep: int):
        super().__init__(path, db, "write")
        self.sync = sync
        self.changelog_keep = int(changelog_keep)
        self._write_options = WriteOptions()
        self._write_options.sync = bool(sync)
        self._persisted_users = self.n_users
        self._persisted_items = self.n_items
        self._persisted_noise: np.ndarray | None = None
        self._pending_users = np.empty(0, dtype=np.int64)
        self._pending_items = np.empty(0, dtype=np.int64)

    @classmethod
    def open(cls, path: str | os.PathLike, params: Mapping[str, Any] | None = None,
             sync: bool = False, changelog_keep: int = 4096) -> "Store":
        """Create or open the store at ``path`` for writing.

        Parameters
        ----------
        path : path-like
            Store directory (created when missing).
        params : mapping, optional
            The model's ``get_params()``. On a new store it fixes ``dim``,
            ``window`` and ``history_size``; on an existing one these must
            match or ``StoreMismatchError`` is raised.
        sync : bool
            fsync the WAL on every commit (survives power loss; slower).
        changelog_keep : int
            Commits kept in the change log readers refresh from.

        Raises
        ------
        StoreLockedError
            Another process has the store open for writing.
        StoreSchemaError, StoreMismatchError
            The store is of another schema version or another dimension.
        """
        path = Path(path)
        db = _open_rdict(path, "write")
        store = cls(path, db, sync, changelog_keep)
        try:
            store._check_schema()
            if params is not None:
                store._check_params(dict(params))
        except StoreError:
            store.close()
            raise
        logger.info("store opened path=%s n_users=%d n_items=%d events_seen=%d sync=%s",
                    path, store.n_users, store.n_items, store.events_seen, sync)
        return store

    def _check_params(self, params: dict) -> None:
        if not self.initialised:
            return
        stored = self._get_meta(META_PARAMS)
        stored_params = json.loads(stored) if stored else {}
        dim = self.dim
        if "dim" in params and int(params["dim"]) != dim:
            raise StoreMismatchError(
                f"store {self.path} holds vectors of dim={dim}, the configuration asks for "
                f"dim={params['dim']}; set dim={dim} or use a new --store path"
            )
        for name in ("window", "history_size"):
            if name in params and name in stored_params and params[name] != stored_params[name]:
                raise StoreMismatchError(
                    f"store {self.path} was created with {name}={stored_params[name]}, the "
                    f"configuration asks for {name}={params[name]}; set {name}="
                    f"{stored_params[name]} or use a new --store path"
                )

    def _check_state(self, state) -> tuple[int, int, bool]:
        dim = int(state.user_vectors.shape[1])
        history_size = int(state.recent_items.shape[1])
        has_input = state.item_input_vectors is not None
        if self.initialised:
            stored = self._layout()
            if stored != (dim, history_size, has_input):
                raise StoreMismatchError(
                    f"store {self.path} holds dim={stored[0]} history_size={stored[1]} "
                    f"input_vectors={stored[2]}, the model has dim={dim} "
                    f"history_size={history_size} input_vectors={has_input}; commit a model "
                    "loaded with store.load_model() or use a new --store path"
                )
        n_users, n_items = len(state.user_ids), len(state.item_ids)
        if n_users < self._persisted_users or n_items < self._persisted_items:
            raise StoreMismatchError(
                f"the model has {n_users} users and {n_items} items, the store already "
                f"holds {self._persisted_users} and {self._persisted_items}; commit the model "
                "returned by store.load_model(), not a fresh one"
            )
        return dim, history_size, has_input

    def _noise_baseline(self, n_items: int) -> np.ndarray:
        if self._persisted_noise is None:
            if self._persisted_items:
                self._persisted_noise = np.array(self.read_items()["noise_count"])
            else:
                self._persisted_noise = np.empty(0, dtype=np.int64)
        if len(self._persisted_noise) < n_items:
            grown = np.full(n_items, -1, dtype=np.int64)
            grown[:len(self._persisted_noise)] = self._persisted_noise
            self._persisted_noise = grown
        return self._persisted_noise

    def commit(self, model, offsets: Mapping[tuple[str, int], int] | None = None,
               full: bool = False) -> CommitResult:
        """Persist the model's changed rows and the offsets in one atomic write.

        Parameters
        ----------
        model : Interact2Vec
            The model; its ``take_dirty()`` is called (it resets the tracking).
        offsets : mapping of (topic, partition) to int
            Next offset to consume for every partition this batch read from.
            Partitions not mentioned keep their stored offset.
        full : bool
            Write every row, not only the changed ones (first save of a model
            trained offline, or a rewrite).

        Returns
        -------
        CommitResult
        """
        started = time.perf_counter()

        # 1. collect the rows to write
        dirty_users, dirty_items = model.take_dirty()
        state = model.state()
        dim, history_size, has_input = self._check_state(state)
        n_users, n_items = len(state.user_ids), len(state.item_ids)
        noise = np.asarray(state.noise_counts, dtype=np.int64)
        baseline = self._noise_baseline(n_items)
        if full:
            user_rows, item_rows = np.arange(n_users), np.arange(n_items)
        else:
            user_rows = np.union1d(np.asarray(dirty_users, dtype=np.int64), self._pending_users)
            user_rows = np.union1d(user_rows, np.arange(self._persisted_users, n_users))
            item_rows = np.union1d(np.asarray(dirty_items, dtype=np.int64), self._pending_items)
            item_rows = np.union1d(item_rows, np.arange(self._persisted_items, n_items))
            item_rows = np.union1d(item_rows, np.flatnonzero(baseline[:n_items] != noise))
        user_rows = user_rows.astype(np.int64)
        item_rows = item_rows.astype(np.int64)

        # 2-3. one WriteBatch with rows, new ids, offsets, metadata, change log
        commit_seq = self.commit_seq + 1
        try:
            batch = self._build_batch(state, user_rows, item_rows, offsets or {}, commit_seq,
                                      dim, history_size, has_input)
        except Exception:
            self._keep_pending(user_rows, item_rows)
            raise
        batch_bytes = batch.size_in_bytes()
        built = time.perf_counter()

        # 4. the atomic write
        try:
            self._db.write(batch, self._write_options)
        except Exception as exc:  # rocksdict raises plain Exception
            self._keep_pending(user_rows, item_rows)
            raise StoreError(
                f"commit {commit_seq} to {self.path} failed: {exc}; its rows are kept for "
                "the next commit, check free disk space and the RocksDB LOG"
            ) from exc
        written = time.perf_counter()

        # 5. advance what is known to be persisted
        new_users = n_users - self._persisted_users
        new_items = n_items - self._persisted_items
        baseline[item_rows] = noise[item_rows]
        self._persisted_users, self._persisted_items = n_users, n_items
        self._pending_users = np.empty(0, dtype=np.int64)
        self._pending_items = np.empty(0, dtype=np.int64)
        result = CommitResult(
            commit_seq=commit_seq, user_rows=len(user_rows), item_rows=len(item_rows),
            new_users=new_users, new_items=new_items, bytes_written=batch_bytes,
            build_seconds=built - started, write_seconds=written - built,
            duration_seconds=time.perf_counter() - started,
        )
        logger.debug(
            "commit seq=%d user_rows=%d item_rows=%d new_users=%d new_items=%d bytes=%d "
            "seconds=%.4f", commit_seq, result.user_rows, result.item_rows, new_users,
            new_items, result.bytes_written, result.duration_seconds,
        )
        return result

    def _keep_pending(self, user_rows: np.ndarray, item_rows: np.ndarray) -> None:
        self._pending_users = np.union1d(self._pending_users, user_rows)
        self._pending_items = np.union1d(self._pending_items, item_rows)

    def _build_batch(self, state, user_rows, item_rows, offsets, commit_seq, dim,
                     history_size, has_input) -> WriteBatch:
        batch = WriteBatch(raw_mode=True)
        handle = {name: self._db.get_column_family_handle(name) for name in COLUMN_FAMILIES}

        # user rows: every field, one fixed-size record each
        users = np.empty(len(user_rows), dtype=user_dtype(dim, history_size))
        users["count"] = state.user_counts[user_rows]
        users["vector"] = state.user_vectors[user_rows]
        users["recent"] = state.recent_items[user_rows]
        _put_all(batch, row_keys(user_rows), _split(users.tobytes(), users.itemsize),
                 handle[CF_USERS])

        items = np.empty(len(item_rows), dtype=item_dtype(dim, has_input))
        items["count"] = state.item_counts[item_rows]
        items["noise_count"] = state.noise_counts[item_rows]
        items["vector"] = state.item_vectors[item_rows]
        if has_input:
            items["input"] = state.item_input_vectors[item_rows]
        _put_all(batch, row_keys(item_rows), _split(items.tobytes(), items.itemsize),
                 handle[CF_ITEMS])

        # ids of the rows created since the last commit, both directions
        for ids_cf, index_cf, ids, start in (
            (CF_USER_IDS, CF_USER_INDEX, state.user_ids, self._persisted_users),
            (CF_ITEM_IDS, CF_ITEM_INDEX, state.item_ids, self._persisted_items),
        ):
            for row in range(start, len(ids)):
                encoded, key = encode_id(ids[row]), row_key(row)
                batch.put(key, encoded, handle[ids_cf])
                batch.put(encoded, key, handle[index_cf])

        for (topic, partition), next_offset in offsets.items():
            batch.put(offset_key(topic, partition), _i8(next_offset), handle[CF_OFFSETS])

        # change log for readers; pruned in chunks so tombstones stay few
        seq_key = commit_seq.to_bytes(8, "big")
        batch.put(seq_key, np.asarray(item_rows, dtype="<i4").tobytes(), handle[CF_CHANGES])
        if commit_seq % 256 == 0 and commit_seq > self.changelog_keep:
            end = (commit_seq - self.changelog_keep).to_bytes(8, "big")
            batch.delete_range(bytes(8), end, handle[CF_CHANGES])

        meta = handle[CF_META]
        now = repr(time.time()).encode("ascii")
        if not self.initialised:
            batch.put(META_SCHEMA_VERSION, _i8(SCHEMA_VERSION), meta)
            batch.put(META_DIM, _i8(dim), meta)
            batch.put(META_HISTORY_SIZE, _i8(history_size), meta)
            batch.put(META_HAS_INPUT, _i8(int(has_input)), meta)
            batch.put(META_CREATED_AT, now, meta)
        batch.put(META_PARAMS, json.dumps(_jsonable(state.params), sort_keys=True).encode(),
                  meta)
        batch.put(META_EVENTS_SEEN, _i8(state.events_seen), meta)
        batch.put(META_N_USERS, _i8(len(state.user_ids)), meta)
        batch.put(META_N_ITEMS, _i8(len(state.item_ids)), meta)
        batch.put(META_COMMIT_SEQ, _i8(commit_seq), meta)
        batch.put(META_LAST_COMMIT_AT, now, meta)
        return batch

    def checkpoint(self, target: str | os.PathLike) -> None:
        """Write a RocksDB checkpoint (hard-linked SST files) of the current state.

        Taken between commits, it holds exactly the last committed batch.
        ``target`` must not exist yet.
        """
        try:
            Checkpoint(self._db).create_checkpoint(str(target))
        except Exception as exc:  # rocksdict raises plain Exception
            raise StoreError(f"checkpoint of {self.path} into {target} failed: {exc}") from exc

    def flush(self) -> None:
        """Flush memtables to SST files (shorter WAL replay on the next open)."""
        self._db.flush()


def _jsonable(params: Mapping[str, Any]) -> dict:
    out = {}
    for key, value in dict(params).items():
        if isinstance(value, np.generic):
            value = value.item()
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        out[key] = value
    return out

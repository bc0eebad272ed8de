"""Snapshots of a store: RocksDB checkpoints, listed, retained and restorable.

A snapshot is a directory that is itself a complete store: it opens on its
own (``Store.open`` or ``StoreView.open_read_only``) and holds the offsets
of the state it contains, so restoring it and replaying the topic from those
offsets reproduces the live state.

Where snapshots live: ``<store>/../snapshots/`` by default (a ``snapshots``
directory next to the store directory), or any ``snapshot_dir``. Names are
``<UTC time>-events<events_seen>``, e.g. ``20250101T120000.000000Z-events1200``,
so that sorting by name sorts by time.

Creating a snapshot
-------------------
1. The checkpoint is written into ``.tmp-<name>`` inside the snapshot
   directory, so ``list`` never sees a half-written snapshot.
2. A small ``i2v-snapshot.json`` (events_seen, offsets, commit sequence,
   creation time) is written next to the RocksDB files, so listing does not
   open every snapshot.
3. The directory is renamed to ``<name>`` (atomic on one file system), then
   the oldest snapshots beyond ``keep`` are deleted.

How the checkpoint is taken depends on who holds the store:

- The daemon (the writer) passes its :class:`~i2v_stream.store.Store`:
  ``Checkpoint`` hard-links the SST files and copies the rest; it takes
  milliseconds and is consistent because the daemon calls it between commits.
- Without a writer handle (the CLI), the store is opened for writing if no
  process holds it, and checkpointed the same way.
- If a daemon holds the store, the snapshot is a *logical copy* read from a
  secondary instance: every key of every column family is copied into a new
  database at the state of the secondary's last catch-up (a commit boundary).
  This costs time and disk in proportion to the store's size, because
  rocksdict's ``Checkpoint`` of a secondary instance succeeds but contains
  no data files (measured with rocksdict 0.3.29: the checkpoint holds only
  ``CURRENT`` and the ``MANIFEST``), so it cannot be used.

Sizes reported by ``list`` are apparent sizes: hard-linked SST files are
shared with the store and with other snapshots and counted in each.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rocksdict import Rdict, WriteBatch

from i2v_stream.store import (
    COLUMN_FAMILIES,
    Store,
    StoreError,
    StoreLockedError,
    StoreView,
    _cf_options,
    _options,
    store_exists,
)

logger = logging.getLogger(__name__)

SNAPSHOT_INFO_FILE = "i2v-snapshot.json"
_COPY_BATCH_ENTRIES = 20_000


class SnapshotError(StoreError):
    """A snapshot could not be created, found or restored."""


@dataclass
class SnapshotInfo:
    """One snapshot, as ``list`` reports it.

    Attributes
    ----------
    name : str
        Directory name inside the snapshot directory.
    path : str
        Full path of the snapshot (a store directory).
    created_at : float
        Unix time of creation, seconds.
    events_seen : int
        Events applied to the state the snapshot holds.
    commit_seq : int
        Store commit the snapshot holds.
    offsets : dict
        ``"topic:partition" -> next offset`` (JSON keys), see :meth:`offset_map`.
    size_bytes : int
        Apparent size of the snapshot's files.
    method : str
        ``"checkpoint"`` (hard links) or ``"copy"`` (logical copy, see module docs).
    """

    name: str
    path: str
    created_at: float
    events_seen: int
    commit_seq: int
    offsets: dict = field(default_factory=dict)
    size_bytes: int = 0
    method: str = "checkpoint"

    def age_seconds(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.created_at

    def offset_map(self) -> dict[tuple[str, int], int]:
        """Offsets keyed by ``(topic, partition)``."""
        out = {}
        for key, value in self.offsets.items():
            topic, _, partition = key.rpartition(":")
            out[(topic, int(partition))] = int(value)
        return out

    def to_json(self, now: float | None = None) -> dict:
        out = asdict(self)
        out["age_seconds"] = round(self.age_seconds(now), 3)
        out["created_at_utc"] = _utc(self.created_at).isoformat()
        return out


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


def snapshot_name(created_at: float, events_seen: int) -> str:
    """``<UTC time>-events<events_seen>``; lexical order is time order."""
    return f"{_utc(created_at):%Y%m%dT%H%M%S.%fZ}-events{int(events_seen)}"


def default_snapshot_dir(store_path: str | os.PathLike) -> Path:
    """``snapshots`` next to the store directory."""
    return Path(store_path).resolve().parent / "snapshots"


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def _offsets_json(offsets: dict[tuple[str, int], int]) -> dict[str, int]:
    return {f"{topic}:{partition}": int(value)
            for (topic, partition), value in sorted(offsets.items())}


class SnapshotManager:
    """Create, list, restore and prune the snapshots of one store.

    Parameters
    ----------
    store_path : path-like
        The live store directory.
    snapshot_dir : path-like, optional
        Where snapshots go; :func:`default_snapshot_dir` when omitted.
    keep : int, optional
        Keep the newest ``keep`` snapshots after each ``create``; None keeps all.
    """

    def __init__(self, store_path: str | os.PathLike,
                 snapshot_dir: str | os.PathLike | None = None, keep: int | None = None):
        if keep is not None and int(keep) < 1:
            raise SnapshotError(f"keep must be >= 1 or None, got {keep!r}")
        self.store_path = Path(store_path)
        self.snapshot_dir = (Path(snapshot_dir) if snapshot_dir is not None
                             else default_snapshot_dir(store_path))
        self.keep = None if keep is None else int(keep)

    # ------------------------------------------------------------ create

    def create(self, store: Store | None = None, now: float | None = None) -> SnapshotInfo:
        """Snapshot the store's last committed state.

        Parameters
        ----------
        store : Store, optional
            The writer's handle (the daemon passes it, between commits). Without
            it the store is opened for writing, or copied from a secondary
            instance when another process holds it (see the module docstring).
        now : float, optional
            Unix time to name the snapshot by (tests).
        """
        started = time.perf_counter()
        created_at = time.time() if now is None else float(now)
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.snapshot_dir / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
        try:
            # 1. the checkpoint, into a temporary name
            if store is not None:
                info = self._checkpoint(store, tmp)
            else:
                try:
                    with Store.open(self.store_path) as own:
                        info = self._checkpoint(own, tmp)
                except StoreLockedError:
                    logger.info("store is held by a writer; copying from a secondary "
                                "instance path=%s", self.store_path)
                    info = self._copy_from_secondary(tmp)

            # 2-3. metadata file, then the atomic rename
            name = snapshot_name(created_at, info["events_seen"])
            target = self.snapshot_dir / name
            suffix = 1
            while target.exists():
                target = self.snapshot_dir / f"{name}.{suffix}"
                suffix += 1
            snapshot = SnapshotInfo(name=target.name, path=str(target), created_at=created_at,
                                    size_bytes=_dir_size(tmp), **info)
            record = asdict(snapshot)
            record.pop("path")
            (tmp / SNAPSHOT_INFO_FILE).write_text(json.dumps(record, indent=1))
            os.rename(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        logger.info("snapshot created name=%s events_seen=%d method=%s seconds=%.3f",
                    snapshot.name, snapshot.events_seen, snapshot.method,
                    time.perf_counter() - started)
        if self.keep is not None:
            self.prune(self.keep)
        return snapshot

    @staticmethod
    def _checkpoint(store: Store, tmp: Path) -> dict:
        info = {"events_seen": store.events_seen, "commit_seq": store.commit_seq,
                "offsets": _offsets_json(store.offsets()), "method": "checkpoint"}
        store.checkpoint(tmp)
        return info

    def _copy_from_secondary(self, tmp: Path) -> dict:
        with StoreView.open_secondary(self.store_path) as view:
            view.catch_up()
            info = {"events_seen": view.events_seen, "commit_seq": view.commit_seq,
                    "offsets": _offsets_json(view.offsets()), "method": "copy"}
            db = Rdict(str(tmp), options=_options(create=True), column_families=_cf_options())
            try:
                for name in COLUMN_FAMILIES:
                    handle = db.get_column_family_handle(name)
                    batch = WriteBatch(raw_mode=True)
                    for key, value in view.raw_items(name):
                        batch.put(key, value, handle)
                        if len(batch) >= _COPY_BATCH_ENTRIES:
                            db.write(batch)
                            batch = WriteBatch(raw_mode=True)
                    if len(batch):
                        db.write(batch)
                    del handle
                db.flush()
            except Exception as exc:  # rocksdict raises plain Exception
                raise SnapshotError(
                    f"copying {self.store_path} into a snapshot failed: {exc}; check free "
                    "disk space in the snapshot directory"
                ) from exc
            finally:
                db.close()
        return info

    # ------------------------------------------------------------ list

    def list(self) -> list[SnapshotInfo]:
        """Every complete snapshot, oldest first."""
        if not self.snapshot_dir.is_dir():
            return []
        out = []
        for path in sorted(self.snapshot_dir.iterdir()):
            if path.name.startswith(".") or not store_exists(path):
                continue
            out.append(self._read_info(path))
        out.sort(key=lambda s: (s.created_at, s.name))
        return out

    def _read_info(self, path: Path) -> SnapshotInfo:
        info_file = path / SNAPSHOT_INFO_FILE
        if info_file.is_file():
            record = json.loads(info_file.read_text())
            record["path"] = str(path)
            record["name"] = path.name
            return SnapshotInfo(**record)
        # a snapshot copied by hand without its info file: read the store itself
        with StoreView.open_read_only(path) as view:
            meta = view.metadata()
            return SnapshotInfo(
                name=path.name, path=str(path),
                created_at=meta.get("last_commit_at", path.stat().st_mtime),
                events_seen=view.events_seen, commit_seq=view.commit_seq,
                offsets=_offsets_json(view.offsets()), size_bytes=_dir_size(path))

    def get(self, name: str) -> SnapshotInfo:
        """The snapshot called ``name`` (``"latest"`` for the newest one)."""
        snapshots = self.list()
        if name == "latest" and snapshots:
            return snapshots[-1]
        for snapshot in snapshots:
            if snapshot.name == name:
                return snapshot
        known = ", ".join(s.name for s in snapshots[-5:]) or "none"
        raise SnapshotError(
            f"no snapshot {name!r} in {self.snapshot_dir} (newest: {known}); run "
            "`i2v-stream snapshot list` for the names"
        )

    def latest(self) -> SnapshotInfo | None:
        snapshots = self.list()
        return snapshots[-1] if snapshots else None

    # ------------------------------------------------------------ prune

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` snapshots; returns the deleted names."""
        if int(keep) < 1:
            raise SnapshotError(f"keep must be >= 1, got {keep!r}")
        removed = []
        for snapshot in self.list()[:-int(keep)]:
            shutil.rmtree(snapshot.path)
            removed.append(snapshot.name)
            logger.info("snapshot deleted name=%s keep=%d", snapshot.name, keep)
        return removed

    # ------------------------------------------------------------ restore

    def restore(self, name: str, target_path: str | os.PathLike | None = None,
                overwrite: bool = False) -> Path:
        """Copy snapshot ``name`` to ``target_path`` (default: the store path).

        SST files are hard-linked (RocksDB never modifies them in place),
        the rest is copied. An existing store at the target is replaced only
        with ``overwrite=True``, and never while a process holds it open.
        Readers (secondary instances) of the replaced store keep the old
        files open: restart them after a restore.

        Returns
        -------
        Path
            The restored store directory.
        """
        snapshot = self.get(name)
        target = Path(target_path) if target_path is not None else self.store_path
        if target.exists() and any(target.iterdir()):
            if not overwrite:
                what = "a live store" if store_exists(target) else "a non-empty directory"
                raise SnapshotError(
                    f"{target} is {what}; pass overwrite=True (--force) to replace it, or "
                    "restore into a new directory"
                )
            if store_exists(target):
                try:
                    Store.open(target).close()
                except StoreLockedError as exc:
                    raise SnapshotError(
                        f"{target} is open by a running writer; stop the daemon before "
                        "restoring over its store"
                    ) from exc

        tmp = target.with_name(f".{target.name}.restoring-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for source in Path(snapshot.path).iterdir():
                if source.name == SNAPSHOT_INFO_FILE or not source.is_file():
                    continue
                if source.suffix == ".sst":
                    os.link(source, tmp / source.name)
                else:
                    shutil.copy2(source, tmp / source.name)
            if target.exists():
                old = target.with_name(f".{target.name}.replaced-{os.getpid()}")
                os.rename(target, old)
                os.rename(tmp, target)
                shutil.rmtree(old)
            else:
                os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        with StoreView.open_read_only(target) as view:
            if view.events_seen != snapshot.events_seen:
                raise SnapshotError(
                    f"restored {target} holds events_seen={view.events_seen}, the snapshot "
                    f"recorded {snapshot.events_seen}; the snapshot is damaged, restore "
                    "an older one"
                )
        logger.info("snapshot restored name=%s target=%s events_seen=%d", snapshot.name,
                    target, snapshot.events_seen)
        return target


class SnapshotScheduler:
    """Decides when the daemon snapshots: every N seconds and/or every N events.

    The daemon calls :meth:`maybe_snapshot` after each commit (between
    commits, so the checkpoint holds exactly a committed batch).

    Parameters
    ----------
    store : Store
        The daemon's writer handle.
    manager : SnapshotManager
        Where snapshots go and how many are kept.
    every_seconds : float, optional
        Snapshot when this much time passed since the last one.
    every_events : int, optional
        Snapshot when this many events were applied since the last one.
    """

    def __init__(self, store: Store, manager: SnapshotManager,
                 every_seconds: float | None = None, every_events: int | None = None):
        if every_seconds is None and every_events is None:
            raise SnapshotError("set every_seconds and/or every_events for snapshots")
        self.store = store
        self.manager = manager
        self.every_seconds = every_seconds
        self.every_events = every_events
        latest = manager.latest()
        self.last_time = latest.created_at if latest else None
        self.last_events = latest.events_seen if latest else store.events_seen
        self.last_duration_seconds: float | None = None

    def due(self, events_seen: int, now: float) -> bool:
        if events_seen == self.last_events:
            return False      # nothing new to save
        if self.every_events is not None and events_seen - self.last_events >= \
                self.every_events:
            return True
        if self.every_seconds is not None:
            return self.last_time is None or now - self.last_time >= self.every_seconds
        return False

    def maybe_snapshot(self, events_seen: int, now: float | None = None) -> SnapshotInfo | None:
        """Take a snapshot if one is due; returns it, or None."""
        now = time.time() if now is None else now
        if not self.due(events_seen, now):
            return None
        started = time.perf_counter()
        snapshot = self.manager.create(self.store, now=now)
        self.last_duration_seconds = time.perf_counter() - started
        self.last_time, self.last_events = now, snapshot.events_seen
        return snapshot

    def age_seconds(self, now: float | None = None) -> float | None:
        """Seconds since the last snapshot (for ``i2v_snapshot_age_seconds``)."""
        if self.last_time is None:
            return None
        return (time.time() if now is None else now) - self.last_time

"""Queries over a store that a daemon is writing, through a RocksDB secondary instance.

:class:`StoreReader` never touches the writer's handle and never writes to
the store: it opens the store directory as a RocksDB *secondary* instance
(its own info log lives in a separate directory) and replays the writer's
newer WAL records and SST files on :meth:`StoreReader.catch_up`. A catch-up
applies whole write batches, so a reader always sees the state after some
commit, never half of one.

(rocksdict rewrites its small ``rocksdict-config.json`` in the store
directory with the same content each time any instance opens it; the
database itself, its rows and sequence numbers, is never written.)

Freshness
---------
By default the reader catches up *on access*: a query that finds the last
catch-up older than ``catch_up_interval`` seconds catches up first, so an
idle reader does no work. ``background=True`` instead runs a daemon thread
that catches up every ``catch_up_interval`` seconds, so queries never pay
for it. :meth:`staleness_seconds` is the time since the last successful
catch-up: the writer's commits of the last that many seconds may not be
visible yet. :meth:`last_commit_age_seconds` is the other view, the age of
the newest commit the reader sees (it also grows while the writer is idle).

Scoring
-------
The item matrix, the item ids and the popularity prior stay in memory, so a
top-N query is one BLAS matrix-vector product and one ``argpartition``. For
cosine scoring the matrix holds the item vectors already divided by their
norms (zero rows stay zero and score 0), so a query needs no pass over the
norms; scores agree with ``Interact2Vec`` to float32 rounding (matrix-vector
and matrix-matrix products round differently), not bit for bit.
Users are read from the store per query (one point lookup), so memory does
not grow with the number of users. On catch-up only the item rows that the
new commits changed are re-read, found in the store's change log; a reader
that fell behind further than the log reaches (or a store that was restored
to an older commit) reloads every item row. Ranking follows
``Interact2Vec.recommend`` and ``similar_items``: dot product or cosine (the
stored ``scoring`` parameter) against the item (context) vectors, plus
``popularity_prior * log(count)`` of each item in ``recommend`` (not in
``similar_items``), ties by item row; ``exclude_seen`` drops the items of the
user's stored recent-items ring. Item counts, hence the prior, are refreshed
with the rows on catch-up.

Thread safety: every public method takes one lock, so the reader can be
shared by the threads of an HTTP server (queries run one at a time; BLAS
releases the GIL, so other Python work continues meanwhile).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Sequence

import numpy as np

from i2v_stream import _topn

from i2v_stream.model import UnknownIdError
from i2v_stream.store import StoreView

logger = logging.getLogger(__name__)

__all__ = ["StoreReader", "UnknownIdError"]


# Below this many items one matrix-vector product is cheap enough on its own;
# without fast byte dot products (see _topn.FAST_INT8) it is never used.
QUANTIZED_MIN_ITEMS = 20_000 if _topn.FAST_INT8 else sys.maxsize


class QuantizedItems:
    """An int8 copy of the scoring matrix for exact top-N (see ``_topn``).

    Kept in step with the float32 rows by :meth:`update`; rows past the
    float matrix's valid prefix are ignored by callers.
    """

    def __init__(self, items: np.ndarray):
        self.codes, self.scales, self.norms_l1 = _topn.quantize_rows(
            items if items.ndim == 2 else np.zeros((0, 0), np.float32))

    def update(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        needed = int(rows.max()) + 1 if len(rows) else 0
        if needed > len(self.scales):
            capacity = max(needed, 2 * len(self.scales), 1024)
            width = max(self.codes.shape[1], _topn.quantize_rows(vectors[:1])[0].shape[1])
            codes = np.full((capacity, width), 128, dtype=np.uint8)
            codes[: len(self.codes), : self.codes.shape[1]] = self.codes
            self.codes = codes
            self.scales = _extended(self.scales, capacity)
            self.norms_l1 = _extended(self.norms_l1, capacity)
        _topn.set_rows(self.codes, self.scales, self.norms_l1, rows, vectors)

    def candidates(self, n_rows: int, query: np.ndarray, prior, k: int,
                   exclude=None) -> np.ndarray:
        """Rows among the first ``n_rows``, ``exclude`` left out, that may be in the top ``k``."""
        return _topn.candidates(self.codes[:n_rows], self.scales[:n_rows],
                                self.norms_l1[:n_rows], query,
                                None if prior is None else prior[:n_rows], k, exclude)


def _extended(array: np.ndarray, capacity: int) -> np.ndarray:
    out = np.zeros(capacity, dtype=array.dtype)
    out[: len(array)] = array
    return out


class StoreReader:
    """Read-only view of a store for queries; see the module docstring.

    Parameters
    ----------
    path : path-like
        The store directory (the one the daemon writes).
    catch_up_interval : float or None
        Seconds between catch-ups; ``None`` catches up only when
        :meth:`catch_up` is called.
    secondary_path : path-like, optional
        Directory for the secondary instance's own files; a temporary one
        (removed on :meth:`close`) when omitted.
    background : bool
        Catch up from a daemon thread instead of on access.
    """

    def __init__(self, path: str | os.PathLike, catch_up_interval: float | None = 1.0,
                 secondary_path: str | os.PathLike | None = None, background: bool = False):
        self.path = path
        self.catch_up_interval = catch_up_interval
        self.catch_ups = 0
        self._lock = threading.RLock()
        self._view = StoreView.open_secondary(path, secondary_path)
        # rows of the scoring matrix: unit item vectors (cosine) or the vectors (dot)
        self._items = np.zeros((0, 0), dtype=np.float32)
        # the int8 copy, built by the first query that uses it (never where
        # QUANTIZED_MIN_ITEMS is not reached) and then kept in step
        self._quantized: QuantizedItems | None = None
        self._item_ids: list = []
        self._n_items = 0
        self._commit_seq = -1
        self._cosine = True
        # popularity_prior * log(max(count, 1)) per item row, added by recommend
        self._prior: np.ndarray | None = None
        self._popularity_prior = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with self._lock:
            self._reload_items()
            self._last_catch_up = time.monotonic()
        if background and catch_up_interval:
            self._thread = threading.Thread(target=self._run, name="i2v-reader-catch-up",
                                            daemon=True)
            self._thread.start()

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the catch-up thread and release the secondary instance."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._view.close()

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.wait(self.catch_up_interval):
            try:
                self.catch_up()
            except Exception:  # keep serving the last good state; logged with the cause
                logger.exception("catch-up failed path=%s", self.path)

    # ------------------------------------------------------------ freshness

    def catch_up(self) -> bool:
        """Apply the writer's newer commits; True if any were new."""
        with self._lock:
            old_seq, old_n = self._commit_seq, self._n_items
            self._view.catch_up()
            self._last_catch_up = time.monotonic()
            self.catch_ups += 1
            new_seq = self._view.commit_seq
            if new_seq == old_seq:
                return False
            changed = None if new_seq < old_seq else self._view.changed_items_since(old_seq)
            if changed is None or self._items.shape[1] == 0:
                logger.info("reader reloads all item rows path=%s from_seq=%d to_seq=%d",
                            self.path, old_seq, new_seq)
                self._reload_items()
                return True
            n_items = self._view.n_items
            self._grow(n_items)
            self._item_ids.extend(self._view.read_item_ids_from(old_n, n_items))
            rows = np.union1d(changed, np.arange(old_n, n_items)).astype(np.int64)
            if len(rows):
                records = self._view.read_item_rows(rows)
                self._items[rows] = self._scoring_rows(records["vector"])
                if self._quantized is not None:
                    self._quantized.update(rows, self._items[rows])
                if self._prior is not None:
                    self._prior[rows] = self._prior_of(records["count"])
            self._n_items, self._commit_seq = n_items, new_seq
            logger.debug("reader caught up path=%s seq=%d changed_items=%d n_items=%d",
                         self.path, new_seq, len(rows), n_items)
            return True

    def staleness_seconds(self) -> float:
        """Seconds since the last successful catch-up."""
        return time.monotonic() - self._last_catch_up

    def last_commit_age_seconds(self) -> float | None:
        """Wall-clock seconds since the writer's newest commit that this reader sees.

        Grows while the writer is idle even if the reader is current; None
        for a store never committed to.
        """
        with self._lock:
            raw = self._view.metadata().get("last_commit_at")
        return None if raw is None else time.time() - raw

    def _maybe_catch_up(self) -> None:
        if (self._thread is None and self.catch_up_interval is not None
                and self.staleness_seconds() >= self.catch_up_interval):
            self.catch_up()

    def _reload_items(self) -> None:
        view = self._view
        self._commit_seq = view.commit_seq
        if not view.initialised:
            self._items = np.zeros((0, 0), dtype=np.float32)
            self._quantized = None
            self._item_ids, self._n_items = [], 0
            return
        params = view.metadata().get("params", {})
        self._cosine = params.get("scoring", "dot") == "cosine"
        # a store written before the prior existed has no such parameter: no prior
        self._popularity_prior = float(params.get("popularity_prior", 0.0))
        records = view.read_items()
        self._items = self._scoring_rows(records["vector"])
        self._quantized = None
        self._prior = self._prior_of(records["count"]) if self._popularity_prior else None
        self._item_ids = view.read_item_ids()
        self._n_items = len(self._item_ids)

    def _prior_of(self, counts: np.ndarray) -> np.ndarray:
        counts = np.maximum(np.asarray(counts, dtype=np.int64), 1)
        return self._popularity_prior * np.log(counts).astype(np.float32)

    def _scoring_rows(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.array(vectors, dtype=np.float32, order="C")
        if self._cosine:
            norms = np.linalg.norm(vectors, axis=1)
            np.divide(vectors, norms[:, None], out=vectors, where=norms[:, None] > 0)
        return vectors

    def _grow(self, n_items: int) -> None:
        capacity = len(self._items)
        if n_items <= capacity:
            return
        capacity = max(n_items, 2 * capacity, 1024)
        items = np.zeros((capacity, self._items.shape[1]), dtype=np.float32)
        items[:self._n_items] = self._items[:self._n_items]
        self._items = items
        if self._prior is not None:
            prior = np.zeros(capacity, dtype=np.float32)
            prior[:self._n_items] = self._prior[:self._n_items]
            self._prior = prior

    # ------------------------------------------------------------ lookups

    @property
    def n_items(self) -> int:
        return self._n_items

    @property
    def n_users(self) -> int:
        with self._lock:
            return self._view.n_users

    @property
    def events_seen(self) -> int:
        with self._lock:
            return self._view.events_seen

    def _user(self, user: Any) -> np.void:
        row = self._view.user_row(user)
        if row is None:
            raise UnknownIdError("user", user)
        return self._view.read_user(row)

    def _item_row(self, item: Any) -> int:
        row = self._view.item_row(item)
        if row is None or row >= self._n_items:
            raise UnknownIdError("item", item)
        return row

    def user_vector(self, user: Any) -> np.ndarray:
        """The user's vector, float32 ``(dim,)``; ``UnknownIdError`` if unknown."""
        with self._lock:
            self._maybe_catch_up()
            return np.array(self._user(user)["vector"], dtype=np.float32)

    def item_vector(self, item: Any) -> np.ndarray:
        """The item's (context) vector, float32 ``(dim,)``; ``UnknownIdError`` if unknown."""
        with self._lock:
            self._maybe_catch_up()
            row = self._item_row(item)
            return np.array(self._view.read_item_rows([row])["vector"][0], dtype=np.float32)

    def seen_items(self, user: Any) -> list:
        """Ids of the user's most recent items (the stored ring, oldest slot first)."""
        with self._lock:
            self._maybe_catch_up()
            recent = self._user(user)["recent"]
            return [self._item_ids[r] for r in recent if 0 <= r < self._n_items]

    # ------------------------------------------------------------ scoring

    def _scores(self, vectors: np.ndarray, prior: bool) -> np.ndarray:
        # vectors (dim,) or (k, dim) -> (n_items,) or (k, n_items), as Interact2Vec scores
        if self._cosine:
            norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        scores = vectors @ self._items[:self._n_items].T
        if prior and self._prior is not None:
            scores += self._prior[:self._n_items]
        return scores

    def _top(self, scores: np.ndarray, n: int, exclude) -> list[tuple[Any, float]]:
        # Interact2Vec._top's selection and tie-breaking (by row), on a scratch array
        n_valid = len(scores)
        if exclude is not None and len(exclude):
            exclude = np.unique(exclude)
            scores[exclude] = -np.inf
            n_valid -= len(exclude)
        n = min(n, n_valid)
        if n <= 0:
            return []
        cut = len(scores) - n
        top = np.argpartition(scores, cut)[cut:]
        top = top[np.lexsort((top, -scores[top]))]
        ids = self._item_ids
        return [(ids[r], float(scores[r])) for r in top]

    def _top_quantized(self, vector: np.ndarray, n: int, exclude,
                       prior: bool) -> list[tuple[Any, float]]:
        # The same answer as _top(_scores(...)): the int8 pass keeps every row
        # not excluded that can reach the top n, and those are rescored exactly.
        if self._cosine:
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        prior_rows = self._prior if prior else None
        if self._quantized is None:
            self._quantized = QuantizedItems(self._items[:self._n_items])
        rows = self._quantized.candidates(self._n_items, vector, prior_rows, n, exclude)
        scores = self._items[rows] @ vector
        if prior_rows is not None:
            scores += prior_rows[rows]
        order = np.lexsort((rows, -scores))[:n]
        ids = self._item_ids
        return [(ids[r], float(s)) for r, s in zip(rows[order], scores[order])]

    @staticmethod
    def _check_n(n: int) -> int:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        return int(n)

    def _seen_rows(self, record: np.void) -> np.ndarray:
        recent = record["recent"]
        return recent[(recent >= 0) & (recent < self._n_items)]

    def recommend(self, user: Any, n: int = 10,
                  exclude_seen: bool = True) -> list[tuple[Any, float]]:
        """Top ``n`` items for ``user`` as ``(item id, score)``, best first.

        An unknown user raises :class:`UnknownIdError` (a ``KeyError``).
        """
        n = self._check_n(n)
        with self._lock:
            self._maybe_catch_up()
            record = self._user(user)
            vector = np.asarray(record["vector"], dtype=np.float32)
            exclude = self._seen_rows(record) if exclude_seen else None
            if self._n_items >= QUANTIZED_MIN_ITEMS:
                return self._top_quantized(vector, n, exclude, prior=True)
            return self._top(self._scores(vector, prior=True), n, exclude)

    def similar_items(self, item: Any, n: int = 10) -> list[tuple[Any, float]]:
        """Top ``n`` items most similar to ``item`` (itself excluded), best first."""
        n = self._check_n(n)
        with self._lock:
            self._maybe_catch_up()
            row = self._item_row(item)
            vector = np.asarray(self._view.read_item_rows([row])["vector"][0], np.float32)
            if self._n_items >= QUANTIZED_MIN_ITEMS:
                return self._top_quantized(vector, n, np.array([row]), prior=False)
            return self._top(self._scores(vector, prior=False), n, np.array([row]))

    def recommend_many(self, users: Sequence[Any], n: int = 10, exclude_seen: bool = True,
                       chunk_size: int = 256) -> list[list[tuple[Any, float]] | None]:
        """:meth:`recommend` for many users; one matrix-matrix product per chunk.

        Returns one list per user, in the order given; ``None`` for an unknown
        user (a batch is not failed by one unknown id).
        """
        n = self._check_n(n)
        out: list[list[tuple[Any, float]] | None] = [None] * len(users)
        with self._lock:
            self._maybe_catch_up()
            known = []
            for position, user in enumerate(users):
                try:
                    known.append((position, self._user(user)))
                except UnknownIdError:
                    continue
            for start in range(0, len(known), chunk_size):
                chunk = known[start:start + chunk_size]
                vectors = np.stack([np.asarray(r["vector"], dtype=np.float32)
                                    for _, r in chunk])
                scores = self._scores(vectors, prior=True)
                for k, (position, record) in enumerate(chunk):
                    exclude = self._seen_rows(record) if exclude_seen else None
                    out[position] = self._top(scores[k], n, exclude)
        return out

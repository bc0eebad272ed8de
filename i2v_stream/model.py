"""Interact2Vec: user and item embeddings from implicit feedback, trained online.

The model keeps three float32 tables (``dim`` columns, one row per id, grown by
doubling so that adding a row never copies per event):

- ``user_vectors`` U, the target side of user -> item pairs;
- ``item_vectors`` V, the context side of every pair (what recommendations and
  similar items are computed from);
- ``item_input_vectors`` W, the target side of item -> item pairs, only when
  ``window > 0``.

Training is skip-gram with negative sampling, run by the Cython kernel in
``i2v_stream._sgns``. :meth:`Interact2Vec.learn_many` is one online pass over
events in the given order; :meth:`Interact2Vec.fit` runs the same kernel over
several epochs of a fixed data set.

Online semantics
----------------
- A new user or item gets a row on first sight. Reads (``recommend``,
  ``similar_items``) never create rows: an unknown id raises
  :class:`UnknownIdError`.
- Item counts are updated as events arrive. Subsampling uses them at once.
  The noise distribution (count ** alpha) is an alias table rebuilt from the
  counts at fixed points of the global event sequence: after events 1, 2, 4, 8,
  ... while that is below ``noise_refresh``, then every ``noise_refresh``
  events. So negatives are drawn from counts at most ``noise_refresh`` events
  old, and an item seen for the first time is drawable after the next rebuild.
- Event number ``k`` of the stream draws its random numbers from a stream
  seeded by ``(seed, k)``, and rebuilds happen at fixed ``k``: the result
  depends only on the seed and the order of events, not on how they are cut
  into ``learn_many`` calls. A process that persists :meth:`state` and replays
  the remaining events reproduces an uninterrupted run bit for bit.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import compress, repeat
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from i2v_stream import _sgns

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1

# fit(workers > 1): tables up to this size train on private copies merged
# every MERGED_ROUND_EVENTS events; larger ones are shared lock-free.
MERGED_TABLE_BYTES = 8 << 20
MERGED_ROUND_EVENTS = 50_000
_INT_TYPES = (int, np.integer)


class UnknownIdError(KeyError):
    """A read asked for a user or item the model has never seen."""

    def __init__(self, kind: str, key: Any):
        super().__init__(key)
        self.kind = kind
        self.key = key

    def __str__(self) -> str:
        return f"unknown {self.kind} {self.key!r}: it has no events yet"


@dataclass
class BatchStats:
    """What one call of :meth:`Interact2Vec.learn_many` did.

    ``events`` applied, ``trained`` events that were not subsampled away,
    ``loss`` the mean SGNS loss per trained pair (NaN when none was trained).
    """

    events: int
    trained: int
    loss: float


@dataclass
class ModelState:
    """The whole state of a model, as arrays of the valid rows.

    See ``notes`` in :meth:`Interact2Vec.state`; persisting exactly these
    fields and restoring them with :meth:`Interact2Vec.from_state` resumes
    training bit for bit.
    """

    params: dict
    user_ids: list
    item_ids: list
    user_vectors: np.ndarray
    item_vectors: np.ndarray
    item_input_vectors: np.ndarray | None
    user_counts: np.ndarray
    item_counts: np.ndarray
    noise_counts: np.ndarray
    recent_items: np.ndarray
    events_seen: int


class IdIndex:
    """Ids (str or int) <-> dense rows, in order of first sight."""

    def __init__(self, ids: Iterable = ()):
        self.ids: list = []
        self.rows: dict = {}
        for key in ids:
            self.add(key)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, key) -> int:
        row = self.rows.get(key)
        if row is None:
            row = len(self.ids)
            self.rows[key] = row
            self.ids.append(key)
        return row

    def get(self, key):
        return self.rows.get(normalize_id(key))

    def rows_for(self, keys: Sequence) -> np.ndarray:
        """Rows of ``keys``, adding unseen ids in order of first sight."""
        # Lookups run as map() over dict.get, in C. Keys of any type but str
        # and int (a bool would hash like 0 or 1, a float like an int) are
        # validated and normalised first; unseen ids are added once each.
        found = list(map(self.rows.get, keys))
        odd_types = set(map(type, keys)) - {str, int}
        if None in found or odd_types:
            known = len(self.ids)
            try:
                if odd_types:
                    keys = [normalize_id(key) for key in keys]
                    found = list(map(self.rows.get, keys))
                unseen = dict.fromkeys(compress(keys, map(operator.is_, found, repeat(None))))
                for key in unseen:
                    self.add(normalize_id(key))
            except ValueError:
                # A bad id anywhere in the batch adds none of the batch's new ids.
                self.truncate(known)
                raise
            if unseen:
                found = list(map(self.rows.get, keys))
        return np.fromiter(found, dtype=np.int32, count=len(found))

    def truncate(self, n: int) -> None:
        """Forget every id added after the first ``n``."""
        for key in self.ids[n:]:
            del self.rows[key]
        del self.ids[n:]


def normalize_id(key):
    """Return ``key`` as a plain ``str`` or ``int``; anything else is a ValueError."""
    if isinstance(key, str):
        if not key:
            raise ValueError("ids must be non-empty strings or integers, got ''")
        return key
    if isinstance(key, (bool, np.bool_)):
        raise ValueError(f"ids must be strings or integers, got the boolean {key!r}")
    if isinstance(key, _INT_TYPES):
        return int(key)
    if isinstance(key, np.str_):
        return normalize_id(str(key))
    raise ValueError(f"ids must be strings or integers, got {type(key).__name__} {key!r}")


def _check_range(name: str, value, low=None, high=None, *, kind=float,
                 low_open=False, text=None):
    if kind is int:
        ok_type = isinstance(value, _INT_TYPES) and not isinstance(value, bool)
    else:
        ok_type = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(
            value, bool)
    if ok_type:
        value = kind(value)
    finite = ok_type and np.isfinite(value)
    in_range = finite and (low is None or (value > low if low_open else value >= low)) and (
        high is None or value <= high)
    if not in_range:
        if text is None:
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            text = f"{kind.__name__} in {'(' if low_open else '['}{lo}, {hi}]"
        raise ValueError(f"{name} must be {text}, got {value!r}")
    return value


class Interact2Vec:
    """User and item embeddings by skip-gram with negative sampling.

    Parameters
    ----------
    dim : int
        Vector size (columns of every table).
    negatives : int
        Noise items drawn per positive pair, 0..64.
    window : int
        Item -> item objective over the user's last ``window`` items; 0 = off.
    alpha : float
        Exponent of the noise distribution P(n) ~ count(n) ** alpha; negative
        values favour rare items.
    sample : float
        Subsampling threshold of frequent items (word2vec's formula); 0 = off.
        Off by default: in catalogues of thousands of items every item is
        "frequent" at 1e-3 and subsampling throws most events away.
    learning_rate : float
        SGD step. ``learn_many`` uses it as is; ``fit`` decays it linearly to
        ``min_learning_rate`` over all its epochs.
    min_learning_rate : float
        Floor of ``fit``'s schedule.
    repeats : int
        SGD steps per event in ``learn_many`` (fresh negatives each time); one
        online pass otherwise under-learns.
    l2 : float
        Weight decay on every row an update touches (row *= 1 - lr * l2).
    epochs : int
        Default number of passes of ``fit``.
    init : {"uniform", "word2vec"}
        "uniform": every row uniform in [-init_scale, init_scale];
        "word2vec": target rows uniform in [-0.5/dim, 0.5/dim], item rows zero.
    init_scale : float
        Half-width of the "uniform" initialisation.
    history_size : int
        Recent items kept per user (for ``window`` and ``exclude_seen``).
    noise_refresh : int
        Events between rebuilds of the noise table (bounded staleness).
    scoring : {"cosine", "dot"}
        How ``recommend`` and ``similar_items`` rank items.
    popularity_prior : float
        ``recommend`` adds ``popularity_prior * log(count)`` of each item to its
        score. SGNS fits u.v ~ log P(i | u) - log P_noise(i) + const, so the
        log of the noise prior turns scores back into (log) conditional
        probabilities; 0 ranks by the score alone.
    exact_sigmoid : bool
        Exact logistic function instead of a 1024-cell table.
    seed : int
        Seed of every random choice (initialisation, negatives, subsampling).
    """

    _PARAM_NAMES = (
        "dim", "negatives", "window", "alpha", "sample", "learning_rate",
        "min_learning_rate", "repeats", "l2", "epochs", "init", "init_scale",
        "history_size", "noise_refresh", "scoring", "popularity_prior", "exact_sigmoid",
        "seed",
    )

    def __init__(
        self,
        dim: int = 100,
        negatives: int = 5,
        window: int = 0,
        alpha: float = 0.75,
        sample: float = 0.0,
        learning_rate: float = 0.04,
        min_learning_rate: float = 1e-4,
        repeats: int = 1,
        l2: float = 0.02,
        epochs: int = 40,
        init: str = "uniform",
        init_scale: float = 0.05,
        history_size: int = 256,
        noise_refresh: int = 10_000,
        scoring: str = "dot",
        popularity_prior: float = 0.75,
        exact_sigmoid: bool = False,
        seed: int = 0,
    ):
        self.dim = _check_range("dim", dim, 1, 4096, kind=int)
        self.negatives = _check_range("negatives", negatives, 0,
                                      _sgns.MAX_NEGATIVES_PER_PAIR, kind=int)
        self.window = _check_range("window", window, 0, kind=int)
        self.alpha = _check_range("alpha", alpha, -10.0, 10.0)
        self.sample = _check_range("sample", sample, 0.0, 1.0)
        self.learning_rate = _check_range("learning_rate", learning_rate, 0.0, 10.0,
                                          low_open=True)
        self.min_learning_rate = _check_range("min_learning_rate", min_learning_rate, 0.0,
                                              self.learning_rate,
                                              text=f"in [0, learning_rate={learning_rate}]")
        self.repeats = _check_range("repeats", repeats, 1, 100, kind=int)
        self.l2 = _check_range("l2", l2, 0.0, 1.0)
        self.epochs = _check_range("epochs", epochs, 1, 100_000, kind=int)
        if init not in ("uniform", "word2vec"):
            raise ValueError(f"init must be 'uniform' or 'word2vec', got {init!r}")
        self.init = init
        self.init_scale = _check_range("init_scale", init_scale, 0.0, 10.0)
        self.history_size = _check_range("history_size", history_size, 0, 1_000_000,
                                         kind=int)
        if self.window > self.history_size:
            raise ValueError(
                f"window must be <= history_size={self.history_size}, got {self.window}")
        self.noise_refresh = _check_range("noise_refresh", noise_refresh, 1, kind=int)
        if scoring not in ("cosine", "dot"):
            raise ValueError(f"scoring must be 'cosine' or 'dot', got {scoring!r}")
        self.scoring = scoring
        self.popularity_prior = _check_range("popularity_prior", popularity_prior, 0.0, 100.0)
        if not isinstance(exact_sigmoid, (bool, np.bool_)):
            raise ValueError(f"exact_sigmoid must be a bool, got {exact_sigmoid!r}")
        self.exact_sigmoid = bool(exact_sigmoid)
        self.seed = _check_range("seed", seed, 0, 2**63 - 1, kind=int)

        self._users = IdIndex()
        self._items = IdIndex()
        self._events_seen = 0
        self._total_count = 0
        self._capacity_users = 0
        self._capacity_items = 0
        self._user_table = np.zeros((0, self.dim), np.float32)
        self._item_table = np.zeros((0, self.dim), np.float32)
        self._item_input_table = np.zeros((0, self.dim), np.float32) if self.window else None
        self._user_counts = np.zeros(0, np.int64)
        self._item_counts = np.zeros(0, np.int64)
        self._noise_counts = np.zeros(0, np.int64)
        self._recent = np.zeros((0, self.history_size), np.int32)
        self._user_dirty = np.zeros(0, np.uint8)
        self._item_dirty = np.zeros(0, np.uint8)
        self._noise_prob = np.zeros(0, np.float32)
        self._noise_alias = np.zeros(0, np.int32)
        self._unit_items: np.ndarray | None = None

    # ------------------------------------------------------------------
    # Parameters and state

    def get_params(self) -> dict:
        """Every constructor argument, JSON-serialisable."""
        return {name: getattr(self, name) for name in self._PARAM_NAMES}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"Interact2Vec({args})"

    @property
    def n_users(self) -> int:
        return len(self._users)

    @property
    def n_items(self) -> int:
        return len(self._items)

    @property
    def events_seen(self) -> int:
        """Events applied by ``learn_many`` so far (the global sequence number)."""
        return self._events_seen

    @property
    def user_ids(self) -> list:
        return list(self._users.ids)

    @property
    def item_ids(self) -> list:
        return list(self._items.ids)

    @property
    def user_vectors(self) -> np.ndarray:
        return _read_only(self._user_table[: self.n_users])

    @property
    def item_vectors(self) -> np.ndarray:
        return _read_only(self._item_table[: self.n_items])

    @property
    def item_input_vectors(self) -> np.ndarray | None:
        if self._item_input_table is None:
            return None
        return _read_only(self._item_input_table[: self.n_items])

    @property
    def user_counts(self) -> np.ndarray:
        return _read_only(self._user_counts[: self.n_users])

    @property
    def item_counts(self) -> np.ndarray:
        return _read_only(self._item_counts[: self.n_items])

    def user_row(self, user) -> int:
        """Row of ``user``; :class:`UnknownIdError` if it has no events."""
        row = self._users.get(user)
        if row is None:
            raise UnknownIdError("user", user)
        return row

    def item_row(self, item) -> int:
        """Row of ``item``; :class:`UnknownIdError` if it has no events."""
        row = self._items.get(item)
        if row is None:
            raise UnknownIdError("item", item)
        return row

    def state(self) -> ModelState:
        """The model's whole state, as views of the valid rows (no copies).

        ``recent_items`` is a ring per user: the k-th event (0-based) of user u
        sits in slot ``k % history_size``, -1 marks an empty slot.
        ``noise_counts`` are the item counts the current noise table was built
        from.
        """
        n_users, n_items = self.n_users, self.n_items
        return ModelState(
            params=self.get_params(),
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            user_vectors=self._user_table[:n_users],
            item_vectors=self._item_table[:n_items],
            item_input_vectors=(None if self._item_input_table is None
                                else self._item_input_table[:n_items]),
            user_counts=self._user_counts[:n_users],
            item_counts=self._item_counts[:n_items],
            noise_counts=self._noise_counts[:n_items],
            recent_items=self._recent[:n_users],
            events_seen=self._events_seen,
        )

    @classmethod
    def from_state(cls, state: ModelState) -> "Interact2Vec":
        """Rebuild a model from :meth:`state` (arrays are copied)."""
        model = cls(**state.params)
        n_users, n_items = len(state.user_ids), len(state.item_ids)
        shapes = {
            "user_vectors": (state.user_vectors, (n_users, model.dim)),
            "item_vectors": (state.item_vectors, (n_items, model.dim)),
            "user_counts": (state.user_counts, (n_users,)),
            "item_counts": (state.item_counts, (n_items,)),
            "noise_counts": (state.noise_counts, (n_items,)),
            "recent_items": (state.recent_items, (n_users, model.history_size)),
        }
        if model.window:
            shapes["item_input_vectors"] = (state.item_input_vectors, (n_items, model.dim))
        for name, (array, shape) in shapes.items():
            if array is None or np.shape(array) != shape:
                raise ValueError(
                    f"state.{name} must have shape {shape}, got "
                    f"{None if array is None else np.shape(array)}")
        model._users = IdIndex(normalize_id(key) for key in state.user_ids)
        model._items = IdIndex(normalize_id(key) for key in state.item_ids)
        if len(model._users) != n_users or len(model._items) != n_items:
            raise ValueError("state.user_ids and state.item_ids must not repeat an id")
        model._grow(n_users, n_items)
        model._user_table[:n_users] = state.user_vectors
        model._item_table[:n_items] = state.item_vectors
        if model.window:
            model._item_input_table[:n_items] = state.item_input_vectors
        model._user_counts[:n_users] = state.user_counts
        model._item_counts[:n_items] = state.item_counts
        model._noise_counts[:n_items] = state.noise_counts
        model._recent[:n_users] = state.recent_items
        model._events_seen = int(state.events_seen)
        model._total_count = int(model._item_counts[:n_items].sum())
        model._build_noise_table(model._noise_counts[:n_items])
        return model

    def take_dirty(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows (user, item) changed since the last call, new rows included."""
        users = np.flatnonzero(self._user_dirty[: self.n_users]).astype(np.int64)
        items = np.flatnonzero(self._item_dirty[: self.n_items]).astype(np.int64)
        self._user_dirty[:] = 0
        self._item_dirty[:] = 0
        return users, items

    # ------------------------------------------------------------------
    # Tables

    def _grow(self, n_users: int, n_items: int) -> None:
        """Make room for ``n_users`` and ``n_items`` rows (their values are set elsewhere)."""
        if n_users > self._capacity_users:
            capacity = _next_capacity(self._capacity_users, n_users)
            self._user_table = _resized(self._user_table, capacity)
            self._user_counts = _resized(self._user_counts, capacity)
            self._recent = _resized(self._recent, capacity, fill=-1)
            self._user_dirty = _resized(self._user_dirty, capacity)
            self._capacity_users = capacity
        if n_items > self._capacity_items:
            capacity = _next_capacity(self._capacity_items, n_items)
            self._item_table = _resized(self._item_table, capacity)
            if self._item_input_table is not None:
                self._item_input_table = _resized(self._item_input_table, capacity)
            self._item_counts = _resized(self._item_counts, capacity)
            self._noise_counts = _resized(self._noise_counts, capacity)
            self._item_dirty = _resized(self._item_dirty, capacity)
            self._capacity_items = capacity

    def _initialise_rows(self, old_users: int, old_items: int) -> None:
        # Each table gets its own seed so that user row r and item row r differ.
        n_users, n_items = self.n_users, self.n_items
        if self.init == "uniform":
            user_half = item_half = self.init_scale
        else:
            user_half, item_half = 0.5 / self.dim, 0.0
        if n_users > old_users:
            _sgns.init_rows(self._user_table, old_users, n_users, _mix(self.seed, 1),
                            -user_half, user_half)
            self._user_dirty[old_users:n_users] = 1
        if n_items > old_items:
            _sgns.init_rows(self._item_table, old_items, n_items, _mix(self.seed, 2),
                            -item_half, item_half)
            if self._item_input_table is not None:
                _sgns.init_rows(self._item_input_table, old_items, n_items,
                                _mix(self.seed, 3), -user_half, user_half)
            self._item_dirty[old_items:n_items] = 1
        self._unit_items = None

    def _rows_for(self, users: Sequence, items: Sequence) -> tuple[np.ndarray, np.ndarray]:
        if len(users) != len(items):
            raise ValueError(
                f"users and items must have the same length, got {len(users)} and "
                f"{len(items)}")
        old_users, old_items = self.n_users, self.n_items
        user_rows = self._users.rows_for(_as_id_list(users))
        try:
            item_rows = self._items.rows_for(_as_id_list(items))
        except ValueError:
            self._users.truncate(old_users)
            raise
        self._grow(self.n_users, self.n_items)
        self._initialise_rows(old_users, old_items)
        return user_rows, item_rows

    def _build_noise_table(self, counts: np.ndarray) -> None:
        # Rows never counted get weight zero (count ** alpha is inf for alpha < 0).
        counts = np.asarray(counts, dtype=np.float64)
        if counts.size == 0 or not counts.any():
            self._noise_prob = np.zeros(0, np.float32)
            self._noise_alias = np.zeros(0, np.int32)
            return
        # Rows are numbered in order of first sight, so the counted rows are a
        # prefix; rows past it (ids of a batch not reached yet) stay out of the
        # table, which keeps draws independent of how the stream was batched.
        counts = counts[: int(np.flatnonzero(counts)[-1]) + 1]
        weights = np.zeros_like(counts)
        positive = counts > 0
        weights[positive] = counts[positive] ** self.alpha
        self._noise_prob, self._noise_alias = _sgns.build_alias_table(weights)

    def _refresh_noise(self) -> None:
        """Rebuild the noise table from the current counts (at a fixed sequence point)."""
        n_items = self.n_items
        changed = self._noise_counts[:n_items] != self._item_counts[:n_items]
        self._item_dirty[:n_items][changed] = 1
        self._noise_counts[:n_items] = self._item_counts[:n_items]
        self._build_noise_table(self._noise_counts[:n_items])

    def _next_refresh(self, sequence: int) -> int:
        """First sequence number > ``sequence`` at which the noise table is rebuilt."""
        step = self.noise_refresh
        power = 1
        while power <= sequence and power < step:
            power *= 2
        if power > sequence and power < step:
            return power
        return (sequence // step + 1) * step

    def _kernel(self, user_rows, item_rows, *, cursor, update_counts, learning_rate,
                learning_rate_step, seed, first_sequence, repeats, tables=None):
        # tables: (user, item, item input, recent items, user dirty, item dirty)
        # to train instead of the model's own (a thread's private copies).
        users, items, item_inputs, recent, user_dirty, item_dirty = tables or (
            self._user_table, self._item_table, self._item_input_table, self._recent,
            self._user_dirty, self._item_dirty)
        loss, pairs, trained, total = _sgns.train_events(
            users, items, item_inputs,
            user_rows, item_rows,
            cursor, self._item_counts, recent, user_dirty, item_dirty,
            self._noise_prob, self._noise_alias,
            negatives=self.negatives, window=self.window, sample=self.sample,
            learning_rate=learning_rate, learning_rate_step=learning_rate_step,
            min_learning_rate=self.min_learning_rate if learning_rate_step else 0.0,
            l2=self.l2, exact_sigmoid=self.exact_sigmoid, update_counts=update_counts,
            repeats=repeats, total_count=self._total_count, seed=seed,
            first_sequence=first_sequence,
        )
        return loss, pairs, trained, total

    # ------------------------------------------------------------------
    # Training

    def learn_many(self, users: Sequence, items: Sequence, timestamps=None) -> BatchStats:
        """One online pass over events, in the given order.

        Parameters
        ----------
        users, items : sequences of str or int, same length
            The events; unseen ids get rows on first sight.
        timestamps : sequence of float, optional
            Event times in seconds. The model itself is order-based; times are
            accepted so that callers can pass what they have.

        Returns
        -------
        BatchStats
        """
        # Checked before any id is added: a refused batch leaves no trace.
        if timestamps is not None and len(timestamps) != len(users):
            raise ValueError(
                f"timestamps must have the same length as users, got {len(timestamps)} "
                f"and {len(users)}")
        user_rows, item_rows = self._rows_for(users, items)
        self._unit_items = None
        loss_sum, pairs_sum, trained_sum = 0.0, 0, 0
        start, n_events = 0, len(user_rows)

        # Cut the batch at the noise-table rebuild points of the global sequence.
        while start < n_events:
            sequence = self._events_seen
            refresh_at = self._next_refresh(sequence)
            stop = min(n_events, start + refresh_at - sequence)
            loss, pairs, trained, total = self._kernel(
                user_rows[start:stop], item_rows[start:stop], cursor=self._user_counts,
                update_counts=True, learning_rate=self.learning_rate,
                learning_rate_step=0.0, seed=self.seed, first_sequence=sequence,
                repeats=self.repeats,
            )
            self._total_count = total
            self._events_seen += stop - start
            loss_sum += loss
            pairs_sum += pairs
            trained_sum += trained
            if self._events_seen == refresh_at:
                self._refresh_noise()
            start = stop

        return BatchStats(n_events, trained_sum, loss_sum / pairs_sum if pairs_sum else
                          float("nan"))

    def fit(self, users: Sequence, items: Sequence, timestamps=None, epochs: int | None = None,
            workers: int = 1, progress: bool | None = None) -> "Interact2Vec":
        """Offline training: ``epochs`` passes of the kernel over a fixed data set.

        Counts, the noise table and subsampling use the whole data set's counts
        (added to what the model already had). The learning rate decays linearly
        from ``learning_rate`` to ``min_learning_rate`` over all epochs.
        Afterwards the model continues online as if it had seen the events once
        (``events_seen`` and counts grow by ``len(users)``).

        ``workers > 1`` runs threads on disjoint slices of each epoch. Tables of
        up to ``MERGED_TABLE_BYTES`` (small catalogues, whose few hot item rows
        threads would otherwise fight over) are trained in rounds of
        ``MERGED_ROUND_EVENTS`` events on private copies per thread, and the
        shared tables then take the sum of the threads' changes; the result is
        bit-identical for the same seed, input order and number of workers.
        Larger tables are shared by the threads without locks (Hogwild), and
        results are then reproducible only to a tolerance. Either way each
        thread starts its slice from the recent-items rings a sequential pass
        would have there, so ``window > 0`` trains the same item->item pairs as
        one thread, and the rings end as one thread leaves them. With
        ``workers=1`` results are bit-identical for the same seed and order.

        ``progress``: a progress bar on stderr; default only when stderr is a
        terminal.
        """
        epochs = self.epochs if epochs is None else _check_range("epochs", epochs, 1,
                                                                 100_000, kind=int)
        workers = _check_range("workers", workers, 1, 256, kind=int)
        user_rows, item_rows = self._rows_for(users, items)
        n_events = len(user_rows)
        if n_events == 0:
            return self
        n_items = self.n_items
        start_cursor = self._user_counts.copy()
        final_user_counts = start_cursor.copy()
        np.add.at(final_user_counts, user_rows, 1)
        self._item_counts[:n_items] += np.bincount(item_rows, minlength=n_items)
        self._total_count = int(self._item_counts[:n_items].sum())
        self._refresh_noise()

        total_steps = epochs * n_events
        lr_step = (self.learning_rate - self.min_learning_rate) / max(total_steps, 1)
        bar = _progress_bar(total_steps, progress)
        team = _Team(workers) if workers > 1 else None
        loss_total = 0.0
        try:
            for epoch in range(epochs):
                cursor = start_cursor.copy()
                epoch_seed = _mix(self.seed, 1000 + epoch)
                loss, pairs = self._fit_epoch(user_rows, item_rows, cursor, epoch_seed,
                                              epoch * n_events, lr_step, team)
                loss_total = loss / pairs if pairs else float("nan")
                logger.debug("fit epoch=%d loss=%.5f", epoch + 1, loss_total)
                if bar is not None:
                    bar.update(n_events)
                    bar.set_postfix(loss=f"{loss_total:.4f}")
        finally:
            if team is not None:
                team.close()
            if bar is not None:
                bar.close()
        if workers > 1 and not self.window:
            self._rebuild_recent(user_rows, item_rows, start_cursor)
        self._user_counts[:] = final_user_counts
        self._events_seen += n_events
        self._unit_items = None
        logger.info("fit done events=%d epochs=%d users=%d items=%d loss=%.5f",
                    n_events, epochs, self.n_users, self.n_items, loss_total)
        return self

    def _fit_epoch(self, user_rows, item_rows, cursor, seed, step_offset, lr_step, team):
        n_events = len(user_rows)
        if team is None:
            return self._fit_slice(user_rows, item_rows, 0, n_events, cursor, seed,
                                   step_offset, lr_step)[:2]
        table_bytes = (self.n_users + self.n_items * (2 if self.window else 1)) * self.dim * 4
        if table_bytes <= MERGED_TABLE_BYTES:
            return self._fit_epoch_merged(user_rows, item_rows, cursor, seed, step_offset,
                                          lr_step, team)
        return self._fit_epoch_hogwild(user_rows, item_rows, cursor, seed, step_offset,
                                       lr_step, team)

    def _fit_slice(self, user_rows, item_rows, lo, hi, cursor, seed, step_offset, lr_step,
                   tables=None):
        loss, pairs, _, _ = self._kernel(
            user_rows[lo:hi], item_rows[lo:hi], cursor=cursor, update_counts=False,
            learning_rate=self.learning_rate - (step_offset + lo) * lr_step,
            learning_rate_step=lr_step, seed=seed, first_sequence=lo, repeats=1,
            tables=tables,
        )
        return loss, pairs

    def _thread_bookkeeping(self, user_rows, item_rows, bounds, cursor) -> list[tuple]:
        """Per thread of a slice: (cursor, rings, user dirty flags, item dirty flags).

        Threads never write shared bookkeeping: a byte array of dirty flags
        written by two cores moves its cache lines between them on every
        event. With ``window > 0`` thread k starts from the cursor and rings a
        sequential pass would have at ``bounds[k]``, so every item->item pair
        is trained as in one thread. With ``window=0`` the rings are never read
        while training and :meth:`_rebuild_recent` recomputes them after the
        fit, so threads get empty rings and skip the writes.
        """
        n_users, n_items = self.n_users, self.n_items
        out = []
        start_cursor = cursor
        ring = self._recent[:n_users] if self.window else np.empty((n_users, 0), np.int32)
        for k in range(len(bounds) - 1):
            start_cursor, ring = start_cursor.copy(), ring.copy()
            if k and self.window:
                lo, hi = int(bounds[k - 1]), int(bounds[k])
                _sgns.advance_history(user_rows[lo:hi], item_rows[lo:hi], start_cursor, ring)
            out.append((start_cursor, ring,
                        np.zeros(n_users, dtype=np.uint8), np.zeros(n_items, dtype=np.uint8)))
        return out

    def _end_threaded_slice(self, books: list[tuple], cursor) -> None:
        # The last thread ends where a sequential pass over the slice would:
        # its cursor and rings carry on; every thread's dirty flags count.
        n_users, n_items = self.n_users, self.n_items
        if self.window:
            cursor[:] = books[-1][0]
            self._recent[:n_users] = books[-1][1]
        for _, _, user_dirty, item_dirty in books:
            self._user_dirty[:n_users] |= user_dirty
            self._item_dirty[:n_items] |= item_dirty

    def _fit_epoch_hogwild(self, user_rows, item_rows, cursor, seed, step_offset, lr_step,
                           team):
        # Threads on disjoint slices of the epoch share the vector tables,
        # lock-free; each keeps its own cursor, rings and dirty flags.
        bounds = np.linspace(0, len(user_rows), team.workers + 1).astype(np.int64)
        books = self._thread_bookkeeping(user_rows, item_rows, bounds, cursor)
        item_inputs = self._item_input_table if self.window else None
        results = team.run(lambda k: self._fit_slice(
            user_rows, item_rows, int(bounds[k]), int(bounds[k + 1]), books[k][0], seed,
            step_offset, lr_step,
            tables=(self._user_table, self._item_table, item_inputs, *books[k][1:])))
        self._end_threaded_slice(books, cursor)
        return sum(r[0] for r in results), sum(r[1] for r in results)

    def _fit_epoch_merged(self, user_rows, item_rows, cursor, seed, step_offset, lr_step,
                          team):
        # Rounds of MERGED_ROUND_EVENTS: each thread trains its slice of the
        # round on private copies of the tables, then the tables take the sum
        # of the threads' changes. No row is written by two threads, so a
        # small catalogue (whose hot item rows lock-free threads would fight
        # over) scales, and the result depends only on the number of workers.
        # Each thread fills its own copies and merges a share of the rows, so
        # the rows it trains on are in its own core's cache.
        n_users, n_items, workers = self.n_users, self.n_items, team.workers
        shared = [self._user_table[:n_users], self._item_table[:n_items]]
        if self.window:
            shared.append(self._item_input_table[:n_items])
        # The tables keep their shapes for the whole fit: one set of copies.
        if team.copies is None:
            team.copies = [[np.empty_like(table) for table in shared] for _ in range(workers)]
        private = team.copies
        shares = [np.linspace(0, len(table), workers + 1).astype(np.int64) for table in shared]
        loss_sum, pairs_sum = 0.0, 0
        for start in range(0, len(user_rows), MERGED_ROUND_EVENTS):
            stop = min(len(user_rows), start + MERGED_ROUND_EVENTS)
            bounds = np.linspace(start, stop, workers + 1).astype(np.int64)
            books = self._thread_bookkeeping(user_rows, item_rows, bounds, cursor)
            trained = threading.Barrier(workers)

            def work(k):
                try:
                    for table, copy in zip(shared, private[k]):
                        np.copyto(copy, table)
                    users, items = private[k][0], private[k][1]
                    item_inputs = private[k][2] if self.window else None
                    result = self._fit_slice(
                        user_rows, item_rows, int(bounds[k]), int(bounds[k + 1]), books[k][0],
                        seed, step_offset, lr_step,
                        tables=(users, items, item_inputs, *books[k][1:]))
                    trained.wait()
                except BaseException:
                    trained.abort()  # the other threads stop waiting too
                    raise
                # shared = sum of the copies - (workers - 1) x shared, by row share
                for index, table in enumerate(shared):
                    lo, hi = int(shares[index][k]), int(shares[index][k + 1])
                    rows = table[lo:hi]
                    rows *= 1 - workers
                    for copies in private:
                        rows += copies[index][lo:hi]
                return result

            for loss, pairs in team.run(work):
                loss_sum += loss
                pairs_sum += pairs
            self._end_threaded_slice(books, cursor)
        return loss_sum, pairs_sum

    def _rebuild_recent(self, user_rows, item_rows, start_cursor) -> None:
        """Each user's ring as a sequential pass over the events would leave it."""
        if not self.history_size or not len(user_rows):
            return
        order = np.argsort(user_rows, kind="stable")
        users = user_rows[order]
        first = np.searchsorted(users, users, side="left")
        position = np.arange(len(users)) - first  # k-th event of its user in this pass
        slots = (start_cursor[users] + position) % self.history_size
        last = np.searchsorted(users, users, side="right") - 1 - np.arange(len(users))
        keep = last < self.history_size  # only a user's last history_size events survive
        self._recent[users[keep], slots[keep]] = item_rows[order][keep]

    # ------------------------------------------------------------------
    # Reading

    def _normalised_items(self) -> np.ndarray:
        items = self._item_table[: self.n_items]
        if self.scoring == "dot":
            return items
        if self._unit_items is None or len(self._unit_items) != self.n_items:
            norms = np.linalg.norm(items, axis=1, keepdims=True)
            self._unit_items = items / np.maximum(norms, 1e-12)
        return self._unit_items

    def _scores_against_items(self, vectors: np.ndarray) -> np.ndarray:
        # vectors: (dim,) or (k, dim) -> scores (n_items,) or (k, n_items)
        if self.scoring == "cosine":
            norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors @ self._normalised_items().T

    def _prior(self) -> np.ndarray | float:
        if not self.popularity_prior:
            return 0.0
        counts = np.maximum(self._item_counts[: self.n_items], 1)
        return self.popularity_prior * np.log(counts).astype(np.float32)

    def score_rows(self, user_rows: np.ndarray) -> np.ndarray:
        """Scores of every item for each user row, as ``recommend`` ranks them.

        Parameters
        ----------
        user_rows : int array (k,)
            Rows of known users (see :meth:`user_row`).

        Returns
        -------
        float32 array (k, n_items), seen items not excluded.
        """
        user_rows = np.asarray(user_rows, dtype=np.int64)
        if user_rows.size and (user_rows.min() < 0 or user_rows.max() >= self.n_users):
            raise ValueError(f"user_rows must be in [0, {self.n_users})")
        return self._scores_against_items(self._user_table[user_rows]) + self._prior()

    def score_users(self, user_ids: Sequence, fallback: str = "popularity") -> np.ndarray:
        """Scores of every item (columns in ``item_ids`` order) for each user.

        This is the scorer interface of ``i2v_stream.evaluation``. A user the
        model does not know gets, with ``fallback="popularity"``, the log of
        each item's count (the cold-start answer a live service would give),
        with ``fallback="none"`` a row of NaN. Nothing is created either way.
        """
        if fallback not in ("popularity", "none"):
            raise ValueError(f"fallback must be 'popularity' or 'none', got {fallback!r}")
        rows = np.fromiter((-1 if (r := self._users.get(u)) is None else r for u in user_ids),
                           dtype=np.int64, count=len(user_ids))
        known = rows >= 0
        scores = np.full((len(rows), self.n_items), np.nan, dtype=np.float32)
        if known.any():
            scores[known] = self.score_rows(rows[known])
        if fallback == "popularity" and not known.all():
            scores[~known] = np.log(np.maximum(self._item_counts[: self.n_items], 1))
        return scores

    def seen_rows(self, user_row: int) -> np.ndarray:
        """Item rows in the user's recent history (at most ``history_size``)."""
        seen = self._recent[user_row] if self.history_size else np.zeros(0, np.int32)
        return seen[seen >= 0]

    def recommend(self, user, n: int = 10, exclude_seen: bool = True) -> list[tuple[Any, float]]:
        """Top ``n`` items for ``user`` as (item id, score), best first.

        ``exclude_seen`` drops the user's last ``history_size`` items. An
        unknown user raises :class:`UnknownIdError` and creates nothing.
        """
        n = _check_range("n", n, 1, kind=int)
        row = self.user_row(user)
        scores = self.score_rows(np.array([row]))[0]
        return self._top(scores, n, self.seen_rows(row) if exclude_seen else None)

    def similar_items(self, item, n: int = 10) -> list[tuple[Any, float]]:
        """Top ``n`` items most similar to ``item`` (the item itself excluded)."""
        n = _check_range("n", n, 1, kind=int)
        row = self.item_row(item)
        scores = self._scores_against_items(self._item_table[row])
        return self._top(scores, n, np.array([row]))

    def _top(self, scores: np.ndarray, n: int, exclude) -> list[tuple[Any, float]]:
        scores = scores.astype(np.float64, copy=True)
        if exclude is not None and len(exclude):
            scores[exclude] = -np.inf
        n = min(n, int(np.isfinite(scores).sum()))
        if n == 0:
            return []
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.lexsort((top, -scores[top]))]
        ids = self._items.ids
        return [(ids[r], float(scores[r])) for r in top]

    # ------------------------------------------------------------------
    # Files

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to directory ``path`` (JSON metadata and .npy arrays)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = self.state()
        meta = {
            "format_version": FORMAT_VERSION,
            "params": state.params,
            "events_seen": state.events_seen,
            "user_ids": state.user_ids,
            "item_ids": state.item_ids,
        }
        for name in ("user_vectors", "item_vectors", "item_input_vectors", "user_counts",
                     "item_counts", "noise_counts", "recent_items"):
            array = getattr(state, name)
            if array is not None:
                np.save(path / f"{name}.npy", np.ascontiguousarray(array))
        tmp = path / "model.json.tmp"
        tmp.write_text(json.dumps(meta), encoding="utf-8")
        tmp.replace(path / "model.json")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Interact2Vec":
        """Read a model written by :meth:`save`."""
        path = Path(path)
        try:
            meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{path} holds no saved model (no model.json)") from exc
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: model format version {meta.get('format_version')!r} is not "
                f"supported (expected {FORMAT_VERSION})")

        def array(name):
            file = path / f"{name}.npy"
            return np.load(file) if file.exists() else None

        return cls.from_state(ModelState(
            params=meta["params"], user_ids=meta["user_ids"], item_ids=meta["item_ids"],
            user_vectors=array("user_vectors"), item_vectors=array("item_vectors"),
            item_input_vectors=array("item_input_vectors"),
            user_counts=array("user_counts"), item_counts=array("item_counts"),
            noise_counts=array("noise_counts"), recent_items=array("recent_items"),
            events_seen=meta["events_seen"],
        ))


# ----------------------------------------------------------------------
# Helpers


class _Team:
    """The worker threads of one threaded fit, kept for all its epochs and rounds."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.copies: list | None = None  # each thread's table copies, reused every round
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="i2v-fit")

    def run(self, work) -> list:
        """``[work(0), ..., work(workers - 1)]``, all at once, one per thread."""
        futures = [self._pool.submit(work, k) for k in range(self.workers)]
        return [future.result() for future in futures]

    def close(self) -> None:
        self._pool.shutdown()


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


def _next_capacity(current: int, needed: int) -> int:
    return max(needed, 2 * current, 64)


def _resized(array: np.ndarray, capacity: int, fill=0) -> np.ndarray:
    out = np.full((capacity,) + array.shape[1:], fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


def _mix(seed: int, salt: int) -> int:
    """A 64-bit seed derived from ``seed`` and ``salt`` (splitmix64 finaliser)."""
    z = (seed * 0x9E3779B97F4A7C15 + salt * 0xD1B54A32D192ED03 + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def _as_id_list(ids) -> list:
    # Fast paths: integer arrays become Python ints at once, str arrays strs.
    if isinstance(ids, np.ndarray):
        if ids.dtype.kind in "iu":
            return ids.tolist()
        if ids.dtype.kind == "U":
            return ids.tolist()
        return [normalize_id(key) for key in ids.tolist()]
    return list(ids)


def _progress_bar(total: int, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="ev", unit_scale=True, desc="fit", file=sys.stderr)

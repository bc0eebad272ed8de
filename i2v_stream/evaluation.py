"""Offline evaluation: a per-user temporal split and a prequential (online) run.

Both protocols rank the whole catalogue of a *scorer* and return plain,
JSON-serialisable dicts (undefined means are ``None``).

The scorer protocol
    An object with

    - ``item_ids``: the current catalogue, a sequence of item ids whose order
      is the column order of the scores;
    - ``score_users(user_ids) -> numpy.ndarray`` of shape
      ``(len(user_ids), len(item_ids))``, higher is better, with an all-NaN row
      for a user the scorer does not know. It must not create state for
      unknown users, and it does not exclude anything: the protocols exclude
      seen items themselves.

    :func:`as_scorer` also accepts, and adapts, (a) an object with
    ``user_ids``, ``item_ids``, ``user_vectors`` and ``item_vectors`` (such as
    :class:`~i2v_stream.model.Interact2Vec`), scored by cosine, or by dot
    product with ``metric="dot"``, between user rows and item rows, the
    semantics of ``Interact2Vec.recommend``; and (b) a plain callable
    ``scores(user_rows) -> (len(user_rows), n_items)`` together with
    ``user_ids=`` (the id of each row) and ``item_ids=`` (the id of each
    column), for factor models and other baselines.

The online protocol
    :func:`prequential` additionally calls ``learn_many(users, items,
    timestamps)`` (and ``fit(users, items, timestamps, **fit_kwargs)`` when
    ``warmup_mode="fit"``), with NumPy arrays of ids and float64 seconds. The
    scorer is read afresh for every block of events, so tables that grow
    between calls are fine; the adapter in (a) assumes rows are only appended.

Temporal split rule (:func:`temporal_split`)
    Each user's events are put in time order (ties, and events without a
    timestamp, in file order; untimed events last). With ``holdout`` a fraction
    ``f`` the last ``floor(f * n_u)`` events of a user with ``n_u`` events are
    held out; with ``holdout`` an integer ``k`` the last ``k`` are, for users
    with more than ``k`` events. Users left with nothing to hold out keep all
    their events in train.

Split metrics (:func:`evaluate_split`)
    For every test user, the relevant set is the user's distinct test items
    that are not in the user's train history (repeats of train items are
    dropped from it and counted in ``test_items_seen_in_train``). Items of the
    user's train history are excluded from the ranking. A relevant item
    outside the scorer's catalogue cannot be ranked: it is a miss, counted in
    ``unrankable_items``; an unknown user misses everything. Per user,
    ``recall = hits / |relevant|``, ``precision = hits / n``, ``hit_rate`` is
    1 with at least one hit, and ``ndcg`` is DCG over the top ``n`` with gain 1
    and ``1 / log2(rank + 1)`` discount, divided by the ideal DCG of
    ``min(|relevant|, n)`` hits; each is averaged over users.

Prequential metrics (:func:`prequential`)
    Events in time order. The first ``warmup`` fraction is learned first; then
    each chunk is scored with the state before the chunk, and learned. An event
    is scored by the rank of its item among the items its user has not met
    before it (events earlier in the same chunk count as met). Ties share
    their mean rank (``1 + greater + equal / 2``), so a constant scorer gets no
    credit. An event whose user or item the scorer does not know is a miss
    (counted in ``cold_user_events`` / ``cold_item_events``); an event that
    repeats a (user, item) pair already met is not scored (``repeat_events``).
    Whether a user is unknown is the scorer's answer (a NaN row), so a scorer
    with a cold-start fallback scores new users; ``new_user_events`` counts,
    whatever the scorer does, the events of users with no event learned before
    their chunk. ``hit_rate`` is the share of scored events with rank <= ``n``,
    ``mrr`` the mean of ``1 / rank`` (not truncated at ``n``); the ``*_warm``
    variants keep only the events of users with learned events, scored
    against a known item (neither cold nor new). Excluding a user's history costs, per event, the
    length of that history, so the run is quadratic in the longest history.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from i2v_stream.data import Interactions

logger = logging.getLogger(__name__)

# Cells of a (users x items) score block; bounds memory at about 32 MiB of float64.
DEFAULT_MAX_CELLS = 1 << 22


@runtime_checkable
class Scorer(Protocol):
    """Scores every catalogue item for a batch of users (see the module docstring)."""

    @property
    def item_ids(self) -> Sequence: ...

    def score_users(self, user_ids: Sequence) -> np.ndarray: ...


@runtime_checkable
class OnlineRecommender(Scorer, Protocol):
    """A :class:`Scorer` that also learns from batches of events."""

    def learn_many(self, users: np.ndarray, items: np.ndarray,
                   timestamps: np.ndarray | None = None) -> Any: ...


# ---------------------------------------------------------------------------
# Scorer adapters


class VectorScorer:
    """Scores users against items by cosine (or dot product) of embedding rows.

    Parameters
    ----------
    source : object
        Anything with ``user_ids``, ``item_ids``, ``user_vectors`` and
        ``item_vectors`` attributes, read afresh at every call (a live model).
    metric : {"cosine", "dot"}
        Cosine treats a zero row as scoring 0 against everything.
    """

    def __init__(self, source: Any, metric: str = "cosine") -> None:
        if metric not in ("cosine", "dot"):
            raise ValueError(f"metric must be 'cosine' or 'dot', got {metric!r}")
        self.source = source
        self.metric = metric
        self._index: dict = {}
        self._indexed: list = []

    @property
    def item_ids(self) -> Sequence:
        return self.source.item_ids

    def score_users(self, user_ids: Sequence) -> np.ndarray:
        user_vectors = np.asarray(self.source.user_vectors)
        item_vectors = np.asarray(self.source.item_vectors)
        rows = self._rows(user_ids)
        known = rows >= 0
        scores = np.full((len(rows), item_vectors.shape[0]), np.nan, dtype=np.float32)
        if known.any() and item_vectors.shape[0]:
            users = user_vectors[rows[known]]
            if self.metric == "cosine":
                users = _unit_rows(users)
                item_vectors = _unit_rows(item_vectors)
            scores[known] = users @ item_vectors.T
        return scores

    def _rows(self, user_ids: Sequence) -> np.ndarray:
        # The id -> row index is extended, not rebuilt, while rows are appended.
        current = self.source.user_ids
        n_indexed = len(self._indexed)
        if len(current) < n_indexed or (
                n_indexed and current[n_indexed - 1] != self._indexed[-1]):
            self._index, self._indexed = {}, []
            n_indexed = 0
        for row in range(n_indexed, len(current)):
            self._index[current[row]] = row
        self._indexed = list(current)
        index = self._index
        return np.fromiter((index.get(u, -1) for u in _py_ids(user_ids)),
                           dtype=np.int64, count=len(user_ids))


class RowScorer:
    """Adapts ``scores(user_rows)`` plus the ids of its rows and columns.

    Parameters
    ----------
    scores : callable
        ``scores(user_rows: int64 array) -> (len(user_rows), len(item_ids))``.
    user_ids : sequence
        ``user_ids[r]`` is the id of row ``r``.
    item_ids : sequence
        ``item_ids[c]`` is the id of column ``c``.
    """

    def __init__(self, scores: Callable[[np.ndarray], np.ndarray], user_ids: Sequence,
                 item_ids: Sequence) -> None:
        self.scores = scores
        self._item_ids = list(_py_ids(item_ids))
        self._index = {u: r for r, u in enumerate(_py_ids(user_ids))}

    @property
    def item_ids(self) -> Sequence:
        return self._item_ids

    def score_users(self, user_ids: Sequence) -> np.ndarray:
        rows = np.fromiter((self._index.get(u, -1) for u in _py_ids(user_ids)),
                           dtype=np.int64, count=len(user_ids))
        known = rows >= 0
        result = np.full((len(rows), len(self._item_ids)), np.nan)
        if known.any():
            result[known] = np.asarray(self.scores(rows[known]), dtype=np.float64)
        return result


def as_scorer(obj: Any, *, user_ids: Sequence | None = None,
              item_ids: Sequence | None = None, metric: str | None = None) -> Scorer:
    """Return ``obj`` as a :class:`Scorer` (see the module docstring for the forms).

    ``metric`` (``"cosine"`` or ``"dot"``) applies to the vector adapter; by
    default it is the object's ``scoring`` attribute, else ``"cosine"``.
    """
    if hasattr(obj, "score_users") and hasattr(obj, "item_ids"):
        return obj
    if all(hasattr(obj, a) for a in ("user_ids", "item_ids", "user_vectors", "item_vectors")):
        if metric is None:
            metric = getattr(obj, "scoring", "cosine")
        return VectorScorer(obj, metric=metric)
    if callable(obj):
        if user_ids is None or item_ids is None:
            raise TypeError("a scoring callable needs user_ids= and item_ids= naming "
                            "its rows and columns")
        return RowScorer(obj, user_ids, item_ids)
    raise TypeError(
        "scorer must have score_users() and item_ids, or user_ids/item_ids/user_vectors/"
        f"item_vectors, or be a callable; got {type(obj).__name__}"
    )


# ---------------------------------------------------------------------------
# Temporal split


def temporal_split(interactions: Interactions, holdout: float | int = 0.2
                   ) -> tuple[Interactions, Interactions]:
    """Hold out each user's last events (see the split rule in the module docstring).

    Parameters
    ----------
    interactions : Interactions
    holdout : float in (0, 1) or int >= 1
        Fraction of each user's events, or number of events, to hold out.

    Returns
    -------
    (train, test) : tuple of Interactions
        Each in the input's order.
    """
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float, np.number)):
        raise ValueError(f"holdout must be a fraction in (0, 1) or an integer >= 1, "
                         f"got {holdout!r}")
    is_count = isinstance(holdout, (int, np.integer))
    if (is_count and holdout < 1) or (not is_count and not 0.0 < holdout < 1.0):
        raise ValueError(f"holdout must be a fraction in (0, 1) or an integer >= 1, "
                         f"got {holdout!r}")
    n = len(interactions)
    if n == 0:
        return interactions[:0], interactions[:0]

    # Order events by (user, time, file position); untimed events sort last.
    _, user_codes, counts = np.unique(interactions.users, return_inverse=True,
                                      return_counts=True)
    times = np.where(np.isnan(interactions.timestamps), np.inf, interactions.timestamps)
    order = np.lexsort((np.arange(n), times, user_codes))
    sorted_codes = user_codes[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(n) - starts[sorted_codes]

    if is_count:
        n_test = np.where(counts > holdout, holdout, 0)
    else:
        n_test = np.floor(holdout * counts).astype(np.int64)
    is_test = np.zeros(n, dtype=bool)
    is_test[order] = position >= (counts - n_test)[sorted_codes]
    return interactions[~is_test], interactions[is_test]


# ---------------------------------------------------------------------------
# Split evaluation


def evaluate_split(
    scorer: Any,
    train: Interactions,
    test: Interactions,
    n: int = 10,
    *,
    user_ids: Sequence | None = None,
    item_ids: Sequence | None = None,
    metric: str | None = None,
    max_cells: int = DEFAULT_MAX_CELLS,
) -> dict:
    """Recall@n, NDCG@n, precision@n and hit rate of a scorer on a train/test split.

    Parameters
    ----------
    scorer : Scorer, model or callable
        See :func:`as_scorer`; ``user_ids``, ``item_ids`` and ``metric`` are
        passed to it.
    train, test : Interactions
        Typically from :func:`temporal_split`. Train defines each user's
        excluded history; the scorer is expected to have learned from it.
    n : int
        List length.
    max_cells : int
        Upper bound on the users x items cells scored at once.

    Returns
    -------
    dict
        ``protocol, n, users, recall, ndcg, precision, hit_rate, unknown_users,
        relevant_items, unrankable_items, test_items_seen_in_train,
        catalogue_items, train_events, test_events, seconds``.
    """
    _check_positive_int("n", n)
    _check_positive_int("max_cells", max_cells)
    started = time.perf_counter()
    scorer = as_scorer(scorer, user_ids=user_ids, item_ids=item_ids, metric=metric)
    catalogue = list(scorer.item_ids)
    n_items = len(catalogue)

    # Encode users and items over both sides, then (user, item) pairs.
    all_users = _as_object_if_mixed(train.users, test.users)
    uniq_users, user_codes = np.unique(all_users, return_inverse=True)
    all_items = _as_object_if_mixed(train.items, test.items)
    uniq_items, item_codes = np.unique(all_items, return_inverse=True)
    n_train = len(train)
    n_codes = len(uniq_items)
    train_pairs = np.unique(user_codes[:n_train] * n_codes + item_codes[:n_train])
    test_pairs = np.unique(user_codes[n_train:] * n_codes + item_codes[n_train:])
    seen = np.isin(test_pairs, train_pairs)
    relevant = test_pairs[~seen]

    # Item code -> catalogue column (-1: not rankable).
    column_of = {item: c for c, item in enumerate(_py_ids(catalogue))}
    code_to_column = np.fromiter((column_of.get(i, -1) for i in _py_ids(uniq_items)),
                                 dtype=np.int64, count=n_codes)
    rel_users, rel_columns = relevant // n_codes, code_to_column[relevant % n_codes]
    train_users = train_pairs // n_codes
    train_columns = code_to_column[train_pairs % n_codes]
    keep = train_columns >= 0
    train_users, train_columns = train_users[keep], train_columns[keep]

    eval_users, rel_counts = np.unique(rel_users, return_counts=True)
    hits = np.zeros(len(eval_users))
    dcg = np.zeros(len(eval_users))
    unknown = np.zeros(len(eval_users), dtype=bool)
    block = max(1, max_cells // max(n_items, 1))
    k = min(n, n_items)
    discounts = 1.0 / np.log2(np.arange(2, n + 2))

    for lo in range(0, len(eval_users), block):
        codes = eval_users[lo:lo + block]
        if n_items == 0:
            unknown[lo:lo + len(codes)] = True
            continue
        scores = _checked_scores(scorer, uniq_users[codes], n_items)
        unknown_rows = np.isnan(scores).all(axis=1)
        unknown[lo:lo + len(codes)] = unknown_rows
        np.nan_to_num(scores, copy=False, nan=-np.inf)

        # Exclude each user's train history.
        local = _local_rows(codes, train_users)
        scores[local[0], train_columns[local[1]]] = -np.inf

        top = _top_columns(scores, k)
        top_scores = np.take_along_axis(scores, top, axis=1)
        rows = np.arange(len(codes))[:, None]
        local_rel = _local_rows(codes, rel_users)
        rel_cols = rel_columns[local_rel[1]]
        ok = rel_cols >= 0
        rel_keys = local_rel[0][ok] * n_items + rel_cols[ok]
        is_hit = np.isin(rows * n_items + top, rel_keys) & np.isfinite(top_scores)
        is_hit &= ~unknown_rows[:, None]
        hits[lo:lo + len(codes)] = is_hit.sum(axis=1)
        dcg[lo:lo + len(codes)] = (is_hit * discounts[:k]).sum(axis=1)

    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.minimum(rel_counts, n)]
    n_users = len(eval_users)
    result = {
        "protocol": "split",
        "n": n,
        "users": n_users,
        "recall": _mean(hits / np.maximum(rel_counts, 1)),
        "ndcg": _mean(dcg / np.where(ideal > 0, ideal, 1.0)),
        "precision": _mean(hits / n),
        "hit_rate": _mean(hits > 0),
        "unknown_users": int(unknown.sum()),
        "relevant_items": int(len(relevant)),
        "unrankable_items": int((rel_columns < 0).sum()),
        "test_items_seen_in_train": int(seen.sum()),
        "catalogue_items": n_items,
        "train_events": n_train,
        "test_events": len(test),
        "seconds": time.perf_counter() - started,
    }
    logger.info("split evaluation users=%d n=%d recall=%s ndcg=%s unknown_users=%d",
                n_users, n, _fmt(result["recall"]), _fmt(result["ndcg"]),
                result["unknown_users"])
    return result


# ---------------------------------------------------------------------------
# Prequential evaluation


def prequential(
    model: Any,
    interactions: Interactions,
    n: int = 10,
    *,
    warmup: float = 0.3,
    chunk_size: int = 1000,
    warmup_mode: str = "learn_many",
    fit_kwargs: dict | None = None,
    metric: str | None = None,
    sort: bool = True,
    max_cells: int = DEFAULT_MAX_CELLS,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Score-then-learn evaluation over an event stream.

    Parameters
    ----------
    model : OnlineRecommender
        Has ``learn_many``; scored through :func:`as_scorer` (``metric`` is
        used for the vector adapter). It should start empty.
    interactions : Interactions
    n : int
        Cut-off of the hit rate.
    warmup : float in [0, 1)
        Fraction of the events (in time order) learned before scoring starts.
    chunk_size : int
        Events scored with the same state, then learned in one ``learn_many``.
    warmup_mode : {"learn_many", "fit"}
        Learn the warm-up events with one ``learn_many`` call (one pass, as a
        stream would), or with ``fit(users, items, timestamps, **fit_kwargs)``
        (several epochs, as after an offline bootstrap).
    fit_kwargs : dict, optional
        Passed to ``fit`` (``epochs``, ``workers``...).
    sort : bool
        Put the events in time order first (stable). Pass False for a stream
        already in the order it should be replayed.
    max_cells : int
        Upper bound on the events x items cells ranked at once.
    progress : callable, optional
        Called with each curve point as it is produced.

    Returns
    -------
    dict
        ``protocol, n, warmup, warmup_mode, warmup_events, chunk_size,
        events, hit_rate, mrr, warm_events, hit_rate_warm, mrr_warm,
        cold_user_events, cold_item_events, cold_events, new_user_events, repeat_events,
        learn_seconds, score_seconds, curve`` where ``curve`` holds one dict per
        chunk: ``chunk, events_end, time_end, events, hit_rate, mrr,
        cold_events, cumulative_hit_rate, cumulative_mrr``.
    """
    _check_positive_int("n", n)
    _check_positive_int("chunk_size", chunk_size)
    _check_positive_int("max_cells", max_cells)
    if not isinstance(warmup, (int, float)) or isinstance(warmup, bool) or not (
            0.0 <= warmup < 1.0):
        raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup!r}")
    if warmup_mode not in ("learn_many", "fit"):
        raise ValueError(f"warmup_mode must be 'learn_many' or 'fit', got {warmup_mode!r}")
    if not hasattr(model, "learn_many"):
        raise TypeError(f"model must have learn_many(), got {type(model).__name__}")
    if warmup_mode == "fit" and not hasattr(model, "fit"):
        raise TypeError(f"warmup_mode='fit' needs model.fit(), {type(model).__name__} has none")
    scorer = as_scorer(model, metric=metric)
    events = interactions.sort_by_time() if sort else interactions
    users, items, timestamps = events.users, events.items, events.timestamps
    n_events = len(events)
    n_warmup = int(math.floor(warmup * n_events))

    # Stream-wide codes: a user's history as contiguous runs of event indices.
    uniq_users, user_codes, user_counts = np.unique(users, return_inverse=True,
                                                    return_counts=True)
    uniq_items, item_codes = np.unique(items, return_inverse=True)
    by_user = np.lexsort((np.arange(n_events), user_codes))
    user_starts = np.concatenate([[0], np.cumsum(user_counts)[:-1]]).astype(np.int64)
    position = np.empty(n_events, dtype=np.int64)
    position[by_user] = np.arange(n_events) - user_starts[user_codes[by_user]]
    pair_codes = user_codes.astype(np.int64) * len(uniq_items) + item_codes
    _, first_of_pair = np.unique(pair_codes, return_index=True)
    first_of_user = by_user[user_starts] if n_events else np.zeros(0, dtype=np.int64)
    is_repeat = np.ones(n_events, dtype=bool)
    is_repeat[first_of_pair] = False

    learn_seconds = 0.0
    clock = time.perf_counter()
    if n_warmup:
        if warmup_mode == "fit":
            model.fit(users[:n_warmup], items[:n_warmup], timestamps[:n_warmup],
                      **(fit_kwargs or {}))
        else:
            model.learn_many(users[:n_warmup], items[:n_warmup], timestamps[:n_warmup])
    learn_seconds += time.perf_counter() - clock
    logger.info("prequential warm-up events=%d mode=%s seconds=%.2f",
                n_warmup, warmup_mode, learn_seconds)

    ranks = np.full(n_events, np.inf)
    cold_user = np.zeros(n_events, dtype=bool)
    new_user = np.zeros(n_events, dtype=bool)
    cold_item = np.zeros(n_events, dtype=bool)
    columns = _ColumnMap(uniq_items)
    score_seconds = 0.0
    curve = []
    for chunk, lo in enumerate(range(n_warmup, n_events, chunk_size)):
        hi = min(lo + chunk_size, n_events)
        new_user[lo:hi] = first_of_user[user_codes[lo:hi]] >= lo

        # Score every event of the chunk against the state before it.
        clock = time.perf_counter()
        code_to_column = columns.update(scorer.item_ids)
        n_items = columns.size
        block = max(1, max_cells // max(n_items, 1))
        for start in range(lo, hi, block):
            idx = np.arange(start, min(start + block, hi))
            idx = idx[~is_repeat[idx]]
            if len(idx):
                _rank_block(scorer, idx, uniq_users, user_codes, item_codes, by_user,
                            user_starts, position, code_to_column, n_items,
                            ranks, cold_user, cold_item)
        score_seconds += time.perf_counter() - clock

        clock = time.perf_counter()
        model.learn_many(users[lo:hi], items[lo:hi], timestamps[lo:hi])
        learn_seconds += time.perf_counter() - clock

        point = _curve_point(chunk, lo, hi, n_warmup, n, ranks, is_repeat, cold_user,
                             cold_item, timestamps)
        curve.append(point)
        if progress is not None:
            progress(point)
        logger.debug("prequential chunk=%d events_end=%d hit_rate=%s", chunk, hi,
                     _fmt(point["hit_rate"]))

    scored = ~is_repeat[n_warmup:]
    r = ranks[n_warmup:][scored]
    cold = (cold_user | cold_item)[n_warmup:][scored]
    warm = ~cold & ~new_user[n_warmup:][scored]
    result = {
        "protocol": "prequential",
        "n": n,
        "warmup": float(warmup),
        "warmup_mode": warmup_mode,
        "warmup_events": n_warmup,
        "chunk_size": chunk_size,
        "events": int(scored.sum()),
        "hit_rate": _mean(r <= n),
        "mrr": _mean(1.0 / r),
        "warm_events": int(warm.sum()),
        "hit_rate_warm": _mean(r[warm] <= n),
        "mrr_warm": _mean(1.0 / r[warm]),
        "cold_user_events": int(cold_user[n_warmup:][scored].sum()),
        "cold_item_events": int(cold_item[n_warmup:][scored].sum()),
        "cold_events": int(cold.sum()),
        "new_user_events": int(new_user[n_warmup:][scored].sum()),
        "repeat_events": int(is_repeat[n_warmup:].sum()),
        "learn_seconds": learn_seconds,
        "score_seconds": score_seconds,
        "curve": curve,
    }
    logger.info("prequential events=%d hit_rate=%s mrr=%s cold_events=%d",
                result["events"], _fmt(result["hit_rate"]), _fmt(result["mrr"]),
                result["cold_events"])
    return result


def _rank_block(scorer, idx, uniq_users, user_codes, item_codes, by_user, user_starts,
                position, code_to_column, n_items, ranks, cold_user, cold_item) -> None:
    """Fill ``ranks`` (and the cold masks) for the events ``idx``."""
    targets = code_to_column[item_codes[idx]]
    cold_item[idx] = targets < 0
    if n_items == 0:
        cold_user[idx] = True
        return
    block_users, inverse = np.unique(user_codes[idx], return_inverse=True)
    user_scores = _checked_scores(scorer, uniq_users[block_users], n_items)
    known = ~np.isnan(user_scores).all(axis=1)
    cold_user[idx] = ~known[inverse]
    scores = user_scores[inverse]
    np.nan_to_num(scores, copy=False, nan=-np.inf)

    # Mask the items each user met before the event (a ragged gather of history).
    lengths = position[idx]
    total = int(lengths.sum())
    if total:
        rows = np.repeat(np.arange(len(idx)), lengths)
        offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        history = by_user[np.repeat(user_starts[user_codes[idx]], lengths) + offsets]
        cols = code_to_column[item_codes[history]]
        ok = cols >= 0
        scores[rows[ok], cols[ok]] = -np.inf

    rankable = (targets >= 0) & known[inverse]
    if not rankable.any():
        return
    rows = np.flatnonzero(rankable)
    sub = scores[rows]
    target_scores = sub[np.arange(len(rows)), targets[rows]]
    greater = (sub > target_scores[:, None]).sum(axis=1)
    equal = (sub == target_scores[:, None]).sum(axis=1) - 1
    rank = 1.0 + greater + equal / 2.0
    rank[~np.isfinite(target_scores)] = np.inf
    ranks[idx[rows]] = rank


class _ColumnMap:
    """Stream item code -> current catalogue column, extended while ids are appended."""

    def __init__(self, stream_items: np.ndarray) -> None:
        self.codes = {item: c for c, item in enumerate(_py_ids(stream_items))}
        self.mapping = np.full(len(stream_items), -1, dtype=np.int64)
        self.known: list = []
        self.size = 0

    def update(self, catalogue: Sequence) -> np.ndarray:
        catalogue = list(_py_ids(catalogue))
        n_known = len(self.known)
        if len(catalogue) < n_known or catalogue[:n_known] != self.known:
            self.mapping[:] = -1
            n_known = 0
        for column in range(n_known, len(catalogue)):
            code = self.codes.get(catalogue[column])
            if code is not None:
                self.mapping[code] = column
        self.known = catalogue
        self.size = len(catalogue)
        return self.mapping


def _curve_point(chunk, lo, hi, n_warmup, n, ranks, is_repeat, cold_user, cold_item,
                 timestamps) -> dict:
    scored = ~is_repeat[lo:hi]
    r = ranks[lo:hi][scored]
    so_far = ~is_repeat[n_warmup:hi]
    r_all = ranks[n_warmup:hi][so_far]
    time_end = float(timestamps[hi - 1])
    return {
        "chunk": chunk,
        "events_end": hi,
        "time_end": time_end if math.isfinite(time_end) else None,
        "events": int(scored.sum()),
        "hit_rate": _mean(r <= n),
        "mrr": _mean(1.0 / r),
        "cold_events": int((cold_user | cold_item)[lo:hi][scored].sum()),
        "cumulative_hit_rate": _mean(r_all <= n),
        "cumulative_mrr": _mean(1.0 / r_all),
    }


# ---------------------------------------------------------------------------
# Helpers


def _checked_scores(scorer: Scorer, user_ids: np.ndarray, n_items: int) -> np.ndarray:
    scores = np.array(scorer.score_users(user_ids), dtype=np.float64)
    if scores.shape != (len(user_ids), n_items):
        raise ValueError(
            f"score_users() returned shape {scores.shape}, expected "
            f"(len(user_ids), len(item_ids)) = ({len(user_ids)}, {n_items})"
        )
    return scores


def _top_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """Columns of the k best scores per row, best first; ties go to the lower column."""
    n_rows, n_columns = scores.shape
    if k < n_columns:
        # argpartition picks arbitrary members of a tie at the k-th score; keep
        # every column above it, then the lowest columns equal to it.
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        threshold = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
        above = scores > threshold
        tied = scores == threshold
        room = k - above.sum(axis=1, keepdims=True)
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))
        part = np.nonzero(chosen)[1].reshape(n_rows, k)
    else:
        part = np.broadcast_to(np.arange(n_columns), scores.shape).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    return np.take_along_axis(part, order, axis=1)


def _local_rows(codes: np.ndarray, pair_users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted ``pair_users``, the (row in ``codes``, pair index) of matching pairs."""
    lo = np.searchsorted(pair_users, codes, side="left")
    hi = np.searchsorted(pair_users, codes, side="right")
    lengths = hi - lo
    rows = np.repeat(np.arange(len(codes)), lengths)
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return rows, np.repeat(lo, lengths) + offsets


def _as_object_if_mixed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Concatenating int64 ids with str ids would coerce them to strings of
    # digits silently; make the mixture explicit as objects instead.
    if (a.dtype == object) != (b.dtype == object) and len(a) and len(b):
        return np.concatenate([a.astype(object), b.astype(object)])
    return np.concatenate([a, b])


def _py_ids(ids) -> list:
    """Ids as Python scalars, so that ``np.int64(3)`` and ``3`` hash alike."""
    if isinstance(ids, np.ndarray):
        return ids.tolist()
    return [i.item() if isinstance(i, np.generic) else i for i in ids]


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def _mean(values) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if values.size else None


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4f}"


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")

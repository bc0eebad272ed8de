"""Seeded interaction streams with planted group structure.

The generator draws ``n_groups`` latent groups. Items are split into groups of
near-equal size and users are assigned to groups uniformly at random. Each user
draws a number of events, and each event is, with probability ``1 - noise``,
an item of the user's own group, drawn with Zipf-like popularity
(``p(rank) ~ rank ** -zipf_exponent``, ranks shuffled within each group), or,
with probability ``noise``, an item of any other group drawn with the global
popularity. A user meets each item at most once unless ``repeats=True``, as in
MovieLens ratings. Timestamps are uniform over ``duration`` seconds, and the
result is in time order.

Everything depends only on the arguments (``numpy.random.default_rng(seed)``),
so a test can rebuild the same data and assert that a model recovers the
groups, for example with :func:`group_purity` over its top-10 neighbours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from i2v_stream.data import Interactions

logger = logging.getLogger(__name__)


@dataclass
class SyntheticData:
    """Interactions plus the ground truth that produced them.

    Attributes
    ----------
    interactions : Interactions
        In time order.
    user_ids, item_ids : numpy.ndarray, shape (n_users,), (n_items,)
        Every id of the planted population (a user with no event still has an
        id here; see ``min_events``).
    user_groups, item_groups : numpy.ndarray of int64
        The group of ``user_ids[k]`` / ``item_ids[k]``.
    """

    interactions: Interactions
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_groups: np.ndarray
    item_groups: np.ndarray

    @property
    def user_group(self) -> dict:
        """``{user_id: group}``."""
        return dict(zip(self.user_ids.tolist(), self.user_groups.tolist()))

    @property
    def item_group(self) -> dict:
        """``{item_id: group}``."""
        return dict(zip(self.item_ids.tolist(), self.item_groups.tolist()))


def make_interactions(
    n_users: int = 500,
    n_items: int = 300,
    n_groups: int = 5,
    events_per_user: float = 30.0,
    *,
    min_events: int = 5,
    noise: float = 0.1,
    zipf_exponent: float = 1.0,
    repeats: bool = False,
    string_ids: bool = False,
    start_time: float = 1.6e9,
    duration: float = 30 * 86400.0,
    seed: int = 0,
) -> SyntheticData:
    """Generate a seeded interaction set with planted user/item groups.

    Parameters
    ----------
    n_users, n_items, n_groups : int
        Population sizes; ``n_groups <= n_items``.
    events_per_user : float
        Mean events per user (Poisson, at least ``min_events``, at most the
        number of items when ``repeats`` is False).
    min_events : int
        Lower bound on each user's event count.
    noise : float in [0, 1]
        Probability that an event leaves the user's group.
    zipf_exponent : float >= 0
        Popularity skew within a group (0 = uniform).
    repeats : bool
        Allow a user to meet the same item more than once.
    string_ids : bool
        Ids ``"u0"``, ``"i0"``... instead of ints ``0..n-1``.
    start_time, duration : float
        Timestamps (unix seconds) are uniform in ``[start_time, start_time + duration)``.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    SyntheticData
    """
    _check_int("n_users", n_users, 1)
    _check_int("n_items", n_items, 1)
    _check_int("n_groups", n_groups, 1)
    _check_int("min_events", min_events, 0)
    if n_groups > n_items:
        raise ValueError(f"n_groups must be at most n_items={n_items}, got {n_groups}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise!r}")
    if zipf_exponent < 0:
        raise ValueError(f"zipf_exponent must be >= 0, got {zipf_exponent!r}")
    if events_per_user <= 0:
        raise ValueError(f"events_per_user must be > 0, got {events_per_user!r}")
    if duration <= 0:
        raise ValueError(f"duration must be > 0, got {duration!r}")
    rng = np.random.default_rng(seed)

    # Planted structure: item groups of near-equal size, Zipf weights inside each.
    item_groups = rng.permutation(np.arange(n_items) % n_groups)
    user_groups = rng.integers(0, n_groups, size=n_users)
    weights = np.empty(n_items)
    for g in range(n_groups):
        members = np.flatnonzero(item_groups == g)
        ranks = rng.permutation(len(members)) + 1
        weights[members] = ranks ** -float(zipf_exponent)
    members_of = [np.flatnonzero(item_groups == g) for g in range(n_groups)]

    counts = np.maximum(rng.poisson(events_per_user, size=n_users), min_events)
    if not repeats:
        counts = np.minimum(counts, n_items)
    users_out, items_out = [], []
    for user in range(n_users):
        chosen = _draw_user_items(rng, int(counts[user]), members_of[user_groups[user]],
                                  weights, noise, repeats)
        users_out.append(np.full(len(chosen), user, dtype=np.int64))
        items_out.append(chosen)
    users = np.concatenate(users_out) if users_out else np.zeros(0, dtype=np.int64)
    items = np.concatenate(items_out) if items_out else np.zeros(0, dtype=np.int64)
    timestamps = start_time + rng.random(len(users)) * duration

    order = np.argsort(timestamps, kind="stable")
    users, items, timestamps = users[order], items[order], timestamps[order]
    user_ids = np.arange(n_users, dtype=np.int64)
    item_ids = np.arange(n_items, dtype=np.int64)
    if string_ids:
        user_ids = np.array([f"u{k}" for k in range(n_users)], dtype=object)
        item_ids = np.array([f"i{k}" for k in range(n_items)], dtype=object)
        users, items = user_ids[users], item_ids[items]
    logger.debug("synthetic interactions events=%d users=%d items=%d groups=%d seed=%d",
                 len(users), n_users, n_items, n_groups, seed)
    return SyntheticData(Interactions(users, items, timestamps), user_ids, item_ids,
                         user_groups.astype(np.int64), item_groups.astype(np.int64))


def _draw_user_items(rng, count, own, weights, noise, repeats) -> np.ndarray:
    n_items = len(weights)
    outside = np.setdiff1d(np.arange(n_items), own, assume_unique=True)
    n_noise = int(rng.binomial(count, noise)) if len(outside) else 0
    n_own = count - n_noise
    if not repeats:
        # Without repeats a group smaller than the demand spills into noise.
        n_own = min(n_own, len(own))
        n_noise = min(count - n_own, len(outside))
    own_items = rng.choice(own, size=n_own, replace=repeats,
                           p=weights[own] / weights[own].sum())
    noise_items = rng.choice(outside, size=n_noise, replace=repeats,
                             p=weights[outside] / weights[outside].sum()) if n_noise else []
    return np.concatenate([own_items, np.asarray(noise_items, dtype=np.int64)]).astype(np.int64)


def group_purity(
    neighbours: Mapping[Hashable, Sequence[Hashable]] | Iterable[tuple[Hashable, Sequence]],
    query_group: Mapping[Hashable, int],
    result_group: Mapping[Hashable, int],
) -> float:
    """Mean share of results that belong to their query's group.

    Parameters
    ----------
    neighbours : mapping or iterable of pairs
        ``{query_id: [result_id, ...]}``, e.g. each user's top-10
        recommendations or each item's similar items. Results may be
        ``(id, score)`` pairs; the score is ignored.
    query_group, result_group : mapping
        Ground-truth group of each query id and each result id
        (:attr:`SyntheticData.user_group` / :attr:`SyntheticData.item_group`).

    Returns
    -------
    float
        In [0, 1]; NaN when no query has results. A random ranking scores about
        ``1 / n_groups``.
    """
    pairs = neighbours.items() if isinstance(neighbours, Mapping) else neighbours
    shares = []
    for query, results in pairs:
        ids = [r[0] if isinstance(r, tuple) else r for r in results]
        if not ids:
            continue
        group = query_group[query]
        shares.append(sum(result_group[i] == group for i in ids) / len(ids))
    return float(np.mean(shares)) if shares else float("nan")


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

"""Popularity baselines that implement the evaluation protocols.

Both classes are :class:`~i2v_stream.evaluation.OnlineRecommender`\\ s:
``item_ids``, ``score_users(user_ids)`` and ``learn_many(users, items,
timestamps)``, plus ``fit``. Every user gets the same scores: the number of
events of each item so far.

Unknown users: by default a user the baseline has never seen gets an all-NaN
row, the "unknown" answer of the scorer protocol, so that the cold-start
accounting of :func:`~i2v_stream.evaluation.prequential` treats a baseline
and a model alike. With ``score_unknown_users=True`` unknown users get the
popularity scores too (the usual cold-start fallback).

Examples
--------
>>> import numpy as np
>>> pop = OnlinePopular()
>>> _ = pop.learn_many(np.array([1, 1, 2]), np.array([10, 20, 20]))
>>> pop.item_ids, pop.score_users([2, 3]).tolist()
([10, 20], [[1.0, 2.0], [nan, nan]])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class PopularityStats:
    """What one ``learn_many`` call did: ``events`` applied."""

    events: int


class OnlinePopular:
    """Most-popular recommender whose counts follow the events as they arrive.

    Parameters
    ----------
    score_unknown_users : bool
        Score users never seen with the popularity (True) or answer unknown
        with an all-NaN row (False, the default).
    """

    def __init__(self, score_unknown_users: bool = False) -> None:
        self.score_unknown_users = bool(score_unknown_users)
        self._item_index: dict = {}
        self._item_ids: list = []
        self._users: set = set()
        self._counts = np.zeros(0, dtype=np.float64)

    @property
    def item_ids(self) -> list:
        """Item ids in column order (first-seen order; columns are only appended)."""
        return self._item_ids

    @property
    def user_ids(self) -> list:
        """Users seen so far (no particular order)."""
        return list(self._users)

    @property
    def item_counts(self) -> np.ndarray:
        """Events per item, aligned with :attr:`item_ids` (a copy)."""
        return self._counts.copy()

    def get_params(self) -> dict:
        return {"score_unknown_users": self.score_unknown_users}

    def learn_many(self, users: Sequence, items: Sequence,
                   timestamps: Sequence | None = None) -> PopularityStats:
        """Count a batch of events (``timestamps`` is accepted and ignored)."""
        users = _ids(users)
        items = _ids(items)
        if len(users) != len(items):
            raise ValueError(f"users and items must have the same length, got "
                             f"{len(users)} and {len(items)}")
        for item in items:
            if item not in self._item_index:
                self._item_index[item] = len(self._item_ids)
                self._item_ids.append(item)
        if len(self._counts) < len(self._item_ids):
            self._counts = np.concatenate(
                [self._counts, np.zeros(len(self._item_ids) - len(self._counts))])
        if items:
            columns = np.fromiter((self._item_index[i] for i in items), dtype=np.int64,
                                  count=len(items))
            self._counts += np.bincount(columns, minlength=len(self._counts))
        self._users.update(users)
        return PopularityStats(events=len(items))

    def fit(self, users: Sequence, items: Sequence, timestamps: Sequence | None = None,
            **_ignored) -> OnlinePopular:
        """Forget everything, then count the events (epochs and the like are ignored)."""
        self.__init__(self.score_unknown_users)
        self.learn_many(users, items, timestamps)
        return self

    def score_users(self, user_ids: Sequence) -> np.ndarray:
        """Popularity scores, shape ``(len(user_ids), len(item_ids))``.

        Rows of unknown users are NaN unless ``score_unknown_users``.
        """
        user_ids = _ids(user_ids)
        scores = np.tile(self._counts, (len(user_ids), 1))
        if not self.score_unknown_users:
            unknown = np.fromiter((u not in self._users for u in user_ids), dtype=bool,
                                  count=len(user_ids))
            scores[unknown] = np.nan
        return scores

    def recommend(self, user, n: int = 10, exclude: Sequence = ()) -> list[tuple]:
        """The ``n`` most popular items not in ``exclude``, as ``(item_id, count)``."""
        if not self.score_unknown_users and _ids([user])[0] not in self._users:
            raise KeyError(f"unknown user {user!r}")
        excluded = set(_ids(exclude))
        order = np.argsort(-self._counts, kind="stable")
        picked = [(self._item_ids[c], float(self._counts[c])) for c in order
                  if self._item_ids[c] not in excluded]
        return picked[:n]


class MostPopular(OnlinePopular):
    """Offline most-popular: :meth:`fit` once on the training events.

    The same counts as :class:`OnlinePopular`; it exists so that offline
    results read as what they are. ``learn_many`` still adds events.
    """


def _ids(values: Sequence) -> list:
    if isinstance(values, np.ndarray):
        return values.tolist()
    return [v.item() if isinstance(v, np.generic) else v for v in values]

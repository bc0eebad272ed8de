"""Tests of i2v_stream.baselines: offline and online most-popular."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import i2v_stream.baselines as baselines
from i2v_stream.baselines import MostPopular, OnlinePopular
from i2v_stream.evaluation import OnlineRecommender, Scorer, evaluate_split, prequential
from i2v_stream.evaluation import temporal_split
from i2v_stream.synthetic import make_interactions


def test_docstring_examples():
    assert doctest.testmod(baselines).failed == 0


def test_online_counts_follow_batches():
    pop = OnlinePopular()
    stats = pop.learn_many(np.array(["u", "v"]), np.array(["a", "b"]))
    assert stats.events == 2
    pop.learn_many(["w"], ["b"], timestamps=[3.0])
    assert pop.item_ids == ["a", "b"]
    assert pop.item_counts.tolist() == [1.0, 2.0]
    assert sorted(pop.user_ids) == ["u", "v", "w"]
    assert pop.score_users(["u", "w"]).tolist() == [[1.0, 2.0], [1.0, 2.0]]


def test_unknown_users_get_nan_rows_unless_asked():
    pop = OnlinePopular()
    pop.learn_many([1], [5])
    assert np.isnan(pop.score_users([2])).all()
    fallback = OnlinePopular(score_unknown_users=True)
    fallback.learn_many([1], [5])
    assert fallback.score_users([2]).tolist() == [[1.0]]
    # Scoring never records the user.
    assert 2 not in pop.user_ids and 2 not in fallback.user_ids


def test_numpy_and_python_ids_are_the_same_id():
    pop = OnlinePopular()
    pop.learn_many(np.array([1, 2], dtype=np.int64), np.array([7, 7], dtype=np.int64))
    pop.learn_many([1], [np.int64(7)])
    assert pop.item_ids == [7] and pop.item_counts.tolist() == [3.0]
    assert not np.isnan(pop.score_users(np.array([2]))).any()


def test_fit_resets_and_recommend_excludes():
    pop = MostPopular()
    pop.learn_many([1], ["old"])
    pop.fit([1, 2, 3], ["a", "b", "b"], epochs=5)
    assert pop.item_ids == ["a", "b"]
    assert pop.recommend(1, n=5) == [("b", 2.0), ("a", 1.0)]
    assert pop.recommend(1, n=5, exclude=["b"]) == [("a", 1.0)]
    with pytest.raises(KeyError):
        pop.recommend(99)


def test_length_mismatch_is_named():
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        OnlinePopular().learn_many([1, 2], [3])


def test_baselines_satisfy_the_protocols():
    assert isinstance(MostPopular(), Scorer)
    assert isinstance(OnlinePopular(), OnlineRecommender)


def test_popular_on_planted_data_split_and_prequential():
    data = make_interactions(n_users=150, n_items=80, n_groups=4, seed=11).interactions
    train, test = temporal_split(data, 0.2)
    split = evaluate_split(MostPopular().fit(train.users, train.items), train, test, n=10)
    assert split["unknown_users"] == 0 and split["recall"] > 0
    online = prequential(OnlinePopular(score_unknown_users=True), data, n=10, chunk_size=200)
    assert online["cold_user_events"] == 0
    assert online["hit_rate"] > 0.05

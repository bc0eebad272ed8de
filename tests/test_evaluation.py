"""Tests of i2v_stream.evaluation: temporal split, split metrics, prequential runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from i2v_stream.baselines import MostPopular, OnlinePopular
from i2v_stream.data import Interactions
from i2v_stream.evaluation import (
    RowScorer,
    VectorScorer,
    as_scorer,
    evaluate_split,
    prequential,
    temporal_split,
)
from i2v_stream.synthetic import make_interactions


def events(users, items, timestamps=None) -> Interactions:
    return Interactions(np.asarray(users), np.asarray(items),
                        None if timestamps is None else np.asarray(timestamps, dtype=float))


class FixedScorer:
    """Scores from a dict {user: {item: score}}; missing items score 0."""

    def __init__(self, table: dict, items: list) -> None:
        self.table = table
        self.item_ids = items

    def score_users(self, user_ids):
        out = np.full((len(user_ids), len(self.item_ids)), np.nan)
        for r, u in enumerate(user_ids):
            if u in self.table:
                out[r] = [self.table[u].get(i, 0.0) for i in self.item_ids]
        return out


# ---------------------------------------------------------------------------
# temporal_split


def test_split_holds_out_last_fraction_per_user_in_time_order():
    data = events([1] * 10 + [2] * 4, list(range(10)) + [20, 21, 22, 23],
                  [9, 8, 7, 6, 5, 4, 3, 2, 1, 0] + [0, 1, 2, 3])
    train, test = temporal_split(data, 0.2)
    # User 1: the two latest events are items 0 and 1 (times 9 and 8);
    # user 2 has floor(0.2 * 4) = 0 to hold out and keeps everything.
    assert sorted(test.items.tolist()) == [0, 1]
    assert len(train) == 12 and set(train.users.tolist()) == {1, 2}


def test_split_by_count_needs_more_events_than_the_count():
    data = events([1] * 6 + [2] * 5, list(range(11)), list(range(11)))
    train, test = temporal_split(data, 5)
    assert test.users.tolist() == [1] * 5
    assert test.items.tolist() == [1, 2, 3, 4, 5]
    assert train.users.tolist() == [1] + [2] * 5


def test_split_ties_keep_file_order_and_untimed_go_last():
    data = events([1, 1, 1, 1, 1], [10, 11, 12, 13, 14], [5, np.nan, 5, 5, 1])
    train, test = temporal_split(data, 0.4)
    # The last tied event and the untimed one, reported in file order.
    assert test.items.tolist() == [11, 13]


@pytest.mark.parametrize("holdout", [0, 1.0, 1.5, -1, True, "0.2"])
def test_split_rejects_bad_holdout(holdout):
    with pytest.raises(ValueError, match="holdout must be a fraction in"):
        temporal_split(events([1], [1], [1]), holdout)


# ---------------------------------------------------------------------------
# evaluate_split


def test_split_metrics_by_hand():
    train = events(["a", "a", "b"], ["x", "y", "x"])
    test = events(["a", "a", "b", "b"], ["z", "w", "y", "x"])
    # a: x, y excluded; ranking z (0.9), q (0.5), w (0.1) -> z at 1, w at 3.
    # b: test x was in train (dropped); relevant y ranks 2nd behind z.
    scorer = FixedScorer({"a": {"x": 5, "y": 4, "z": 0.9, "q": 0.5, "w": 0.1},
                          "b": {"z": 1.0, "y": 0.5}}, ["x", "y", "z", "q", "w"])
    result = evaluate_split(scorer, train, test, n=2)
    assert result["users"] == 2
    assert result["test_items_seen_in_train"] == 1
    assert result["recall"] == pytest.approx((0.5 + 1.0) / 2)
    ndcg_a = 1.0 / (1 + 1 / math.log2(3))
    ndcg_b = (1 / math.log2(3)) / 1.0
    assert result["ndcg"] == pytest.approx((ndcg_a + ndcg_b) / 2)
    assert result["precision"] == pytest.approx((0.5 + 0.5) / 2)
    assert result["hit_rate"] == 1.0
    json.dumps(result)


def test_split_unknown_users_and_unrankable_items_are_misses():
    train = events([1, 2], [10, 10])
    test = events([1, 2, 2], [11, 11, 99])
    scorer = FixedScorer({1: {11: 1.0}, 2: {11: 1.0}}, [10, 11])
    result = evaluate_split(scorer, train, test, n=5)
    assert result["unrankable_items"] == 1           # item 99 never in the catalogue
    assert result["recall"] == pytest.approx((1.0 + 0.5) / 2)
    only_user_1 = FixedScorer({1: {11: 1.0}}, [10, 11])
    result = evaluate_split(only_user_1, train, test, n=5)
    assert result["unknown_users"] == 1
    assert result["recall"] == pytest.approx(0.5)


def reference_split(score_matrix, user_ids, item_ids, train, test, n):
    """A per-user loop over the same definitions."""
    col = {i: c for c, i in enumerate(item_ids)}
    recalls, ndcgs = [], []
    for u in sorted(set(test.users.tolist())):
        history = set(train.items[train.users == u].tolist())
        relevant = set(test.items[test.users == u].tolist()) - history
        if not relevant:
            continue
        scores = score_matrix[user_ids.index(u)].astype(float).copy()
        for i in history:
            if i in col:
                scores[col[i]] = -np.inf
        order = sorted(range(len(item_ids)), key=lambda c: (-scores[c], c))[:n]
        gains = [1.0 if item_ids[c] in relevant and np.isfinite(scores[c]) else 0.0
                 for c in order]
        dcg = sum(g / math.log2(k + 2) for k, g in enumerate(gains))
        idcg = sum(1 / math.log2(k + 2) for k in range(min(len(relevant), n)))
        recalls.append(sum(gains) / len(relevant))
        ndcgs.append(dcg / idcg)
    return float(np.mean(recalls)), float(np.mean(ndcgs))


@pytest.mark.parametrize("max_cells", [7, 1 << 22])
def test_split_matches_a_per_user_loop(max_cells):
    rng = np.random.default_rng(0)
    data = make_interactions(n_users=40, n_items=30, n_groups=3, events_per_user=12,
                             seed=1).interactions
    train, test = temporal_split(data, 0.25)
    user_ids = sorted(set(train.users.tolist()))
    item_ids = sorted(set(train.items.tolist()))
    matrix = rng.integers(0, 5, size=(len(user_ids), len(item_ids))).astype(float)
    result = evaluate_split(lambda rows: matrix[rows], train, test, n=5,
                            user_ids=user_ids, item_ids=item_ids, max_cells=max_cells)
    recall, ndcg = reference_split(matrix, user_ids, item_ids, train, test, 5)
    assert result["recall"] == pytest.approx(recall)
    assert result["ndcg"] == pytest.approx(ndcg)


def test_split_popular_beats_nothing_on_planted_data():
    data = make_interactions(n_users=200, n_items=100, n_groups=4, seed=3).interactions
    train, test = temporal_split(data, 0.2)
    result = evaluate_split(MostPopular().fit(train.users, train.items), train, test, n=10)
    assert result["users"] > 150
    assert 0 < result["ndcg"] < 1 and 0 < result["recall"] < 1


def test_split_rejects_bad_arguments():
    data = events([1, 1], [1, 2])
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        evaluate_split(MostPopular().fit([1], [1]), data, data, n=0)
    with pytest.raises(TypeError, match="needs user_ids= and item_ids="):
        evaluate_split(lambda rows: rows, data, data)
    with pytest.raises(TypeError, match="scorer must have score_users"):
        evaluate_split(object(), data, data)


def test_scorer_shape_mismatch_is_explained():
    class Wrong:
        item_ids = [1, 2]

        def score_users(self, user_ids):
            return np.zeros((len(user_ids), 3))

    with pytest.raises(ValueError, match=r"score_users\(\) returned shape \(1, 3\)"):
        evaluate_split(Wrong(), events([1], [1]), events([1], [2]))


# ---------------------------------------------------------------------------
# Scorer adapters


class Vectors:
    def __init__(self, user_ids, user_vectors, item_ids, item_vectors, scoring="cosine"):
        self.user_ids, self.item_ids = user_ids, item_ids
        self.user_vectors, self.item_vectors = user_vectors, item_vectors
        self.scoring = scoring


def test_vector_scorer_cosine_dot_and_unknown_users():
    users = np.array([[1.0, 0.0], [3.0, 4.0]], dtype=np.float32)
    items = np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    source = Vectors(["a", "b"], users, [7, 8, 9], items)
    scores = as_scorer(source).score_users(np.array(["b", "zz", "a"], dtype=object))
    assert isinstance(as_scorer(source), VectorScorer)
    np.testing.assert_allclose(scores[0], [0.6, 0.0, 0.8], rtol=1e-6)
    assert np.isnan(scores[1]).all()
    np.testing.assert_allclose(scores[2], [1.0, 0.0, 0.0], rtol=1e-6)
    source.scoring = "dot"
    np.testing.assert_allclose(as_scorer(source).score_users(["b"])[0], [6, 0, 4])


def test_vector_scorer_follows_appended_rows():
    source = Vectors([1], np.ones((1, 2), np.float32), [5], np.ones((1, 2), np.float32))
    scorer = VectorScorer(source)
    assert np.isnan(scorer.score_users([2])).all()
    source.user_ids = [1, 2]
    source.user_vectors = np.ones((2, 2), np.float32)
    assert scorer.score_users(np.array([2]))[0, 0] == pytest.approx(1.0)


def test_row_scorer_maps_ids_to_rows():
    scorer = RowScorer(lambda rows: np.array([[float(r)] for r in rows]), [10, 20], ["x"])
    assert scorer.score_users([20, 30, 10]).tolist()[0] == [1.0]
    assert np.isnan(scorer.score_users([30])[0, 0])


# ---------------------------------------------------------------------------
# prequential


class ScriptedModel:
    """Learns nothing but ids; scores items by a fixed table; records calls."""

    def __init__(self, item_scores: dict) -> None:
        self.item_scores = item_scores
        self.users: set = set()
        self.item_ids: list = []
        self.calls: list = []

    def learn_many(self, users, items, timestamps=None):
        self.calls.append(("learn_many", len(users)))
        self.users.update(users.tolist())
        for i in items.tolist():
            if i not in self.item_ids:
                self.item_ids.append(i)

    def fit(self, users, items, timestamps=None, **kwargs):
        self.calls.append(("fit", len(users), kwargs))
        self.learn_many(users, items, timestamps)
        self.calls.pop()

    def score_users(self, user_ids):
        out = np.tile([self.item_scores[i] for i in self.item_ids], (len(user_ids), 1))
        out = out.astype(float)
        out[[u not in self.users for u in user_ids]] = np.nan
        return out


def test_prequential_ranks_by_hand():
    # Scores: a 4, b 3, c 2, d 1. Warm-up (2 events): u1-a, u2-b; catalogue a, b.
    # Chunk 1 (u1-b, u1-c, u3-a): u1-b: a excluded -> b first (rank 1);
    #   u1-c: c not learned yet -> cold item; u3 unknown -> cold user.
    # Chunk 2 (u2-d, u1-a, u2-c): d unknown -> cold item; u1-a repeats -> not
    #   scored; u2-c: b excluded, a (4) ranks above c (2) -> rank 2.
    data = events(["u1", "u2", "u1", "u1", "u3", "u2", "u1", "u2"],
                  ["a", "b", "b", "c", "a", "d", "a", "c"], list(range(8)))
    model = ScriptedModel({"a": 4, "b": 3, "c": 2, "d": 1})
    result = prequential(model, data, n=1, warmup=0.25, chunk_size=3)
    assert result["warmup_events"] == 2
    assert result["events"] == 5 and result["repeat_events"] == 1
    assert result["cold_user_events"] == 1 and result["cold_item_events"] == 2
    assert result["cold_events"] == 3 and result["warm_events"] == 2
    assert result["new_user_events"] == 1
    assert result["hit_rate"] == pytest.approx(1 / 5)
    assert result["mrr"] == pytest.approx((1 + 0.5) / 5)
    assert result["hit_rate_warm"] == pytest.approx(1 / 2)
    assert result["mrr_warm"] == pytest.approx(1.5 / 2)
    assert [p["events"] for p in result["curve"]] == [3, 2]
    assert result["curve"][0]["hit_rate"] == pytest.approx(1 / 3)
    assert result["curve"][1]["cumulative_mrr"] == pytest.approx(1.5 / 5)
    assert model.calls == [("learn_many", 2), ("learn_many", 3), ("learn_many", 3)]
    json.dumps(result, allow_nan=False)


def test_prequential_ties_share_their_mean_rank():
    data = events(["u", "u", "u"], ["a", "b", "c"], [0, 1, 2])
    model = ScriptedModel({"a": 1, "b": 1, "c": 1})
    model.learn_many(np.array(["u"]), np.array(["c"]))
    model.learn_many(np.array(["v", "v"]), np.array(["b", "a"]))
    model.calls.clear()
    result = prequential(model, data, n=1, warmup=0.0, chunk_size=10)
    # a: 3 tied candidates -> 2.0; b: a excluded, 2 tied -> 1.5; c: only c left -> 1.
    assert result["mrr"] == pytest.approx((1 / 2 + 1 / 1.5 + 1) / 3)
    assert result["hit_rate"] == pytest.approx(1 / 3)


def test_prequential_fit_warmup_passes_fit_kwargs():
    data = events([1, 2, 1, 2], [1, 2, 2, 1], [0, 1, 2, 3])
    model = ScriptedModel({1: 1.0, 2: 2.0})
    prequential(model, data, warmup=0.5, warmup_mode="fit", fit_kwargs={"epochs": 3})
    assert model.calls[0] == ("fit", 2, {"epochs": 3})


def reference_prequential(data, warmup, chunk_size, n):
    """Event-by-event loop with an online popularity model (unknown users miss)."""
    counts: dict = {}
    users: set = set()
    seen: dict = {}
    ranks = []
    n_warmup = int(warmup * len(data))

    def learn(lo, hi):
        for u, i in zip(data.users[lo:hi].tolist(), data.items[lo:hi].tolist()):
            counts[i] = counts.get(i, 0) + 1
            users.add(u)

    learn(0, n_warmup)
    history: dict = {}
    for u, i in zip(data.users[:n_warmup].tolist(), data.items[:n_warmup].tolist()):
        history.setdefault(u, set()).add(i)
    for lo in range(n_warmup, len(data), chunk_size):
        hi = min(lo + chunk_size, len(data))
        snapshot, known = dict(counts), set(users)
        for u, i in zip(data.users[lo:hi].tolist(), data.items[lo:hi].tolist()):
            h = history.setdefault(u, set())
            if i in h:
                continue
            if u not in known or i not in snapshot:
                ranks.append(math.inf)
            else:
                s = snapshot[i]
                cands = [c for k, c in snapshot.items() if k not in h and k != i]
                ranks.append(1 + sum(c > s for c in cands) + sum(c == s for c in cands) / 2)
            h.add(i)
        learn(lo, hi)
    del seen
    ranks = np.array(ranks)
    return float(np.mean(ranks <= n)), float(np.mean(1 / ranks))


@pytest.mark.parametrize("max_cells", [5, 1 << 22])
def test_prequential_popular_matches_event_loop(max_cells):
    data = make_interactions(n_users=60, n_items=40, n_groups=3, events_per_user=10,
                             repeats=True, seed=7).interactions
    result = prequential(OnlinePopular(), data, n=5, warmup=0.3, chunk_size=37,
                         max_cells=max_cells)
    hit_rate, mrr = reference_prequential(data, 0.3, 37, 5)
    assert result["hit_rate"] == pytest.approx(hit_rate)
    assert result["mrr"] == pytest.approx(mrr)
    assert result["repeat_events"] > 0


def test_prequential_fallback_scores_new_users_but_warm_metrics_agree():
    data = make_interactions(n_users=400, n_items=50, n_groups=3, events_per_user=3,
                             min_events=1, seed=2).interactions
    strict = prequential(OnlinePopular(), data, chunk_size=100)
    fallback = prequential(OnlinePopular(score_unknown_users=True), data, chunk_size=100)
    assert strict["cold_user_events"] == strict["new_user_events"] > 0
    assert fallback["cold_user_events"] == 0
    assert fallback["new_user_events"] == strict["new_user_events"]
    assert fallback["hit_rate"] > strict["hit_rate"]
    assert fallback["hit_rate_warm"] == strict["hit_rate_warm"]
    assert fallback["warm_events"] == strict["warm_events"]


def test_prequential_rejects_bad_arguments():
    data = events([1], [1])
    with pytest.raises(ValueError, match=r"warmup must be a fraction in \[0, 1\), got 1.0"):
        prequential(OnlinePopular(), data, warmup=1.0)
    with pytest.raises(ValueError, match="warmup_mode must be 'learn_many' or 'fit'"):
        prequential(OnlinePopular(), data, warmup_mode="batch")
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        prequential(OnlinePopular(), data, chunk_size=0)
    with pytest.raises(TypeError, match="model must have learn_many"):
        prequential(MostPopular().score_users, data)


def test_prequential_on_empty_stream():
    result = prequential(OnlinePopular(), events(np.zeros(0, np.int64), np.zeros(0, np.int64)))
    assert result["events"] == 0 and result["hit_rate"] is None and result["curve"] == []


# ---------------------------------------------------------------------------
# With the Interact2Vec model


@pytest.fixture(scope="module")
def planted():
    return make_interactions(n_users=300, n_items=200, n_groups=5, seed=0)


def test_model_split_beats_popularity_on_planted_data(planted):
    model_module = pytest.importorskip("i2v_stream.model")
    train, test = temporal_split(planted.interactions, 0.2)
    model = model_module.Interact2Vec(dim=32, epochs=50, seed=0).fit(train.users, train.items)
    result = evaluate_split(model, train, test, n=10)
    popular = evaluate_split(MostPopular().fit(train.users, train.items), train, test, n=10)
    assert result["unknown_users"] == 0
    assert result["ndcg"] > popular["ndcg"]
    json.dumps(result, allow_nan=False)


def test_model_split_scores_agree_with_recommend(planted):
    model_module = pytest.importorskip("i2v_stream.model")
    data = planted.interactions
    model = model_module.Interact2Vec(dim=16, epochs=5, seed=1).fit(data.users, data.items)
    user = model.user_ids[0]
    scores = as_scorer(model).score_users([user])[0]
    top = np.argsort(-scores, kind="stable")[:5]
    expected = [item for item, _ in model.recommend(user, n=5, exclude_seen=False)]
    assert [model.item_ids[c] for c in top] == expected


def test_model_prequential_is_deterministic_and_block_independent(planted):
    model_module = pytest.importorskip("i2v_stream.model")
    data = planted.interactions

    def run(max_cells):
        model = model_module.Interact2Vec(dim=16, seed=3, repeats=2)
        result = prequential(model, data, n=10, chunk_size=500, max_cells=max_cells)
        for key in ("learn_seconds", "score_seconds"):
            result.pop(key)
        return result

    first = run(1 << 22)
    assert first == run(1 << 22)
    assert first == run(1000)
    assert first["events"] == len(data) - first["warmup_events"]
    assert 0 <= first["hit_rate"] <= 1 and len(first["curve"]) == math.ceil(
        first["events"] / 500)
    json.dumps(first, allow_nan=False)


def test_model_prequential_with_fit_warmup(planted):
    model_module = pytest.importorskip("i2v_stream.model")
    model = model_module.Interact2Vec(dim=16, seed=0)
    result = prequential(model, planted.interactions, n=10, warmup_mode="fit",
                         fit_kwargs={"epochs": 10}, chunk_size=1000)
    assert result["warmup_mode"] == "fit"
    assert result["hit_rate"] > 0

"""Interact2Vec: training, online semantics, reads, persistence, validation."""

import numpy as np
import pytest

from i2v_stream import Interact2Vec, UnknownIdError
from i2v_stream.synthetic import group_purity, make_interactions


@pytest.fixture(scope="module")
def planted():
    return make_interactions(n_users=400, n_items=200, n_groups=4, events_per_user=30,
                             noise=0.05, seed=11)


def _small(**kwargs):
    # No popularity prior: these tests check what the embeddings alone learned.
    options = dict(dim=16, negatives=3, seed=7, popularity_prior=0.0)
    options.update(kwargs)
    return Interact2Vec(**options)


def test_fit_recovers_planted_groups(planted):
    data = planted.interactions
    model = _small(dim=32).fit(data.users, data.items, epochs=15)
    recs = {u: model.recommend(u, n=10) for u in model.user_ids}
    similar = {i: model.similar_items(i, n=10) for i in model.item_ids}
    # 4 groups: a random ranking scores about 0.25.
    assert group_purity(recs, planted.user_group, planted.item_group) > 0.8
    assert group_purity(similar, planted.item_group, planted.item_group) > 0.7


@pytest.mark.parametrize("window", [0, 3])
def test_online_pass_learns_planted_groups(planted, window):
    data = planted.interactions
    model = _small(dim=32, window=window, learning_rate=0.1, repeats=3)
    for start in range(0, len(data), 500):
        stats = model.learn_many(data.users[start:start + 500], data.items[start:start + 500])
        assert stats.events == len(data.users[start:start + 500])
    recs = {u: model.recommend(u, n=10) for u in model.user_ids}
    assert group_purity(recs, planted.user_group, planted.item_group) > 0.6


def test_online_loss_decreases(planted):
    data = planted.interactions
    model = _small(learning_rate=0.05)
    first = model.learn_many(data.users[:2000], data.items[:2000]).loss
    for _ in range(3):
        last = model.learn_many(data.users[2000:], data.items[2000:]).loss
    assert last < first


@pytest.mark.parametrize("window", [0, 2])
def test_same_seed_same_order_is_bit_identical_whatever_the_batching(planted, window):
    data = planted.interactions
    whole = _small(window=window, noise_refresh=700)
    whole.learn_many(data.users, data.items)
    pieces = _small(window=window, noise_refresh=700)
    cuts = [0, 1, 5, 333, 1000, 4321, len(data)]
    for lo, hi in zip(cuts, cuts[1:]):
        pieces.learn_many(data.users[lo:hi], data.items[lo:hi])
    for name in ("user_vectors", "item_vectors", "item_input_vectors", "user_counts",
                 "item_counts", "noise_counts", "recent_items"):
        np.testing.assert_array_equal(getattr(whole.state(), name),
                                      getattr(pieces.state(), name), err_msg=name)
    assert whole.user_ids == pieces.user_ids and whole.item_ids == pieces.item_ids


def test_fit_is_deterministic_with_one_worker(planted):
    data = planted.interactions
    a = _small(window=2).fit(data.users, data.items, epochs=3)
    b = _small(window=2).fit(data.users, data.items, epochs=3)
    np.testing.assert_array_equal(a.user_vectors, b.user_vectors)
    np.testing.assert_array_equal(a.item_vectors, b.item_vectors)


@pytest.mark.parametrize("merged", [True, False])
def test_fit_with_threads_matches_one_thread_in_quality(planted, merged, monkeypatch):
    from i2v_stream import model as model_module

    # Small tables train on merged private copies; large ones lock-free.
    monkeypatch.setattr(model_module, "MERGED_TABLE_BYTES", 1 << 40 if merged else 0)
    monkeypatch.setattr(model_module, "MERGED_ROUND_EVENTS", 2000)
    data = planted.interactions
    one = _small(dim=32).fit(data.users, data.items, epochs=10)
    two = _small(dim=32).fit(data.users, data.items, epochs=10, workers=2)
    purity = [group_purity({u: m.recommend(u) for u in m.user_ids}, planted.user_group,
                           planted.item_group) for m in (one, two)]
    assert abs(purity[0] - purity[1]) < 0.05
    # Whatever the threads did to the rings, fit leaves each user's last items.
    np.testing.assert_array_equal(one.state().recent_items, two.state().recent_items)
    np.testing.assert_array_equal(one.user_counts, two.user_counts)


@pytest.mark.parametrize("merged", [True, False])
def test_threads_train_every_item_pair_and_mark_every_row_dirty(planted, merged,
                                                                  monkeypatch):
    from i2v_stream import model as model_module

    monkeypatch.setattr(model_module, "MERGED_TABLE_BYTES", 1 << 40 if merged else 0)
    monkeypatch.setattr(model_module, "MERGED_ROUND_EVENTS", 1700)
    pairs = []
    fit_epoch = model_module.Interact2Vec._fit_epoch

    def counting(self, *args):
        loss, n_pairs = fit_epoch(self, *args)
        pairs.append(n_pairs)
        return loss, n_pairs

    monkeypatch.setattr(model_module.Interact2Vec, "_fit_epoch", counting)
    data = planted.interactions
    models = [_small(window=3, sample=0.0).fit(data.users, data.items, epochs=2, workers=w)
              for w in (1, 2)]
    # Each thread starts from the rings one thread would have there, so no
    # item->item pair is lost at a slice boundary.
    assert pairs[:2] == pairs[2:]
    np.testing.assert_array_equal(models[0].state().recent_items,
                                  models[1].state().recent_items)
    # Rows changed by the threads are dirty (new rows are dirty anyway, so a
    # second fit over known rows checks it).
    for model, workers in zip(models, (1, 2)):
        model.take_dirty()
        model.fit(data.users, data.items, epochs=1, workers=workers)
        users, items = model.take_dirty()
        assert len(users) == model.n_users and len(items) == model.n_items


def test_merged_threads_are_deterministic(planted, monkeypatch):
    from i2v_stream import model as model_module

    monkeypatch.setattr(model_module, "MERGED_ROUND_EVENTS", 1500)
    data = planted.interactions
    runs = [_small(window=2).fit(data.users, data.items, epochs=3, workers=2)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0].user_vectors, runs[1].user_vectors)
    np.testing.assert_array_equal(runs[0].item_vectors, runs[1].item_vectors)
    np.testing.assert_array_equal(runs[0].item_input_vectors, runs[1].item_input_vectors)


def test_new_ids_mid_stream_get_rows_and_counts():
    model = _small()
    model.learn_many(["a", "b"], [1, 2])
    model.learn_many(["b", "c", "a"], [3, 1, 4])
    assert model.user_ids == ["a", "b", "c"]
    assert model.item_ids == [1, 2, 3, 4]
    assert model.user_counts.tolist() == [2, 2, 1]
    assert model.item_counts.tolist() == [2, 1, 1, 1]
    assert model.user_vectors.shape == (3, 16) and model.item_vectors.shape == (4, 16)
    assert model.events_seen == 5


def test_int_and_str_ids_are_distinct_and_numpy_ints_are_plain_ints():
    model = _small()
    model.learn_many(np.array([1, 2], dtype=np.int64), ["1", "x"])
    model.learn_many(["1"], [np.int32(7)])
    assert model.user_ids == [1, 2, "1"]
    assert model.item_ids == ["1", "x", 7]


def test_a_bad_id_adds_nothing():
    model = _small()
    model.learn_many(["a"], ["x"])
    for bad in ("", True, 1.5, None):
        with pytest.raises(ValueError, match="ids must be"):
            model.learn_many(["b", "c"], ["y", bad])
    assert model.user_ids == ["a"] and model.item_ids == ["x"]
    assert model.events_seen == 1


def test_negative_alpha_trains(planted):
    data = planted.interactions
    model = _small(alpha=-0.5, dim=32).fit(data.users, data.items, epochs=15)
    assert np.isfinite(model.user_vectors).all() and np.isfinite(model.item_vectors).all()
    similar = {i: model.similar_items(i) for i in model.item_ids}
    assert group_purity(similar, planted.item_group, planted.item_group) > 0.7


def test_popularity_prior_favours_popular_items(planted):
    data = planted.interactions
    plain = _small().fit(data.users, data.items, epochs=5)
    state = plain.state()
    with_prior = Interact2Vec.from_state(state)
    with_prior.popularity_prior = 1.0
    counts = dict(zip(plain.item_ids, plain.item_counts))
    mean_count = [np.mean([counts[i] for u in plain.user_ids[:50] for i, _ in
                           m.recommend(u, exclude_seen=False)]) for m in (plain, with_prior)]
    assert mean_count[1] > mean_count[0]


def test_window_zero_has_no_item_input_table():
    assert _small(window=0).state().item_input_vectors is None
    model = _small(window=2)
    model.learn_many([1, 1, 1], [1, 2, 3])
    assert model.state().item_input_vectors.shape == (3, 16)


def test_reads_never_create_rows():
    model = _small()
    model.learn_many(["a"], ["x"])
    before = model.state()
    with pytest.raises(UnknownIdError, match="unknown user 'nobody'"):
        model.recommend("nobody")
    with pytest.raises(KeyError):
        model.similar_items("nothing")
    assert np.isnan(model.score_users(["nobody"], fallback="none")).all()
    assert np.isfinite(model.score_users(["nobody"])).all()  # popularity fallback
    after = model.state()
    assert after.user_ids == before.user_ids and after.item_ids == before.item_ids
    assert model.take_dirty()[0].tolist() == [0]  # only the learned row


def test_recommend_excludes_seen_items_and_ranks_best_first(planted):
    data = planted.interactions
    model = _small().fit(data.users, data.items, epochs=3)
    user = model.user_ids[0]
    seen = {model.item_ids[r] for r in model.seen_rows(0)}
    recs = model.recommend(user, n=20)
    assert len(recs) == 20 and not seen & {i for i, _ in recs}
    scores = [s for _, s in recs]
    assert scores == sorted(scores, reverse=True)
    with_seen = {i for i, _ in model.recommend(user, n=len(model.item_ids),
                                               exclude_seen=False)}
    assert seen <= with_seen
    assert model.similar_items(model.item_ids[0], n=5)[0][0] != model.item_ids[0]


def test_cosine_scoring_is_bounded(planted):
    data = planted.interactions
    model = _small(scoring="cosine", popularity_prior=0.0).fit(data.users, data.items,
                                                                epochs=2)
    assert all(-1.0001 <= s <= 1.0001 for _, s in model.recommend(model.user_ids[3]))


def test_save_load_round_trip_resumes_identically(tmp_path, planted):
    data = planted.interactions
    half = len(data) // 2
    model = _small(window=2)
    model.learn_many(data.users[:half], data.items[:half])
    model.save(tmp_path / "m")
    loaded = Interact2Vec.load(tmp_path / "m")
    assert loaded.get_params() == model.get_params()
    for m in (model, loaded):
        m.learn_many(data.users[half:], data.items[half:])
    np.testing.assert_array_equal(model.user_vectors, loaded.user_vectors)
    np.testing.assert_array_equal(model.item_vectors, loaded.item_vectors)
    assert loaded.recommend(model.user_ids[0]) == model.recommend(model.user_ids[0])


def test_from_state_checks_shapes():
    model = _small()
    model.learn_many([1], [2])
    state = model.state()
    state.user_vectors = np.zeros((1, 3), np.float32)
    with pytest.raises(ValueError, match="state.user_vectors must have shape"):
        Interact2Vec.from_state(state)


def test_take_dirty_reports_touched_rows_once():
    model = _small()
    model.learn_many([1, 2], [10, 20])
    users, items = model.take_dirty()
    assert users.tolist() == [0, 1] and set(items.tolist()) >= {0, 1}
    assert [len(x) for x in model.take_dirty()] == [0, 0]
    model.learn_many([2], [10])
    assert model.take_dirty()[0].tolist() == [1]


def test_vectors_are_read_only():
    model = _small()
    model.learn_many([1], [2])
    with pytest.raises(ValueError):
        model.user_vectors[0, 0] = 1.0


@pytest.mark.parametrize("name, value, message", [
    ("dim", 0, r"dim must be int in \[1, 4096\], got 0"),
    ("negatives", 65, "negatives must be int in"),
    ("window", -1, "window must be int"),
    ("alpha", float("nan"), "alpha must be"),
    ("sample", 2.0, "sample must be"),
    ("learning_rate", 0.0, r"learning_rate must be float in \(0"),
    ("min_learning_rate", 1.0, "min_learning_rate must be in"),
    ("repeats", 0, "repeats must be"),
    ("init", "gauss", "init must be 'uniform' or 'word2vec'"),
    ("scoring", "l2", "scoring must be 'cosine' or 'dot'"),
    ("seed", -1, "seed must be"),
    ("dim", 2.5, "dim must be int"),
    ("exact_sigmoid", "yes", "exact_sigmoid must be a bool"),
])
def test_invalid_hyperparameters_name_the_parameter(name, value, message):
    with pytest.raises(ValueError, match=message):
        Interact2Vec(**{name: value})


def test_window_larger_than_history_is_refused():
    with pytest.raises(ValueError, match="window must be <= history_size=4"):
        Interact2Vec(window=5, history_size=4)


def test_mismatched_lengths_are_refused_and_add_nothing():
    model = _small()
    with pytest.raises(ValueError, match="same length"):
        model.learn_many([1, 2], [1])
    with pytest.raises(ValueError, match="timestamps must have the same length"):
        model.learn_many([1, 2], [1, 2], timestamps=[0.0])
    assert model.user_ids == [] and model.item_ids == []

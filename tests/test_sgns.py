"""The Cython SGNS kernel against a NumPy reference of the same update."""

import numpy as np
import pytest

from i2v_stream import _sgns


def reference_pair_update(target, items, positive, negatives, lr, l2=0.0):
    """Word2vec's SGNS step in NumPy: context rows move as visited, target last."""
    target = target.astype(np.float64)
    items = items.astype(np.float64)
    work = np.zeros_like(target)
    loss = 0.0
    for row, label in [(positive, 1.0)] + [(n, 0.0) for n in negatives]:
        score = target @ items[row]
        sig = 1.0 / (1.0 + np.exp(-score))
        loss -= np.log(sig) if label else np.log(1.0 - sig)
        gradient = (label - sig) * lr
        work += gradient * items[row]
        items[row] *= 1.0 - lr * l2
        items[row] += gradient * target
    target *= 1.0 - lr * l2
    target += work
    return target, items, loss


@pytest.mark.parametrize("use_blas", [True, False])
@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_pair_update_matches_numpy_reference(l2, use_blas):
    rng = np.random.default_rng(3)
    dim = 16
    target = rng.uniform(-0.5, 0.5, dim).astype(np.float32)
    items = rng.uniform(-0.5, 0.5, (10, dim)).astype(np.float32)
    negatives = np.array([4, 7, 4, 2], dtype=np.int32)  # a repeated negative too
    want_target, want_items, want_loss = reference_pair_update(
        target, items, 3, negatives.tolist(), 0.05, l2)

    loss = _sgns.pair_update(target, items, 3, negatives, 0.05, l2=l2, exact_sigmoid=True,
                             use_blas=use_blas)

    np.testing.assert_allclose(target, want_target, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(items, want_items, rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(want_loss, rel=1e-5)


def test_table_sigmoid_is_close_to_exact():
    rng = np.random.default_rng(4)
    dim = 8
    target = rng.uniform(-1, 1, dim).astype(np.float32)
    items = rng.uniform(-1, 1, (6, dim)).astype(np.float32)
    negatives = np.array([1, 2, 5], dtype=np.int32)
    exact_t, exact_i = target.copy(), items.copy()
    _sgns.pair_update(exact_t, exact_i, 0, negatives, 0.1, exact_sigmoid=True)
    _sgns.pair_update(target, items, 0, negatives, 0.1, exact_sigmoid=False)
    np.testing.assert_allclose(target, exact_t, atol=2e-3)
    np.testing.assert_allclose(items, exact_i, atol=2e-3)


def test_repeated_updates_decrease_the_loss_on_a_fixed_batch():
    rng = np.random.default_rng(5)
    dim = 32
    target = rng.uniform(-0.05, 0.05, dim).astype(np.float32)
    items = rng.uniform(-0.05, 0.05, (20, dim)).astype(np.float32)
    negatives = np.array([3, 8, 11, 15, 19], dtype=np.int32)
    losses = [_sgns.pair_update(target, items, 0, negatives, 0.1) for _ in range(50)]
    assert losses[-1] < 0.5 * losses[0]
    assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:]))


def test_alias_table_draws_follow_the_weights():
    weights = np.array([1.0, 0.0, 3.0, 6.0])
    prob, alias = _sgns.build_alias_table(weights)
    draws = _sgns.draw_noise_rows(prob, alias, 200_000, seed=9)
    freq = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(freq, weights / weights.sum(), atol=0.005)
    assert freq[1] == 0.0


@pytest.mark.parametrize("weights", [[], [0.0, 0.0], [1.0, np.nan], [-1.0, 2.0]])
def test_alias_table_rejects_bad_weights(weights):
    if len(weights) == 0:
        prob, alias = _sgns.build_alias_table(np.array(weights))
        assert len(prob) == len(alias) == 0
        return
    with pytest.raises(ValueError, match="weights"):
        _sgns.build_alias_table(np.array(weights))


def _batch_arrays(n_users=4, n_items=6, dim=8, history=4):
    rng = np.random.default_rng(0)
    return dict(
        user_vectors=rng.uniform(-0.1, 0.1, (n_users, dim)).astype(np.float32),
        item_vectors=rng.uniform(-0.1, 0.1, (n_items, dim)).astype(np.float32),
        item_input_vectors=rng.uniform(-0.1, 0.1, (n_items, dim)).astype(np.float32),
        user_cursor=np.zeros(n_users, np.int64),
        item_counts=np.zeros(n_items, np.int64),
        recent_items=np.full((n_users, history), -1, np.int32),
        user_dirty=np.zeros(n_users, np.uint8),
        item_dirty=np.zeros(n_items, np.uint8),
    )


def _rows(rows):
    return rows if isinstance(rows, np.ndarray) else np.asarray(rows, np.int32)


def _train(arrays, users, items, **kwargs):
    prob, alias = _sgns.build_alias_table(np.ones(arrays["item_vectors"].shape[0]))
    options = dict(negatives=3, window=0, sample=0.0, learning_rate=0.05, seed=1)
    options.update(kwargs)
    return _sgns.train_events(
        arrays["user_vectors"], arrays["item_vectors"], arrays["item_input_vectors"],
        _rows(users), _rows(items),
        arrays["user_cursor"], arrays["item_counts"], arrays["recent_items"],
        arrays["user_dirty"], arrays["item_dirty"], prob, alias, **options)


def test_train_events_keeps_counts_history_and_dirty_rows():
    arrays = _batch_arrays()
    loss, pairs, trained, total = _train(arrays, [0, 0, 2, 0, 0, 0], [1, 2, 3, 4, 5, 1],
                                         window=2)
    assert trained == 6 and total == 6
    # user 0: 5 events, one user->item pair each and min(k, 2) item->item pairs
    assert pairs == 6 + (0 + 1 + 2 + 2 + 2)
    assert arrays["item_counts"].tolist() == [0, 2, 1, 1, 1, 1]
    assert arrays["user_cursor"].tolist() == [5, 0, 1, 0]
    # ring of 4: the 5th event of user 0 overwrote slot 0
    assert arrays["recent_items"][0].tolist() == [1, 2, 4, 5]
    assert arrays["recent_items"][2].tolist() == [3, -1, -1, -1]
    assert arrays["user_dirty"].tolist() == [1, 0, 1, 0]
    assert np.isfinite(loss) and loss > 0


def test_blas_and_loop_arithmetic_agree_to_rounding():
    users, items = [0, 1, 2, 3, 0, 1], [0, 1, 2, 3, 4, 5]
    with_blas, with_loops = _batch_arrays(), _batch_arrays()
    loss_blas = _train(with_blas, users, items, window=2, use_blas=True)[0]
    loss_loops = _train(with_loops, users, items, window=2, use_blas=False)[0]
    assert loss_blas == pytest.approx(loss_loops, rel=1e-5)
    for name in ("user_vectors", "item_vectors", "item_input_vectors"):
        np.testing.assert_allclose(with_blas[name], with_loops[name], atol=1e-6)


def test_train_events_does_not_depend_on_batch_boundaries():
    users = [0, 1, 2, 3, 0, 1, 2, 3, 0, 2]
    items = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    whole = _batch_arrays()
    _train(whole, users, items, window=2, sample=0.01)
    split = _batch_arrays()
    _, _, _, total = _train(split, users[:3], items[:3], window=2, sample=0.01)
    _train(split, users[3:], items[3:], window=2, sample=0.01, total_count=total,
           first_sequence=3)
    for name in whole:
        np.testing.assert_array_equal(whole[name], split[name], err_msg=name)


def test_fixed_counts_keep_the_same_events_as_counts_read_per_event():
    # With fixed counts a batch longer than the catalogue reads each item's
    # keep probability from a table computed once; shorter batches compute
    # it per event. Both must keep and train exactly the same events.
    rng = np.random.default_rng(5)
    users = rng.integers(0, 4, 40).astype(np.int32)
    items = rng.choice(6, 40, p=[0.5, 0.2, 0.1, 0.1, 0.05, 0.05]).astype(np.int32)
    counts = np.bincount(items, minlength=6).astype(np.int64)
    options = dict(window=2, sample=0.05, update_counts=False, total_count=40)
    whole = _batch_arrays()
    whole["item_counts"][:] = counts
    _, _, trained_whole, _ = _train(whole, users, items, **options)
    split = _batch_arrays()
    split["item_counts"][:] = counts
    trained_split = 0
    for start in range(0, 40, 5):  # 5 events < 6 items: counts read per event
        trained_split += _train(split, users[start:start + 5], items[start:start + 5],
                                first_sequence=start, **options)[2]
    assert trained_whole == trained_split < 40
    for name in whole:
        np.testing.assert_array_equal(whole[name], split[name], err_msg=name)


def test_advance_history_moves_rings_and_cursors_as_training_does():
    rng = np.random.default_rng(6)
    users = rng.integers(0, 4, 30).astype(np.int32)
    items = rng.integers(0, 6, 30).astype(np.int32)
    trained = _batch_arrays()
    _train(trained, users, items, window=2)
    cursor = np.zeros(4, np.int64)
    rings = np.full((4, 4), -1, np.int32)
    _sgns.advance_history(users, items, cursor, rings)
    np.testing.assert_array_equal(cursor, trained["user_cursor"])
    np.testing.assert_array_equal(rings, trained["recent_items"])
    with pytest.raises(ValueError, match="user_rows must be in"):
        _sgns.advance_history(np.array([7], np.int32), np.array([0], np.int32), cursor, rings)


@pytest.mark.parametrize("name, value, message", [
    ("user_rows", np.array([0, 9], np.int32), "user_rows must be in"),
    ("item_rows", np.array([0, 1], np.int64), "item_rows must have dtype int32"),
    ("user_rows", np.array([0], np.int32), "same length"),
])
def test_train_events_rejects_bad_rows(name, value, message):
    arrays = _batch_arrays()
    users, items = np.array([0, 1], np.int32), np.array([0, 1], np.int32)
    if name == "user_rows":
        users = value
    else:
        items = value
    with pytest.raises(ValueError, match=message):
        _train(arrays, users, items)


def test_train_events_rejects_a_non_contiguous_table():
    arrays = _batch_arrays()
    arrays["user_vectors"] = np.asfortranarray(arrays["user_vectors"])
    with pytest.raises(ValueError, match="user_vectors must be C-contiguous"):
        _train(arrays, [0], [0])


def test_init_rows_is_per_row_deterministic():
    a = np.zeros((10, 5), np.float32)
    b = np.zeros((10, 5), np.float32)
    _sgns.init_rows(a, 0, 10, 42, -0.5, 0.5)
    _sgns.init_rows(b, 0, 4, 42, -0.5, 0.5)
    _sgns.init_rows(b, 4, 10, 42, -0.5, 0.5)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= -0.5 and a.max() < 0.5 and len(np.unique(a)) == a.size

"""Exact top-N with the int8 first pass, against brute force in NumPy."""

import numpy as np
import pytest

from i2v_stream import _topn


def _brute_top(items, query, prior, k):
    scores = items @ query + (0 if prior is None else prior)
    return set(np.argsort(-scores, kind="stable")[:k].tolist())


@pytest.mark.parametrize("dim", [3, 64, 100])
@pytest.mark.parametrize("with_prior", [False, True])
def test_candidates_always_contain_the_exact_top_k(dim, with_prior):
    rng = np.random.default_rng(dim)
    items = rng.normal(size=(5000, dim)).astype(np.float32)
    items[::7] *= 0.01  # rows of very different scales
    prior = rng.normal(size=5000).astype(np.float32) if with_prior else None
    codes, scales, l1 = _topn.quantize_rows(items)
    for _ in range(30):
        query = rng.normal(size=dim).astype(np.float32)
        for k in (1, 10, 50):
            found = _topn.candidates(codes, scales, l1, query, prior, k)
            assert _brute_top(items, query, prior, k) <= set(found.tolist())
            assert len(found) < len(items)


def test_excluded_rows_are_never_candidates_and_free_their_places():
    rng = np.random.default_rng(11)
    items = rng.normal(size=(20_000, 40)).astype(np.float32)
    prior = rng.normal(size=20_000).astype(np.float32)
    codes, scales, l1 = _topn.quantize_rows(items)
    for _ in range(20):
        query = rng.normal(size=40).astype(np.float32)
        scores = items @ query + prior
        # the best rows excluded, plus some of every chunk of 1,024 rows
        exclude = np.concatenate([np.argsort(-scores)[:15],
                                  rng.choice(20_000, 300, replace=False)])
        found = _topn.candidates(codes, scales, l1, query, prior, 10, exclude)
        assert not set(found.tolist()) & set(exclude.tolist())
        allowed = np.setdiff1d(np.arange(20_000), exclude)
        best = allowed[np.argsort(-scores[allowed], kind="stable")[:10]]
        assert set(best.tolist()) <= set(found.tolist())
        assert len(found) < 1000
    # k past the rows left: every row not excluded
    small = _topn.quantize_rows(items[:5])
    found = _topn.candidates(*small, query[:40], None, 10, np.array([1, 3]))
    assert found.tolist() == [0, 2, 4]


def test_quantisation_error_is_within_half_a_step():
    rng = np.random.default_rng(1)
    items = rng.normal(size=(100, 30)).astype(np.float32)
    codes, scales, _ = _topn.quantize_rows(items)
    decoded = (codes[:, :30].astype(np.float32) - 128) * scales[:, None]
    assert np.all(np.abs(decoded - items) <= scales[:, None] / 2 + 1e-7)


def test_ties_are_kept():
    items = np.ones((1000, 8), dtype=np.float32)
    codes, scales, l1 = _topn.quantize_rows(items)
    found = _topn.candidates(codes, scales, l1, np.ones(8, np.float32), None, 5)
    assert len(found) == 1000  # every row ties for the top


def test_set_rows_matches_a_fresh_quantisation():
    rng = np.random.default_rng(2)
    items = rng.normal(size=(50, 10)).astype(np.float32)
    codes, scales, l1 = _topn.quantize_rows(items)
    items[[3, 7]] = rng.normal(size=(2, 10)).astype(np.float32) * 5
    _topn.set_rows(codes, scales, l1, np.array([3, 7]), items[[3, 7]])
    fresh = _topn.quantize_rows(items)
    for got, want in zip((codes, scales, l1), fresh):
        np.testing.assert_array_equal(got, want)


def test_bad_shapes_name_the_argument():
    codes, scales, l1 = _topn.quantize_rows(np.zeros((4, 8), np.float32))
    with pytest.raises(ValueError, match="query must have shape"):
        _topn.candidates(codes, scales, l1, np.zeros(100, np.float32), None, 2)
    with pytest.raises(ValueError, match="scales and norms_l1"):
        _topn.candidates(codes, scales[:2], l1, np.zeros(8, np.float32), None, 2)

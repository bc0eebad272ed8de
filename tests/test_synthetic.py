"""Tests of i2v_stream.synthetic: the planted-structure generator."""

from __future__ import annotations

import numpy as np
import pytest

from i2v_stream.synthetic import group_purity, make_interactions


def test_same_seed_same_data_other_seed_other_data():
    a = make_interactions(n_users=50, n_items=40, seed=3)
    b = make_interactions(n_users=50, n_items=40, seed=3)
    c = make_interactions(n_users=50, n_items=40, seed=4)
    assert a.interactions == b.interactions
    assert a.interactions != c.interactions


def test_shape_time_order_and_ground_truth():
    data = make_interactions(n_users=100, n_items=60, n_groups=4, events_per_user=20,
                             min_events=5, seed=1)
    events = data.interactions
    assert np.all(np.diff(events.timestamps) >= 0)
    assert set(np.unique(events.users)) <= set(data.user_ids.tolist())
    assert len(data.user_groups) == 100 and len(data.item_groups) == 60
    assert np.bincount(data.item_groups).tolist() == [15, 15, 15, 15]
    _, counts = np.unique(events.users, return_counts=True)
    assert counts.min() >= 5
    # No repeats by default: each (user, item) pair at most once.
    pairs = events.users * 1000 + events.items
    assert len(np.unique(pairs)) == len(pairs)


def test_events_mostly_stay_in_the_user_group():
    data = make_interactions(n_users=200, n_items=300, n_groups=5, noise=0.1, seed=2)
    events = data.interactions
    same = data.user_groups[events.users] == data.item_groups[events.items]
    assert 0.85 < same.mean() < 0.95


def test_zipf_popularity_is_skewed_within_groups():
    data = make_interactions(n_users=400, n_items=50, n_groups=1, noise=0.0,
                             events_per_user=10, zipf_exponent=1.2, seed=5)
    counts = np.sort(np.bincount(data.interactions.items, minlength=50))[::-1]
    assert counts[0] > 5 * counts[-1]
    flat = make_interactions(n_users=400, n_items=50, n_groups=1, noise=0.0,
                             events_per_user=10, zipf_exponent=0.0, seed=5)
    flat_counts = np.bincount(flat.interactions.items, minlength=50)
    assert flat_counts.max() < 2 * flat_counts.min()


def test_string_ids_and_group_lookup():
    data = make_interactions(n_users=10, n_items=12, n_groups=3, string_ids=True, seed=0)
    events = data.interactions
    assert events.users.dtype == object and events.users[0].startswith("u")
    assert data.user_group["u0"] == data.user_groups[0]
    assert data.item_group["i11"] == data.item_groups[11]


def test_repeats_allowed_when_asked():
    data = make_interactions(n_users=5, n_items=4, n_groups=1, events_per_user=30,
                             repeats=True, seed=0)
    assert len(data.interactions) >= 5 * 20


def test_group_purity():
    user_group = {"a": 0, "b": 1}
    item_group = {1: 0, 2: 0, 3: 1}
    assert group_purity({"a": [1, 2], "b": [(3, 0.9), (1, 0.1)]}, user_group,
                        item_group) == pytest.approx(0.75)
    assert np.isnan(group_purity({}, user_group, item_group))


@pytest.mark.parametrize("kwargs, message", [
    ({"n_groups": 0}, "n_groups must be an integer >= 1, got 0"),
    ({"n_groups": 50, "n_items": 10}, "n_groups must be at most n_items=10"),
    ({"noise": 1.5}, r"noise must be in \[0, 1\], got 1.5"),
    ({"zipf_exponent": -1}, "zipf_exponent must be >= 0"),
    ({"events_per_user": 0}, "events_per_user must be > 0"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_interactions(**kwargs)

"""Tests of i2v_stream.reader: a secondary instance following a live writer."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from i2v_stream.model import Interact2Vec, UnknownIdError
from i2v_stream.reader import StoreReader
from i2v_stream.store import Store


def make_events(n, n_users=40, n_items=60, seed=0):
    rng = np.random.default_rng(seed)
    users = [f"u{x}" for x in rng.integers(0, n_users, n)]
    items = [int(x) for x in rng.integers(0, n_items, n)]
    return users, items


def assert_same_answer(got, expected):
    """Same ids in the same order; scores equal to float32 rounding."""
    assert [i for i, _ in got] == [i for i, _ in expected]
    np.testing.assert_allclose([x for _, x in got], [x for _, x in expected],
                               rtol=1e-5, atol=1e-6)


def new_model(**overrides):
    params = dict(dim=16, negatives=3, history_size=8, seed=3, noise_refresh=50)
    params.update(overrides)
    return Interact2Vec(**params)


@pytest.fixture
def live(tmp_path):
    """A writer with two commits and a reader that has not caught up on its own."""
    model = new_model()
    store = Store.open(tmp_path / "s", params=model.get_params())
    for seed in range(2):
        model.learn_many(*make_events(300, seed=seed))
        store.commit(model, {("t", 0): 300 * (seed + 1)})
    reader = StoreReader(tmp_path / "s", catch_up_interval=None)
    yield model, store, reader
    reader.close()
    store.close()


@pytest.mark.parametrize("scoring,prior", [("dot", 1.0), ("cosine", 0.0), ("cosine", 0.5)])
def test_answers_match_the_model(tmp_path, scoring, prior):
    model = new_model(scoring=scoring, popularity_prior=prior)
    with Store.open(tmp_path / "s") as store:
        for seed in range(2):
            model.learn_many(*make_events(300, seed=seed))
            store.commit(model, {})
    reader = StoreReader(tmp_path / "s", catch_up_interval=None)
    for user in ["u1", "u7", "u30"]:
        assert_same_answer(reader.recommend(user, n=10), model.recommend(user, n=10))
        assert_same_answer(reader.recommend(user, n=5, exclude_seen=False),
                           model.recommend(user, n=5, exclude_seen=False))
        np.testing.assert_array_equal(reader.user_vector(user),
                                      model.user_vectors[model.user_row(user)])
    for item in [0, 5, 17]:
        assert_same_answer(reader.similar_items(item, n=7), model.similar_items(item, n=7))
        np.testing.assert_array_equal(reader.item_vector(item),
                                      model.item_vectors[model.item_row(item)])
    reader.close()


def test_recommend_many_matches_recommend(live):
    _, _, reader = live
    users = ["u1", "nobody", "u2", "u3"]
    batch = reader.recommend_many(users, n=6)
    assert batch[1] is None
    for user, got in zip(users, batch):
        if got is not None:
            assert_same_answer(got, reader.recommend(user, n=6))


def test_unknown_ids_raise_and_create_nothing(live):
    _, store, reader = live
    before = (store.n_users, store.n_items, store.commit_seq)
    with pytest.raises(UnknownIdError):
        reader.recommend("nobody")
    with pytest.raises(KeyError):
        reader.user_vector("nobody")
    with pytest.raises(UnknownIdError):
        reader.similar_items(10**9)
    with pytest.raises(UnknownIdError):
        reader.item_vector("1")          # ids keep their type: "1" is not 1
    reader.catch_up()
    assert (reader.n_users, reader.n_items) == before[:2]


def test_reader_sees_commits_only_after_catch_up(live):
    model, store, reader = live
    model.learn_many(["brand-new-user"] * 3, [999, 5, 6])
    store.commit(model, {("t", 0): 603})
    with pytest.raises(UnknownIdError):
        reader.recommend("brand-new-user")
    assert reader.catch_up() is True
    assert_same_answer(reader.recommend("brand-new-user"), model.recommend("brand-new-user"))
    assert_same_answer(reader.similar_items(999, n=5), model.similar_items(999, n=5))
    assert reader.catch_up() is False


def test_incremental_refresh_equals_a_fresh_reader(live, tmp_path):
    model, store, reader = live
    for seed in range(5, 12):
        model.learn_many(*make_events(80, n_items=90, seed=seed))
        store.commit(model, {})
        if seed % 2:
            reader.catch_up()
    reader.catch_up()
    with StoreReader(tmp_path / "s", catch_up_interval=None) as fresh:
        np.testing.assert_array_equal(reader._items[:reader.n_items],
                                      fresh._items[:fresh.n_items])
        assert reader._item_ids == fresh._item_ids == model.item_ids
    for user in ["u3", "u4"]:
        assert_same_answer(reader.recommend(user), model.recommend(user))


def test_a_reader_behind_the_change_log_reloads(tmp_path):
    model = new_model()
    with Store.open(tmp_path / "s", changelog_keep=2) as store:
        model.learn_many(*make_events(100))
        store.commit(model, {})
        with StoreReader(tmp_path / "s", catch_up_interval=None) as reader:
            for seed in range(300):
                model.learn_many(*make_events(3, seed=seed + 1))
                store.commit(model, {})
            reader.catch_up()
            assert_same_answer(reader.similar_items(3), model.similar_items(3))


def test_catch_up_on_access_and_in_background(live, tmp_path):
    model, store, _ = live
    with StoreReader(tmp_path / "s", catch_up_interval=0.05) as on_access, \
            StoreReader(tmp_path / "s", catch_up_interval=0.05, background=True) as background:
        model.learn_many(["late-user"], [1])
        store.commit(model, {})
        time.sleep(0.3)
        assert background.staleness_seconds() < 0.3
        assert 0 <= background.last_commit_age_seconds() < 5
        assert_same_answer(background.recommend("late-user"), model.recommend("late-user"))
        assert_same_answer(on_access.recommend("late-user"), model.recommend("late-user"))


def test_reader_never_writes(live, tmp_path):
    model, store, reader = live
    path = tmp_path / "s"
    seq = store._db.latest_sequence_number()
    files = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir()
             if p.name != "rocksdict-config.json"}
    reader.recommend("u1")
    reader.recommend_many(["u1", "u2"])
    reader.similar_items(1)
    with pytest.raises(UnknownIdError):
        reader.recommend("nobody")
    reader.catch_up()
    assert store._db.latest_sequence_number() == seq
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir()
            if p.name != "rocksdict-config.json"} == files
    with pytest.raises(Exception, match="secondary"):
        reader._view._cf["meta"][b"x"] = b"y"


def test_query_command_prints_json(live, tmp_path, capsys):
    from services.cli import main

    model, _, _ = live
    store = str(tmp_path / "s")
    assert main(["query", "recommend", "u1", "--store", store, "--n", "3"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert [x["item"] for x in answer["items"]] == [i for i, _ in model.recommend("u1", n=3)]
    assert main(["query", "similar", "5", "--store", store, "--n", "2"]) == 0   # int id 5
    assert json.loads(capsys.readouterr().out)["item"] == 5
    assert main(["query", "embedding", "u2", "--store", store]) == 0
    assert len(json.loads(capsys.readouterr().out)["vector"]) == 16
    assert main(["query", "recommend", "nobody", "--store", store]) == 1
    assert json.loads(capsys.readouterr().out)["error"] == "unknown user"


@pytest.mark.parametrize("scoring,prior", [("dot", 1.0), ("cosine", 0.0)])
def test_large_catalogues_take_the_quantised_path_with_the_same_answers(tmp_path, scoring,
                                                                         prior, monkeypatch):
    from i2v_stream import reader as reader_module

    # Portable builds switch the int8 pass off; its answers must hold anyway.
    monkeypatch.setattr(reader_module, "QUANTIZED_MIN_ITEMS", 20_000)
    n_items = 20_500
    model = new_model(scoring=scoring, popularity_prior=prior)
    rng = np.random.default_rng(5)
    users = [f"u{x}" for x in rng.integers(0, 50, 2 * n_items)]
    items = list(range(n_items)) + [int(x) for x in rng.zipf(1.3, n_items) % n_items]
    with Store.open(tmp_path / "s") as store:
        model.learn_many(users[:n_items], items[:n_items])
        store.commit(model, {})
        with StoreReader(tmp_path / "s", catch_up_interval=None) as reader:
            # and after an incremental catch-up of changed rows
            model.learn_many(users[n_items:], items[n_items:])
            store.commit(model, {})
            reader.catch_up()
            for user in ["u1", "u7", "u30"]:
                assert_same_answer(reader.recommend(user, n=10), model.recommend(user, n=10))
            for item in [0, 17, n_items - 1]:
                assert_same_answer(reader.similar_items(item, n=10),
                                   model.similar_items(item, n=10))

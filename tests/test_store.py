"""Tests of i2v_stream.store against a real RocksDB in tmp_path."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from i2v_stream.model import Interact2Vec, ModelState
from i2v_stream.store import (
    SCHEMA_VERSION,
    Store,
    StoreLockedError,
    StoreMismatchError,
    StoreNotFoundError,
    StoreSchemaError,
    StoreView,
    decode_id,
    encode_id,
)


def small_model(**overrides):
    """A real Interact2Vec small enough for store tests."""
    params = dict(dim=8, negatives=2, window=0, history_size=4, seed=0, noise_refresh=50)
    params.update(overrides)
    return Interact2Vec(**params)


def events(n, n_users=20, n_items=30, seed=1):
    rng = np.random.default_rng(seed)
    users = [f"u{x}" if x % 2 else int(x) for x in rng.integers(0, n_users, n)]
    items = [int(x) if x % 3 else f"item-{x}" for x in rng.integers(0, n_items, n)]
    return users, items


def assert_states_equal(a, b):
    assert list(a.user_ids) == list(b.user_ids)
    assert list(a.item_ids) == list(b.item_ids)
    for name in ("user_vectors", "item_vectors", "user_counts", "item_counts",
                 "noise_counts", "recent_items"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    if a.item_input_vectors is None:
        assert b.item_input_vectors is None
    else:
        np.testing.assert_array_equal(a.item_input_vectors, b.item_input_vectors)
    assert a.events_seen == b.events_seen


# ---------------------------------------------------------------- tests


def test_ids_keep_their_type():
    for value in ["42", 42, "", "é", -7, 2**70]:
        assert decode_id(encode_id(value)) == value
        assert type(decode_id(encode_id(value))) is type(value)
    assert encode_id(np.int64(5)) == encode_id(5)


@pytest.mark.parametrize("window", [0, 3])
def test_every_field_round_trips_over_several_commits(tmp_path, window):
    model = small_model(window=window)
    with Store.open(tmp_path / "s", params=model.get_params()) as store:
        for chunk in range(4):
            users, items = events(60, seed=chunk)
            model.learn_many(users, items)
            store.commit(model, {("events", 0): 60 * (chunk + 1), ("events", 1): chunk})
    with Store.open(tmp_path / "s") as store:
        state = store.load_state()
        assert store.offsets() == {("events", 0): 240, ("events", 1): 3}
        assert store.events_seen == 240
        meta = store.metadata()
        assert meta["schema_version"] == SCHEMA_VERSION and meta["dim"] == 8
    assert_states_equal(model.state(), state)


def test_noise_counts_of_untouched_items_are_persisted(tmp_path):
    # Rebuilds after events 1, 2 and 4: the rebuild at 4 changes the noise count
    # of item 1 although the batch that crosses it only touches item 3.
    model = small_model(noise_refresh=4)
    with Store.open(tmp_path / "s") as store:
        model.learn_many(["a", "b", "c"], [1, 2, 1])
        store.commit(model, {})
        noise_before = model.state().noise_counts.copy()
        model.learn_many(["a"], [3])
        store.commit(model, {})
        state = model.state()
        assert state.noise_counts[0] != noise_before[0]
        np.testing.assert_array_equal(store.load_state().noise_counts, state.noise_counts)


def test_a_reloaded_model_continues_identically(tmp_path):
    uninterrupted = small_model()
    for seed in range(3):
        uninterrupted.learn_many(*events(50, seed=seed))
    model = small_model()
    with Store.open(tmp_path / "s") as store:
        model.learn_many(*events(50, seed=0))
        store.commit(model, {("t", 0): 50})
    with Store.open(tmp_path / "s") as store:
        resumed = Interact2Vec.from_state(store.load_state())
        for seed in (1, 2):
            resumed.learn_many(*events(50, seed=seed))
            store.commit(resumed, {("t", 0): 50 * (seed + 1)})
    with StoreView.open_read_only(tmp_path / "s") as view:
        assert_states_equal(uninterrupted.state(), view.load_state())


def test_offsets_and_rows_of_a_commit_appear_together(tmp_path):
    """A reader catching up at any moment sees offsets that match the rows (one batch)."""
    model = small_model()
    store = Store.open(tmp_path / "s")
    reader = StoreView.open_secondary(tmp_path / "s")
    try:
        for step in range(1, 30):
            model.learn_many(*events(7, seed=step))
            store.commit(model, {("t", 0): 7 * step})
            reader.catch_up()
            assert reader.offsets()[("t", 0)] == reader.events_seen == 7 * step
            assert int(reader.read_users()["count"].sum()) == 7 * step
            assert int(reader.read_items()["count"].sum()) == 7 * step
    finally:
        reader.close()
        store.close()


def test_a_killed_writer_loses_no_commit(tmp_path):
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(tmp_path.parent)!r})
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        from test_store import small_model, events
        from i2v_stream.store import Store
        store = Store.open({str(tmp_path / 's')!r})
        model = small_model()
        for step in range(1, 6):
            model.learn_many(*events(10, seed=step))
            store.commit(model, {{("t", 0): 10 * step}})
        os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    with Store.open(tmp_path / "s") as store:
        assert store.offsets() == {("t", 0): 50}
        assert store.load_state().events_seen == 50


def test_wrong_dim_is_refused_with_what_to_change(tmp_path):
    model = small_model(dim=8)
    with Store.open(tmp_path / "s", params=model.get_params()) as store:
        model.learn_many(["a"], [1])
        store.commit(model, {})
    with pytest.raises(StoreMismatchError, match="set dim=8"):
        Store.open(tmp_path / "s", params={"dim": 16})
    with Store.open(tmp_path / "s") as store:
        other = small_model(dim=16)
        other.learn_many(["a"], [1])
        with pytest.raises(StoreMismatchError, match="dim=8"):
            store.commit(other, {})


def test_a_fresh_model_cannot_overwrite_a_store(tmp_path):
    model = small_model()
    with Store.open(tmp_path / "s") as store:
        model.learn_many(*events(40))
        store.commit(model, {})
        with pytest.raises(StoreMismatchError, match="load_model"):
            fresh = small_model()
            fresh.learn_many(["a"], [1])
            store.commit(fresh, {})


def test_unknown_schema_version_is_refused(tmp_path):
    model = small_model()
    with Store.open(tmp_path / "s") as store:
        model.learn_many(["a"], [1])
        store.commit(model, {})
        store._cf["meta"][b"schema_version"] = (99).to_bytes(8, "little")
    with pytest.raises(StoreSchemaError, match="schema version 99"):
        Store.open(tmp_path / "s")
    with pytest.raises(StoreSchemaError):
        StoreView.open_secondary(tmp_path / "s")


def test_a_foreign_rocksdb_is_refused(tmp_path):
    from rocksdict import Options, Rdict

    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    Rdict(str(tmp_path / "other"), options=opts).close()
    with pytest.raises(StoreSchemaError, match="not an i2v-stream store"):
        Store.open(tmp_path / "other")


def test_second_writer_is_refused_in_process_and_from_another_process(tmp_path):
    path = tmp_path / "s"
    with Store.open(path):
        with pytest.raises(StoreLockedError, match="already open for writing"):
            Store.open(path)
        code = textwrap.dedent(f"""
            from i2v_stream.store import Store, StoreLockedError
            try:
                Store.open({str(path)!r})
            except StoreLockedError as exc:
                print("LOCKED", exc)
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60)
        assert "LOCKED" in proc.stdout, proc.stderr
        assert "stop the daemon" in proc.stdout
    Store.open(path).close()   # released on close


def test_missing_store_for_readers(tmp_path):
    with pytest.raises(StoreNotFoundError):
        StoreView.open_secondary(tmp_path / "nothing")


def test_commit_reports_size_and_latency(tmp_path):
    model = small_model()
    with Store.open(tmp_path / "s") as store:
        model.learn_many(*events(30))
        result = store.commit(model, {("t", 0): 30})
        assert result.commit_seq == 1
        assert result.user_rows == len(model.user_ids) == result.new_users
        assert result.bytes_written > result.user_rows * 8 * 4
        assert result.duration_seconds >= result.write_seconds > 0
        # nothing changed: only metadata and offsets
        again = store.commit(model, {("t", 0): 30})
        assert again.user_rows == again.item_rows == 0 and again.commit_seq == 2


def test_a_large_state_round_trips_in_one_commit(tmp_path):
    """200k user rows and 50k item rows written by one full commit read back intact."""
    n, dim = 200_000, 32
    rng = np.random.default_rng(0)
    model = Interact2Vec.from_state(ModelState(
        params=small_model(dim=dim).get_params(),
        user_ids=list(range(n)), item_ids=[f"i{x}" for x in range(n // 4)],
        user_vectors=rng.normal(size=(n, dim)).astype("f4"),
        item_vectors=rng.normal(size=(n // 4, dim)).astype("f4"), item_input_vectors=None,
        user_counts=np.ones(n, np.int64), item_counts=np.ones(n // 4, np.int64),
        noise_counts=np.ones(n // 4, np.int64), recent_items=np.full((n, 4), -1, np.int32),
        events_seen=n,
    ))
    with Store.open(tmp_path / "s") as store:
        store.commit(model, {}, full=True)
        state = store.load_state()
    assert_states_equal(model.state(), state)


@pytest.mark.parametrize("params", [
    dict(window=0, history_size=8),
    dict(window=2, history_size=4),
    dict(window=0, history_size=0),
])
def test_real_model_resumes_bit_for_bit_from_the_store(tmp_path, params):
    def chunk(seed):
        rng = np.random.default_rng(seed)
        return ([f"u{x}" for x in rng.integers(0, 30, 120)],
                [int(x) for x in rng.integers(0, 40, 120)])

    config = dict(dim=12, negatives=3, seed=5, noise_refresh=50, **params)
    uninterrupted = Interact2Vec(**config)
    for seed in range(4):
        uninterrupted.learn_many(*chunk(seed))

    model = Interact2Vec(**config)
    with Store.open(tmp_path / "s", params=model.get_params()) as store:
        for seed in range(2):
            model.learn_many(*chunk(seed))
            store.commit(model, {("t", 0): 120 * (seed + 1)})
    with Store.open(tmp_path / "s", params=config) as store:   # a restart
        resumed = store.load_model()
        assert resumed.get_params() == model.get_params()
        assert store.offsets() == {("t", 0): 240}
        for seed in range(2, 4):
            resumed.learn_many(*chunk(seed))
            store.commit(resumed, {("t", 0): 120 * (seed + 1)})
    assert_states_equal(uninterrupted.state(), resumed.state())
    with StoreView.open_read_only(tmp_path / "s") as view:
        assert_states_equal(uninterrupted.state(), view.load_state())

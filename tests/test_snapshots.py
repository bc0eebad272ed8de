"""Tests of i2v_stream.snapshots: checkpoints that open on their own, with their offsets."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from i2v_stream.model import Interact2Vec
from i2v_stream.snapshots import (
    SnapshotError,
    SnapshotManager,
    SnapshotScheduler,
    default_snapshot_dir,
    snapshot_name,
)
from i2v_stream.store import Store, StoreView


def make_events(n, seed):
    rng = np.random.default_rng(seed)
    return [f"u{x}" for x in rng.integers(0, 30, n)], [int(x) for x in rng.integers(0, 50, n)]


def new_model():
    return Interact2Vec(dim=8, negatives=2, history_size=4, seed=1, noise_refresh=40)


def train(store, model, steps, start=0, per_step=50):
    for step in range(start, start + steps):
        model.learn_many(*make_events(per_step, seed=step))
        store.commit(model, {("t", 0): per_step * (step + 1)})


def assert_same_state(a, b):
    assert a.user_ids == b.user_ids and a.item_ids == b.item_ids
    np.testing.assert_array_equal(a.user_vectors, b.user_vectors)
    np.testing.assert_array_equal(a.item_vectors, b.item_vectors)
    np.testing.assert_array_equal(a.noise_counts, b.noise_counts)
    np.testing.assert_array_equal(a.recent_items, b.recent_items)
    assert a.events_seen == b.events_seen


def test_names_sort_by_time_and_default_dir(tmp_path):
    assert snapshot_name(0, 12) == "19700101T000000.000000Z-events12"
    assert snapshot_name(1.5, 1) < snapshot_name(10.0, 0)
    assert default_snapshot_dir(tmp_path / "store") == (tmp_path / "snapshots").resolve()


def test_create_list_restore_and_replay_reproduces_the_live_state(tmp_path):
    model = new_model()
    manager = SnapshotManager(tmp_path / "store")
    with Store.open(tmp_path / "store", params=model.get_params()) as store:
        train(store, model, 3)
        snap = manager.create(store, now=1000.0)
        train(store, model, 2, start=3)
        live = model.state()

    [listed] = manager.list()
    assert listed.name == snap.name and listed.events_seen == 150
    assert listed.offset_map() == {("t", 0): 150}
    assert listed.size_bytes > 0 and listed.method == "checkpoint"
    assert listed.age_seconds(now=1010.0) == pytest.approx(10.0)

    # the snapshot opens on its own, with its offsets
    with StoreView.open_read_only(snap.path) as view:
        assert view.offsets() == {("t", 0): 150} and view.events_seen == 150

    restored = manager.restore(snap.name, tmp_path / "restored")
    with Store.open(restored) as store:
        resumed = store.load_model()
        assert store.offsets()[("t", 0)] == 150
        train(store, resumed, 2, start=3)   # replay from the snapshot's offsets
    assert_same_state(live, resumed.state())


def test_restore_refuses_a_live_store_unless_asked(tmp_path):
    model = new_model()
    manager = SnapshotManager(tmp_path / "store")
    with Store.open(tmp_path / "store") as store:
        train(store, model, 1)
        snap = manager.create(store)
        train(store, model, 1, start=1)
        with pytest.raises(SnapshotError, match="running writer"):
            manager.restore(snap.name, overwrite=True)
    with pytest.raises(SnapshotError, match="overwrite=True"):
        manager.restore(snap.name)
    manager.restore("latest", overwrite=True)
    with StoreView.open_read_only(tmp_path / "store") as view:
        assert view.events_seen == 50
    with pytest.raises(SnapshotError, match="snapshot list"):
        manager.restore("no-such-snapshot", tmp_path / "x")


def test_retention_keeps_the_newest(tmp_path):
    model = new_model()
    manager = SnapshotManager(tmp_path / "store", snapshot_dir=tmp_path / "snaps", keep=2)
    with Store.open(tmp_path / "store") as store:
        for k in range(4):
            train(store, model, 1, start=k)
            manager.create(store, now=100.0 + k)
    names = [s.name for s in manager.list()]
    assert len(names) == 2 and names[-1].endswith("events200")
    assert [s.events_seen for s in manager.list()] == [150, 200]


def test_scheduler_by_events_and_by_time(tmp_path):
    model = new_model()
    manager = SnapshotManager(tmp_path / "store")
    with Store.open(tmp_path / "store") as store:
        scheduler = SnapshotScheduler(store, manager, every_seconds=60, every_events=120)
        taken = []
        for k in range(6):
            train(store, model, 1, start=k)
            snap = scheduler.maybe_snapshot(store.events_seen, now=1000.0 + k)
            taken.append(snap is not None)
        # first commit: no snapshot yet -> due by time; then every 120 events
        assert taken == [True, False, False, True, False, False]
        assert scheduler.maybe_snapshot(store.events_seen, now=5000.0) is not None
        assert scheduler.maybe_snapshot(store.events_seen, now=9000.0) is None  # nothing new
        assert scheduler.age_seconds(now=5001.0) == pytest.approx(1.0)


def test_cli_create_while_a_daemon_holds_the_store(tmp_path):
    """Another process snapshots a store that this process holds open for writing."""
    model = new_model()
    with Store.open(tmp_path / "store") as store:
        train(store, model, 2)
        code = textwrap.dedent(f"""
            from i2v_stream.snapshots import SnapshotManager
            snap = SnapshotManager({str(tmp_path / 'store')!r}).create()
            print(snap.method, snap.events_seen)
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60)
        assert proc.stdout.split() == ["copy", "100"], proc.stderr
        live = model.state()
    [snap] = SnapshotManager(tmp_path / "store").list()
    with StoreView.open_read_only(snap.path) as view:
        assert view.offsets() == {("t", 0): 100}
        assert_same_state(live, view.load_state())


def test_cli_create_when_no_daemon_runs_uses_a_checkpoint(tmp_path):
    model = new_model()
    with Store.open(tmp_path / "store") as store:
        train(store, model, 1)
    snap = SnapshotManager(tmp_path / "store").create()
    assert snap.method == "checkpoint" and snap.events_seen == 50


def test_snapshot_command(tmp_path, capsys):
    import json

    from services.cli import main

    model = new_model()
    with Store.open(tmp_path / "store") as store:
        train(store, model, 2)
    store_arg = ["--store", str(tmp_path / "store")]
    assert main(["snapshot", "create", *store_arg, "--keep", "1"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["events_seen"] == 100 and created["offsets"] == {"t:0": 100}
    assert main(["snapshot", "list", *store_arg]) == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed["name"] == created["name"] and "age_seconds" in listed
    assert main(["snapshot", "restore", "latest", *store_arg]) == 2     # live store, no --force
    assert "--force" in capsys.readouterr().err
    assert main(["snapshot", "restore", created["name"], *store_arg,
                 "--target", str(tmp_path / "copy")]) == 0
    with StoreView.open_read_only(tmp_path / "copy") as view:
        assert view.offsets() == {("t", 0): 100}

"""Tests of i2v_stream.export and the export command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from i2v_stream.export import ExportError, export_store
from i2v_stream.model import Interact2Vec
from i2v_stream.store import Store


def trained(window=0):
    model = Interact2Vec(dim=8, negatives=2, window=window, history_size=4, seed=2)
    rng = np.random.default_rng(0)
    users = [f"user {x}" if x % 2 else int(x) for x in rng.integers(0, 25, 300)]
    items = [int(x) for x in rng.integers(0, 40, 300)]
    model.learn_many(users, items)
    return model


@pytest.mark.parametrize("window", [0, 2])
def test_export_files_match_the_model_while_the_writer_runs(tmp_path, window):
    model = trained(window)
    with Store.open(tmp_path / "s") as store:      # the writer stays open during the export
        store.commit(model, {("t", 3): 300})
        summary = export_store(tmp_path / "s", tmp_path / "out")
    out = tmp_path / "out"
    np.testing.assert_array_equal(np.load(out / "users.npy"), model.user_vectors)
    np.testing.assert_array_equal(np.load(out / "items.npy"), model.item_vectors)
    np.testing.assert_array_equal(np.load(out / "user_counts.npy"), model.user_counts)
    np.testing.assert_array_equal(np.load(out / "item_counts.npy"), model.item_counts)
    assert np.load(out / "users.npy").dtype == np.float32
    assert (out / "users.txt").read_text().splitlines() == [str(u) for u in model.user_ids]
    assert (out / "items.txt").read_text().splitlines() == [str(i) for i in model.item_ids]
    assert (out / "item_inputs.npy").exists() == bool(window)
    meta = json.loads((out / "export.json").read_text())
    assert meta == summary and meta["offsets"] == {"t:3": 300}
    assert meta["events_seen"] == 300 and meta["n_users"] == model.n_users
    assert not list(out.glob("*.tmp"))


def test_export_of_an_empty_store_is_an_error(tmp_path):
    Store.open(tmp_path / "s").close()
    with pytest.raises(ExportError, match="no model"):
        export_store(tmp_path / "s", tmp_path / "out")


def test_export_command(tmp_path, capsys):
    from services.cli import main

    model = trained()
    with Store.open(tmp_path / "s") as store:
        store.commit(model, {})
    assert main(["export", "--store", str(tmp_path / "s"), "--out", str(tmp_path / "o")]) == 0
    assert json.loads(capsys.readouterr().out)["n_items"] == model.n_items
    assert (tmp_path / "o" / "items.npy").exists()

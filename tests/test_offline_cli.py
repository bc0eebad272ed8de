"""Tests of services.offline: ``i2v-stream train`` and ``i2v-stream evaluate``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services import offline
from services.cli import main
from i2v_stream.synthetic import make_interactions

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def events_csv(tmp_path_factory) -> Path:
    data = make_interactions(n_users=120, n_items=80, n_groups=4, events_per_user=20,
                             seed=0).interactions
    path = tmp_path_factory.mktemp("cli") / "events.csv"
    path.write_text("user,item,timestamp\n" + "".join(
        f"{u},{i},{t:.3f}\n" for u, i, t in zip(data.users, data.items, data.timestamps)),
        encoding="utf-8")
    return path


def run_cli(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as exc:   # argparse errors
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def test_train_saves_a_loadable_model(events_csv, tmp_path, capsys):
    model_module = pytest.importorskip("i2v_stream.model")
    out_dir = tmp_path / "model"
    status, out, _ = run_cli(["train", "--input", str(events_csv), "--out", str(out_dir),
                              "--dim", "8", "--epochs", "2", "--seed", "4",
                              "--param", "l2=0.001"], capsys)
    assert status == 0
    assert "120 users" in out
    assert (out_dir / "model.json").exists()
    model = model_module.Interact2Vec.load(out_dir)
    params = model.get_params()
    assert (params["dim"], params["epochs"], params["seed"], params["l2"]) == (8, 2, 4, 0.001)
    assert len(model.user_ids) == 120


def test_evaluate_json_has_both_protocols(events_csv, tmp_path, capsys):
    pytest.importorskip("i2v_stream.model")
    output = tmp_path / "result.json"
    status, out, _ = run_cli(["evaluate", "--input", str(events_csv), "--dim", "8",
                              "--epochs", "3", "--json", "--chunk-size", "500",
                              "--output", str(output)], capsys)
    assert status == 0
    report = json.loads(out)
    assert json.loads(output.read_text()) == report
    assert report["model"] == "interact2vec" and report["params"]["dim"] == 8
    assert {"recall", "ndcg", "precision", "hit_rate", "users", "holdout"} <= set(
        report["split"])
    assert {"hit_rate", "mrr", "cold_user_events", "cold_item_events", "curve"} <= set(
        report["prequential"])
    assert report["prequential"]["chunk_size"] == 500


def test_evaluate_baseline_with_plot(events_csv, tmp_path, capsys):
    plot = tmp_path / "curve.png"
    status, out, _ = run_cli(["evaluate", "--input", str(events_csv), "--baseline", "popular",
                              "--protocol", "prequential", "--plot", str(plot), "--n", "5"],
                             capsys)
    assert status == 0
    assert "HR@5" in out and "popular" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_users_policy_applies_to_model_and_baseline(events_csv, capsys):
    pytest.importorskip("i2v_stream.model")
    cold = {}
    for extra in (["--baseline", "popular"], ["--dim", "8"]):
        for policy in ("popularity", "miss"):
            status, out, _ = run_cli(["evaluate", "--input", str(events_csv), *extra,
                                      "--protocol", "prequential", "--json",
                                      "--unknown-users", policy], capsys)
            assert status == 0
            report = json.loads(out)
            assert report["unknown_users"] == policy
            cold[extra[0], policy] = report["prequential"]["cold_user_events"]
            new = report["prequential"]["new_user_events"]
    assert cold["--baseline", "popularity"] == cold["--dim", "popularity"] == 0
    assert cold["--baseline", "miss"] == cold["--dim", "miss"] == new > 0


def test_evaluate_split_only_text_summary(events_csv, capsys):
    status, out, _ = run_cli(["evaluate", "--input", str(events_csv), "--baseline", "popular",
                              "--protocol", "split", "--holdout", "5"], capsys)
    assert status == 0
    assert "NDCG@10" in out and "prequential" not in out


@pytest.mark.parametrize("argv, message", [
    (["--n", "0"], "argument --n: expected a positive integer, got '0'"),
    (["--holdout", "1.5"], "argument --holdout: expected a fraction in (0, 1)"),
    (["--warmup", "1"], "argument --warmup: expected a number in [0, 1)"),
    (["--protocol", "kfold"], "argument --protocol: invalid choice: 'kfold'"),
    (["--chunk-size", "x"], "argument --chunk-size: expected a positive integer"),
    (["--exact-sigmoid", "maybe"], "argument --exact-sigmoid: expected true or false"),
    (["--param", "novalue"], "argument --param: expected KEY=VALUE"),
    (["--protocol", "split", "--plot", "c.png"], "--plot: the curve comes from the "
                                                 "prequential protocol"),
])
def test_wrong_option_values_exit_2(events_csv, capsys, argv, message):
    status, _, err = run_cli(["evaluate", "--input", str(events_csv), "--baseline", "popular",
                              *argv], capsys)
    assert status == 2
    assert message in err


@pytest.mark.parametrize("argv, message", [
    (["--dim", "0"], "dim must be int in [1, 4096], got 0 (flags: --dim)"),
    (["--param", "no_such=1"], "--param: unknown hyperparameter 'no_such'"),
])
def test_wrong_model_values_exit_2(events_csv, capsys, argv, message):
    pytest.importorskip("i2v_stream.model")
    status, _, err = run_cli(["evaluate", "--input", str(events_csv), *argv], capsys)
    assert status == 2
    assert message in err


def test_missing_input_exits_2_and_bad_file_exits_1(tmp_path, capsys):
    status, _, err = run_cli(["evaluate", "--input", str(tmp_path / "none.csv"),
                              "--baseline", "popular"], capsys)
    assert status == 2 and "--input: no such file" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item\n1,2\n,3\n", encoding="utf-8")
    status, _, err = run_cli(["evaluate", "--input", str(bad), "--baseline", "popular"], capsys)
    assert status == 1 and "bad.csv: line 3: empty user id" in err
    status, _, _ = run_cli(["evaluate", "--input", str(bad), "--baseline", "popular",
                            "--on-error", "skip", "--protocol", "split"], capsys)
    assert status == 0


def test_every_flag_is_a_model_hyperparameter_and_back():
    model_module = pytest.importorskip("i2v_stream.model")
    params = set(model_module.Interact2Vec().get_params())
    flags = {name for name, _, _ in offline.MODEL_FLAGS}
    assert flags - params == set(), "flags without a hyperparameter"
    assert params - flags == set(), "hyperparameters without a flag: add them to MODEL_FLAGS"


def test_flags_the_model_lacks_are_refused(monkeypatch, events_csv, capsys):
    pytest.importorskip("i2v_stream.model")
    monkeypatch.setattr(offline, "MODEL_FLAGS",
                        offline.MODEL_FLAGS + [("momentum", float, "not a model parameter")])
    status, _, err = run_cli(["evaluate", "--input", str(events_csv), "--momentum", "0.9"],
                             capsys)
    assert status == 2 and "--momentum: this Interact2Vec has no hyperparameter" in err


def test_matplotlib_is_imported_only_for_plots(events_csv):
    code = (
        "import sys; from services.cli import main; "
        f"status = main(['--log-level', 'ERROR', 'evaluate', '--input', {str(events_csv)!r}, "
        "'--baseline', 'popular', '--json']); "
        "assert status == 0; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr

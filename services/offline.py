"""``i2v-stream train`` and ``i2v-stream evaluate``: offline work on an interactions file.

``train`` reads a file (:mod:`i2v_stream.data`), fits an ``Interact2Vec`` for
its ``epochs`` and saves it to a directory. ``evaluate`` runs the split and/or
prequential protocols of :mod:`i2v_stream.evaluation` on a model built from the
same flags, or on the popularity baseline (``--baseline popular``), and prints
a summary or, with ``--json``, one JSON document.

Model hyperparameters are flags built from :data:`MODEL_FLAGS`; adding a
hyperparameter to the model is one line there. At run time the flags are
checked against ``Interact2Vec().get_params()``, and ``--param KEY=VALUE``
reaches any hyperparameter that has no flag of its own.

Exit status: 0 on success, 1 when the input file cannot be read, 2 for a wrong
option value (the message names the option and what it expects).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)

MULTI_COMMAND = True

FORMATS = ("auto", "movielens", "csv", "jsonl")
PROTOCOLS = ("split", "prequential", "both")
BASELINES = ("popular",)


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# (constructor argument, type, help). The flag is the name with dashes.
MODEL_FLAGS: list[tuple[str, Callable[[str], Any], str]] = [
    ("dim", int, "vector size"),
    ("negatives", int, "noise items per positive pair"),
    ("window", int, "item -> item objective over the last WINDOW items; 0 = off"),
    ("alpha", float, "exponent of the noise distribution count ** alpha"),
    ("sample", float, "subsampling threshold of frequent items; 0 = off"),
    ("learning_rate", float, "SGD learning rate"),
    ("min_learning_rate", float, "floor of fit's linear learning-rate decay"),
    ("repeats", int, "SGD steps per event in online learning"),
    ("l2", float, "weight decay on touched rows"),
    ("epochs", int, "passes of offline training (fit)"),
    ("init", str, "initialisation: uniform or word2vec"),
    ("init_scale", float, "half-width of the uniform initialisation"),
    ("history_size", int, "recent items kept per user"),
    ("noise_refresh", int, "events between noise-table rebuilds"),
    ("scoring", str, "ranking: cosine or dot"),
    ("popularity_prior", float, "weight of log(item count) added to recommendation scores"),
    ("exact_sigmoid", _bool, "exact logistic function instead of a table (true/false)"),
    ("seed", int, "random seed"),
]


class UsageError(Exception):
    """A wrong option value found after parsing; reported with exit status 2."""


# ---------------------------------------------------------------------------
# Argument parsing


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _fraction(low_closed: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = (0.0 <= value < 1.0) if low_closed else (0.0 < value < 1.0)
        if not ok:
            interval = "[0, 1)" if low_closed else "(0, 1)"
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}")
        return value
    return parse


def _holdout(text: str) -> float | int:
    try:
        value: float | int = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            value = 0
    if isinstance(value, int) and value >= 1 or isinstance(value, float) and 0 < value < 1:
        return value
    raise argparse.ArgumentTypeError(
        f"expected a fraction in (0, 1) or a number of events >= 1, got {text!r}")


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip().replace("-", "_"), value


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """Fill the sub-parser of ``train`` or ``evaluate``."""
    if name not in ("train", "evaluate"):
        raise ValueError(f"name must be 'train' or 'evaluate', got {name!r}")
    parser.set_defaults(offline_command=name)
    data = parser.add_argument_group("input")
    data.add_argument("--input", required=True, metavar="FILE",
                      help="interactions file: MovieLens u.data, CSV or JSON lines (.gz ok)")
    data.add_argument("--format", default="auto", choices=FORMATS,
                      help="file format (default: guess from extension and content)")
    data.add_argument("--on-error", default="raise", choices=("raise", "skip"),
                      help="bad lines stop the command (raise) or are counted and skipped")

    model = parser.add_argument_group(
        "model hyperparameters (default: the model's own; see Interact2Vec)")
    for flag, kind, help_text in MODEL_FLAGS:
        model.add_argument(f"--{flag.replace('_', '-')}", dest=f"model_{flag}", type=kind,
                           default=None, metavar=flag.upper(), help=help_text)
    model.add_argument("--param", dest="model_extra", type=_key_value, action="append",
                       default=[], metavar="KEY=VALUE",
                       help="any other hyperparameter; VALUE is read as JSON, else a string")
    model.add_argument("--workers", type=_positive_int, default=1,
                       help="training threads of fit (lock-free when > 1; default 1)")

    if name == "train":
        parser.add_argument("--out", required=True, metavar="MODEL_DIR",
                            help="directory to save the model to")
        parser.add_argument("--order", default="time", choices=("time", "file"),
                            help="train on events in time order (stable) or file order")
        parser.add_argument("--progress", action="store_true",
                            help="show a progress bar on stderr")
        return

    parser.add_argument("--protocol", default="both", choices=PROTOCOLS,
                        help="per-user temporal split, prequential run, or both")
    parser.add_argument("--n", type=_positive_int, default=10,
                        help="list length of Recall/NDCG/HR@N (default 10)")
    parser.add_argument("--holdout", type=_holdout, default=0.2,
                        help="split: fraction (0.2) or number (5) of each user's last events "
                             "held out")
    parser.add_argument("--warmup", type=_fraction(True), default=0.3,
                        help="prequential: fraction of events learned before scoring")
    parser.add_argument("--warmup-mode", default="learn_many", choices=("learn_many", "fit"),
                        help="prequential: learn the warm-up in one online pass or with fit")
    parser.add_argument("--chunk-size", type=_positive_int, default=1000,
                        help="prequential: events scored with one state, then learned")
    parser.add_argument("--baseline", choices=BASELINES, default=None,
                        help="evaluate a baseline instead of Interact2Vec")
    parser.add_argument("--unknown-users", default="popularity", choices=("popularity", "miss"),
                        help="users unknown when scored get item popularity (the live "
                             "service's fallback; default) or count as misses")
    parser.add_argument("--json", action="store_true",
                        help="print the results as one JSON document")
    parser.add_argument("--output", metavar="FILE", default=None,
                        help="also write the JSON results to FILE")
    parser.add_argument("--plot", metavar="PNG", default=None,
                        help="prequential: plot HR@N and MRR per chunk to PNG (matplotlib)")


# ---------------------------------------------------------------------------
# Running


def run(args: argparse.Namespace) -> int:
    """Execute ``train`` or ``evaluate``; return the exit status."""
    command = getattr(args, "offline_command", None) or getattr(args, "command", None)
    try:
        if command == "train":
            return _train(args)
        if command == "evaluate":
            return _evaluate(args)
        raise UsageError(f"unknown offline command {command!r} (expected train or evaluate)")
    except UsageError as exc:
        print(f"i2v-stream {command}: error: {exc}", file=sys.stderr)
        return 2
    except _InputError as exc:
        print(f"i2v-stream {command}: error: {exc}", file=sys.stderr)
        return 1


class _InputError(Exception):
    pass


def _read(args: argparse.Namespace):
    from i2v_stream.data import DataError, read_interactions

    path = Path(args.input)
    if not path.is_file():
        raise UsageError(f"--input: no such file {str(path)!r}")
    try:
        interactions = read_interactions(path, args.format, on_error=args.on_error)
    except DataError as exc:
        raise _InputError(str(exc)) from exc
    if len(interactions) == 0:
        raise _InputError(f"{path}: no interactions")
    logger.info("read interactions path=%s events=%d skipped=%d", path, len(interactions),
                interactions.skipped)
    return interactions


def model_params(args: argparse.Namespace) -> dict:
    """The constructor arguments named on the command line, checked against the model."""
    from i2v_stream.model import Interact2Vec

    known = Interact2Vec().get_params()
    params: dict = {}
    for flag, _, _ in MODEL_FLAGS:
        value = getattr(args, f"model_{flag}", None)
        if value is None:
            continue
        if flag not in known:
            raise UsageError(f"--{flag.replace('_', '-')}: this Interact2Vec has no "
                             f"hyperparameter {flag!r} (it has {', '.join(sorted(known))})")
        params[flag] = value
    for key, value in getattr(args, "model_extra", []):
        if key not in known:
            raise UsageError(f"--param: unknown hyperparameter {key!r}; expected one of "
                             f"{', '.join(sorted(known))}")
        params[key] = value
    return params


def _new_model(params: dict):
    from i2v_stream.model import Interact2Vec

    try:
        return Interact2Vec(**params)
    except (TypeError, ValueError) as exc:
        # The model's message names the argument; map it back to its flag.
        raise UsageError(f"invalid model hyperparameter: {exc} "
                         f"(flags: {_flags_named(params, str(exc))})") from exc


def _flags_named(params: dict, message: str) -> str:
    named = [f"--{k.replace('_', '-')}" for k in params if k in message]
    return ", ".join(named) or ", ".join(f"--{k.replace('_', '-')}" for k in params) or "none"


def _train(args: argparse.Namespace) -> int:
    params = model_params(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {str(out)!r} exists and is not a directory")
    model = _new_model(params)
    interactions = _read(args)
    if args.order == "time":
        interactions = interactions.sort_by_time()
    model.fit(interactions.users, interactions.items, interactions.timestamps,
              workers=args.workers, progress=args.progress or None)
    model.save(out)
    logger.info("saved model path=%s users=%d items=%d", out, len(model.user_ids),
                len(model.item_ids))
    print(f"trained on {len(interactions)} events: {len(model.user_ids)} users, "
          f"{len(model.item_ids)} items -> {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from i2v_stream import evaluation

    if args.plot is not None:
        if args.protocol == "split":
            raise UsageError("--plot: the curve comes from the prequential protocol; "
                             "use --protocol prequential or both")
        if not Path(args.plot).resolve().parent.is_dir():
            raise UsageError(f"--plot: directory of {args.plot!r} does not exist")
    if args.baseline is None:
        params = model_params(args)
        _new_model(params)  # fail on bad values before reading the file
    else:
        params = {}
        if model_params_given(args):
            logger.warning("model flags are ignored with --baseline %s", args.baseline)
    interactions = _read(args)

    report: dict = {
        "input": str(args.input),
        "events": len(interactions),
        "model": args.baseline or "interact2vec",
        "params": params if args.baseline is None else {},
    }
    if args.protocol in ("split", "both"):
        train, test = evaluation.temporal_split(interactions, args.holdout)
        scorer = _trained(args, params, train)
        split = evaluation.evaluate_split(scorer, train, test, n=args.n)
        split["holdout"] = args.holdout
        report["split"] = split
    if args.protocol in ("prequential", "both"):
        online = _fresh(args, params)
        report["prequential"] = evaluation.prequential(
            online, interactions, n=args.n, warmup=args.warmup, chunk_size=args.chunk_size,
            warmup_mode=args.warmup_mode, fit_kwargs={"workers": args.workers}
            if args.baseline is None else {},
        )
    if args.baseline is None:
        report["params"] = _new_model(params).get_params()
    report["unknown_users"] = args.unknown_users

    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    if args.plot:
        plot_curve(report["prequential"], args.plot, title=f"{report['model']} on "
                   f"{Path(args.input).name}")
    if args.json:
        print(text)
    else:
        print(_summary(report))
    return 0


def model_params_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, f"model_{flag}", None) is not None for flag, _, _ in MODEL_FLAGS
               ) or bool(getattr(args, "model_extra", []))


class _UnknownUsersMiss:
    """A model whose ``score_users`` answers unknown (NaN) instead of falling back."""

    def __init__(self, model) -> None:
        self.model = model

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def score_users(self, user_ids):
        return self.model.score_users(user_ids, fallback="none")


def _fresh(args: argparse.Namespace, params: dict):
    fallback = getattr(args, "unknown_users", "popularity") == "popularity"
    if args.baseline == "popular":
        from i2v_stream.baselines import OnlinePopular

        return OnlinePopular(score_unknown_users=fallback)
    model = _new_model(params)
    return model if fallback else _UnknownUsersMiss(model)


def _trained(args: argparse.Namespace, params: dict, train):
    fallback = getattr(args, "unknown_users", "popularity") == "popularity"
    if args.baseline == "popular":
        from i2v_stream.baselines import MostPopular

        return MostPopular(score_unknown_users=fallback).fit(train.users, train.items,
                                                             train.timestamps)
    model = _new_model(params)
    ordered = train.sort_by_time()
    model.fit(ordered.users, ordered.items, ordered.timestamps, workers=args.workers)
    return model if fallback else _UnknownUsersMiss(model)


def _summary(report: dict) -> str:
    lines = [f"{report['model']} on {report['input']} ({report['events']} events)"]
    split = report.get("split")
    if split:
        n = split["n"]
        lines.append(
            f"split (holdout {split['holdout']}): users {split['users']}  "
            f"Recall@{n} {_num(split['recall'])}  NDCG@{n} {_num(split['ndcg'])}  "
            f"HR@{n} {_num(split['hit_rate'])}  unknown users {split['unknown_users']}")
    preq = report.get("prequential")
    if preq:
        n = preq["n"]
        lines.append(
            f"prequential (warm-up {preq['warmup']}, chunks of {preq['chunk_size']}): "
            f"events {preq['events']}  HR@{n} {_num(preq['hit_rate'])}  "
            f"MRR {_num(preq['mrr'])}  warm HR@{n} {_num(preq['hit_rate_warm'])}  "
            f"cold users/items {preq['cold_user_events']}/{preq['cold_item_events']}  "
            f"new-user events {preq['new_user_events']}")
    return "\n".join(lines)


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def plot_curve(result: dict, path: str | Path, title: str = "") -> None:
    """Plot a prequential result's HR@N and MRR per chunk (and cumulative) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result["curve"]
    x = [p["events_end"] for p in curve]
    n = result["n"]
    nan = float("nan")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, label in ((axes[0], "hit_rate", f"HR@{n}"), (axes[1], "mrr", "MRR")):
        ax.plot(x, [nan if p[key] is None else p[key] for p in curve], lw=1,
                label="per chunk")
        ax.plot(x, [nan if p[f"cumulative_{key}"] is None else p[f"cumulative_{key}"]
                    for p in curve], lw=2, label="cumulative")
        ax.set_xlabel("events processed")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)

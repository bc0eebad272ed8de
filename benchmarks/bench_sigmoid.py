"""Sigmoid in the kernel: a precomputed table against the exact function, side by side.

Trains ``Interact2Vec`` on the ml-100k leave-last-5-out split at the model's
defaults (window 0, one thread, so that runs are bit-reproducible), once with
``exact_sigmoid=False`` (a 1024-cell table over [-6, 6], word2vec's choice)
and once with ``exact_sigmoid=True`` (``1 / (1 + exp(-x))`` in double), the two
alternating within each repeat so that both see the same machine load. Prints
train seconds (median of ``--repeats``), interactions/s and NDCG@10 /
Recall@10 on the held-out events, for ``window`` 0 and 5.

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        .venv/bin/python benchmarks/bench_sigmoid.py [--data u.data] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from i2v_stream import Interact2Vec, read_interactions
from i2v_stream.evaluation import evaluate_split, temporal_split

DEFAULT_DATA = "/work/shared/datasets/ml-100k/u.data"


def timed_fit(train, window: int, exact: bool) -> tuple[float, Interact2Vec]:
    model = Interact2Vec(window=window, exact_sigmoid=exact, seed=1)
    started = time.perf_counter()
    model.fit(train.users, train.items, workers=1, progress=False)
    return time.perf_counter() - started, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--holdout", type=int, default=5)
    args = parser.parse_args()
    train, test = temporal_split(read_interactions(args.data), args.holdout)
    epochs = Interact2Vec().epochs
    work = epochs * len(train)
    print(f"train={len(train)} test={len(test)} epochs={epochs} one thread, model defaults")
    print(f"{'window':>6} {'sigmoid':>7} {'train s':>8} {'inter/s':>11} {'R@10':>7} "
          f"{'NDCG@10':>8}")
    for window in (0, 5):
        seconds: dict[bool, list[float]] = {False: [], True: []}
        models: dict[bool, Interact2Vec] = {}
        for _ in range(args.repeats):
            for exact in (False, True):
                elapsed, models[exact] = timed_fit(train, window, exact)
                seconds[exact].append(elapsed)
        for exact in (False, True):
            model = models[exact]
            quality = evaluate_split(model, train, test, 10, metric=model.scoring)
            median = statistics.median(seconds[exact])
            print(f"{window:>6} {'exact' if exact else 'table':>7} {median:>8.2f} "
                  f"{work / median:>11,.0f} {quality['recall']:>7.4f} "
                  f"{quality['ndcg']:>8.4f}")


if __name__ == "__main__":
    main()

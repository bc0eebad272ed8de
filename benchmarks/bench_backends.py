"""Kernel arithmetic: BLAS calls against compiler-vectorised loops, side by side.

Runs ``Interact2Vec.fit`` on ml-100k (20 epochs, dim 100, 5 negatives,
sample 1e-3, one thread) with the kernel's two arithmetic paths, alternating
them within each repeat so that both see the same machine load, and prints
interactions/s (median of ``--repeats``) and the ratio loops / BLAS.

The loops gain most in a native build (``I2V_NATIVE=1``, as ``make`` builds);
``NATIVE_BUILD`` is printed.

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        .venv/bin/python benchmarks/bench_backends.py [--data u.data] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

from i2v_stream import Interact2Vec, _sgns, read_interactions

DEFAULT_DATA = "/work/shared/datasets/ml-100k/u.data"


def timed_fit(data, window: int, use_blas: bool, epochs: int) -> float:
    original = _sgns.train_events

    def train_events(*args, **kwargs):
        return original(*args, **kwargs, use_blas=use_blas)

    model = Interact2Vec(window=window, sample=1e-3, seed=1)
    with mock.patch.object(_sgns, "train_events", train_events):
        started = time.perf_counter()
        model.fit(data.users, data.items, epochs=epochs, workers=1, progress=False)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    data = read_interactions(args.data).sort_by_time()
    work = args.epochs * len(data)
    print(f"NATIVE_BUILD={_sgns.NATIVE_BUILD}  events={len(data)}  epochs={args.epochs}")
    print(f"{'window':>6} {'BLAS inter/s':>14} {'loops inter/s':>14} {'loops/BLAS':>10}")
    for window in (0, 5):
        seconds = {True: [], False: []}
        for _ in range(args.repeats):
            for use_blas in (True, False):
                seconds[use_blas].append(timed_fit(data, window, use_blas, args.epochs))
        blas, loops = (statistics.median(seconds[b]) for b in (True, False))
        print(f"{window:>6} {work / blas:>14,.0f} {work / loops:>14,.0f} {blas / loops:>10.2f}")


if __name__ == "__main__":
    main()

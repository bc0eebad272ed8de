"""Parts of the hot paths on their own: threaded fit, the reader's first pass, decoding.

The step-by-step figures in benchmarks/README.md ("the last row is three
changes", "What made single queries faster", the daemon's "What changed")
come from this script, run on the code before and after each change:

- ``fit``: ``Interact2Vec.fit`` on the ml-100k leave-last-5-out train split
  with gensim's settings (window 0, sample 1e-3, no L2, learning rate 0.025,
  20 epochs), 1 and 2 workers, seconds (median of ``--repeats``);
- ``first pass``: ``_topn.candidates`` alone (the int8 pass with its bounds)
  over 100,000 random rows at dim 100 with a popularity prior, top 10, next to
  one float32 matrix-vector product over the same rows, per second;
- ``decode``: ``Decoder.decode_into`` over 200,000 one-event JSON messages
  like bench_daemon.py's, microseconds per message.

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        .venv/bin/python benchmarks/bench_parts.py [--repeats 5] [--only fit|pass|decode]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np

from i2v_stream import Interact2Vec, _topn, read_interactions
from i2v_stream.evaluation import temporal_split
from i2v_stream.source.decode import Decoder

DEFAULT_DATA = Path("/work/shared/datasets/ml-100k/u.data")


def median_seconds(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_fit(data_path: Path, repeats: int) -> None:
    train, _ = temporal_split(read_interactions(data_path), 5)
    params = dict(dim=100, negatives=5, window=0, alpha=0.75, sample=1e-3, l2=0.0,
                  learning_rate=0.025, seed=0)
    for workers in (1, 2):
        seconds = median_seconds(lambda: Interact2Vec(**params).fit(
            train.users, train.items, epochs=20, workers=workers, progress=False), repeats)
        print(f"fit, {workers} worker(s): {seconds:.3f} s "
              f"({20 * len(train) / seconds:,.0f} interactions/s)")


def bench_first_pass(repeats: int) -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(100_000, 100)).astype(np.float32)
    prior = rng.normal(size=100_000).astype(np.float32)
    queries = rng.normal(size=(500, 100)).astype(np.float32)
    codes, scales, norms_l1 = _topn.quantize_rows(items)

    def passes():
        for query in queries:
            _topn.candidates(codes, scales, norms_l1, query, prior, 10)

    def products():
        for query in queries:
            items @ query

    print(f"first pass (FAST_INT8={getattr(_topn, 'FAST_INT8', '-')}): "
          f"{len(queries) / median_seconds(passes, repeats):,.0f}/s; "
          f"float32 matrix-vector product: "
          f"{len(queries) / median_seconds(products, repeats):,.0f}/s")


def bench_decode(repeats: int) -> None:
    rng = random.Random(0)
    values = [json.dumps({"user": f"u{rng.randrange(5000)}", "item": f"i{rng.randrange(20000)}",
                          "ts": 1.7e9 + k}).encode() for k in range(200_000)]
    decoder = Decoder()

    def decode():
        users, items, timestamps = [], [], []
        for value in values:
            decoder.decode_into(value, users, items, timestamps)

    print(f"decode: {median_seconds(decode, repeats) / len(values) * 1e6:.2f} us/message")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=["fit", "pass", "decode"], default=None)
    args = parser.parse_args()
    if args.only in (None, "fit"):
        bench_fit(args.data, args.repeats)
    if args.only in (None, "pass"):
        bench_first_pass(args.repeats)
    if args.only in (None, "decode"):
        bench_decode(args.repeats)


if __name__ == "__main__":
    main()

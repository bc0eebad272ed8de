"""Exact top-10 recommendations through ``StoreReader`` in-process, on one core.

Builds a store of ``--items`` items (default 100,000) and ``--users`` users at
``--dim`` (default 100) from a seeded random model state (Zipf-like item
counts, so the popularity prior is realistic; values do not change the cost of
an exact top-N), then times, for ``--seconds`` each, ``--repeats`` runs of:

- ``recommend``: one query at a time (the int8 first pass over every item,
  then exact float32 rescoring of the candidates, exclusion of the user's 256
  most recent items);
- ``recommend, float32 only``: the same with the int8 pass switched off (one
  float32 matrix-vector product over every item and ``argpartition``), the
  reader's path below ``QUANTIZED_MIN_ITEMS`` items;
- ``recommend_many``: the same queries in batches of ``--batch``, one
  matrix-matrix product per chunk (what ``POST /v1/recommendations`` uses).

Reports queries/s, median of the runs, and the median latency of one
``recommend``. BLAS and every thread pool are held to one thread, and the
process is pinned to one CPU where the platform allows it.

Run::

    .venv/bin/python benchmarks/bench_reader.py
"""

from __future__ import annotations

import os

# one core: before numpy (and its BLAS) is imported
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
              "BLIS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

import numpy as np  # noqa: E402

from i2v_stream.model import Interact2Vec, ModelState  # noqa: E402
from i2v_stream import reader as reader_module  # noqa: E402
from i2v_stream.reader import StoreReader  # noqa: E402
from i2v_stream.store import Store  # noqa: E402

logger = logging.getLogger(__name__)

TARGET_QPS = 1000.0


def build_store(path: Path, n_users: int, n_items: int, dim: int, seed: int) -> None:
    """Commit a seeded random model of the given size to a new store at ``path``."""
    rng = np.random.default_rng(seed)
    params = Interact2Vec(dim=dim, seed=seed).get_params()
    history = int(params["history_size"])
    item_counts = np.maximum(1, (1e5 / np.arange(1, n_items + 1)).astype(np.int64))
    rng.shuffle(item_counts)
    user_counts = rng.integers(5, 500, n_users).astype(np.int64)
    recent = rng.integers(0, n_items, (n_users, history)).astype(np.int32)
    # users with fewer events than the ring holds have empty (-1) slots
    recent[np.arange(history)[None, :] >= user_counts[:, None]] = -1
    state = ModelState(
        params=params,
        user_ids=[f"u{k}" for k in range(n_users)],
        item_ids=list(range(n_items)),
        user_vectors=rng.normal(0, 0.3, (n_users, dim)).astype(np.float32),
        item_vectors=rng.normal(0, 0.3, (n_items, dim)).astype(np.float32),
        item_input_vectors=None,
        user_counts=user_counts,
        item_counts=item_counts,
        noise_counts=item_counts.copy(),
        recent_items=recent,
        events_seen=int(user_counts.sum()),
    )
    model = Interact2Vec.from_state(state)
    with Store.open(path, params=params) as store:
        store.commit(model, {}, full=True)


def time_single(reader: StoreReader, users: list, seconds: float) -> tuple[float, list[float]]:
    """Queries/s of one-at-a-time ``recommend`` and each query's latency."""
    latencies = []
    started = time.perf_counter()
    k = 0
    while time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        reader.recommend(users[k % len(users)], n=10)
        latencies.append(time.perf_counter() - t0)
        k += 1
    return k / (time.perf_counter() - started), latencies


def time_batched(reader: StoreReader, users: list, seconds: float, batch: int) -> float:
    """Queries/s of ``recommend_many`` in batches of ``batch`` users."""
    started = time.perf_counter()
    done = 0
    while time.perf_counter() - started < seconds:
        start = done % len(users)
        chunk = (users[start:] + users[:start])[:batch]
        reader.recommend_many(chunk, n=10, chunk_size=batch)
        done += len(chunk)
    return done / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0, help="per run (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="runs; the median is shown")
    parser.add_argument("--batch", type=int, default=256, help="users per recommend_many")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None,
                        help="CPU to pin to (default: the first one allowed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    if hasattr(os, "sched_setaffinity"):
        cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})

    with tempfile.TemporaryDirectory(prefix="i2v-bench-reader-") as tmp:
        path = Path(tmp) / "store"
        t0 = time.perf_counter()
        build_store(path, args.users, args.items, args.dim, args.seed)
        built = time.perf_counter() - t0
        reader = StoreReader(path, catch_up_interval=None)
        try:
            opened = time.perf_counter() - t0 - built
            rng = np.random.default_rng(args.seed + 1)
            users = [f"u{k}" for k in rng.integers(0, args.users, 5000)]
            reader.recommend(users[0], n=10)  # warm caches

            single, plain, batched, p50s, p99s = [], [], [], [], []
            for _ in range(args.repeats):
                qps, latencies = time_single(reader, users, args.seconds)
                single.append(qps)
                p50s.append(float(np.percentile(latencies, 50)))
                p99s.append(float(np.percentile(latencies, 99)))
                with mock.patch.object(reader_module, "QUANTIZED_MIN_ITEMS", 1 << 62):
                    plain.append(time_single(reader, users, args.seconds)[0])
                batched.append(time_batched(reader, users, args.seconds, args.batch))
        finally:
            reader.close()

    print(f"StoreReader exact top-10: items={args.items:,} users={args.users:,} "
          f"dim={args.dim} one core; store built in {built:.1f}s, reader opened in "
          f"{opened:.1f}s; median of {args.repeats} runs of {args.seconds:.0f}s")
    print()
    print(f"{'method':<30} {'queries/s':>10} {'runs':>28} {'p50 ms':>8} {'p99 ms':>8}")
    runs_single = " ".join(f"{x:,.0f}" for x in single)
    runs_batched = " ".join(f"{x:,.0f}" for x in batched)
    print(f"{'recommend (one at a time)':<30} {statistics.median(single):>10,.0f} "
          f"{runs_single:>28} {1e3 * statistics.median(p50s):>8.2f} "
          f"{1e3 * statistics.median(p99s):>8.2f}")
    runs_plain = " ".join(f"{x:,.0f}" for x in plain)
    print(f"{'recommend, float32 only':<30} {statistics.median(plain):>10,.0f} "
          f"{runs_plain:>28}")
    print(f"{f'recommend_many (batch {args.batch})':<30} {statistics.median(batched):>10,.0f} "
          f"{runs_batched:>28} {'':>8} {'':>8}")
    print()
    print(f"target >= {TARGET_QPS:,.0f} queries/s: one at a time "
          f"{'met' if statistics.median(single) >= TARGET_QPS else 'NOT met'}, batched "
          f"{'met' if statistics.median(batched) >= TARGET_QPS else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

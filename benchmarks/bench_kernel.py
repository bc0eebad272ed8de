"""Kernel micro-benchmark: SGNS updates per second per core, Cython kernel vs plain C.

One update is one user->item event: a positive pair and ``--negatives`` noise items,
dim ``--dim``, float32, plain SGD. Three implementations run on the same sizes and
the same distributions (users uniform, items and negatives Zipf-like counts^0.75
scattered over the ids):

- ``kernel``: ``i2v_stream._sgns.train_events`` called directly, one thread,
  subsampling and item->item pairs off, so it does what the C loop does plus its own
  per-event bookkeeping (seeded stream per event, loss, dirty flags, user cursor).
- ``learn_many``: ``Interact2Vec.learn_many`` on the same events, i.e. the kernel
  plus the Python side (id mapping, row growth, noise-table rebuilds). Only on the
  cache-resident size, since the model owns its tables.
- ``C``: ``plain_sgns.c`` compiled here with ``cc -O3 -march=native``, with
  hand-written dot/axpy loops or cblas calls into the OpenBLAS that scipy ships (the
  library the kernel itself calls), and three ways of drawing negatives: a
  precomputed stream, an alias table, a binary search over the cumulative table.

Every figure is the median of ``--repeats`` timed runs over the same pairs (the tables
keep training across repeats, which does not change the work per update).

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        .venv/bin/python benchmarks/bench_kernel.py [--large] [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# Run from a checkout without installing: the package is the directory above.
sys.path.insert(0, str(HERE.parent))
C_SOURCE = HERE / "plain_sgns.c"
#: plain_sgns.c includes the kernel's dot product (vecmath.h) from here.
KERNEL_HEADERS = HERE.parent / "cython_src" / "i2v_stream"

SMALL = (1_000, 1_000)          # users x items: both tables fit in L2
LARGE = (1_000_000, 1_000_000)  # 800 MB at dim 100: far beyond every cache


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--updates", type=int, default=2_000_000,
                        help="updates per timed run on the cache-resident tables")
    parser.add_argument("--large-updates", type=int, default=1_000_000,
                        help="updates per timed run on the large tables")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--large", action="store_true",
                        help="also run 1M users x 1M items (needs ~2 GB of memory)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer updates and repeats, for a smoke run")
    parser.add_argument("--cc", default=os.environ.get("CC", "cc"))
    parser.add_argument("--cflags", default="-O3 -march=native",
                        help="flags for plain_sgns.c (default: %(default)s)")
    parser.add_argument("--blas-library", default=None,
                        help="shared library with cblas_sdot/cblas_saxpy; default: the "
                             "OpenBLAS scipy links, found with threadpoolctl")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        args.updates = min(args.updates, 500_000)
        args.large_updates = min(args.large_updates, 300_000)
        args.repeats = min(args.repeats, 3)
    return args


# ---------------------------------------------------------------------------
# BLAS discovery and the C reference.

def blas_info():
    """The OpenBLAS that scipy loads (the one the kernel's cython_blas calls reach)."""
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS so threadpoolctl sees it)
    from threadpoolctl import threadpool_info

    found = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    scipy_first = sorted(found, key=lambda i: "scipy.libs" not in i["filepath"])
    return scipy_first


def blas_symbol_prefix(library: str) -> str:
    """scipy's OpenBLAS builds prefix every symbol with ``scipy_``; Debian's do not."""
    handle = ctypes.CDLL(library)
    for prefix in ("scipy_", ""):
        if hasattr(handle, f"{prefix}cblas_sdot"):
            return prefix
    raise SystemExit(f"{library} exports no cblas_sdot; pass --blas-library")


def compile_reference(cc: str, cflags: str, workdir: Path) -> Path:
    if shutil.which(cc) is None:
        raise SystemExit(f"C compiler {cc!r} not found; pass --cc")
    binary = workdir / "plain_sgns"
    command = [cc, *cflags.split(), "-I", str(KERNEL_HEADERS), "-o", str(binary),
               str(C_SOURCE), "-ldl", "-lm"]
    subprocess.run(command, check=True)
    return binary


def run_reference(binary, math, sampler, n_users, n_items, args, n_updates, blas):
    command = [str(binary), math, sampler, str(n_users), str(n_items), str(args.dim),
               str(args.negatives), str(n_updates), str(args.repeats), str(args.seed)]
    if math == "blas":
        command += [blas["library"], blas["prefix"]]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rates = [float(line.split()[0].split("=")[1])
             for line in out.splitlines() if line.startswith("updates_per_second=")]
    return statistics.median(rates)


# ---------------------------------------------------------------------------
# The Cython kernel, driven the way the model drives it, minus the Python side.

def make_events(n_users, n_items, n_updates, seed):
    """Users uniform, items Zipf-like counts^0.75 over permuted ids, like plain_sgns.c."""
    rng = np.random.default_rng(seed)
    permutation = rng.permutation(n_items)
    weights = np.empty(n_items)
    weights[permutation] = (1e6 / np.arange(1, n_items + 1)) ** 0.75
    users = rng.integers(0, n_users, n_updates, dtype=np.int32)
    cumulative = np.cumsum(weights / weights.sum())
    items = np.searchsorted(cumulative, rng.random(n_updates)).astype(np.int32)
    return users, np.minimum(items, n_items - 1).astype(np.int32), weights


def time_kernel(n_users, n_items, args, n_updates):
    from i2v_stream import _sgns

    users, items, weights = make_events(n_users, n_items, n_updates, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    dim = args.dim
    user_vectors = ((rng.random((n_users, dim), dtype=np.float32) - 0.5) / dim)
    item_vectors = ((rng.random((n_items, dim), dtype=np.float32) - 0.5) / dim)
    noise_prob, noise_alias = _sgns.build_alias_table(weights)
    user_cursor = np.zeros(n_users, np.int64)
    item_counts = np.zeros(n_items, np.int64)
    recent_items = np.full((n_users, 0), -1, np.int32)  # no ring: window is 0
    user_dirty = np.zeros(n_users, np.uint8)
    item_dirty = np.zeros(n_items, np.uint8)

    rates = []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        _sgns.train_events(
            user_vectors, item_vectors, None, users, items,
            user_cursor, item_counts, recent_items, user_dirty, item_dirty,
            noise_prob, noise_alias,
            negatives=args.negatives, window=0, sample=0.0, learning_rate=0.025,
            update_counts=False, seed=args.seed, first_sequence=repeat * n_updates,
        )
        rates.append(n_updates / (time.perf_counter() - start))
    return statistics.median(rates)


def time_learn_many(n_users, n_items, args, n_updates):
    """The model's public path; integer ids so the id mapping is as cheap as it gets."""
    from i2v_stream import Interact2Vec

    users, items, _ = make_events(n_users, n_items, n_updates, args.seed)
    rates = []
    for _ in range(args.repeats):
        model = Interact2Vec(dim=args.dim, negatives=args.negatives, window=0, sample=0.0,
                             seed=args.seed)
        # Warm-up batch so row creation for every id is not part of the timing.
        model.learn_many(users[:50_000], items[:50_000])
        start = time.perf_counter()
        model.learn_many(users, items)
        rates.append(n_updates / (time.perf_counter() - start))
    return statistics.median(rates)


def try_time(function, *call_args):
    try:
        return function(*call_args)
    except ImportError as exc:
        print(f"  skipped {function.__name__}: {exc}", file=sys.stderr)
        return None


# ---------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    infos = blas_info()
    library = args.blas_library or (infos[0]["filepath"] if infos else None)
    if library is None:
        raise SystemExit("no BLAS found through threadpoolctl; pass --blas-library")
    blas = {"library": library, "prefix": blas_symbol_prefix(library)}
    arch = next((i.get("architecture") for i in infos if i["filepath"] == library), None)

    # The load average says whether other jobs shared the cores during the run.
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; BLAS {Path(library).name} kernel={arch}")
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if name in os.environ:
            print(f"note: {name}={os.environ[name]} is set; it changes the BLAS kernel")
    print(f"dim={args.dim} negatives={args.negatives} repeats={args.repeats} "
          f"cflags='{args.cflags}'")

    sizes = [("cache-resident", *SMALL, args.updates)]
    if args.large:
        sizes.append(("large", *LARGE, args.large_updates))

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        binary = compile_reference(args.cc, args.cflags, Path(workdir))
        for label, n_users, n_items, n_updates in sizes:
            kernel = try_time(time_kernel, n_users, n_items, args, n_updates)
            rows.append(dict(tables=label, n_users=n_users, n_items=n_items,
                             method="kernel train_events", negatives_by="alias",
                             updates_per_second=kernel))
            if label == "cache-resident":
                rate = try_time(time_learn_many, n_users, n_items, args, n_updates)
                rows.append(dict(tables=label, n_users=n_users, n_items=n_items,
                                 method="Interact2Vec.learn_many", negatives_by="alias",
                                 updates_per_second=rate))
            for math in ("loop", "blas"):
                for sampler in ("stream", "alias", "bsearch"):
                    rate = run_reference(binary, math, sampler, n_users, n_items, args,
                                         n_updates, blas)
                    rows.append(dict(tables=label, n_users=n_users, n_items=n_items,
                                     method=f"C {math}", negatives_by=sampler,
                                     updates_per_second=rate))

    # Ratios against the like-for-like C row: cblas calls and alias draws, as the kernel.
    for row in rows:
        reference = next(r["updates_per_second"] for r in rows
                         if r["tables"] == row["tables"] and r["method"] == "C blas"
                         and r["negatives_by"] == "alias")
        rate = row["updates_per_second"]
        row["ratio_to_c_blas_alias"] = None if rate is None else rate / reference

    print()
    header = f"{'tables':<15} {'method':<24} {'negatives':<9} {'updates/s':>12} {'/C blas':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        rate = row["updates_per_second"]
        ratio = row["ratio_to_c_blas_alias"]
        print(f"{row['tables']:<15} {row['method']:<24} {row['negatives_by']:<9} "
              f"{'-' if rate is None else f'{rate:,.0f}':>12} "
              f"{'-' if ratio is None else f'{ratio:.2f}':>8}")

    if args.json:
        args.json.write_text(json.dumps(dict(
            dim=args.dim, negatives=args.negatives, repeats=args.repeats,
            cflags=args.cflags, blas_library=library, blas_architecture=arch,
            load_average_end=os.getloadavg()[0], rows=rows), indent=2))


if __name__ == "__main__":
    main()

"""``i2v-stream export``: write a store's vectors, ids and counts to .npy/.txt files.

Reads the store through a RocksDB secondary instance, so it runs while the
daemon writes. See :mod:`i2v_stream.export` for the files.
"""

from __future__ import annotations

import argparse
import json
import sys

from i2v_stream.export import export_store
from i2v_stream.store import StoreError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="store directory (the daemon's --store)")
    parser.add_argument("--out", required=True, help="output directory (created if missing)")


def run(args: argparse.Namespace) -> int:
    try:
        summary = export_store(args.store, args.out)
    except StoreError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 2
    summary.pop("params", None)
    print(json.dumps(summary, indent=1, sort_keys=True))
    return 0

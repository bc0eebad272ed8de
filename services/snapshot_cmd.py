"""``i2v-stream snapshot create|list|restore``: manage a store's snapshots.

``create`` works whether or not a daemon holds the store: without a daemon
it takes a RocksDB checkpoint (hard links); with one it copies the store
from a secondary instance (see :mod:`i2v_stream.snapshots` for why). The
daemon takes its own periodic snapshots as checkpoints.
"""

from __future__ import annotations

import argparse
import json
import sys

from i2v_stream.snapshots import SnapshotManager
from i2v_stream.store import StoreError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", required=True, help="store directory")
    common.add_argument("--snapshot-dir", default=None,
                        help="snapshot directory (default: snapshots/ next to the store)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", parents=[common], help="snapshot the store now")
    create.add_argument("--keep", type=int, default=None,
                        help="then delete all but the newest KEEP snapshots")
    actions.add_parser("list", parents=[common], help="list snapshots as JSON lines")
    restore = actions.add_parser("restore", parents=[common],
                                 help="copy a snapshot to a store directory")
    restore.add_argument("name", help="snapshot name from `snapshot list`, or 'latest'")
    restore.add_argument("--target", default=None,
                         help="directory to restore into (default: the --store path)")
    restore.add_argument("--force", action="store_true",
                         help="replace an existing store at the target (never a running one)")


def run(args: argparse.Namespace) -> int:
    try:
        manager = SnapshotManager(args.store, args.snapshot_dir,
                                  keep=getattr(args, "keep", None))
        if args.action == "create":
            print(json.dumps(manager.create().to_json(), sort_keys=True))
        elif args.action == "list":
            for snapshot in manager.list():
                print(json.dumps(snapshot.to_json(), sort_keys=True))
        else:
            target = manager.restore(args.name, args.target, overwrite=args.force)
            print(json.dumps({"restored": args.name, "target": str(target)}))
    except StoreError as exc:
        print(f"snapshot {args.action} failed: {exc}", file=sys.stderr)
        return 2
    return 0

"""``i2v-stream query recommend|similar|embedding``: one query against a store, as JSON.

Opens the store as a RocksDB secondary instance (works while the daemon
runs; never writes). An id is tried as given (a string) and, if it is all
digits and unknown as a string, as an integer, since the command line
cannot say which type an id has; ``--id-type`` forces one.
"""

from __future__ import annotations

import argparse
import json
import sys

from i2v_stream.model import UnknownIdError
from i2v_stream.reader import StoreReader
from i2v_stream.store import StoreError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["recommend", "similar", "embedding"],
                        help="recommend items for a user, items similar to an item, or the "
                             "vector of a user (or of an item with --item)")
    parser.add_argument("id", help="user id (recommend, embedding) or item id (similar)")
    parser.add_argument("--store", required=True, help="store directory")
    parser.add_argument("--n", type=int, default=10, help="number of results (default 10)")
    parser.add_argument("--include-seen", action="store_true",
                        help="recommend: keep the user's recent items")
    parser.add_argument("--item", action="store_true", help="embedding: the id is an item")
    parser.add_argument("--id-type", choices=["auto", "str", "int"], default="auto",
                        help="type of the id (default auto: str, then int if all digits)")


def _candidates(raw: str, id_type: str) -> list:
    if id_type == "str":
        return [raw]
    if id_type == "int":
        return [int(raw)]
    out: list = [raw]
    try:
        out.append(int(raw))
    except ValueError:
        pass
    return out


def _query(reader: StoreReader, args: argparse.Namespace, key) -> dict:
    if args.action == "recommend":
        results = reader.recommend(key, n=args.n, exclude_seen=not args.include_seen)
        return {"user": key, "items": [{"item": i, "score": s} for i, s in results]}
    if args.action == "similar":
        results = reader.similar_items(key, n=args.n)
        return {"item": key, "items": [{"item": i, "score": s} for i, s in results]}
    vector = reader.item_vector(key) if args.item else reader.user_vector(key)
    return {"item" if args.item else "user": key, "vector": vector.tolist()}


def run(args: argparse.Namespace) -> int:
    try:
        candidates = _candidates(args.id, args.id_type)
    except ValueError:
        print(f"--id-type int needs an integer id, got {args.id!r}", file=sys.stderr)
        return 2
    try:
        with StoreReader(args.store, catch_up_interval=None) as reader:
            for key in candidates:
                try:
                    answer = _query(reader, args, key)
                except UnknownIdError:
                    continue
                print(json.dumps(answer))
                return 0
    except (StoreError, ValueError) as exc:
        print(f"query failed: {exc}", file=sys.stderr)
        return 2
    kind = "item" if args.action == "similar" or args.item else "user"
    print(json.dumps({"error": f"unknown {kind}", "id": args.id}))
    return 1

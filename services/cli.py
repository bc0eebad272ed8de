"""The ``i2v-stream`` command line.

Each subcommand lives in its own module of ``services`` and exposes two
functions: ``add_arguments(parser)`` fills an ``argparse`` sub-parser and
``run(args) -> int`` executes it and returns the exit status. Modules are
imported only when their subcommand is used, so ``i2v-stream train`` does not
pay for the Kafka or HTTP imports.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    "train": ("services.offline", "train a model offline from an interactions file"),
    "evaluate": ("services.offline", "evaluate a configuration on an interactions file"),
    "run": ("services.daemon", "run the streaming daemon (Kafka or file -> RocksDB store)"),
    "snapshot": ("services.snapshot_cmd", "create, list or restore store snapshots"),
    "export": ("services.export_cmd", "export a store's vectors and ids to .npy/.txt files"),
    "query": ("services.query_cmd", "query embeddings, recommendations, similar items"),
    "serve": ("services.serve", "run the HTTP query service over a store"),
}


def configure_logging(level: str) -> None:
    """Send log records to stderr as ``time level logger message``."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, object]:
    parser = argparse.ArgumentParser(
        prog="i2v-stream",
        description="Online Interact2Vec user and item embeddings from event streams.",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen subcommand's module is imported; the others get a stub
    # parser so that --help still lists them.
    chosen = next((a for a in argv if a in COMMANDS), None)
    module = None
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sub_parser, name) if _takes_name(module) else (
                module.add_arguments(sub_parser)
            )
    return parser, module


def _takes_name(module) -> bool:
    # Modules that implement several subcommands (train and evaluate) take the
    # subcommand name as a second argument.
    return getattr(module, "MULTI_COMMAND", False)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, module = build_parser(argv)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

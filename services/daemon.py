"""``i2v-stream run``: the streaming daemon (Kafka or a file -> model -> RocksDB store).

Lifecycle:

1. Read the configuration (defaults < ``--config`` YAML < ``I2V_*`` variables
   < flags; see :mod:`i2v_stream.config`). A wrong value exits 2 with a
   message naming the option.
2. Open the store for writing. A second writer on the same store exits 3 at
   once with the store's message (which process to stop, how to read instead).
3. Load the model from the store, or create one from the model options when
   the store is new.
4. Serve ``/metrics`` (unless ``--metrics-port off``), set up snapshots.
5. Connect the source: a Kafka consumer-group member that seeks to the
   store's offsets on every assignment, or a file/stdin reader for backfills.
   An unreachable broker is retried until it answers or the daemon is stopped.
6. Run the pipeline (:mod:`i2v_stream.pipeline`) until SIGTERM/SIGINT, the
   end of the input file, or ``--idle-exit-seconds``.
7. On SIGTERM/SIGINT: finish the batch in progress, commit it, leave the
   group, close the store, exit 0. A second signal stops at once (the store
   stays consistent; the last batch is replayed on the next start).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from typing import Any

from i2v_stream.config import (
    CONFIG_ENV,
    ConfigError,
    DaemonConfig,
    flag_name,
    load_config,
    option_names,
)

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_STORE = 3

_BOOL_OPTIONS = ("store_sync",)
#: Options without a ``run`` flag: ``log_level`` is the global ``i2v-stream --log-level``
#: flag; a ``log_level`` in the config file or ``I2V_LOG_LEVEL`` overrides it.
NO_FLAG = ("log_level",)
_GROUP_TITLES = {
    "daemon": "store", "source": "source (Kafka or file)", "loop": "micro-batches",
    "snapshots": "snapshots", "metrics": "metrics and logging",
    "model": "model hyperparameters (used when the store is new)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every daemon option as a flag; flags given override env and file."""
    import dataclasses

    parser.add_argument(
        "--config", metavar="FILE", default=None,
        help=f"YAML file with options named like the flags (also {CONFIG_ENV})",
    )
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(DaemonConfig):
        if f.name in NO_FLAG:
            continue
        group_name = f.metadata["group"]
        group = groups.get(group_name)
        if group is None:
            group = groups[group_name] = parser.add_argument_group(_GROUP_TITLES[group_name])
        default = "" if f.default in (None, ()) else f" (default {f.default})"
        help_text = f"{f.metadata['help']}{default}; env I2V_{f.name.upper()}"
        flag = flag_name(f.name)
        if f.name in _BOOL_OPTIONS:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        elif f.name == "topics":
            group.add_argument(flag, "--topics", dest="topics", action="append",
                               default=argparse.SUPPRESS, metavar="TOPIC", help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=argparse.SUPPRESS,
                               metavar=f.name.upper(), help=help_text)


def config_from_args(args: argparse.Namespace, environ=None) -> DaemonConfig:
    """The configuration from parsed flags, the environment and the config file."""
    names = set(option_names()) - set(NO_FLAG)
    flags = {name: value for name, value in vars(args).items() if name in names}
    return load_config(flags, getattr(args, "config", None), environ)


class _Stopper:
    """SIGTERM/SIGINT handler: the first signal asks the loop to stop after its batch."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.event.is_set():
            logger.warning("second signal=%s: stopping now without committing", name)
            raise SystemExit(EXIT_FAILED)
        logger.info("signal=%s: finishing the batch in progress, then stopping", name)
        self.event.set()


def _new_model(config: DaemonConfig):
    from i2v_stream.model import Interact2Vec

    try:
        return Interact2Vec(**config.model_params())
    except ValueError as exc:
        raise ConfigError(f"model options: {exc}") from exc


def _load_or_create_model(store, config: DaemonConfig):
    if not store.initialised:
        model = _new_model(config)
        logger.info("new store: model created params=%s", model.get_params())
        return model
    model = store.load_model()
    stored = model.get_params()
    ignored = {name: value for name, value in config.model_params().items()
               if stored.get(name) != value}
    if ignored:
        logger.warning("store exists: keeping its model parameters, ignoring the "
                       "configured %s", " ".join(f"{k}={v}" for k, v in ignored.items()))
    logger.info("model loaded from store users=%d items=%d events_seen=%d",
                model.n_users, model.n_items, model.events_seen)
    return model


def _connect_kafka(config: DaemonConfig, pipeline, bad_input_log, stop: threading.Event):
    """Create the Kafka source, retrying while the broker cannot be reached."""
    from i2v_stream.source.kafka import KafkaSource, KafkaSourceError

    delay = 0.5
    while True:
        try:
            return KafkaSource(
                config.bootstrap_servers, config.topics, config.group_id,
                stored_offsets=pipeline.stored_offsets, on_revoke=pipeline.on_revoke,
                on_lost=pipeline.on_lost, on_assign=pipeline.on_assign,
                bad_input_log=bad_input_log, dead_letter_topic=config.dead_letter_topic,
                auto_offset_reset=config.auto_offset_reset,
                consumer_config=config.consumer_config(),
            )
        except KafkaSourceError as exc:
            if stop.is_set():
                return None
            logger.warning("kafka unreachable; retrying bootstrap=%s retry_in=%.1fs error=%s",
                           config.bootstrap_servers, delay, exc)
            stop.wait(delay)
            if stop.is_set():
                return None
            delay = min(delay * 2, 10.0)


def _open_source(config: DaemonConfig, pipeline, stop: threading.Event):
    from i2v_stream.source.decode import BadInputLog

    bad_input_log = BadInputLog(logging.getLogger("i2v_stream.source"))
    if config.source_kind == "file":
        from i2v_stream.source.file import FileSource

        return FileSource(config.input, format=config.input_format,
                          stored_offsets=pipeline.stored_offsets, bad_input_log=bad_input_log)
    return _connect_kafka(config, pipeline, bad_input_log, stop)


def _start_metrics(config: DaemonConfig):
    if config.metrics_port is None:
        return None, None
    from prometheus_client import CollectorRegistry

    from i2v_stream.metrics import DaemonMetrics, serve_metrics

    metrics = DaemonMetrics(CollectorRegistry())
    server = serve_metrics(metrics.registry, config.metrics_host, config.metrics_port)
    return metrics, server


def _snapshots(config: DaemonConfig, store):
    if config.snapshot_interval_seconds is None and config.snapshot_every_events is None:
        return None
    from i2v_stream.snapshots import SnapshotManager, SnapshotScheduler

    manager = SnapshotManager(store.path, config.snapshot_dir, keep=config.snapshot_keep)
    return SnapshotScheduler(store, manager, every_seconds=config.snapshot_interval_seconds,
                             every_events=config.snapshot_every_events)


def _configure_logging(config: DaemonConfig) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if config.log_level is not None:
        root.setLevel(config.log_level)
    if root.getEffectiveLevel() > logging.DEBUG:
        # kafka-python reports every reconnect attempt at INFO/WARNING; ours suffice.
        logging.getLogger("kafka").setLevel(logging.ERROR)


def run(args: argparse.Namespace) -> int:
    """Run the daemon; returns the exit status (see the module docstring)."""
    from i2v_stream.pipeline import Pipeline, PipelineError
    from i2v_stream.store import Store, StoreError, StoreLockedError

    # 1. configuration
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        logger.error("configuration error: %s", exc)
        return EXIT_CONFIG
    _configure_logging(config)
    stopper = _Stopper()
    stopper.install()

    # 2. the store: one writer
    try:
        store = Store.open(config.store, params=config.model_params() or None,
                           sync=config.store_sync)
    except StoreLockedError as exc:
        logger.error("second writer refused: %s", exc)
        stopper.restore()
        return EXIT_STORE
    except StoreError as exc:
        logger.error("cannot open the store: %s", exc)
        stopper.restore()
        return EXIT_STORE

    source = metrics_server = None
    status = EXIT_OK
    try:
        # 3-4. model, metrics, snapshots
        try:
            model = _load_or_create_model(store, config)
        except ConfigError as exc:
            logger.error("configuration error: %s", exc)
            return EXIT_CONFIG
        metrics, metrics_server = _start_metrics(config)
        pipeline = Pipeline(
            model, store, metrics=metrics, snapshots=_snapshots(config, store),
            max_batch_events=config.max_batch_events,
            max_batch_seconds=config.max_batch_seconds,
            lag_interval_s=config.lag_interval_seconds, commit_retries=config.commit_retries,
        )

        # 5-6. source, then the loop
        started = time.monotonic()
        source = _open_source(config, pipeline, stopper.event)
        if source is not None:
            pipeline.run(source, stop=stopper.event, idle_exit_s=config.idle_exit_seconds)
        stats = pipeline.stats
        elapsed = time.monotonic() - started
        logger.info("daemon stopping events_applied=%d events_skipped=%d seconds=%.1f "
                    "rate=%.0f/s", stats.events_applied, stats.events_skipped, elapsed,
                    stats.events_applied / elapsed if elapsed > 0 else 0.0)
    except PipelineError as exc:
        logger.error("daemon failed: %s", exc)
        status = EXIT_FAILED
    except StoreError as exc:
        logger.error("store error: %s", exc)
        status = EXIT_STORE
    finally:
        # 7. leave the group (nothing is uncommitted between batches), close the store
        if source is not None:
            try:
                source.close()
            except Exception:  # closing must not hide the exit status
                logger.exception("closing the source failed")
        store.close()
        if metrics_server is not None:
            metrics_server.close()
        stopper.restore()
    logger.info("daemon stopped status=%d", status)
    return status

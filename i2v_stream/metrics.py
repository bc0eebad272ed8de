"""Prometheus metrics of the daemon and the query service, on an injected registry.

The training core never imports ``prometheus_client``: the daemon and the query
service build :class:`DaemonMetrics` / :class:`QueryMetrics` against a
``CollectorRegistry`` they own and feed them from their hooks (after each
batch, after each store commit, on rebalance, per HTTP request). Names carry
the ``i2v_`` prefix and base units (seconds, bytes); counters end in
``_total``; no label ever carries a user or item id. Skip reasons are limited
to the decoder's fixed set (anything else counts as ``other``).

Examples
--------
>>> from prometheus_client import CollectorRegistry, generate_latest
>>> registry = CollectorRegistry()
>>> metrics = DaemonMetrics(registry)
>>> metrics.events_applied.inc(100)
>>> b"i2v_events_applied_total 100.0" in generate_latest(registry)
True
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from i2v_stream.source.decode import REASONS

__all__ = [
    "BATCH_DURATION_BUCKETS",
    "BATCH_SIZE_BUCKETS",
    "DaemonMetrics",
    "MetricsServer",
    "QueryMetrics",
    "serve_metrics",
]

logger = logging.getLogger(__name__)

#: Events per micro-batch.
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000)
#: Seconds to decode, train and commit one micro-batch.
BATCH_DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
#: Seconds for one RocksDB WriteBatch (rows + ids + counts + offsets).
STORE_COMMIT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)
#: Seconds for one RocksDB checkpoint.
SNAPSHOT_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Seconds to answer one HTTP query.
HTTP_DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)

OTHER_REASON = "other"


class DaemonMetrics:
    """Metrics of the streaming daemon.

    Parameters
    ----------
    registry : CollectorRegistry
        Registry the metrics are registered in (never the global default
        unless the caller passes it).

    Attributes
    ----------
    messages_consumed, events_consumed, events_applied, events_dead_lettered,
    rebalances : Counter
    events_skipped : Counter
        Labelled by ``reason``; every known reason is exported from the start at 0.
    training_loss, store_size_bytes, users_known, items_known,
    last_commit_timestamp : Gauge
    consumer_lag : Gauge
        Labelled by ``topic`` and ``partition``; see :meth:`set_lag`.
    snapshot_age : Gauge
        Seconds since the last snapshot, computed at scrape time; see
        :meth:`snapshot_taken`.
    batch_size, batch_duration, store_commit_duration, snapshot_duration : Histogram
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.messages_consumed = Counter(
            "i2v_messages_consumed", "Messages read from the source, valid or not.", registry=r
        )
        self.events_consumed = Counter(
            "i2v_events_consumed", "Events decoded from consumed messages.", registry=r
        )
        self.events_applied = Counter(
            "i2v_events_applied", "Events applied to the model and committed to the store.",
            registry=r,
        )
        self.events_skipped = Counter(
            "i2v_events_skipped", "Events in rejected messages, by rejection reason.",
            ["reason"], registry=r,
        )
        for reason in (*REASONS, OTHER_REASON):
            self.events_skipped.labels(reason=reason)
        self.events_dead_lettered = Counter(
            "i2v_events_dead_lettered", "Rejected messages produced to the dead-letter topic.",
            registry=r,
        )
        self.training_loss = Gauge(
            "i2v_training_loss", "Mean SGNS loss per trained pair in the last batch.",
            registry=r,
        )
        self.batch_size = Histogram(
            "i2v_batch_size_events", "Events per micro-batch.", buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "i2v_batch_duration_seconds", "Seconds to train and commit one micro-batch.",
            buckets=BATCH_DURATION_BUCKETS, registry=r,
        )
        self.store_commit_duration = Histogram(
            "i2v_store_commit_duration_seconds", "Seconds to write one store batch.",
            buckets=STORE_COMMIT_BUCKETS, registry=r,
        )
        self.store_size_bytes = Gauge(
            "i2v_store_size_bytes", "Size of the store on disk.", registry=r
        )
        self.consumer_lag = Gauge(
            "i2v_consumer_lag_events", "Events between the applied position and the end.",
            ["topic", "partition"], registry=r,
        )
        self.users_known = Gauge("i2v_users_known", "Users with a vector.", registry=r)
        self.items_known = Gauge("i2v_items_known", "Items with a vector.", registry=r)
        self.snapshot_age = Gauge(
            "i2v_snapshot_age_seconds",
            "Seconds since the last snapshot (NaN before the first).", registry=r,
        )
        self.snapshot_duration = Histogram(
            "i2v_snapshot_duration_seconds", "Seconds to take one snapshot.",
            buckets=SNAPSHOT_DURATION_BUCKETS, registry=r,
        )
        self.rebalances = Counter(
            "i2v_rebalances", "Partition assignments received from the group.", registry=r
        )
        self.last_commit_timestamp = Gauge(
            "i2v_last_commit_timestamp_seconds", "Unix time of the last store commit.",
            registry=r,
        )

        self._lag_lock = threading.Lock()
        self._lag_labels: set[tuple[str, str]] = set()
        self._last_snapshot: float | None = None
        self.snapshot_age.set_function(self._snapshot_age)

    # -- hooks ----------------------------------------------------------------------

    def record_consumed(self, n_messages: int, n_events: int) -> None:
        """Count messages read and the events decoded from them."""
        self.messages_consumed.inc(n_messages)
        self.events_consumed.inc(n_events)

    def record_skipped(self, reason: str, n_events: int = 1) -> None:
        """Count events of a rejected message; unknown reasons count as ``other``."""
        label = reason if reason in REASONS else OTHER_REASON
        self.events_skipped.labels(reason=label).inc(n_events)

    def record_batch(
        self, n_events: int, duration_s: float, loss: float | None = None
    ) -> None:
        """Record one applied and committed batch.

        Parameters
        ----------
        n_events : int
            Events applied.
        duration_s : float
            Seconds from the start of training to the end of the store commit.
        loss : float or None
            Mean loss of the batch; None leaves the gauge as it was.
        """
        self.events_applied.inc(n_events)
        self.batch_size.observe(n_events)
        self.batch_duration.observe(duration_s)
        if loss is not None:
            self.training_loss.set(loss)

    def record_commit(self, duration_s: float, at: float | None = None) -> None:
        """Record one store commit that took ``duration_s`` and finished at unix time ``at``."""
        self.store_commit_duration.observe(duration_s)
        self.last_commit_timestamp.set(time.time() if at is None else at)

    def set_known(self, n_users: int, n_items: int) -> None:
        """Set the numbers of users and items with a vector."""
        self.users_known.set(n_users)
        self.items_known.set(n_items)

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        """Replace the lag of every partition; partitions not given are removed.

        Parameters
        ----------
        lag : mapping of (topic, partition) to int
            ``TopicPartition`` keys work (they are tuples).
        """
        with self._lag_lock:
            current = set()
            for (topic, partition), value in lag.items():
                labels = (str(topic), str(partition))
                current.add(labels)
                self.consumer_lag.labels(*labels).set(value)
            for labels in self._lag_labels - current:
                self.consumer_lag.remove(*labels)
            self._lag_labels = current

    def snapshot_taken(self, duration_s: float, at: float | None = None) -> None:
        """Record a snapshot that took ``duration_s`` and finished at unix time ``at``."""
        self.snapshot_duration.observe(duration_s)
        self._last_snapshot = time.time() if at is None else at

    def _snapshot_age(self) -> float:
        last = self._last_snapshot
        return float("nan") if last is None else max(0.0, time.time() - last)


class QueryMetrics:
    """Metrics of the query service.

    Parameters
    ----------
    registry : CollectorRegistry
        Registry the metrics are registered in.

    Attributes
    ----------
    http_requests : Counter
        Labelled by ``route`` (the route pattern, never the raw path with ids),
        ``method`` and ``status``.
    http_request_duration : Histogram
        Labelled by ``route``.
    reader_staleness : Gauge
        Seconds between the newest commit the reader sees and now.
    reader_catchups : Counter
        Catch-ups of the secondary RocksDB instance.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.http_requests = Counter(
            "i2v_http_requests", "HTTP requests answered.", ["route", "method", "status"],
            registry=registry,
        )
        self.http_request_duration = Histogram(
            "i2v_http_request_duration_seconds", "Seconds to answer one HTTP request.",
            ["route"], buckets=HTTP_DURATION_BUCKETS, registry=registry,
        )
        self.reader_staleness = Gauge(
            "i2v_reader_staleness_seconds",
            "Seconds since the last store commit visible to the reader.", registry=registry,
        )
        self.reader_catchups = Counter(
            "i2v_reader_catchups", "Catch-ups of the secondary store instance.",
            registry=registry,
        )

    def observe_request(self, route: str, method: str, status: int, duration_s: float) -> None:
        """Record one answered request; ``route`` is the pattern, e.g. ``/users/{user}``."""
        self.http_requests.labels(route=route, method=method, status=str(status)).inc()
        self.http_request_duration.labels(route=route).observe(duration_s)


class MetricsServer:
    """Handle of a running ``/metrics`` HTTP endpoint; see :func:`serve_metrics`.

    Attributes
    ----------
    host : str
    port : int
        The bound port (the real one when 0 was asked for).
    url : str
        ``http://host:port/metrics``.
    """

    def __init__(self, server, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port = int(server.server_port)
        self.url = f"http://{host}:{self.port}/metrics"
        self._closed = False

    def close(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        logger.info("metrics endpoint closed port=%d", self.port)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serve_metrics(registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0
                  ) -> MetricsServer:
    """Serve ``registry`` in the Prometheus text format on ``host:port``.

    Parameters
    ----------
    registry : CollectorRegistry
        What to expose.
    host : str
        Address to bind.
    port : int
        Port to bind; 0 picks a free one (read it from the handle).

    Returns
    -------
    MetricsServer
        Call ``close()`` to stop it.
    """
    server, thread = start_http_server(port, addr=host, registry=registry)
    handle = MetricsServer(server, thread, host)
    logger.info("metrics endpoint serving url=%s", handle.url)
    return handle


def metric_names(registry: CollectorRegistry) -> Iterable[str]:
    """Every sample name the registry exposes (for tests and docs)."""
    for family in registry.collect():
        for sample in family.samples:
            yield sample.name

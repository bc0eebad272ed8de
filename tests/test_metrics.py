"""Metrics built against an injected registry, and their HTTP endpoint."""

from __future__ import annotations

import math
import urllib.request

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from i2v_stream.metrics import DaemonMetrics, QueryMetrics, metric_names, serve_metrics

DAEMON_NAMES = [
    "i2v_messages_consumed_total", "i2v_events_consumed_total", "i2v_events_applied_total",
    "i2v_events_skipped_total", "i2v_events_dead_lettered_total", "i2v_training_loss",
    "i2v_batch_size_events", "i2v_batch_duration_seconds",
    "i2v_store_commit_duration_seconds", "i2v_store_size_bytes", "i2v_consumer_lag_events",
    "i2v_users_known", "i2v_items_known", "i2v_snapshot_age_seconds",
    "i2v_snapshot_duration_seconds", "i2v_rebalances_total",
    "i2v_last_commit_timestamp_seconds",
]
QUERY_NAMES = [
    "i2v_http_requests_total", "i2v_http_request_duration_seconds",
    "i2v_reader_staleness_seconds", "i2v_reader_catchups_total",
]


def samples(registry):
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }, text


def test_exposition_has_every_contract_name():
    registry = CollectorRegistry()
    metrics = DaemonMetrics(registry)
    metrics.set_lag({("t", 0): 3})
    QueryMetrics(registry).observe_request("/users/{user}/recommendations", "GET", 200, 0.01)
    _, text = samples(registry)
    for name in DAEMON_NAMES + QUERY_NAMES:
        assert f"\n{name}" in text or f"# TYPE {name}" in text, name
    assert all(name.startswith("i2v_") for name in metric_names(registry))


def test_hooks_feed_the_metrics():
    registry = CollectorRegistry()
    metrics = DaemonMetrics(registry)
    metrics.record_consumed(10, 12)
    metrics.record_skipped("decode", 2)
    metrics.record_skipped("something new")
    metrics.record_batch(10, 0.02, loss=0.5)
    metrics.record_commit(0.001, at=1234.0)
    metrics.set_known(5, 7)
    metrics.rebalances.inc()
    values, _ = samples(registry)
    assert values[("i2v_events_consumed_total", ())] == 12
    assert values[("i2v_events_skipped_total", (("reason", "decode"),))] == 2
    assert values[("i2v_events_skipped_total", (("reason", "other"),))] == 1
    assert values[("i2v_events_skipped_total", (("reason", "type"),))] == 0
    assert values[("i2v_training_loss", ())] == 0.5
    assert values[("i2v_batch_size_events_count", ())] == 1
    assert values[("i2v_last_commit_timestamp_seconds", ())] == 1234.0
    assert values[("i2v_items_known", ())] == 7
    assert math.isnan(values[("i2v_snapshot_age_seconds", ())])
    metrics.snapshot_taken(0.5)
    values, _ = samples(registry)
    assert 0 <= values[("i2v_snapshot_age_seconds", ())] < 5


def test_lag_of_revoked_partitions_disappears():
    registry = CollectorRegistry()
    metrics = DaemonMetrics(registry)
    metrics.set_lag({("t", 0): 3, ("t", 1): 4})
    metrics.set_lag({("t", 1): 2})
    values, _ = samples(registry)
    lag = {k: v for k, v in values.items() if k[0] == "i2v_consumer_lag_events"}
    assert lag == {("i2v_consumer_lag_events", (("partition", "1"), ("topic", "t"))): 2}


def test_two_registries_do_not_collide():
    DaemonMetrics(CollectorRegistry())
    DaemonMetrics(CollectorRegistry())


def test_serve_metrics_over_http():
    registry = CollectorRegistry()
    DaemonMetrics(registry).events_applied.inc(3)
    with serve_metrics(registry, "127.0.0.1", 0) as server:
        body = urllib.request.urlopen(server.url, timeout=5).read().decode()
    assert "i2v_events_applied_total 3.0" in body
    server.close()  # idempotent

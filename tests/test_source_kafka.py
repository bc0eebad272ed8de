"""KafkaSource against a real Kafka-protocol broker (embedded Tansu or real Kafka)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from i2v_stream.source.kafka import (
    HEADER_REASON,
    HEADER_SOURCE,
    KafkaSource,
    KafkaSourceError,
    measure_raw_consume,
)

pytestmark = pytest.mark.kafka


def produce(bootstrap, topic, values, partition=None, one_per_batch=True):
    """Produce ``values``; one record per batch keeps the broker's watermark exact."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    try:
        for value in values:
            future = producer.send(topic, value, partition=partition)
            if one_per_batch:
                future.get(timeout=10)
        producer.flush(10)
    finally:
        producer.close()


def event(user, item, ts=None):
    body = {"user": user, "item": item}
    if ts is not None:
        body["ts"] = ts
    return json.dumps(body).encode()


class AppliedLog:
    """What the test consumer applied: next offsets per partition and the events.

    The source is tested on its own here; the RocksDB store behind it is
    exercised end to end in test_pipeline.py and test_exactly_once.py.
    """

    def __init__(self):
        self.offsets = {}
        self.applied = []
        self.revoked = []
        self.lock = threading.Lock()

    def stored_offsets(self, partitions):
        with self.lock:
            return {tp: self.offsets.get(tp) for tp in partitions}

    def on_revoke(self, partitions):
        self.revoked.append(sorted(partitions))

    def apply(self, batch):
        with self.lock:
            self.applied.extend(zip(batch.partitions, batch.users, batch.items))
            self.offsets.update(batch.next_offsets)


def make_source(bootstrap, topics, group, store, config, **kwargs):
    return KafkaSource(
        bootstrap, topics, group, stored_offsets=store.stored_offsets,
        on_revoke=store.on_revoke, consumer_config=config, **kwargs,
    )


def drain(source, store, n_events, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    bad = []
    while len(store.applied) < n_events and time.monotonic() < deadline:
        batch = source.poll_batch(max_events=1000, max_latency_s=0.3)
        store.apply(batch)
        bad.extend(batch.bad)
    return bad


def test_consumes_every_event_with_next_offsets(kafka_bootstrap, topic, fast_group_config):
    name = topic(partitions=2)
    produce(kafka_bootstrap, name, [event(i, i + 100, ts=i) for i in range(10)], partition=0)
    produce(kafka_bootstrap, name, [event(f"u{i}", "x") for i in range(5)], partition=1)
    store = AppliedLog()
    with make_source(kafka_bootstrap, [name], "g-all", store, fast_group_config) as source:
        drain(source, store, 15)
        assert sorted(store.offsets.items()) == [
            (TopicPartition(name, 0), 10), (TopicPartition(name, 1), 5)
        ]
        assert source.lag() == {TopicPartition(name, 0): 0, TopicPartition(name, 1): 0}
    p0 = [(u, i) for tp, u, i in store.applied if tp.partition == 0]
    assert p0 == [(i, i + 100) for i in range(10)]  # partition order kept
    assert len(store.applied) == 15


def test_assignment_seeks_to_stored_offsets_not_kafka_commits(
    kafka_bootstrap, topic, fast_group_config
):
    name = topic(partitions=1)
    tp = TopicPartition(name, 0)
    produce(kafka_bootstrap, name, [event(i, i) for i in range(10)])
    store = AppliedLog()
    store.offsets[tp] = 7
    with make_source(kafka_bootstrap, [name], "g-seek", store, fast_group_config) as source:
        drain(source, store, 3)
        # A Kafka commit far behind the store must not move the read position.
        assert source.commit_to_kafka({tp: 1}, sync=True)
    assert [u for _, u, _ in store.applied] == [7, 8, 9]

    # A new member of the same group starts from the store again, not from Kafka's 1.
    store.applied.clear()
    produce(kafka_bootstrap, name, [event(10, 10)])
    with make_source(kafka_bootstrap, [name], "g-seek", store, fast_group_config) as source:
        drain(source, store, 1)
        time.sleep(0.5)
        store.apply(source.poll_batch(100, 0.3))
    assert [u for _, u, _ in store.applied] == [10]


def test_commit_to_kafka_is_visible_to_lag_exporters(kafka_bootstrap, topic, fast_group_config):
    name = topic(partitions=1)
    tp = TopicPartition(name, 0)
    produce(kafka_bootstrap, name, [event(i, i) for i in range(6)])
    store = AppliedLog()
    with make_source(kafka_bootstrap, [name], "g-commit", store, fast_group_config) as source:
        drain(source, store, 6)
        assert source.commit_to_kafka(store.offsets, sync=True)
        assert source.commit_to_kafka({TopicPartition("not-assigned", 0): 3}, sync=True)
    probe = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id="g-commit")
    try:
        assert probe.committed(tp) == 6
    finally:
        probe.close()


def test_lag_counts_from_consumed_position(kafka_bootstrap, topic, fast_group_config):
    name = topic(partitions=1)
    tp = TopicPartition(name, 0)
    produce(kafka_bootstrap, name, [event(i, i) for i in range(8)])
    store = AppliedLog()
    with make_source(kafka_bootstrap, [name], "g-lag", store, fast_group_config) as source:
        deadline = time.monotonic() + 20
        while not store.applied and time.monotonic() < deadline:
            store.apply(source.poll_batch(max_events=3, max_latency_s=0.3))
        assert store.offsets[tp] == len(store.applied) == 3
        assert source.lag() == {tp: 5}


def test_bad_messages_are_skipped_counted_and_dead_lettered(
    kafka_bootstrap, topic, fast_group_config
):
    name = topic(partitions=1)
    dead = topic(partitions=1)
    values = [event(1, 1), b"{oops", event(2, 2), b'{"user": true, "item": 1}', event(3, 3)]
    produce(kafka_bootstrap, name, values)
    store = AppliedLog()
    with make_source(
        kafka_bootstrap, [name], "g-dlq", store, fast_group_config, dead_letter_topic=dead
    ) as source:
        bad = drain(source, store, 3)
        source.flush_dead_letters()
        assert source.bad_input_log.counts == {"decode": 1, "type": 1}
        assert source.dead_lettered == 2
    assert [u for _, u, _ in store.applied] == [1, 2, 3]
    assert [(b.offset, b.reason) for b in bad] == [(1, "decode"), (3, "type")]
    assert store.offsets[TopicPartition(name, 0)] == 5

    reader = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    reader.assign([TopicPartition(dead, 0)])
    records = []
    for record in reader:
        records.append(record)
        if len(records) == 2:
            break
    reader.close()
    assert [r.value for r in records] == [b"{oops", b'{"user": true, "item": 1}']
    headers = [dict(r.headers) for r in records]
    assert [h[HEADER_REASON] for h in headers] == [b"decode", b"type"]
    assert headers[0][HEADER_SOURCE] == f"{name}:0:1".encode()


def test_all_bad_batch_still_advances_offsets(kafka_bootstrap, topic, fast_group_config):
    name = topic(partitions=1)
    produce(kafka_bootstrap, name, [b"", b"\xff", b"[]"])
    store = AppliedLog()
    with make_source(kafka_bootstrap, [name], "g-allbad", store, fast_group_config) as source:
        deadline = time.monotonic() + 20
        while not store.offsets and time.monotonic() < deadline:
            store.apply(source.poll_batch(100, 0.3))
    assert store.offsets == {TopicPartition(name, 0): 3} and store.applied == []


class Member(threading.Thread):
    """One group member polling in its own thread, as separate daemons would."""

    def __init__(self, source, store):
        super().__init__(daemon=True)
        self.source = source
        self.store = store
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set():
                self.store.apply(self.source.poll_batch(max_events=5, max_latency_s=0.1))
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.source.close()


def wait_for(condition, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_rebalance_between_two_members_applies_each_event_once(
    kafka_bootstrap, topic, fast_group_config
):
    name = topic(partitions=4)
    n_per_partition = 40
    for partition in range(4):
        produce(
            kafka_bootstrap, name,
            [event(f"p{partition}", i) for i in range(n_per_partition)], partition=partition,
        )
    store = AppliedLog()
    first = Member(
        make_source(kafka_bootstrap, [name], "g-rebalance", store, fast_group_config), store
    )
    second = None
    try:
        first.start()
        assert wait_for(lambda: len(first.source.assignment()) == 4 and store.applied, 20)

        second = Member(
            make_source(kafka_bootstrap, [name], "g-rebalance", store, fast_group_config), store
        )
        second.start()

        def split():
            mine, theirs = first.source.assignment(), second.source.assignment()
            return mine and theirs and not mine & theirs and len(mine | theirs) == 4

        assert wait_for(split, 30), (first.source.assignment(), second.source.assignment())
        assert store.revoked, "on_revoke ran for the first member"
        assert wait_for(lambda: len(store.applied) >= 4 * n_per_partition, 20)
        time.sleep(0.3)
    finally:
        first.stop.set()
        if second is not None:
            second.stop.set()
        first.join(10)
        if second is not None:
            second.join(10)
    assert first.error is None and (second is None or second.error is None)
    for partition in range(4):
        seen = [i for tp, u, i in store.applied if tp.partition == partition]
        assert seen == list(range(n_per_partition)), f"partition={partition}"


def test_failing_stored_offsets_keeps_partitions_paused(
    kafka_bootstrap, topic, fast_group_config
):
    name = topic(partitions=1)
    tp = TopicPartition(name, 0)
    produce(kafka_bootstrap, name, [event(i, i) for i in range(5)])
    store = AppliedLog()
    store.offsets[tp] = 2
    failures = {"left": 2}

    def flaky(partitions):
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("store unavailable")
        return store.stored_offsets(partitions)

    source = KafkaSource(
        kafka_bootstrap, [name], "g-flaky", stored_offsets=flaky,
        consumer_config=fast_group_config,
    )
    errors = 0
    try:
        deadline = time.monotonic() + 20
        while len(store.applied) < 3 and time.monotonic() < deadline:
            try:
                batch = source.poll_batch(100, 0.3)
            except KafkaSourceError as exc:
                errors += 1
                assert isinstance(exc.__cause__, OSError)
                continue
            store.apply(batch)
    finally:
        source.close()
    assert errors >= 1
    assert [u for _, u, _ in store.applied] == [2, 3, 4]


def test_survives_a_broker_pause(embedded_broker, fast_group_config):
    bootstrap = embedded_broker.bootstrap
    embedded_broker.create_topic("outage", 1)
    produce(bootstrap, "outage", [event(i, i) for i in range(3)])
    store = AppliedLog()
    source = make_source(bootstrap, ["outage"], "g-outage", store, fast_group_config)
    try:
        drain(source, store, 3)
        embedded_broker.pause()
        try:
            for _ in range(4):
                store.apply(source.poll_batch(100, 0.3))  # errors are logged, not raised
        finally:
            embedded_broker.resume()
        produce(bootstrap, "outage", [event(i, i) for i in range(3, 6)])
        drain(source, store, 6, timeout_s=30)
    finally:
        source.close()
    assert [u for _, u, _ in store.applied] == list(range(6))


def test_measure_raw_consume(kafka_bootstrap, topic):
    name = topic(partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for i in range(500):
        producer.send(name, event(i, i))
    producer.flush(10)
    producer.close()
    count, seconds = measure_raw_consume(kafka_bootstrap, name, 500, timeout_s=20)
    assert count == 500 and seconds > 0


def test_rejects_auto_commit(kafka_bootstrap):
    with pytest.raises(KafkaSourceError, match="enable_auto_commit"):
        KafkaSource(kafka_bootstrap, ["t"], "g", stored_offsets=dict,
                    consumer_config={"enable_auto_commit": True})

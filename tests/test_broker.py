"""The embedded Tansu broker used by tests and the demo."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from i2v_stream.broker import BrokerError, EmbeddedBroker

pytestmark = pytest.mark.kafka


def test_produce_and_consume_through_embedded_broker(embedded_broker):
    embedded_broker.create_topic("smoke", partitions=2)
    producer = KafkaProducer(bootstrap_servers=embedded_broker.bootstrap)
    for i in range(4):
        producer.send("smoke", str(i).encode(), partition=i % 2)
    producer.flush(10)
    producer.close()
    consumer = KafkaConsumer(
        bootstrap_servers=embedded_broker.bootstrap, auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    consumer.assign([TopicPartition("smoke", 0), TopicPartition("smoke", 1)])
    values = sorted(record.value for _, record in zip(range(4), consumer))
    consumer.close()
    assert values == [b"0", b"1", b"2", b"3"]


def test_create_existing_topic_raises(embedded_broker):
    embedded_broker.create_topic("twice")
    with pytest.raises(BrokerError, match="twice"):
        embedded_broker.create_topic("twice")


def test_pause_resume_and_stop(embedded_broker):
    embedded_broker.pause()
    assert embedded_broker.is_running
    embedded_broker.resume()
    embedded_broker.wait_ready(10)
    embedded_broker.stop()
    embedded_broker.stop()
    assert not embedded_broker.is_running
    assert embedded_broker.log_path.exists()
    with pytest.raises(BrokerError, match="not running"):
        embedded_broker.pause()


def test_stop_from_paused_state(tmp_path):
    with EmbeddedBroker(log_path=tmp_path / "b.log") as broker:
        broker.pause()
    assert not broker.is_running


def test_missing_binary_fails_clearly(tmp_path):
    broker = EmbeddedBroker(binary=str(tmp_path / "no-such-tansu"), log_path=tmp_path / "b.log")
    with pytest.raises(BrokerError, match="cannot run"):
        broker.start()

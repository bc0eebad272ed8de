"""The ``i2v-stream run`` process: one writer, clean SIGTERM, broker outages, metrics."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaProducer

from i2v_stream.broker import free_port
from i2v_stream.store import StoreError, StoreView

REPO = Path(__file__).resolve().parents[1]

FAST_FLAGS = [
    "--seed", "5", "--dim", "16", "--max-batch-events", "200", "--max-batch-seconds", "0.05",
    "--max-poll-interval-ms", "2000", "--session-timeout-ms", "3000",
    "--heartbeat-interval-ms", "500", "--request-timeout-ms", "5000",
    "--lag-interval-seconds", "0.5",
]


def command(store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", "run", "--store", str(store), *FAST_FLAGS,
            *extra]


def spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, stdout=open(log, "ab"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def events(n: int, start: int = 0) -> list[bytes]:
    return [json.dumps({"user": f"u{k % 53}", "item": f"i{k % 31}", "ts": k}).encode()
            for k in range(start, start + n)]


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for value in values:
        producer.send(topic, value=value)
    producer.flush(30)
    producer.close()


def stored_offset(store: Path, topic: str) -> int:
    try:
        view = StoreView.open_secondary(store)
    except StoreError:
        return 0
    try:
        return view.offsets().get((topic, 0), 0)
    finally:
        view.close()


def wait_for(predicate, timeout_s: float, what: str, process=None, log=None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"daemon exited rc={process.returncode} waiting for {what}:\n"
                                 + (log.read_text()[-3000:] if log else ""))
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n"
                                 + (log.read_text()[-3000:] if log else ""))
        time.sleep(0.05)


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def read_counts(store: Path):
    view = StoreView.open_read_only(store)
    try:
        state = view.load_state()
    finally:
        view.close()
    return (dict(zip(state.user_ids, state.user_counts.tolist())),
            dict(zip(state.item_ids, state.item_counts.tolist())), state.events_seen)


def expected_counts(values: list[bytes]):
    objs = [json.loads(v) for v in values]
    return (dict(collections.Counter(o["user"] for o in objs)),
            dict(collections.Counter(o["item"] for o in objs)))


@pytest.mark.kafka
def test_second_writer_fails_fast_and_sigterm_exits_0_after_committing(
        kafka_bootstrap, topic, tmp_path):
    name = topic(1)
    values = events(3000)
    produce(kafka_bootstrap, name, values)
    store, log = tmp_path / "store", tmp_path / "daemon.log"
    port = free_port()
    first = spawn(command(store, "--bootstrap-servers", kafka_bootstrap, "--topic", name,
                          "--group-id", f"g-{name}", "--metrics-port", str(port)), log)
    try:
        wait_for(lambda: stored_offset(store, name) > 0, 30, "a first commit", first, log)

        # a second writer on the same store
        started = time.monotonic()
        second = subprocess.run(
            command(store, "--bootstrap-servers", kafka_bootstrap, "--topic", name,
                    "--metrics-port", "off"),
            cwd=REPO, capture_output=True, text=True, timeout=30)
        assert second.returncode == 3
        assert "already open for writing" in second.stderr
        assert time.monotonic() - started < 15

        wait_for(lambda: stored_offset(store, name) == len(values), 30, "the end", first, log)
        # metrics follow the commit; lag is refreshed every 0.5 s
        wanted = ["i2v_events_applied_total 3000.0",
                  f'i2v_consumer_lag_events{{partition="0",topic="{name}"}} 0.0']
        wait_for(lambda: all(w in scrape(port) for w in wanted), 10, "metrics", first, log)

        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0, log.read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    users, items, seen = read_counts(store)
    assert seen == len(values)
    assert (users, items) == expected_counts(values)
    assert "daemon stopped status=0" in log.read_text()


@pytest.mark.kafka
def test_sigterm_mid_stream_commits_what_was_applied(kafka_bootstrap, topic, tmp_path):
    name = topic(1)
    values = events(20_000)
    produce(kafka_bootstrap, name, values)
    store, log = tmp_path / "store", tmp_path / "daemon.log"
    flags = ["--bootstrap-servers", kafka_bootstrap, "--topic", name, "--group-id",
             f"g-{name}", "--metrics-port", "off", "--max-batch-events", "50"]
    process = spawn(command(store, *flags), log)
    wait_for(lambda: stored_offset(store, name) > 0, 30, "a first commit", process, log)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0, log.read_text()[-3000:]
    users, items, seen = read_counts(store)
    offset = StoreView.open_read_only(store)
    try:
        applied = offset.offsets()[(name, 0)]
    finally:
        offset.close()
    assert seen == applied                       # state and offsets agree
    assert (users, items) == expected_counts(values[:applied])


@pytest.mark.kafka
def test_daemon_rides_through_a_broker_outage_longer_than_the_session(
        embedded_broker, tmp_path):
    bootstrap = embedded_broker.bootstrap
    embedded_broker.create_topic("outage", 1)
    first, second = events(20_000), events(4000, start=20_000)
    produce(bootstrap, "outage", first)
    store, log = tmp_path / "store", tmp_path / "daemon.log"
    process = spawn(command(store, "--bootstrap-servers", bootstrap, "--topic", "outage",
                            "--group-id", "g-outage", "--metrics-port", "off",
                            "--max-batch-events", "100"), log)
    try:
        wait_for(lambda: stored_offset(store, "outage") > 0, 30, "a first commit", process,
                 log)
        embedded_broker.pause()
        paused_at = stored_offset(store, "outage")
        time.sleep(8.0)           # longer than the session (3 s) and request (5 s) timeouts
        embedded_broker.resume()
        produce(bootstrap, "outage", second)
        wait_for(lambda: stored_offset(store, "outage") == 24_000, 90,
                 "the end after the outage", process, log)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, log.read_text()[-3000:]
    finally:
        if embedded_broker._paused:
            embedded_broker.resume()
        if process.poll() is None:
            process.kill()
    assert 0 < paused_at < len(first)                # the outage hit mid-stream
    users, items, seen = read_counts(store)
    assert seen == 24_000
    assert (users, items) == expected_counts(first + second)


def test_file_backfill_exits_0_at_the_end_and_resumes(tmp_path):
    path = tmp_path / "events.jsonl"
    values = events(1500)
    path.write_bytes(b"\n".join(values[:1000]) + b"\n")
    store = tmp_path / "store"
    cmd = command(store, "--input", str(path), "--metrics-port", "off")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(path, "ab") as handle:             # the file grows; the backfill resumes
        handle.write(b"\n".join(values[1000:]) + b"\n")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    users, items, seen = read_counts(store)
    assert seen == 1500
    assert (users, items) == expected_counts(values)


def test_a_store_created_with_another_dim_is_refused(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(events(10)) + b"\n")
    store = tmp_path / "store"
    ok = subprocess.run(command(store, "--input", str(path), "--metrics-port", "off"),
                        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0
    refused = subprocess.run(command(store, "--input", str(path), "--metrics-port", "off",
                                     "--dim", "32"), cwd=REPO, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 3
    assert "dim=16" in refused.stderr and "dim=32" in refused.stderr


@pytest.mark.kafka
def test_bad_messages_go_to_the_dead_letter_topic_with_their_reason(
        kafka_bootstrap, topic, tmp_path):
    from kafka import KafkaConsumer, TopicPartition

    name, dead = topic(1), topic(1)
    good = events(5)
    bad = [b"not json", b'{"user": "", "item": "i"}', b'{"user": "u", "item": "i", "ts": NaN}']
    produce(kafka_bootstrap, name, good[:2] + bad + good[2:])
    store, log = tmp_path / "store", tmp_path / "daemon.log"
    process = spawn(command(store, "--bootstrap-servers", kafka_bootstrap, "--topic", name,
                            "--group-id", f"g-{name}", "--metrics-port", "off",
                            "--dead-letter-topic", dead), log)
    try:
        wait_for(lambda: stored_offset(store, name) == 8, 30, "the end", process, log)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(dead, 0)])
        consumer.seek_to_beginning()
        letters, deadline = [], time.monotonic() + 20
        while len(letters) < 3 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                letters.extend(records)
    finally:
        consumer.close()
    assert [r.value for r in letters] == bad
    reasons = [dict(r.headers)["i2v-reason"] for r in letters]
    assert reasons == [b"schema", b"empty_id", b"bad_timestamp"]   # "not json" reads as CSV
    users, _, seen = read_counts(store)
    assert seen == 5 and sum(users.values()) == 5
    assert log.read_text().count("bad input reason=") == 3     # once per reason


def test_backfill_takes_snapshots_every_n_events_and_keeps_k(tmp_path):
    from i2v_stream.snapshots import SnapshotManager

    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(events(2000)) + b"\n")
    store, snapshots = tmp_path / "store", tmp_path / "snaps"
    done = subprocess.run(
        command(store, "--input", str(path), "--metrics-port", "off", "--max-batch-events",
                "250", "--snapshot-every-events", "500", "--snapshot-keep", "2",
                "--snapshot-dir", str(snapshots)),
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = SnapshotManager(store, snapshots).list()
    assert [s.events_seen for s in listed] == [1500, 2000]

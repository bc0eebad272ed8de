"""Exactly-once effect of the daemon under ``kill -9``, against the real broker and RocksDB.

The daemon runs as a subprocess (``python -m services.cli run``). The test
watches the store through a secondary instance and SIGKILLs the daemon at
random points (during start-up and group join, and after a random number of
committed events, a few milliseconds into the next batch), restarting it each
time, until the stored offsets reach the end of the topic; then it stops the
last run with SIGTERM.

- One partition: the final user and item vectors, counts and ids must be
  bit-identical to an uninterrupted run of the daemon over the same messages
  (read from a file with the same decoder) with the same seed.
- Three partitions: the interleaving cannot be repeated, so every user's and
  item's count of applied events must equal the input's exactly.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer

from i2v_stream.store import StoreError, StoreView

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[1]

#: Flags that keep restarts quick: small batches so kills land mid-stream, and
#: short group timeouts (the broker holds a join for the rebalance timeout).
FAST_FLAGS = [
    "--metrics-port", "off", "--seed", "7", "--dim", "16", "--negatives", "3",
    "--max-batch-events", "100", "--max-batch-seconds", "0.05",
    "--max-poll-interval-ms", "2000", "--session-timeout-ms", "2000",
    "--heartbeat-interval-ms", "400", "--request-timeout-ms", "10000",
    "--lag-interval-seconds", "2",
]


def make_messages(n_events: int, seed: int, bad_every: int = 97) -> list[bytes]:
    """JSON events with skewed users and items, a bad message every ``bad_every``."""
    rng = random.Random(seed)
    bad = [b"not json", b'{"user": "", "item": "i1"}', b'{"user": "u1"}',
           b'{"user": "u1", "item": "i2", "ts": NaN}', b"[]"]
    messages = []
    for k in range(n_events):
        if k % bad_every == bad_every - 1:
            messages.append(bad[k % len(bad)])
        user = f"u{min(int(rng.paretovariate(1.2)), 400)}-{rng.randrange(3)}"
        item = f"i{min(int(rng.paretovariate(1.0)), 300)}"
        messages.append(json.dumps({"user": user, "item": item, "ts": 1_600_000_000 + k})
                        .encode())
    return messages


def valid_events(messages: list[bytes]) -> list[tuple[str, str]]:
    events = []
    for value in messages:
        try:
            obj = json.loads(value)
        except ValueError:
            continue
        if (isinstance(obj, dict) and obj.get("user") and obj.get("item")
                and isinstance(obj.get("ts"), int)):
            events.append((obj["user"], obj["item"]))
    return events


def produce(bootstrap: str, topic: str, messages: list[bytes], partitions: int = 1
            ) -> dict[int, int]:
    """Produce in order (keyed by user when several partitions); next offset per partition."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    futures = []
    for k, value in enumerate(messages):
        partition = partition_of(value, k) % partitions
        futures.append(producer.send(topic, value=value, partition=partition))
    producer.flush(60)
    ends: dict[int, int] = {}
    for future in futures:
        meta = future.get(timeout=30)
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    producer.close()
    return ends


def partition_of(value: bytes, k: int) -> int:
    """A user's events share a partition (as with keyed messages); bad ones spread."""
    try:
        return sum(json.loads(value)["user"].encode())
    except (ValueError, KeyError, TypeError):
        return k


def daemon_command(store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", "--log-level", "INFO", "run",
            "--store", str(store), *FAST_FLAGS, *extra]


def spawn(command: list[str], log: Path) -> subprocess.Popen:
    handle = open(log, "ab")  # noqa: SIM115 - closed with the process by the caller
    return subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


class StoreWatcher:
    """Follows a store another process writes, through a secondary instance."""

    def __init__(self, path: Path):
        self.path = path
        self.view: StoreView | None = None

    def offsets(self) -> dict[tuple[str, int], int]:
        if self.view is None:
            try:
                self.view = StoreView.open_secondary(self.path)
            except StoreError:
                return {}
        try:
            self.view.catch_up()
        except StoreError:
            return {}
        return self.view.offsets()

    def close(self) -> None:
        if self.view is not None:
            self.view.close()
            self.view = None


def offsets_of(watcher: StoreWatcher, topic: str, partitions: int) -> list[int]:
    stored = watcher.offsets()
    return [stored.get((topic, p), 0) for p in range(partitions)]


def run_with_kills(bootstrap: str, topic: str, store: Path, ends: dict[int, int],
                   n_kills: int, tmp_path: Path, seed: int) -> tuple[int, list[str]]:
    """Kill -9 the daemon ``n_kills`` times at random points, then let it finish.

    Returns the number of kills and a description of each run (for failures).
    """
    rng = random.Random(seed)
    partitions = len(ends)
    total = sum(ends.values())
    watcher = StoreWatcher(store)
    log = tmp_path / "daemon.log"
    command = daemon_command(store, "--bootstrap-servers", bootstrap, "--topic", topic,
                             "--group-id", f"g-{topic}")
    kills, runs = 0, []
    try:
        for _ in range(n_kills * 3 + 5):
            done = offsets_of(watcher, topic, partitions)
            if sum(done) >= total:
                break
            process = spawn(command, log)
            start = time.monotonic()
            if kills < n_kills:
                if rng.random() < 0.2:
                    # during start-up or the group join
                    time.sleep(rng.uniform(0.1, 1.0))
                    mode = "startup"
                else:
                    step = rng.randint(1, max(2, total // (2 * n_kills)))
                    target = min(total - 1, sum(done) + step)
                    while (sum(offsets_of(watcher, topic, partitions)) < target
                           and process.poll() is None and time.monotonic() - start < 60):
                        time.sleep(0.005)
                    time.sleep(rng.uniform(0.0, 0.02))
                    mode = f"after>={target}"
                if process.poll() is None:
                    process.send_signal(signal.SIGKILL)
                    kills += 1
                process.wait(timeout=30)
                runs.append(f"{mode} rc={process.returncode} "
                            f"offsets={offsets_of(watcher, topic, partitions)}")
                continue
            # the last run: let it reach the end, then stop it cleanly
            while (sum(offsets_of(watcher, topic, partitions)) < total
                   and process.poll() is None and time.monotonic() - start < 120):
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, log.read_text()[-3000:]
            runs.append(f"final offsets={offsets_of(watcher, topic, partitions)}")
    finally:
        watcher.close()
    stored = StoreView.open_read_only(store)
    try:
        final = [stored.offsets().get((topic, p), 0) for p in range(partitions)]
    finally:
        stored.close()
    assert final == [ends[p] for p in range(partitions)], (runs, log.read_text()[-3000:])
    return kills, runs


def load_state(path: Path):
    view = StoreView.open_read_only(path)
    try:
        return view.load_state()
    finally:
        view.close()


def assert_bit_identical(a, b) -> None:
    assert a.user_ids == b.user_ids
    assert a.item_ids == b.item_ids
    assert a.events_seen == b.events_seen
    for name in ("user_vectors", "item_vectors", "user_counts", "item_counts", "noise_counts",
                 "recent_items"):
        left, right = getattr(a, name), getattr(b, name)
        assert left.dtype == right.dtype and left.shape == right.shape, name
        assert left.tobytes() == right.tobytes(), f"{name} differs"


def _one_partition(kafka_bootstrap, topic, tmp_path, n_events, n_kills, seed):
    messages = make_messages(n_events, seed)
    name = topic(1)
    ends = produce(kafka_bootstrap, name, messages)
    assert ends == {0: len(messages)}

    kills, runs = run_with_kills(kafka_bootstrap, name, tmp_path / "killed", ends, n_kills,
                                 tmp_path, seed)
    assert kills >= n_kills, runs

    # the uninterrupted reference: same messages, same decoder, same seed
    lines = tmp_path / "events.jsonl"
    lines.write_bytes(b"\n".join(messages) + b"\n")
    reference = subprocess.run(daemon_command(tmp_path / "reference", "--input", str(lines)),
                               cwd=REPO, capture_output=True, timeout=120)
    assert reference.returncode == 0, reference.stderr.decode()[-3000:]

    killed, uninterrupted = load_state(tmp_path / "killed"), load_state(tmp_path / "reference")
    assert killed.events_seen == len(valid_events(messages))
    assert_bit_identical(killed, uninterrupted)


def test_kill9_one_partition_matches_uninterrupted_run_bit_for_bit(
        kafka_bootstrap, topic, tmp_path):
    _one_partition(kafka_bootstrap, topic, tmp_path, n_events=20_000, n_kills=10, seed=11)


@pytest.mark.slow
def test_kill9_one_partition_many_kills(kafka_bootstrap, topic, tmp_path):
    _one_partition(kafka_bootstrap, topic, tmp_path, n_events=60_000, n_kills=30, seed=12)


def _three_partitions(kafka_bootstrap, topic, tmp_path, n_events, n_kills, seed):
    messages = make_messages(n_events, seed)
    name = topic(3)
    ends = produce(kafka_bootstrap, name, messages, partitions=3)
    assert len(ends) == 3

    kills, runs = run_with_kills(kafka_bootstrap, name, tmp_path / "store", ends, n_kills,
                                 tmp_path, seed)
    assert kills >= n_kills, runs

    events = valid_events(messages)
    state = load_state(tmp_path / "store")
    assert state.events_seen == len(events)
    user_counts = dict(zip(state.user_ids, state.user_counts.tolist()))
    item_counts = dict(zip(state.item_ids, state.item_counts.tolist()))
    assert user_counts == dict(collections.Counter(u for u, _ in events))
    assert item_counts == dict(collections.Counter(i for _, i in events))
    assert np.isfinite(state.user_vectors).all() and np.isfinite(state.item_vectors).all()


def test_kill9_three_partitions_applies_every_event_exactly_once(
        kafka_bootstrap, topic, tmp_path):
    _three_partitions(kafka_bootstrap, topic, tmp_path, n_events=6_000, n_kills=3, seed=21)


@pytest.mark.slow
def test_kill9_three_partitions_many_kills(kafka_bootstrap, topic, tmp_path):
    _three_partitions(kafka_bootstrap, topic, tmp_path, n_events=30_000, n_kills=12, seed=22)

"""Daemon throughput: events/s from the local broker into the RocksDB store.

Measured in one run, against the embedded Tansu broker:

- ``raw consume``: a bare kafka-python consumer reading the one-event-per-message
  topic (no group, no decoding): the ceiling kafka-python sets on this machine;
- ``daemon, 1 event/msg``: the daemon's pipeline (KafkaSource in a consumer
  group -> decode -> ``learn_many`` -> one WriteBatch per micro-batch -> Kafka
  commit), in process, same topic;
- ``daemon, 100 events/msg``: the same with each message a JSON array of 100
  events;
- the parts on their own, over the same events: decoding, ``learn_many``,
  and store commits.

Each figure is the median of ``--repeats`` runs (default 3). The pipeline's
clock starts after its first batch, so the group join is not counted.

kafka-python checks the CRC-32C of every record batch. With the ``crc32c`` C
extension installed (a dependency of the project) that check is cheap; without
it kafka-python falls back to a pure-Python CRC, which dominates its consume
rate. ``--crc both`` (the default) measures the end-to-end figures both ways in
the same run, switching kafka-python's CRC function in process.

Usage::

    .venv/bin/python benchmarks/bench_daemon.py [--events 400000] [--dim 100] [--crc both]
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import kafka.record.default_records as kafka_records
import kafka.record.util as kafka_record_util
from kafka import KafkaProducer
from kafka.record._crc32c import crc as python_crc32c

from i2v_stream.broker import EmbeddedBroker
from i2v_stream.model import Interact2Vec
from i2v_stream.pipeline import Pipeline
from i2v_stream.source.decode import Decoder
from i2v_stream.source.kafka import KafkaSource, measure_raw_consume
from i2v_stream.store import Store

GROUP_CONFIG = {"max_poll_interval_ms": 2000, "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 500}


def make_events(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"user": f"u{rng.randrange(5000)}",
             "item": f"i{min(int(rng.paretovariate(0.8)), 20000)}",
             "ts": 1_600_000_000 + k} for k in range(n)]


def produce(bootstrap: str, topic: str, values: list[bytes]) -> float:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 18,
                             acks=1)
    started = time.perf_counter()
    for value in values:
        producer.send(topic, value=value)
    producer.flush(120)
    seconds = time.perf_counter() - started
    producer.close()
    return len(values) / seconds


def run_pipeline(bootstrap: str, topic: str, n_events: int, dim: int, batch: int) -> dict:
    """One end-to-end run into a fresh store; events/s after the first batch."""
    with tempfile.TemporaryDirectory(prefix="i2v-bench-") as tmp:
        store = Store.open(Path(tmp) / "store")
        pipeline = Pipeline(Interact2Vec(dim=dim, seed=1), store, max_batch_events=batch,
                            max_batch_seconds=0.2)
        group = f"bench-{topic}-{time.monotonic_ns()}"
        source = KafkaSource(bootstrap, [topic], group, pipeline.stored_offsets,
                             on_revoke=pipeline.on_revoke, on_lost=pipeline.on_lost,
                             consumer_config=GROUP_CONFIG)
        try:
            while pipeline.stats.events_consumed == 0:
                pipeline.step(source)
            first_events = pipeline.stats.events_consumed
            started = time.perf_counter()
            deadline = started + 300
            while pipeline.stats.events_consumed < n_events and time.perf_counter() < deadline:
                pipeline.step(source)
            seconds = time.perf_counter() - started
        finally:
            source.close()
            store.close()
        return {"rate": (pipeline.stats.events_consumed - first_events) / seconds,
                "commits": pipeline.stats.commits}


def part_rates(values: list[bytes], dim: int, batch: int) -> dict:
    """Decode, learn_many and store commit alone, over the same events and batches."""
    decoder = Decoder()
    started = time.perf_counter()
    users, items, timestamps = [], [], []
    for value in values:
        decoder.decode_into(value, users, items, timestamps)
    decode_s = time.perf_counter() - started

    model = Interact2Vec(dim=dim, seed=1)
    learn_s = commit_s = 0.0
    with tempfile.TemporaryDirectory(prefix="i2v-bench-") as tmp:
        store = Store.open(Path(tmp) / "store")
        for start in range(0, len(users), batch):
            stop = start + batch
            t0 = time.perf_counter()
            model.learn_many(users[start:stop], items[start:stop], timestamps[start:stop])
            t1 = time.perf_counter()
            store.commit(model, {("bench", 0): stop})
            commit_s += time.perf_counter() - t1
            learn_s += t1 - t0
        store.close()
    n = len(users)
    return {"decode": n / decode_s, "learn_many": n / learn_s, "commit": n / commit_s}


def median(values: list[float]) -> float:
    return statistics.median(values)


#: kafka-python's record-batch CRC function: as installed (the C extension when
#: ``crc32c`` is importable) or its pure-Python fallback.
CRC_FUNCTIONS = {
    "c": kafka_records.calc_crc32c,
    "python": functools.partial(kafka_record_util.calc_crc32c, _crc32c=python_crc32c),
}


def use_crc(kind: str) -> None:
    if kind == "c" and kafka_record_util.crc32c_c is None:
        raise SystemExit("--crc c needs the crc32c package (pip install crc32c)")
    kafka_records.calc_crc32c = CRC_FUNCTIONS[kind]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--batch", type=int, nargs="+", default=[50_000, 5_000],
                        help="max events per micro-batch (one row of figures each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["single", "batched"], default=None,
                        help="run only one end-to-end figure (for profiling)")
    parser.add_argument("--crc", choices=["both", "c", "python"], default="both",
                        help="kafka-python's CRC: the C extension, its pure-Python "
                             "fallback, or both in turn (default)")
    args = parser.parse_args(argv)
    crcs = ["c", "python"] if args.crc == "both" else [args.crc]
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)

    events = make_events(args.events)
    single = [json.dumps(e).encode() for e in events]
    batched = [json.dumps(events[k:k + 100]).encode() for k in range(0, len(events), 100)]
    with EmbeddedBroker() as broker:
        broker.create_topic("single", 1)
        broker.create_topic("batched", 1)
        produce_rate = produce(broker.bootstrap, "single", single)
        produce(broker.bootstrap, "batched", batched)
        print(f"events={args.events} dim={args.dim} max_batch_events={args.batch} "
              f"repeats={args.repeats}; produce {produce_rate:,.0f} msg/s", flush=True)

        if args.only is not None:
            use_crc(crcs[0])
            topic = args.only
            batch = args.batch[0] if topic == "single" else max(1, args.batch[0] // 100)
            rate = run_pipeline(broker.bootstrap, topic, args.events, args.dim, batch)
            print(f"daemon {topic}: {rate['rate']:,.0f} events/s")
            return 0

        raw = {crc: [] for crc in crcs}
        e2e = {(crc, b): [] for crc in crcs for b in args.batch}
        e2e_batched = {(crc, b): [] for crc in crcs for b in args.batch}
        for _ in range(args.repeats):
            for crc in crcs:
                use_crc(crc)
                count, seconds = measure_raw_consume(broker.bootstrap, "single", len(single))
                raw[crc].append(count / seconds)
                for b in args.batch:
                    e2e[crc, b].append(run_pipeline(broker.bootstrap, "single", args.events,
                                                    args.dim, b)["rate"])
                    # the source bounds a poll by messages: ask for as many events as above
                    e2e_batched[crc, b].append(run_pipeline(
                        broker.bootstrap, "batched", args.events, args.dim,
                        max(1, b // 100))["rate"])
        use_crc(crcs[0])
        parts = {b: [part_rates(single, args.dim, b) for _ in range(args.repeats)]
                 for b in args.batch}

    for crc in crcs:
        raw_rate = median(raw[crc])
        label = {"c": "C extension", "python": "pure Python"}[crc]
        print(f"\nkafka-python CRC: {label}")
        print(f"{'what':48s} {'median':>12s} {'vs raw':>7s}")
        print(f"{'raw kafka-python consume (msg/s)':48s} {raw_rate:12,.0f} {'100%':>7s}")
        for b in args.batch:
            rows = [
                (f"daemon, 1 event/msg, batch {b} (events/s)", median(e2e[crc, b])),
                (f"daemon, 100 events/msg, batch {b} (events/s)", median(e2e_batched[crc, b])),
            ]
            for name, value in rows:
                print(f"{name:48s} {value:12,.0f} {value / raw_rate:7.0%}")
        print("runs: raw=" + ",".join(f"{r:,.0f}" for r in raw[crc]))
        for b in args.batch:
            print(f"runs batch {b}: single=" + ",".join(f"{r:,.0f}" for r in e2e[crc, b])
                  + " batched=" + ",".join(f"{r:,.0f}" for r in e2e_batched[crc, b]))
    print("\nthe parts alone (no Kafka)")
    for b in args.batch:
        for part in ("decode", "learn_many", "commit"):
            value = median([p[part] for p in parts[b]])
            print(f"{f'  {part} alone, batch {b} (events/s)':48s} {value:12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

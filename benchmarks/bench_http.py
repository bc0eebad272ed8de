"""Throughput and latency of ``GET /v1/users/{id}/recommendations`` while the daemon ingests.

Starts what ``make demo`` starts (embedded broker, ``i2v-stream run``,
``i2v-stream serve``; see :mod:`services.demo`), all on loopback:

1. produce ``--preload`` events of a generated stream (``--users`` users,
   ``--items`` items, planted tastes, Zipf-like popularity) as fast as the
   producer goes, and wait until the daemon has applied them and the query
   service is ready;
2. keep producing at ``--ingest-rate`` events/s, so the daemon commits and
   the query service catches up during the measurement;
3. for each concurrency level (default 1, 4, 16), run that many client
   workers, each sending one request at a time (closed loop) for
   ``--seconds`` or until ``--requests`` requests in all, for random users
   of the preloaded stream (``n=10``, seen items excluded);
4. print one row per level: requests/s, p50/p99/max latency, non-200 answers,
   and the events the daemon applied during that level.

The load generator is ``asyncio`` with one ``httpx.AsyncClient`` (keep-alive,
one connection per worker) in this process; on a small machine it competes for
the CPUs with the service and the daemon, so the figures are a lower bound
of what the service alone does. Only loopback addresses are used.

Run::

    .venv/bin/python benchmarks/bench_http.py
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from i2v_stream.broker import EmbeddedBroker, free_port
from services.demo import (
    DEMO_MODEL_FLAGS, FAST_GROUP_FLAGS, GROUP_ID, LOOPBACK, TOPIC, Child, Producer, Stream,
    cli_command, metric_value,
)

logger = logging.getLogger(__name__)


def make_stream(n_users: int, n_items: int, seed: int) -> Stream:
    from i2v_stream.synthetic import make_interactions

    data = make_interactions(n_users=n_users, n_items=n_items, n_groups=20,
                             events_per_user=40.0, zipf_exponent=1.0, string_ids=True,
                             seed=seed)
    events = data.interactions
    return Stream(events.users.tolist(), events.items.tolist(), events.timestamps.tolist(),
                  repeat=True)


def applied_events(client: httpx.Client, url: str) -> float:
    try:
        return metric_value(client.get(url, timeout=2.0).text,
                            "i2v_events_applied_total") or 0.0
    except httpx.HTTPError:
        return 0.0


async def load(api: str, users: list, concurrency: int, seconds: float, max_requests: int,
               seed: int) -> tuple[list[float], int, float]:
    """Closed-loop load: latencies (s) of 200 answers, count of others, elapsed (s)."""
    latencies: list[float] = []
    failures = 0
    sent = 0
    deadline = time.perf_counter() + seconds
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures, sent
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            user = users[rng.randrange(len(users))]
            t0 = time.perf_counter()
            try:
                response = await client.get(f"{api}/v1/users/{user}/recommendations",
                                            params={"n": 10})
            except httpx.HTTPError:
                failures += 1
                continue
            if response.status_code == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                failures += 1

    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, failures, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=10.0, help="per level (default 10)")
    parser.add_argument("--requests", type=int, default=50_000,
                        help="at most this many requests per level (default 50,000)")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--preload", type=int, default=200_000,
                        help="events applied before measuring (default 200,000)")
    parser.add_argument("--ingest-rate", type=float, default=1000.0,
                        help="events/s produced while measuring (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name in ("kafka", "httpx", "i2v_stream.broker", "services.demo"):
        logging.getLogger(name).setLevel(logging.WARNING)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="i2v-bench-http-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if (workdir / "store").exists():
        shutil.rmtree(workdir / "store")
    stream = make_stream(args.users, args.items, args.seed)
    users = sorted(set(stream.users[:args.preload]))

    broker = EmbeddedBroker(host=LOOPBACK, log_path=workdir / "broker.log").start()
    children: list[Child] = []
    producers: list[Producer] = []
    rows = []
    try:
        broker.create_topic(TOPIC, partitions=2)
        api_port, metrics_port = free_port(LOOPBACK), free_port(LOOPBACK)
        cli = cli_command()
        children.append(Child("daemon", [
            *cli, "run", "--bootstrap-servers", broker.bootstrap, "--topic", TOPIC,
            "--group-id", GROUP_ID, "--store", str(workdir / "store"),
            "--metrics-host", LOOPBACK, "--metrics-port", str(metrics_port),
            "--seed", str(args.seed), "--dim", str(args.dim), *DEMO_MODEL_FLAGS,
            "--max-batch-seconds", "0.2", *FAST_GROUP_FLAGS,
        ], workdir / "daemon.log"))
        children.append(Child("query service", [
            *cli, "serve", "--store", str(workdir / "store"), "--host", LOOPBACK,
            "--port", str(api_port), "--catch-up-interval", "1.0",
        ], workdir / "serve.log"))
        api = f"http://{LOOPBACK}:{api_port}"
        daemon_metrics = f"http://{LOOPBACK}:{metrics_port}/metrics"

        # 1. preload as fast as the producer goes, wait for the daemon and the service
        t0 = time.monotonic()
        preload = Producer(broker.bootstrap, stream, rate=1e9, limit=args.preload)
        producers.append(preload)
        preload.start()
        with httpx.Client() as client:
            while True:
                for child in children:
                    if not child.running:
                        raise RuntimeError(f"{child.name} exited; see {child.log_path}")
                applied = applied_events(client, daemon_metrics)
                ready = False
                try:
                    ready = client.get(f"{api}/readyz", timeout=2.0).status_code == 200
                except httpx.HTTPError:
                    pass
                if applied >= args.preload and ready:
                    break
                if time.monotonic() - t0 > 600:
                    raise RuntimeError(f"preload not applied in 600s (applied={applied:.0f})")
                time.sleep(0.5)
            logger.info("preloaded events=%d in %.1fs", args.preload, time.monotonic() - t0)
            time.sleep(2.0)  # let the reader catch up with the last commits

            # 2. steady ingestion during the measurement (continues past the preload)
            rest = slice(args.preload, None) if args.preload < len(stream) else slice(None)
            rest_stream = Stream(stream.users[rest], stream.items[rest],
                                 stream.timestamps[rest], repeat=True)
            ingest = Producer(broker.bootstrap, rest_stream, rate=args.ingest_rate, limit=0)
            producers.append(ingest)
            ingest.start()

            # 3. one level after another
            for concurrency in args.concurrency:
                before = applied_events(client, daemon_metrics)
                latencies, failures, elapsed = asyncio.run(load(
                    api, users, concurrency, args.seconds, args.requests,
                    args.seed + concurrency))
                during = applied_events(client, daemon_metrics) - before
                lat = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
                rows.append((concurrency, len(latencies), len(latencies) / elapsed,
                             float(np.percentile(lat, 50)), float(np.percentile(lat, 99)),
                             float(lat.max()), failures, during / elapsed))
                logger.info("concurrency=%d done requests=%d", concurrency, len(latencies))
    finally:
        for producer in producers:
            producer.close()
        for child in children:
            child.stop()
        broker.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"GET /v1/users/{{id}}/recommendations?n=10 over loopback: users={args.users:,} "
          f"items={args.items:,} dim={args.dim}, {args.preload:,} events preloaded, "
          f"daemon ingesting at {args.ingest_rate:,.0f} events/s; {args.seconds:.0f}s "
          f"per level")
    print()
    print(f"{'concurrency':>11} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'non-200':>8} {'ingested/s':>11}")
    for concurrency, count, rps, p50, p99, worst, failures, ingested in rows:
        print(f"{concurrency:>11} {count:>9,} {rps:>8,.0f} {p50:>8.2f} {p99:>8.2f} "
              f"{worst:>8.1f} {failures:>8} {ingested:>11,.0f}")
    if rows:
        best = max(rows, key=lambda row: row[2])
        print(f"\nbest: {best[2]:,.0f} req/s at concurrency {best[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

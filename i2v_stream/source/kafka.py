"""Consume interaction events from Kafka with offsets owned by the caller's store.

The daemon keeps the next offset of every partition inside the same RocksDB
write as the state those events produced, so Kafka's committed offsets are
never used to decide where to read from. The protocol this module implements:

1. ``subscribe`` with a rebalance listener; ``enable_auto_commit`` is off.
2. On every assignment, the new partitions are paused, the ``stored_offsets``
   callback is asked for their next offsets, each partition is seeked there
   (or to the beginning / end per ``auto_offset_reset`` when the store has
   none), and the partitions are resumed. If the callback fails, they stay
   paused, the next :meth:`KafkaSource.poll_batch` retries the seek first and
   raises :class:`KafkaSourceError` when it fails again, so no record is ever
   read from an offset the store did not choose.
3. On revoke, records of the revoked partitions gathered by a ``poll_batch``
   still in progress are dropped (they were not applied; whoever owns the
   partition next reads them again from the stored offsets), then the
   ``on_revoke`` callback runs, so the daemon can commit what it applied.
   On a forced eviction, ``on_lost`` runs instead (drop uncommitted work).
4. ``poll_batch`` returns decoded events with the next offset of every
   partition it read, including partitions whose messages were all rejected,
   so skipping bad input also advances the stored offset.
5. After the store write, ``commit_to_kafka`` commits the same offsets to
   Kafka for lag exporters; failures there are logged, never raised.

Bad messages are counted by :class:`~i2v_stream.source.decode.BadInputLog`,
returned in the batch, and, when a dead-letter topic is configured, produced
to it with the original key and value and the reason in a header. Dead-letter
delivery is at least once: a crash between the store write and the producer's
flush can lose one batch's dead letters, and a replay after a crash sends them
again. Call :meth:`KafkaSource.flush_dead_letters` before the store write to
narrow the first window to nothing.

Broker outages: kafka-python reconnects on its own. ``poll_batch`` logs
errors from the client and returns what it has; a rebalance after the outage
runs step 2 again.

Listener callbacks run on kafka-python's network thread while the caller's
thread is blocked inside ``poll``; they should return within the session
timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from i2v_stream.source.decode import (
    BadInputLog,
    BadMessage,
    Decoder,
    PolledBatch,
    Rejection,
    SourceError,
)

__all__ = [
    "BadMessage",
    "KafkaSource",
    "KafkaSourceError",
    "PolledBatch",
    "TopicPartition",
    "measure_raw_consume",
]

logger = logging.getLogger(__name__)

#: Header names on dead-letter records.
HEADER_REASON = "i2v-reason"
HEADER_DETAIL = "i2v-detail"
HEADER_SOURCE = "i2v-source"

StoredOffsets = Callable[[list[TopicPartition]], Mapping[TopicPartition, "int | None"]]
PartitionCallback = Callable[[list[TopicPartition]], None]


class KafkaSourceError(SourceError):
    """The Kafka source cannot continue safely (for example, offsets unknown)."""


class _PartitionBuffer:
    """Events of one partition gathered by a poll_batch in progress."""

    __slots__ = ("users", "items", "timestamps", "next_offset", "n_messages", "bad")

    def __init__(self) -> None:
        self.users: list = []
        self.items: list = []
        self.timestamps: list = []
        self.next_offset: int | None = None
        self.n_messages = 0
        self.bad: list[BadMessage] = []


class _Listener(ConsumerRebalanceListener):
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    def on_partitions_revoked(self, revoked):  # noqa: D102 - kafka-python interface
        self._source._handle_revoked(sorted(revoked), lost=False)

    def on_partitions_assigned(self, assigned):  # noqa: D102
        self._source._handle_assigned(sorted(assigned))

    def on_partitions_lost(self, lost):  # noqa: D102
        self._source._handle_revoked(sorted(lost), lost=True)


class KafkaSource:
    """A consumer-group member whose read positions come from the caller's store.

    Parameters
    ----------
    bootstrap_servers : str or list of str
        Kafka bootstrap address(es).
    topics : list of str
        Topics to subscribe to.
    group_id : str
        Consumer group.
    stored_offsets : callable
        ``stored_offsets(partitions) -> {TopicPartition: next offset or None}``,
        called on every assignment. None (or a missing key) means "no offset
        stored": read from ``auto_offset_reset``.
    on_revoke : callable or None
        ``on_revoke(partitions)``, called when partitions are revoked in a
        rebalance or on close, after this source dropped their unapplied events.
    on_lost : callable or None
        ``on_lost(partitions)``, called instead of ``on_revoke`` when the group
        evicted this member; defaults to ``on_revoke``.
    on_assign : callable or None
        ``on_assign(partitions)``, called after the seek on assignment.
    decoder : Decoder or None
        Message decoder; None builds a default :class:`Decoder`.
    bad_input_log : BadInputLog or None
        Counts and logs rejected messages; None builds one.
    dead_letter_topic : str or None
        When set, rejected messages are produced there.
    auto_offset_reset : {"earliest", "latest"}
        Where to start a partition that has no stored offset.
    consumer_config : dict or None
        Extra ``KafkaConsumer`` settings (for example ``max_poll_interval_ms``,
        ``session_timeout_ms``, security settings). ``enable_auto_commit`` cannot
        be turned on.
    producer_config : dict or None
        Extra ``KafkaProducer`` settings for the dead-letter producer.
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        topics: Iterable[str],
        group_id: str,
        stored_offsets: StoredOffsets,
        on_revoke: PartitionCallback | None = None,
        on_lost: PartitionCallback | None = None,
        on_assign: PartitionCallback | None = None,
        decoder: Decoder | None = None,
        bad_input_log: BadInputLog | None = None,
        dead_letter_topic: str | None = None,
        auto_offset_reset: str = "earliest",
        consumer_config: Mapping[str, Any] | None = None,
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest"):
            raise KafkaSourceError(
                f"auto_offset_reset must be 'earliest' or 'latest', got {auto_offset_reset!r}"
            )
        config = dict(consumer_config or {})
        if config.pop("enable_auto_commit", False):
            raise KafkaSourceError(
                "enable_auto_commit must stay off: read positions come from the store"
            )
        self.topics = list(topics)
        if not self.topics:
            raise KafkaSourceError("topics is empty; name at least one topic to consume")
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.stored_offsets = stored_offsets
        self.on_revoke = on_revoke
        self.on_lost = on_lost
        self.on_assign = on_assign
        self.decoder = decoder if decoder is not None else Decoder()
        self.bad_input_log = bad_input_log if bad_input_log is not None else BadInputLog(logger)
        self.dead_letter_topic = dead_letter_topic
        self.auto_offset_reset = auto_offset_reset
        self._producer_config = dict(producer_config or {})

        config.setdefault("client_id", f"i2v-stream-{group_id}")
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=bootstrap_servers,
                group_id=group_id,
                enable_auto_commit=False,
                auto_offset_reset=auto_offset_reset,
                **config,
            )
        except KafkaError as exc:
            raise KafkaSourceError(
                f"cannot create consumer bootstrap={bootstrap_servers} group={group_id}: {exc}"
            ) from exc
        self._producer: KafkaProducer | None = None
        self._lock = threading.RLock()
        self._in_progress: dict[TopicPartition, _PartitionBuffer] | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._pending_seek: set[TopicPartition] = set()
        self._seek_error: BaseException | None = None
        self._callback_error: BaseException | None = None
        self._poll_errors = 0
        self.rebalances = 0
        self.dead_lettered = 0
        self._closed = False
        self._consumer.subscribe(self.topics, listener=_Listener(self))
        logger.info(
            "kafka source subscribed topics=%s group=%s bootstrap=%s",
            ",".join(self.topics), group_id, bootstrap_servers,
        )

    # -- rebalance handling (runs on kafka-python's network thread) ---------------

    def _handle_assigned(self, partitions: list[TopicPartition]) -> None:
        with self._lock:
            self.rebalances += 1
            self._pending_seek.update(partitions)
            # Paused partitions are not fetched, so nothing is read from them
            # until the seek to the stored offset has succeeded.
            self._consumer.pause(*partitions)
            self._try_seek_pending()
        logger.info(
            "partitions assigned group=%s partitions=%s pending_seek=%d",
            self.group_id, _names(partitions), len(self._pending_seek),
        )
        if self.on_assign is not None and not self._pending_seek:
            self._run_callback(self.on_assign, partitions, "on_assign")

    def _handle_revoked(self, partitions: list[TopicPartition], lost: bool) -> None:
        with self._lock:
            dropped = 0
            if self._in_progress is not None:
                for tp in partitions:
                    buffer = self._in_progress.pop(tp, None)
                    if buffer is not None:
                        dropped += len(buffer.users)
            for tp in partitions:
                self._positions.pop(tp, None)
                self._pending_seek.discard(tp)
        if not partitions:
            return
        logger.info(
            "partitions %s group=%s partitions=%s unapplied_events_dropped=%d",
            "lost" if lost else "revoked", self.group_id, _names(partitions), dropped,
        )
        callback = (self.on_lost or self.on_revoke) if lost else self.on_revoke
        if callback is not None:
            self._run_callback(callback, partitions, "on_lost" if lost else "on_revoke")

    def _run_callback(self, callback: PartitionCallback, partitions, name: str) -> None:
        try:
            callback(partitions)
        except Exception as exc:
            # kafka-python would only log it; keep it so poll_batch raises it.
            logger.exception("%s callback failed partitions=%s", name, _names(partitions))
            self._callback_error = exc

    def _try_seek_pending(self) -> bool:
        """Seek every pending partition to its stored offset; True when none is left."""
        with self._lock:
            pending = sorted(self._pending_seek)
            if not pending:
                return True
            try:
                stored = dict(self.stored_offsets(pending))
            except Exception as exc:
                logger.exception(
                    "stored_offsets failed; partitions stay paused partitions=%s",
                    _names(pending),
                )
                self._seek_error = exc
                return False
            for tp in pending:
                offset = stored.get(tp)
                if offset is None:
                    if self.auto_offset_reset == "earliest":
                        self._consumer.seek_to_beginning(tp)
                    else:
                        self._consumer.seek_to_end(tp)
                    self._positions.pop(tp, None)
                    logger.info(
                        "no stored offset topic=%s partition=%d reset=%s",
                        tp.topic, tp.partition, self.auto_offset_reset,
                    )
                else:
                    self._consumer.seek(tp, int(offset))
                    self._positions[tp] = int(offset)
                    logger.info(
                        "seek to stored offset topic=%s partition=%d offset=%d",
                        tp.topic, tp.partition, offset,
                    )
            self._consumer.resume(*pending)
            self._pending_seek.clear()
            self._seek_error = None
            return True

    # -- consuming ----------------------------------------------------------------

    def poll_batch(self, max_events: int = 10_000, max_latency_s: float = 0.5) -> PolledBatch:
        """Read up to ``max_events`` events, waiting at most ``max_latency_s``.

        Parameters
        ----------
        max_events : int
            Stop once this many events are decoded. A JSON-array message is never
            split, so a batch can exceed it by one message's events.
        max_latency_s : float
            Seconds to wait for the batch to fill; an empty batch comes back
            after this long when nothing arrives.

        Returns
        -------
        PolledBatch
            Events, next offsets per partition and rejected messages.

        Raises
        ------
        KafkaSourceError
            When a rebalance callback failed, or partitions cannot be positioned
            at their stored offsets. The source is still usable: the next call
            retries the seek.
        """
        if self._closed:
            raise KafkaSourceError("poll_batch on a closed KafkaSource")
        self._raise_pending_errors()
        deadline = time.monotonic() + max_latency_s
        buffers: dict[TopicPartition, _PartitionBuffer] = {}
        with self._lock:
            self._in_progress = buffers
        n_events = 0
        try:
            while n_events < max_events:
                remaining_ms = int((deadline - time.monotonic()) * 1000)
                if remaining_ms <= 0:
                    break
                records = self._poll(remaining_ms, max(1, max_events - n_events))
                if self._callback_error is not None or self._seek_error is not None:
                    break
                if records:
                    n_events += self._decode_records(records, buffers)
        finally:
            with self._lock:
                self._in_progress = None
        self._raise_pending_errors()
        return self._assemble(buffers)

    def _poll(self, timeout_ms: int, max_records: int) -> dict:
        try:
            records = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            if self._callback_error is not None or self._seek_error is not None:
                return {}
            self._poll_errors += 1
            log = logger.warning if self._poll_errors <= 3 else logger.debug
            log(
                "poll failed; kafka-python will reconnect group=%s errors=%d error=%r",
                self.group_id, self._poll_errors, exc,
            )
            time.sleep(min(0.5, timeout_ms / 1000))
            return {}
        if self._poll_errors:
            logger.info("poll recovered group=%s after errors=%d", self.group_id,
                        self._poll_errors)
            self._poll_errors = 0
        return records

    def _raise_pending_errors(self) -> None:
        error = self._callback_error
        if error is not None:
            self._callback_error = None
            raise KafkaSourceError(f"rebalance callback failed: {error!r}") from error
        if self._pending_seek and not self._try_seek_pending():
            error = self._seek_error
            raise KafkaSourceError(
                f"cannot seek partitions={_names(sorted(self._pending_seek))} to their "
                f"stored offsets: {error!r}; they stay paused until stored_offsets succeeds"
            ) from error

    def _decode_records(self, records: dict, buffers: dict) -> int:
        n_events = 0
        decode_into = self.decoder.decode_into
        with self._lock:
            for tp, messages in records.items():
                if tp in self._pending_seek or not messages:
                    # Read before a seek that then failed: never hand these out.
                    continue
                buffer = buffers.get(tp)
                if buffer is None:
                    buffer = buffers[tp] = _PartitionBuffer()
                users, items, timestamps = buffer.users, buffer.items, buffer.timestamps
                before = len(users)
                for message in messages:
                    rejection = decode_into(message.value, users, items, timestamps)
                    if rejection is not None:
                        self._reject(tp, message, rejection, buffer)
                buffer.next_offset = messages[-1].offset + 1
                buffer.n_messages += len(messages)
                n_events += len(users) - before
        return n_events

    def _reject(self, tp: TopicPartition, message, rejection: Rejection, buffer) -> None:
        bad = BadMessage(
            tp.topic, tp.partition, message.offset, rejection, message.key, message.value
        )
        buffer.bad.append(bad)
        self.bad_input_log.record(
            rejection, message.value,
            f"topic={tp.topic} partition={tp.partition} offset={message.offset}",
        )
        if self.dead_letter_topic is not None:
            self._dead_letter(bad)

    def _assemble(self, buffers: dict[TopicPartition, _PartitionBuffer]) -> PolledBatch:
        batch = PolledBatch()
        with self._lock:
            for tp, buffer in buffers.items():
                if buffer.next_offset is not None:
                    self._positions[tp] = buffer.next_offset
        for tp, buffer in buffers.items():
            if buffer.next_offset is None:
                continue
            batch.users.extend(buffer.users)
            batch.items.extend(buffer.items)
            batch.timestamps.extend(buffer.timestamps)
            batch.partitions.extend([tp] * len(buffer.users))
            batch.next_offsets[tp] = buffer.next_offset
            batch.bad.extend(buffer.bad)
            batch.n_messages += buffer.n_messages
        if batch.n_messages:
            logger.debug(
                "batch messages=%d events=%d bad=%d partitions=%d",
                batch.n_messages, batch.n_events, len(batch.bad), len(batch.next_offsets),
            )
        return batch

    # -- dead letters -------------------------------------------------------------

    def _dead_letter(self, bad: BadMessage) -> None:
        try:
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap_servers, **self._producer_config
                )
            headers = [
                (HEADER_REASON, bad.reason.encode()),
                (HEADER_DETAIL, bad.rejection.detail[:500].encode("utf-8", "replace")),
                (HEADER_SOURCE, f"{bad.topic}:{bad.partition}:{bad.offset}".encode()),
            ]
            self._producer.send(
                self.dead_letter_topic, value=bad.value, key=bad.key, headers=headers
            )
            self.dead_lettered += 1
        except KafkaError as exc:
            logger.warning(
                "dead-letter produce failed topic=%s source=%s:%d:%d error=%r",
                self.dead_letter_topic, bad.topic, bad.partition, bad.offset, exc,
            )

    def flush_dead_letters(self, timeout_s: float = 10.0) -> None:
        """Wait until dead letters sent so far are acknowledged (errors logged)."""
        if self._producer is None:
            return
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            logger.warning(
                "dead-letter flush failed topic=%s error=%r", self.dead_letter_topic, exc
            )

    # -- offsets, lag -------------------------------------------------------------

    def commit_to_kafka(
        self, offsets: Mapping[TopicPartition, int], sync: bool = False
    ) -> bool:
        """Commit next offsets to Kafka so that lag exporters see progress.

        Read positions never come from these commits. Partitions no longer
        assigned are left out. Errors are logged, not raised.

        Parameters
        ----------
        offsets : mapping of TopicPartition to int
            Next offset per partition, as stored.
        sync : bool
            Wait for the broker's answer.

        Returns
        -------
        bool
            False when a synchronous commit failed or the request could not be sent.
        """
        assigned = self._consumer.assignment()
        to_commit = {
            tp: OffsetAndMetadata(int(offset), "", -1)
            for tp, offset in offsets.items() if tp in assigned
        }
        if not to_commit:
            return True
        try:
            if sync:
                self._consumer.commit(to_commit)
            else:
                self._consumer.commit_async(to_commit, callback=self._on_commit_done)
        except KafkaError as exc:
            logger.warning("kafka commit failed group=%s error=%r", self.group_id, exc)
            return False
        return True

    def _on_commit_done(self, offsets, response) -> None:
        if isinstance(response, Exception):
            logger.debug("kafka commit failed group=%s error=%r", self.group_id, response)

    def assignment(self) -> set[TopicPartition]:
        """Partitions currently assigned to this member."""
        return set(self._consumer.assignment())

    def positions(self) -> dict[TopicPartition, int]:
        """Next offset per assigned partition, as handed out by ``poll_batch``."""
        with self._lock:
            return dict(self._positions)

    def lag(self, timeout_s: float = 5.0) -> dict[TopicPartition, int]:
        """Events behind the end of each assigned partition.

        Computed as end offset minus the position ``poll_batch`` handed out
        (clamped at zero: some brokers report a high watermark behind the last
        record when producers batch). A partition not read yet counts from its
        beginning offset. Returns ``{}`` when the broker cannot be reached.
        """
        partitions = sorted(self._consumer.assignment())
        if not partitions:
            return {}
        try:
            ends = self._consumer.end_offsets(partitions, timeout_ms=int(timeout_s * 1000))
            positions = self.positions()
            missing = [tp for tp in partitions if tp not in positions]
            if missing:
                starts = self._consumer.beginning_offsets(
                    missing, timeout_ms=int(timeout_s * 1000)
                )
                positions.update(starts)
        except KafkaError as exc:
            logger.warning("lag unavailable group=%s error=%r", self.group_id, exc)
            return {}
        return {tp: max(0, int(ends[tp]) - int(positions[tp])) for tp in partitions if tp in ends}

    # -- lifecycle ----------------------------------------------------------------

    def close(self, timeout_s: float = 10.0) -> None:
        """Leave the group (``on_revoke`` runs for the assigned partitions) and close."""
        if self._closed:
            return
        self._closed = True
        self.flush_dead_letters(timeout_s)
        try:
            self._consumer.close()
        except KafkaError as exc:
            logger.warning("consumer close failed group=%s error=%r", self.group_id, exc)
        if self._producer is not None:
            try:
                self._producer.close(timeout=timeout_s)
            except KafkaError as exc:
                logger.warning("dead-letter producer close failed error=%r", exc)
        logger.info("kafka source closed group=%s", self.group_id)

    def __enter__(self) -> KafkaSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _names(partitions: Iterable[TopicPartition]) -> str:
    """``topic:partition`` list for log lines."""
    return ",".join(f"{tp.topic}:{tp.partition}" for tp in partitions) or "-"


def measure_raw_consume(
    bootstrap_servers: str | list[str],
    topic: str,
    n_messages: int,
    timeout_s: float = 60.0,
    consumer_config: Mapping[str, Any] | None = None,
) -> tuple[int, float]:
    """Time a bare ``KafkaConsumer`` reading a topic from the beginning.

    No group, no decoding: the ceiling kafka-python sets for this machine.

    Parameters
    ----------
    bootstrap_servers : str or list of str
        Kafka bootstrap address(es).
    topic : str
        Topic to read (all partitions, from the earliest offset).
    n_messages : int
        Stop after this many messages.
    timeout_s : float
        Give up after this many seconds.
    consumer_config : dict or None
        Extra ``KafkaConsumer`` settings.

    Returns
    -------
    messages : int
        Messages read (less than ``n_messages`` on timeout).
    seconds : float
        Wall time from the first poll to the last message.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
        **dict(consumer_config or {}),
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            raise KafkaSourceError(f"topic={topic} has no partitions (does it exist?)")
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        count = 0
        start = time.perf_counter()
        last = start
        deadline = start + timeout_s
        while count < n_messages and time.perf_counter() < deadline:
            records = consumer.poll(timeout_ms=200)
            for messages in records.values():
                count += len(messages)
            if records:
                last = time.perf_counter()
        return count, last - start
    finally:
        consumer.close()

"""The training loop of the daemon: source -> model -> store, one micro-batch at a time.

Protocol of one micro-batch (:meth:`Pipeline.step`)
----------------------------------------------------
1. **Poll** a micro-batch from the source, bounded by ``max_batch_events``
   and by ``max_batch_seconds`` of waiting.
2. **Decode and validate** (inside the source): a bad message is counted by
   reason, logged once per reason, dead-lettered when a dead-letter topic is
   configured, and skipped; its offset still advances.
3. **Learn**: ``model.learn_many(users, items, timestamps)`` over the valid
   events, in partition order.
4. **Store commit**: ``store.commit(model, next offsets of every partition in
   the batch)``: changed rows, new ids, counts and offsets in ONE RocksDB
   WriteBatch. A failed write is retried (``commit_retries``); the store keeps
   the rows of a failed write, so the retry writes the same state.
5. **Kafka commit** of the same offsets, only after step 4 and only so that
   lag exporters see progress; read positions never come from it.
6. **Metrics**: events consumed, applied and skipped by reason, loss, batch
   size and duration, commit latency, lag per partition (every
   ``lag_interval_s``), users and items known, time of the last commit.
7. **Snapshot** if the scheduler says one is due (between commits, so the
   checkpoint holds exactly a committed batch).

Where reading starts
--------------------
The source asks :meth:`Pipeline.stored_offsets` on start and on every
partition assignment, and seeks there: the offsets come from the store, in
the same write as the state they produced, so replaying from them after a
crash applies every event exactly once.

Rebalances: no applied work is ever uncommitted at a rebalance point
--------------------------------------------------------------------
Steps 3-5 run on the caller's thread after ``poll_batch`` has returned, and
the next poll starts only after the store commit succeeded. Rebalance
callbacks run while the caller is inside ``poll_batch`` (kafka-python drives
group membership from ``poll``), so when one runs, the model and the store
agree: every applied event is committed, and events read but not yet applied
are dropped by the source itself. Hence:

- **revoke**: nothing to commit; the callback checks and says so at DEBUG.
- **lost** (evicted from the group, e.g. after a broker outage longer than
  the session timeout): nothing to drop from the model either; the source
  drops the unapplied records, and the reassignment seeks to stored offsets.

The callbacks do not rely on this blindly. Apply-and-commit holds a lock and
marks the model "ahead of the store" between steps 3 and 4; a callback that
finds the mark (only possible if a client ran callbacks on another thread
mid-batch) waits for the lock, and then, on revoke, commits the applied work
with its offsets, and on lost, reloads the model from the store (the
in-memory state has moved past the store and is thrown away; the lost
partitions are re-read from the stored offsets when they are assigned again).
The same reload happens when a store commit fails for good: the loop then
raises :class:`PipelineError`, and a restarted daemon resumes from the store.

One writer: the store refuses a second writer (``StoreLockedError``); the
daemon reports it and exits non-zero.

The module imports neither kafka-python nor prometheus-client: the source and
the metrics object are injected (anything with ``poll_batch`` and, for Kafka,
``commit_to_kafka``/``lag``; anything with the hooks of
``i2v_stream.metrics.DaemonMetrics``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from i2v_stream.source.decode import SourceError
from i2v_stream.store import StoreError

__all__ = ["BatchResult", "Pipeline", "PipelineError", "PipelineStats"]

logger = logging.getLogger(__name__)


class PipelineError(Exception):
    """The loop cannot continue safely (for example, the store cannot be written)."""


@dataclass
class PipelineStats:
    """Running totals of one pipeline (what the metrics also count).

    Attributes
    ----------
    messages, events_consumed, events_applied : int
    skipped : dict of str to int
        Events in rejected messages, by reason.
    batches, commits : int
        Micro-batches polled with at least one message; store commits.
    reloads : int
        Times the model was reloaded from the store.
    """

    messages: int = 0
    events_consumed: int = 0
    events_applied: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    commits: int = 0
    reloads: int = 0

    @property
    def events_skipped(self) -> int:
        """Events skipped, all reasons together."""
        return sum(self.skipped.values())


@dataclass(frozen=True)
class BatchResult:
    """What one :meth:`Pipeline.step` did."""

    n_messages: int
    n_events: int
    n_bad: int
    loss: float
    seconds: float

    @property
    def empty(self) -> bool:
        """True when the poll returned no message at all."""
        return self.n_messages == 0


class Pipeline:
    """Apply micro-batches from a source to a model and commit them to a store.

    Parameters
    ----------
    model : Interact2Vec
        The in-memory model, loaded from ``store`` (or new when the store is).
    store : Store
        The single writer handle of the store.
    metrics : DaemonMetrics or None
        Hooks fed after each batch; None records nothing.
    snapshots : SnapshotScheduler or None
        Asked after each commit whether a snapshot is due.
    max_batch_events : int
        Events per micro-batch, at most (one JSON-array message is never split).
    max_batch_seconds : float
        Seconds a poll waits for the batch to fill.
    lag_interval_s : float
        Seconds between consumer-lag updates; 0 updates after every batch.
    commit_retries : int
        Retries of a failed store write before giving up.
    retry_backoff_s : float
        Seconds before the first retry; doubled each time.
    """

    def __init__(
        self,
        model: Any,
        store: Any,
        metrics: Any = None,
        snapshots: Any = None,
        max_batch_events: int = 50_000,
        max_batch_seconds: float = 0.5,
        lag_interval_s: float = 5.0,
        commit_retries: int = 3,
        retry_backoff_s: float = 0.2,
    ) -> None:
        self.model = model
        self.store = store
        self.metrics = metrics
        self.snapshots = snapshots
        self.max_batch_events = int(max_batch_events)
        self.max_batch_seconds = float(max_batch_seconds)
        self.lag_interval_s = float(lag_interval_s)
        self.commit_retries = int(commit_retries)
        self.retry_backoff_s = float(retry_backoff_s)
        self.max_source_errors = 50
        self.stats = PipelineStats()
        self._lock = threading.RLock()
        # Offsets of work applied to the model but not yet in the store;
        # None whenever model and store agree (see the module docstring).
        self._uncommitted: dict | None = None
        self._last_lag = -math.inf
        self._dead_lettered = 0
        self._last_progress = time.monotonic()
        self._progress_events = 0
        if metrics is not None:
            metrics.set_known(model.n_users, model.n_items)

    # -- callbacks handed to the source ------------------------------------------

    def stored_offsets(self, partitions: Iterable[Any]) -> dict[Any, int | None]:
        """Next offset of each partition, as stored with the state (None: none stored)."""
        with self._lock:
            stored = self.store.offsets()
        return {tp: stored.get((tp.topic, tp.partition)) for tp in partitions}

    def on_assign(self, partitions: list) -> None:
        """Count the assignment; the source has already seeked to stored offsets."""
        if self.metrics is not None:
            self.metrics.rebalances.inc()

    def on_revoke(self, partitions: list) -> None:
        """Partitions revoked: commit applied work, if any (normally none)."""
        with self._lock:
            if self._uncommitted is None:
                logger.debug("revoke with nothing uncommitted partitions=%d", len(partitions))
                return
            logger.warning("revoke found applied work not yet committed; committing it "
                           "partitions=%d", len(partitions))
            self._commit_store(self._uncommitted)

    def on_lost(self, partitions: list) -> None:
        """Partitions lost: drop uncommitted work by reloading the model (normally none)."""
        with self._lock:
            if self._uncommitted is None:
                logger.debug("lost with nothing uncommitted partitions=%d", len(partitions))
                return
            logger.warning("partitions lost with applied work not yet committed; reloading "
                           "the model from the store partitions=%d", len(partitions))
            self.reload_model()

    def reload_model(self) -> None:
        """Throw the in-memory model away and load the store's committed state."""
        with self._lock:
            if self.store.initialised:
                self.model = self.store.load_model()
            else:
                self.model = type(self.model)(**self.model.get_params())
            self.model.take_dirty()  # the store already holds every loaded row
            self._uncommitted = None
            self.stats.reloads += 1
            logger.info("model reloaded from store events_seen=%d", self.model.events_seen)

    # -- the loop ----------------------------------------------------------------

    def step(self, source: Any) -> BatchResult:
        """Run the protocol of the module docstring once.

        Returns
        -------
        BatchResult

        Raises
        ------
        PipelineError
            When the store write fails after every retry.
        """
        # 1-2. poll a micro-batch; the source decodes, validates and dead-letters
        batch = source.poll_batch(self.max_batch_events, self.max_batch_seconds)
        if batch.n_messages == 0 and not batch.next_offsets:
            self._update_lag(source)       # an idle consumer's lag still moves
            return BatchResult(0, 0, 0, math.nan, 0.0)
        started = time.perf_counter()
        n_events = batch.n_events
        self._count_input(batch)
        offsets = {(tp[0], tp[1]): int(offset) for tp, offset in batch.next_offsets.items()}
        if batch.bad and getattr(source, "dead_letter_topic", None):
            # Dead letters are acknowledged before their offsets become durable.
            source.flush_dead_letters()

        with self._lock:
            # 3. learn
            loss = math.nan
            reloads_before = self.stats.reloads
            self._uncommitted = offsets
            if n_events:
                stats = self.model.learn_many(batch.users, batch.items, batch.timestamps)
                loss = stats.loss

            # 4. one WriteBatch: rows, ids, counts, offsets; skipped when a
            # callback already committed this work (revoke) or dropped it (lost)
            commit = None
            if self._uncommitted is not None:
                commit = self._commit_store(offsets)
            elif self.stats.reloads != reloads_before:
                logger.warning("batch dropped with lost partitions events=%d", n_events)
                return BatchResult(batch.n_messages, 0, len(batch.bad), loss,
                                   time.perf_counter() - started)
            self.stats.events_applied += n_events

        # 5. Kafka commit, for lag exporters only
        commit_to_kafka = getattr(source, "commit_to_kafka", None)
        if commit_to_kafka is not None:
            commit_to_kafka(batch.next_offsets)

        # 6. metrics
        seconds = time.perf_counter() - started
        self._record(source, n_events, seconds, loss, commit)

        # 7. snapshot
        if self.snapshots is not None:
            self._maybe_snapshot()
        return BatchResult(batch.n_messages, n_events, len(batch.bad), loss, seconds)

    def run(
        self,
        source: Any,
        stop: threading.Event | None = None,
        idle_exit_s: float | None = None,
        max_events: int | None = None,
    ) -> PipelineStats:
        """Run :meth:`step` until stopped.

        Parameters
        ----------
        source : object
            ``poll_batch(max_events, max_latency_s) -> PolledBatch``; a file
            source (with ``exhausted``) ends the run at its end.
        stop : threading.Event or None
            Set it (e.g. from a signal handler) to finish the current batch and
            return.
        idle_exit_s : float or None
            Return after this many seconds without any message.
        max_events : int or None
            Return once this many events were consumed (tests, benchmarks).

        Returns
        -------
        PipelineStats
        """
        stop = stop if stop is not None else threading.Event()
        last_message = time.monotonic()
        logger.info("pipeline started max_batch_events=%d max_batch_seconds=%.3f",
                    self.max_batch_events, self.max_batch_seconds)
        source_errors = 0
        while not stop.is_set():
            try:
                result = self.step(source)
            except SourceError as exc:
                # e.g. partitions that cannot be seeked yet: the source retries
                source_errors += 1
                if source_errors > self.max_source_errors:
                    raise PipelineError(
                        f"source failed {source_errors} times in a row: {exc}") from exc
                logger.warning("source error count=%d error=%s", source_errors, exc)
                stop.wait(min(5.0, 0.2 * source_errors))
                continue
            source_errors = 0
            now = time.monotonic()
            if not result.empty:
                last_message = now
            self._log_progress(now)
            if getattr(source, "exhausted", False):
                logger.info("input exhausted events_applied=%d", self.stats.events_applied)
                break
            if max_events is not None and self.stats.events_consumed >= max_events:
                break
            if idle_exit_s is not None and now - last_message >= idle_exit_s:
                logger.info("idle for %.1fs; stopping events_applied=%d", idle_exit_s,
                            self.stats.events_applied)
                break
        logger.info(
            "pipeline stopped messages=%d events_applied=%d events_skipped=%d commits=%d",
            self.stats.messages, self.stats.events_applied, self.stats.events_skipped,
            self.stats.commits,
        )
        return self.stats

    # -- helpers -----------------------------------------------------------------

    def _commit_store(self, offsets: Mapping) -> Any:
        """Write the model and offsets; retry; on final failure reload and raise."""
        delay = self.retry_backoff_s
        for attempt in range(self.commit_retries + 1):
            try:
                result = self.store.commit(self.model, offsets)
            except StoreError as exc:
                if attempt == self.commit_retries:
                    # The model is ahead of the store and cannot be made durable:
                    # throw it away so nothing half-applied survives, and stop.
                    self.reload_model()
                    raise PipelineError(
                        f"store commit failed after {attempt + 1} attempts: {exc}; the "
                        "daemon stops, a restart resumes from the last committed batch"
                    ) from exc
                logger.warning("store commit failed attempt=%d retry_in=%.2fs error=%s",
                               attempt + 1, delay, exc)
                time.sleep(delay)
                delay *= 2
                continue
            self._uncommitted = None
            self.stats.commits += 1
            return result
        raise AssertionError("unreachable")

    def _count_input(self, batch: Any) -> None:
        self.stats.batches += 1
        self.stats.messages += batch.n_messages
        self.stats.events_consumed += batch.n_events
        skipped = self.stats.skipped
        metrics = self.metrics
        for bad in batch.bad:
            n = bad.rejection.n_events
            skipped[bad.reason] = skipped.get(bad.reason, 0) + n
            if metrics is not None:
                metrics.record_skipped(bad.reason, n)
        if metrics is not None:
            metrics.record_consumed(batch.n_messages, batch.n_events)

    def _record(self, source: Any, n_events: int, seconds: float, loss: float,
                commit: Any) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        metrics.record_batch(n_events, seconds, None if math.isnan(loss) else loss)
        if commit is not None:
            metrics.record_commit(commit.duration_seconds)
        metrics.set_known(self.model.n_users, self.model.n_items)
        dead = getattr(source, "dead_lettered", 0)
        if dead > self._dead_lettered:
            metrics.events_dead_lettered.inc(dead - self._dead_lettered)
            self._dead_lettered = dead
        self._update_lag(source)

    def _update_lag(self, source: Any) -> None:
        lag = getattr(source, "lag", None)
        if self.metrics is None or lag is None:
            return
        now = time.monotonic()
        if now - self._last_lag >= self.lag_interval_s:
            self._last_lag = now
            self.metrics.set_lag(lag())

    def _maybe_snapshot(self) -> None:
        try:
            snapshot = self.snapshots.maybe_snapshot(self.store.events_seen)
        except StoreError as exc:
            # A failed snapshot loses nothing: the store itself is intact.
            logger.warning("snapshot failed error=%s", exc)
            return
        if snapshot is not None and self.metrics is not None:
            self.metrics.snapshot_taken(self.snapshots.last_duration_seconds or 0.0)

    def _log_progress(self, now: float, every_s: float = 10.0) -> None:
        if now - self._last_progress < every_s:
            return
        applied = self.stats.events_applied
        rate = (applied - self._progress_events) / (now - self._last_progress)
        logger.info("progress events_applied=%d events_skipped=%d rate=%.0f/s users=%d "
                    "items=%d", applied, self.stats.events_skipped, rate, self.model.n_users,
                    self.model.n_items)
        self._last_progress, self._progress_events = now, applied


def read_positions(store: Any) -> Callable[[Iterable[Any]], dict]:
    """A ``stored_offsets`` callback reading ``store.offsets()`` (for sources built
    before a pipeline exists)."""
    def stored(partitions: Iterable[Any]) -> dict:
        offsets = store.offsets()
        return {tp: offsets.get((tp.topic, tp.partition)) for tp in partitions}

    return stored

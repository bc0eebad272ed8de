"""The training loop: apply-and-commit, rebalance callbacks, bad input against the real broker."""

from __future__ import annotations

import collections
import json
import math
import time
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer
from kafka.structs import TopicPartition

from i2v_stream.broker import create_topic
from i2v_stream.model import Interact2Vec
from i2v_stream.pipeline import Pipeline, PipelineError
from i2v_stream.source.decode import REASONS, BadMessage, Decoder, PolledBatch, Rejection
from i2v_stream.source.file import FileSource
from i2v_stream.store import Store, StoreError

TP = TopicPartition("events", 0)


class ListSource:
    """An in-memory source: a list of (users, items) batches on one partition."""

    def __init__(self, batches, bad_per_batch: int = 0):
        self.batches = list(batches)
        self.offset = 0
        self.bad_per_batch = bad_per_batch

    def poll_batch(self, max_events, max_latency_s):
        if not self.batches:
            return PolledBatch()
        users, items = self.batches.pop(0)
        batch = PolledBatch(users=list(users), items=list(items),
                            timestamps=[math.nan] * len(users))
        batch.partitions = [TP] * len(users)
        for _ in range(self.bad_per_batch):
            batch.bad.append(BadMessage(TP.topic, 0, self.offset, Rejection("decode", "x"),
                                        None, b"?"))
        self.offset += len(users) + self.bad_per_batch
        batch.next_offsets = {TP: self.offset}
        batch.n_messages = len(users) + self.bad_per_batch
        return batch

    @property
    def exhausted(self):
        return not self.batches


def random_events(n, seed=0, n_users=30, n_items=20):
    rng = np.random.default_rng(seed)
    return ([f"u{k}" for k in rng.integers(0, n_users, n)],
            [f"i{k}" for k in rng.integers(0, n_items, n)])


def open_store(path):
    return Store.open(path)


def test_pipeline_result_equals_one_learn_many_call(tmp_path):
    users, items = random_events(3000, seed=1)
    chunks = [(users[a:a + 137], items[a:a + 137]) for a in range(0, 3000, 137)]
    with open_store(tmp_path / "s") as store:
        pipeline = Pipeline(Interact2Vec(dim=8, seed=3), store)
        pipeline.run(ListSource(chunks))
        assert store.offsets() == {("events", 0): 3000}
        stored = store.load_state()
    reference = Interact2Vec(dim=8, seed=3)
    reference.learn_many(users, items)
    assert stored.user_ids == reference.user_ids
    assert stored.user_vectors.tobytes() == reference.state().user_vectors.tobytes()
    assert stored.item_vectors.tobytes() == reference.state().item_vectors.tobytes()
    assert pipeline.stats.events_applied == 3000 and pipeline.stats.commits == len(chunks)


def test_restart_from_the_store_continues_bit_for_bit(tmp_path):
    users, items = random_events(2000, seed=2)
    chunks = [(users[a:a + 250], items[a:a + 250]) for a in range(0, 2000, 250)]
    with open_store(tmp_path / "a") as store:
        Pipeline(Interact2Vec(dim=8, seed=4), store).run(ListSource(chunks[:3]))
    with open_store(tmp_path / "a") as store:
        source = ListSource(chunks[3:])
        source.offset = store.offsets()[("events", 0)]
        Pipeline(store.load_model(), store).run(source)
        resumed = store.load_state()
    with open_store(tmp_path / "b") as store:
        Pipeline(Interact2Vec(dim=8, seed=4), store).run(ListSource(chunks))
        straight = store.load_state()
    assert resumed.user_vectors.tobytes() == straight.user_vectors.tobytes()
    assert resumed.item_vectors.tobytes() == straight.item_vectors.tobytes()


def test_only_bad_messages_still_advance_the_stored_offset(tmp_path):
    with open_store(tmp_path / "s") as store:
        pipeline = Pipeline(Interact2Vec(dim=8), store)
        pipeline.step(ListSource([([], [])], bad_per_batch=3))
        assert store.offsets() == {("events", 0): 3}
        assert pipeline.stats.skipped == {"decode": 3}


class _CallbackModel(Interact2Vec):
    """Runs a callback in the middle of learn_many: the worst moment for a rebalance."""

    hook = None

    def learn_many(self, users, items, timestamps=None):
        stats = super().learn_many(users, items, timestamps)
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return stats


def test_lost_partitions_with_applied_uncommitted_work_reload_the_model(tmp_path):
    with open_store(tmp_path / "s") as store:
        model = _CallbackModel(dim=8, seed=1)
        pipeline = Pipeline(model, store)
        pipeline.step(ListSource([random_events(100, seed=1)]))
        committed = store.load_state()
        model.hook = lambda: pipeline.on_lost([TP])
        source = ListSource([random_events(100, seed=2)])
        source.offset = 100
        result = pipeline.step(source)
        assert result.n_events == 0
        assert store.offsets() == {("events", 0): 100}           # not advanced
        assert pipeline.stats.reloads == 1
        assert pipeline.model is not model
        assert pipeline.model.state().user_vectors.tobytes() == \
            committed.user_vectors.tobytes()
        assert pipeline.model.events_seen == 100


def test_revoked_partitions_with_applied_work_commit_it(tmp_path):
    with open_store(tmp_path / "s") as store:
        model = _CallbackModel(dim=8, seed=1)
        pipeline = Pipeline(model, store)
        model.hook = lambda: pipeline.on_revoke([TP])
        pipeline.step(ListSource([random_events(100, seed=1)]))
        assert store.offsets() == {("events", 0): 100}
        assert store.events_seen == 100
        assert pipeline.stats.commits == 1 and pipeline.stats.events_applied == 100


def test_a_store_that_cannot_be_written_stops_the_loop_and_reloads(tmp_path):
    with open_store(tmp_path / "s") as store:
        pipeline = Pipeline(Interact2Vec(dim=8), store, commit_retries=1, retry_backoff_s=0)
        pipeline.step(ListSource([random_events(50)]))

        def broken(model, offsets=None, full=False):
            raise StoreError("disk full")

        store.commit = broken
        with pytest.raises(PipelineError, match="disk full"):
            pipeline.step(ListSource([random_events(50, seed=3)]))
        assert pipeline.model.events_seen == 50          # back to what is stored


def test_file_source_backfill_stores_the_byte_offset(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user,item,ts\n" + "".join(f"u{k % 7},i{k % 5},{k}\n" for k in range(500))
                    + "bad line with no commas\n")
    with open_store(tmp_path / "s") as store:
        pipeline = Pipeline(Interact2Vec(dim=8), store, max_batch_events=64)
        source = FileSource(path, stored_offsets=pipeline.stored_offsets)
        pipeline.run(source)
        source.close()
        ((topic, _), offset), = store.offsets().items()
        assert topic.startswith("file:") and offset == path.stat().st_size
        assert store.events_seen == 500
        assert pipeline.stats.skipped == {"schema": 1}


# ---------------------------------------------------------------- bad input, real broker

_ids = st.one_of(st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=1,
                         max_size=6),
                 st.integers(-5, 50))
_valid = st.builds(lambda u, i, t: json.dumps({"user": u, "item": i, "ts": t}).encode(),
                   _ids, _ids, st.one_of(st.none(), st.integers(0, 2**40),
                                         st.floats(allow_nan=False, allow_infinity=False)))
_bad = st.one_of(
    st.binary(max_size=40),
    st.just(b'{"user": "a", "item": "b", "ts": NaN}'),
    st.just(b'{"user": "a", "item": "b", "ts": Infinity}'),
    st.just(b'{"user": "", "item": "b"}'),
    st.just(b'{"user": "a", "item": ""}'),
    st.just(b'{"user": "a"}'),
    st.just(b'{"user": [1], "item": "b"}'),
    st.just(b"[1, 2, 3]"),
    st.just(b'"just a string"'),
    st.builds(lambda n: json.dumps({"user": "x" * n, "item": "b"}).encode(),
              st.integers(300, 2000)),
    st.builds(lambda n: b"z" * n, st.integers(5000, 9000)),
    st.text(max_size=30).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@pytest.mark.kafka
@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(messages=st.lists(st.one_of(_valid, _bad), min_size=20, max_size=150))
def test_bad_input_is_counted_and_every_valid_event_applied_once(
        kafka_bootstrap, fast_group_config, tmp_path, messages):
    from i2v_stream.source.kafka import KafkaSource

    topic = f"bad-input-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=1 << 20)
    for k, value in enumerate(messages):
        producer.send(topic, value=value, partition=k % 2)
    producer.flush(30)
    producer.close()

    decoder = Decoder(max_message_bytes=4096)
    expected_users, expected_items, n_rejected, skipped = [], [], 0, collections.Counter()
    for value in messages:
        events, rejection = decoder.decode(value)
        if rejection is not None:
            n_rejected += 1
            skipped[rejection.reason] += rejection.n_events
        for event in events:
            expected_users.append(event.user)
            expected_items.append(event.item)

    store = Store.open(tmp_path / f"store-{uuid.uuid4().hex[:8]}")
    pipeline = Pipeline(Interact2Vec(dim=8), store, max_batch_events=16,
                        max_batch_seconds=0.05)
    source = KafkaSource(kafka_bootstrap, [topic], f"g-{topic}", pipeline.stored_offsets,
                         on_revoke=pipeline.on_revoke, on_lost=pipeline.on_lost,
                         decoder=decoder, consumer_config=fast_group_config)
    try:
        deadline = time.monotonic() + 60
        while pipeline.stats.messages < len(messages) and time.monotonic() < deadline:
            pipeline.step(source)
        for _ in range(3):                       # nothing more arrives
            pipeline.step(source)
        state = store.load_state()
    finally:
        source.close()
        store.close()

    assert pipeline.stats.messages == len(messages)
    assert pipeline.stats.events_applied == len(expected_users)
    assert pipeline.stats.skipped == dict(skipped)
    assert set(pipeline.stats.skipped) <= set(REASONS)
    assert source.bad_input_log.total == n_rejected
    assert dict(zip(state.user_ids, state.user_counts.tolist())) == dict(
        collections.Counter(expected_users))
    assert dict(zip(state.item_ids, state.item_counts.tolist())) == dict(
        collections.Counter(expected_items))

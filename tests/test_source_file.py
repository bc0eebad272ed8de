"""FileSource: replay of CSV / JSON-lines / MovieLens files with resumable offsets."""

from __future__ import annotations

import math

import pytest

from i2v_stream.source.decode import Decoder, Event
from i2v_stream.source.file import (
    FileSource,
    FileSourceError,
    file_partition,
    read_all,
)


def events_of(batch):
    return [Event(u, i, None if math.isnan(t) else t)
            for u, i, t in zip(batch.users, batch.items, batch.timestamps)]


def test_csv_with_header_and_bad_lines(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes(b"user,item,timestamp\n1,10,100\nu2,20\n\n1,x,later\n3,30,300\n")
    with FileSource(path) as source:
        batch = source.poll_batch()
        assert source.exhausted
    assert events_of(batch) == [Event(1, 10, 100.0), Event("u2", 20, None), Event(3, 30, 300.0)]
    assert [(b.reason, b.offset) for b in batch.bad] == [("bad_timestamp", 36)]
    assert batch.next_offsets == {file_partition(path): path.stat().st_size}
    assert batch.partitions == [file_partition(path)] * 3
    assert batch.n_messages == 4


def test_jsonl_and_movielens_formats(tmp_path):
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text('{"user": "a", "item": "b", "ts": 1}\n[{"user": 1, "item": 2}]\n')
    assert events_of(read_all(jsonl, "jsonl")) == [Event("a", "b", 1.0), Event(1, 2, None)]
    udata = tmp_path / "u.data"
    udata.write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    assert events_of(read_all(udata, "movielens")) == [
        Event(196, 242, 881250949.0), Event(186, 302, 891717742.0)
    ]


def test_resume_from_stored_offset_reads_each_line_once(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("".join(f"{i},{i % 7},{i}\n" for i in range(100)))
    seen, offsets = [], {}
    while True:
        source = FileSource(path, stored_offsets=lambda tps: {tp: offsets.get(tp) for tp in tps})
        batch = source.poll_batch(max_events=13)
        source.close()  # a "crash" after every batch
        if not batch.next_offsets:
            break
        seen.extend(batch.users)
        offsets.update(batch.next_offsets)
    assert seen == list(range(100))


def test_overlong_line_is_rejected_and_skipped(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes(b"1,2\n" + b"9" * 5000 + b",1\n3,4\n")
    source = FileSource(path, decoder=Decoder(max_message_bytes=100))
    batch = source.poll_batch()
    assert batch.users == [1, 3]
    assert [b.reason for b in batch.bad] == ["too_large"]
    assert batch.next_offsets[source.partition] == path.stat().st_size


def test_offset_past_end_is_an_error(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("1,2\n")
    with pytest.raises(FileSourceError, match="past the end"):
        FileSource(path, start_offset=100)
    with pytest.raises(FileSourceError, match="cannot open"):
        FileSource(tmp_path / "missing.csv")


def test_iteration_yields_batches_until_exhausted(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("".join(f"{i},1\n" for i in range(25_000)))
    with FileSource(path, header=False) as source:
        sizes = [batch.n_events for batch in source]
    assert sizes == [10_000, 10_000, 5_000]

"""Tests of i2v_stream.data: the MovieLens, CSV and JSON-lines readers."""

from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from i2v_stream.data import (
    DataError,
    Interactions,
    read_csv,
    read_interactions,
    read_jsonl,
    read_movielens,
    resolve_format,
)

ML100K = Path("/work/shared/datasets/ml-100k/u.data")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# MovieLens


@pytest.mark.skipif(not ML100K.exists(), reason="ml-100k not available")
def test_ml100k_reads_every_rating_fast():
    started = time.perf_counter()
    data = read_interactions(ML100K)
    elapsed = time.perf_counter() - started
    assert len(data) == 100_000
    assert len(np.unique(data.users)) == 943
    assert len(np.unique(data.items)) == 1682
    assert data.users.dtype == np.int64 and data.items.dtype == np.int64
    assert data.timestamps.dtype == np.float64
    assert (data.users[0], data.items[0], data.timestamps[0]) == (196, 242, 881250949.0)
    assert data.has_timestamps
    assert elapsed < 2.0


def test_movielens_tab_and_double_colon(tmp_path):
    tab = write(tmp_path / "u.data", "1\t10\t5\t100\n2\t20\t3\t50\n")
    ml1m = write(tmp_path / "ratings.dat", "1::10::5::100\n2::20::3::50\n")
    for path in (tab, ml1m):
        data = read_interactions(path)
        assert data.users.tolist() == [1, 2]
        assert data.items.tolist() == [10, 20]
        assert data.timestamps.tolist() == [100.0, 50.0]


def test_movielens_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path / "u.data", "1\t10\t5\t100\n\n2\t20\t3\n")
    with pytest.raises(DataError, match=r"u\.data: line 3: expected 4 .* found 3"):
        read_movielens(path)


def test_movielens_bad_timestamp_is_reported(tmp_path):
    path = write(tmp_path / "u.data", "1\t10\t5\t100\n2\t20\t3\tsoon\n")
    with pytest.raises(DataError, match=r"line 2: timestamp 'soon'"):
        read_movielens(path)


# ---------------------------------------------------------------------------
# CSV


def test_csv_with_header_any_column_order(tmp_path):
    path = write(tmp_path / "x.csv", "timestamp,item,user,rating\n5,a,u1,3\n7,b,u2,4\n")
    data = read_interactions(path)
    assert data.users.tolist() == ["u1", "u2"]
    assert data.items.tolist() == ["a", "b"]
    assert data.timestamps.tolist() == [5.0, 7.0]
    assert data.users.dtype == object


def test_csv_without_header_and_without_timestamps(tmp_path):
    path = write(tmp_path / "x.csv", "1,10\n2,20\n")
    data = read_csv(path)
    assert data.users.tolist() == [1, 2] and data.users.dtype == np.int64
    assert np.isnan(data.timestamps).all()
    assert not data.has_timestamps


def test_csv_timestamp_optional_per_row(tmp_path):
    path = write(tmp_path / "x.csv", "user,item,timestamp\n1,10,5\n2,20\n3,30,\n")
    data = read_csv(path)
    assert data.timestamps[0] == 5.0
    assert np.isnan(data.timestamps[1:]).all()


def test_csv_movielens_latest_header_and_iso_dates(tmp_path):
    path = write(tmp_path / "r.csv",
                 "userId,movieId,rating,timestamp\n1,2,3.5,2020-01-01T00:00:00\n"
                 "1,3,4,2020-01-01T00:00:10Z\n")
    data = read_csv(path)
    assert data.users.tolist() == [1, 1]
    assert data.timestamps.tolist() == [1577836800.0, 1577836810.0]


def test_csv_named_fields_and_tsv(tmp_path):
    path = write(tmp_path / "x.tsv", "who\twhat\twhen\nann\tbook\t3\n")
    data = read_interactions(path, user_field="who", item_field="what", time_field="when")
    assert (data.users[0], data.items[0], data.timestamps[0]) == ("ann", "book", 3.0)


def test_csv_header_without_item_column_is_explained(tmp_path):
    path = write(tmp_path / "x.csv", "user,thing\n1,2\n")
    with pytest.raises(DataError, match="no item column"):
        read_csv(path, header=True)


def test_csv_quoted_ids_with_commas(tmp_path):
    path = write(tmp_path / "x.csv", 'user,item\n"a,b",x\n')
    assert read_csv(path).users.tolist() == ["a,b"]


def test_csv_crlf_line_endings(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"user,item,ts\r\n1,2,3\r\n4,5,6\r\n")
    data = read_csv(path)
    assert data.users.tolist() == [1, 4] and data.timestamps.tolist() == [3.0, 6.0]


def test_first_bad_line_is_reported_with_count_of_others(tmp_path):
    # A value error (line 3) comes before a structural error (line 4).
    path = write(tmp_path / "x.csv", "user,item,ts\n1,2,3\n,5,6\n7\n8,9,x\n")
    with pytest.raises(DataError) as info:
        read_csv(path)
    message = str(info.value)
    assert "x.csv: line 3: empty user id" in message
    assert "2 more bad lines" in message
    assert "on_error='skip'" in message


def test_skip_mode_counts_and_logs_once_per_reason(tmp_path, caplog):
    path = write(tmp_path / "x.csv", "user,item,ts\n1,2,3\n,5,6\n7\n8,9,x\n10,11,12\n,1,1\n")
    with caplog.at_level(logging.WARNING, logger="i2v_stream.data"):
        data = read_csv(path, on_error="skip")
    assert data.users.tolist() == [1, 10]
    assert data.skipped == 4
    reasons = [r.getMessage() for r in caplog.records]
    assert len(reasons) == 3
    assert any("reason=empty_user count=2 first_line=3" in r for r in reasons)


def test_ids_keep_leading_zeros_as_strings(tmp_path):
    path = write(tmp_path / "x.csv", "007,1\n7,2\n")
    data = read_csv(path)
    assert data.users.dtype == object
    assert data.users.tolist() == ["007", "7"]
    assert data.items.tolist() == [1, 2]


def test_mixed_int_and_text_ids_become_strings(tmp_path):
    path = write(tmp_path / "x.csv", "1,a\nbob,2\n")
    data = read_csv(path)
    assert data.users.tolist() == ["1", "bob"]
    assert data.items.tolist() == ["a", "2"]


def test_nonfinite_timestamp_is_bad(tmp_path):
    path = write(tmp_path / "x.csv", "1,2,inf\n")
    with pytest.raises(DataError, match="not a finite number"):
        read_csv(path)


# ---------------------------------------------------------------------------
# JSON lines


def test_jsonl_default_and_configured_fields(tmp_path):
    lines = [{"user": 1, "item": "x", "ts": 3}, {"user": 2, "item": "y"},
             {"user": 3, "item": "z", "ts": None}]
    path = write(tmp_path / "e.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
    data = read_interactions(path)
    assert data.users.tolist() == [1, 2, 3] and data.users.dtype == np.int64
    assert data.items.tolist() == ["x", "y", "z"]
    assert data.timestamps[0] == 3.0 and np.isnan(data.timestamps[1:]).all()

    other = write(tmp_path / "o.jsonl", json.dumps({"u": "a", "i": 5, "t": 9.5}) + "\n")
    data = read_jsonl(other, user_field="u", item_field="i", time_field="t")
    assert (data.users[0], data.items[0], data.timestamps[0]) == ("a", 5, 9.5)


def test_jsonl_string_digits_and_ints_normalise_alike(tmp_path):
    path = write(tmp_path / "e.jsonl", '{"user": "5", "item": 1}\n{"user": 6, "item": 2}\n')
    assert read_jsonl(path).users.tolist() == [5, 6]


def test_jsonl_unicode_line_separator_inside_a_string(tmp_path):
    path = write(tmp_path / "e.jsonl",
                 '{"user": "a\u2028b", "item": 1}\n{"user": "c", "item": 2}\n')
    data = read_jsonl(path)
    assert data.users.tolist() == ["a\u2028b", "c"]


@pytest.mark.parametrize("line, problem", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"item": 1}', "no user key"),
    ('{"user": 1.5, "item": 1}', "user id must be a string or an integer"),
    ('{"user": true, "item": 1}', "user id must be a string or an integer"),
    ('{"user": 1, "item": 1, "ts": "yesterday"}', "timestamp 'yesterday'"),
    ('{"user": " ", "item": 1}', "empty user id"),
])
def test_jsonl_bad_lines(tmp_path, line, problem):
    path = write(tmp_path / "e.jsonl", '{"user": 1, "item": 1}\n' + line + "\n")
    with pytest.raises(DataError, match=f"e.jsonl: line 2: {problem}"):
        read_jsonl(path)
    assert len(read_jsonl(path, on_error="skip")) == 1


# ---------------------------------------------------------------------------
# Format detection, files, the dataclass


def test_format_detection_by_extension_and_content(tmp_path):
    assert resolve_format(tmp_path / "a.csv") == "csv"
    assert resolve_format(tmp_path / "a.jsonl.gz") == "jsonl"
    assert resolve_format(tmp_path / "u.data") == "movielens"
    assert resolve_format(write(tmp_path / "a", '\n{"user": 1}\n')) == "jsonl"
    assert resolve_format(write(tmp_path / "b", "1\t2\t3\t4\n")) == "movielens"
    assert resolve_format(write(tmp_path / "c", "1,2\n")) == "csv"
    with pytest.raises(ValueError, match="format must be 'auto' or one of"):
        resolve_format(tmp_path / "a.csv", "parquet")


def test_gzip_is_read_transparently(tmp_path):
    path = tmp_path / "e.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as stream:
        stream.write("user,item\n1,2\n")
    assert read_interactions(path).items.tolist() == [2]


def test_missing_file_and_bad_on_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_interactions(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip', got 'ignore'"):
        read_csv(write(tmp_path / "x.csv", "1,2\n"), on_error="ignore")


def test_empty_file_gives_empty_interactions(tmp_path):
    data = read_csv(write(tmp_path / "x.csv", "\n\n"))
    assert len(data) == 0 and data.users.dtype == np.int64


def test_sort_by_time_is_stable_and_puts_untimed_last():
    data = Interactions(np.array([1, 2, 3, 4]), np.array([1, 2, 3, 4]),
                        np.array([5.0, np.nan, 1.0, 5.0]))
    ordered = data.sort_by_time()
    assert ordered.users.tolist() == [3, 1, 4, 2]
    assert data.users.tolist() == [1, 2, 3, 4]


def test_interactions_validates_lengths_and_slices():
    with pytest.raises(ValueError, match="same length, got 2, 1 and 2"):
        Interactions(np.array([1, 2]), np.array([1]))
    data = Interactions(["a", "b", "c"], [1, 2, 3])
    assert data.users.dtype == object
    assert len(data[1:]) == 2 and data[np.array([True, False, True])].items.tolist() == [1, 3]
    assert data[-1].users.tolist() == ["c"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-10**6, 10**6), st.text(
    alphabet="abcdefghij0123456789_", min_size=1, max_size=6), st.floats(0, 2e9)),
    min_size=1, max_size=30))
def test_csv_round_trip(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("rt") / "x.csv"
    path.write_text("user,item,timestamp\n" + "".join(
        f"{u},{i},{t!r}\n" for u, i, t in rows), encoding="utf-8")
    data = read_csv(path)
    assert data.users.tolist() == [u for u, _, _ in rows]
    expected_items = [i for _, i, _ in rows]
    assert [str(i) for i in data.items.tolist()] == expected_items
    assert data.timestamps.tolist() == [t for _, _, t in rows]

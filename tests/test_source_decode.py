"""Decoding and validation of interaction messages."""

from __future__ import annotations

import json
import logging
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from i2v_stream.source.decode import (
    REASONS,
    BadInputLog,
    DecodeConfigError,
    Decoder,
    Event,
    Rejection,
)

DECODER = Decoder()


def reason_of(value, decoder=DECODER):
    events, rejection = decoder.decode(value)
    assert (rejection is None) == bool(events)
    return None if rejection is None else rejection.reason


def test_json_object_with_and_without_timestamp():
    assert DECODER.decode(b'{"user": "u1", "item": 7, "ts": 12}') == (
        [Event("u1", 7, 12.0)], None
    )
    assert DECODER.decode('{"user": 3, "item": "x"}')[0] == [Event(3, "x", None)]
    assert DECODER.decode(b' \n{"user": 3, "item": "x", "ts": null} \n')[0] == [
        Event(3, "x", None)
    ]


def test_json_array_and_csv_lines():
    value = json.dumps([{"user": 1, "item": 2}, {"user": "é", "item": "ü", "ts": 1.5}])
    assert DECODER.decode(value.encode())[0] == [Event(1, 2, None), Event("é", "ü", 1.5)]
    assert DECODER.decode(b"1,2\n u3 , 042 ,7.5\r\n\n")[0] == [
        Event(1, 2, None), Event("u3", "042", 7.5)
    ]


def test_configurable_fields_and_columns():
    decoder = Decoder(user_field="uid", item_field="iid", ts_field="time")
    assert decoder.decode(b'{"uid": 1, "iid": 2, "time": 3}')[0] == [Event(1, 2, 3.0)]
    assert reason_of(b'{"user": 1, "item": 2}', decoder) == "schema"
    movielens = Decoder(format="csv", delimiter="\t", columns=(0, 1, 3))
    assert movielens.decode(b"196\t242\t3\t881250949")[0] == [Event(196, 242, 881250949.0)]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "decode"),
        (b"\xff\xfe\xfa", "decode"),
        (b'{"user": 1, "item": 2} x', "decode"),
        (b'"just a string"', "schema"),
        (b'{"user": 1}', "schema"),
        (b"[1, 2]", "schema"),
        (b"1,2,3,4", "schema"),
        (b'{"user": true, "item": 2}', "type"),
        (b'{"user": 1.5, "item": 2}', "type"),
        (b'{"user": null, "item": 2}', "type"),
        (b'{"user": [1], "item": 2}', "type"),
        (b'{"user": 99999999999999999999, "item": 2}', "type"),
        (b'{"user": "", "item": 2}', "empty_id"),
        (b",2", "empty_id"),
        (b'{"user": "' + b"x" * 257 + b'", "item": 2}', "id_too_long"),
        (b'{"user": 1, "item": 2, "ts": "yesterday"}', "bad_timestamp"),
        (b'{"user": 1, "item": 2, "ts": NaN}', "bad_timestamp"),
        (b'{"user": 1, "item": 2, "ts": 1e999}', "bad_timestamp"),
        (b'{"user": 1, "item": 2, "ts": true}', "bad_timestamp"),
        (b"1,2,soon", "bad_timestamp"),
        (b"1,2,inf", "bad_timestamp"),
        (b"[]", "empty_message"),
        (b"  \n ", "empty_message"),
        (None, "empty_message"),
        (b"[" * 100_000, "decode"),
    ],
)
def test_rejections_name_the_reason(value, reason):
    assert reason in REASONS
    assert reason_of(value) == reason


def test_id_byte_cap_counts_utf8_bytes():
    decoder = Decoder(max_id_bytes=4)
    assert reason_of('{"user": "éé", "item": 1}'.encode(), decoder) is None
    assert reason_of('{"user": "ééé", "item": 1}'.encode(), decoder) == "id_too_long"
    assert reason_of(b'{"user": "\\ud800", "item": 1}', decoder) == "decode"


def test_message_limits():
    decoder = Decoder(max_message_bytes=64, max_events_per_message=2)
    assert reason_of(b"1,2\n" * 17, decoder) == "too_large"
    assert reason_of(b"1,2\n3,4\n5,6", decoder) == "too_many_events"
    events, rejection = decoder.decode(b'[{"user":1,"item":2},{"user":1,"item":2},{}]')
    assert rejection.reason == "too_many_events" and rejection.n_events == 3


def test_a_bad_event_rejects_its_whole_message():
    users, items, timestamps = [], [], []
    value = b'[{"user": 1, "item": 2}, {"user": 1, "item": false}]'
    rejection = DECODER.decode_into(value, users, items, timestamps)
    assert rejection.reason == "type" and "event 1" in rejection.detail
    assert users == items == timestamps == []


def test_decode_into_appends_nan_for_missing_timestamps():
    users, items, timestamps = ["a"], ["b"], [1.0]
    assert DECODER.decode_into(b'{"user": "c", "item": "d"}', users, items, timestamps) is None
    assert users == ["a", "c"] and items == ["b", "d"]
    assert timestamps[0] == 1.0 and math.isnan(timestamps[1])


def test_format_json_rejects_csv_and_vice_versa():
    assert reason_of(b"1,2", Decoder(format="json")) == "decode"
    assert reason_of(b'{"user": 1}', Decoder(format="csv")) == "schema"


def test_bad_settings_raise_config_error():
    with pytest.raises(DecodeConfigError, match="format"):
        Decoder(format="xml")
    with pytest.raises(DecodeConfigError, match="max_id_bytes"):
        Decoder(max_id_bytes=0)
    with pytest.raises(DecodeConfigError, match="columns"):
        Decoder(columns=(0, 0, None))


def test_bad_input_log_warns_once_per_reason(caplog):
    log = BadInputLog(logging.getLogger("test.badinput"), sample_chars=10)
    with caplog.at_level(logging.DEBUG, logger="test.badinput"):
        for _ in range(3):
            log.record(Rejection("decode", "bad"), b"x" * 50, "partition=0 offset=1")
        log.record(Rejection("type", "bad", 4), b"y", "")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "reason=decode" in warnings[0].getMessage()
    assert "(50 total)" in warnings[0].getMessage()
    assert "x" * 11 not in warnings[0].getMessage()
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 2
    assert log.counts == {"decode": 3, "type": 1} and log.events["type"] == 4
    assert log.total == 4


# -- properties -----------------------------------------------------------------------

ids = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(min_size=1, max_size=40).filter(
        lambda s: len(s.encode("utf-8", "surrogatepass")) <= 256
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
    ),
)
timestamps = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False),
                       st.integers(min_value=-(10**15), max_value=10**15))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(value):
    for decoder in (DECODER, Decoder(format="json"), Decoder(format="csv")):
        events, rejection = decoder.decode(value)
        assert rejection is None or rejection.reason in REASONS


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(["user", "item", "ts", "x"]), children, max_size=4),
    ),
    max_leaves=12,
))
def test_arbitrary_json_never_raises(obj):
    value = json.dumps(obj).encode()
    events, rejection = DECODER.decode(value)
    assert rejection is None or rejection.reason in REASONS


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ids, ids, timestamps), min_size=1, max_size=5))
def test_valid_json_events_round_trip(events):
    objects = [
        {"user": u, "item": i, **({} if t is None else {"ts": t})} for u, i, t in events
    ]
    value = json.dumps(objects[0] if len(objects) == 1 else objects).encode()
    decoded, rejection = DECODER.decode(value)
    assert rejection is None
    assert decoded == [Event(u, i, None if t is None else float(t)) for u, i, t in events]


csv_ids = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(alphabet=st.characters(blacklist_characters=",\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
                                   blacklist_categories=("Cs", "Zs", "Cc")),
            min_size=1, max_size=20)
    .filter(lambda s: s == s.strip() and not s.lstrip("-").isdigit()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(csv_ids, csv_ids, st.one_of(st.none(), st.floats(
    allow_nan=False, allow_infinity=False))), min_size=1, max_size=5))
def test_valid_csv_events_round_trip(events):
    lines = [f"{u},{i}" + ("" if t is None else f",{t!r}") for u, i, t in events]
    decoded, rejection = DECODER.decode("\n".join(lines).encode())
    if rejection is not None and lines[0].lstrip()[:1] in ("{", "["):
        return  # auto-detected as JSON: not a CSV message
    assert rejection is None, rejection
    assert decoded == [Event(u, i, t) for u, i, t in events]


TRICKY_MESSAGES = [
    b'{"user": "u", "item": "i", "ts": 5}',
    b'  {"user": 1, "item": 2}  ',
    b'{"user": "u", "item": "i", "ts": NaN}',           # the standard library's NaN
    b'{"user": "u", "item": "i", "ts": Infinity}',
    b'{"user": 123456789012345678901234567890, "item": "i"}',  # past 64 bits
    b'{"user": "\\ud800", "item": "i"}',                 # a lone surrogate
    b'{"user": "caf\\u00e9", "item": "i"}',              # non-ASCII id
    b'{"user": "u", "item": "i"} trailing',
    b'{"user": "u", "item": "i"',
    b'\xff\xfe{"user": "u"}',
    b'[{"user": "u", "item": "i"}, {"user": "v", "item": 7, "ts": 1.5}]',
    b'{"user": "u", "item": "i", "user": "w"}',          # a repeated key: the last wins
    b'{"user": true, "item": "i"}',
    b'{"user": "u", "item": "i", "ts": "noon"}',
    b"[" * 5000 + b"]" * 5000,                            # nesting past both parsers' limits
]


@pytest.mark.parametrize("value", TRICKY_MESSAGES)
def test_compiled_json_parser_gives_the_standard_librarys_answers(value, monkeypatch):
    from i2v_stream.source import decode as decode_module

    fast = Decoder().decode(value)
    monkeypatch.setattr(decode_module, "_fast_loads", None)
    standard = Decoder().decode(value)
    assert fast[0] == standard[0]
    assert (fast[1] is None) == (standard[1] is None)
    if fast[1] is not None:
        assert fast[1].reason == standard[1].reason

"""Decoding and validation of interaction messages into (user, item, ts) events.

Accepted message values (bytes or str):

- a JSON object ``{"user": ..., "item": ..., "ts": ...}`` (``ts`` optional, the
  field names configurable);
- a JSON array of such objects;
- one or more CSV lines ``user,item[,ts]`` (delimiter and column positions
  configurable, so MovieLens' tab-separated ``user item rating ts`` reads with
  ``delimiter="\\t", columns=(0, 1, 3)``).

Validation rules:

- ids are non-empty ``str`` or ``int`` (``bool`` is not an int here); strings at
  most ``max_id_bytes`` bytes of UTF-8, ints within signed 64 bits. JSON keeps
  the id's type (``123`` and ``"123"`` are different ids); CSV turns a field
  written as a canonical decimal integer (``"42"``, not ``"042"``) into an int,
  so the same interaction reads the same from JSON and CSV;
- ``ts`` is a finite number of seconds, or absent (``null``, missing field,
  empty CSV field);
- a message is at most ``max_message_bytes`` long and carries at most
  ``max_events_per_message`` events, and at least one.

A message is accepted or rejected as a whole: if any event in it is invalid,
none of its events is returned. The rejected message can then be fixed and
re-sent (for example from the dead-letter topic) without duplicating the events
that were valid. Rejections carry a reason from :data:`REASONS`; the decoder
never raises on bad input.

The hot path is :meth:`Decoder.decode_into`, which appends straight into the
caller's batch lists; the common case (one JSON object) costs less than one
``json.loads`` call (the C scanner is called directly) plus a few type checks.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

__all__ = [
    "REASONS",
    "BadInputLog",
    "BadMessage",
    "PolledBatch",
    "DecodeConfigError",
    "Decoder",
    "Event",
    "Rejection",
    "SourceError",
]

logger = logging.getLogger(__name__)


class SourceError(Exception):
    """Base class of the errors raised by the ``i2v_stream.source`` package."""


class DecodeConfigError(SourceError, ValueError):
    """A decoder setting is invalid; the message names the setting."""


#: Every reason a message can be rejected for.
REASONS = (
    "decode",           # not UTF-8, not JSON, or not parseable CSV
    "schema",           # wrong shape: not an object, missing field, wrong column count
    "type",             # an id that is not a str or an int (or an int beyond 64 bits)
    "empty_id",         # an id that is the empty string
    "id_too_long",      # an id longer than max_id_bytes
    "bad_timestamp",    # a timestamp that is not a finite number
    "too_large",        # a message longer than max_message_bytes
    "too_many_events",  # more than max_events_per_message events in one message
    "empty_message",    # a message with no events at all
)

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_NAN = math.nan
_FLOAT_MAX = 1.7976931348623157e308
_JSON_WHITESPACE = " \t\n\r"
_JSON_OPENERS = ("{", "[")
_scan_once = json.JSONDecoder().scan_once

try:  # a compiled JSON parser, about 4x faster on small messages (a dependency)
    from orjson import JSONDecodeError as _FastJSONError
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - the standard library alone works too
    _fast_loads = None


class Event(NamedTuple):
    """One interaction: ``ts`` is seconds (float) or None when absent."""

    user: str | int
    item: str | int
    ts: float | None


class Rejection(NamedTuple):
    """Why a message was rejected.

    Attributes
    ----------
    reason : str
        One of :data:`REASONS`.
    detail : str
        A short human-readable explanation (field, value found).
    n_events : int
        Events the message was meant to carry, as far as could be told (>= 1).
    """

    reason: str
    detail: str
    n_events: int = 1


@dataclass
class BadMessage:
    """A rejected message and where it came from."""

    topic: str
    partition: int
    offset: int
    rejection: Rejection
    key: bytes | None
    value: bytes | None

    @property
    def reason(self) -> str:
        """The rejection reason, one of ``decode.REASONS``."""
        return self.rejection.reason


@dataclass
class PolledBatch:
    """Events read by one ``poll_batch`` call of a source (Kafka or file).

    Attributes
    ----------
    users, items : list
        Event ids (str or int), in partition order within each partition.
    timestamps : list of float
        Seconds; NaN where the event had none.
    partitions : list of TopicPartition
        The partition of each event.
    next_offsets : dict of TopicPartition to int
        For every partition read, the offset after the last message consumed,
        accepted or rejected: what to store with the state these events produce.
    bad : list of BadMessage
        Rejected messages.
    n_messages : int
        Messages consumed, accepted or rejected.
    """

    users: list = field(default_factory=list)
    items: list = field(default_factory=list)
    timestamps: list = field(default_factory=list)
    partitions: list = field(default_factory=list)
    next_offsets: dict = field(default_factory=dict)
    bad: list = field(default_factory=list)
    n_messages: int = 0

    @property
    def n_events(self) -> int:
        """Events decoded (accepted)."""
        return len(self.users)

    def __len__(self) -> int:
        return len(self.users)


class Decoder:
    """Decode message values into events, validating every field.

    Parameters
    ----------
    format : {"auto", "json", "csv"}
        ``auto`` reads a value starting (after whitespace) with ``{`` or ``[``
        as JSON and anything else as CSV.
    user_field, item_field, ts_field : str
        JSON field names.
    delimiter : str
        CSV field delimiter (one character).
    columns : tuple of (int, int, int or None)
        CSV column positions of user, item and timestamp (None: no timestamp).
        A line must have between ``max(user, item) + 1`` and
        ``max(user, item, ts) + 1`` fields.
    max_id_bytes : int
        Longest accepted string id, in bytes of UTF-8.
    max_message_bytes : int
        Longest accepted message value, in bytes.
    max_events_per_message : int
        Most events accepted in one message (JSON array or CSV lines).

    Examples
    --------
    >>> decoder = Decoder()
    >>> decoder.decode(b'{"user": "u1", "item": 7, "ts": 1.5}')
    ([Event(user='u1', item=7, ts=1.5)], None)
    >>> decoder.decode(b'u1,7')
    ([Event(user='u1', item=7, ts=None)], None)
    >>> decoder.decode(b'{"user": true, "item": 7}')[1].reason
    'type'
    """

    def __init__(
        self,
        format: Literal["auto", "json", "csv"] = "auto",  # noqa: A002 - the natural name
        user_field: str = "user",
        item_field: str = "item",
        ts_field: str = "ts",
        delimiter: str = ",",
        columns: tuple[int, int, int | None] = (0, 1, 2),
        max_id_bytes: int = 256,
        max_message_bytes: int = 1 << 20,
        max_events_per_message: int = 10_000,
    ) -> None:
        if format not in ("auto", "json", "csv"):
            raise DecodeConfigError(f"format must be 'auto', 'json' or 'csv', got {format!r}")
        if len(delimiter) != 1 or delimiter in "\r\n\"":
            raise DecodeConfigError(
                f"delimiter must be one character other than a quote or newline, "
                f"got {delimiter!r}"
            )
        if len(columns) != 3 or any(
            c is not None and (not isinstance(c, int) or c < 0) for c in columns
        ) or columns[0] is None or columns[1] is None or columns[0] == columns[1]:
            raise DecodeConfigError(
                f"columns must be (user, item, ts or None), distinct non-negative ints, "
                f"got {columns!r}"
            )
        for name, value in (
            ("max_id_bytes", max_id_bytes),
            ("max_message_bytes", max_message_bytes),
            ("max_events_per_message", max_events_per_message),
        ):
            if not isinstance(value, int) or value < 1:
                raise DecodeConfigError(f"{name} must be a positive int, got {value!r}")
        self.format = format
        self.user_field = user_field
        self.item_field = item_field
        self.ts_field = ts_field
        self.delimiter = delimiter
        self.columns = columns
        self.max_id_bytes = max_id_bytes
        self.max_message_bytes = max_message_bytes
        self.max_events_per_message = max_events_per_message

        user_col, item_col, ts_col = columns
        self._min_fields = max(user_col, item_col) + 1
        self._max_fields = max(user_col, item_col, ts_col if ts_col is not None else -1) + 1

    # -- public API -------------------------------------------------------------

    def decode(self, value: bytes | str | None) -> tuple[list[Event], Rejection | None]:
        """Decode one message value.

        Parameters
        ----------
        value : bytes, str or None
            The message value.

        Returns
        -------
        events : list of Event
            The message's events; empty when it is rejected.
        rejection : Rejection or None
            None when the message is accepted.
        """
        users: list[str | int] = []
        items: list[str | int] = []
        timestamps: list[float] = []
        rejection = self.decode_into(value, users, items, timestamps)
        if rejection is not None:
            return [], rejection
        events = [
            Event(u, i, None if t != t else t) for u, i, t in zip(users, items, timestamps)
        ]
        return events, None

    def decode_into(
        self,
        value: bytes | str | None,
        users: list,
        items: list,
        timestamps: list,
    ) -> Rejection | None:
        """Decode one message value, appending its events to the given lists.

        Nothing is appended when the message is rejected.

        Parameters
        ----------
        value : bytes, str or None
            The message value.
        users, items : list
            Receive the ids (str or int).
        timestamps : list
            Receives the timestamps in seconds (float), NaN where absent.

        Returns
        -------
        Rejection or None
            None when the message is accepted.
        """
        if value is None:
            return Rejection("empty_message", "message has no value (tombstone)")
        if len(value) > self.max_message_bytes:
            return Rejection(
                "too_large", f"message is {len(value)} bytes, max_message_bytes="
                f"{self.max_message_bytes}"
            )
        fmt = self.format
        if _fast_loads is not None and fmt != "csv" and value[:1] == b"{":
            # The common message, one JSON object, in as few steps as possible;
            # what orjson refuses takes the general path below.
            try:
                obj = _fast_loads(value)
            except (_FastJSONError, RecursionError):
                obj = None
            if type(obj) is dict:
                return self._decode_object(obj, users, items, timestamps)
        if fmt == "auto":
            fmt = "json" if _looks_like_json(value) else "csv"
        if fmt == "json":
            return self._decode_json(value, users, items, timestamps)
        return self._decode_csv(value, users, items, timestamps)

    # -- JSON --------------------------------------------------------------------

    def _decode_json(self, value, users, items, timestamps) -> Rejection | None:
        obj = self._parse_json(value)
        if type(obj) is Rejection:
            return obj

        if type(obj) is dict:
            return self._decode_object(obj, users, items, timestamps)
        if type(obj) is list:
            return self._decode_json_array(obj, users, items, timestamps)
        return Rejection(
            "schema", f"expected a JSON object or array, got {type(obj).__name__}"
        )

    def _decode_object(self, obj: dict, users, items, timestamps) -> Rejection | None:
        """One JSON object as one event: the plain fast path, else full checks."""
        if self._append_plain(obj, users, items, timestamps):
            return None
        rejection = self._check_object(obj, 0)
        if rejection is not None:
            return rejection
        user, item, ts = self._fields(obj)
        users.append(user)
        items.append(item)
        timestamps.append(ts)
        return None

    def _append_plain(self, obj: dict, users, items, timestamps) -> bool:
        """Append the event of ``obj`` if it is plain, and say whether it was.

        Plain: ASCII or 64-bit int ids within the size limit and a finite
        float, int or no timestamp; every other object goes through
        :meth:`_check_object`, which names what is wrong.
        """
        user = obj.get(self.user_field)
        item = obj.get(self.item_field)
        ts = obj.get(self.ts_field)
        cap = self.max_id_bytes
        kind_user = type(user)
        kind_item = type(item)
        kind_ts = type(ts)
        if (
            (
                (kind_user is str and 0 < len(user) <= cap and user.isascii())
                or (kind_user is int and _INT64_MIN <= user <= _INT64_MAX)
            ) and (
                (kind_item is str and 0 < len(item) <= cap and item.isascii())
                or (kind_item is int and _INT64_MIN <= item <= _INT64_MAX)
            ) and (
                ts is None
                or (kind_ts is float and ts - ts == 0.0)
                or (kind_ts is int and -_FLOAT_MAX < ts < _FLOAT_MAX)
            )
        ):
            users.append(user)
            items.append(item)
            timestamps.append(_NAN if ts is None else float(ts))
            return True
        return False

    @staticmethod
    def _parse_json(value) -> object:
        """The parsed message, or the Rejection that says why it is not JSON."""
        # orjson first. What it refuses goes to the standard library, which
        # either explains the error or accepts what orjson does not (NaN and
        # Infinity literals, integers past 64 bits, lone surrogates), so both
        # parsers give the same events and the same reasons.
        if _fast_loads is not None:
            try:
                return _fast_loads(value)
            except (_FastJSONError, RecursionError):
                pass
        # The C scanner behind json.loads, called directly, costs a third of
        # json.loads on a small object: it skips encoding detection and the
        # regex that trims whitespace.
        try:
            text = value if type(value) is str else value.decode("utf-8")
            if text[:1] not in _JSON_OPENERS:
                text = text.lstrip(_JSON_WHITESPACE)
            obj, end = _scan_once(text, 0)
            if end != len(text) and text[end:].strip(_JSON_WHITESPACE):
                return Rejection("decode", f"invalid JSON: extra data at char {end}")
        except StopIteration:
            return Rejection("decode", "invalid JSON: no value")
        except (ValueError, RecursionError) as exc:
            # UnicodeDecodeError and JSONDecodeError are both ValueErrors.
            return Rejection("decode", f"invalid JSON: {_short(exc)}")
        return obj

    def _decode_json_array(self, array: list, users, items, timestamps) -> Rejection | None:
        n = len(array)
        if n == 0:
            return Rejection("empty_message", "empty JSON array")
        if n > self.max_events_per_message:
            return Rejection(
                "too_many_events",
                f"{n} events, max_events_per_message={self.max_events_per_message}", n,
            )
        new_users, new_items, new_ts = [], [], []
        for index, obj in enumerate(array):
            rejection = self._check_object(obj, index, n)
            if rejection is not None:
                return rejection
            user, item, ts = self._fields(obj)
            new_users.append(user)
            new_items.append(item)
            new_ts.append(ts)
        users.extend(new_users)
        items.extend(new_items)
        timestamps.extend(new_ts)
        return None

    def _check_object(self, obj: object, index: int, n_events: int = 1) -> Rejection | None:
        """Validate one JSON event; the slow path that explains what is wrong."""
        where = f"event {index}: " if n_events > 1 else ""
        if type(obj) is not dict:
            return Rejection(
                "schema", f"{where}expected a JSON object, got {type(obj).__name__}", n_events
            )
        for field in (self.user_field, self.item_field):
            if field not in obj:
                return Rejection("schema", f"{where}missing field {field!r}", n_events)
            rejection = self._check_id(obj[field], field, where, n_events)
            if rejection is not None:
                return rejection
        ts = obj.get(self.ts_field)
        if ts is not None:
            if type(ts) is not int and type(ts) is not float:
                return Rejection(
                    "bad_timestamp",
                    f"{where}{self.ts_field} must be a number, got {type(ts).__name__}",
                    n_events,
                )
            try:
                finite = math.isfinite(ts)
            except OverflowError:
                finite = False
            if not finite:
                return Rejection(
                    "bad_timestamp", f"{where}{self.ts_field}={_short(ts)} is not finite",
                    n_events,
                )
        return None

    def _check_id(self, value: object, field: str, where: str, n_events: int) -> Rejection | None:
        kind = type(value)
        if kind is int:
            if not _INT64_MIN <= value <= _INT64_MAX:  # type: ignore[operator]
                return Rejection(
                    "type", f"{where}{field} integer does not fit in 64 bits", n_events
                )
            return None
        if kind is not str:
            return Rejection(
                "type", f"{where}{field} must be a string or an integer, got {kind.__name__}",
                n_events,
            )
        return self._check_str_id(value, field, where, n_events)  # type: ignore[arg-type]

    def _check_str_id(self, value: str, field: str, where: str, n_events: int) -> Rejection | None:
        if not value:
            return Rejection("empty_id", f"{where}{field} is empty", n_events)
        if value.isascii():
            size = len(value)
        else:
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:
                return Rejection(
                    "decode", f"{where}{field} contains an unpaired surrogate", n_events
                )
        if size > self.max_id_bytes:
            return Rejection(
                "id_too_long",
                f"{where}{field} is {size} bytes, max_id_bytes={self.max_id_bytes}", n_events,
            )
        return None

    def _fields(self, obj: dict) -> tuple[str | int, str | int, float]:
        """Extract an already validated object's fields."""
        ts = obj.get(self.ts_field)
        return obj[self.user_field], obj[self.item_field], _NAN if ts is None else float(ts)

    # -- CSV ---------------------------------------------------------------------

    def _decode_csv(self, value, users, items, timestamps) -> Rejection | None:
        if type(value) is not str:
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                return Rejection("decode", f"not UTF-8: {_short(exc)}")
        lines = [line for line in value.splitlines() if line.strip()]
        n = len(lines)
        if n == 0:
            return Rejection("empty_message", "no CSV lines")
        if n > self.max_events_per_message:
            return Rejection(
                "too_many_events",
                f"{n} lines, max_events_per_message={self.max_events_per_message}", n,
            )
        user_col, item_col, ts_col = self.columns
        new_users, new_items, new_ts = [], [], []
        for index, line in enumerate(lines):
            where = f"line {index}: " if n > 1 else ""
            fields = line.split(self.delimiter)
            n_fields = len(fields)
            if not self._min_fields <= n_fields <= self._max_fields:
                return Rejection(
                    "schema",
                    f"{where}{n_fields} fields, expected {self._min_fields}"
                    + (f" to {self._max_fields}" if self._max_fields > self._min_fields else ""),
                    n,
                )
            ids = []
            for col, name in ((user_col, "user"), (item_col, "item")):
                text = fields[col].strip()
                rejection = self._check_str_id(text, name, where, n)
                if rejection is not None:
                    return rejection
                ids.append(_csv_id(text))
            ts = _NAN
            if ts_col is not None and ts_col < n_fields:
                text = fields[ts_col].strip()
                if text:
                    try:
                        ts = float(text)
                    except ValueError:
                        return Rejection(
                            "bad_timestamp", f"{where}ts={_short(text)} is not a number", n
                        )
                    if not math.isfinite(ts):
                        return Rejection("bad_timestamp", f"{where}ts={text!r} is not finite", n)
            new_users.append(ids[0])
            new_items.append(ids[1])
            new_ts.append(ts)
        users.extend(new_users)
        items.extend(new_items)
        timestamps.extend(new_ts)
        return None


def _looks_like_json(value: bytes | str) -> bool:
    """True when the first non-whitespace character opens a JSON object or array."""
    head = value[:1]
    if head in (b"{", b"[", "{", "["):
        return True
    stripped = value.lstrip()[:1]
    return stripped in (b"{", b"[", "{", "[")


def _csv_id(text: str) -> str | int:
    """A CSV field as an id: canonical decimal integers within 64 bits become ints."""
    if text.isdigit() or (text[:1] == "-" and text[1:].isdigit()):
        if text.isascii():
            number = int(text)
            if str(number) == text and _INT64_MIN <= number <= _INT64_MAX:
                return number
    return text


def _short(value: object, limit: int = 80) -> str:
    """``repr``-like text of ``value`` cut to ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BadInputLog:
    """Count rejected messages by reason and log them without flooding the log.

    The first rejection of each reason is logged at WARNING with a truncated
    sample of the message; later ones at DEBUG, with the running count.

    Parameters
    ----------
    log : logging.Logger or None
        Where to log; defaults to this module's logger.
    sample_chars : int
        Longest sample of a message value put in a log line.

    Attributes
    ----------
    counts : dict of str to int
        Messages rejected so far, by reason.
    events : dict of str to int
        Events in those messages, by reason (``Rejection.n_events`` summed).
    """

    def __init__(self, log: logging.Logger | None = None, sample_chars: int = 200) -> None:
        self.log = log if log is not None else logger
        self.sample_chars = sample_chars
        self.counts: dict[str, int] = {}
        self.events: dict[str, int] = {}

    def record(self, rejection: Rejection, value: bytes | str | None, context: str = "") -> None:
        """Count one rejected message and log it.

        Parameters
        ----------
        rejection : Rejection
            Why it was rejected.
        value : bytes, str or None
            The message value, sampled into the log line.
        context : str
            key=value text that locates the message, e.g. ``"partition=3 offset=12"``.
        """
        reason = rejection.reason
        count = self.counts.get(reason, 0) + 1
        self.counts[reason] = count
        self.events[reason] = self.events.get(reason, 0) + rejection.n_events
        if count == 1:
            self.log.warning(
                "bad input reason=%s %s detail=%s sample=%s (later messages with this "
                "reason are logged at DEBUG)",
                reason, context, rejection.detail, self.sample(value),
            )
        elif self.log.isEnabledFor(logging.DEBUG):
            self.log.debug(
                "bad input reason=%s count=%d %s detail=%s sample=%s",
                reason, count, context, rejection.detail, self.sample(value),
            )

    def sample(self, value: bytes | str | None) -> str:
        """A printable, truncated ``repr`` of a message value."""
        if value is None:
            return "None"
        head = value[: self.sample_chars]
        text = repr(head)
        if len(value) > self.sample_chars:
            text += f"...({len(value)} total)"
        return text

    @property
    def total(self) -> int:
        """Messages rejected so far, all reasons together."""
        return sum(self.counts.values())


def decode_many(
    decoder: Decoder, values: Sequence[bytes | str | None]
) -> tuple[list, list, list, list[tuple[int, Rejection]]]:
    """Decode a sequence of values; returns users, items, timestamps and rejections.

    Rejections are ``(index into values, Rejection)`` pairs.
    """
    users: list = []
    items: list = []
    timestamps: list = []
    rejected: list[tuple[int, Rejection]] = []
    decode_into = decoder.decode_into
    for index, value in enumerate(values):
        rejection = decode_into(value, users, items, timestamps)
        if rejection is not None:
            rejected.append((index, rejection))
    return users, items, timestamps, rejected

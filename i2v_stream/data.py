"""Interaction files: MovieLens ``u.data``, CSV and JSON lines.

Every reader returns an :class:`Interactions`: three aligned arrays, one entry
per event, in file order.

Id normalisation
    A column of ids is ``int64`` when every id in it is an integer: a JSON
    integer, or a string in canonical decimal form (``"42"``, ``"-7"``; not
    ``"042"``, ``"+4"`` or ``"4.0"``, which would otherwise merge distinct ids).
    Otherwise every id of that column becomes a Python ``str`` (dtype
    ``object``), integers included (``42 -> "42"``). Surrounding whitespace is
    stripped; an empty id is a bad line.

Timestamps
    ``float64`` seconds. A number is taken as unix time; a string that is not a
    number is parsed as ISO 8601 (``2024-01-31T12:00:00``; naive times are
    UTC). An absent timestamp (no column, empty field, JSON ``null`` or missing
    key) is NaN. A non-finite number is a bad line.

Bad lines
    With ``on_error="raise"`` (the default) the first bad line, in file order,
    raises :class:`DataError` naming the file, the line number (1-based) and
    the problem. With ``on_error="skip"`` bad lines are dropped, counted in
    ``Interactions.skipped`` and logged once per kind of problem with a count
    and the first line number. Blank lines are ignored in every format.

Conversions run as whole-column NumPy casts; per-line Python work is limited to
splitting lines (or ``json.loads``), and per-value fallbacks run only on a
column whose fast cast failed.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import gzip
import io
import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

FORMATS = ("movielens", "csv", "jsonl")
_FORMAT_ALIASES = {
    "movielens": "movielens", "ml": "movielens", "udata": "movielens",
    "csv": "csv", "tsv": "csv",
    "jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl",
}
_EXTENSIONS = {
    ".data": "movielens", ".dat": "movielens",
    ".csv": "csv", ".tsv": "csv",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}
# Header names recognised when the caller does not name the columns.
USER_FIELDS = ("user", "user_id", "userid", "uid")
ITEM_FIELDS = ("item", "item_id", "itemid", "movie", "movie_id", "movieid", "iid")
TIME_FIELDS = ("ts", "timestamp", "time", "unix_time", "datetime")

_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)\Z")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class DataError(ValueError):
    """An interactions file, or one of its lines, cannot be read."""


@dataclass(eq=False)
class Interactions:
    """Aligned arrays of (user, item, timestamp) events.

    Parameters
    ----------
    users, items : numpy.ndarray, shape (n_events,)
        Ids, ``int64`` or ``object`` (``str``); see the module docstring.
    timestamps : numpy.ndarray of float64, shape (n_events,), optional
        Seconds (unix time); NaN where absent. ``None`` means all absent.
    skipped : int
        Bad lines a reader dropped with ``on_error="skip"`` (0 otherwise).
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None = None
    skipped: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        self.users = _as_id_array(self.users, "users")
        self.items = _as_id_array(self.items, "items")
        if self.timestamps is None:
            self.timestamps = np.full(len(self.users), np.nan)
        else:
            self.timestamps = np.asarray(self.timestamps, dtype=np.float64).reshape(-1)
        if not len(self.users) == len(self.items) == len(self.timestamps):
            raise ValueError(
                "users, items and timestamps must have the same length, got "
                f"{len(self.users)}, {len(self.items)} and {len(self.timestamps)}"
            )

    def __len__(self) -> int:
        return len(self.users)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Interactions):
            return NotImplemented
        return (np.array_equal(self.users, other.users)
                and np.array_equal(self.items, other.items)
                and np.array_equal(self.timestamps, other.timestamps, equal_nan=True))

    def __getitem__(self, index) -> Interactions:
        """Subset by slice, integer index array or boolean mask (a new object)."""
        if isinstance(index, (int, np.integer)):
            index = slice(index, index + 1 if index != -1 else None)
        return Interactions(self.users[index], self.items[index], self.timestamps[index])

    def sort_by_time(self) -> Interactions:
        """Return the events in time order (stable: ties keep file order).

        Events without a timestamp (NaN) go last, in file order.
        """
        order = np.argsort(self.timestamps, kind="stable")
        return Interactions(self.users[order], self.items[order], self.timestamps[order],
                            skipped=self.skipped)

    @property
    def has_timestamps(self) -> bool:
        """Whether every event has a timestamp."""
        return bool(len(self)) and not np.isnan(self.timestamps).any()

    def __repr__(self) -> str:
        return (f"Interactions(n_events={len(self)}, n_users={len(np.unique(self.users))}, "
                f"n_items={len(np.unique(self.items))})")


def _as_id_array(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind in "US":
        return arr.astype(object)
    if arr.dtype.kind == "O":
        return arr
    raise ValueError(f"{name} must hold integer or string ids, got dtype {arr.dtype}")


# ---------------------------------------------------------------------------
# Public readers


@contextlib.contextmanager
def _gc_paused():
    # Parsing allocates one small container per field; the cyclic collector
    # would otherwise rescan the growing lists many times for no garbage.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_interactions(
    path: str | Path,
    format: str = "auto",
    *,
    on_error: str = "raise",
    user_field: str | None = None,
    item_field: str | None = None,
    time_field: str | None = None,
    delimiter: str | None = None,
    header: bool | None = None,
) -> Interactions:
    """Read an interactions file in any supported format.

    Parameters
    ----------
    path : str or Path
        The file; a ``.gz`` suffix is decompressed on the fly.
    format : {"auto", "movielens", "csv", "jsonl"}
        ``"auto"`` picks by extension (``.data``/``.dat`` MovieLens, ``.csv``/
        ``.tsv`` CSV, ``.jsonl``/``.ndjson``/``.json`` JSON lines), otherwise by
        the first non-blank line: ``{`` JSON lines, a tab MovieLens, else CSV.
    on_error : {"raise", "skip"}
        What to do with a bad line (see the module docstring).
    user_field, item_field, time_field : str, optional
        Column (CSV header) or key (JSON) names; by default the first of
        :data:`USER_FIELDS`, :data:`ITEM_FIELDS`, :data:`TIME_FIELDS` present.
    delimiter : str, optional
        CSV only; default ``","`` (``"\\t"`` for ``.tsv``).
    header : bool, optional
        CSV only; ``None`` detects a header (see :func:`read_csv`).

    Returns
    -------
    Interactions
    """
    fmt = resolve_format(path, format)
    if fmt == "movielens":
        return read_movielens(path, on_error=on_error)
    if fmt == "csv":
        if delimiter is None and _strip_gz(Path(path)).suffix.lower() == ".tsv":
            delimiter = "\t"
        return read_csv(path, on_error=on_error, user_field=user_field, item_field=item_field,
                        time_field=time_field, delimiter=delimiter or ",", header=header)
    return read_jsonl(path, on_error=on_error, user_field=user_field, item_field=item_field,
                      time_field=time_field)


def resolve_format(path: str | Path, format: str = "auto") -> str:
    """Return the concrete format name for ``path`` (see :func:`read_interactions`)."""
    if not isinstance(format, str) or (
        format.lower() != "auto" and format.lower() not in _FORMAT_ALIASES
    ):
        raise ValueError(
            f"format must be 'auto' or one of {', '.join(FORMATS)}, got {format!r}"
        )
    if format.lower() != "auto":
        return _FORMAT_ALIASES[format.lower()]
    path = Path(path)
    by_extension = _EXTENSIONS.get(_strip_gz(path).suffix.lower())
    if by_extension is not None:
        return by_extension
    with _open_text(path) as stream:
        for line in stream:
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                return "jsonl"
            if "\t" in line or "::" in line:
                return "movielens"
            return "csv"
    return "csv"


@_gc_paused()
def read_movielens(path: str | Path, *, on_error: str = "raise") -> Interactions:
    """Read the MovieLens ratings layout: ``user item rating unix_time`` per line.

    Fields are separated by a tab (ml-100k ``u.data``) or by ``::`` (ml-1m
    ``ratings.dat``), detected from the first non-blank line. The rating is
    ignored: every rating counts as one implicit interaction.
    """
    _check_on_error(on_error)
    path = Path(path)
    lines = _read_lines(path)
    separator = "\t"
    for line in lines:
        if line.strip():
            separator = "::" if "::" in line and "\t" not in line else "\t"
            break

    collected = _Collector(path, on_error)
    numbers = [n for n, line in enumerate(lines, start=1) if line.strip()]
    kept = [lines[n - 1] for n in numbers]
    if separator == "\t":
        parts = list(csv.reader(kept, delimiter="\t", quoting=csv.QUOTE_NONE))
    else:
        parts = [line.split(separator) for line in kept]
    if any(len(p) != 4 for p in parts):
        for line_no, fields in zip(numbers, parts):
            if len(fields) != 4:
                collected.bad(line_no, "columns",
                              f"expected 4 {separator!r}-separated fields "
                              f"(user item rating timestamp), found {len(fields)}")
        keep = [k for k, p in enumerate(parts) if len(p) == 4]
        numbers = [numbers[k] for k in keep]
        parts = [parts[k] for k in keep]
    collected.extend(numbers, [p[0] for p in parts], [p[1] for p in parts],
                     [p[3] for p in parts])
    return collected.finish()


@_gc_paused()
def read_csv(
    path: str | Path,
    *,
    on_error: str = "raise",
    user_field: str | None = None,
    item_field: str | None = None,
    time_field: str | None = None,
    delimiter: str = ",",
    header: bool | None = None,
) -> Interactions:
    """Read ``user,item[,timestamp]`` rows, with or without a header.

    Header detection (``header=None``): the first non-blank row is a header when
    it contains a user column name and an item column name (case-insensitive;
    ``user_field``/``item_field`` when given, else :data:`USER_FIELDS` and
    :data:`ITEM_FIELDS`). With a header, columns are found by name, in any
    order, and other columns are ignored; a missing time column means no
    timestamps. Without one, the columns are positional: user, item and, when
    present, timestamp; further columns are ignored.
    """
    _check_on_error(on_error)
    path = Path(path)
    lines = _read_lines(path)
    numbered = ((n, line) for n, line in enumerate(lines, start=1) if line.strip())
    first = next(numbered, None)
    collected = _Collector(path, on_error)
    if first is None:
        return collected.finish()

    # Work out the column positions from the first row.
    first_row = [cell.strip() for cell in next(csv.reader([first[1]], delimiter=delimiter))]
    lowered = [cell.lower() for cell in first_row]
    user_names = (user_field,) if user_field else USER_FIELDS
    item_names = (item_field,) if item_field else ITEM_FIELDS
    time_names = (time_field,) if time_field else TIME_FIELDS
    user_col = _find_column(lowered, user_names)
    item_col = _find_column(lowered, item_names)
    is_header = header if header is not None else (user_col is not None and item_col is not None)
    rows: Iterable[tuple[int, str]]
    if is_header:
        if user_col is None or item_col is None:
            missing = "user" if user_col is None else "item"
            names = user_names if user_col is None else item_names
            raise DataError(
                f"{path}: line {first[0]}: the header has no {missing} column "
                f"(looked for {', '.join(names)}; found {', '.join(first_row)}); "
                f"pass {missing}_field= to name it"
            )
        time_col = _find_column(lowered, time_names)
        if time_field and time_col is None:
            raise DataError(f"{path}: line {first[0]}: the header has no column "
                            f"{time_field!r} (found {', '.join(first_row)})")
        rows = numbered
    else:
        user_col, item_col = 0, 1
        time_col = 2 if len(first_row) >= 3 else None
        rows = [first, *numbered]

    # One csv.reader pass over the remaining lines (quoting is honoured).
    rows = list(rows)
    numbers = [n for n, _ in rows]
    needed = 1 + max(user_col, item_col)
    parsed = list(csv.reader([line for _, line in rows], delimiter=delimiter))
    min_fields = max(user_col, item_col) + 1
    keep = [k for k, row in enumerate(parsed) if len(row) >= min_fields]
    if len(keep) < len(parsed):
        for line_no, row in zip(numbers, parsed):
            if len(row) < min_fields:
                collected.bad(line_no, "columns",
                              f"expected at least {needed} fields, found {len(row)}")
        parsed = [parsed[k] for k in keep]
        numbers = [numbers[k] for k in keep]
    if time_col is None:
        times = [""] * len(parsed)
    else:
        # A row may leave out a trailing timestamp: the event has none.
        times = [row[time_col] if len(row) > time_col else "" for row in parsed]
    collected.extend(numbers, [row[user_col] for row in parsed],
                     [row[item_col] for row in parsed], times)
    return collected.finish()


@_gc_paused()
def read_jsonl(
    path: str | Path,
    *,
    on_error: str = "raise",
    user_field: str | None = None,
    item_field: str | None = None,
    time_field: str | None = None,
) -> Interactions:
    """Read one JSON object per line: ``{"user": .., "item": .., "ts": ..}``.

    Ids must be JSON strings or integers. The timestamp key is optional; by
    default the first of :data:`TIME_FIELDS` present in an object is used.
    Other keys are ignored.
    """
    _check_on_error(on_error)
    path = Path(path)
    user_names = (user_field,) if user_field else USER_FIELDS
    item_names = (item_field,) if item_field else ITEM_FIELDS
    time_names = (time_field,) if time_field else TIME_FIELDS
    collected = _Collector(path, on_error)
    decode = json.loads
    for line_no, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = decode(line)
        except ValueError as exc:
            collected.bad(line_no, "json", f"not valid JSON ({exc})")
            continue
        if not isinstance(record, dict):
            collected.bad(line_no, "json",
                          f"expected a JSON object, found {type(record).__name__}")
            continue
        values = []
        for role, names in (("user", user_names), ("item", item_names)):
            value = next((record[k] for k in names if k in record), _MISSING)
            if value is _MISSING:
                collected.bad(line_no, f"missing_{role}",
                              f"no {role} key (looked for {', '.join(names)})")
                break
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                collected.bad(line_no, "id_type",
                              f"{role} id must be a string or an integer, found {value!r}")
                break
            values.append(value)
        else:
            ts = next((record[k] for k in time_names if k in record), None)
            collected.add(line_no, values[0], values[1], ts)
    return collected.finish()


_MISSING = object()


# ---------------------------------------------------------------------------
# Column assembly shared by the readers


class _Collector:
    """Accumulates raw fields and structural errors, then converts whole columns."""

    def __init__(self, path: Path, on_error: str) -> None:
        self.path = path
        self.on_error = on_error
        self.line_numbers: list[int] = []
        self.users: list = []
        self.items: list = []
        self.times: list = []
        self.errors: list[tuple[int, str, str]] = []   # (line, kind, message)

    def add(self, line_no: int, user, item, ts) -> None:
        self.line_numbers.append(line_no)
        self.users.append(user.strip() if isinstance(user, str) else user)
        self.items.append(item.strip() if isinstance(item, str) else item)
        self.times.append(ts.strip() if isinstance(ts, str) else ts)

    def extend(self, line_numbers: list[int], users: list[str], items: list[str],
               times: list[str]) -> None:
        """Add whole columns of raw text fields (stripped here)."""
        self.line_numbers.extend(line_numbers)
        self.users.extend([u.strip() for u in users])
        self.items.extend([i.strip() for i in items])
        self.times.extend([t.strip() for t in times])

    def bad(self, line_no: int, kind: str, message: str) -> None:
        self.errors.append((line_no, kind, message))

    def finish(self) -> Interactions:
        line_numbers = np.asarray(self.line_numbers, dtype=np.int64)
        n = len(line_numbers)
        keep = np.ones(n, dtype=bool)

        # Value checks flag rows; they cannot raise before every row is seen,
        # so that the error reported is the first bad line of the file.
        for role, values in (("user", self.users), ("item", self.items)):
            empty = _empty_ids(values)
            for row in np.flatnonzero(empty):
                self.bad(int(line_numbers[row]), f"empty_{role}", f"empty {role} id")
            keep &= ~empty
        timestamps, bad_time = _parse_timestamps(self.times)
        for row in np.flatnonzero(bad_time):
            self.bad(int(line_numbers[row]), "timestamp",
                     f"timestamp {self.times[row]!r} is not a finite number "
                     "or an ISO 8601 date-time")
        keep &= ~bad_time

        if self.errors:
            self.errors.sort()
            if self.on_error == "raise":
                line_no, _, message = self.errors[0]
                more = len(self.errors) - 1
                suffix = f" ({more} more bad line{'s' * (more > 1)})" if more else ""
                raise DataError(f"{self.path}: line {line_no}: {message}{suffix}; "
                                "pass on_error='skip' to drop bad lines")
            self._log_skipped()

        rows = np.flatnonzero(keep)
        users = _ids_from_values(self.users, rows)
        items = _ids_from_values(self.items, rows)
        return Interactions(users, items, timestamps[rows], skipped=len(self.errors))

    def _log_skipped(self) -> None:
        counts = Counter(kind for _, kind, _ in self.errors)
        for kind, count in sorted(counts.items()):
            line_no, _, message = next(e for e in self.errors if e[1] == kind)
            logger.warning("skipped bad lines path=%s reason=%s count=%d first_line=%d "
                           "sample=%r", self.path, kind, count, line_no, message)


def _empty_ids(values: list) -> np.ndarray:
    if not values:
        return np.zeros(0, dtype=bool)
    return np.fromiter((v == "" for v in values), dtype=bool, count=len(values))


def _ids_from_values(values: list, rows: np.ndarray) -> np.ndarray:
    """Apply the id normalisation rule of the module docstring to one column."""
    if len(rows) == len(values):
        selected = values
    else:
        selected = [values[i] for i in rows]
    if not selected:
        return np.zeros(0, dtype=np.int64)
    distinct = set(selected)
    kinds = {type(v) for v in distinct}
    if kinds == {int}:
        if min(distinct) >= _INT64_MIN and max(distinct) <= _INT64_MAX:
            return np.array(selected, dtype=np.int64)
        return np.array([str(v) for v in selected], dtype=object)
    # Decide on the distinct values only: every one must be a canonical
    # integer ("5", not "05" or "+5") so that distinct ids never merge.
    numbers = {}
    for value in distinct:
        if isinstance(value, int):
            number = value
        elif _CANONICAL_INT.match(value):
            number = int(value)
        else:
            numbers = None
            break
        if not _INT64_MIN <= number <= _INT64_MAX:
            numbers = None
            break
        numbers[value] = number
    if numbers is None:
        return np.array([v if isinstance(v, str) else str(v) for v in selected], dtype=object)
    return np.fromiter(map(numbers.__getitem__, selected), dtype=np.int64, count=len(selected))


def _parse_timestamps(values: list) -> tuple[np.ndarray, np.ndarray]:
    """Return (float64 seconds with NaN for absent, mask of unparseable values)."""
    n = len(values)
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    kinds = {type(v) for v in values}
    if kinds <= {str}:
        absent = np.fromiter((v == "" for v in values), dtype=bool, count=n)
        try:
            result = np.array(["nan" if a else v for a, v in zip(absent, values)]
                              if absent.any() else values, dtype=np.float64)
        except ValueError:
            pass
        else:
            bad = ~absent & ~np.isfinite(result)
            return result, bad
    # Slow path: mixed JSON values, ISO dates, or at least one bad value.
    result = np.full(n, np.nan)
    bad = np.zeros(n, dtype=bool)
    for i, value in enumerate(values):
        try:
            seconds = _one_timestamp(value)
        except ValueError:
            bad[i] = True
            continue
        if seconds is not None:
            result[i] = seconds
    return result, bad


def _one_timestamp(value) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("boolean timestamp")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00")
                                            if value.endswith("Z") else value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            seconds = moment.timestamp()
    else:
        raise ValueError(f"timestamp of type {type(value).__name__}")
    if not math.isfinite(seconds):
        raise ValueError("non-finite timestamp")
    return seconds


# ---------------------------------------------------------------------------
# Files


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def _find_column(lowered: Sequence[str], names: Sequence[str]) -> int | None:
    for name in names:
        if name.lower() in lowered:
            return lowered.index(name.lower())
    return None


def _strip_gz(path: Path) -> Path:
    return path.with_suffix("") if path.suffix.lower() == ".gz" else path


def _open_text(path: Path) -> io.TextIOBase:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _read_lines(path: Path) -> list[str]:
    try:
        with _open_text(path) as stream:
            text = stream.read()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    # Split on "\n" only: str.splitlines() would also break JSON strings that
    # hold U+2028 and similar separators, and shift the line numbers.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]

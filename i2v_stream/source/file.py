"""Replay interactions from a file or stdin through the Kafka source's decode path.

Each line is one message for :class:`~i2v_stream.source.decode.Decoder`, and
:meth:`FileSource.poll_batch` returns the same
:class:`~i2v_stream.source.decode.PolledBatch` as the Kafka source, so the
daemon's apply-and-commit loop runs unchanged for a backfill.

Offsets: the file is one partition, ``TopicPartition("file:<absolute path>",
0)``, and the offset is the byte position just after the last line consumed.
Storing it with the state, as for Kafka, lets a backfill resume exactly where
it stopped. Stdin is ``file:-``; it cannot seek, so a resume discards that many
bytes first.

Formats: ``csv`` (``user,item[,ts]``), ``jsonl`` (one JSON object or array per
line), ``movielens`` (``u.data``: tab-separated ``user item rating ts``) and
``auto`` (JSON when a line starts with ``{`` or ``[``, CSV otherwise). With
``header="auto"`` a first line whose user and item columns read like column
names (``user``, ``user_id``, ``item``, ``movie_id``, ...) is skipped.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, Literal

from kafka.structs import TopicPartition

from i2v_stream.source.decode import (
    BadInputLog,
    BadMessage,
    Decoder,
    PolledBatch,
    Rejection,
    SourceError,
)

__all__ = [
    "FileSource",
    "FileSourceError",
    "decoder_for_format",
    "file_partition",
    "read_all",
]

logger = logging.getLogger(__name__)

FileFormat = Literal["auto", "csv", "jsonl", "movielens"]

_USER_HEADERS = {"user", "user_id", "userid", "uid", "u"}
_ITEM_HEADERS = {"item", "item_id", "itemid", "iid", "i", "movie", "movie_id", "movieid"}
_CHUNK = 1 << 16


class FileSourceError(SourceError):
    """The input file cannot be opened, read or positioned."""


def file_partition(path: str | os.PathLike[str]) -> TopicPartition:
    """The partition key of a file: ``TopicPartition("file:<absolute path>", 0)``.

    ``"-"`` stands for stdin and gives ``file:-``.
    """
    name = "-" if str(path) == "-" else str(Path(path).resolve())
    return TopicPartition(f"file:{name}", 0)


def decoder_for_format(fmt: FileFormat, **options) -> Decoder:
    """A :class:`Decoder` for one of the file formats; ``options`` go to it."""
    if fmt == "movielens":
        options.setdefault("delimiter", "\t")
        options.setdefault("columns", (0, 1, 3))
        return Decoder(format="csv", **options)
    if fmt == "jsonl":
        return Decoder(format="json", **options)
    if fmt in ("csv", "auto"):
        return Decoder(format=fmt, **options)
    raise FileSourceError(f"format must be auto, csv, jsonl or movielens, got {fmt!r}")


class FileSource:
    """Read interactions line by line from a file or stdin, in batches.

    Parameters
    ----------
    path : str or PathLike
        The file; ``"-"`` reads stdin.
    format : {"auto", "csv", "jsonl", "movielens"}
        Line format, used when ``decoder`` is None.
    decoder : Decoder or None
        Decoder for each line; overrides ``format``.
    header : {"auto"} or bool
        Whether the first line is a header to skip; ``"auto"`` guesses from its
        user and item columns. Only applies when reading from offset 0.
    start_offset : int or None
        Byte offset to start from (the offset stored after a previous run).
    stored_offsets : callable or None
        ``stored_offsets([partition]) -> {partition: offset or None}``, the same
        callback the Kafka source takes; used when ``start_offset`` is None.
    bad_input_log : BadInputLog or None
        Counts and logs rejected lines; None builds one.

    Raises
    ------
    FileSourceError
        When the file cannot be opened or positioned.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        format: FileFormat = "auto",  # noqa: A002 - the natural name
        decoder: Decoder | None = None,
        header: Literal["auto"] | bool = "auto",
        start_offset: int | None = None,
        stored_offsets: Callable[[list[TopicPartition]], Mapping] | None = None,
        bad_input_log: BadInputLog | None = None,
    ) -> None:
        self.path = str(path)
        self.partition = file_partition(path)
        self.decoder = decoder if decoder is not None else decoder_for_format(format)
        self.header = header
        self.bad_input_log = bad_input_log if bad_input_log is not None else BadInputLog(logger)
        if start_offset is None and stored_offsets is not None:
            start_offset = dict(stored_offsets([self.partition])).get(self.partition)
        self.offset = int(start_offset or 0)
        if self.offset < 0:
            raise FileSourceError(f"start_offset must be >= 0, got {self.offset}")
        self.exhausted = False
        self._stream = self._open()
        logger.info("file source opened partition=%s offset=%d", self.partition.topic,
                    self.offset)

    def _open(self) -> BinaryIO:
        if self.path == "-":
            stream: BinaryIO = sys.stdin.buffer
            self._discard(stream, self.offset)
            return stream
        try:
            stream = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise FileSourceError(f"cannot open input file path={self.path}: {exc}") from exc
        try:
            size = os.fstat(stream.fileno()).st_size
            if self.offset > size:
                raise FileSourceError(
                    f"stored offset={self.offset} is past the end of path={self.path} "
                    f"(size={size}); was the file replaced? Start from offset 0 or restore "
                    f"the matching file"
                )
            stream.seek(self.offset)
        except OSError as exc:
            stream.close()
            raise FileSourceError(f"cannot seek path={self.path} offset={self.offset}") from exc
        except FileSourceError:
            stream.close()
            raise
        return stream

    @staticmethod
    def _discard(stream: BinaryIO, n_bytes: int) -> None:
        while n_bytes > 0:
            chunk = stream.read(min(n_bytes, _CHUNK))
            if not chunk:
                raise FileSourceError("stdin ended before the stored offset was reached")
            n_bytes -= len(chunk)

    def poll_batch(self, max_events: int = 10_000, max_latency_s: float | None = None
                   ) -> PolledBatch:
        """Read lines until ``max_events`` events are decoded or the input ends.

        Parameters
        ----------
        max_events : int
            Stop once this many events are decoded.
        max_latency_s : float or None
            Accepted for symmetry with the Kafka source; a file read does not wait.
            Reading stdin blocks until a line or the end of input arrives.

        Returns
        -------
        PolledBatch
            ``next_offsets`` holds this file's partition and the byte offset after
            the last line read; empty once the input is exhausted.
        """
        batch = PolledBatch()
        if self.exhausted:
            return batch
        users, items, timestamps = batch.users, batch.items, batch.timestamps
        decode_into = self.decoder.decode_into
        readline = self._stream.readline
        limit = self.decoder.max_message_bytes + 2
        offset = self.offset
        n_lines = 0
        while len(users) < max_events:
            line = readline(limit)
            if not line:
                self.exhausted = True
                break
            line_offset = offset
            offset += len(line)
            if len(line) == limit and not line.endswith(b"\n"):
                # Longer than any accepted message: reject it, skip to its end.
                offset += self._skip_line()
                self._reject(
                    batch, line_offset, Rejection("too_large", f"line exceeds max_message_bytes="
                                                  f"{self.decoder.max_message_bytes}"), line,
                )
                n_lines += 1
                continue
            if line_offset == 0 and self._is_header(line):
                logger.info("skipping header line partition=%s", self.partition.topic)
                continue
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            n_lines += 1
            rejection = decode_into(line, users, items, timestamps)
            if rejection is not None:
                self._reject(batch, line_offset, rejection, line)
        if offset != self.offset:
            batch.next_offsets[self.partition] = offset
        batch.partitions = [self.partition] * len(users)
        batch.n_messages = n_lines
        self.offset = offset
        return batch

    def _skip_line(self) -> int:
        skipped = 0
        while True:
            chunk = self._stream.readline(_CHUNK)
            skipped += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                return skipped

    def _is_header(self, line: bytes) -> bool:
        if self.header is True:
            return True
        if self.header is False:
            return False
        try:
            text = line.decode("utf-8").strip().lower()
        except UnicodeDecodeError:
            return False
        if text[:1] in ("{", "["):
            return False
        fields = [field.strip().strip('"') for field in text.split(self.decoder.delimiter)]
        user_col, item_col, _ = self.decoder.columns
        if max(user_col, item_col) >= len(fields):
            return False
        user_names = _USER_HEADERS | {self.decoder.user_field.lower()}
        item_names = _ITEM_HEADERS | {self.decoder.item_field.lower()}
        return fields[user_col] in user_names and fields[item_col] in item_names

    def _reject(self, batch: PolledBatch, offset: int, rejection: Rejection, line: bytes) -> None:
        batch.bad.append(
            BadMessage(self.partition.topic, 0, offset, rejection, None, line)
        )
        self.bad_input_log.record(
            rejection, line, f"partition={self.partition.topic} offset={offset}"
        )

    def __iter__(self) -> Iterator[PolledBatch]:
        """Batches of up to 10,000 events until the input is exhausted."""
        while not self.exhausted:
            batch = self.poll_batch()
            if batch.n_messages or batch.bad or batch.next_offsets:
                yield batch

    def close(self) -> None:
        """Close the file (stdin is left open)."""
        if self._stream is not sys.stdin.buffer and not self._stream.closed:
            self._stream.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_all(path: str | os.PathLike[str], fmt: FileFormat = "auto") -> PolledBatch:
    """Every event of a file in one batch (for tests and small offline runs)."""
    with FileSource(path, format=fmt) as source:
        total = PolledBatch()
        for batch in source:
            total.users.extend(batch.users)
            total.items.extend(batch.items)
            total.timestamps.extend(batch.timestamps)
            total.partitions.extend(batch.partitions)
            total.bad.extend(batch.bad)
            total.n_messages += batch.n_messages
            total.next_offsets.update(batch.next_offsets)
    return total


"""Where interaction events come from: Kafka topics, or files and stdin for backfill.

Every source turns message values into events through one
:class:`~i2v_stream.source.decode.Decoder` and returns the same
:class:`~i2v_stream.source.decode.PolledBatch`: events, the next offset of each
partition read (store it with the state those events produce) and the rejected
messages. ``KafkaSource`` and ``FileSource`` are imported on first use, so
decoding alone does not load kafka-python.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from i2v_stream.source.decode import (
    REASONS,
    BadInputLog,
    BadMessage,
    DecodeConfigError,
    Decoder,
    Event,
    PolledBatch,
    Rejection,
    SourceError,
)

if TYPE_CHECKING:
    from i2v_stream.source.file import FileSource, FileSourceError
    from i2v_stream.source.kafka import KafkaSource, KafkaSourceError

__all__ = [
    "REASONS",
    "BadInputLog",
    "BadMessage",
    "DecodeConfigError",
    "Decoder",
    "Event",
    "FileSource",
    "FileSourceError",
    "KafkaSource",
    "KafkaSourceError",
    "PolledBatch",
    "Rejection",
    "SourceError",
]

_LAZY = {
    "KafkaSource": "i2v_stream.source.kafka",
    "KafkaSourceError": "i2v_stream.source.kafka",
    "FileSource": "i2v_stream.source.file",
    "FileSourceError": "i2v_stream.source.file",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)

"""Configuration of the streaming daemon (``i2v-stream run``).

Every option is a field of :class:`DaemonConfig` with a default. An option can
be set in four places; a later one overrides an earlier one:

1. the default (the field's default here);
2. the YAML file given by ``--config FILE`` (or ``I2V_CONFIG``);
3. the environment variable ``I2V_<NAME>``, e.g. ``I2V_BOOTSTRAP_SERVERS``;
4. the command-line flag ``--<name>`` (underscores written as dashes).

The file uses the flags' names, written with underscores or dashes
(``bootstrap_servers: kafka:9092``, ``max-batch-events: 2000``). Keys may also
be grouped in sections, as the deployment files do: ``store: {path: ...}``,
``source: {kind: kafka, topics: [...]}``, ``snapshots: {interval_seconds: 600,
keep: 6}``, ``metrics: {host: ..., port: ...}``, ``batch: {max_events: ...}``,
``model: {dim: ...}``, ``kafka: {session_timeout_ms: ...}``; a key inside a
section is either an option name or one of the aliases in :data:`SECTION_ALIASES`.

Values from the environment and the command line are strings and are parsed
per option (``true``/``false`` for booleans, ``off``/``none`` for options that
can be switched off, comma lists for ``topics``). A wrong value raises
:class:`ConfigError` naming the option, where it came from and what is
expected. Unknown keys in the file are errors too, so a typo never silently
falls back to a default.

Model hyperparameters (``dim``, ``negatives``, ...) default to ``None``,
meaning the model's own default; they only apply when the daemon creates a new
store. An existing store keeps the parameters it was created with (``dim``,
``window`` and ``history_size`` must then match if given).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_PREFIX",
    "MODEL_OPTIONS",
    "SECTION_ALIASES",
    "ConfigError",
    "DaemonConfig",
    "load_config",
    "option_names",
]

ENV_PREFIX = "I2V_"
CONFIG_ENV = "I2V_CONFIG"


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message names the option."""


# ---------------------------------------------------------------- value parsers
#
# Each parser takes a value from YAML (already typed) or from the environment
# or a flag (a string), and returns the typed value or raises ValueError with
# the expected form; the caller turns that into a ConfigError naming the option.

_OFF = ("off", "none", "null", "")


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty string")
    return value.strip()


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_optional(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in _OFF):
            return None
        return parse(value)

    parse_optional.expected = getattr(parse, "expected", "")  # type: ignore[attr-defined]
    return parse_optional


def _int(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    bounds = _bounds_text(low, high)

    def parse_int(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"an integer{bounds}")
        if isinstance(value, str):
            try:
                value = int(value.strip().replace("_", ""))
            except ValueError:
                raise ValueError(f"an integer{bounds}") from None
        if not isinstance(value, int):
            raise ValueError(f"an integer{bounds}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"an integer{bounds}")
        return value

    return parse_int


def _float(low: float | None = None, high: float | None = None,
           low_open: bool = False) -> Callable[[Any], float]:
    bounds = _bounds_text(low, high, low_open)

    def parse_float(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(f"a number{bounds}")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"a number{bounds}") from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"a finite number{bounds}")
        value = float(value)
        if low is not None and (value < low or (low_open and value == low)):
            raise ValueError(f"a number{bounds}")
        if high is not None and value > high:
            raise ValueError(f"a number{bounds}")
        return value

    return parse_float


def _bounds_text(low, high, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}]"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
    raise ValueError("true or false")


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse_choice(value: Any) -> str:
        if isinstance(value, str) and value.strip() in choices:
            return value.strip()
        raise ValueError("one of " + ", ".join(repr(c) for c in choices))

    return parse_choice


def _topics(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        parts = [value]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ValueError("a topic name, a comma-separated list or a list of names")
    topics: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise ValueError("topic names (strings)")
        for name in part.split(","):
            name = name.strip()
            if name and name not in topics:
                topics.append(name)
    return tuple(topics)


# ---------------------------------------------------------------- the options


def _opt(default: Any, parse: Callable[[Any], Any], help: str,  # noqa: A002
         group: str = "daemon") -> Any:
    return field(default=default, metadata={"parse": parse, "help": help, "group": group})


@dataclass(frozen=True)
class DaemonConfig:
    """Every option of ``i2v-stream run``; see the module docstring for precedence.

    Units are in the names: ``_seconds`` and ``_ms`` (milliseconds, as Kafka
    clients spell them).
    """

    # where state lives
    store: str | None = _opt(None, _optional(_text), "store directory (created when missing)")
    store_sync: bool = _opt(False, _bool, "fsync the write-ahead log on every commit")

    # source
    source: str | None = _opt(
        None, _optional(_choice("kafka", "file")),
        "event source: kafka or file (default: file when --input is set, else kafka)",
        "source")
    bootstrap_servers: str = _opt("localhost:9092", _text, "Kafka bootstrap host:port list",
                                  "source")
    topics: tuple[str, ...] = _opt((), _topics, "topic(s) to consume; repeat or comma-separate",
                                   "source")
    group_id: str = _opt("i2v-stream", _text, "Kafka consumer group", "source")
    group_instance_id: str | None = _opt(
        None, _optional(_text),
        "static group membership id: a restart within the session timeout gets its "
        "partitions back without a rebalance", "source")
    input: str | None = _opt(None, _optional(_text),
                             "read events from this file ('-' = stdin) instead of Kafka",
                             "source")
    input_format: str = _opt("auto", _choice("auto", "csv", "jsonl", "movielens"),
                             "line format of --input", "source")
    dead_letter_topic: str | None = _opt(None, _optional(_text),
                                         "produce rejected messages to this topic", "source")
    auto_offset_reset: str = _opt("earliest", _choice("earliest", "latest"),
                                  "where a partition without a stored offset starts", "source")
    session_timeout_ms: int = _opt(10_000, _int(1), "Kafka consumer session timeout", "source")
    heartbeat_interval_ms: int = _opt(3_000, _int(1), "Kafka consumer heartbeat interval",
                                      "source")
    max_poll_interval_ms: int = _opt(
        300_000, _int(1),
        "Kafka max poll interval (also the group-join wait on some brokers)", "source")
    request_timeout_ms: int = _opt(30_000, _int(1), "Kafka request timeout", "source")

    # the loop
    max_batch_events: int = _opt(50_000, _int(1), "events per micro-batch, at most", "loop")
    max_batch_seconds: float = _opt(0.5, _float(0.0, low_open=True),
                                    "seconds to wait for a micro-batch to fill, at most", "loop")
    lag_interval_seconds: float = _opt(5.0, _float(0.0),
                                       "seconds between consumer-lag updates (0 = every batch)",
                                       "loop")
    idle_exit_seconds: float | None = _opt(
        None, _optional(_float(0.0, low_open=True)),
        "exit 0 after this many seconds without messages (backfills, tests); off by default",
        "loop")
    commit_retries: int = _opt(3, _int(0), "retries of a failed store commit before exiting",
                               "loop")

    # snapshots
    snapshot_dir: str | None = _opt(None, _optional(_text),
                                    "snapshot directory (default: 'snapshots' next to the store)",
                                    "snapshots")
    snapshot_interval_seconds: float | None = _opt(
        None, _optional(_float(0.0, low_open=True)), "snapshot every this many seconds",
        "snapshots")
    snapshot_every_events: int | None = _opt(None, _optional(_int(1)),
                                             "snapshot every this many applied events",
                                             "snapshots")
    snapshot_keep: int = _opt(5, _int(1), "snapshots kept", "snapshots")

    # metrics and logging
    metrics_host: str = _opt("127.0.0.1", _text, "address of the /metrics endpoint", "metrics")
    metrics_port: int | None = _opt(9108, _optional(_int(0, 65535)),
                                    "port of the /metrics endpoint (0 = any free, off = none)",
                                    "metrics")
    log_level: str | None = _opt(None, _optional(_choice("DEBUG", "INFO", "WARNING", "ERROR")),
                                 "log level of the daemon (overrides --log-level)", "metrics")

    # model hyperparameters, used when a new store is created
    seed: int | None = _opt(None, _optional(_int(0)), "random seed", "model")
    dim: int | None = _opt(None, _optional(_int(1, 4096)), "vector dimension", "model")
    negatives: int | None = _opt(None, _optional(_int(0)), "noise items per pair", "model")
    window: int | None = _opt(None, _optional(_int(0)),
                              "item->item window (0 = user->item only)", "model")
    alpha: float | None = _opt(None, _optional(_float(-10.0, 10.0)), "noise exponent", "model")
    sample: float | None = _opt(None, _optional(_float(0.0, 1.0)), "subsampling threshold",
                                "model")
    learning_rate: float | None = _opt(None, _optional(_float(0.0, 10.0, low_open=True)),
                                       "SGD learning rate", "model")
    min_learning_rate: float | None = _opt(None, _optional(_float(0.0, 10.0)),
                                           "final learning rate of offline fits", "model")
    repeats: int | None = _opt(None, _optional(_int(1, 100)), "updates per event", "model")
    l2: float | None = _opt(None, _optional(_float(0.0, 1.0)), "L2 on touched rows", "model")
    init: str | None = _opt(None, _optional(_choice("uniform", "word2vec")),
                            "row initialisation", "model")
    init_scale: float | None = _opt(None, _optional(_float(0.0, 10.0)),
                                    "half-width of the uniform initialisation", "model")
    history_size: int | None = _opt(None, _optional(_int(0)), "recent items kept per user",
                                    "model")
    noise_refresh: int | None = _opt(None, _optional(_int(1)),
                                     "events between noise-table rebuilds", "model")
    scoring: str | None = _opt(None, _optional(_choice("cosine", "dot")),
                               "recommendation score", "model")

    @property
    def source_kind(self) -> str:
        """``"file"`` or ``"kafka"``, resolving the default from ``input``."""
        if self.source is not None:
            return self.source
        return "file" if self.input is not None else "kafka"

    def model_params(self) -> dict[str, Any]:
        """Model hyperparameters that were set (None ones are left to the model)."""
        return {name: getattr(self, name) for name in MODEL_OPTIONS
                if getattr(self, name) is not None}

    def consumer_config(self) -> dict[str, Any]:
        """Extra ``KafkaConsumer`` settings."""
        config: dict[str, Any] = {
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "max_poll_interval_ms": self.max_poll_interval_ms,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.group_instance_id is not None:
            config["group_instance_id"] = self.group_instance_id
        return config


_FIELDS = {f.name: f for f in dataclasses.fields(DaemonConfig)}
MODEL_OPTIONS = tuple(name for name, f in _FIELDS.items() if f.metadata["group"] == "model")

#: ``(section, key) -> option`` for the grouped file layout; other keys of a
#: section must be option names.
SECTION_ALIASES: dict[tuple[str, str], str] = {
    ("store", "path"): "store",
    ("store", "sync"): "store_sync",
    ("source", "kind"): "source",
    ("source", "topic"): "topics",
    ("source", "format"): "input_format",
    ("snapshots", "dir"): "snapshot_dir",
    ("snapshots", "interval_seconds"): "snapshot_interval_seconds",
    ("snapshots", "every_events"): "snapshot_every_events",
    ("snapshots", "keep"): "snapshot_keep",
    ("metrics", "host"): "metrics_host",
    ("metrics", "port"): "metrics_port",
    ("batch", "max_events"): "max_batch_events",
    ("batch", "max_seconds"): "max_batch_seconds",
}
_SECTIONS = {section for section, _ in SECTION_ALIASES} | {"model", "kafka", "loop", "daemon"}
_TOP_ALIASES = {"topic": "topics"}


def option_names() -> tuple[str, ...]:
    """Every option name, in declaration order."""
    return tuple(_FIELDS)


def env_name(option: str) -> str:
    """The environment variable of an option: ``I2V_`` + upper-case name."""
    return ENV_PREFIX + option.upper()


def flag_name(option: str) -> str:
    """The command-line flag of an option."""
    return "--" + ("topic" if option == "topics" else option.replace("_", "-"))


# ---------------------------------------------------------------- loading


def _canonical(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise ConfigError(f"{where}: keys must be option names, got {key!r}")
    name = key.strip().replace("-", "_")
    name = _TOP_ALIASES.get(name, name)
    if name not in _FIELDS:
        close = difflib.get_close_matches(name, list(_FIELDS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}: unknown option {key!r}{hint}")
    return name


def _flatten_file(data: Mapping, path: str) -> dict[str, tuple[Any, str]]:
    values: dict[str, tuple[Any, str]] = {}
    for key, value in data.items():
        section = key.strip().replace("-", "_") if isinstance(key, str) else key
        if section in _SECTIONS and isinstance(value, Mapping):
            for sub_key, sub_value in value.items():
                sub = sub_key.replace("-", "_") if isinstance(sub_key, str) else sub_key
                name = SECTION_ALIASES.get((section, sub))
                if name is None:
                    name = _canonical(sub_key, f"config file {path} section {section!r}")
                values[name] = (sub_value, f"config file {path} ({section}.{sub_key})")
        else:
            name = _canonical(key, f"config file {path}")
            values[name] = (value, f"config file {path}")
    return values


def read_config_file(path: str | os.PathLike) -> dict[str, tuple[Any, str]]:
    """Options from a YAML file: ``{option: (value, origin)}``."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config: cannot read config file {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: {path} must hold a mapping of option names to values")
    return _flatten_file(data, str(path))


def read_env(environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """Options set as ``I2V_<NAME>`` variables: ``{option: (value, origin)}``."""
    values = {}
    for name in _FIELDS:
        variable = env_name(name)
        if variable in environ:
            values[name] = (environ[variable], f"environment {variable}")
    return values


def _parse(name: str, value: Any, origin: str) -> Any:
    parse = _FIELDS[name].metadata["parse"]
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(
            f"{name}: expected {exc}, got {value!r} (from {origin})"
        ) from exc


def load_config(
    flags: Mapping[str, Any] | None = None,
    config_file: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
) -> DaemonConfig:
    """Build the daemon's configuration: defaults < file < environment < flags.

    Parameters
    ----------
    flags : mapping, optional
        Options given on the command line (only those given), values as
        strings or already typed.
    config_file : path-like, optional
        YAML file; when None, ``I2V_CONFIG`` from ``environ`` is used if set.
    environ : mapping, optional
        Environment; ``os.environ`` when None.

    Returns
    -------
    DaemonConfig

    Raises
    ------
    ConfigError
        A value is wrong (the message names the option and what is expected),
        an option is unknown, or a required option is missing.
    """
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get(CONFIG_ENV):
        config_file = environ[CONFIG_ENV]

    layers: dict[str, tuple[Any, str]] = {}
    if config_file is not None:
        layers.update(read_config_file(config_file))
    layers.update(read_env(environ))
    for key, value in (flags or {}).items():
        name = _canonical(key, "command line")
        layers[name] = (value, f"flag {flag_name(name)}")

    values = {name: _parse(name, value, origin) for name, (value, origin) in layers.items()}
    config = DaemonConfig(**values)
    _check(config, layers)
    return config


def _origin(layers: Mapping[str, tuple[Any, str]], name: str) -> str:
    return layers[name][1] if name in layers else "default"


def _check(config: DaemonConfig, layers: Mapping[str, tuple[Any, str]]) -> None:
    """Checks that involve more than one option."""
    if config.store is None:
        raise ConfigError(
            f"store: expected a store directory, got nothing; set {flag_name('store')}, "
            f"{env_name('store')} or 'store:' in the config file"
        )
    kind = config.source_kind
    if kind == "kafka" and not config.topics:
        raise ConfigError(
            f"topics: expected at least one topic for the Kafka source, got none; set "
            f"{flag_name('topics')}, {env_name('topics')} or 'topics:' in the config file "
            "(or --input FILE for a backfill)"
        )
    if kind == "file" and config.input is None:
        raise ConfigError(
            f"input: expected a file or '-' with source=file (from {_origin(layers, 'source')})"
        )
    if config.heartbeat_interval_ms >= config.session_timeout_ms:
        raise ConfigError(
            f"heartbeat_interval_ms: expected less than session_timeout_ms="
            f"{config.session_timeout_ms}, got {config.heartbeat_interval_ms} "
            f"(from {_origin(layers, 'heartbeat_interval_ms')})"
        )
    if (config.learning_rate is not None and config.min_learning_rate is not None
            and config.min_learning_rate > config.learning_rate):
        raise ConfigError(
            f"min_learning_rate: expected at most learning_rate={config.learning_rate}, got "
            f"{config.min_learning_rate} (from {_origin(layers, 'min_learning_rate')})"
        )

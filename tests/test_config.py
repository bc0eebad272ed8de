"""Daemon configuration: defaults < file < environment < flags; bad values name the option."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from i2v_stream.config import ConfigError, DaemonConfig, load_config, option_names
from services import daemon


def write(tmp_path, text: str):
    path = tmp_path / "daemon.yaml"
    path.write_text(text)
    return path


def parse_flags(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    daemon.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_apply_when_nothing_is_set():
    config = load_config({"store": "s", "topics": "t"}, environ={})
    assert config.bootstrap_servers == "localhost:9092"
    assert config.group_id == "i2v-stream"
    assert config.max_batch_events == DaemonConfig.max_batch_events
    assert config.metrics_port == 9108
    assert config.model_params() == {}
    assert config.source_kind == "kafka"


def test_flags_override_env_which_overrides_the_file(tmp_path):
    path = write(tmp_path, "store: /from/file\nbootstrap_servers: file:1\ngroup_id: file-group\n"
                           "topics: [a, b]\nmax_batch_events: 10\n")
    environ = {"I2V_BOOTSTRAP_SERVERS": "env:2", "I2V_GROUP_ID": "env-group"}
    config = load_config({"group_id": "flag-group"}, path, environ)
    assert config.store == "/from/file"              # file only
    assert config.topics == ("a", "b")
    assert config.max_batch_events == 10
    assert config.bootstrap_servers == "env:2"       # env over file
    assert config.group_id == "flag-group"           # flag over env


def test_command_line_flags_through_the_daemon_parser(tmp_path):
    path = write(tmp_path, "store: s\nseed: 1\n")
    args = parse_flags(["--config", str(path), "--topic", "a,b", "--topic", "c", "--seed", "5",
                        "--metrics-port", "off", "--store-sync", "--dim", "32"])
    config = daemon.config_from_args(args, environ={"I2V_SEED": "3"})
    assert config.topics == ("a", "b", "c")
    assert config.seed == 5
    assert config.metrics_port is None
    assert config.store_sync is True
    assert config.model_params() == {"seed": 5, "dim": 32}


def test_config_file_from_the_environment(tmp_path):
    path = write(tmp_path, "store: s\ninput: events.csv\n")
    config = load_config({}, environ={"I2V_CONFIG": str(path)})
    assert config.source_kind == "file"
    assert config.input == "events.csv"


def test_grouped_file_layout_of_the_deployment_files(tmp_path):
    path = write(tmp_path, """
source: {kind: kafka, bootstrap_servers: "kafka:9092", topics: [interactions],
         group_id: i2v, dead_letter_topic: dlq}
store: {path: /var/lib/store}
snapshots: {dir: /var/lib/snap, interval_seconds: 600, keep: 6}
metrics: {host: 0.0.0.0, port: 9108}
model: {dim: 64}
kafka: {session_timeout_ms: 20000}
""")
    config = load_config({}, path, {})
    assert (config.bootstrap_servers, config.topics, config.group_id) == (
        "kafka:9092", ("interactions",), "i2v")
    assert config.dead_letter_topic == "dlq"
    assert config.store == "/var/lib/store"
    assert (config.snapshot_dir, config.snapshot_interval_seconds, config.snapshot_keep) == (
        "/var/lib/snap", 600.0, 6)
    assert (config.metrics_host, config.metrics_port) == ("0.0.0.0", 9108)
    assert config.dim == 64 and config.session_timeout_ms == 20000


def test_dashes_and_underscores_are_the_same_name_in_the_file(tmp_path):
    path = write(tmp_path, "store: s\ntopic: t\nmax-batch-events: 7\n")
    assert load_config({}, path, {}).max_batch_events == 7


@pytest.mark.parametrize("source, value, expected", [
    ("flag", "many", "max_batch_events: expected an integer >= 1, got 'many'"),
    ("env", "0", "max_batch_events: expected an integer >= 1, got '0'"),
    ("file", "-3", "max_batch_events: expected an integer >= 1, got -3"),
])
def test_a_bad_value_names_the_option_the_expected_value_and_its_origin(
        tmp_path, source, value, expected):
    flags, environ, path = {"store": "s", "topics": "t"}, {}, None
    if source == "flag":
        flags["max_batch_events"] = value
    elif source == "env":
        environ["I2V_MAX_BATCH_EVENTS"] = value
    else:
        path = write(tmp_path, f"max_batch_events: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(flags, path, environ)
    message = str(info.value)
    assert expected in message
    origin = {"flag": "flag --max-batch-events", "env": "environment I2V_MAX_BATCH_EVENTS",
              "file": "config file"}[source]
    assert origin in message


@pytest.mark.parametrize("option, value, fragment", [
    ("auto_offset_reset", "middle", "one of 'earliest', 'latest'"),
    ("store_sync", "maybe", "true or false"),
    ("max_batch_seconds", "nan", "a finite number > 0"),
    ("metrics_port", "70000", "an integer in [0, 65535]"),
    ("learning_rate", "0", "a number in (0.0, 10.0]"),
    ("topics", "5", None),
])
def test_each_kind_of_option_rejects_its_wrong_values(option, value, fragment):
    flags = {"store": "s", "topics": "t", option: value}
    if fragment is None:                      # "5" is a valid topic name
        load_config(flags, environ={})
        return
    with pytest.raises(ConfigError, match=option) as info:
        load_config(flags, environ={})
    assert fragment in str(info.value)


def test_unknown_file_keys_are_errors_with_a_suggestion(tmp_path):
    path = write(tmp_path, "store: s\ntopics: t\nbootstrap_server: x\n")
    with pytest.raises(ConfigError, match="did you mean 'bootstrap_servers'"):
        load_config({}, path, {})


def test_missing_store_and_topics_are_reported():
    with pytest.raises(ConfigError, match="^store:"):
        load_config({"topics": "t"}, environ={})
    with pytest.raises(ConfigError, match="^topics:"):
        load_config({"store": "s"}, environ={})


def test_cross_option_checks_name_the_option():
    with pytest.raises(ConfigError, match="heartbeat_interval_ms"):
        load_config({"store": "s", "topics": "t", "heartbeat_interval_ms": "9000",
                     "session_timeout_ms": "5000"}, environ={})


def test_bad_yaml_is_a_config_error(tmp_path):
    path = write(tmp_path, "store: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config({}, path, {})


def test_every_option_has_a_flag_and_an_env_var():
    parser = argparse.ArgumentParser()
    daemon.add_arguments(parser)
    dests = {action.dest for action in parser._actions}
    assert set(option_names()) - set(daemon.NO_FLAG) <= dests
    for name in option_names():
        config = load_config({"store": "s", "topics": "t"}, environ={})
        assert hasattr(config, name)


def test_the_deployment_config_file_loads():
    path = Path(__file__).resolve().parents[1] / "deploy" / "config" / "daemon.yaml"
    if not path.is_file():
        pytest.skip("no deploy/config/daemon.yaml")
    config = load_config({}, path, {})
    assert config.store and config.topics and config.metrics_port


def test_log_level_comes_from_file_or_env_over_the_global_flag(tmp_path):
    args = parse_flags(["--store", "s", "--topic", "t"])
    args.log_level = "INFO"                   # what `i2v-stream --log-level` leaves
    config = daemon.config_from_args(args, environ={"I2V_LOG_LEVEL": "DEBUG"})
    assert config.log_level == "DEBUG"


def test_daemon_exits_2_on_a_config_error(tmp_path, caplog):
    args = parse_flags(["--store", str(tmp_path / "s"), "--topic", "t",
                        "--max-batch-events", "lots", "--metrics-port", "off"])
    assert daemon.run(args) == daemon.EXIT_CONFIG
    assert "max_batch_events" in caplog.text

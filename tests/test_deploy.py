"""Static checks of deploy/: Prometheus, alert rules, Grafana, compose, Kubernetes, systemd.

Nothing here starts a service. The checks that need ``promtool`` (Debian package
``prometheus``) fail when ``CI=true`` and it is missing, and are skipped with a
reason elsewhere. ``tests/test_dashboards_live.py`` runs the same PromQL against a
real Prometheus scraping the real daemon and query service.

The helpers at the top (``dashboard_queries``, ``alert_rules``, ``metric_names``,
``alert_operands``) are imported by the live test as well.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "i2v-stream.json"
K8S_DIR = DEPLOY / "k8s"
SYSTEMD_DIR = DEPLOY / "systemd"

#: The metric names of the README's metrics reference and their types. Series of a histogram
#: ``x`` are ``x_bucket``, ``x_sum`` and ``x_count``; a counter's name ends in
#: ``_total``.
CONTRACT_METRICS = {
    # daemon
    "i2v_messages_consumed_total": "counter",
    "i2v_events_consumed_total": "counter",
    "i2v_events_applied_total": "counter",
    "i2v_events_skipped_total": "counter",
    "i2v_events_dead_lettered_total": "counter",
    "i2v_training_loss": "gauge",
    "i2v_batch_size_events": "histogram",
    "i2v_batch_duration_seconds": "histogram",
    "i2v_store_commit_duration_seconds": "histogram",
    "i2v_store_size_bytes": "gauge",
    "i2v_consumer_lag_events": "gauge",
    "i2v_users_known": "gauge",
    "i2v_items_known": "gauge",
    "i2v_snapshot_age_seconds": "gauge",
    "i2v_snapshot_duration_seconds": "histogram",
    "i2v_rebalances_total": "counter",
    "i2v_last_commit_timestamp_seconds": "gauge",
    # query service
    "i2v_http_requests_total": "counter",
    "i2v_http_request_duration_seconds": "histogram",
    "i2v_reader_staleness_seconds": "gauge",
    "i2v_reader_catchups_total": "counter",
}

#: Series Prometheus itself writes for every target.
PROMETHEUS_BUILTIN_SERIES = {"up"}

#: Grafana's interval variables, replaced by a fixed duration wherever the PromQL
#: is evaluated outside Grafana.
GRAFANA_INTERVAL_VARIABLES = ("$__rate_interval", "$__interval", "$__range")


# ---------------------------------------------------------------- helpers


def series_names() -> set[str]:
    """Every series name the contract metrics expose."""
    names = set()
    for name, kind in CONTRACT_METRICS.items():
        if kind == "histogram":
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(name)
    return names


def _panels(panels: list[dict]) -> Iterator[dict]:
    # Collapsed rows keep their panels inside the row.
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_queries(rate_interval: str = "5m") -> list[tuple[str, str]]:
    """``(panel title / refId, PromQL)`` of every target of the dashboard.

    Grafana's interval variables are replaced by ``rate_interval``.
    """
    queries = []
    for panel in _panels(load_dashboard()["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable in GRAFANA_INTERVAL_VARIABLES:
                expr = expr.replace(variable, rate_interval)
            queries.append((f"{panel['title']} / {target['refId']}", expr))
    return queries


def alert_rules() -> list[dict]:
    """Every rule of alerts.yml, each a dict with ``alert``, ``expr``, ``for``, ..."""
    document = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


_KEYWORDS = {
    # binary operators and modifiers
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "atan2",
    # aggregation operators (may be followed by `by (...)` rather than `(`)
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
    # number literals
    "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric (series) names a PromQL expression selects.

    A small lexer, enough for the expressions of this repository: strings,
    label matchers, range selectors and label lists of ``by``/``on``/... are
    removed, then every identifier that is not a function call, an operator
    keyword or a number is a metric name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" \1 ", text
    )
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = match.group(0)
        if token.lower() in _KEYWORDS:
            continue
        if text[match.end():].lstrip().startswith("("):
            continue  # a function call
        names.add(token)
    return names


_SPLIT_OPERATOR = re.compile(r"==|!=|>=|<=|>|<|(?<!\w)(?:and|or|unless)(?!\w)")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?([eE][+-]?\d+)?|\.\d+|inf|nan)$", re.IGNORECASE)
_MODIFIERS = re.compile(
    r"^\s*(bool\b|(on|ignoring|group_left|group_right)\s*\([^)]*\)|"
    r"group_left\b|group_right\b)\s*"
)


def alert_operands(expr: str) -> list[str]:
    """Split an alert expression at its top-level comparisons and set operators.

    An alert expression such as ``rate(x[5m]) > 0.05 and y > 0`` returns nothing
    while the system is healthy, so "returns data" is checked on its operands
    (``rate(x[5m])`` and ``y``). Number literals (``0.05``, ``3 * 3600``) are left
    out; operator modifiers (``on (...)``, ``bool``) are stripped.
    """
    text = " ".join(expr.split())
    pieces, start, depth, index = [], 0, 0, 0
    while index < len(text):
        char = text[index]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == '"':
            # Skip the string literal, escaped quotes included.
            index = re.compile(r'"(?:[^"\\]|\\.)*"').match(text, index).end()
            continue
        elif depth == 0:
            match = _SPLIT_OPERATOR.match(text, index)
            if match:
                pieces.append(text[start:index])
                start = index = match.end()
                continue
        index += 1
    pieces.append(text[start:])

    operands = []
    for piece in pieces:
        piece = _MODIFIERS.sub("", piece).strip()
        if piece and not _is_number_expression(piece):
            operands.append(piece)
    return operands


def _is_number_expression(piece: str) -> bool:
    # "0.05", "3 * 3600", "Inf": arithmetic on literals only.
    tokens = re.split(r"[\s*/+\-()]+", piece)
    return all(not token or _NUMBER.match(token) for token in tokens)


@pytest.fixture(scope="module")
def promtool() -> str:
    """Path of ``promtool``; a failure in CI, a skip elsewhere, when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        message = (
            "promtool not found; it comes with Debian's `prometheus` package "
            "(apt-get install prometheus)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    return path


def run_promtool(promtool: str, *args: str, cwd: Path = PROMETHEUS_DIR) -> str:
    result = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


# ---------------------------------------------------------------- helpers' own checks


def test_metric_names_finds_selectors_only():
    expr = (
        'histogram_quantile(0.99, sum by (route, le) '
        '(rate(i2v_http_request_duration_seconds_bucket{status=~"5.."}[5m]))) > 1e3 '
        "and on (job) time() - max(i2v_last_commit_timestamp_seconds offset 5m) > Inf"
    )
    assert metric_names(expr) == {
        "i2v_http_request_duration_seconds_bucket", "i2v_last_commit_timestamp_seconds",
    }


def test_alert_operands_split_at_top_level_only():
    expr = (
        '(sum by (job) (rate(x_total{status=~"5.."}[5m])) or sum(y) * 0) / sum(z) > 0.01\n'
        "and on (job) time() - w > 3 * 3600"
    )
    assert alert_operands(expr) == [
        '(sum by (job) (rate(x_total{status=~"5.."}[5m])) or sum(y) * 0) / sum(z)',
        "time() - w",
    ]
    assert alert_operands("a != a or abs(a) == Inf") == ["a", "a", "abs(a)"]


# ---------------------------------------------------------------- Prometheus


def test_prometheus_config_is_valid(promtool):
    run_promtool(promtool, "check", "config", "prometheus.yml")


def test_alert_rules_are_valid(promtool):
    run_promtool(promtool, "check", "rules", "alerts.yml")


def test_alert_rules_pass_their_unit_tests(promtool):
    run_promtool(promtool, "test", "rules", "alerts_test.yml")


def test_prometheus_config_loads_the_alert_rules():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    # The alerts select `up{job=~"i2v-.*"}`.
    assert {"i2v-daemon", "i2v-serve"} <= jobs


REQUIRED_ALERT_METRICS = {
    "consumer lag growing": {"i2v_consumer_lag_events"},
    "no applied events": {"i2v_events_applied_total", "i2v_consumer_lag_events"},
    "no commit": {"i2v_last_commit_timestamp_seconds", "i2v_consumer_lag_events"},
    "bad-message rate": {"i2v_events_skipped_total"},
    "snapshot too old": {"i2v_snapshot_age_seconds"},
    "training loss not finite": {"i2v_training_loss"},
    "query error rate": {"i2v_http_requests_total"},
    "query latency": {"i2v_http_request_duration_seconds_bucket"},
}


def test_alerts_cover_the_failure_modes():
    used = [metric_names(rule["expr"]) for rule in alert_rules()]
    for mode, metrics in REQUIRED_ALERT_METRICS.items():
        assert any(metrics <= names for names in used), f"no alert for {mode}: {metrics}"


def test_alerts_reference_contract_metrics_only():
    known = series_names() | PROMETHEUS_BUILTIN_SERIES
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']} selects no metric"
        assert names <= known, f"{rule['alert']} uses unknown metrics {names - known}"


def test_alerts_have_severity_summary_and_description():
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"].get("summary"), rule["alert"]
        assert rule["annotations"].get("description"), rule["alert"]


def test_every_alert_has_firing_and_quiet_unit_tests():
    document = yaml.safe_load(
        (PROMETHEUS_DIR / "alerts_test.yml").read_text(encoding="utf-8")
    )
    firing, quiet = set(), set()
    for test in document["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts - firing == set(), "alerts without a firing case"
    assert alerts - quiet == set(), "alerts without a not-firing case"


# ---------------------------------------------------------------- Grafana


REQUIRED_PANEL_METRICS = {
    "throughput": {"i2v_events_consumed_total", "i2v_events_applied_total"},
    "lag per partition": {"i2v_consumer_lag_events"},
    "training loss": {"i2v_training_loss"},
    "batch latency": {"i2v_batch_duration_seconds_bucket"},
    "store commit latency": {"i2v_store_commit_duration_seconds_bucket"},
    "skipped by reason": {"i2v_events_skipped_total"},
    "store size": {"i2v_store_size_bytes"},
    "snapshot age": {"i2v_snapshot_age_seconds"},
    "users/items known": {"i2v_users_known", "i2v_items_known"},
    "query rate": {"i2v_http_requests_total"},
    "query latency": {"i2v_http_request_duration_seconds_bucket"},
    "reader staleness": {"i2v_reader_staleness_seconds"},
}


def test_dashboard_is_valid_json_with_unique_panel_ids():
    dashboard = load_dashboard()
    assert dashboard["uid"] == "i2v-stream"
    ids = [panel["id"] for panel in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in _panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel.get("targets"), f"panel {panel['title']!r} has no query"
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_datasource_matches_provisioning():
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text("utf-8")
    )
    uids = {source["uid"] for source in provisioned["datasources"]}
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] in uids


def test_dashboard_provider_points_at_the_mounted_dashboards():
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/i2v-stream.yml").read_text("utf-8")
    )
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text("utf-8"))
    mounts = compose["services"]["grafana"]["volumes"]
    path = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in mounts


def test_dashboard_queries_use_contract_metrics_only():
    known = series_names()
    for where, expr in dashboard_queries():
        names = metric_names(expr)
        assert names, f"{where} selects no metric: {expr}"
        assert names <= known, f"{where} uses unknown metrics {names - known}"


def test_dashboard_has_the_required_panels():
    used = [
        set().union(*(metric_names(t["expr"]) for t in panel["targets"]))
        for panel in _panels(load_dashboard()["panels"]) if panel.get("targets")
    ]
    for panel, metrics in REQUIRED_PANEL_METRICS.items():
        assert any(metrics <= names for names in used), f"no panel for {panel}: {metrics}"
    every = set().union(*used)
    assert series_names() - every <= {
        # Histograms are shown as quantiles; their _sum/_count are optional.
        name for name in series_names() if name.endswith(("_sum", "_count"))
    }, "contract metrics missing from the dashboard"


def test_dashboard_queries_are_valid_promql(promtool, tmp_path):
    # promtool has no "check this expression" command; recording rules are
    # parsed with the PromQL parser, so each query becomes one.
    rules = [
        {"record": f"dashboard:query_{index}", "expr": expr}
        for index, (_, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool(promtool, "check", "rules", str(path))


# ---------------------------------------------------------------- docker


def load_compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))


def test_dockerfile_builds_the_package_as_a_non_root_user():
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert re.search(r"^RUN I2V_NATIVE=\$I2V_NATIVE pip install \.$", text, re.MULTILINE)
    assert "build-essential" in text
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and not users[-1].startswith(("root", "0")), users
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.MULTILINE)
    assert entrypoint and json.loads(entrypoint.group(1))[-1] == "i2v-stream"


def test_compose_has_the_stack():
    services = load_compose()["services"]
    assert set(services) == {"kafka", "kafka-init", "daemon", "serve", "prometheus", "grafana"}

    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {
        "broker", "controller"
    }
    assert not any("zookeeper" in name for name in services)
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"

    daemon = services["daemon"]
    assert daemon["command"] == ["run", "--config", "/etc/i2v/daemon.yaml"]
    assert daemon["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / daemon["build"]["context"] / daemon["build"]["dockerfile"]).is_file()
    assert "./config/daemon.yaml:/etc/i2v/daemon.yaml:ro" in daemon["volumes"]
    assert daemon["depends_on"]["kafka-init"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["serve"]["command"][0] == "serve"

    prometheus_mounts = {v.split(":")[1] for v in services["prometheus"]["volumes"]}
    assert {"/etc/prometheus/prometheus.yml", "/etc/prometheus/alerts.yml"} <= (
        prometheus_mounts
    )
    grafana_mounts = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert {
        "/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards",
    } <= grafana_mounts


def test_compose_bind_mounts_exist():
    for name, service in load_compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_scrape_targets_match_the_services():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"][0]
        for job in config["scrape_configs"]
    }
    daemon_config = yaml.safe_load((DEPLOY / "config/daemon.yaml").read_text("utf-8"))
    assert targets["i2v-daemon"] == f"daemon:{daemon_config['metrics']['port']}"
    serve_command = load_compose()["services"]["serve"]["command"]
    assert targets["i2v-serve"] == f"serve:{_option(serve_command, '--port')}"


# ---------------------------------------------------------------- Kubernetes


def load_manifests() -> list[dict]:
    documents = []
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                document["__file__"] = str(path.relative_to(K8S_DIR))
                documents.append(document)
    return documents


def _one(kind: str, name: str | None = None) -> dict:
    found = [
        d for d in load_manifests()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def test_k8s_manifests_have_the_expected_kinds():
    kinds = sorted(d["kind"] for d in load_manifests())
    assert kinds == sorted([
        "Kustomization", "Namespace", "ConfigMap", "PersistentVolumeClaim",
        "StatefulSet", "Service", "Deployment", "Service", "PodDisruptionBudget",
        "ServiceMonitor",
    ])
    kustomization = _one("Kustomization")
    listed = set(kustomization["resources"])
    top_level = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == top_level


def test_k8s_daemon_is_a_single_writer_statefulset():
    daemon = _one("StatefulSet", "i2v-daemon")["spec"]
    assert daemon["replicas"] == 1
    assert daemon["podManagementPolicy"] == "OrderedReady"
    pod = daemon["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60
    container = pod["containers"][0]
    assert container["args"] == ["run", "--config", "/etc/i2v/daemon.yaml"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    assert claims == {"data": "i2v-data"}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert not mounts["data"].get("readOnly", False)
    assert mounts["config"]["mountPath"] == "/etc/i2v"
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == "i2v-daemon-config"


def test_k8s_query_service_reads_the_shared_volume_read_only():
    claim = _one("PersistentVolumeClaim", "i2v-data")["spec"]
    assert claim["accessModes"] == ["ReadWriteMany"]
    pod = _one("Deployment", "i2v-serve")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][0] == "serve"
    assert _option(container["args"], "--store") == "/var/lib/i2v-stream/store"
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"] == {"claimName": "i2v-data", "readOnly": True}
    assert all(m["readOnly"] for m in container["volumeMounts"] if m["name"] == "data")


def test_k8s_pods_are_scraped_on_their_metrics_port():
    for kind, name in (("StatefulSet", "i2v-daemon"), ("Deployment", "i2v-serve")):
        template = _one(kind, name)["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        ports = {p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert int(annotations["prometheus.io/port"]) in ports, name
        assert annotations["prometheus.io/path"] == "/metrics"


def test_k8s_services_select_their_pods():
    for service_name, workload in (
        ("i2v-daemon", _one("StatefulSet", "i2v-daemon")),
        ("i2v-serve", _one("Deployment", "i2v-serve")),
    ):
        service = _one("Service", service_name)["spec"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert service["selector"].items() <= labels.items(), service_name
        port_names = {p["name"] for p in workload["spec"]["template"]["spec"]["containers"][0]
                      ["ports"]}
        assert {p["targetPort"] for p in service["ports"]} <= port_names, service_name


def _key_paths(tree: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in tree.items():
        paths.add(prefix + key)
        if isinstance(value, dict):
            paths |= _key_paths(value, f"{prefix}{key}.")
    return paths


def test_k8s_daemon_config_has_the_same_settings_as_compose():
    config_map = _one("ConfigMap", "i2v-daemon-config")
    in_cluster = yaml.safe_load(config_map["data"]["daemon.yaml"])
    compose = yaml.safe_load((DEPLOY / "config/daemon.yaml").read_text("utf-8"))
    assert _key_paths(in_cluster) == _key_paths(compose)


# ---------------------------------------------------------------- systemd


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file as ``{section: {key: [values]}}``.

    configparser does not fit: keys such as ``Environment=`` repeat.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{path.name}:{number}: no continuation lines"
        if line.startswith("["):
            assert line.endswith("]"), f"{path.name}:{number}: bad section {line!r}"
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}:{number}: key outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not key=value: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


UNITS = {"i2v-stream-daemon.service": "run", "i2v-stream-serve.service": "serve"}


@pytest.mark.parametrize("unit_name", sorted(UNITS))
def test_systemd_unit_settings(unit_name):
    unit = parse_unit(SYSTEMD_DIR / unit_name)
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["Restart"] == ["on-failure"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert re.fullmatch(r"\d+s", service["TimeoutStopSec"][0])
    assert service["User"] == ["i2v-stream"]
    assert service["EnvironmentFile"] == ["-/etc/i2v-stream/i2v-stream.env"]
    exec_start = service["ExecStart"][0].split()
    assert exec_start[0].endswith("/i2v-stream")
    assert UNITS[unit_name] in exec_start
    # Every variable the command uses has a default in the unit.
    defaults = {value.split("=", 1)[0] for value in service.get("Environment", [])}
    used = set(re.findall(r"\$\{(\w+)\}", service["ExecStart"][0]))
    assert used <= defaults, used - defaults


def test_systemd_daemon_waits_long_enough_to_commit():
    service = parse_unit(SYSTEMD_DIR / "i2v-stream-daemon.service")["Service"]
    assert int(service["TimeoutStopSec"][0].rstrip("s")) >= 60


def test_systemd_environment_file_and_user_are_shipped():
    env = (SYSTEMD_DIR / "i2v-stream.env").read_text(encoding="utf-8")
    settings = dict(
        line.split("=", 1) for line in env.splitlines() if line and not line.startswith("#")
    )
    for unit_name in UNITS:
        service = parse_unit(SYSTEMD_DIR / unit_name)["Service"]
        defaults = {value.split("=", 1)[0] for value in service.get("Environment", [])}
        assert defaults <= settings.keys(), f"{unit_name}: {defaults - settings.keys()}"
    sysusers = (SYSTEMD_DIR / "i2v-stream.sysusers.conf").read_text(encoding="utf-8")
    assert re.search(r"^u i2v-stream ", sysusers, re.MULTILINE)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_units_verify(tmp_path):
    # The executable is not installed where the tests run, and `verify` checks
    # that it exists: point ExecStart at /bin/true and check everything else.
    for unit_name in UNITS:
        text = (SYSTEMD_DIR / unit_name).read_text(encoding="utf-8")
        text = re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", text, flags=re.MULTILINE)
        (tmp_path / unit_name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / name) for name in UNITS)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, output


# ---------------------------------------------------------------- against the code


def test_contract_metrics_are_the_ones_the_code_registers():
    # The dashboard and the alerts are checked against CONTRACT_METRICS above;
    # this keeps that list equal to what i2v_stream.metrics really exports.
    from prometheus_client import CollectorRegistry

    from i2v_stream.metrics import DaemonMetrics, QueryMetrics

    registry = CollectorRegistry()
    DaemonMetrics(registry)
    QueryMetrics(registry)
    exported = {}
    for family in registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        exported[name] = family.type
    assert exported == CONTRACT_METRICS


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_daemon_config_files_load(where, tmp_path):
    from i2v_stream.config import load_config

    if where == "compose":
        path = DEPLOY / "config/daemon.yaml"
    else:
        path = tmp_path / "daemon.yaml"
        path.write_text(_one("ConfigMap", "i2v-daemon-config")["data"]["daemon.yaml"])
    config = load_config(config_file=path, environ={})
    assert config.source == "kafka"
    assert config.store == "/var/lib/i2v-stream/store"
    assert config.snapshot_dir == "/var/lib/i2v-stream/snapshots"
    # Prometheus scrapes it from another container or pod.
    assert config.metrics_host == "0.0.0.0"
    assert config.metrics_port == 9108

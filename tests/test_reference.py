"""The README's configuration and metrics tables match the code."""

from pathlib import Path

from services import reference

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_readme_lists_every_daemon_option_as_the_code_defines_it():
    assert reference.config_table() in README, (
        "README's configuration table is stale: paste `python -m services.reference config`")


def test_readme_lists_every_metric_as_the_code_registers_it():
    assert reference.metrics_table() in README, (
        "README's metrics table is stale: paste `python -m services.reference metrics`")

"""The README's reference tables, generated from the code that defines them.

``python -m services.reference config`` prints the daemon's options (flag,
environment variable, default, meaning) from ``i2v_stream.config``;
``python -m services.reference metrics`` prints every metric that
``i2v_stream.metrics`` registers. ``tests/test_reference.py`` checks that the
README holds exactly these tables, so the documentation cannot drift.
"""

from __future__ import annotations

import dataclasses
import sys

from prometheus_client import CollectorRegistry


def config_table() -> str:
    from i2v_stream import config

    rows = ["| option (flag) | environment | default | meaning |", "|---|---|---|---|"]
    for item in dataclasses.fields(config.DaemonConfig):
        default = item.default
        if default is None:
            shown = "-"
        elif isinstance(default, tuple):
            shown = ",".join(default) or "-"
        else:
            shown = f"`{default}`"
        rows.append(f"| `{config.flag_name(item.name)}` | `{config.env_name(item.name)}` | "
                    f"{shown} | {item.metadata['help']} |")
    return "\n".join(rows)


def metrics_table() -> str:
    from i2v_stream import metrics

    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for owner in (metrics.DaemonMetrics, metrics.QueryMetrics):
        registry = CollectorRegistry()
        instance = owner(registry)
        # Label names live on the metric objects (a labelled metric has no
        # samples before its first child is created).
        label_names = {}
        for value in vars(instance).values():
            names = getattr(value, "_labelnames", None)
            if names is not None:
                label_names[getattr(value, "_name", "")] = names
        for family in registry.collect():
            name = family.name + ("_total" if family.type == "counter" else "")
            labels = label_names.get(family.name) or label_names.get(name) or ()
            rows.append(f"| `{name}` | {family.type} | {', '.join(labels) or '-'} | "
                        f"{family.documentation} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    tables = {"config": config_table, "metrics": metrics_table}
    if len(argv) != 1 or argv[0] not in tables:
        print("usage: python -m services.reference config|metrics", file=sys.stderr)
        return 2
    print(tables[argv[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

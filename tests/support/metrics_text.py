"""Reading single samples out of a worker's Prometheus text output (``/metrics``), for the
tests and the benchmarks.

A regular expression on one line, not a parser: the benchmark reads a handful of figures
while it scrapes often, and a metric the worker does not export reads as absent.
"""

from __future__ import annotations

import re


def metric_value(metrics_text: str, name: str, labels: str = "") -> float | None:
    """One sample of Prometheus text output, None when the worker does not export it."""
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "")
    found = re.search(pattern + r" (\S+)$", metrics_text, re.MULTILINE)
    return float(found.group(1)) if found else None


def metric_sample(metrics_text: str, name: str, labels: str = "") -> float:
    """One sample of Prometheus text output (0 when absent)."""
    value = metric_value(metrics_text, name, labels)
    return 0.0 if value is None else value

"""The memory benchmark works end to end: ``python -m bench.memory`` at a tiny size.

Only the tool is checked (it runs the worker's processor and store on PostgreSQL,
samples the RSS and reports a peak); its figures are never asserted.
"""

from __future__ import annotations

import subprocess
import sys

from config.settings import Settings
from tests.support.harness import REPOSITORY

TIMEOUT_SECONDS = 120


def test_a_small_run_samples_rss_and_reports_the_peak(stack_settings: Settings) -> None:
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.memory",
            "--commands",
            "2000",
            "--users",
            "400",
            "--batch",
            "250",
            "--sample-every",
            "500",
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    assert process.returncode == 0, process.stdout[-4000:] + process.stderr[-4000:]
    lines = process.stdout.splitlines()
    samples = [line.split() for line in lines if line.strip()[:1].isdigit()]
    # The start, then every 500 commands: commands, seconds, rate, RSS, keys, cache MiB.
    assert [sample[0] for sample in samples] == ["0", "500", "1,000", "1,500", "2,000"]
    assert all(float(sample[3]) > 0 for sample in samples)
    assert int(samples[-1][4].replace(",", "")) > 0  # the cache filled
    assert any(line.startswith("peak RSS: ") for line in lines), lines
    assert any(line.startswith("results: accepted") for line in lines), lines

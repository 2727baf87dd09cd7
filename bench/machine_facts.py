"""Facts of the machine a measurement ran on (cores, memory, CPU model, load, Python), for
the report: figures from a shared 2-core machine mean little without them."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path


def machine() -> dict[str, object]:
    """Cores, memory and CPU model of this machine, for the report."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        found = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        memory = int(found.group(1)) * 1024 if found else 0
    except OSError:
        pass
    return {
        "cores": os.cpu_count() or 0,
        "memoryGiB": round(memory / 2**30, 1),
        "cpuModel": model,
        "loadAverage1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
    }

"""What every benchmark records about where it ran: platform, CPU, cores, versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

import ragstore


def describe(**extra: Any) -> dict[str, Any]:
    """The machine and the versions that matter to every benchmark, plus ``extra``."""
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ragstore": ragstore.__version__,
        **extra,
    }


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()

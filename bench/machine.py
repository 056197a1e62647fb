"""A description of the machine a benchmark ran on, stored with its results."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson


def describe() -> dict[str, Any]:
    """CPU, cores, memory, OS and Python of this machine, and when."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    try:
        with open("/proc/meminfo") as handle:
            mem_kb = int(handle.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def save_results(results: dict[str, Any], out: Path, echo: bool = False) -> None:
    """Write a benchmark's results as indented JSON (and print them with ``echo``)."""
    text = orjson.dumps(results, option=orjson.OPT_INDENT_2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(text + b"\n")
    if echo:
        print(text.decode())

"""The machine a benchmark ran on, as a line for its results."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["machine"]


def machine(*details: str) -> str:
    """CPU model, CPUs visible, the load average when the run starts (a busy
    machine explains slow numbers), then ``details`` (what the caller adds:
    thread counts, the OS)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return ", ".join([cpu, f"{os.cpu_count()} CPUs", f"load average {load:.1f} at start", *details])

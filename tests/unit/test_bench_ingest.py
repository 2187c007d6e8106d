"""bench/ingest.py's CPU accounting: CPU seconds of the process and of its
child processes (the parse server's reaped parses), which do not depend on the
share of the machine a benchmark got (docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys
import time

from bench import ingest


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_of_this_process_is_counted() -> None:
    before = ingest._cpu_s()
    _burn(0.3)
    assert ingest._cpu_s() - before >= 0.25


def test_cpu_of_a_child_is_counted_once_reaped() -> None:
    before = ingest._cpu_s()
    code = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert ingest._cpu_s() - before >= 0.25

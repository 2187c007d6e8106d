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


def test_cpu_of_each_thread_is_counted_under_its_name_without_the_number() -> None:
    import threading

    stop = threading.Event()
    burnt = threading.Barrier(3)

    def burner() -> None:
        end = time.thread_time() + 0.3  # this thread's own CPU time
        while time.thread_time() < end:
            pass
        burnt.wait()
        stop.wait()  # alive while it is read

    before = ingest._thread_cpu_s()
    threads = [threading.Thread(target=burner, name=f"burner-{n}") for n in range(2)]
    threads.append(threading.Thread(target=stop.wait, name="idle_0"))
    for thread in threads:
        thread.start()
    burnt.wait()
    after = ingest._thread_cpu_s()
    stop.set()
    for thread in threads:
        thread.join()
    breakdown = ingest._cpu_breakdown(before, after, total=10.0)
    assert breakdown["burner"] >= 0.5
    assert "idle" not in breakdown  # under 0.1 s: left out
    assert round(sum(breakdown.values()), 1) == 10.0  # the rest is 'other'

"""Summarises py-spy's raw stacks (``e2e.sh profile``: ``py-spy record --native
--threads -f raw``) of the model process: what its scheduler thread spends
its time and llama_decode's host time on (any thread's, for rawdecode.py), and where any thread of it waits for the GIL
inside llama.cpp (a callback into Python waiting for whichever thread holds
it).

    python bench/device/stacks.py profile-http.txt[.gz] [profile-inproc.txt …]

Samples are counts at py-spy's rate, so compare shares, not absolute figures
(sampling with native stacks slows the process it samples)."""

from __future__ import annotations

import collections
import gzip
import sys
from collections.abc import Iterator
from pathlib import Path

WAIT = "pthread_cond_timedwait"  # where CPython waits for the GIL


def stacks(path: Path) -> Iterator[tuple[list[str], int]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack:
                yield stack.split(";"), int(count)


def name(frame: str) -> str:
    return frame.split(" (")[0]


def summarise(path: Path, top: int = 8) -> None:
    phases: collections.Counter[str] = collections.Counter()
    decode_parts: collections.Counter[str] = collections.Counter()
    gil_sites: collections.Counter[str] = collections.Counter()
    in_decode = waits = 0
    for frames, n in stacks(path):
        waiting = any(WAIT in f for f in frames)
        at = next((i for i, f in enumerate(frames) if f.startswith("llama_decode ")), None)
        if at is not None:
            in_decode += n
            below = [name(f) for f in frames[at + 1 :] if name(f) != "llama_context::decode"]
            native = [b for b in below if not b.startswith("0x")]
            decode_parts[" > ".join(native[:2]) or "(llama_decode itself)"] += n
            if waiting:
                waits += n
                gil_sites[" > ".join(native[-3:])] += n
        if not any("Scheduler._run" in f for f in frames):
            continue  # rawdecode.py has no scheduler: llama_decode's parts only
        python = [name(f) for f in frames if ".py:" in f]
        phase = next((p.split(".")[-1] for p in reversed(python) if p.startswith("Scheduler._")), "other")
        phases[phase + (" (waiting for the GIL)" if waiting else "")] += n
    total = sum(phases.values()) or 1
    print(f"== {path.name}: scheduler thread {sum(phases.values())} samples")
    for phase, n in phases.most_common(top):
        print(f"   {100 * n / total:5.1f}%  {phase}")
    print(f"   llama_decode: {in_decode} samples, {100 * waits / max(in_decode, 1):.1f}% of them waiting for the GIL")
    for part, n in decode_parts.most_common(top):
        print(f"   {100 * n / max(in_decode, 1):5.1f}%  {part}")
    for site, n in gil_sites.most_common(top):
        print(f"   GIL wait {100 * n / max(in_decode, 1):5.1f}%  {site}")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        summarise(Path(arg))

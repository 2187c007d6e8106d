"""The scheduler's own time on a decode step's critical path, on a fake llama.cpp.

On a GPU a decode step is ``llama_decode`` (host part; it returns once the
step is queued), the device's work, then whatever the scheduler does between
``llama_synchronize`` returning and the next ``llama_decode`` call: the GPU is
idle for that long. This runs the real ``Scheduler`` (overlap on, sampling in
the graph, prompts first: the GPU path) over a fake llama.cpp whose
``llama_synchronize`` sleeps ``--device-ms`` (the GIL let go, as the real wait
does) and whose other calls return at once, with S streams decoding together,
and reports per step the time from ``llama_synchronize``'s return to the next
decode call (the scheduler's Python between two steps), median and spread.

    python bench/scheduler_step.py --streams 1,16,64 --steps 400 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

from rag.generation import GenerationParams  # noqa: E402
from rag.generation.batch import Batch  # noqa: E402
from rag.generation.job import GenerationJob  # noqa: E402
from rag.generation.scheduler import Scheduler  # noqa: E402
from rag.generation.slots import Slot  # noqa: E402
from tests.support.fakes import FakeLlamaCalls  # noqa: E402


class FakeLlama(FakeLlamaCalls):
    """What the scheduler calls; the decode of next tokens is timed."""

    def __init__(self, device_s: float) -> None:
        self.device_s = device_s
        self.synced = 0.0
        self.gaps: list[float] = []  # llama_synchronize's return to the next decode call
        self.batch: Batch | None = None

    def llama_synchronize(self, ctx: Any) -> None:
        time.sleep(self.device_s)
        self.synced = time.perf_counter()

    def llama_get_sampled_token_ith(self, ctx: Any, i: int) -> int:
        return 1000 + i

    def llama_decode_held(self, ctx: Any, raw: Any) -> int:
        now = time.perf_counter()
        if self.synced:
            self.gaps.append(now - self.synced)
        return 0

    def llama_decode(self, ctx: Any, raw: Any) -> int:
        self.synced = 0.0  # a prompt step: not a decode step's gap
        return 0


def one_round(streams: int, steps: int, device_s: float) -> list[float]:
    fake = FakeLlama(device_s)
    batch = Batch(SimpleNamespace(llama_batch=SimpleNamespace), 2048, streams)
    fake.batch = batch
    texts: list[str] = []
    scheduler = Scheduler(
        fake, object(), object(), [Slot(seq_id=i, sampler=None) for i in range(streams)], batch,
        n_vocab=16, piece=lambda t: b" w", prompt_cache=False, min_copy=16, backend_sampling=True,
        overlap=True, name="bench", prompt_steps=8, n_ubatch=512,
    )
    try:
        jobs = [GenerationJob([1, 2, 3, 4 + i], GenerationParams(max_tokens=steps, ignore_eog=True),
                              on_text=lambda piece: texts.append(piece) is None)
                for i in range(streams)]
        for job in jobs:
            scheduler.put(job)
        for job in jobs:
            job.result(120)
    finally:
        scheduler.stop()
    return fake.gaps[5:-5]  # the steady part: all streams decoding


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="1,16,64")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device-ms", type=float, default=2.5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out: dict[str, Any] = {}
    for s in [int(x) for x in args.streams.split(",")]:
        medians = []
        for _ in range(args.rounds):
            gaps = one_round(s, args.steps, args.device_ms / 1000)
            medians.append(statistics.median(gaps) * 1e6)
        out[str(s)] = medians
        print(f"S={s:<3} between steps: median {statistics.median(medians):7.1f} us "
              f"(rounds {min(medians):.1f}-{max(medians):.1f}), {args.rounds} rounds of {args.steps} steps")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""On the GPU machine: where a burst's time goes inside the scheduler. One
in-process ``LlamaModel`` as e2e.sh runs it (64 slots of 1,024 cells, n_batch
2,048, flash attention), S requests of 512 prompt tokens + 128 generated
submitted at once (bench/generation.py's caller round), with the scheduler's
phases timed on its own thread: per step the tokens and outputs it packed,
the Python before ``llama_decode`` (taking and placing requests, packing),
``llama_decode``'s own call (its host part: the work is queued), the text of
the step before (overlapped with the device), and the wait for the sampled
tokens (the device) with what follows. Prints the prompt phase step by step
and the decode phase's means.

    python3 bench/device/steptrace.py MODEL.gguf [--streams 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bench.generation as bg
from rag.generation import GenerationParams
from rag.generation.llama import LlamaModel
from rag.generation.scheduler import Scheduler

trace: list[dict[str, Any]] = []
_now = time.perf_counter


def _timed(name: str) -> None:
    inner = getattr(Scheduler, name)

    def wrapper(self: Scheduler, *args: Any) -> Any:
        t0 = _now()
        out = inner(self, *args)
        t1 = _now()
        if name == "_take_incoming":  # the first phase of a step: a new row
            trace.append({"t0": t0})
        row = trace[-1] if trace else {"t0": t0}
        row[name] = row.get(name, 0.0) + (t1 - t0)
        if name == "_fill":
            row["tokens"] = self._batch.n
            row["outputs"] = len(out)
        return out

    setattr(Scheduler, name, wrapper)


for phase in ("_take_incoming", "_admit", "_fill", "_launch", "_drain", "_collect"):
    _timed(phase)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    m = LlamaModel(args.model, n_ctx=1024, threads=16, n_gpu_layers=-1, parallel=64, flash_attn="on")
    try:
        for r in range(args.rounds + 1):
            prompts = [bg.prompt_of(m, 512, salt=f"trace{r} {i} ") for i in range(args.streams)]
            trace.clear()
            started = _now()
            jobs = [m.submit(p, GenerationParams(max_tokens=128, ignore_eog=True)) for p in prompts]
            submitted = _now()
            results = [j.result() for j in jobs]
            wall = _now() - started
            if r == 0:
                continue  # warm-up
            steps = [row for row in trace if row.get("tokens")]
            first_decode = next(i for i, row in enumerate(steps) if row["tokens"] == row["outputs"] == args.streams)
            ms = 1000.0
            print(
                f"trace round {r}: S={args.streams} wall {wall * ms:.1f} ms, submits took "
                f"{(submitted - started) * ms:.1f} ms, first step at +{(steps[0]['t0'] - started) * ms:.1f} ms, "
                f"prompt phase {first_decode} steps to +{(steps[first_decode]['t0'] - started) * ms:.1f} ms, "
                f"queue p50 {statistics.median(x.queue_s for x in results) * ms:.1f} ms",
                flush=True,
            )
            for i, row in enumerate(steps[: first_decode + 1]):
                print(
                    f"trace   step {i:2d} +{(row['t0'] - started) * ms:6.1f} ms  tokens {row['tokens']:5d} "
                    f"outputs {row['outputs']:2d}  admit {row.get('_admit', 0) * ms:5.2f}  fill "
                    f"{row.get('_fill', 0) * ms:5.2f}  decode call {row.get('_launch', 0) * ms:5.2f}  drain "
                    f"{row.get('_drain', 0) * ms:5.2f}  collect {row.get('_collect', 0) * ms:5.2f} ms",
                    flush=True,
                )
            dec = [row for row in steps[first_decode:] if row["tokens"] == row["outputs"]]
            gaps = [b["t0"] - a["t0"] for a, b in itertools.pairwise(dec)]
            mean = {
                k: statistics.mean(row.get(k, 0.0) for row in dec) * ms
                for k in ("_take_incoming", "_admit", "_fill", "_launch", "_drain", "_collect")
            }
            parts = ", ".join(f"{k[1:]} {v:.3f}" for k, v in mean.items())
            print(
                f"trace   decode: {len(dec)} steps, step {statistics.mean(gaps) * ms:.3f} ms (median "
                f"{statistics.median(gaps) * ms:.3f}); means: {parts}; rest "
                f"{statistics.mean(gaps) * ms - sum(mean.values()):.3f} ms",
                flush=True,
            )
    finally:
        m.close()


if __name__ == "__main__":
    main()

"""On the GPU machine: where a batched decoding step spends its time, and what
the scheduler's two GPU measures buy. Runs S streams of 512 + 128 tokens on one
instance for each combination of

- batch_greedy: one argmax over the whole batch's logits (``BatchGreedy``)
  instead of llama.cpp's greedy sampler, one argmax per sequence;
- overlap: the previous step's text handled while the device computes;

and times every llama.cpp call the scheduler makes."""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bench.generation as bg
from rag.generation import GenerationParams
from rag.generation.llama import LlamaModel


def profile(path: Path, streams: int, batch_greedy: bool, overlap: bool, threads: int) -> float:
    stats: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    m = LlamaModel(path, n_ctx=704, threads=threads, n_gpu_layers=-1, parallel=streams, flash_attn="on",
                   prompt_cache=False, batch_greedy=batch_greedy, overlap=overlap)
    sched = m._scheduler
    assert sched is not None
    lc = sched._lc

    class Timed:
        def __getattr__(self, name: str) -> Any:
            f = getattr(lc, name)
            if not callable(f) or name.startswith(("LLAMA", "GGML", "llama_batch")):
                return f

            def call(*a: Any) -> Any:
                t = time.perf_counter()
                r = f(*a)
                s = stats[name]
                s[0] += 1
                s[1] += time.perf_counter() - t
                return r

            return call

    m.generate(bg.prompt_of(m, 8), GenerationParams(max_tokens=4))  # warm-up
    sched._lc = Timed()
    steps = [0, 0.0]
    step = sched._step

    def timed_step() -> None:
        t = time.perf_counter()
        step()
        steps[0] += 1
        steps[1] += time.perf_counter() - t

    sched._step = timed_step  # type: ignore[method-assign]
    params = GenerationParams(max_tokens=128, ignore_eog=True)
    jobs = [m.submit(bg.prompt_of(m, 512, salt=f"{i} "), params) for i in range(streams)]
    for j in jobs:
        j.result()
    agg = bg.steady_rate(jobs)
    greedy = m._greedy is not None and m._greedy.available
    print(f"streams={streams} batch_greedy={batch_greedy} (active {greedy}) overlap={overlap}: "
          f"agg {agg:.0f} tok/s; steps {steps[0]:.0f} avg {1000 * steps[1] / steps[0]:.2f} ms", flush=True)
    for name, (count, total) in sorted(stats.items(), key=lambda x: -x[1][1])[:4]:
        print(f"   {name:32s} {count:6.0f} {1e6 * total / count:9.1f} us/call total {total:.3f}s", flush=True)
    m.close()
    return agg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--streams", default="16,32")
    args = ap.parse_args()
    for n in map(int, args.streams.split(",")):
        for batch_greedy, overlap in ((False, True), (True, False), (True, True)):
            profile(args.model, n, batch_greedy, overlap, args.threads)


if __name__ == "__main__":
    main()

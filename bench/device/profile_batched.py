"""On the GPU machine: where a batched decoding step spends its time, with
sampling in llama.cpp's graph (backend samplers) and on the CPU. Times every
llama.cpp call the scheduler makes, 16 and 32 streams of 512 + 128 tokens."""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, ".")

import bench.generation as bg
from rag.llm import LlamaModel

MODEL = Path("/root/w/model.gguf")


def profile(backend_sampling: bool, streams: int) -> None:
    stats: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    m = LlamaModel(MODEL, n_ctx=704, threads=16, n_gpu_layers=-1, parallel=streams, flash_attn="on",
                   prompt_cache=False, backend_sampling=backend_sampling)
    lc = m._lc

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

    m._lc = Timed()
    steps = [0, 0.0]
    step = m._step

    def timed_step() -> None:
        t = time.perf_counter()
        step()
        steps[0] += 1
        steps[1] += time.perf_counter() - t

    m._step = timed_step  # type: ignore[method-assign]
    jobs = [m.submit(bg.prompt_of(m, 512, salt=f"{i} "), max_tokens=128, ignore_eog=True) for i in range(streams)]
    for j in jobs:
        j.result()
    start = max(j.token_times[0] for j in jobs)
    end = max(j.token_times[-1] for j in jobs)
    agg = sum(sum(1 for t in j.token_times if t > start) for j in jobs) / (end - start)
    print(f"backend_sampling={backend_sampling} streams={streams}: agg {agg:.0f} tok/s; "
          f"steps {steps[0]:.0f} avg {1000 * steps[1] / steps[0]:.2f} ms", flush=True)
    for name, (count, total) in sorted(stats.items(), key=lambda x: -x[1][1])[:5]:
        print(f"   {name:32s} {count:6.0f} {1e6 * total / count:9.1f} us/call total {total:.3f}s", flush=True)
    m.close()


for backend in (True, False):
    for n in (16, 32):
        profile(backend, n)

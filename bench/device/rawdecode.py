"""On the GPU machine: 16 sequences (``--streams``) decoded through
llama-cpp-python's ctypes API the way llama-batched-bench does it (fixed
tokens, no scheduler), with the logits copied out and with the service's
in-graph greedy sampling, to split a service step's time into llama.cpp's and
the scheduler's. ``--service``: on the service's benchmark context (64 slots
of 1,024 cells, as e2e.sh), and also without reading anything back between
steps (llama-batched-bench's way, which real generation cannot do: each step
needs the last one's tokens). ``--greedy-only``: the in-graph greedy variant
alone (e2e.sh raw runs it with and without LLAMA_SAMPLED_COPY_PER_ROW=1).
``--argmax``: that variant with the batch's argmax as one ggml_argmax node
(gpu_argmax="kernel": the patched CUDA kernel splits rows) and in two stages
of stock ops ("graph"); the tokens' sha1 says whether both picked the same.
``--streams N``: N sequences, not 16 (1: llama-bench's tg, one token a step,
against the service's single stream)."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bench.generation as bg
from rag.generation.batch import Batch
from rag.generation.llama import LlamaModel
from rag.generation.types import GpuArgmax

S = int(sys.argv[sys.argv.index("--streams") + 1]) if "--streams" in sys.argv else 16
SERVICE = "--service" in sys.argv
variants: list[tuple[bool, str, GpuArgmax]] = [(False, "logits out", "auto"), (True, "in-graph greedy", "auto")]
variants += [(True, "no read-back", "auto")] if SERVICE else []
if "--greedy-only" in sys.argv:
    variants = [(True, "in-graph greedy", "auto")]
if "--argmax" in sys.argv:
    variants = [(True, "in-graph greedy, one argmax", "kernel"), (True, "in-graph greedy, two stages", "graph")]
for backend_sampling, label, gpu_argmax in variants:
    m = LlamaModel(Path(sys.argv[1]), n_ctx=1024 if SERVICE else 832, threads=16, n_gpu_layers=-1,
                   parallel=64 if SERVICE else S, flash_attn="on", prompt_cache=SERVICE,
                   backend_sampling=backend_sampling, gpu_argmax=gpu_argmax)
    # Stop the scheduler thread and drive the context from here.
    assert m._scheduler is not None
    m._scheduler.stop()
    lc, ctx = m._lc, m._ctx
    import numpy as np  # after the model loaded: importing it first crashed llama.cpp's CUDA load there

    b = Batch(lc, 512, S)
    for s in range(S):
        b.clear()
        b.add_run(bg.prompt_of(m, 512, salt=f"{s} "), 0, s, True)
        assert lc.llama_decode(ctx, b.as_raw()) == 0
    lc.llama_synchronize(ctx)
    times = []
    sampled: list[int] = []  # every token read back: the same on every build that samples right
    t_start = time.perf_counter()
    for i in range(128):
        b.clear()
        for s in range(S):
            b.add_one(100 + s, 512 + i, s, True)
        t0 = time.perf_counter()
        assert lc.llama_decode(ctx, b.as_raw()) == 0
        t1 = time.perf_counter()
        if label == "no read-back":
            pass
        elif backend_sampling:
            sampled.extend(lc.llama_get_sampled_token_ith(ctx, s) for s in range(S))
            lc.llama_synchronize(ctx)
        else:
            lc.llama_get_logits_ith(ctx, 0)
            lc.llama_synchronize(ctx)
        times.append((t1 - t0, time.perf_counter() - t1))
    lc.llama_synchronize(ctx)
    total = time.perf_counter() - t_start
    d = np.array(times[8:]) * 1000
    step = d.sum(1).mean()
    print(f"raw {label} [{m.sampler}]: llama_decode {d[:, 0].mean():.2f} ms + wait {d[:, 1].mean():.2f} ms "
          f"= {step:.2f} ms/step "
          f"-> {S / step * 1000:.0f} tok/s; 128 steps in {1000 * total:.1f} ms"
          + (f"; tokens sha1 {hashlib.sha1(repr(sampled).encode()).hexdigest()[:12]}" if sampled else ""), flush=True)
    m._free()

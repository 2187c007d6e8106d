"""On the GPU machine: where the prompt phase of a burst goes. 16 prompts of
512 tokens through llama-cpp-python's ctypes API on the service's context (64
slots of 1,024 cells, n_batch 2,048, n_ubatch 512, in-graph greedy sampling;
no scheduler), packed in 2,048-token calls two ways:

- ``bench``: four consecutive sequences per call in ascending order, as
  llama-batched-bench packs them (``split_equal`` makes micro-batches of 4
  sequences × 128 tokens, and llama.cpp reuses the graph while the set of
  sequences stays the same);
- ``single``: four sequences per call in descending order, one sequence per
  micro-batch, as the scheduler packs them now (a graph per micro-batch);

each with the outputs read after the last call only (``-async``) or after
every call (``-sync``, as the scheduler does), with the prompt cache's
full-size SWA cache (the service's default) and without it. And
``single-sync-keptK`` (K = 14, 32, 64, 128): the scheduler's way with the
prompt cache on, where each slot keeps the first K tokens of the prompt (14:
the turn markup a chat prompt shares with the one before it) and the rest is
evaluated from there (session 17: chat bursts' prompt steps took ~2 ms
longer so); against ``single-sync`` (nothing kept), where reusing a prefix
starts to pay. ``single-sync-cutK`` (``$CUTS``, e.g. ``0,14``): as the service
does it, each slot first holds an earlier sequence of 637 tokens, cut back to
its first K with ``llama_memory_seq_rm`` (0: removed whole). Prints the median of 7 bursts
(after 2 warm-ups) from the first ``llama_decode`` to the sampled tokens in
hand.

Every row once for each slot count of ``$PARALLELS`` (default 64, the
services' slots; e.g. ``64,16``): llama.cpp applies every slot's in-graph
sampler in every graph it builds.

Usage: python3 bench/device/prompt_phase.py MODEL.gguf [--smoke]
(``--smoke``: 4 prompts of 64 tokens, a few bursts, on whatever device:
checks the script, measures nothing.)
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bench.generation as bg
from rag.generation.batch import Batch
from rag.generation.llama import LlamaModel

S, N, PER_CALL, BURSTS = 16, 512, 4, 9
KEPTS = [int(k) for k in os.environ.get("KEPTS", "14,32,64,128").split(",") if k]  # KEPTS= : none
# CUTS=0,14: each slot first holds an earlier sequence of EARLIER tokens (a 509-token
# prompt and its 128 generated), cut back to K (0: removed whole).
CUTS = [int(k) for k in os.environ.get("CUTS", "").split(",") if k]
EARLIER = 637
if "--smoke" in sys.argv:
    S, N, PER_CALL, BURSTS, KEPTS = 4, 64, 2, 3, [14, 32]


def burst(m: LlamaModel, prompts: list[list[int]], packing: str, sync_each: bool, kept: int = 0,
          before: list[list[int]] | None = None) -> float:
    """One burst's prompt phase; ``kept``: every slot holds the prompts' first
    ``kept`` tokens (evaluated before the clock starts), the rest is timed.
    ``before``: as in the service, every slot first holds a whole earlier
    sequence (its first ``kept`` tokens the prompt's), which is then cut back
    to ``kept`` tokens with ``llama_memory_seq_rm`` (0: removed whole, as
    without the prompt cache)."""
    lc, ctx = m._lc, m._ctx
    mem = lc.llama_get_memory(ctx)
    lc.llama_memory_clear(mem, True)
    b = Batch(lc, 2048, 64)
    if before is not None:
        for s in range(S):
            b.clear()
            b.add_run(before[s], 0, s, False)
            assert lc.llama_decode(ctx, b.as_raw()) == 0
            assert lc.llama_memory_seq_rm(mem, s, kept, -1) if kept else lc.llama_memory_seq_rm(mem, s, -1, -1)
        b.clear()
    elif kept:
        for s in range(S):
            b.add_run(prompts[s][:kept], 0, s, False)
        assert lc.llama_decode(ctx, b.as_raw()) == 0
    lc.llama_synchronize(ctx)
    t0 = time.perf_counter()
    for call in range(S // PER_CALL):
        seqs = list(range(call * PER_CALL, (call + 1) * PER_CALL))
        if packing == "single":
            seqs.reverse()
        b.clear()
        outs = [b.add_run(prompts[s][kept:], kept, s, True) for s in seqs]
        assert lc.llama_decode(ctx, b.as_raw()) == 0
        if sync_each or call == S // PER_CALL - 1:
            for i in outs:
                lc.llama_get_sampled_token_ith(ctx, i)
    lc.llama_synchronize(ctx)
    return time.perf_counter() - t0


def report(swa_full: bool, label: str, ms: list[float], slots: int = 64) -> None:
    print(f"prompt phase slots={slots:<3} swa_full={swa_full!s:<5} {label:<18} median {statistics.median(ms):6.1f} ms "
          f"(min {min(ms):.1f}, max {max(ms):.1f})", flush=True)


def main() -> None:
    path = Path(sys.argv[1])
    for slots in [int(n) for n in os.environ.get("PARALLELS", "64").split(",")]:
        # Without the full-size SWA cache only at the services' 64 slots (session 17: no difference).
        for swa_full in (True, False) if slots == 64 else (True,):
            m = LlamaModel(path, n_ctx=1024, threads=16 if S == 16 else 2, n_gpu_layers=-1, parallel=slots,
                           flash_attn="on", prompt_cache=swa_full, swa_full=swa_full, n_batch=2048)
            assert m._scheduler is not None
            m._scheduler.stop()  # drive the context from here
            try:
                for packing in ("bench", "single"):
                    for sync_each in (False, True):
                        times = []
                        for r in range(BURSTS):
                            prompts = [bg.prompt_of(m, N, salt=f"{r} {s} ") for s in range(S)]
                            times.append(burst(m, prompts, packing, sync_each))
                        ms = [1000 * t for t in times[2:]]  # after 2 warm-ups
                        report(swa_full, f"{packing}-{'sync' if sync_each else 'async'}", ms, slots)
                for kept in KEPTS:
                    times = []
                    for r in range(BURSTS):  # the same prompts' first `kept` tokens in every slot
                        head = bg.prompt_of(m, kept)
                        prompts = [head + bg.prompt_of(m, N - kept + 1, salt=f"{r} {s} ")[1:] for s in range(S)]
                        times.append(burst(m, prompts, "single", True, kept=kept))
                    report(swa_full, f"single-sync-kept{kept}", [1000 * t for t in times[2:]], slots)
                for kept in CUTS:  # the service's way: a slot's earlier sequence cut back (or removed)
                    times = []
                    for r in range(BURSTS):
                        head = bg.prompt_of(m, max(kept, 1))[:kept]
                        prompts = [head + bg.prompt_of(m, N - kept + 1, salt=f"{r} {s} ")[1:] for s in range(S)]
                        before = [head + bg.prompt_of(m, EARLIER - kept + 1, salt=f"earlier {r} {s} ")[1:]
                                  for s in range(S)]
                        times.append(burst(m, prompts, "single", True, kept=kept, before=before))
                    report(swa_full, f"single-sync-cut{kept}", [1000 * t for t in times[2:]], slots)
            finally:
                m._free()


if __name__ == "__main__":
    main()

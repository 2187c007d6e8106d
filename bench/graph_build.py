"""What a decode graph's build costs the host with the samplers attached to
every slot: none, llama.cpp's stock greedy chains (C), or ``BatchGreedy``
chains, in C (``batch-greedy``: batch_greedy.c) or in Python
(``batch-greedy-py``: a Python callback per chain and graph).

llama.cpp applies every attached chain each time it builds a graph: for
each micro-batch of a prompt step (their shapes differ), and for a decode
step whenever its shape changes. With 64 slots that is 64 calls into Python
per build, each taking the GIL, which ``llama_decode`` let go of. This times
steps that force a build every time (batches of 1 and 2 tokens in turn, one
sequence) on the CPU, where the graph's compute is the same in every variant,
so the differences between variants are the samplers' host time; with
``--busy`` another thread runs Python all along, as the model process's
reader and writer threads do under load.

    python bench/graph_build.py --model model.gguf [--slots 64] [--steps 200] [--busy]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rag.generation.batch import Batch
from rag.generation.native import backend_init, llama_cpp
from rag.generation.sampler import BatchGreedy


def context(lc: Any, model: Any, slots: int, variant: str, threads: int) -> tuple[Any, list[Any]]:
    cparams = lc.llama_context_default_params()
    cparams.n_ctx = 256 * slots
    cparams.n_batch = cparams.n_ubatch = 512
    cparams.n_seq_max = slots
    cparams.kv_unified = False
    cparams.n_threads = cparams.n_threads_batch = threads
    cparams.no_perf = True
    keep: list[Any] = []
    if variant != "none":
        greedy = BatchGreedy(lc, native=variant == "batch-greedy") if variant.startswith("batch-greedy") else None
        if greedy is not None and (not greedy.available or greedy.native != (variant == "batch-greedy")):
            raise SystemExit(f"{variant} is not available with this llama.cpp")
        chains = []
        for _ in range(slots):
            if greedy is not None:
                chains.append(greedy.chain())
            else:
                chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
                chains.append(chain)
        configs = (lc.llama_sampler_seq_config * slots)()
        for i, chain in enumerate(chains):
            configs[i].seq_id = i
            configs[i].sampler = ctypes.cast(chain, ctypes.c_void_p)
        cparams.samplers, cparams.n_samplers = configs, slots
        keep += [greedy, chains, configs]
    ctx = lc.llama_init_from_model(model, cparams)
    if not ctx:
        raise SystemExit(f"no context for {variant}")
    return ctx, keep


def busy(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(1000):
            x += i * i


def run(lc: Any, ctx: Any, steps: int) -> list[float]:
    batch = Batch(lc, 8, 1)
    mem = lc.llama_get_memory(ctx)
    times = []
    lc.llama_memory_seq_rm(mem, 0, -1, -1)
    pos = 0
    for i in range(steps):
        if pos > 200:
            lc.llama_memory_seq_rm(mem, 0, -1, -1)
            pos = 0
        batch.clear()
        n = 1 + i % 2  # shapes in turn: no graph is reused
        for j in range(n):
            batch.add_one(1000 + j, pos + j, 0, j == n - 1)
        t = time.perf_counter()
        if lc.llama_decode(ctx, batch.as_raw()) != 0:
            raise SystemExit("llama_decode failed")
        lc.llama_synchronize(ctx)
        times.append(time.perf_counter() - t)
        pos += n
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--busy", action="store_true", help="another thread runs Python all along")
    ap.add_argument("--variants", default="none,greedy,batch-greedy,batch-greedy-py")
    ap.add_argument("--switch-interval", type=float, help="sys.setswitchinterval, seconds (Python's default 0.005)")
    args = ap.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    lc = llama_cpp()
    backend_init(lc)
    mparams = lc.llama_model_default_params()
    mparams.n_gpu_layers = 0
    model = lc.llama_model_load_from_file(str(args.model).encode(), mparams)
    variants = args.variants.split(",")
    contexts = {v: context(lc, model, args.slots, v, args.threads) for v in variants}
    stop = threading.Event()
    worker = threading.Thread(target=busy, args=(stop,), daemon=True)
    if args.busy:
        worker.start()
    results: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            run(lc, contexts[v][0], 10)  # warm
            results[v] += run(lc, contexts[v][0], args.steps)
    stop.set()
    base = statistics.median(results[variants[0]])
    for v in variants:
        t = sorted(results[v])
        med = statistics.median(t)
        print(f"graph-build {v:<13} slots={args.slots} busy={int(args.busy)}  step median {med * 1e3:.3f} ms "
              f"(p10 {t[len(t) // 10] * 1e3:.3f}, p90 {t[9 * len(t) // 10] * 1e3:.3f})  "
              f"vs {variants[0]}: +{(med - base) * 1e3:.3f} ms")
    for v in variants:
        lc.llama_free(contexts[v][0])
    lc.llama_model_free(model)


if __name__ == "__main__":
    main()

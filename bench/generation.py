"""Generation speed of the service against llama.cpp's own tools.

Measures, on one machine, in one run:

- ``llama-bench`` (built from the llama.cpp vendored in the installed
  llama-cpp-python): prompt tokens/s (pp) and decode tokens/s (tg);
- the service's generation path (``rag.generation.llama.LlamaModel``): time to first token
  for prompts of the same lengths (as prompt tokens/s) and decode tokens/s,
  same GGUF, same threads, same offload; ratios against llama-bench;
- llama-cpp-python's high-level ``Llama.generate`` (what the service used
  before), for reference;
- batched decoding: aggregate decode tokens/s of 1, 4, 16 concurrent streams on
  one model instance, against ``llama-batched-bench``;
- prompt-prefix reuse: time to first token cold and with the prefix cached.

Usage (CPU)::

    python bench/generation.py --llama-bench build/bin/llama-bench \\
        --batched-bench build/bin/llama-batched-bench --threads 2 --json out.json

GPU: add ``--n-gpu-layers -1 --flash-attn on``. Rounds alternate llama-bench and
the service so that load from elsewhere on the machine hits both alike.
``--isolation process`` measures the model as the service runs it by default:
in its own process (rag/generation/process.py), tokens coming back over a socket.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.generation import GenerationParams, TextModel, resolve_model_path
from rag.generation.llama import LlamaModel
from rag.generation.process import ModelProcess
from rag.settings import Settings

FILLER = (
    "The handbook describes the daily routine of the operations team. Staff are expected to read it "
    "before their first shift and to keep it at hand during inspections. Every procedure below was "
    "reviewed by the operations board last spring, and the vault access code is ZEBRA-4471. "
)


def make_model(path: Path, args: argparse.Namespace, **options: Any) -> TextModel:
    """The model as ``--isolation`` says: in this process or a model process."""
    factory = ModelProcess if args.isolation == "process" else LlamaModel
    return factory(path, threads=args.threads, n_gpu_layers=args.n_gpu_layers, flash_attn=args.flash_attn,
                   **options)


def prompt_of(model: TextModel, n: int, salt: str = "") -> list[int]:
    """A prompt of exactly ``n`` tokens (BOS included) of plain text."""
    text = salt + FILLER * (n // 30 + 2)
    tokens = model.tokenize(text)[:n]
    assert len(tokens) == n
    return tokens


def run_llama_bench(exe: str, model: Path, args: argparse.Namespace, pps: list[int]) -> dict[str, float]:
    cmd = [exe, "-m", str(model), "-t", str(args.threads), "-p", ",".join(map(str, pps)),
           "-n", str(args.gen_tokens), "-r", str(args.reps), "-o", "json",
           "-ngl", str(99 if args.n_gpu_layers < 0 else args.n_gpu_layers), "-fa", args.flash_attn]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = {}
    for row in json.loads(out):
        key = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        result[key] = float(row["avg_ts"])
    return result


def run_batched_bench(exe: str, model: Path, args: argparse.Namespace, streams: list[int]) -> dict[int, float]:
    ctx = max(streams) * (args.batch_prompt + args.batch_gen) + 256
    cmd = [exe, "-m", str(model), "-t", str(args.threads), "-tb", str(args.threads), "-c", str(ctx),
           "-b", "2048", "-ub", "512", "-npp", str(args.batch_prompt), "-ntg", str(args.batch_gen),
           "-npl", ",".join(map(str, streams)), "-ngl", str(99 if args.n_gpu_layers < 0 else args.n_gpu_layers),
           "-fa", args.flash_attn, "--output-format", "jsonl"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[int, float] = {}
    for line in out.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            result[int(row["pl"])] = float(row["speed_tg"])
    return result


def _arrived(arrivals: list[float], _piece: str) -> bool:
    arrivals.append(time.perf_counter())
    return True


def service_single(model: TextModel, args: argparse.Namespace, pps: list[int]) -> dict[str, float]:
    """Prompt speed as N / time to first token, taken at the caller (from
    ``submit`` to the one-token generation in hand); decode speed from a short
    prompt (llama-bench's tg runs on an empty context), from the times its text
    reached the caller's callback."""
    result: dict[str, float] = {}
    for n in pps:
        times = []
        for r in range(args.reps):
            tokens = prompt_of(model, n, salt=f"{r} ")
            started = time.perf_counter()
            g = model.generate(tokens, GenerationParams(max_tokens=1, ignore_eog=True))
            times.append(time.perf_counter() - started)
            assert g.cached_tokens <= 1, "each prompt must be new"
        result[f"pp{n}"] = n / statistics.median(times)
        result[f"ttft{n}_ms"] = 1000 * statistics.median(times)
    speeds = []
    for r in range(args.reps):
        arrivals: list[float] = []
        params = GenerationParams(max_tokens=args.gen_tokens + 1, ignore_eog=True)
        model.generate(prompt_of(model, 2, salt=f"{r} "), params, on_text=functools.partial(_arrived, arrivals))
        speeds.append((len(arrivals) - 1) / (arrivals[-1] - arrivals[0]))
    result[f"tg{args.gen_tokens}"] = statistics.median(speeds)
    return result


def high_level_single(path: Path, args: argparse.Namespace, pps: list[int]) -> dict[str, float]:
    """llama-cpp-python's Llama.generate, as the service used it before."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=4096, n_threads=args.threads, n_batch=512,
                          n_gpu_layers=args.n_gpu_layers, verbose=False,
                          flash_attn=args.flash_attn == "on")
    result: dict[str, float] = {}
    base = LlamaModel(path, vocab_only=True)
    try:
        for n in pps:
            tokens = prompt_of(base, n)
            started = time.perf_counter()
            for _ in llm.generate(tokens, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
                break
            result[f"pp{n}"] = n / (time.perf_counter() - started)
        stamps: list[float] = []
        for _ in llm.generate(prompt_of(base, 2), top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0,
                              reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) > args.gen_tokens:
                break
        result[f"tg{args.gen_tokens}"] = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    finally:
        base.close()
        llm.close()
    return result


def steady_rate(jobs: list[Any]) -> float:
    """Aggregate decode tokens/s while all jobs decode at once: from the last
    job's first token to the first job's last token (llama-batched-bench's
    S_TG decodes all sequences in lockstep; the service's streams start a step
    or more apart, as their prompts fill the batches one after another)."""
    start = max(j.token_times[0] for j in jobs)
    end = min(j.token_times[-1] for j in jobs)
    count = sum(sum(1 for t in j.token_times if start < t <= end) for j in jobs)
    return float(count / (end - start))


def service_batched(path: Path, args: argparse.Namespace, streams: list[int]) -> dict[int, float]:
    """Aggregate decode tokens/s of S concurrent streams on one model instance
    (``steady_rate``)."""
    result: dict[int, float] = {}
    for s in streams:
        model = make_model(path, args, n_ctx=args.batch_prompt + args.batch_gen + 64, parallel=s, n_batch=512,
                           prompt_cache=False)
        try:
            model.generate(prompt_of(model, 8), GenerationParams(max_tokens=4))  # warm-up
            params = GenerationParams(max_tokens=args.batch_gen, ignore_eog=True)
            jobs = [model.submit(prompt_of(model, args.batch_prompt, salt=f"{i} "), params) for i in range(s)]
            for j in jobs:
                j.result()
            result[s] = steady_rate(jobs)
        finally:
            model.close()
    return result


def default_n_batch(args: argparse.Namespace) -> int:
    """The service's default step size (rag/generation/llama.py): 2,048 tokens
    with a GPU, 512 on a CPU; ``--n-batch`` overrides it on both sides."""
    return int(args.n_batch or (2048 if args.n_gpu_layers != 0 else 512))


def slot_ctx(args: argparse.Namespace) -> int:
    """Context cells per sequence, the same on both sides."""
    return int(args.slot_ctx or args.batch_prompt + args.batch_gen + 64)


def run_batched_bench_total(exe: str, model: Path, args: argparse.Namespace, streams: list[int]) -> dict[int, Any]:
    """llama-batched-bench with one context of ``max(streams)`` sequences of
    ``slot_ctx`` cells each, as the service's model: per stream count its total
    time T (prompts and decoding) and the settings it reports."""
    n_batch = default_n_batch(args)
    cmd = [exe, "-m", str(model), "-t", str(args.threads), "-tb", str(args.threads),
           "-c", str(max(streams) * slot_ctx(args)), "-b", str(n_batch), "-ub", str(min(args.n_ubatch, n_batch)),
           "-npp", str(args.batch_prompt), "-ntg", str(args.batch_gen), "-npl", ",".join(map(str, streams)),
           "-ngl", str(99 if args.n_gpu_layers < 0 else args.n_gpu_layers), "-fa", args.flash_attn,
           "--output-format", "jsonl"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[int, Any] = {}
    for line in out.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            result[int(row["pl"])] = {k: row[k] for k in ("t", "t_pp", "t_tg", "speed", "n_kv_max", "n_batch",
                                                          "n_ubatch")}
    return result


def _gaps(arrivals: list[list[float]]) -> list[float]:
    return [b - a for times in arrivals for a, b in itertools.pairwise(times)]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def caller_round(model: TextModel, s: int, args: argparse.Namespace, salt: str) -> dict[str, float]:
    """S requests of ``batch_prompt`` new tokens each, submitted together, each
    generating ``batch_gen`` tokens: wall time from the first submit to the last
    text delivered to this thread's callbacks (and every result in hand), time
    to first text and gaps between texts, all taken here, at the caller."""
    prompts = [prompt_of(model, args.batch_prompt, salt=f"{salt} {i} ") for i in range(s)]
    arrivals: list[list[float]] = [[] for _ in range(s)]
    done_at: list[float] = []

    def on_text_of(i: int) -> Any:
        times = arrivals[i]

        def on_text(piece: str) -> bool:
            times.append(time.perf_counter())
            return True

        return on_text

    started = time.perf_counter()
    jobs = [model.submit(p, GenerationParams(max_tokens=args.batch_gen, ignore_eog=True), on_text=on_text_of(i))
            for i, p in enumerate(prompts)]
    for job in jobs:
        job.future.add_done_callback(lambda _f: done_at.append(time.perf_counter()))
    results = [job.result() for job in jobs]
    wall = max([*done_at, *(t[-1] for t in arrivals if t)]) - started
    assert all(r.completion_tokens == args.batch_gen for r in results), "every stream generates batch_gen tokens"
    assert all(r.cached_tokens <= 8 for r in results), "every prompt must be new (beyond BOS and a salt word)"
    ttft = [t[0] - started for t in arrivals if t]
    gaps = _gaps(arrivals)
    return {
        "wall_s": wall, "tokens_per_s": s * (args.batch_prompt + args.batch_gen) / wall,
        "ttft_p50_s": _pct(ttft, 0.5), "ttft_max_s": max(ttft),
        "gap_p50_s": _pct(gaps, 0.5), "gap_p95_s": _pct(gaps, 0.95), "gap_max_s": max(gaps, default=float("nan")),
    }


def caller_batched(path: Path, args: argparse.Namespace, streams: list[int],
                   modes: list[str]) -> dict[str, dict[int, list[Any]]]:
    """``caller_round`` for each stream count, ``args.rounds`` times, on one model
    per mode loaded once with ``max(streams)`` slots (as llama-batched-bench's
    one context), the service's defaults otherwise (prompt reuse on, n_batch).
    A mode is ``process`` or ``inline``, with ``-mixed`` for the prompt
    admission before (``prompt_steps=0``). All models stay loaded and the
    rounds alternate between them, so that a before/after pair shares the
    machine's state."""
    models: dict[str, TextModel] = {}
    out: dict[str, dict[int, list[Any]]] = {m: {s: [] for s in streams} for m in modes}
    try:
        for mode in modes:
            how, _, variant = mode.partition("-")
            opts = argparse.Namespace(**{**vars(args), "isolation": how})
            extra: dict[str, Any] = {"prompt_steps": 0} if variant == "mixed" else {}
            if args.prompt_steps is not None and variant != "mixed":
                extra["prompt_steps"] = args.prompt_steps
            models[mode] = make_model(path, opts, n_ctx=slot_ctx(args), parallel=max(streams),
                                      n_batch=default_n_batch(args), n_ubatch=args.n_ubatch, **extra)
            for s in streams:  # warm-up: every batch shape once
                caller_round(models[mode], s, args, salt=f"warm{mode}{s}")
        for r in range(args.rounds):
            for s in streams:
                for mode in modes:
                    out[mode][s].append(caller_round(models[mode], s, args, salt=f"r{r}s{s}{mode}"))
    finally:
        for model in models.values():
            model.close()
    return out


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def prefix_reuse(path: Path, args: argparse.Namespace) -> dict[str, float]:
    """Time to first token of a RAG prompt (gemma-chat: fixed instructions,
    then ~1,800 tokens of context) cold, with only the instruction prefix
    cached (another question), and for a chat's next turn (all but the new
    turn cached)."""
    from rag.prompt import PromptBuilder

    model = make_model(path, args, n_ctx=4096, parallel=1, prompt_cache=True)
    try:
        def ttft(tokens: list[int]) -> tuple[float, int]:
            g = model.generate(tokens, GenerationParams(max_tokens=1, ignore_eog=True))
            return g.time_to_first_token_s, g.cached_tokens

        builder = PromptBuilder("gemma-chat", model.tokenize, model.detokenize)
        passages = [FILLER * 3 + f" Passage {i}." for i in range(12)]
        out: dict[str, float] = {}
        cold, prefix, turn = [], [], []
        for r in range(args.reps):
            a = builder.build(f"What is the code, take {r}?", [f"{r} {p}" for p in passages], budget=1900).tokens
            b = builder.build(f"Who reviewed it, take {r}?", [f"{r + 100} {p}" for p in passages],
                              budget=1900).tokens
            model.generate([1, 2], GenerationParams(max_tokens=1))  # evict: the cache holds an unrelated prompt
            t, c = ttft(a)
            assert c <= 1
            cold.append(t)
            t, c = ttft(b)
            prefix.append(t)
            out["prefix_cached_tokens"] = c
            nxt = b + model.tokenize(" Answer.<end_of_turn>\n<start_of_turn>user\nAnd then?<end_of_turn>\n"
                                     "<start_of_turn>model\n")[1:]
            t, c = ttft(nxt)
            turn.append(t)
            out["turn_cached_tokens"] = c
            out["prompt_tokens"] = len(a)
            out["turn_prompt_tokens"] = len(nxt)
        out["ttft_cold_s"] = statistics.median(cold)
        out["ttft_prefix_cached_s"] = statistics.median(prefix)
        out["ttft_next_turn_s"] = statistics.median(turn)
        return out
    finally:
        model.close()


def caller_section(path: Path, args: argparse.Namespace, streams: list[int], show: Any) -> dict[str, Any]:
    """Wall time from submitting S requests to the last token at the caller,
    against llama-batched-bench's total time T for the same work (median of
    ``rounds`` on each side, with the spread)."""
    section: dict[str, Any] = {"n_batch": default_n_batch(args), "n_ubatch": min(args.n_ubatch, default_n_batch(args)),
                               "slot_ctx": slot_ctx(args), "slots": max(streams), "prompt_tokens": args.batch_prompt,
                               "gen_tokens": args.batch_gen}
    if args.batched_bench:
        runs = [run_batched_bench_total(args.batched_bench, path, args, streams) for _ in range(args.rounds)]
        section["batched_bench"] = {s: {**runs[0][s], "t": spread([r[s]["t"] for r in runs])} for s in streams}
        show("batched-bench T (s)", {s: section["batched_bench"][s]["t"]["median"] for s in streams})
    modes = list(filter(None, args.caller_modes.split(",")))
    by_mode = caller_batched(path, args, streams, modes)
    for how in modes:
        rounds = by_mode[how]
        summary: dict[int, Any] = {}
        for s in streams:
            rows = rounds[s]
            summary[s] = {key: spread([row[key] for row in rows]) for key in rows[0]}
            if args.batched_bench:
                t_med = section["batched_bench"][s]["t"]["median"]
                summary[s]["ratio_to_T"] = spread([t_med / row["wall_s"] for row in rows])
        section[how] = {"rounds": rounds, "summary": summary}
        show(f"caller {how} wall (s)", {s: summary[s]["wall_s"]["median"] for s in streams})
        show(f"caller {how} ttft p50 (ms)", {s: 1000 * summary[s]["ttft_p50_s"]["median"] for s in streams})
        show(f"caller {how} gap p50 (ms)", {s: 1000 * summary[s]["gap_p50_s"]["median"] for s in streams})
        if args.batched_bench:
            show(f"caller {how} T/wall", {s: summary[s]["ratio_to_T"]["median"] for s in streams})
            show("  spread min", {s: summary[s]["ratio_to_T"]["min"] for s in streams})
            show("  spread max", {s: summary[s]["ratio_to_T"]["max"] for s in streams})
    return section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path("data"), help="where the bundled model is assembled")
    ap.add_argument("--model", help="a GGUF instead of the bundled model")
    ap.add_argument("--llama-bench", help="path of llama-bench")
    ap.add_argument("--batched-bench", help="path of llama-batched-bench")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    ap.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--prompt-tokens", default="512,1839")
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="alternations of llama-bench and the service")
    ap.add_argument("--streams", default="1,4,16")
    ap.add_argument("--batch-prompt", type=int, default=512)
    ap.add_argument("--batch-gen", type=int, default=128)
    ap.add_argument("--skip", default="", help="comma list of: single,high_level,batched,caller,prefix")
    ap.add_argument("--caller-modes", default="process,inline",
                    help="caller section: the model in a model process and/or in this process; a mode with "
                         "'-mixed' (process-mixed) runs the prompt admission before (prompt_steps=0)")
    ap.add_argument("--prompt-steps", type=int, default=None,
                    help="caller section: the scheduler's prompt_steps (default: the service's)")
    ap.add_argument("--n-batch", type=int, default=0, help="caller section: tokens per step (0: the service's default)")
    ap.add_argument("--n-ubatch", type=int, default=512)
    ap.add_argument("--slot-ctx", type=int, default=0, help="caller section: KV cells per sequence (0: prompt+gen+64)")
    ap.add_argument("--isolation", choices=["inline", "process"], default="inline",
                    help="the model in this process, or in a model process as the service runs it")
    ap.add_argument("--compare-inline", action="store_true",
                    help="also measure the model in this process (single, batched): the cost of the model process")
    ap.add_argument("--step-trace", type=Path, metavar="DIR",
                    help="single: each variant's scheduler steps (RAG_LLM_STEP_TRACE) to DIR/steps-single-NAME.jsonl, "
                         "every round appended (bench/device/stepsplit.py splits the decode steps)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    path = Path(args.model) if args.model else resolve_model_path(Settings(data_dir=args.data_dir))
    pps = [int(x) for x in args.prompt_tokens.split(",")]
    streams = [int(x) for x in args.streams.split(",")]
    report: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "model": path.name, "threads": args.threads, "n_gpu_layers": args.n_gpu_layers,
        "flash_attn": args.flash_attn, "isolation": args.isolation, "rounds": [],
    }

    def show(title: str, values: dict[Any, float]) -> None:
        print(f"{title:<28}" + "  ".join(f"{k}={v:,.3f}" if abs(v) < 10 else f"{k}={v:,.1f}"
                                         for k, v in values.items()), flush=True)

    if "single" not in skip:
        # The service's default (prompt reuse on: full-size SWA cache) and without it.
        # One model at a time: on a CPU, a second context's idle OpenMP threads
        # slowed the other's decoding by up to half (docs/benchmarks.md).
        for r in range(args.rounds):
            row: dict[str, Any] = {}
            if args.llama_bench:
                row["llama_bench"] = run_llama_bench(args.llama_bench, path, args, pps)
                show(f"round {r} llama-bench", row["llama_bench"])
            variants: list[tuple[str, bool, argparse.Namespace]] = [
                ("service", True, args),
                ("service_no_cache", False, args),
            ]
            if args.compare_inline:
                variants.append(("service_inline", True, argparse.Namespace(**{**vars(args), "isolation": "inline"})))
            for name, cache, how in variants:
                trace = None if args.step_trace is None else args.step_trace / f"steps-single-{name}.jsonl"
                traced = {} if trace is None else {"step_trace": trace}
                model = make_model(path, how, n_ctx=4096, parallel=1, prompt_cache=cache, **traced)
                try:
                    # Warm-up as llama-bench's: one prompt of the largest size first.
                    model.generate(prompt_of(model, max(pps), salt="w "), GenerationParams(max_tokens=4))
                    row[name] = service_single(model, args, pps)
                finally:
                    model.close()
                show(f"round {r} {name}", row[name])
                if "llama_bench" in row:
                    row[f"{name}_ratio"] = {k: row[name][k] / row["llama_bench"][k] for k in row["llama_bench"]}
                    show(f"round {r} {name} ratio", row[f"{name}_ratio"])
            if args.compare_inline:
                row["single_process_vs_inline"] = {
                    k: row["service"][k] / row["service_inline"][k] for k in row["service"]
                }
                show(f"round {r} process/inline", row["single_process_vs_inline"])
            report["rounds"].append(row)
    if "high_level" not in skip:
        report["high_level"] = high_level_single(path, args, pps)
        show("Llama.generate (before)", report["high_level"])
        if report["rounds"] and "llama_bench" in report["rounds"][-1]:
            lb = report["rounds"][-1]["llama_bench"]
            report["high_level_ratio"] = {k: v / lb[k] for k, v in report["high_level"].items()}
            show("Llama.generate ratio", report["high_level_ratio"])
    if "batched" not in skip:
        # Rounds alternate llama-batched-bench and the service, as above.
        report["batched_rounds"] = []
        for r in range(args.rounds):
            row = {}
            if args.batched_bench:
                row["batched_bench"] = run_batched_bench(args.batched_bench, path, args, streams)
                show(f"round {r} batched-bench S_TG", row["batched_bench"])
            row["batched_service"] = service_batched(path, args, streams)
            show(f"round {r} service aggregate", row["batched_service"])
            if args.compare_inline:
                inline = argparse.Namespace(**{**vars(args), "isolation": "inline"})
                row["batched_inline"] = service_batched(path, inline, streams)
                show(f"round {r} inline aggregate", row["batched_inline"])
                row["process_vs_inline"] = {s: row["batched_service"][s] / row["batched_inline"][s] for s in streams}
                show(f"round {r} process/inline", row["process_vs_inline"])
            if args.batched_bench:
                row["batched_ratio"] = {s: row["batched_service"][s] / row["batched_bench"][s] for s in streams}
                show(f"round {r} batched ratio", row["batched_ratio"])
            report["batched_rounds"].append(row)
        if args.compare_inline:
            report["process_vs_inline_median"] = {
                s: statistics.median(row["process_vs_inline"][s] for row in report["batched_rounds"]) for s in streams
            }
            show("process/inline, median", report["process_vs_inline_median"])
        if args.batched_bench:
            report["batched_ratio_median"] = {
                s: statistics.median(row["batched_ratio"][s] for row in report["batched_rounds"]) for s in streams
            }
            show("batched ratio, median", report["batched_ratio_median"])
    if args.compare_inline and report["rounds"]:
        report["single_process_vs_inline_median"] = {
            k: statistics.median(row["single_process_vs_inline"][k] for row in report["rounds"])
            for k in report["rounds"][0]["single_process_vs_inline"]
        }
        show("single process/inline, median", report["single_process_vs_inline_median"])
    if report["rounds"] and "llama_bench" in report["rounds"][0]:
        names = ["service", "service_no_cache"] + (["service_inline"] if args.compare_inline else [])
        for name in names:
            report[f"{name}_ratio_median"] = {
                k: statistics.median(row[f"{name}_ratio"][k] for row in report["rounds"])
                for k in report["rounds"][0][f"{name}_ratio"]
            }
            show(f"{name} ratio, median", report[f"{name}_ratio_median"])
    if "caller" not in skip:
        report["caller"] = caller_section(path, args, streams, show)
    if "prefix" not in skip:
        report["prefix"] = prefix_reuse(path, args)
        show("prefix reuse (ms, tokens)", {k: v * 1000 if k.endswith("_s") else v for k, v in report["prefix"].items()})
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()

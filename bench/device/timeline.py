"""Where each HTTP round's time went, from the caller's clock and the
scheduler's step trace (``RAG_LLM_STEP_TRACE``) on the same machine, beside
llama-batched-bench's prompt and generation times for the same work.

Per round (bench/load.py's ``started`` and ``wall_s``, both on
``time.perf_counter``, the machine's monotonic clock, as the trace is):

* ``first step``: from the round's start to the scheduler's first step (the
  requests' way through the client, the API process and the model process);
* ``prompt phase``: from that step to the end of the last step holding prompt,
  against batched-bench's ``t_pp``; ``prompt steps`` how many;
* ``decode``: from there to the end of the last step, against ``t_tg``; the
  median step;
* ``idle``: time between steps with nothing to run (waiting for requests);
* ``tail``: from the last step's end to the caller's last byte (the text's way
  back: model process, API process, SSE, client);
* ``ratio``: the round's tokens per second (prompt + generated, as the caller
  counted them) against batched-bench's for 512 + 128 per sequence at the same
  sequence count (its median T over the runs in the file): median over the
  rounds, then the range.

Where the rounds had llama-batched-bench run beside them (``bench/load.py
--reference``, e2e.sh's ``INTERLEAVE=1``), each round's prompt phase and
decode are also set against that round's own run (its row in
batched-bench.jsonl, found by its T): ``beside`` lines, the differences'
median and range; ``--per-round`` prints every round. The rounds are also
split by how long the service had done nothing before (``since own``: from
its last step before the round to the round's first): a burst that came
within a second of the service's own last step against one after it sat idle
while the other services and batched-bench used the GPU (session 15: 0.938
against 0.888 of T on an H100; ``bench/load.py --prime`` makes every round
the first kind, as batched-bench's S run always is).

``--prompt-steps``: the prompt phase step by step (median over the rounds
of each step's prompt tokens, its time from start to tokens read, and the
gap before it), against batched-bench's time per 2,048-token call (its
``t_pp`` over S × 512 / 2,048 calls).

    python bench/device/timeline.py http.json steps.jsonl [batched-bench.jsonl] [--prefix service-chat-S]
        [--per-round] [--prompt-steps]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

REST_S = 1.0  # a round that began this long after the service's own last step found it rested


def rounds_of(http: dict[str, Any], prefix: str) -> dict[int, list[dict[str, Any]]]:
    if "label" in http and "streams" in http:  # bench/load.py's JSON of one service, not of several
        http = {http["label"]: http}
    out: dict[int, list[dict[str, Any]]] = {}
    for label, run in http.items():
        if not label.startswith(prefix) or not label[len(prefix):].isdigit():
            continue
        for s, data in run["streams"].items():
            out.setdefault(int(s), []).extend(data["rounds"])
    return out


def split(r: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, float] | None:
    t0, t1 = r["started"], r["started"] + r["wall_s"]
    mine = [s for s in steps if t0 <= s["began"] <= t1]
    if not mine:
        return None
    earlier = [s["collected"] for s in steps if s["collected"] < mine[0]["began"]]
    prompt = [s for s in mine if s["prompt"] > 0]
    prompt_end = prompt[-1]["collected"] if prompt else mine[0]["began"]
    decode = [s for s in mine if s["collected"] > prompt_end]
    idle = sum(max(0.0, b["began"] - a["collected"]) for a, b in itertools.pairwise(mine))
    periods = [b["began"] - a["began"] for a, b in itertools.pairwise(decode)]
    return {
        "wall": r["wall_s"],
        "first_step": mine[0]["began"] - t0,
        "prompt_phase": prompt_end - mine[0]["began"],
        "prompt_steps": float(len(prompt)),
        "decode": mine[-1]["collected"] - prompt_end,
        "decode_steps": float(len(decode)),
        "step": statistics.median(periods) if periods else float("nan"),
        "idle": idle,
        "tail": t1 - mine[-1]["collected"],
        "tokens": r["prompt_tokens"] + r["completion_tokens"],
        "since_own": mine[0]["began"] - max(earlier) if earlier else float("inf"),
    }


def batched_bench(path: Path | None) -> dict[int, dict[str, float]]:
    if path is None or not path.exists():
        return {}
    runs: dict[int, list[dict[str, Any]]] = {}
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            runs.setdefault(int(row["pl"]), []).append(row)
    return {pl: {k: statistics.median(r[k] for r in rows) for k in ("t_pp", "t_tg", "t")} for pl, rows in runs.items()}


def rows_of(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def beside(http: dict[str, Any], steps: list[dict[str, Any]], rows: list[dict[str, Any]], prefix: str,
           per_round: bool) -> None:
    """Each round against the batched-bench run of its own round (``--reference``)."""
    reference = "reference-" + prefix.split("-", 1)[1]
    for s, rounds in sorted(rounds_of(http, prefix).items()):
        refs = http.get(f"{reference}{s}", {}).get("streams", {}).get(str(s), {}).get("rounds", [])
        pairs = []
        by_rest: dict[bool, list[float]] = {True: [], False: []}  # ratio to T, by whether the service had rested
        for i, (r, ref) in enumerate(zip(rounds, refs, strict=False)):
            row = next((x for x in rows if x["pl"] == s and abs(x["t"] - ref["t_s"]) < 1e-6), None)
            part = split(r, steps)
            if row is None or part is None:
                continue
            d_pp, d_tg = part["prompt_phase"] - row["t_pp"], part["decode"] - row["t_tg"]
            pairs.append((d_pp, d_tg, part["wall"] - row["t"]))
            if "ratio_to_reference" in r:
                by_rest[part["since_own"] >= REST_S].append(r["ratio_to_reference"])
            if per_round:
                print(f"beside S={s} round {i:2d}  wall {part['wall'] * 1e3:6.1f} vs T {row['t'] * 1e3:6.1f}"
                      f"  prompt {part['prompt_phase'] * 1e3:6.1f} vs pp {row['t_pp'] * 1e3:6.1f}"
                      f"  decode {part['decode'] * 1e3:6.1f} vs tg {row['t_tg'] * 1e3:6.1f}"
                      f"  since own {part['since_own']:.2f} s")
        if not pairs:
            continue
        text = []
        for name, k in (("prompt - pp", 0), ("decode - tg", 1), ("wall - T", 2)):
            v = sorted(p[k] * 1e3 for p in pairs)
            text.append(f"{name} {statistics.median(v):+.1f} ms ({v[0]:+.1f} to {v[-1]:+.1f})")
        print(f"beside {prefix}{s}: rounds {len(pairs)}  " + "  ".join(text))
        for rested, ratios in sorted(by_rest.items()):
            if ratios:
                v = sorted(ratios)
                print(f"beside {prefix}{s}: {'after' if rested else 'within'} {REST_S:.0f} s of its own last step: "
                      f"{len(v)} rounds, ratio to T {statistics.median(v):.3f} ({v[0]:.3f}-{v[-1]:.3f})")


def prompt_steps(http: dict[str, Any], steps: list[dict[str, Any]], tb: dict[int, dict[str, float]],
                 prefix: str) -> None:
    """Each round's prompt steps by position: tokens, duration, gap before (medians over the rounds)."""
    for s, rounds in sorted(rounds_of(http, prefix).items()):
        by_position: dict[int, list[tuple[float, float, float]]] = {}
        for r in rounds:
            mine = [x for x in steps if r["started"] <= x["began"] <= r["started"] + r["wall_s"]]
            for i, (before, step) in enumerate(itertools.pairwise([None, *mine])):
                if step["prompt"] <= 0:
                    break
                gap = step["began"] - before["collected"] if before is not None else 0.0
                by_position.setdefault(i, []).append((step["prompt"], step["collected"] - step["began"], gap))
        if not by_position:
            continue
        ref = tb.get(s)
        per_call = f"  | batched-bench {ref['t_pp'] * 1000 / (s * 512 / 2048):.1f} ms per 2,048 tokens" if ref else ""
        text = "  ".join(
            f"#{i} {statistics.median(v[0] for v in vs):.0f} tok {statistics.median(v[1] for v in vs) * 1000:.1f} ms"
            f" (gap {statistics.median(v[2] for v in vs) * 1000:.2f})"
            for i, vs in sorted(by_position.items()))
        print(f"prompt steps {prefix}{s}: {len(rounds)} rounds  {text}{per_call}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("http", type=Path)
    ap.add_argument("steps", type=Path)
    ap.add_argument("batched_bench", type=Path, nargs="?")
    ap.add_argument("--prefix", default="service-chat-S")
    ap.add_argument("--per-round", action="store_true", help="every round beside its own batched-bench run")
    ap.add_argument("--prompt-steps", action="store_true", help="the prompt phase step by step")
    args = ap.parse_args()
    http = json.loads(args.http.read_text())
    steps = sorted((json.loads(x) for x in args.steps.read_text().splitlines() if x.strip()), key=lambda s: s["began"])
    tb = batched_bench(args.batched_bench)
    print(f"timeline {args.prefix}*: medians over rounds, ms (batched-bench: median of its runs)")
    for s, rounds in sorted(rounds_of(http, args.prefix).items()):
        parts = [p for p in (split(r, steps) for r in rounds) if p is not None]
        if not parts:
            print(f"timeline S={s}: no steps inside its rounds")
            continue
        m = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
        ref = tb.get(s)
        ref_text = ""
        if ref:
            ratios = sorted(p["tokens"] / p["wall"] / (640 / ref["t"]) for p in parts)
            ref_text = (f"  | batched-bench pp {ref['t_pp'] * 1000:.1f} tg {ref['t_tg'] * 1000:.1f} "
                        f"T {ref['t'] * 1000:.1f}  ratio {statistics.median(ratios):.3f} "
                        f"({ratios[0]:.3f}-{ratios[-1]:.3f})")
        print(f"timeline S={s:<3} rounds {len(parts)}  wall {m['wall'] * 1000:7.1f}"
              f"  first step {m['first_step'] * 1000:5.1f}"
              f"  prompt {m['prompt_phase'] * 1000:6.1f} ({m['prompt_steps']:.0f} steps)"
              f"  decode {m['decode'] * 1000:6.1f} ({m['decode_steps']:.0f} steps, {m['step'] * 1000:.2f}/step)"
              f"  idle {m['idle'] * 1000:5.1f}  tail {m['tail'] * 1000:5.1f}{ref_text}")

    beside(http, steps, rows_of(args.batched_bench), args.prefix, args.per_round)
    if args.prompt_steps:
        prompt_steps(http, steps, tb, args.prefix)


if __name__ == "__main__":
    main()

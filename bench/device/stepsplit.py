"""Where a decode step goes, from the scheduler's step trace
(``RAG_LLM_STEP_TRACE``; ``bench/generation.py --step-trace`` for the
single-stream runs): for steps of next tokens only (no prompt), by how many
sequences they hold, the medians of

* ``host``: ``began`` → ``launched``, ``llama_decode`` on the host (on a GPU
  it returns once the step is queued);
* ``wait``: ``launched`` → ``collected``, the wait for the step's tokens;
* ``between``: the last step's ``collected`` → this one's ``began``, the
  scheduler's own work on the way from one step to the next (negative for a
  chained step, queued before the last one's tokens were read: its ``host``
  then holds the wait for the step before);
* ``period``: ``collected`` to ``collected``, a step as the caller's tokens
  come (1,000 / tokens-per-second of one stream).

With ``--tg TOKENS_PER_S`` (llama-bench's tg128 of the same run) the single
stream's period is set against llama-bench's time per token.

    python bench/device/stepsplit.py steps.jsonl [more.jsonl ...] [--tg 1003.9]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

# A gap longer than this between two steps is the scheduler waiting for work, not a step.
_IDLE_S = 0.05


def split(paths: list[Path]) -> dict[int, dict[str, float]]:
    by_size: dict[int, dict[str, list[float]]] = {}
    for path in paths:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for last, row in itertools.pairwise(rows):
            if row["prompt"] or last["prompt"] or row["tokens"] != last["tokens"]:
                continue
            between = row["began"] - last["collected"]
            if between >= _IDLE_S:
                continue
            parts = by_size.setdefault(row["tokens"], {"host": [], "wait": [], "between": [], "period": []})
            parts["host"].append(row["launched"] - row["began"])
            parts["wait"].append(row["collected"] - row["launched"])
            parts["between"].append(between)
            parts["period"].append(row["collected"] - last["collected"])
    return {size: {"steps": len(parts["period"]), **{k: 1000 * statistics.median(v) for k, v in parts.items()}}
            for size, parts in sorted(by_size.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("steps", type=Path, nargs="+")
    ap.add_argument("--tg", type=float, help="llama-bench's tg tokens/s: the single stream's period against it")
    args = ap.parse_args()
    for size, row in split(args.steps).items():
        line = (f"steps of {size:>3} sequences: {row['steps']:>6} steps  host {row['host']:.3f} ms  "
                f"wait {row['wait']:.3f}  between {row['between']:.3f}  period {row['period']:.3f}")
        if size == 1 and args.tg:
            per_token = 1000 / args.tg
            line += f"  (llama-bench {per_token:.3f} ms a token: ratio {per_token / row['period']:.3f})"
        print(line)


if __name__ == "__main__":
    main()

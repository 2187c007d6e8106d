"""Two services measured side by side (bench/load.py ``--versus``, e2e.sh's
``INTERLEAVE=1``), compared round by round: each round's ratio to T of the
first against the second's in the same round (paired, so that what drifts
over the run falls on both), and each side's ratio by what ran just before it
on the GPU (itself, the other service, or llama-batched-bench): an order
effect shows there, and an A/A run (two services set alike) shows how far
two processes of the same code differ.

    python bench/device/versus.py http.json [--first service-chat-S] [--second before-chat-S]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def spread(values: list[float]) -> str:
    v = sorted(values)
    return f"{statistics.median(v):+.3f} ({v[0]:+.3f} to {v[-1]:+.3f})" if v else "-"


def plain(values: list[float]) -> str:
    v = sorted(values)
    return f"{statistics.median(v):.3f} ({v[0]:.3f}-{v[-1]:.3f}, n={len(v)})" if v else "-"


def compare(http: dict[str, Any], first: str, second: str) -> None:
    for label in sorted(http):
        if not label.startswith(first) or not label[len(first):].isdigit():
            continue
        s = label[len(first):]
        other = f"{second}{s}"
        if other not in http:
            continue
        runs: list[tuple[float, str]] = []  # (started, label) of every run at this stream count
        for name, data in http.items():
            for r in data.get("streams", {}).get(s, {}).get("rounds", []):
                if "started" in r:
                    runs.append((r["started"], name))
        runs.sort()
        before_of = {started: runs[i - 1][1] if i else "" for i, (started, _) in enumerate(runs)}
        a = http[label]["streams"][s]["rounds"]
        b = http[other]["streams"][s]["rounds"]
        diffs = [x["ratio_to_reference"] - y["ratio_to_reference"] for x, y in zip(a, b, strict=False)
                 if "ratio_to_reference" in x and "ratio_to_reference" in y]
        ahead = sum(d > 0 for d in diffs)
        print(f"versus S={s}: {label} {plain([x['ratio_to_reference'] for x in a if 'ratio_to_reference' in x])}"
              f"  {other} {plain([y['ratio_to_reference'] for y in b if 'ratio_to_reference' in y])}")
        print(f"versus S={s}: per round, first - second {spread(diffs)}; first ahead in {ahead} of {len(diffs)}")
        for side, rounds in ((label, a), (other, b)):
            by: dict[str, list[float]] = {}
            for r in rounds:
                if "ratio_to_reference" in r and "started" in r:
                    prev = before_of.get(r["started"], "")
                    kind = "itself" if prev == side else ("reference" if prev.startswith("reference") else
                                                          ("the other" if prev else "nothing"))
                    by.setdefault(kind, []).append(r["ratio_to_reference"])
            print(f"versus S={s}: {side} after " + "; ".join(f"{k}: {plain(v)}" for k, v in sorted(by.items())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("http", type=Path)
    ap.add_argument("--first", default="service-chat-S")
    ap.add_argument("--second", default="before-chat-S")
    args = ap.parse_args()
    compare(json.loads(args.http.read_text()), args.first, args.second)


if __name__ == "__main__":
    main()

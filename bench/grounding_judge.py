"""How long judging one answer against its passages takes (``GroundingJudge.assess``,
rag/grounding.py): it runs on the API process's event loop at the end of
every ``/ask`` that generated, so a burst's streams, ending together, queue
their judgings there (the tail of a 16-stream ``/ask`` burst on the H200 was
43 ms against 4–5 ms for chat, session 11). A 128-word answer against five
passages of eight sentences, new passages each time (nothing cached from one
request to the next but words); ``--same-passages``: the same five every
time, new answers, as a collection's best passages come back.

    python bench/grounding_judge.py [--requests 40] [--same-passages]

GROUNDING_REPO=DIR: that checkout's code (before/after on one machine).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [os.environ.get("GROUNDING_REPO") or str(_HERE.parent),
               *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

from rag.grounding import GroundingJudge  # noqa: E402

WORDS = ["the", "of", "harbor", "bridge", "opened", "in", "1932", "after", "eight", "years", "construction",
         "steel", "arch", "span", "city", "council", "vote"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--same-passages", action="store_true")
    args = ap.parse_args()
    rng = random.Random(1)

    def sentence(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n)) + "."

    judge = GroundingJudge(0.5)
    times = []
    same = [(i, " ".join(sentence(18) for _ in range(8)) + f" p{i}.") for i in range(1, 6)]
    for r in range(args.requests):
        passages = same if args.same_passages else [
            (i, " ".join(sentence(18) for _ in range(8)) + f" r{r}p{i}.") for i in range(1, 6)]
        answer = " ".join(rng.choice(WORDS) for _ in range(128))
        started = time.perf_counter()
        judge.assess("When did the harbor bridge open?", answer, passages, [-0.1] * 128)
        times.append(1000 * (time.perf_counter() - started))
    times.sort()
    print(f"assess: median {statistics.median(times):.2f} ms ({times[0]:.2f}-{times[-1]:.2f}, {len(times)} requests)")


if __name__ == "__main__":
    main()

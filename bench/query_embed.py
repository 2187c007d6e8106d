"""A burst of searches' questions through the real embedder: S threads, each
embedding one new question at the same moment, as S concurrent ``/ask``
requests do; the time until the last has its vector and each call's own
latency, median over rounds. ``together``: ``Embedder.embed_queries``
(``Coalesced``: the questions that come while one forward pass runs go in the
next, together); ``one by one``: ``Embedder.embed`` per question (the lock
serialising them, as before session 11). The two alternate round by round.

    python bench/query_embed.py [--streams 1,16,64] [--rounds 9] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

from rag.embedder import Embedder  # noqa: E402
from rag.settings import BUNDLED_EMBEDDING_MODEL  # noqa: E402


def burst(embedder: Embedder, s: int, salt: str, together: bool) -> tuple[float, list[float]]:
    barrier = threading.Barrier(s + 1)
    latencies: list[float] = []

    def one(i: int) -> None:
        question = f"{salt} {i}: when did the harbour bridge open, and who paid for its steel arch?"
        barrier.wait()
        started = time.perf_counter()
        (embedder.embed_queries if together else embedder.embed)([question])
        latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(s)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - started, latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="1,16,64")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    embedder = Embedder(BUNDLED_EMBEDDING_MODEL, device=args.device)
    embedder.embed(["warm-up"])
    for s in [int(x) for x in args.streams.split(",")]:
        walls: dict[str, list[float]] = {"together": [], "one by one": []}
        lat: dict[str, list[float]] = {"together": [], "one by one": []}
        for r in range(args.rounds + 1):
            for way in walls:
                wall, latencies = burst(embedder, s, f"round {r} {way}", way == "together")
                if r:  # round 0 warms up
                    walls[way].append(wall)
                    lat[way].append(statistics.median(latencies))
        for way in walls:
            w = sorted(1000 * x for x in walls[way])
            print(f"query embed S={s:<3} {way:<10}: last vector at {statistics.median(w):7.1f} ms "
                  f"({w[0]:.1f}-{w[-1]:.1f}), a call's median {1000 * statistics.median(lat[way]):6.1f} ms, "
                  f"{args.rounds} rounds, device {embedder.device}", flush=True)


if __name__ == "__main__":
    main()

"""One question embedded at a time, as `/ask` and `/search` do, by the service's
embedder (rag/embedder.py) on each device it can use here: where a lone
`/ask` on the H200 spent 68 ms embedding its question (docs/benchmarks.md,
session 10) against 13 ms on the dev VM's CPU.

    python bench/device/embed_query.py MODEL_DIR [--devices cuda,cpu] [--queries 60] [--pause 0,1]
        [--vary-length]

MODEL_DIR: a sentence-transformers folder (e2e.sh unpacks the bundled one to
/root/w/minilm), or the bundled model's name. Every question is new (no
cache can answer it); per device: load time, then each call's wall time
(median, 90th percentile, min, max) after 5 warm-up calls.

Two guesses for the lone `/ask`'s 68 ms, each with an option:
``--pause S[,S...]``: a pause of S seconds before each call, as between lone
requests (a GPU left idle lowers its clocks: nvidia-smi read 345 MHz between
calls, session 11); ``--vary-length``: each question of another length, so
another input shape (cuBLAS may pick other kernels, loaded lazily on first
use)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rag.embedder import Embedder

SUBJECTS = ["the lighthouse", "the harbour", "the old mill", "the river", "the council", "the railway"]


def questions(n: int, salt: str, vary_length: bool = False) -> list[str]:
    """``n`` new questions; with ``vary_length`` the i-th has i % 24 words more."""
    extra = (lambda i: " and then" * (i % 24)) if vary_length else (lambda i: "")
    return [f"When was {SUBJECTS[i % len(SUBJECTS)]} of town {salt}{i} built{extra(i)}, and by whom?"
            for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--devices", default="cuda,cpu")
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--pause", default="0", help="seconds of pause before each call, one run per value")
    parser.add_argument("--vary-length", action="store_true")
    args = parser.parse_args()
    for device in args.devices.split(","):
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                print("embed cuda: no CUDA device here")
                continue
        t = time.perf_counter()
        embedder = Embedder(args.model, device=device, backend="torch")
        loaded = time.perf_counter() - t
        for text in questions(5, f"warm-{device}-"):
            embedder.embed_query(text)
        for pause in (float(p) for p in args.pause.split(",")):
            times = []
            for text in questions(args.queries, f"{device}-{pause}-", args.vary_length):
                time.sleep(pause)
                t = time.perf_counter()
                embedder.embed_query(text)
                times.append(1000 * (time.perf_counter() - t))
            times.sort()
            print(f"embed {device} pause={pause:g}s{' vary-length' if args.vary_length else ''}: loaded in "
                  f"{loaded:.1f} s; one question: median {statistics.median(times):.2f} ms, "
                  f"p90 {times[int(0.9 * len(times))]:.2f} ms, min {times[0]:.2f}, max {times[-1]:.2f} "
                  f"({len(times)} calls, {embedder.device})", flush=True)


if __name__ == "__main__":
    main()

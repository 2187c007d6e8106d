"""Ask a sample of squad-dev questions through a running service and report how
often the right document is among the sources (and, loosely, whether the answer
contains a gold answer).

    rag serve &                                   # RAG_PORT=8011 RAG_DATA_DIR=/tmp/squad/data
    rag ingest ../shared/eval/squad-dev/documents --collection squad --url http://127.0.0.1:8011
    python bench/squad_ask.py --url http://127.0.0.1:8011 --collection squad --sample 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--collection", default="squad")
    parser.add_argument("--qa", type=Path, default=Path("../shared/eval/squad-dev/qa.jsonl"))
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    questions = [json.loads(line) for line in args.qa.read_text().splitlines() if line.strip()]
    answerable = [q for q in questions if q["answers"]]
    sample = random.Random(args.seed).sample(answerable, args.sample)
    in_sources = contains_gold = 0
    latencies = []
    key = os.environ.get("RAG_API_KEY")  # the service's key, when it requires one
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=args.url, timeout=600, headers=headers) as client:
        for q in sample:
            started = time.perf_counter()
            r = client.post(
                f"/v1/collections/{args.collection}/ask",
                json={"question": q["question"], "max_tokens": args.max_tokens},
            )
            r.raise_for_status()
            body = r.json()
            latencies.append(time.perf_counter() - started)
            found = q["document"] in {s["filename"] for s in body["sources"]}
            good = any(a.lower() in body["answer"].lower() for a in q["answers"])
            in_sources += found
            contains_gold += good
            print(f"{found!s:5} {good!s:5} {q['question'][:60]!r} -> {body['answer'][:50]!r}")
    n = len(sample)
    print(f"right document among sources: {in_sources}/{n}; answer contains a gold answer: {contains_gold}/{n}")
    print(f"latency p50 {statistics.median(latencies):.1f}s, max {max(latencies):.1f}s")


if __name__ == "__main__":
    main()

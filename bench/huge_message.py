"""One chat message of N characters through ``/v1/chat/completions``: the
caller's wall time and the service's own timings (a running service, e.g.
rag serve with a collection indexed).

    python bench/huge_message.py --url http://127.0.0.1:8000 --model rag/bench \\
        --chars 4000,1000000,5000000 --api-key KEY
"""

from __future__ import annotations

import argparse
import time

import httpx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default="rag/bench")
    ap.add_argument("--chars", default="4000,1000000,5000000")
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--api-key")
    args = ap.parse_args()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    for n in (int(x) for x in args.chars.split(",")):
        text = ("How long do refunds take? " * (n // 26 + 1))[:n]
        started = time.perf_counter()
        r = httpx.post(f"{args.url}/v1/chat/completions", headers=headers, timeout=900,
                       json={"model": args.model, "messages": [{"role": "user", "content": text}],
                             "max_tokens": args.max_tokens})
        wall = time.perf_counter() - started
        print(n, r.status_code, round(wall, 2), r.json().get("timings") if r.status_code == 200 else r.text[:300],
              flush=True)


if __name__ == "__main__":
    main()

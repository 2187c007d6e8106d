"""The API process's cost per streamed token: rendering one OpenAI
``chat.completion.chunk`` SSE event, as a dict through ``json.dumps`` (every
field each time) against ``api.sse.TextFrames`` (the bytes around the text
rendered once per stream).

    python bench/sse_chunk.py [--calls 200000]
"""

from __future__ import annotations

import argparse
import functools
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.openai_schemas import chunk
from api.sse import TextFrames, sse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    cid, created, model = "chatcmpl-0123456789abcdef0123456789abcdef", 1_700_000_000, "model"

    def whole(text: str) -> bytes:
        return sse(chunk(id=cid, created=created, model=model, delta={"content": text}))

    frames = TextFrames(lambda text: chunk(id=cid, created=created, model=model, delta={"content": text}))
    assert whole(" Paris") == frames(" Paris")
    for name, render in (("dict + json.dumps", whole), ("TextFrames", frames)):
        best = min(timeit.repeat(functools.partial(render, " Paris"), number=args.calls, repeat=5))
        print(f"sse chunk {name}: {best / args.calls * 1e6:.2f} us per chunk (best of 5 x {args.calls})")


if __name__ == "__main__":
    main()

"""Embedding backends side by side: speed and answer-recall@5 (dense) on squad-dev.

Parses squad-dev documents (``--formats``, default the text-like ones, which
parse fast), chunks them as the service does (256 tokens, 40 overlap, section
title in front), then for each backend (torch, onnx, onnx-int8):

* embeds every chunk, timed (the same thread count for all: ``--threads``),
* embeds every answerable question of those documents and ranks all chunks by
  dot product (vectors are normalised: cosine), exactly, in numpy,
* scores answer-recall@5 with the service's judge (a top-5 chunk from the
  question's document that contains an answer, SQuAD normalisation).

    nice -n 10 python -m bench.embed_backends --json docs/results/embed-backends.json

The ONNX exports are made (once) under ``--cache``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.report import emit

DEFAULT_DATA = Path("/work/shared/eval/squad-dev")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--formats", default="txt,md,html")
    parser.add_argument("--backends", default="torch,onnx,onnx-int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("data/models/onnx"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import numpy as np

    from ingest.chunking import chunk_blocks
    from ingest.parsing import parse_file
    from rag.embedder import Embedder
    from rag.evaluation import contains_answer
    from rag.settings import BUNDLED_EMBEDDING_MODEL

    suffixes = {f".{f}" for f in args.formats.split(",")}
    files = sorted(p for p in (args.data / "documents").iterdir() if p.suffix in suffixes)
    qa = [json.loads(line) for line in (args.data / "qa.jsonl").read_text().splitlines() if line.strip()]
    names = {p.name for p in files}
    questions = [q for q in qa if q["answers"] and q["document"] in names]

    reference = Embedder(BUNDLED_EMBEDDING_MODEL, device="cpu", threads=args.threads)
    max_tokens = reference.chunk_token_limit
    chunks: list[tuple[str, str, str]] = []  # (document, stored text, embedded text)
    for path in files:
        for chunk in chunk_blocks(
            parse_file(path, path.name), count_tokens=reference.count_tokens, max_tokens=max_tokens, overlap_tokens=40
        ):
            embedded = chunk.text
            if chunk.section and not chunk.text.startswith(chunk.section):
                embedded = f"{chunk.section}\n{chunk.text}"
            chunks.append((path.name, chunk.text, embedded))
    log(f"{len(files)} documents, {len(chunks)} chunks, {len(questions)} questions")

    results: dict[str, Any] = {}
    vectors_by_backend: dict[str, Any] = {}
    for backend in args.backends.split(","):
        embedder = (
            reference
            if backend == "torch"
            else Embedder(BUNDLED_EMBEDDING_MODEL, backend=backend, onnx_cache=args.cache, threads=args.threads)  # type: ignore[arg-type]
        )
        embedder.embed(["warm up"] * 8)
        t0 = time.perf_counter()
        matrix = np.asarray(embedder.embed([c[2] for c in chunks]), dtype=np.float32)
        embed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        queries = np.asarray(embedder.embed([q["question"] for q in questions]), dtype=np.float32)
        query_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        single = [embedder.embed_query(q["question"]) for q in questions[:50]]
        single_ms = (time.perf_counter() - t0) / len(single) * 1000
        vectors_by_backend[backend] = matrix
        top = np.argsort(-(queries @ matrix.T), axis=1)[:, :5]
        found = 0
        for q, row in zip(questions, top, strict=True):
            if any(chunks[i][0] == q["document"] and contains_answer(chunks[i][1], q["answers"]) for i in row):
                found += 1
        results[backend] = {
            "chunks_per_s": round(len(chunks) / embed_s, 1),
            "embed_s": round(embed_s, 2),
            "questions_per_s": round(len(questions) / query_s, 1),
            "single_query_ms": round(single_ms, 2),
            "answer_recall_at_5_dense": round(found / len(questions), 4),
        }
        if backend != "torch" and "torch" in vectors_by_backend:
            cos = np.sum(matrix * vectors_by_backend["torch"], axis=1)
            results[backend]["min_cosine_vs_torch"] = round(float(cos.min()), 6)
            results[backend]["mean_cosine_vs_torch"] = round(float(cos.mean()), 6)
        log(f"{backend}: {results[backend]}")

    report = {
        "documents": [p.name for p in files],
        "chunks": len(chunks),
        "questions": len(questions),
        "threads": args.threads,
        "backends": results,
    }
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

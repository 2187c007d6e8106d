"""Retrieval benchmark on squad-dev: dense vs lexical vs hybrid, per chunk size,
plus what a /search costs against its own parts.

Ingests the documents with the service's own code path (``RagService`` upload,
then ``Indexer.index_document``: unstructured parsing, structure-aware
chunking, embedding, BM25 weights, Qdrant local store), then asks every QA
question in each mode and scores answer-recall@1/5/10 and MRR with the same
judge as ``rag eval`` (``rag.evaluation``).

Speed: for a sample of questions it times, in this process, the query
embedding and the Qdrant hybrid query on their own; then it closes the store,
starts ``rag serve`` (no model, no worker) on the same data directory and times
``POST /v1/collections/squad/search`` over HTTP for the same questions.

    python -m bench.retrieval --chunk-sizes 128,200,256 --json bench-out.json

The uploads also leave their (already done) indexing tasks in the data
directory's embedded queue: serve a bench data directory with
``RAG_EMBEDDED_WORKER=false``, or its worker re-indexes every document with
whatever chunk settings that server has.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.machine import machine

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "eval" / "squad-dev"
MODES = ("dense", "lexical", "hybrid")
KS = (1, 5, 10)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_items(path: Path) -> list[Any]:
    from rag.evaluation import QAItem

    items = []
    with path.open() as fh:
        for line in fh:
            row = json.loads(line)
            items.append(QAItem(question=row["question"], answers=list(row["answers"]), document=row["document"]))
    return items


def settings_for(data_dir: Path, size: int, args: argparse.Namespace) -> Any:
    from rag.settings import Settings

    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=data_dir,
        chunk_max_tokens=size,
        chunk_overlap_tokens=min(args.overlap, size // 4),
        embed_section_titles=not args.no_section_titles,
        lexical_k1=args.k1,
        lexical_b=args.b,
        hybrid_candidates=args.candidates,
        llm_load=False,
        embedded_worker=False,
    )


def ingest(runtime: Any, documents: Sequence[Path]) -> dict[str, Any]:
    from rag.intake import Upload

    service = runtime.service
    service.create_collection("squad")
    started = time.perf_counter()
    chunks = 0
    for path in documents:
        with path.open("rb") as fh:
            (result,) = service.add_documents("squad", [Upload(path.name, None, fh)])
        outcome = runtime.indexer.index_document(result.document.id)
        if outcome.status != "indexed":
            raise RuntimeError(f"{path.name}: {outcome.status} {outcome.error}")
        chunks += outcome.chunks
        log(f"  {path.name}: {outcome.chunks} chunks")
    return {"documents": len(documents), "chunks": chunks, "seconds": round(time.perf_counter() - started, 1)}


def score_modes(runtime: Any, items: Sequence[Any]) -> dict[str, dict[str, float]]:
    """Every answerable question in every mode, through the service's retriever
    (questions embedded in batches; hybrid candidates from --candidates)."""
    from rag.evaluation import first_correct_rank
    from rag.options import SearchOptions

    with runtime.registry.unit_of_work() as uow:
        collection = uow.collections.get("squad")
    answerable = [i for i in items if i.answerable]
    depth = max(KS)
    results: dict[str, dict[str, float]] = {}
    for mode in MODES:
        started = time.perf_counter()
        log(f"  {mode}: {len(answerable)} questions")
        all_hits = runtime.retriever.search_many(
            collection.id, [i.question for i in answerable], SearchOptions(top_k=depth, mode=mode, rerank=False)
        )
        ranks = [first_correct_rank(item, hits) for item, hits in zip(answerable, all_hits, strict=True)]
        n = len(ranks)
        row = {f"recall@{k}": sum(1 for r in ranks if r is not None and r <= k) / n for k in KS}
        row["mrr"] = sum(1 / r for r in ranks if r is not None) / n
        results[mode] = row
        log(f"  {mode}: {row} ({time.perf_counter() - started:.0f}s)")
    return results


def time_search(
    data_dir: Path, questions: Sequence[str], args: argparse.Namespace, size: int, threads: int | None = None
) -> dict[str, Any]:
    """``rag serve`` (no model, no worker) on the bench's data directory; per
    request, the client's round trip and the service's own timing of its parts
    (query embedding + BM25 query terms, and the Qdrant query), which it returns
    with every /search response."""
    from tests.support.service import ServiceProcess, free_port

    env = {
        "RAG_DATA_DIR": str(data_dir),
        "RAG_LLM_LOAD": "false",
        "RAG_EMBEDDED_WORKER": "false",
        "RAG_CHUNK_MAX_TOKENS": str(size),
        "RAG_CHUNK_OVERLAP_TOKENS": str(min(args.overlap, size // 4)),
        "RAG_LEXICAL_K1": str(args.k1),
        "RAG_LEXICAL_B": str(args.b),
        "RAG_HYBRID_CANDIDATES": str(args.candidates),
        "RAG_EMBED_SECTION_TITLES": str(not args.no_section_titles).lower(),
    }
    if threads:
        env["RAG_EMBEDDING_THREADS"] = str(threads)
    proc = ServiceProcess("serve", env, data_dir.parent / f"serve-{size}-{threads}.log", port=free_port())
    round_trip, parts, embed, store, inside = [], [], [], [], []
    try:
        proc.wait_ready()
        with proc.client(timeout=60) as client:
            for q in questions[:20]:  # warm-up
                client.post("/v1/collections/squad/search", json={"query": q, "top_k": 5}).raise_for_status()
            for q in questions:
                t0 = time.perf_counter()
                r = client.post("/v1/collections/squad/search", json={"query": q, "top_k": 5})
                round_trip.append(time.perf_counter() - t0)
                r.raise_for_status()
                t = r.json()["timings"]
                embed.append(t["embed_s"])
                store.append(t["store_s"])
                parts.append(t["embed_s"] + t["store_s"])
                inside.append(t["total_s"])
    finally:
        proc.stop()

    def p50(values: list[float]) -> float:
        return round(statistics.median(values) * 1000, 2)

    return {
        "requests": len(round_trip),
        "embed_p50_ms": p50(embed),
        "qdrant_p50_ms": p50(store),
        "parts_p50_ms": p50(parts),
        "service_total_p50_ms": p50(inside),
        "search_p50_ms": p50(round_trip),
        "search_p95_ms": round(sorted(round_trip)[int(len(round_trip) * 0.95)] * 1000, 2),
        "ratio": statistics.median(round_trip) / statistics.median(parts),
    }


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--chunk-sizes", default="128,200")
    parser.add_argument("--overlap", type=int, default=40)
    parser.add_argument("--k1", type=float, default=1.2)
    parser.add_argument("--b", type=float, default=0.75)
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--no-section-titles", action="store_true")
    parser.add_argument("--questions", type=int, default=0, help="first N questions only (0: all)")
    parser.add_argument("--timing-sample", type=int, default=300)
    parser.add_argument("--timing-sizes", default="200", help="chunk sizes whose /search is timed ('': none)")
    parser.add_argument(
        "--timing-only",
        action="store_true",
        help="reuse the collections already in --work-dir: time /search only",
    )
    parser.add_argument(
        "--embedding-threads",
        default="",
        help="comma-separated RAG_EMBEDDING_THREADS values to time /search with ('': torch's default only)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    from runtime import build_runtime

    items = load_items(args.data / "qa.jsonl")
    if args.questions:
        items = items[: args.questions]
    documents = sorted(p for p in (args.data / "documents").iterdir() if p.is_file())
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    timing_questions = [i.question for i in items][:: max(1, len(items) // args.timing_sample)][: args.timing_sample]
    report: dict[str, Any] = {
        "machine": machine(f"torch threads {_torch_threads()}", platform.system()),
        "command": " ".join(["python -m bench.retrieval", *(argv if argv is not None else sys.argv[1:])]),
        "questions": len(items),
        "answerable": sum(1 for i in items if i.answerable),
        "sizes": {},
    }
    for size in (int(s) for s in args.chunk_sizes.split(",")):
        log(f"chunk size {size}")
        data_dir = work / f"size-{size}" / "data"
        row: dict[str, Any] = {}
        if not args.timing_only:
            runtime = build_runtime(settings_for(data_dir, size, args), "api")
            try:
                row["ingest"] = ingest(runtime, documents)
                row["recall"] = score_modes(runtime, items)
            finally:
                runtime.close()
        if args.timing_only or str(size) in args.timing_sizes.split(","):
            # One server per thread setting, one after the other, on the same data.
            variants: list[int | None] = [None, *(int(t) for t in args.embedding_threads.split(",") if t)]
            for variant in variants:
                key = "timing" if variant is None else f"timing_threads_{variant}"
                row[key] = time_search(data_dir, timing_questions, args, size, variant)
                log(f"  {key}: {row[key]}")
        report["sizes"][str(size)] = row
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

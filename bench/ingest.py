"""Ingestion benchmark: end to end against the cost of each stage, at 1×, 2×, 4×
the corpus, beside LlamaIndex's IngestionPipeline on the same files and model.

One command (squad-dev by default: 18 files of 6 formats)::

    nice -n 10 python -m bench.ingest --json docs/results/ingest.json

What it runs, each part in a fresh child process so that memory and warm-up
are its own:

* **end to end** (``--child e2e``): the service's embedded mode as ``rag serve``
  runs it (``build_runtime(settings, "serve")`` + the embedded Celery worker
  with ``RAG_WORKER_CONCURRENCY`` threads, the parse sandbox, the shared
  embedding queue, Qdrant Edge), no model. Timed from the first upload
  (``RagService.add_documents``, what ``POST …/documents`` calls) until every
  document is 'indexed' (searchable). Scale N uploads the corpus into N
  collections (identical content is deduplicated within a collection). Reports
  chunks/s and the process's peak RSS (``ru_maxrss``: API + worker, as in
  ``rag serve``) and that of its largest parse child. With ``--score``, the
  1× collection is then scored on every squad-dev question (answer-recall@5,
  hybrid and dense, as ``bench/retrieval.py``).
* **stages alone** (``--child stages``): the same files, one stage at a time,
  in one thread: parse each file (``parse_file``, in this process), chunk,
  embed all chunks (the embedder's own batches), upsert the same points into a
  fresh store. The slowest stage bounds any pipeline; the report gives
  slowest-stage / end-to-end (1.0 = the pipeline costs no more than its slowest
  stage; goal ≥ 0.8).
* **LlamaIndex** (``--child llamaindex``, needs the ``bench`` extra):
  ``IngestionPipeline`` with ``UnstructuredReader`` (per file; for PDFs, which
  it can only read with ``unstructured[pdf]``'s torch layout models, LlamaIndex's
  own ``PDFReader``), a
  ``SentenceSplitter`` (256 tokens, 40 overlap: our chunk settings) and
  ``HuggingFaceEmbedding`` on the same local all-MiniLM-L6-v2, into a local
  Qdrant (``qdrant_client`` path mode). Timed from reading the first file
  until the last point is written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.machine import machine

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("/work/shared/eval/squad-dev")
if not DEFAULT_DATA.is_dir():
    DEFAULT_DATA = ROOT.parent / "shared" / "eval" / "squad-dev"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _files(data: Path) -> list[Path]:
    return sorted(p for p in (data / "documents").iterdir() if p.is_file())


def _settings(data_dir: Path, args: argparse.Namespace) -> Any:
    from rag.settings import Settings

    options: dict[str, Any] = {"worker_concurrency": args.concurrency}
    if args.backend:  # else the service's default
        options["embedding_backend"] = args.backend
    settings = Settings(_env_file=None, data_dir=data_dir, llm_load=False, **options)  # type: ignore[call-arg]
    # The ONNX export is made once per data directory, at the service's first
    # start: made by the first child, copied into the others' before they start.
    if args.onnx_cache and args.onnx_cache.is_dir():
        shutil.copytree(args.onnx_cache, settings.model_dir / "onnx", dirs_exist_ok=True)
    return settings


def _keep_onnx_export(settings: Any, args: argparse.Namespace) -> None:
    exported = settings.model_dir / "onnx"
    if args.onnx_cache and exported.is_dir() and not args.onnx_cache.is_dir():
        shutil.copytree(exported, args.onnx_cache)


def _wait_indexed(runtime: Any, ids: list[str], timeout: float, poll_s: float = 0.1) -> list[Any]:
    """The documents once none is queued or processing: one registry query per
    collection every ``poll_s`` (a client polling the API would do the same).
    The earlier 18 lookups every 50 ms cost the measured process 0.13 CPU s per
    second of the run (about 11 CPU s of session 5's 87 s run D); this, 0.015."""
    from rag.registry import DocumentStatus

    wanted = set(ids)
    with runtime.registry.unit_of_work() as uow:
        collections = {d.collection_id for i in ids if (d := uow.documents.get_by_id(i))}
    deadline = time.monotonic() + timeout
    while True:
        with runtime.registry.unit_of_work() as uow:
            found = {d.id: d for c in collections for d in uow.documents.list_for(c) if d.id in wanted}
        documents = [found.get(i) for i in ids]
        pending = [d for d in documents if d and d.status in (DocumentStatus.QUEUED, DocumentStatus.PROCESSING)]
        if not pending:
            return documents
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} documents still pending after {timeout}s")
        time.sleep(poll_s)


def _warm_up(runtime: Any, tmp: Path, timeout: float) -> float:
    """One upload of a one-line file, indexed before the clock starts: the
    parse server (started with the service, importing the readers in the
    background), the worker's threads and the store are then as warm as in a
    service that has been up for a while."""
    from rag.intake import Upload

    sample = tmp / "warm-up.txt"
    sample.write_text("The service is warm.\n")
    runtime.service.create_collection("warm-up")
    started = time.perf_counter()
    with sample.open("rb") as fh:
        (result,) = runtime.service.add_documents("warm-up", [Upload(sample.name, None, fh)])
    _wait_indexed(runtime, [result.document.id], timeout)
    return time.perf_counter() - started


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and of the children it reaped,
    plus those its live child processes reaped: the parse server's reaped parses."""
    own = os.times()
    return own.user + own.system + own.children_user + own.children_system + _children_cpu_s()


def _children_cpu_s() -> float:
    """CPU seconds of this process's live child processes and of what they
    reaped (the parse server and its parses)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # ppid; then utime stime cutime cstime
            total += sum(int(f) for f in fields[11:15]) / tick
    return total


def _peak_rss_mb() -> dict[str, float]:
    return {
        "self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "largest_child": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def _thread_cpu_s() -> dict[str, float]:
    """CPU seconds of this process's live Python threads, by name with the
    numbering taken off ("rag-onnx_0" and "rag-onnx_1" are "rag-onnx"): where
    the process's own CPU time went (threads that ended are not counted)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = re.sub(r"[-_ ]?\d+$", "", re.sub(r" \(.*\)$", "", thread.name)) or "thread"
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _cpu_breakdown(before: dict[str, float], after: dict[str, float], total: float) -> dict[str, float]:
    """Per-thread-name CPU seconds between two ``_thread_cpu_s`` readings, and
    the rest of ``total`` (native threads, threads that ended, child processes)."""
    spent = {name: round(after[name] - before.get(name, 0.0), 1) for name in after}
    spent = {name: cpu for name, cpu in sorted(spent.items(), key=lambda kv: -kv[1]) if cpu >= 0.1}
    spent["other (native threads, ended threads, child processes)"] = round(total - sum(spent.values()), 1)
    return spent


# --- children ------------------------------------------------------------------


def child_e2e(args: argparse.Namespace) -> dict[str, Any]:
    from rag.intake import Upload
    from rag.registry import DocumentStatus
    from runtime import build_runtime

    files = _files(args.data)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        settings = _settings(Path(tmp) / "data", args)
        runtime = build_runtime(settings, "serve")
        try:
            runtime.start_worker()
            names = ["squad"] + [f"squad-{n}" for n in range(2, args.scale + 1)]
            for name in names:
                runtime.service.create_collection(name)
            runtime.embedder.embed(["warm up"])  # loaded at start-up in the service too
            warm_up_s = _warm_up(runtime, Path(tmp), args.timeout)
            _keep_onnx_export(settings, args)
            backend = runtime.embedder.backend
            log(f"e2e x{args.scale}: uploading {len(files) * len(names)} files ({backend}, warm-up {warm_up_s:.1f} s)")
            load_before = os.getloadavg()
            cpu_before = _cpu_s()
            threads_before = _thread_cpu_s()
            children_before = _children_cpu_s()
            started = time.perf_counter()
            ids: list[str] = []
            for name in names:
                for path in files:
                    with path.open("rb") as fh:
                        (result,) = runtime.service.add_documents(name, [Upload(path.name, None, fh)])
                    ids.append(result.document.id)
            uploaded = time.perf_counter() - started
            documents = _wait_indexed(runtime, ids, args.timeout)
            seconds = time.perf_counter() - started
            cpu = _cpu_s() - cpu_before
            parses = _children_cpu_s() - children_before
            breakdown = _cpu_breakdown(threads_before, _thread_cpu_s(), cpu - parses)
            failed = [f"{d.filename}: {d.error}" for d in documents if d and d.status is not DocumentStatus.INDEXED]
            chunks = sum(d.chunk_count or 0 for d in documents if d)
            batcher = runtime.indexer.batcher(runtime.embedder)
            report: dict[str, Any] = {
                "scale": args.scale,
                "backend": backend,
                "concurrency": args.concurrency,
                "documents": len(ids),
                "failed": failed,
                "chunks": chunks,
                "upload_s": round(uploaded, 2),
                "seconds": round(seconds, 2),
                "cpu_s": round(cpu, 1),
                "cpu_s_child_processes": round(parses, 1),
                "cpu_s_by_thread": breakdown,
                "chunks_per_s": round(chunks / seconds, 1),
                "embed_batches": batcher.batches,
                "mean_batch": round(batcher.texts / max(batcher.batches, 1), 1),
                "peak_rss_mb": _peak_rss_mb(),
                "warm_up_s": round(warm_up_s, 2),
                "load_average": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            }
            log(f"e2e x{args.scale}: {chunks} chunks in {seconds:.1f} s ({report['chunks_per_s']}/s)")
            if args.score:
                from bench.retrieval import load_items, score_modes

                items = load_items(args.data / "qa.jsonl")
                started = time.perf_counter()
                scores = score_modes(runtime, items)
                report["recall"] = {m: {k: round(v, 4) for k, v in row.items()} for m, row in scores.items()}
                report["questions"] = sum(1 for i in items if i.answerable)
                report["score_s"] = round(time.perf_counter() - started, 1)
        finally:
            runtime.close()
    return report


def child_stages(args: argparse.Namespace) -> dict[str, Any]:
    from ingest.chunking import chunk_blocks
    from ingest.parsing import parse_file
    from ingest.warm_up import preload
    from rag.lexical import LexicalEncoder
    from rag.store import ChunkPoint
    from runtime import build_runtime

    files = _files(args.data)
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        # Parsed here, in this process: no parse server importing in the background.
        settings = _settings(Path(tmp) / "data", args).model_copy(update={"parse_isolation": "inline"})
        runtime = build_runtime(settings, "worker")
        try:
            embedder = runtime.embedder
            embedder.embed(["warm up"])
            _keep_onnx_export(settings, args)
            load_before = os.getloadavg()
            preload()  # the service's parse server has these loaded before the first upload
            parse_s: dict[str, float] = {}
            parsed = {}
            cpu: dict[str, float] = {}
            c0 = _cpu_s()
            for path in files:
                t0 = time.perf_counter()
                parsed[path.name] = parse_file(path, path.name)
                parse_s[path.name] = round(time.perf_counter() - t0, 2)
            cpu["parse"] = _cpu_s() - c0
            log(f"stages: parse {sum(parse_s.values()):.1f} s")
            max_tokens = min(settings.chunk_max_tokens, embedder.chunk_token_limit)
            t0 = time.perf_counter()
            chunks = {
                name: chunk_blocks(
                    blocks,
                    count_tokens=embedder.count_tokens,
                    max_tokens=max_tokens,
                    overlap_tokens=min(settings.chunk_overlap_tokens, max_tokens // 2),
                )
                for name, blocks in parsed.items()
            }
            chunk_s = time.perf_counter() - t0
            texts = {name: [runtime.indexer.indexed_text(c) for c in cs] for name, cs in chunks.items()}
            everything = [t for ts in texts.values() for t in ts]
            c0, t0 = _cpu_s(), time.perf_counter()
            vectors = embedder.embed(everything)
            embed_s = time.perf_counter() - t0
            cpu["embed"] = _cpu_s() - c0
            log(f"stages: chunk {chunk_s:.1f} s, embed {len(everything)} chunks {embed_s:.1f} s")
            lexical = LexicalEncoder(
                k1=settings.lexical_k1, b=settings.lexical_b, avg_len=settings.resolved_lexical_avg_length
            )
            store = runtime.store
            store.ensure_collection("bench", embedder.dimension)
            t0 = time.perf_counter()
            at = 0
            for name, cs in chunks.items():
                points = [
                    ChunkPoint(
                        document_id=f"doc-{name}",
                        chunk_index=c.index,
                        text=c.text,
                        vector=vectors[at + i],
                        filename=name,
                        page=c.page,
                        section=c.section,
                        lexical=lexical.encode_document(t),
                    )
                    for i, (c, t) in enumerate(zip(cs, texts[name], strict=True))
                ]
                at += len(cs)
                for start in range(0, len(points), 64):
                    store.upsert("bench", points[start : start + 64])
            upsert_s = time.perf_counter() - t0
            log(f"stages: upsert {upsert_s:.1f} s")
        finally:
            runtime.close()
    return {
        "files": len(files),
        "backend": embedder.backend,
        "load_average": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "chunks": len(everything),
        "parse_s": round(sum(parse_s.values()), 2),
        "parse_s_per_file": parse_s,
        "chunk_s": round(chunk_s, 2),
        "embed_s": round(embed_s, 2),
        "upsert_s": round(upsert_s, 2),
        "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "embed_chunks_per_s": round(len(everything) / embed_s, 1),
    }


def child_llamaindex(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from ingest.parsing import configure_unstructured

    configure_unstructured()  # the same offline set-up: no spaCy download attempt
    try:
        from llama_index.core.ingestion import IngestionPipeline
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
        from llama_index.readers.file import PDFReader, UnstructuredReader
        from llama_index.vector_stores.qdrant import QdrantVectorStore
        from qdrant_client import QdrantClient
    except ImportError as exc:
        sys.exit(f"LlamaIndex is not installed: pip install -e '.[bench]' ({exc})")
    from rag.embedder import resolve_embedding_model
    from rag.settings import BUNDLED_EMBEDDING_MODEL

    files = _files(args.data)
    model = str(resolve_embedding_model(BUNDLED_EMBEDDING_MODEL))
    with tempfile.TemporaryDirectory(prefix="bench-llamaindex-") as tmp:
        embed = HuggingFaceEmbedding(model_name=model, device="cpu")
        embed.get_text_embedding("warm up")
        client = QdrantClient(path=str(Path(tmp) / "qdrant"))
        store = QdrantVectorStore(client=client, collection_name="squad")
        pipeline = IngestionPipeline(
            transformations=[SentenceSplitter(chunk_size=256, chunk_overlap=40), embed], vector_store=store
        )
        reader = UnstructuredReader()
        pdf_reader = PDFReader()  # UnstructuredReader's PDFs need unstructured[pdf] (torch layout models)
        failed = []
        load_before = os.getloadavg()
        cpu_before = _cpu_s()
        started = time.perf_counter()
        documents = []
        for path in files:
            try:
                if path.suffix.lower() == ".pdf":
                    documents.extend(pdf_reader.load_data(file=path))
                else:
                    documents.extend(reader.load_data(file=path, split_documents=False))
            except Exception as exc:  # a reader that cannot read a format: counted, as ours would be
                failed.append(f"{path.name}: {type(exc).__name__}: {str(exc)[:200]}")
        read_s = time.perf_counter() - started
        nodes = pipeline.run(documents=documents)
        seconds = time.perf_counter() - started
        cpu = _cpu_s() - cpu_before
        client.close()
    return {
        "files": len(files),
        "failed": failed,
        "chunks": len(nodes),
        "read_s": round(read_s, 2),
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu, 1),
        "chunks_per_s": round(len(nodes) / seconds, 1),
        "peak_rss_mb": _peak_rss_mb(),
        "load_average": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }


CHILDREN = {"e2e": child_e2e, "stages": child_stages, "llamaindex": child_llamaindex}


# --- the parent: runs the children one after another ----------------------------


def _run_child(kind: str, args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.ingest",
        "--child",
        kind,
        "--data",
        str(args.data),
        "--concurrency",
        str(args.concurrency),
        "--timeout",
        str(args.timeout),
        *(["--backend", args.backend] if args.backend else []),
        *(["--onnx-cache", str(args.onnx_cache)] if args.onnx_cache else []),
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    t0 = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"bench child {kind} {extra} exited with {result.returncode}")
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    report["child_wall_s"] = round(time.perf_counter() - t0, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx", "onnx-int8"],
        help="our embedding backend (default: the service's, RAG_EMBEDDING_BACKEND's default)",
    )
    parser.add_argument("--onnx-cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--scales", default="1,2,4", help="corpus multiples for the end-to-end runs")
    parser.add_argument("--score", action="store_true", help="also score the 1x collection on every question")
    parser.add_argument("--no-llamaindex", action="store_true")
    parser.add_argument("--no-stages", action="store_true")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(CHILDREN[args.child](args)), flush=True)
        return 0

    report: dict[str, Any] = {
        "command": "python -m bench.ingest " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "data": str(args.data),
        "files": len(_files(args.data)),
    }
    scales = [int(s) for s in args.scales.split(",")]
    steps: list[tuple[str, list[str]]] = [] if args.no_stages else [("stages", [])]
    steps.append(("e2e", ["--scale", str(scales[0])] + (["--score"] if args.score else [])))
    if not args.no_llamaindex:  # before the larger scales: the comparison matters most
        steps.append(("llamaindex", []))
    steps += [("e2e", ["--scale", str(scale)]) for scale in scales[1:]]
    report["e2e"] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-onnx-") as cache:
        args.onnx_cache = Path(cache) / "onnx"  # filled by the first child that exports
        for kind, extra in steps:
            log(f"{kind} {' '.join(extra)}")
            result = _run_child(kind, args, *extra)
            if kind == "e2e":
                report["e2e"].append(result)
            else:
                report[kind] = result
            if args.json:  # what has finished so far, in case a later step is cut off
                args.json.write_text(json.dumps(report, indent=2) + "\n")
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    one = report["e2e"][0]
    summary: dict[str, Any] = {"e2e_1x_s": one["seconds"], "chunks_per_s": one["chunks_per_s"]}
    if "stages" in report:
        stages = report["stages"]
        slowest = max(
            ("parse", stages["parse_s"]),
            ("embed", stages["embed_s"]),
            ("upsert", stages["upsert_s"]),
            key=lambda kv: kv[1],
        )
        summary["slowest_stage"] = slowest[0]
        summary["slowest_stage_s"] = slowest[1]
        summary["sum_of_stages_s"] = round(
            stages["parse_s"] + stages["chunk_s"] + stages["embed_s"] + stages["upsert_s"], 2
        )
        summary["slowest_over_e2e"] = round(slowest[1] / one["seconds"], 3)
        summary["e2e_over_slowest"] = round(one["seconds"] / slowest[1], 3)
    summary["scaling"] = {
        f"x{r['scale']}": {"s": r["seconds"], "per_1x": round(r["seconds"] / r["scale"], 2)} for r in report["e2e"]
    }
    if "llamaindex" in report:
        summary["llamaindex_s"] = report["llamaindex"]["seconds"]
        summary["speedup_vs_llamaindex"] = round(report["llamaindex"]["seconds"] / one["seconds"], 2)
        # Work done, whatever else ran on the machine: CPU seconds of each side's processes.
        summary["cpu_s"] = {"ours_1x": one.get("cpu_s"), "llamaindex": report["llamaindex"].get("cpu_s")}
    report["summary"] = summary
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

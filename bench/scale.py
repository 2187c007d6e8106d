"""How the vector store scales: Qdrant Edge (the embedded store) at 10k, 100k (and,
with --million, 1M) chunks, beside qdrant-client's local mode (the embedded store
of earlier releases) at 10k and 20k.

Data (synthetic, said so in docs/benchmarks.md): 150-word chunks drawn from a
30,000-word vocabulary with a Zipf distribution, 40% of the words English stop
words; lexical vectors from ``rag.lexical`` (the service's own BM25 encoder);
dense vectors 384-d (MiniLM's size), normalised, drawn around topics: each
document (50 chunks) has one of 2,000 topic centres and its chunks lie around it
(cosine about 0.6 to the centre), and each query lies around a topic centre too.
Real sentence embeddings are clustered like that; uniformly random vectors
(``--dense uniform``) have no structure at all, which is HNSW's worst case for
build time and recall (top-10 recall about 0.5 at ef 128, against 0.99 for
clustered vectors, measured at 20,000). With more chunks than
``--distinct-texts``, texts (and their lexical vectors) repeat cyclically; dense
vectors never do.

Each (engine, size) runs in a fresh child process, so RSS is its own:

* upsert: batches of 256 through ``VectorStore.upsert`` (payload, ids and all),
  only the upsert calls timed; points/s over the whole load;
* index build (Edge): the HNSW build in its child process, timed (the store
  starts it by itself in the background after ``RAG_STORE_INDEX_AFTER`` points),
  then the top-10 recall of HNSW search against exact search (50 queries);
* search: p50/p95 of ``VectorStore.search`` per mode, top 10, hybrid with 40
  candidates per side (the service's default); Edge also before the index build,
  and dense and hybrid with a filter that a third of the chunks match (and the
  HNSW recall under that filter);
* RSS: the process's resident memory after the queries, and its growth since the
  empty store was opened; disk: the store's folder.

With ``--service-at N``, the Edge run at N chunks holds the real service
(``build_runtime``, real embedder, no model) and also times the service's search
path in-process (``RagService.search``, hybrid, top 5), and, for the same
queries in the same run, the query embedding + lexical encoding + store query on
their own; the ratio of the p50s is the service's overhead.

    python -m bench.scale --json docs/results/scale.json --markdown docs/results/scale.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DIM = 384
BATCH = 256
WORDS_PER_CHUNK = 150
VOCAB_SIZE = 30_000
STOP_SHARE = 0.4
TOPICS = 2_000
TOPIC_NOISE = 0.8  # per-dimension spread around a unit-variance centre: cosine to it ~1/(1+0.8**2)
MODES = ("dense", "lexical", "hybrid")
CID = "5ca1e000-0000-4000-8000-000000000001"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def disk_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed meanwhile
                total += os.path.getsize(os.path.join(root, name))
    return total / 2**20


class Corpus:
    """Deterministic synthetic chunks and queries."""

    def __init__(self, seed: int, distinct: int, avg_len: float, dense: str = "topics") -> None:
        import numpy as np

        from rag.lexical import _STOPWORDS, LexicalEncoder

        self.np = np
        self.rng = np.random.default_rng(seed)
        self.uniform = dense == "uniform"
        self.centres = np.random.default_rng(seed + 1).standard_normal((TOPICS, DIM)).astype("float32")
        syllables = [c + v for c in "bcdfghklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
        words: set[str] = set()
        pyrng = random.Random(seed)
        while len(words) < VOCAB_SIZE:
            words.add("".join(pyrng.choices(syllables, k=pyrng.randint(2, 4))))
        self.vocab = sorted(words)
        pyrng.shuffle(self.vocab)
        self.stop = sorted(_STOPWORDS)
        self.encoder = LexicalEncoder(avg_len=avg_len)
        self.distinct = distinct
        self._texts: dict[int, tuple[str, Any]] = {}

    def _word_ids(self, n: int) -> Any:
        return (self.rng.zipf(1.15, n) - 1) % VOCAB_SIZE

    def text(self, i: int) -> tuple[str, Any]:
        key = i % self.distinct
        cached = self._texts.get(key)
        if cached is not None:
            return cached
        ids = self._word_ids(WORDS_PER_CHUNK)
        stops = self.rng.random(WORDS_PER_CHUNK) < STOP_SHARE
        picks = self.rng.integers(0, len(self.stop), WORDS_PER_CHUNK)
        text = " ".join(self.stop[p] if s else self.vocab[w] for w, s, p in zip(ids, stops, picks, strict=True))
        value = (text, self.encoder.encode_document(text))
        if len(self._texts) < self.distinct:
            self._texts[key] = value
        return value

    def dense(self, n: int, first: int | None = None, chunks: int = 0) -> Any:
        """Vectors of chunks ``first`` .. ``first + n - 1`` (around their document's
        topic), or of ``n`` queries (around the topic of a random one of the
        ``chunks``' documents) when ``first`` is None."""
        v = self.rng.standard_normal((n, DIM)).astype("float32")
        if not self.uniform:
            if first is None:
                topics = self.rng.integers(0, max(1, chunks // 50), n) % TOPICS
            else:
                topics = (self.np.arange(first, first + n) // 50) % TOPICS
            v = self.centres[topics] + TOPIC_NOISE * v
        return v / self.np.linalg.norm(v, axis=1, keepdims=True)

    def queries(self, n: int, chunks: int) -> list[tuple[str, list[float], Any]]:
        out = []
        for _ in range(n):
            # Content words: skip the 50 most frequent terms, as real queries do.
            ids = [50 + int(x) % (VOCAB_SIZE - 50) for x in self._word_ids(3)]
            text = " ".join(self.vocab[i] for i in ids)
            out.append((text, self.dense(1, chunks=chunks)[0].tolist(), self.encoder.encode_query(text)))
        return out


def fill(store: Any, cid: str, corpus: Corpus, n: int) -> float:
    """Upserts ``n`` chunks; returns the seconds spent in upsert calls."""
    from datetime import UTC, datetime

    from rag.store import ChunkPoint

    spent = 0.0
    uploaded = datetime(2026, 1, 1, tzinfo=UTC)
    last_log = time.monotonic()
    for start in range(0, n, BATCH):
        count = min(BATCH, n - start)
        vectors = corpus.dense(count, start)
        points = []
        for j in range(count):
            i = start + j
            text, lexical = corpus.text(i)
            points.append(
                ChunkPoint(
                    document_id=f"doc-{i // 50}",
                    chunk_index=i % 50,
                    text=text,
                    vector=vectors[j].tolist(),
                    filename=f"doc-{i // 50}.pdf",
                    page=i % 50 // 3 + 1,
                    lexical=lexical,
                    uploaded_at=uploaded,
                    metadata={"team": ("red", "blue", "green")[i // 50 % 3]},
                )
            )
        t = time.perf_counter()
        store.upsert(cid, points)
        spent += time.perf_counter() - t
        if time.monotonic() - last_log > 30:
            last_log = time.monotonic()
            log(f"  {start + count:,} / {n:,} upserted ({(start + count) / spent:,.0f} points/s in upsert)")
    return spent


def team_filter() -> Any:
    """Chunks of one team: a third of them (documents cycle red, blue, green)."""
    from rag.store import SearchFilter

    return SearchFilter(metadata={"team": "red"})


def time_queries(
    store: Any, cid: str, queries: list[tuple[str, list[float], Any]], mode: str, where: Any = None
) -> dict[str, float]:
    times = []
    warm = 5 if len(queries) >= 50 else 1
    for i, (_, dense, lexical) in enumerate(queries):
        kwargs: dict[str, Any] = {}
        if mode in ("dense", "hybrid"):
            kwargs["dense"] = dense
        if mode in ("lexical", "hybrid"):
            kwargs["lexical"] = lexical
        t = time.perf_counter()
        hits = store.search(cid, 10, candidates=40, where=where, **kwargs)
        elapsed = time.perf_counter() - t
        if i >= warm:  # warm-up
            times.append(elapsed)
        assert hits or mode == "lexical"
    return percentiles(times)


def hnsw_recall(store: Any, cid: str, queries: list[tuple[str, list[float], Any]], where: Any = None) -> float:
    """Top-10 dense recall of the HNSW search against exact search."""
    found = total = 0
    for _, dense, _ in queries:
        exact = {(h.document_id, h.chunk_index) for h in store.search(cid, 10, dense=dense, where=where, exact=True)}
        approx = {(h.document_id, h.chunk_index) for h in store.search(cid, 10, dense=dense, where=where)}
        found += len(exact & approx)
        total += len(exact)
    return found / total


def percentiles(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "p50_ms": statistics.median(times) * 1e3,
        "p95_ms": times[min(len(times) - 1, int(len(times) * 0.95))] * 1e3,
        "n": len(times),
    }


def run_one(engine: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """One (engine, size) in this process."""
    work = Path(tempfile.mkdtemp(prefix=f"scale-{engine}-{n}-", dir=args.work_dir))
    result: dict[str, Any] = {"engine": engine, "chunks": n}
    corpus = Corpus(seed=n, distinct=min(n, args.distinct_texts), avg_len=args.avg_len, dense=args.dense)
    runtime = None
    try:
        service_run = engine == "edge" and n == args.service_at
        if service_run:
            from rag.settings import Settings
            from runtime import build_runtime

            settings = Settings(  # type: ignore[call-arg]
                _env_file=None, data_dir=work, llm_load=False, embedded_worker=False, store_index_after=10**12
            )
            runtime = build_runtime(settings, "api")
            store = runtime.store
            base_rss = rss_mb()
            cid = runtime.service.create_collection("scale").id
            store_dir = settings.store_path
        elif engine == "edge":
            from rag.store import VectorStore

            store_dir = work / "store"
            store = VectorStore(path=store_dir, index_after=10**12)
            base_rss = rss_mb()
            cid = CID
            store.ensure_collection(cid, DIM)
        else:
            from rag.store import VectorStore
            from rag.store.server import ServerBackend

            store_dir = work / "qdrant"
            store = VectorStore(backend=ServerBackend.local(str(store_dir)))
            base_rss = rss_mb()
            cid = CID
            store.ensure_collection(cid, DIM)

        log(f"{engine} {n:,}: upserting")
        wall = time.perf_counter()
        spent = fill(store, cid, corpus, n)
        result["upsert_points_per_s"] = n / spent
        result["load_wall_s"] = time.perf_counter() - wall
        queries = corpus.queries(args.queries if engine == "edge" else args.local_queries, n)
        if engine == "edge":
            result["before_index"] = {m: time_queries(store, cid, queries[: args.queries // 4], m) for m in MODES}
            log(f"{engine} {n:,}: building the HNSW index (child process)")
            t = time.perf_counter()
            assert store.optimize(cid)
            result["index_build_s"] = time.perf_counter() - t
            result["index"] = store.backend.stats(store._physical(store._name(cid)))
            result["hnsw_recall_at_10"] = hnsw_recall(store, cid, queries[:50])
        log(f"{engine} {n:,}: searching")
        result["search"] = {m: time_queries(store, cid, queries, m) for m in MODES}
        if engine == "edge":  # with a filter that a third of the chunks match
            result["filtered"] = {m: time_queries(store, cid, queries, m, team_filter()) for m in ("dense", "hybrid")}
            result["filtered"]["hnsw_recall_at_10"] = hnsw_recall(store, cid, queries[:50], team_filter())
        result["rss_mb"] = rss_mb()
        result["rss_growth_mb"] = result["rss_mb"] - base_rss
        result["disk_mb"] = disk_mb(store_dir)
        if service_run:
            assert runtime is not None
            result["service"] = service_search(runtime, cid, queries)
        log(f"{engine} {n:,}: {json.dumps(result)}")
        return result
    finally:
        if runtime is not None:
            runtime.close()
        else:
            store.close()
        shutil.rmtree(work, ignore_errors=True)


def service_search(runtime: Any, cid: str, queries: list[tuple[str, list[float], Any]]) -> dict[str, Any]:
    """The service's search path in-process vs its parts, same queries, same run."""
    service = runtime.service
    settings = runtime.settings
    texts = [q[0] for q in queries]
    for text in texts[:5]:  # warm-up (first calls allocate)
        service.search("scale", text)
    whole, parts, embed, store_only = [], [], [], []
    def whole_search(text: str) -> None:
        t = time.perf_counter()
        service.search("scale", text)
        whole.append(time.perf_counter() - t)

    def parts_alone(text: str) -> None:
        t = time.perf_counter()
        dense = runtime.embedder.embed([text])[0]
        lexical = service.retriever.lexical.encode_query(text)
        t_embed = time.perf_counter() - t
        t = time.perf_counter()
        runtime.store.search(cid, settings.top_k, dense=dense, lexical=lexical, candidates=settings.hybrid_candidates)
        t_store = time.perf_counter() - t
        embed.append(t_embed)
        store_only.append(t_store)
        parts.append(t_embed + t_store)

    # The same query twice in a row finds the second time's store pages and
    # CPU caches warm: alternate which side goes first so neither gets that.
    for i, text in enumerate(texts):
        if i % 2:
            whole_search(text)
            parts_alone(text)
        else:
            parts_alone(text)
            whole_search(text)
    out = {
        "search": percentiles(whole),
        "embedding_plus_store": percentiles(parts),
        "embedding": percentiles(embed),
        "store": percentiles(store_only),
    }
    out["ratio_p50"] = out["search"]["p50_ms"] / out["embedding_plus_store"]["p50_ms"]
    return out


def markdown(results: list[dict[str, Any]], command: str) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        "| engine | chunks | upsert points/s | index build | HNSW recall@10 | dense p50 / p95 | lexical p50 / p95 "
        "| hybrid p50 / p95 | hybrid p50 before index | RSS (growth) | disk |",
        "|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|",
    ]
    for r in results:
        s = r["search"]
        name = "Qdrant Edge" if r["engine"] == "edge" else "qdrant-client local mode"
        build = f"{r['index_build_s']:.0f} s" if "index_build_s" in r else "—"
        before = r.get("before_index", {}).get("hybrid")
        cells = [
            name,
            f"{r['chunks']:,}",
            f"{r['upsert_points_per_s']:,.0f}",
            build,
            f"{r['hnsw_recall_at_10']:.3f}" if "hnsw_recall_at_10" in r else "—",
            *(f"{s[m]['p50_ms']:.2f} / {s[m]['p95_ms']:.2f} ms" for m in MODES),
            f"{before['p50_ms']:.2f} ms" if before else "—",
            f"{r['rss_mb']:,.0f} MB ({r['rss_growth_mb']:+,.0f})",
            f"{r['disk_mb']:,.0f} MB",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for r in results:
        if "filtered" in r:
            f = r["filtered"]
            lines += [
                "",
                f"Filtered (metadata team = red, a third of the chunks) at {r['chunks']:,} chunks: dense p50 "
                f"{f['dense']['p50_ms']:.2f} / p95 {f['dense']['p95_ms']:.2f} ms, hybrid p50 "
                f"{f['hybrid']['p50_ms']:.2f} / p95 {f['hybrid']['p95_ms']:.2f} ms, "
                f"HNSW recall@10 {f['hnsw_recall_at_10']:.3f}.",
            ]
    for r in results:
        if "service" in r:
            sv = r["service"]
            lines += [
                "",
                f"Service search path at {r['chunks']:,} chunks (in-process `RagService.search`, hybrid, top 5, "
                f"{sv['search']['n']} queries): p50 {sv['search']['p50_ms']:.1f} ms, "
                f"p95 {sv['search']['p95_ms']:.1f} ms; "
                f"query embedding + store query alone: p50 {sv['embedding_plus_store']['p50_ms']:.1f} ms "
                f"(embedding {sv['embedding']['p50_ms']:.1f}, store {sv['store']['p50_ms']:.2f}); "
                f"ratio {sv['ratio_p50']:.2f}.",
            ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="Qdrant Edge sizes")
    parser.add_argument("--million", action="store_true", help="also Qdrant Edge at 1,000,000 chunks")
    parser.add_argument("--local-sizes", default="10000,20000", help="qdrant-client local-mode sizes ('' for none)")
    parser.add_argument("--service-at", type=int, default=100_000, help="Edge size that also times the service")
    parser.add_argument("--queries", type=int, default=300, help="queries per mode (Edge)")
    parser.add_argument("--local-queries", type=int, default=25, help="queries per mode (local mode)")
    parser.add_argument("--distinct-texts", type=int, default=100_000)
    parser.add_argument("--avg-len", type=float, default=128.0, help="BM25 average length (the service's default)")
    parser.add_argument(
        "--dense", choices=("topics", "uniform"), default="topics", help="dense vectors around topics, or uniform"
    )
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # engine:size, in a child
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        engine, size = args.one.split(":")
        result = run_one(engine, int(size), args)
        assert args.out is not None
        args.out.write_text(json.dumps(result))
        return

    runs = [("edge", int(s)) for s in args.sizes.split(",") if s]
    if args.million:
        runs.append(("edge", 1_000_000))
    runs += [("local", int(s)) for s in args.local_sizes.split(",") if s]
    results = []
    command = "python -m bench.scale " + " ".join(argv if argv is not None else sys.argv[1:])
    for engine, size in runs:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            child = [sys.executable, "-m", "bench.scale", "--one", f"{engine}:{size}", "--out", out.name]
            child += [
                f"--{k.replace('_', '-')}={v}"
                for k, v in vars(args).items()
                if k in ("service_at", "queries", "local_queries", "distinct_texts", "avg_len", "dense")
            ]
            if args.work_dir:
                child.append(f"--work-dir={args.work_dir}")
            subprocess.run(child, check=True, cwd=ROOT)
            results.append(json.loads(Path(out.name).read_text()))
    report = {
        "command": command,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "results": results,
    }
    text = markdown(results, command)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()

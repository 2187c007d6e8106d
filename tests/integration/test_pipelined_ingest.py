"""Several documents indexed at once by one process, as the worker's task
threads do: their chunks go through the shared embedding queue, every document ends indexed
with all its points, and a failing document fails alone."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

from rag.intake import Upload
from rag.options import SearchOptions
from rag.settings import Settings
from runtime import build_runtime
from tests.docmaker import make_all


def test_documents_indexed_together_share_batches(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path / "data", llm_load=False, embedded_worker=False, worker_concurrency=3
    )
    runtime = build_runtime(settings, "worker")
    try:
        docs = make_all(tmp_path / "docs")
        bad = tmp_path / "docs" / "broken.pdf"
        bad.write_bytes(b"%PDF-1.4 not really")
        runtime.service.create_collection("c")
        ids = []
        for path in [*(p for p, _, _ in docs.values()), bad]:
            with path.open("rb") as fh:
                (result,) = runtime.service.add_documents("c", [Upload(path.name, None, fh)])
            ids.append(result.document.id)
        with concurrent.futures.ThreadPoolExecutor(settings.worker_concurrency) as pool:
            outcomes = list(pool.map(runtime.indexer.index_document, ids))
        statuses = {o.document_id: o.status for o in outcomes}
        assert statuses.pop(ids[-1]) == "failed"
        assert set(statuses.values()) == {"indexed"}
        chunks = sum(o.chunks for o in outcomes)
        batcher = runtime.indexer.batcher(runtime.embedder)
        assert batcher.texts == chunks
        # Whether documents overlap here depends on the scheduler (under load they
        # may run one after another); tests/unit/test_embed_batching.py shows
        # deterministically that requests of several documents share a batch.
        assert batcher.batches >= 1
        for fmt, (path, question, answer) in docs.items():
            hits = runtime.service.search("c", question, SearchOptions(top_k=3))
            assert any(answer in h.text and h.filename == path.name for h in hits), fmt
        info = runtime.service.get_collection("c")
        assert info.points == info.chunks == chunks
    finally:
        runtime.close()

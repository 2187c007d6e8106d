"""OCR against the text layer: answer-recall@5 on squad-dev pages read from scans.

Takes the first ``--pages-per-pdf`` pages of each squad-dev PDF (10 of each of
the three: 30 pages), renders every page to a PNG with ``pdftoppm`` (poppler)
at ``--dpi``, and indexes two collections with the service's own code path
(``RagService.add_documents`` then ``Indexer.index_document``):

* ``text``: the same pages as PDFs with their text layer (cut with PDFium),
* ``scans``: the page images, uploaded as ``<document>.p<NN>.png`` and read by
  OCR (Tesseract).

The questions are those of the three documents whose answer appears in the
text layer of the chosen pages. Each is asked of both collections (hybrid
search, top 5); a hit counts when it comes from the question's document (any of
its pages, for the scans) and contains an answer (SQuAD normalisation, as
``rag eval``).

Files are indexed ``--concurrency`` at a time (default: one per core), as the
worker does: each parse (and so each page's Tesseract) runs in its own parse
process. The questions are embedded in batches (``Retriever.search_many``), not
one query at a time: one by one, 2 × 902 queries took 70 of the first run's
104 minutes on a loaded machine.

Needs ``pdftoppm`` (Debian's poppler-utils; ``scripts/install --dev`` installs
it where it can) and Tesseract (``scripts/install``).

    python -m bench.ocr --json docs/results/ocr-squad.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.report import emit

ROOT = Path(__file__).resolve().parents[1]
# ../shared/eval/squad-dev beside the checkout, or beside the checkout a worktree belongs to.
DEFAULT_DATA = next(
    (p / "shared" / "eval" / "squad-dev" for p in ROOT.parents if (p / "shared" / "eval" / "squad-dev").is_dir()),
    ROOT.parent / "shared" / "eval" / "squad-dev",
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


PDFTOPPM_MISSING = (
    "bench/ocr.py renders PDF pages with poppler's pdftoppm, which is not installed: "
    "apt-get install poppler-utils (scripts/install --dev does it where it can)"
)


def pdftoppm_missing_reason() -> str | None:
    """Why the pages cannot be rendered here, or None when they can."""
    return PDFTOPPM_MISSING if shutil.which("pdftoppm") is None else None


def scanned_document(filename: str) -> str:
    """The PDF a page image (or one-page PDF) was cut from: 'Martin_Luther.pdf.p03.png'
    -> 'Martin_Luther.pdf'. (``split(".p")`` cut at '.pdf' and ``rsplit(".p", 1)``
    at '.png': two runs scored the scans 0.0 that way.)"""
    return re.sub(r"\.p\d+\.(png|pdf)$", "", filename)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pages-per-pdf", type=int, default=10)
    parser.add_argument("--dpi", type=int, default=300)
    parser.add_argument(
        "--concurrency", type=int, default=os.cpu_count() or 1, help="files indexed at once (default: one per core)"
    )
    parser.add_argument(
        "--collections",
        default="text,scans",
        help="text: the pages as one PDF per document; pages: each page a one-page PDF with its text layer "
        "(the scans' structure without OCR); scans: each page a PNG read by OCR",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    names = [n for n in args.collections.split(",") if n]
    if not set(names) <= {"text", "pages", "scans"}:
        parser.error(f"unknown collection in {args.collections!r}")

    # Both checks before anything slow is imported or started.
    reason = pdftoppm_missing_reason()
    if reason and "scans" in names:
        sys.exit(reason)
    from ingest.ocr import ocr_unavailable_reason

    reason = ocr_unavailable_reason()
    if reason and "scans" in names:
        sys.exit(reason)

    import pypdfium2

    from ingest.parsing import parse_file
    from rag.evaluation import contains_answer
    from rag.intake import Upload
    from rag.options import SearchOptions
    from rag.settings import Settings
    from runtime import build_runtime

    started_all = time.perf_counter()
    load_at_start = os.getloadavg()
    pdfs = sorted((args.data / "documents").glob("*.pdf"))
    qa = [json.loads(line) for line in (args.data / "qa.jsonl").read_text().splitlines() if line.strip()]

    with tempfile.TemporaryDirectory(prefix="bench-ocr-") as tmp:
        work = Path(tmp)
        originals, images, one_page = [], [], []
        started = time.perf_counter()
        for pdf in pdfs:
            source = pypdfium2.PdfDocument(str(pdf))
            pages = list(range(min(args.pages_per_pdf, len(source))))
            cut = pypdfium2.PdfDocument.new()
            cut.import_pages(source, pages)
            (work / "text").mkdir(exist_ok=True)
            cut.save(str(work / "text" / pdf.name))
            cut.close()
            (work / "pages").mkdir(exist_ok=True)
            for number in pages:
                single = pypdfium2.PdfDocument.new()
                single.import_pages(source, [number])
                one_page.append(work / "pages" / f"{pdf.name}.p{number + 1:02d}.pdf")
                single.save(str(one_page[-1]))
                single.close()
            source.close()
            originals.append(work / "text" / pdf.name)
            if "scans" not in names:
                continue
            (work / "png").mkdir(exist_ok=True)
            prefix = work / "png" / pdf.stem
            subprocess.run(
                ["pdftoppm", "-r", str(args.dpi), "-png", "-f", "1", "-l", str(len(pages)), str(pdf), str(prefix)],
                check=True,
            )
            rendered = sorted(work.glob(f"png/{pdf.stem}-*.png"))
            assert len(rendered) == len(pages), rendered
            for number, image in enumerate(rendered, start=1):
                target = image.with_name(f"{pdf.name}.p{number:02d}.png")
                image.rename(target)
                images.append(target)
        render_s = time.perf_counter() - started
        log(f"{len(one_page)} pages cut, {len(images)} rendered at {args.dpi} dpi, in {render_s:.1f} s")
        files_of = {"text": originals, "pages": one_page, "scans": images}

        # Questions answered by the chosen pages' text layer.
        page_text = {p.name: "\n".join(b.text for b in parse_file(p, p.name)) for p in originals}
        items = [
            row
            for row in qa
            if row["answers"]
            and row["document"] in page_text
            and contains_answer(page_text[row["document"]], row["answers"])
        ]
        log(f"{len(items)} questions answered in those pages")

        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, data_dir=work / "data", llm_load=False, embedded_worker=False
        )
        runtime = build_runtime(settings, "worker")
        try:
            runtime.embedder.embed(["warm up"])
            timing: dict[str, float] = {}
            chunks: dict[str, int] = {}

            def index(name: str, path: Path) -> int:
                with path.open("rb") as fh:
                    (result,) = runtime.service.add_documents(name, [Upload(path.name, None, fh)])
                outcome = runtime.indexer.index_document(result.document.id)
                if outcome.status != "indexed":
                    raise RuntimeError(f"{path.name}: {outcome.status} {outcome.error}")
                return outcome.chunks

            for name in names:
                files = files_of[name]
                runtime.service.create_collection(name)
                started = time.perf_counter()
                with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                    chunks[name] = sum(pool.map(lambda path, name=name: index(name, path), files))
                timing[name] = time.perf_counter() - started
                log(f"{name}: {len(files)} files, {chunks[name]} chunks indexed in {timing[name]:.1f} s")

            recall = {}
            score_s = {}
            for name in names:
                started = time.perf_counter()
                with runtime.registry.unit_of_work() as uow:
                    collection_id = uow.collections.get(name).id
                options = SearchOptions(top_k=5, mode="hybrid", rerank=False)
                all_hits = runtime.retriever.search_many(collection_id, [row["question"] for row in items], options)
                found = sum(
                    1
                    for row, hits in zip(items, all_hits, strict=True)
                    if any(
                        (scanned_document(hit.filename) if name != "text" else hit.filename) == row["document"]
                        and contains_answer(hit.text, row["answers"])
                        for hit in hits
                    )
                )
                recall[name] = found / len(items)
                score_s[name] = time.perf_counter() - started
                log(f"{name}: answer-recall@5 {recall[name]:.4f} ({score_s[name]:.1f} s)")
        finally:
            runtime.close()

    report = {
        "pages": len(one_page),
        "collections": names,
        "dpi": args.dpi,
        "concurrency": args.concurrency,
        "documents": [p.name for p in pdfs],
        "questions": len(items),
        "answer_recall_at_5": {k: round(v, 4) for k, v in recall.items()},
        "chunks": chunks,
        "render_seconds": round(render_s, 1),
        "index_seconds": {k: round(v, 1) for k, v in timing.items()},
        "scans_seconds_per_page": round(timing["scans"] / len(images), 2) if images else None,
        "score_seconds": {k: round(v, 1) for k, v in score_s.items()},
        "total_seconds": round(time.perf_counter() - started_all, 1),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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

    nice -n 10 python -m bench.ocr --json docs/results/ocr-squad.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "eval" / "squad-dev"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pages-per-pdf", type=int, default=10)
    parser.add_argument("--dpi", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import pypdfium2

    from ingest.ocr import ocr_unavailable_reason
    from ingest.parsing import parse_file
    from rag.evaluation import contains_answer
    from rag.intake import Upload
    from rag.settings import Settings

    reason = ocr_unavailable_reason()
    if reason:
        sys.exit(reason)
    pdfs = sorted((args.data / "documents").glob("*.pdf"))
    qa = [json.loads(line) for line in (args.data / "qa.jsonl").read_text().splitlines() if line.strip()]

    from runtime import build_runtime

    with tempfile.TemporaryDirectory(prefix="bench-ocr-") as tmp:
        work = Path(tmp)
        originals, images = [], []
        for pdf in pdfs:
            source = pypdfium2.PdfDocument(str(pdf))
            pages = list(range(min(args.pages_per_pdf, len(source))))
            cut = pypdfium2.PdfDocument.new()
            cut.import_pages(source, pages)
            (work / "text").mkdir(exist_ok=True)
            cut.save(str(work / "text" / pdf.name))
            cut.close()
            source.close()
            originals.append(work / "text" / pdf.name)
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
        log(f"{len(images)} pages rendered at {args.dpi} dpi from {len(pdfs)} PDFs")

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
            timing: dict[str, float] = {}
            for name, files in (("text", originals), ("scans", images)):
                runtime.service.create_collection(name)
                started = time.perf_counter()
                for path in files:
                    with path.open("rb") as fh:
                        (result,) = runtime.service.add_documents(name, [Upload(path.name, None, fh)])
                    outcome = runtime.indexer.index_document(result.document.id)
                    if outcome.status != "indexed":
                        raise RuntimeError(f"{path.name}: {outcome.status} {outcome.error}")
                timing[name] = time.perf_counter() - started
                log(f"{name}: {len(files)} files indexed in {timing[name]:.1f} s")

            def rank(collection: str, row: dict[str, Any]) -> int | None:
                for hit in runtime.service.search(collection, row["question"], 5, mode="hybrid"):
                    document = hit.filename.rsplit(".p", 1)[0] if collection == "scans" else hit.filename
                    if document == row["document"] and contains_answer(hit.text, row["answers"]):
                        return hit.rank
                return None

            recall = {}
            for name in ("text", "scans"):
                found = [rank(name, row) for row in items]
                recall[name] = sum(1 for r in found if r is not None) / len(items)
                log(f"{name}: answer-recall@5 {recall[name]:.3f}")
        finally:
            runtime.close()

    report = {
        "pages": len(images),
        "dpi": args.dpi,
        "documents": [p.name for p in pdfs],
        "questions": len(items),
        "answer_recall_at_5": {k: round(v, 4) for k, v in recall.items()},
        "index_seconds": {k: round(v, 1) for k, v in timing.items()},
        "ocr_seconds_per_page": round(timing["scans"] / len(images), 2),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The parse warm-up: every reader imported, the spaCy pipeline run once and a
small file of each format parsed, so that the parse server's forked children
(``ingest/parse_preload.py``, ``ingest/sandbox.py``) start warm."""

from __future__ import annotations

import importlib
import logging
import pathlib
import tempfile
from collections.abc import Callable

from ingest.parsing import load_readers, parse_file
from ingest.pdf_writer import pdf_document

__all__ = ["preload"]

log = logging.getLogger(__name__)


def preload() -> None:
    """Import every reader and load the spaCy model now, so that processes
    forked from this one parse without paying for it (ingest.sandbox)."""
    load_readers()
    # The pipeline's first run initialises its layers: 0.2 s in every child otherwise.
    importlib.import_module("unstructured.nlp.tokenize")._get_nlp()("Warm up the pipeline. It runs once.")
    # A first parse of each format runs the readers' own lazy imports and set-up
    # (a child parsed in ~470 ms without this, against 20-100 ms in a warm process).
    with tempfile.TemporaryDirectory(prefix="rag-warm-up-") as folder:
        for name, write in _WARM_UP_FILES.items():
            path = pathlib.Path(folder) / name
            try:
                write(path)
                parse_file(path, name)
            except Exception as exc:  # a warm-up only: the real parse reports its own errors
                log.debug("warm-up parse of %s failed: %s", name, exc)


def _write_docx(path: pathlib.Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Warm up", level=1)
    document.add_paragraph("The parser runs once.")
    document.save(str(path))


def _write_pptx(path: pathlib.Path) -> None:
    import pptx

    presentation = pptx.Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])
    slide.shapes.title.text = "Warm up"
    slide.placeholders[1].text = "The parser runs once."
    presentation.save(str(path))


def _write_xlsx(path: pathlib.Path) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.active.append(["Warm", "up"])
    workbook.save(str(path))


def _write_pdf(path: pathlib.Path) -> None:
    path.write_bytes(pdf_document([b"BT /F1 12 Tf 72 700 Td (Warm up. The parser runs once.) Tj ET"]))


def _text_writer(content: str) -> Callable[[pathlib.Path], None]:
    def write(path: pathlib.Path) -> None:
        path.write_text(content, encoding="utf-8")

    return write


_WARM_UP_FILES: dict[str, Callable[[pathlib.Path], None]] = {
    "warm.txt": _text_writer("Warm up\n\nThe parser runs once."),
    "warm.md": _text_writer("# Warm up\n\nThe parser runs once.\n"),
    "warm.html": _text_writer("<h1>Warm up</h1><p>The parser runs once.</p>"),
    "warm.csv": _text_writer("a,b\n1,2\n"),
    "warm.tsv": _text_writer("a\tb\n1\t2\n"),
    "warm.eml": _text_writer("From: a@example.com\nTo: b@example.com\nSubject: Warm up\n\nThe parser runs once.\n"),
    "warm.pdf": _write_pdf,
    "warm.docx": _write_docx,
    "warm.pptx": _write_pptx,
    "warm.xlsx": _write_xlsx,
}

"""Build small, real documents of every supported format for tests.

Tests create their inputs themselves so they pass on a fresh checkout with no
fixture files. Every document is written by the format's ordinary library (or,
for PDF, by a minimal hand-written writer with a correct xref table, which avoids
a PDF-generation dependency), so the parsers see the same structure as in a
file a person would upload.

Structure convention for ``paragraphs``: an entry starting with ``"## "`` is a
heading, rendered as the format's real heading (``<h2>``, Word "Heading 2", a
slide title, a bold PDF line…). In paged formats (PDF, PPTX) each heading
starts a new page or slide, so tests can place text on a known page.
"""

from __future__ import annotations

import csv
import html
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from ingest.pdf_writer import pdf_document

__all__ = ["FORMATS", "HEADING", "make_all", "make_document"]

FORMATS: tuple[str, ...] = ("txt", "md", "html", "pdf", "docx", "pptx", "xlsx", "csv", "eml")

HEADING = "## "

# fmt -> (subject of the fact, answer). Subjects and answers differ per format
# so that a retrieval test can tell which document answered.
_FACTS: dict[str, tuple[str, str]] = {
    "txt": ("lighthouse radio call sign in the plain text notes", "ORCHID-2093"),
    "md": ("greenhouse irrigation password in the markdown guide", "FALCON-7312"),
    "html": ("museum alarm override in the web page", "MAPLE-5820"),
    "pdf": ("vault access code for the PDF archive", "ZEBRA-4471"),
    "docx": ("submarine docking number in the Word report", "COBALT-6158"),
    "pptx": ("observatory telescope key from the slide deck", "TULIP-3940"),
    "xlsx": ("warehouse forklift PIN in the spreadsheet", "GRANITE-8265"),
    "csv": ("bakery oven serial in the CSV ledger", "PEPPER-1749"),
    "eml": ("train depot gate code from the email", "WALNUT-5034"),
}

_SECTION_HEADINGS: dict[str, str] = {
    "txt": "Lighthouse Operations",
    "md": "Greenhouse Maintenance",
    "html": "Museum Security",
    "pdf": "Archive Access",
    "docx": "Harbour Logistics",
    "pptx": "Observatory Schedule",
    "xlsx": "Warehouse Equipment",
    "csv": "Bakery Ledger",
    "eml": "Depot Access",
}


def fact_heading(fmt: str) -> str:
    """The heading of the section that holds ``fmt``'s fact in ``make_all``."""
    return _SECTION_HEADINGS[fmt]


def make_document(
    fmt: str,
    directory: Path,
    *,
    name: str | None = None,
    title: str,
    paragraphs: list[str],
) -> Path:
    """Write a document of format ``fmt`` into ``directory`` and return its path."""
    try:
        writer = _WRITERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}") from None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name or f"document.{fmt}")
    writer(path, title, paragraphs)
    return path


def make_all(directory: Path) -> dict[str, tuple[Path, str, str]]:
    """One document per format: ``fmt -> (path, question, expected answer)``.

    Each document has a title, an introduction (page 1), then a heading
    (``fact_heading(fmt)``) that opens page/slide 2 in paged formats, followed
    by a sentence holding the format's unique fact.
    """
    out: dict[str, tuple[Path, str, str]] = {}
    for fmt in FORMATS:
        subject, answer = _FACTS[fmt]
        title = f"{_SECTION_HEADINGS[fmt]} Handbook"
        paragraphs = [
            f"This handbook describes the daily routine of the {fmt.upper()} team. "
            "Staff are expected to read it before their first shift and to keep it "
            "at hand during inspections.",
            "Every procedure below was reviewed by the operations board last spring.",
            HEADING + _SECTION_HEADINGS[fmt],
            f"The {subject} is {answer}. Keep this value confidential and never write it on the whiteboard.",
        ]
        path = make_document(fmt, directory, name=f"{fmt}-handbook.{fmt}", title=title, paragraphs=paragraphs)
        out[fmt] = (path, f"What is the {subject}?", answer)
    return out


# --- writers -----------------------------------------------------------------


def _heading(paragraph: str) -> str | None:
    return paragraph[len(HEADING) :].strip() if paragraph.startswith(HEADING) else None


def _write_txt(path: Path, title: str, paragraphs: list[str]) -> None:
    parts = [title, *(_heading(p) or p for p in paragraphs)]
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")


def _write_md(path: Path, title: str, paragraphs: list[str]) -> None:
    parts = [f"# {title}", *paragraphs]  # the heading convention is markdown already
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")


def _html_body(title: str, paragraphs: list[str]) -> str:
    lines = [f"<h1>{html.escape(title)}</h1>"]
    for paragraph in paragraphs:
        heading = _heading(paragraph)
        if heading is None:
            lines.append(f"<p>{html.escape(paragraph)}</p>")
        else:
            lines.append(f"<h2>{html.escape(heading)}</h2>")
    return "\n".join(lines)


def _write_html(path: Path, title: str, paragraphs: list[str]) -> None:
    document = (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n"
        f"{_html_body(title, paragraphs)}\n</body>\n</html>\n"
    )
    path.write_text(document, encoding="utf-8")


def _write_docx(path: Path, title: str, paragraphs: list[str]) -> None:
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    for paragraph in paragraphs:
        heading = _heading(paragraph)
        if heading is None:
            document.add_paragraph(paragraph)
        else:
            document.add_heading(heading, level=2)
    document.save(str(path))


def _write_pptx(path: Path, title: str, paragraphs: list[str]) -> None:
    from pptx import Presentation

    presentation = Presentation()
    layout = presentation.slide_layouts[1]  # "Title and Content"
    slides: list[tuple[str, list[str]]] = [(title, [])]
    for paragraph in paragraphs:
        heading = _heading(paragraph)
        if heading is None:
            slides[-1][1].append(paragraph)
        else:
            slides.append((heading, []))
    for slide_title, body in slides:
        slide = presentation.slides.add_slide(layout)
        slide.shapes.title.text = slide_title
        frame = slide.placeholders[1].text_frame
        frame.text = body[0] if body else ""
        for text in body[1:]:
            frame.add_paragraph().text = text
    presentation.save(str(path))


def _rows(title: str, paragraphs: list[str]) -> list[list[str]]:
    """Spreadsheet shape: a header row, then one (section, text) row per paragraph."""
    rows = [["Section", "Note"]]
    section = title
    for paragraph in paragraphs:
        heading = _heading(paragraph)
        if heading is None:
            rows.append([section, paragraph])
        else:
            section = heading
    return rows


def _write_xlsx(path: Path, title: str, paragraphs: list[str]) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = title[:31]  # Excel's sheet-name limit
    for row in _rows(title, paragraphs):
        sheet.append(row)
    workbook.save(str(path))


def _write_csv(path: Path, title: str, paragraphs: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(_rows(title, paragraphs))


def _write_eml(path: Path, title: str, paragraphs: list[str]) -> None:
    message = EmailMessage()
    message["From"] = "Operations Desk <ops@example.com>"
    message["To"] = "Staff <staff@example.com>"
    message["Subject"] = title
    message["Date"] = format_datetime(datetime(2024, 3, 1, 9, 30, tzinfo=UTC))
    message["Message-ID"] = "<handbook@example.com>"
    body = [title, *(_heading(p) or p for p in paragraphs)]
    message.set_content("\n\n".join(body) + "\n")
    path.write_bytes(message.as_bytes())


def _write_pdf(path: Path, title: str, paragraphs: list[str]) -> None:
    pages: list[list[tuple[str, int, str]]] = [[("F2", 18, title)]]  # (font, size, line)
    for paragraph in paragraphs:
        heading = _heading(paragraph)
        if heading is not None:
            pages.append([("F2", 14, heading)])
            continue
        pages[-1].extend(("F1", 11, line) for line in textwrap.wrap(paragraph, 80))
        pages[-1].append(("F1", 11, ""))  # paragraph gap
    path.write_bytes(pdf_document([_page_stream(lines) for lines in pages]))


def _pdf_text(text: str) -> bytes:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return escaped.encode("cp1252", errors="replace")


def _page_stream(lines: list[tuple[str, int, str]]) -> bytes:
    out = []
    y = 740
    for font, size, text in lines:
        if text:
            out.append(b"BT /%s %d Tf 72 %d Td (%s) Tj ET" % (font.encode(), size, y, _pdf_text(text)))
        y -= int(size * 1.25) if text else 12  # body leading, then a paragraph gap
        if font == "F2":
            y -= 12  # space below headings so they stay boxes of their own
    return b"\n".join(out)


_WRITERS: dict[str, Callable[[Path, str, list[str]], None]] = {
    "txt": _write_txt,
    "md": _write_md,
    "html": _write_html,
    "pdf": _write_pdf,
    "docx": _write_docx,
    "pptx": _write_pptx,
    "xlsx": _write_xlsx,
    "csv": _write_csv,
    "eml": _write_eml,
}

"""Turn an uploaded file into a flat list of text blocks, in reading order.

``unstructured`` does the format work; this module pins down the parts of it
that would otherwise misbehave in a self-hosted, offline service:

* **No network, ever.** ``configure_unstructured``
  (``ingest/unstructured_setup.py``) runs before the first import of
  ``unstructured``: no telemetry, and the spaCy model from PyPI, never a
  download.
* **Cheap and local.** PDFs use the ``fast`` strategy (pdfminer text, no OCR,
  no layout model), run here because ``unstructured.partition.pdf`` cannot be
  imported without ``unstructured-inference``. Language detection is skipped by
  declaring English. Email attachments are not followed: they could be any
  format, including ones that need OCR.
* **Fallbacks before failing.** Each extension has a chain of readers, tried
  in turn while one raises: text formats are decoded whatever their encoding
  (``ingest/decoding.py``); a CSV/TSV that pandas refuses (ragged rows) is read row by row as
  text; a PDF that pdfminer cannot read is read by PDFium (``pypdfium2``). A
  document fails only when every reader failed, and the reason names each
  reader's own.
* **OCR** (``ingest.ocr``, Tesseract): PDF pages without a text layer are
  detected one by one, rendered with PDFium and recognised; images (png, jpg,
  tiff) are recognised page by page.
* **Imports stay lazy,** so ``import ingest.parsing`` costs nothing. The first
  ``parse_file`` in a process pays for importing ``unstructured`` and spaCy
  (which imports torch through thinc) and loading the model: several seconds;
  ``ingest/warm_up.py`` pays it once in the parse server.

Why one module of about 500 lines: it is the reader chain of every format and
the element-to-``Block`` conversion they all share (sections, pages, tables,
dropped page furniture, the OCR'd pages merged back in reading order). The
concerns around it that stand alone live beside it: ``decoding``,
``unstructured_setup``, ``ocr``, ``warm_up``.
"""

from __future__ import annotations

import csv
import functools
import importlib
import io
import logging
import pathlib
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ingest import ocr
from ingest.decoding import decode_text
from ingest.unstructured_setup import configure_unstructured, skip_unused_classification
from rag.errors import DocumentParseError, ParseLimitError, RagError, UnsupportedFileTypeError

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Block",
    "configure_unstructured",
    "is_supported",
    "load_readers",
    "parse_file",
]

# Extension -> (unstructured module, partition function, extra keyword arguments).
_PARTITIONERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    ".txt": ("unstructured.partition.text", "partition_text", {}),
    ".md": ("unstructured.partition.md", "partition_md", {}),
    ".markdown": ("unstructured.partition.md", "partition_md", {}),
    ".html": ("unstructured.partition.html", "partition_html", {}),
    ".htm": ("unstructured.partition.html", "partition_html", {}),
    # unstructured's own partition_pdf cannot be imported without
    # unstructured-inference (see _partition_pdf_fast); same strategy, done here.
    ".pdf": (__name__, "_partition_pdf_fast", {}),
    ".docx": ("unstructured.partition.docx", "partition_docx", {"include_page_breaks": False}),
    ".pptx": ("unstructured.partition.pptx", "partition_pptx", {"include_page_breaks": False}),
    ".xlsx": ("unstructured.partition.xlsx", "partition_xlsx", {}),
    ".csv": ("unstructured.partition.csv", "partition_csv", {"include_header": True}),
    ".tsv": ("unstructured.partition.tsv", "partition_tsv", {"include_header": True}),
    ".eml": ("unstructured.partition.email", "partition_email", {"process_attachments": False}),
}

# Text formats whose bytes are decoded here (any encoding) before a reader sees them.
_DECODED = frozenset({".txt", ".md", ".markdown", ".csv", ".tsv"})
_IMAGES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_PARTITIONERS) | _IMAGES

log = logging.getLogger(__name__)

# Page furniture repeats on every page and only adds noise to retrieval.
_DROPPED_CATEGORIES = frozenset({"Header", "Footer", "PageNumber", "PageBreak"})
_TITLE = "Title"
_TABLE = "Table"
# A PDF page with less text than this is treated as a scan and recognised.
_MIN_PAGE_CHARS = 16


@dataclass(frozen=True)
class Block:
    """One parsed element of a document, in reading order.

    ``section`` is the text of the nearest preceding title, or the block's own
    text when the block *is* a title, so every block knows what it is about.
    """

    text: str
    page: int | None
    section: str | None
    category: str


def is_supported(filename: str) -> bool:
    """Whether ``parse_file`` has a parser for this file name's extension."""
    return _extension(filename) in SUPPORTED_EXTENSIONS


def parse_file(path: pathlib.Path, filename: str) -> list[Block]:
    """Parse the file at ``path``; ``filename`` is the name the user gave it.

    The two are separate because uploads are stored under generated names:
    the parser is chosen by ``filename``'s extension (never by sniffing, so the
    behaviour is predictable) and error messages quote ``filename``.

    The extension's readers are tried in turn while one raises; the first that
    reads the file decides (an empty result is not retried: the others would
    read the same nothing). Raises ``UnsupportedFileTypeError`` for an unknown
    extension and ``DocumentParseError`` for a file that no reader could read
    (with each reader's reason) or that has no text.
    """
    extension = _extension(filename)
    if extension not in SUPPORTED_EXTENSIONS:
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        raise UnsupportedFileTypeError(
            f"unsupported file type {extension or '(no extension)'!r} for {filename!r}; supported: {supported}"
        )
    failures: list[str] = []
    first_error: BaseException | None = None
    for name, reader in _readers(extension):
        try:
            # Not thread-safe: unstructured and the office-format readers under it
            # share parser state between threads (two pptx files parsed at once by
            # the worker's threads produced interleaved XML). ingest.sandbox parses
            # each document in a child process, or inline one at a time.
            blocks = reader(path, extension)
        except ocr.OcrUnavailableError as exc:
            raise DocumentParseError(f"no text found in {filename}: {exc.message}") from exc
        except ParseLimitError:
            raise  # a limit (ingest.sandbox) is not a reason to try another reader
        except DocumentParseError as exc:
            failures.append(f"{name}: {exc.message}")
            first_error = first_error or exc
            continue
        except RagError:
            raise
        except MemoryError:
            raise
        except Exception as exc:
            reason = _describe(exc).replace(str(path), filename)  # don't leak storage paths
            failures.append(f"{name}: {reason}")
            first_error = first_error or exc
            continue
        if not blocks:
            hint = " (no text layer, and OCR found no text either)" if extension in _IMAGES | {".pdf"} else ""
            raise DocumentParseError(f"no text found in {filename}{hint}")
        return blocks
    reasons = failures[0].split(": ", 1)[1] if len(failures) == 1 else "; ".join(failures)
    raise DocumentParseError(f"could not parse {filename}: {reasons}") from first_error


Reader = Callable[[pathlib.Path, str], list[Block]]


def _readers(extension: str) -> list[tuple[str, Reader]]:
    """The readers of one extension, in the order they are tried."""
    if extension == ".pdf":
        return [("pdfminer", _read_pdf_pdfminer), ("pdfium", _read_pdf_pdfium)]
    if extension in _IMAGES:
        return [("tesseract", _read_image)]
    readers: list[tuple[str, Reader]] = [("unstructured", _read_unstructured)]
    if extension in (".csv", ".tsv"):
        readers.append(("csv rows", _read_csv_rows))
    elif extension in _DECODED:
        readers.append(("plain text", _read_plain_text))
    return readers


def _read_unstructured(path: pathlib.Path, extension: str) -> list[Block]:
    partition = _partitioner(extension)
    options = _PARTITIONERS[extension][2]
    if extension not in _DECODED:
        elements = partition(filename=str(path), languages=["eng"], **options)
        return _to_blocks(elements, sheet_sections=extension == ".xlsx")
    # unstructured reads these as UTF-8 (or guesses badly): hand it a UTF-8 copy.
    text = decode_text(path.read_bytes())
    if extension in (".csv", ".tsv"):
        widths = {len(row) for row in _csv_rows(text, extension) if row}
        if len(widths) > 1:
            # pandas shifts such rows into an index or drops their cells without a word.
            raise DocumentParseError(f"rows have {min(widths)} to {max(widths)} cells")
    with tempfile.TemporaryDirectory(prefix="rag-parse-") as folder:
        copy = pathlib.Path(folder) / f"document{extension}"
        copy.write_text(text, encoding="utf-8")
        elements = partition(filename=str(copy), languages=["eng"], **options)
    return _to_blocks(elements)


def _read_csv_rows(path: pathlib.Path, extension: str) -> list[Block]:
    """Rows read as they are, however many cells each has: one table block,
    one ``cell | cell`` line per row (what unstructured gives for a regular file)."""
    lines = []
    for row in _csv_rows(decode_text(path.read_bytes()), extension):
        line = " | ".join(" ".join(cell.split()) for cell in row if cell.strip())
        if line:
            lines.append(line)
    return [Block(text="\n".join(lines), page=None, section=None, category=_TABLE)] if lines else []


def _csv_rows(text: str, extension: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline=""), delimiter="\t" if extension == ".tsv" else ","))


def _read_plain_text(path: pathlib.Path, extension: str) -> list[Block]:
    """Paragraphs split at blank lines, each classified like unstructured would."""
    return _paragraph_blocks(decode_text(path.read_bytes()).split("\n\n"), page=None)


def _read_pdf_pdfminer(path: pathlib.Path, extension: str) -> list[Block]:
    skip_unused_classification()  # element_from_text loads spaCy
    return _with_ocr(path, _partition_pdf_fast(str(path)))


def _read_pdf_pdfium(path: pathlib.Path, extension: str) -> list[Block]:
    """PDFium's text: it reads files pdfminer gives up on (broken colour
    spaces, odd fonts). Its text lines are grouped into paragraphs by layout."""
    import pypdfium2

    elements: list[Any] = []
    document = pypdfium2.PdfDocument(str(path))
    try:
        for index in range(len(document)):
            page = document[index]
            textpage = page.get_textpage()
            try:
                paragraphs = _pdfium_paragraphs(textpage)
            finally:
                textpage.close()
                page.close()
            elements.append(_PageMarker(index + 1))
            elements.extend(_elements_from_paragraphs(paragraphs, page=index + 1))
    finally:
        document.close()
    return _with_ocr(path, elements)


def _pdfium_paragraphs(textpage: Any) -> list[str]:
    """A page's text rectangles (PDFium gives them in reading order) joined
    into lines, and lines into paragraphs: a new one starts after a vertical gap
    of more than ~half a line, or where the line height (font size) changes."""
    lines: list[tuple[float, float, str]] = []  # (top, bottom, text)
    for i in range(textpage.count_rects()):
        left, bottom, right, top = textpage.get_rect(i)
        text = textpage.get_text_bounded(left, bottom, right, top).strip()
        if not text:
            continue
        if lines and abs(lines[-1][0] - top) < 0.5 * (top - bottom):
            last_top, last_bottom, last_text = lines[-1]
            lines[-1] = (last_top, min(last_bottom, bottom), f"{last_text} {text}")
        else:
            lines.append((top, bottom, text))
    paragraphs: list[list[str]] = []
    previous: tuple[float, float, str] | None = None
    for line in lines:
        top, bottom, text = line
        height = top - bottom
        if previous is None:
            paragraphs.append([text])
        else:
            gap = previous[1] - top
            previous_height = previous[0] - previous[1]
            if gap > 0.6 * previous_height or abs(height - previous_height) > 0.2 * previous_height:
                paragraphs.append([text])
            else:
                paragraphs[-1].append(text)
        previous = line
    return [" ".join(lines_) for lines_ in paragraphs]


def _with_ocr(path: pathlib.Path, elements: list[Any]) -> list[Block]:
    """Blocks of the text layer, with every page that has (almost) no text
    replaced by what OCR reads in it. ``elements`` hold one ``_PageMarker``
    per page, so pages without any element are known too."""
    text_per_page: dict[int, int] = {}
    for element in elements:
        page = element.metadata.page_number
        text_per_page[page] = text_per_page.get(page, 0) + len(getattr(element, "text", "") or "")
    scanned = sorted(page for page, chars in text_per_page.items() if chars < _MIN_PAGE_CHARS)
    if scanned and ocr.ocr_unavailable_reason() is not None and len(scanned) < len(text_per_page):
        # Without OCR a document with a text layer elsewhere is still worth its text.
        log.warning(
            "%s: %d page(s) without text not recognised: %s", path.name, len(scanned), ocr.ocr_unavailable_reason()
        )
        scanned = []
    recognised = _ocr_pdf_pages(path, scanned) if scanned else {}
    merged: list[Any] = []
    for element in elements:
        page = element.metadata.page_number
        if isinstance(element, _PageMarker):
            merged.extend(recognised.get(page, ()))
        elif not recognised.get(page):  # OCR found nothing: keep what the text layer had
            merged.append(element)
    return _to_blocks(merged)


def _ocr_pdf_pages(path: pathlib.Path, pages: list[int]) -> dict[int, list[Any]]:
    """Render the given pages (1-based) with PDFium and recognise them."""
    import pypdfium2

    out: dict[int, list[Any]] = {}
    document = pypdfium2.PdfDocument(str(path))
    try:
        for number in pages:
            page = document[number - 1]
            try:
                image = page.render(scale=ocr.OCR_DPI / 72, grayscale=True).to_pil()
            finally:
                page.close()
            out[number] = _elements_from_paragraphs(ocr.ocr_image(image), page=number)
    finally:
        document.close()
    return out


def _read_image(path: pathlib.Path, extension: str) -> list[Block]:
    """Every frame of an image (a TIFF may hold many pages), recognised."""
    from PIL import Image, ImageSequence

    elements: list[Any] = []
    with Image.open(path) as image:
        for index, frame in enumerate(ImageSequence.Iterator(image)):
            elements.extend(_elements_from_paragraphs(ocr.ocr_image(frame.copy()), page=index + 1))
    return _to_blocks(elements)


class _PageMarker:
    """Opens a PDF page in a list of elements, so a page without any text is
    still seen (and recognised). Dropped by ``_to_blocks`` like a page break."""

    text = ""
    category = "PageBreak"

    def __init__(self, page: int) -> None:
        self.metadata = _PageMetadata(page)


@dataclass
class _PageMetadata:
    page_number: int


def _elements_from_paragraphs(paragraphs: Iterable[str], *, page: int | None) -> list[Any]:
    from unstructured.cleaners.core import clean_extra_whitespace
    from unstructured.partition.text import element_from_text

    skip_unused_classification()
    elements = []
    for paragraph in paragraphs:
        text = clean_extra_whitespace(paragraph)
        if text:
            element = element_from_text(text)
            element.metadata.page_number = page
            elements.append(element)
    return elements


def _paragraph_blocks(paragraphs: Iterable[str], *, page: int | None) -> list[Block]:
    return _to_blocks(_elements_from_paragraphs(paragraphs, page=page))


def load_readers() -> None:
    """Import every reader now (the unstructured partitioners, pdfminer, PDFium,
    Pillow) instead of at a first parse."""
    for extension in sorted(_PARTITIONERS):
        _partitioner(extension)
    importlib.import_module("pdfminer.high_level")
    importlib.import_module("pypdfium2")  # second PDF reader, and page rendering for OCR
    importlib.import_module("PIL.Image")


@functools.cache
def _partitioner(extension: str) -> Callable[..., list[Any]]:
    skip_unused_classification()
    module_name, function_name, _ = _PARTITIONERS[extension]
    function: Callable[..., list[Any]] = getattr(importlib.import_module(module_name), function_name)
    return function


def _partition_pdf_fast(filename: str, **_: Any) -> list[Any]:
    """unstructured's ``strategy="fast"`` for PDFs: pdfminer layout, no OCR.

    ``unstructured.partition.pdf`` (0.27.35) imports ``unstructured_inference``
    (torch, torchvision, layout models) at module level even for the fast
    strategy, and its pdfminer page reader needs ``pikepdf``. The fast strategy
    itself is small: pdfminer groups characters into text boxes in reading
    order, and unstructured's ``element_from_text`` classifies each box (Title,
    NarrativeText, ListItem…) exactly as ``partition_pdf`` would. Positions are
    not passed on purpose: unstructured would then label anything in the top or
    bottom 7% of a page as a header/footer, which drops real titles.
    """
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams
    from unstructured.cleaners.core import clean_extra_whitespace
    from unstructured.partition.text import element_from_text

    elements: list[Any] = []
    # all_texts: also lay out text drawn inside figures (form XObjects).
    pages = extract_pages(filename, laparams=LAParams(all_texts=True))
    for page_number, layout in enumerate(pages, start=1):
        elements.append(_PageMarker(page_number))
        for box in _text_boxes(layout):
            text = clean_extra_whitespace(box.get_text())
            if text:
                element = element_from_text(text)
                element.metadata.page_number = page_number
                elements.append(element)
    return elements


def _text_boxes(container: Any) -> Iterable[Any]:
    from pdfminer.layout import LTFigure, LTTextBox

    for item in container:
        if isinstance(item, LTTextBox):
            yield item
        elif isinstance(item, LTFigure):
            yield from _text_boxes(item)


def _to_blocks(elements: Iterable[Any], *, sheet_sections: bool = False) -> list[Block]:
    """Keep non-empty content elements and give each one its section.

    With ``sheet_sections`` (spreadsheets) a new sheet starts a section named
    after the sheet, so rows of different sheets are never chunked together.
    """
    blocks: list[Block] = []
    section: str | None = None
    sheet: str | None = None
    for element in elements:
        category = str(getattr(element, "category", "") or "UncategorizedText")
        if category in _DROPPED_CATEGORIES:
            continue
        metadata = getattr(element, "metadata", None)
        text = _table_text(metadata) if category == _TABLE else None
        text = (text or getattr(element, "text", "") or "").strip()
        if not text:
            continue
        page_name = getattr(metadata, "page_name", None)
        if sheet_sections and page_name and page_name != sheet:
            sheet = section = str(page_name)
        if category == _TITLE:
            section = text
        page = getattr(metadata, "page_number", None)
        blocks.append(Block(text=text, page=page, section=section, category=category))
    return blocks


def _table_text(metadata: Any) -> str | None:
    """A table as one line per row ("cell | cell"), or None to use ``element.text``.

    unstructured's ``Table.text`` runs all cells together with spaces; keeping
    rows on their own lines lets the chunker cut big tables between rows.
    """
    markup = getattr(metadata, "text_as_html", None)
    if not markup:
        return None
    import lxml.html

    try:
        table = lxml.html.fragment_fromstring(markup, create_parent="div")
    except (ValueError, lxml.etree.ParserError):
        return None  # unparseable markup: the flat text is still correct
    rows = []
    for row in table.iter("tr"):
        cells = [" ".join(cell.text_content().split()) for cell in row.iter("td", "th")]
        line = " | ".join(cell for cell in cells if cell)
        if line:
            rows.append(line)
    return "\n".join(rows) or None


def _extension(filename: str) -> str:
    return pathlib.PurePath(filename).suffix.lower()


def _describe(exc: BaseException) -> str:
    """A one-line reason: the message, or the exception type when it has none."""
    message = str(exc).strip().splitlines()
    return message[0] if message else type(exc).__name__

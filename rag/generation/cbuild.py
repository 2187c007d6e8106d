"""The model process's C helpers (``batch_greedy.c``), compiled on first use.

The library is built by the system's C compiler (the one that built
llama.cpp: ``$CC``, else ``cc``, ``gcc`` or ``clang``) into a file named by the
source's hash, beside the source where that folder is writable, else in the
user's cache folder, and loaded from there afterwards; a build takes a fraction
of a second. It includes no header and links nothing (see the source), so one
build serves a CPU and a CUDA llama.cpp alike. Where it cannot be built,
``library`` returns None and the callers use their Python versions."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

__all__ = ["SOURCE", "build", "library"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("batch_greedy.c")

_lock = threading.Lock()
_loaded: dict[tuple[Path, Path | None], ctypes.PyDLL | None] = {}


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _target(source: Path, folder: Path | None) -> Path:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    name = f"_{source.stem}-{digest}.so"
    if folder is not None:
        return folder / name
    if os.access(source.parent, os.W_OK):
        return source.parent / name
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rag"
    return cache / name


def build(source: Path = SOURCE, folder: Path | None = None) -> Path:
    """Compiles ``source`` unless its library is there already; returns the
    library's path. Raises ``OSError`` when it cannot be built."""
    target = _target(source, folder)
    if target.exists():
        return target
    cc = _compiler()
    if cc is None:
        raise OSError("no C compiler (cc, gcc or clang) found")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: processes building at once never load half a file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run(
            [cc, "-O2", "-fPIC", "-shared", "-std=c11", "-Wall", "-o", tmp, str(source)],
            capture_output=True, text=True, timeout=120, check=False,
        )
        if done.returncode != 0:
            raise OSError(f"{cc} failed on {source.name}: {done.stderr.strip()[-500:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def library(source: Path = SOURCE, folder: Path | None = None) -> ctypes.PyDLL | None:
    """The compiled ``source``, loaded once per process (calls into it keep the
    GIL: they return at once); None where it cannot be built or loaded."""
    key = (source, folder)
    with _lock:
        if key not in _loaded:
            try:
                _loaded[key] = ctypes.PyDLL(str(build(source, folder)))
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:  # RuntimeError: no home folder
                log.warning("the C helpers are unavailable, using Python instead: %s", exc)
                _loaded[key] = None
        return _loaded[key]

"""Folders a collection may be bound to for sync runs.

Only folders under the configured roots (``RAG_SYNC_ROOTS``) are accepted, after
resolving symlinks and ``..``, so a binding can never reach elsewhere on the
server. A sync walks the folder and skips anything that resolves outside it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rag.errors import InvalidRequestError

__all__ = ["FolderFile", "resolve_bound_folder", "scan_folder"]

_READ_SIZE = 1024 * 1024


@dataclass(frozen=True)
class FolderFile:
    relpath: str  # POSIX, relative to the bound folder: the file's identity
    path: Path
    content_hash: str
    size: int


def resolve_bound_folder(folder: str, roots: Sequence[Path]) -> Path:
    """The real path of ``folder`` if it is an existing folder under one of ``roots``."""
    if not roots:
        raise InvalidRequestError("folder sync is off: no allowed roots are configured (RAG_SYNC_ROOTS)")
    raw = Path(folder).expanduser()
    if not raw.is_absolute():
        raise InvalidRequestError(f"{folder!r} is not an absolute path")
    try:
        real = raw.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise InvalidRequestError(f"{folder!r} does not exist") from exc
    if not real.is_dir():
        raise InvalidRequestError(f"{folder!r} is not a folder")
    for root in roots:
        try:
            real_root = root.expanduser().resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if real == real_root or real.is_relative_to(real_root):
            return real
    raise InvalidRequestError(
        f"{folder!r} is outside the allowed sync roots ({', '.join(str(r) for r in roots)})"
    )


def scan_folder(folder: Path, *, is_supported: Callable[[str], bool] | None = None) -> Iterator[FolderFile]:
    """Every regular, non-hidden file below ``folder`` whose real path stays inside
    it, with its sha256. ``is_supported(name)`` filters by file type when given."""
    real_folder = folder.resolve(strict=True)
    for path in sorted(real_folder.rglob("*")):
        rel = path.relative_to(real_folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if not real.is_file() or not real.is_relative_to(real_folder):
            continue
        if is_supported is not None and not is_supported(path.name):
            continue
        digest, size = _hash(real)
        yield FolderFile(relpath=rel.as_posix(), path=real, content_hash=digest, size=size)


def _hash(path: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(_READ_SIZE):
            sha.update(block)
            size += len(block)
    return sha.hexdigest(), size

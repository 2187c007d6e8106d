"""Content-addressed storage of uploaded originals.

Each file is stored once under its sha256, so identical uploads share one copy
and a re-index can always start again from the original bytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from rag.errors import BackendError, FileTooLargeError

__all__ = ["BlobStore"]

_READ_SIZE = 1024 * 1024


class BlobStore:
    def __init__(self, root: Path) -> None:
        self._root = root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create the originals folder {root}: {exc}") from exc

    def path(self, digest: str) -> Path:
        return self._root / digest[:2] / digest

    def put(self, stream: BinaryIO, *, max_bytes: int, name: str = "upload") -> tuple[str, int]:
        """Copy a stream into the store; returns (sha256 hex, size). Refuses more
        than ``max_bytes`` without keeping anything."""
        sha = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(prefix=".incoming-", dir=self._root)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                while block := stream.read(_READ_SIZE):
                    size += len(block)
                    if size > max_bytes:
                        raise FileTooLargeError(
                            f"{name} is larger than the {max_bytes:,}-byte upload limit"
                        )
                    sha.update(block)
                    out.write(block)
            digest = sha.hexdigest()
            target = self.path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
            return digest, size
        except OSError as exc:
            raise BackendError(f"cannot store {name}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

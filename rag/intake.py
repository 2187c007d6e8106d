"""Uploads as the service receives them: the file and its metadata, what is
accepted (file types, size, metadata shape), and how an accepted document
reaches the ingestion worker (``Intake``, wired in ``runtime/``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from rag.errors import InvalidRequestError, RagError
from rag.registry import DocumentRecord
from rag.store import MetadataValue

__all__ = ["Intake", "Upload", "UploadResult", "check_metadata"]

_METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str | None
    stream: BinaryIO


@dataclass(frozen=True)
class UploadResult:
    filename: str
    document: DocumentRecord | None
    duplicate: bool = False
    error: RagError | None = None


@dataclass(frozen=True)
class Intake:
    """How an upload gets to the ingestion worker."""

    enqueue: Callable[[str], None]
    is_supported: Callable[[str], bool]
    max_upload_bytes: int


def check_metadata(metadata: dict[str, Any]) -> dict[str, MetadataValue | list[MetadataValue]]:
    """Upload metadata as the store keeps it, or InvalidRequestError saying why not."""
    if not isinstance(metadata, dict):
        raise InvalidRequestError("metadata must be a JSON object")
    if len(metadata) > 64:
        raise InvalidRequestError("metadata has more than 64 keys")
    out: dict[str, MetadataValue | list[MetadataValue]] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not _METADATA_KEY.match(key):
            raise InvalidRequestError(
                f"metadata key {key!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or '_'"
            )
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not isinstance(v, str | int | float | bool) or (isinstance(v, str) and len(v) > 1024):
                raise InvalidRequestError(
                    f"metadata {key!r}: values are strings (up to 1024 characters), numbers, "
                    "booleans or lists of them"
                )
        out[key] = list(values) if isinstance(value, list) else value
    return out

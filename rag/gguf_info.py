"""Reads one string of a GGUF file's metadata (the chat template) without
loading the model: the API process decides the prompt style before, and
apart from, the process that holds the model."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

__all__ = ["read_gguf_string"]

# Sizes of GGUF's fixed-width value types (type id -> bytes).
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def _u32(fh: BinaryIO) -> int:
    value: int = struct.unpack("<I", fh.read(4))[0]
    return value


def _u64(fh: BinaryIO) -> int:
    value: int = struct.unpack("<Q", fh.read(8))[0]
    return value


def _skip(fh: BinaryIO, kind: int) -> None:
    if kind in _FIXED:
        fh.seek(_FIXED[kind], 1)
    elif kind == _STRING:
        fh.seek(_u64(fh), 1)
    elif kind == _ARRAY:
        inner, count = _u32(fh), _u64(fh)
        if inner in _FIXED:
            fh.seek(_FIXED[inner] * count, 1)
        else:
            for _ in range(count):
                _skip(fh, inner)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")


def read_gguf_string(path: Path, key: str) -> str | None:
    """The string value of ``key`` in the GGUF's metadata; None when absent or
    not a GGUF (v2 or v3) file."""
    wanted = key.encode()
    try:
        with path.open("rb") as fh:
            if fh.read(4) != b"GGUF" or _u32(fh) not in (2, 3):
                return None
            _u64(fh)  # tensor count
            for _ in range(_u64(fh)):
                name = fh.read(_u64(fh))
                kind = _u32(fh)
                if name == wanted and kind == _STRING:
                    return fh.read(_u64(fh)).decode("utf-8", errors="replace")
                _skip(fh, kind)
    except (OSError, struct.error, ValueError):
        return None
    return None

"""File names as clients give them, made safe to store, log and show.

A stored name is the base name only (never a path), in NFC, without control
characters (NUL, newline, ESC of ANSI sequences…), format characters (the
bidi overrides and isolates that make ``evil‮txt.exe`` read as
``evilexe.txt``, zero-width characters) or line/paragraph separators, and at
most ``MAX_NAME_CHARS`` long with its extension kept. When the given name had
to change, the original is kept beside it, escaped (every such character as
``\\uXXXX``), for the record only.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from rag.errors import InvalidRequestError

__all__ = ["MAX_NAME_CHARS", "CleanName", "clean_filename", "escape_name"]

MAX_NAME_CHARS = 255
MAX_EXTENSION_CHARS = 16
MAX_ORIGINAL_CHARS = 2048
# Control, format, surrogate, private-use and unassigned; line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


@dataclass(frozen=True)
class CleanName:
    name: str
    original: str | None  # the given name, escaped, when it differs from ``name``


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def escape_name(name: str) -> str:
    """``name`` with backslashes and every unsafe character written as escapes."""
    out = []
    for ch in name:
        if ch == "\\":
            out.append("\\\\")
        elif _unsafe(ch):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def _shorten(name: str) -> str:
    if len(name) <= MAX_NAME_CHARS:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > MAX_EXTENSION_CHARS:
        return name[:MAX_NAME_CHARS]
    return stem[: MAX_NAME_CHARS - len(ext) - 1] + "." + ext


def clean_filename(given: str) -> CleanName:
    base = given.replace("\\", "/").rsplit("/", 1)[-1]
    # Breaks and tabs become a space, other unsafe characters go; runs of spaces become one.
    normal = unicodedata.normalize("NFC", base)
    cleaned = "".join(" " if ch.isspace() else ch for ch in normal if ch.isspace() or not _unsafe(ch))
    cleaned = " ".join(cleaned.split())
    name = _shorten(cleaned.strip())
    if not name or name in (".", ".."):
        raise InvalidRequestError("a file has no usable name")
    original = None
    if name != given:
        escaped = escape_name(given)
        original = escaped if len(escaped) <= MAX_ORIGINAL_CHARS else escaped[:MAX_ORIGINAL_CHARS] + "…"
    return CleanName(name=name, original=original)

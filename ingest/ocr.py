"""OCR adapter: the only module that talks to Tesseract.

Scanned PDF pages (no text layer) and image uploads are read by Debian's
``tesseract`` (``apt-get install tesseract-ocr tesseract-ocr-eng``, which
``scripts/install`` does where it can). It runs as a child process per page:
nothing to compile, no models to download (the English model comes in the
Debian package), and a page that crashes or hangs Tesseract costs only that
page's process. Where Tesseract is missing, reading a scan fails with a reason
that says how to install it; everything else keeps working.

Tesseract is started with ``OMP_THREAD_LIMIT=1``: its OpenMP threads made a
page slower, not faster, on a small shared machine, and the worker already
overlaps parsing with embedding.
"""

from __future__ import annotations

import functools
import io
import os
import re
import shutil
import subprocess
from typing import Any

from rag.errors import DocumentParseError

__all__ = ["OCR_DPI", "OcrUnavailableError", "ocr_image", "ocr_unavailable_reason"]

# Resolution scanned PDF pages are rendered at: Tesseract's accuracy drops
# quickly below ~200 dpi for 10-11 pt text.
OCR_DPI = 300
_PAGE_TIMEOUT_S = 180.0
_INSTALL_HINT = "install it with: apt-get install tesseract-ocr tesseract-ocr-eng"


class OcrUnavailableError(DocumentParseError):
    """Text had to be recognised, but Tesseract (or its English model) is missing."""


@functools.cache
def ocr_unavailable_reason() -> str | None:
    """Why OCR cannot run on this machine, or None when it can."""
    binary = shutil.which("tesseract")
    if binary is None:
        return f"OCR needs Tesseract, which is not installed; {_INSTALL_HINT}"
    try:
        listing = subprocess.run([binary, "--list-langs"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"OCR needs Tesseract, which cannot run ({exc}); {_INSTALL_HINT}"
    languages = set((listing.stdout + listing.stderr).split())
    if "eng" not in languages:
        return f"OCR needs Tesseract's English model, which is not installed; {_INSTALL_HINT}"
    return None


def ocr_image(image: Any) -> list[str]:
    """The paragraphs Tesseract reads in a PIL image, in reading order.

    Raises ``OcrUnavailableError`` when Tesseract is missing and
    ``DocumentParseError`` when it fails on this image.
    """
    reason = ocr_unavailable_reason()
    if reason is not None:
        raise OcrUnavailableError(reason)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    try:
        result = subprocess.run(
            ["tesseract", "stdin", "stdout", "-l", "eng", "--psm", "3"],
            input=buffer.getvalue(),
            capture_output=True,
            timeout=_PAGE_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DocumentParseError(f"OCR of a page took longer than {_PAGE_TIMEOUT_S:.0f} s") from exc
    except OSError as exc:
        raise DocumentParseError(f"OCR could not start: {exc}") from exc
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DocumentParseError(f"OCR failed: {detail[-1] if detail else f'exit status {result.returncode}'}")
    return paragraphs(result.stdout.decode("utf-8", "replace"))


_HYPHENATED = re.compile(r"(\w)-\n(\w)")


def paragraphs(text: str) -> list[str]:
    """Tesseract's plain text as paragraphs: blocks are separated by blank
    lines; words hyphenated at a line end are joined again."""
    out = []
    for block in re.split(r"\n\s*\n", text.replace("\f", "\n\n")):
        block = _HYPHENATED.sub(r"\1\2", block.strip())
        joined = " ".join(block.split())
        if joined:
            out.append(joined)
    return out

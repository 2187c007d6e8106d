"""llama-cpp-python, loaded on first use (never at import time: the model
process must load llama.cpp's libraries before anything else does)."""

from __future__ import annotations

import os
import threading
from typing import Any

from rag.errors import ConfigurationError

__all__ = ["backend_init", "default_gpu_layers", "llama_cpp"]


def llama_cpp() -> Any:
    try:
        import llama_cpp as lc
        from llama_cpp._logger import set_verbose
    except ImportError as exc:
        raise ConfigurationError(f"llama-cpp-python cannot be imported ({exc}); see README: Installing") from exc
    set_verbose(bool(os.environ.get("RAG_LLAMA_VERBOSE")))
    return lc


def default_gpu_layers() -> int:
    """All layers when llama.cpp was built with a GPU backend, else none."""
    return -1 if llama_cpp().llama_supports_gpu_offload() else 0


_backend_lock = threading.Lock()
_backend_ready = False


def backend_init(lc: Any) -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            lc.llama_backend_init()
            _backend_ready = True

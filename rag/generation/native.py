"""llama-cpp-python, loaded on first use (never at import time: the model
process must load llama.cpp's libraries before anything else does)."""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

from rag.errors import ConfigurationError
from rag.generation import cbuild

__all__ = ["QUICK_CALLS", "QuickCalls", "backend_init", "cuda_argmax_splits_rows", "default_gpu_layers", "llama_cpp",
           "quiet_log"]


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


def cuda_argmax_splits_rows() -> bool:
    """Whether the CUDA backend of the llama.cpp loaded splits each row of
    one ``ggml_argmax`` across thread blocks: the kernel of
    ``scripts/patches/llama.cpp-argmax-split.patch``, which says so through
    ``ggml_cuda_argmax_splits_rows`` (0 under
    ``GGML_CUDA_ARGMAX_ONE_BLOCK_PER_ROW=1``). Stock llama.cpp gives a row one
    block, and a CPU build has no CUDA backend: False."""
    try:
        from llama_cpp import _ggml

        path = os.path.join(os.path.dirname(_ggml.libggml._name), "libggml-cuda.so")
        if not os.path.exists(path):
            return False
        splits = getattr(ctypes.CDLL(path), "ggml_cuda_argmax_splits_rows", None)
    except (ImportError, OSError, AttributeError):
        return False
    if splits is None:
        return False
    splits.argtypes, splits.restype = [], ctypes.c_int
    return bool(splits())


_backend_lock = threading.Lock()
_backend_ready = False


def backend_init(lc: Any) -> None:
    """llama.cpp's backends, once per process, and its log quiet (``quiet_log``)
    unless ``RAG_LLAMA_VERBOSE`` is set."""
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            lc.llama_backend_init()
            if not os.environ.get("RAG_LLAMA_VERBOSE"):
                quiet_log(lc)
            _backend_ready = True


def quiet_log(lc: Any) -> bool:
    """llama.cpp's log (warnings and errors to stderr, the rest dropped)
    handled in C, by ``batch_greedy.c``'s ``rag_quiet_log``: llama-cpp-python's
    handler is a Python callback for every line, debug lines included, some
    made inside ``llama_decode`` (for each reused CUDA graph), each waiting for
    the GIL. Returns False (its handler stays) where the C helpers are
    unavailable."""
    lib = cbuild.library()
    if lib is None:
        return False
    address = ctypes.cast(lib.rag_quiet_log, ctypes.c_void_p).value
    lc.llama_log_set(lc.llama_log_callback(address), None)
    return True


# llama.cpp calls that return at once (no device work, nothing to wait for;
# the sampled token or logits are read after an explicit llama_synchronize).
QUICK_CALLS = (
    "llama_get_sampled_token_ith",
    "llama_get_logits_ith",
    "llama_memory_seq_rm",
    "llama_sampler_reset",
    "llama_vocab_is_eog",
)


class QuickCalls:
    """``lc`` (llama_cpp), with ``QUICK_CALLS`` made without letting go of the GIL.

    ctypes lets go of the GIL around every foreign call. For a call of a
    microsecond that is a hand-over to any other thread waiting for it, and
    the scheduler makes several per request it places and one per token it
    reads, while the model process's other threads (requests coming in, text
    going out) run Python: each hand-over waits for the other thread to let
    go again. The same functions, bound through ``ctypes.PyDLL`` on the same
    library, keep it (measured on the H200: docs/benchmarks.md, session 9).

    ``llama_decode_held`` is ``llama_decode`` keeping the GIL too, for a GPU
    decode step (next tokens only), where the call returns once the step is
    queued, in well under a millisecond. While it plans the step llama.cpp
    calls back into Python (llama-cpp-python's log callback, for each reused
    CUDA graph; the batch-greedy sampler, when it builds a graph), and each
    call back had to wait for whichever thread of the model process took the
    GIL meanwhile (py-spy on the H200: 16% of llama_decode's time under HTTP
    load, docs/benchmarks.md, session 10). Prompt steps, which run for tens
    of milliseconds, let go of it as before."""

    def __init__(self, lc: Any) -> None:
        self._lc = lc
        lib = lc.llama_cpp._lib
        held = ctypes.PyDLL(lib._name, handle=lib._handle)
        for name in QUICK_CALLS:
            plain = getattr(lc, name)
            quick = held[name]
            quick.argtypes, quick.restype = plain.argtypes, plain.restype
            setattr(self, name, quick)
        decode = held["llama_decode"]
        decode.argtypes, decode.restype = lc.llama_decode.argtypes, lc.llama_decode.restype
        self.llama_decode_held = decode
        # llama_decode_chained (scripts/patches/llama.cpp-chained-decode.patch; a stock build has none):
        # through the CDLL, letting go of the GIL, since it waits for the step before.
        try:
            chained = lib["llama_decode_chained"]
        except AttributeError:
            chained = None
        else:
            chained.argtypes = [*lc.llama_decode.argtypes, ctypes.c_void_p]
            chained.restype = ctypes.c_int32
        self._chained: Any = chained
        self._read_rows: Any = None
        helpers = cbuild.library()
        if helpers is not None:
            read = helpers.rag_sampled_tokens
            read.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p]
            read.restype = ctypes.c_int32
            self._get_token = ctypes.cast(self.llama_get_sampled_token_ith, ctypes.c_void_p)
            self._read_rows = read

    def sampled_tokens(self, ctx: Any, n: int, out: Any) -> bool:
        """The tokens sampled in the graph for batch rows 0 … n-1, into ``out``
        (an int32 NumPy array), in one call; False where that cannot be done
        (no C helpers, or a row without a sampled token)."""
        if self._read_rows is None:
            return False
        return bool(self._read_rows(self._get_token, ctx, n, out.ctypes.data) == n)

    @property
    def chained_available(self) -> bool:
        """Whether the llama.cpp loaded has ``llama_decode_chained``."""
        return self._chained is not None

    def decode_chained(self, ctx: Any, batch: Any, prev: Any) -> int:
        """``llama_decode`` of a batch of next tokens whose ids are the tokens
        sampled in the graph by the decode before (batch row i gets that
        decode's token of row i: the same sequences, in the same order). Its
        work on the host is done while the device still computes that decode;
        then it waits for it, writes its tokens to ``prev`` (an int32 NumPy
        array, rows 0 … n-1) and queues this one."""
        assert self._chained is not None
        return int(self._chained(ctx, batch, prev.ctypes.data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lc, name)

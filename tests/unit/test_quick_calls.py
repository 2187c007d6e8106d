"""rag/generation/native.py's ``QuickCalls``: the scheduler's quick llama.cpp
calls keep the GIL (``ctypes.PyDLL``), and so may llama_decode for a GPU step of
next tokens; every other name is llama_cpp's own."""

from __future__ import annotations

import ctypes

from rag.generation.native import QUICK_CALLS, QuickCalls, llama_cpp


def test_quick_calls_keep_the_gil_and_the_rest_is_llama_cpp() -> None:
    lc = llama_cpp()
    quick = QuickCalls(lc)
    for name in QUICK_CALLS:
        fn, plain = getattr(quick, name), getattr(lc, name)
        assert fn.argtypes == plain.argtypes and fn.restype == plain.restype
        assert fn._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # type: ignore[attr-defined]  # PyDLL: the GIL is kept
        assert not plain._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # type: ignore[attr-defined]
        # The same C function in the same loaded library.
        assert ctypes.cast(fn, ctypes.c_void_p).value == ctypes.cast(plain, ctypes.c_void_p).value
    assert quick.llama_decode is lc.llama_decode and quick.llama_synchronize is lc.llama_synchronize
    # llama_decode keeping the GIL, for a GPU step of next tokens only (scheduler.py).
    held = quick.llama_decode_held
    assert held.argtypes == lc.llama_decode.argtypes and held.restype == lc.llama_decode.restype
    assert held._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # type: ignore[attr-defined]
    assert ctypes.cast(held, ctypes.c_void_p).value == ctypes.cast(lc.llama_decode, ctypes.c_void_p).value

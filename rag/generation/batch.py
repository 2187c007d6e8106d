"""A ``llama_batch`` over NumPy arrays (``Batch``)."""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["Batch"]


class Batch:
    """A ``llama_batch`` over NumPy arrays, filled with vectorised writes (a
    long prompt is thousands of tokens; per-element ctypes writes would show)."""

    def __init__(self, llama_cpp: Any, capacity: int, n_seq: int) -> None:
        import numpy as np

        self.np = np
        self.capacity = capacity
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        self.seq_values = np.arange(n_seq, dtype=np.int32)
        base = self.seq_values.ctypes.data
        self.seq_ptr_of = [base + 4 * s for s in range(n_seq)]
        self.seq_id = np.zeros(capacity, dtype=np.uintp)
        self.n = 0
        self.raw = llama_cpp.llama_batch()
        self.raw.token = self.token.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.raw.embd = None
        self.raw.pos = self.pos.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.raw.n_seq_id = self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.raw.seq_id = ctypes.cast(
            self.seq_id.ctypes.data, ctypes.POINTER(ctypes.POINTER(ctypes.c_int32))
        )
        self.raw.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))

    def clear(self) -> None:
        self.n = 0

    @property
    def room(self) -> int:
        return self.capacity - self.n

    def add_one(self, token: int, pos: int, seq: int, output: bool) -> int:
        i = self.n
        self.token[i] = token
        self.pos[i] = pos
        self.seq_id[i] = self.seq_ptr_of[seq]
        self.logits[i] = output
        self.n = i + 1
        return i

    def add_run(self, tokens: list[int], pos0: int, seq: int, output_last: bool) -> int:
        i, n = self.n, len(tokens)
        self.token[i : i + n] = tokens
        self.pos[i : i + n] = self.np.arange(pos0, pos0 + n, dtype=self.np.int32)
        self.seq_id[i : i + n] = self.seq_ptr_of[seq]
        self.logits[i : i + n] = 0
        self.logits[i + n - 1] = output_last
        self.n = i + n
        return i + n - 1

    def as_raw(self) -> Any:
        self.raw.n_tokens = self.n
        return self.raw


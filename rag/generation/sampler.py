"""``BatchGreedy``: greedy sampling of a whole batch inside llama.cpp's decode
graph, one argmax over every sequence's logits (a llama.cpp backend
sampler of our own: in C, ``batch_greedy.c``, where it can be compiled, else
written against ggml through ctypes)."""

from __future__ import annotations

import ctypes
import logging
from typing import Any

from rag.generation import cbuild

__all__ = ["BatchGreedy", "PerGraph"]

log = logging.getLogger(__name__)


class _GgmlTensor(ctypes.Structure):
    """``struct ggml_tensor`` of the ggml in llama-cpp-python 0.3.36 (read only;
    ``BatchGreedy`` checks the layout against ggml itself before using it)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


class _GgmlInitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


class _RagGgml(ctypes.Structure):
    """``struct rag_ggml`` of ``batch_greedy.c``: the ggml functions it calls."""

    _fields_ = [(name, ctypes.c_void_p) for name in (
        "ggml_argmax", "ggml_get_rows", "ggml_reshape_1d", "ggml_reshape_2d", "ggml_reshape_3d", "ggml_cast",
        "ggml_scale", "ggml_add", "ggml_view_1d", "ggml_is_contiguous", "ggml_nelements",
    )]


class PerGraph:
    """What the batch-greedy samplers of one decode graph share, forgotten when
    the next graph begins.

    llama.cpp applies every attached chain once per graph it builds (a chain
    with no output in the batch to a dummy row), all in one loop, so a sampler
    applied a second time means a new graph. llama.cpp says so through each
    chain's ``backend_reset`` as well, but it calls that for every chain (64
    with 64 slots) and each call into Python waits for the GIL, which another
    thread of the model process may hold. A chain made since (``forget``)
    starts afresh too: its sampler was never applied before."""

    def __init__(self) -> None:
        self.shared: dict[tuple[int, int], int] = {}
        self._applied: set[int] = set()

    def applying(self, sampler: int) -> dict[tuple[int, int], int]:
        """The shared tensors of the graph ``sampler`` is being applied in."""
        if sampler in self._applied:
            self.forget()
        self._applied.add(sampler)
        return self.shared

    def forget(self) -> None:
        self.shared.clear()
        self._applied.clear()


class BatchGreedy:
    """Greedy sampling of every sequence of a batch with one argmax.

    llama.cpp's own greedy backend sampler adds one argmax per sequence to the
    decode graph, each over that sequence's 262,144 logits; on CUDA each is a
    one-block kernel, and they run one after the other. This sampler (one
    instance in each slot's chain, all sharing this object) takes the argmax of
    the whole ``[n_vocab, rows]`` logits tensor once per graph, one block per
    row in parallel, and hands each sequence a view of its row's result.

    It needs to see which logits tensor a sequence's row is a view of, so it
    reads ``struct ggml_tensor``; ``available`` is False (and the stock greedy
    sampler is used) unless that layout checks out against ggml itself.

    ``native``: the samplers are ``batch_greedy.c``'s (``native=True`` asks
    for them; they are used where the library builds and its structs match
    these), so that building a graph never calls into Python; else each
    application is a Python callback.

    ``one_argmax``: the batch's argmax is one ``ggml_argmax`` node, for a CUDA
    build whose kernel splits each row across thread blocks itself
    (``native.cuda_argmax_splits_rows``); else two stages of stock ggml ops
    (``_argmax_rows``).
    """

    def __init__(self, lc: Any, native: bool = True, one_argmax: bool = False) -> None:
        self._lc = lc
        self.one_argmax = one_argmax
        self._graph = PerGraph()
        self.available = False
        self.native = False
        self._lib: Any = None
        self._shared: int | None = None
        try:
            from llama_cpp import _ggml

            # Bound through PyDLL: these calls only add nodes to a graph, and the
            # callbacks making them run with the GIL taken on entry (llama_decode
            # let go of it). Through the CDLL each call would let go of it and
            # take it back, waiting for any other thread that took it meanwhile.
            g = ctypes.PyDLL(_ggml.libggml._name, handle=_ggml.libggml._handle)
            fns = {
                "ggml_argmax": ([ctypes.c_void_p, ctypes.c_void_p], ctypes.c_void_p),
                "ggml_get_rows": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p], ctypes.c_void_p),
                "ggml_reshape_2d": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64],
                                    ctypes.c_void_p),
                "ggml_reshape_3d": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                     ctypes.c_int64], ctypes.c_void_p),
                "ggml_cast": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int], ctypes.c_void_p),
                "ggml_scale": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float], ctypes.c_void_p),
                "ggml_add": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p], ctypes.c_void_p),
                "ggml_view_1d": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t], ctypes.c_void_p),
                "ggml_reshape_1d": ([ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64], ctypes.c_void_p),
                "ggml_is_contiguous": ([ctypes.c_void_p], ctypes.c_bool),
                "ggml_nelements": ([ctypes.c_void_p], ctypes.c_int64),
                "ggml_get_name": ([ctypes.c_void_p], ctypes.c_void_p),
                "ggml_new_tensor_2d": ([ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64],
                                       ctypes.c_void_p),
                "ggml_init": ([_GgmlInitParams], ctypes.c_void_p),
                "ggml_free": ([ctypes.c_void_p], None),
            }
            for name, (argtypes, restype) in fns.items():
                fn = getattr(g, name)
                fn.argtypes, fn.restype = argtypes, restype
            self._g = g
            self.available = self._layout_ok()
        except (ImportError, OSError, AttributeError) as exc:
            log.info("batched greedy sampling unavailable: %s", exc)
        if not self.available:
            return
        if native and self._load_native():
            return

        iface_fields = [(name, ftype) for name, ftype in lc.llama_sampler_i._fields_]
        # The name callback returns a pointer we own (a c_char_p result from a
        # Python callback would have no owner).
        name_type = ctypes.CFUNCTYPE(ctypes.c_void_p, lc.llama_sampler_p_ctypes)
        iface_fields[0] = ("name", name_type)

        class _Iface(ctypes.Structure):
            _fields_ = iface_fields

        self._name = ctypes.create_string_buffer(b"batch-greedy")
        self._callbacks = {
            "name": name_type(lambda _s: ctypes.addressof(self._name)),
            "apply": lc.llama_sampler_i_apply(self._apply_cpu),
            "backend_init": lc.llama_sampler_i_backend_init(lambda _s, _b, _n: True),
            "backend_apply": lc.llama_sampler_i_backend_apply(self._apply),
            # no backend_reset: PerGraph sees a new graph by itself
        }
        self._iface = _Iface(**self._callbacks)

    def _load_native(self) -> bool:
        lib = cbuild.library()
        if lib is None:
            return False
        layout = (ctypes.c_size_t * 4)()
        lib.rag_bg_layout(layout)
        expected = (ctypes.sizeof(_GgmlTensor), _GgmlTensor.view_src.offset, _GgmlTensor.view_offs.offset,
                    ctypes.sizeof(self._lc.llama_sampler_i))
        if tuple(layout) != expected:
            log.warning("batch_greedy.c's structs do not match this llama.cpp (%s, expected %s); "
                        "sampling through Python", tuple(layout), expected)
            return False
        lib.rag_bg_shared_new.argtypes = [ctypes.POINTER(_RagGgml), ctypes.c_int]
        lib.rag_bg_shared_new.restype = ctypes.c_void_p
        lib.rag_bg_shared_free.argtypes, lib.rag_bg_shared_free.restype = [ctypes.c_void_p], None
        lib.rag_bg_new.argtypes, lib.rag_bg_new.restype = [ctypes.c_void_p], ctypes.c_void_p
        lib.rag_bg_iface.argtypes, lib.rag_bg_iface.restype = [], ctypes.c_void_p
        fns = _RagGgml(*(ctypes.cast(getattr(self._g, field[0]), ctypes.c_void_p).value for field in _RagGgml._fields_))
        shared = lib.rag_bg_shared_new(ctypes.byref(fns), int(self.one_argmax))
        if not shared:
            return False
        self._lib, self._shared, self.native = lib, shared, True
        return True

    def close(self) -> None:
        """Frees what the C samplers share; after every chain was freed."""
        if self._shared is not None:
            self._lib.rag_bg_shared_free(self._shared)
            self._shared = None

    def _layout_ok(self) -> bool:
        """Whether ``_GgmlTensor`` reads this ggml's tensors right: a view's
        parent and offset, sizes, strides and the name's place."""
        g = self._g
        ctx = g.ggml_init(_GgmlInitParams(1 << 16, None, True))
        if not ctx:
            return False
        try:
            parent = g.ggml_new_tensor_2d(ctx, 0, 8, 3)  # GGML_TYPE_F32
            view = g.ggml_view_1d(ctx, parent, 8, 64)
            p = _GgmlTensor.from_address(parent)
            v = _GgmlTensor.from_address(view)
            return (
                tuple(p.ne) == (8, 3, 1, 1)
                and tuple(p.nb[:2]) == (4, 32)
                and v.view_src == parent
                and v.view_offs == 64
                and g.ggml_get_name(view) == view + _GgmlTensor.name.offset
            )
        finally:
            g.ggml_free(ctx)

    def chain(self) -> Any:
        """A new sampler chain holding one batch-greedy sampler (llama.cpp
        attaches chains, one per sequence)."""
        lc = self._lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if self.native:
            iface = ctypes.cast(self._lib.rag_bg_iface(), ctypes.POINTER(lc.llama_sampler_i))
            context = self._lib.rag_bg_new(self._shared)
            if not context:
                raise MemoryError("rag_bg_new")
            sampler = lc.llama_sampler_init(iface, context)
        else:
            iface = ctypes.cast(ctypes.pointer(self._iface), ctypes.POINTER(lc.llama_sampler_i))
            sampler = lc.llama_sampler_init(iface, None)
        lc.llama_sampler_chain_add(chain, sampler)
        self._graph.forget()
        return chain

    def _apply(self, smpl: Any, ctx: int, _gf: int, data: Any) -> None:
        g = self._g
        shared = self._graph.applying(ctypes.cast(smpl, ctypes.c_void_p).value or 0)
        d = data.contents
        logits = d.logits
        t = _GgmlTensor.from_address(logits)
        parent = t.view_src
        if parent:
            p = _GgmlTensor.from_address(parent)
            row_bytes = p.nb[1]
            if (p.ne[0] == t.ne[0] and p.ne[2] == 1 and p.ne[3] == 1 and t.ne[1] == 1
                    and row_bytes and t.view_offs % row_bytes == 0 and g.ggml_is_contiguous(parent)):
                key = (ctx, parent)
                argmax = shared.get(key)
                if argmax is None:
                    argmax = shared[key] = self._argmax_rows(ctx, parent, int(p.ne[0]), int(p.ne[1]))
                d.sampled = g.ggml_view_1d(ctx, argmax, 1, 4 * (t.view_offs // row_bytes))
                return
        d.sampled = g.ggml_argmax(ctx, g.ggml_reshape_1d(ctx, logits, g.ggml_nelements(logits)))

    def _argmax_rows(self, ctx: int, logits: int, n_vocab: int, rows: int) -> int:
        """The argmax of each row of ``logits`` [n_vocab, rows] as an I32
        tensor [rows]. With ``one_argmax``, one ``ggml_argmax``. Stock CUDA's
        argmax gives each row to one thread block, which then reads all 262,144
        values alone; in two stages instead: the argmax of each chunk of ``C``
        values (many blocks), the chunk maxima gathered (get_rows), their
        argmax, and the token id ``chunk * C + offset`` computed in F32 (exact
        below 2**24)."""
        g = self._g
        chunk = next((c for c in (1024, 512, 256) if n_vocab % c == 0 and n_vocab // c >= 8), 0)
        if self.one_argmax or not chunk:
            return int(g.ggml_argmax(ctx, logits))
        n_chunks = n_vocab // chunk
        m = n_chunks * rows
        f32, i32 = 0, 26  # GGML_TYPE_F32, GGML_TYPE_I32
        within = g.ggml_argmax(ctx, g.ggml_reshape_2d(ctx, logits, chunk, m))  # [m]: offset in its chunk
        maxima = g.ggml_get_rows(ctx, g.ggml_reshape_3d(ctx, logits, 1, chunk, m), g.ggml_reshape_2d(ctx, within, 1, m))
        best = g.ggml_argmax(ctx, g.ggml_reshape_2d(ctx, maxima, n_chunks, rows))  # [rows]: the best chunk
        offset = g.ggml_get_rows(ctx, g.ggml_reshape_3d(ctx, within, 1, n_chunks, rows),
                                 g.ggml_reshape_2d(ctx, best, 1, rows))  # [1, 1, rows]
        token = g.ggml_add(ctx, g.ggml_scale(ctx, g.ggml_cast(ctx, best, f32), float(chunk)),
                           g.ggml_cast(ctx, g.ggml_reshape_1d(ctx, offset, rows), f32))
        return int(g.ggml_cast(ctx, token, i32))

    def _apply_cpu(self, _smpl: Any, cur_p: Any) -> None:
        import numpy as np

        arr = cur_p.contents
        rows = np.ctypeslib.as_array(ctypes.cast(arr.data, ctypes.POINTER(ctypes.c_float)), shape=(arr.size, 3))
        arr.selected = int(rows[:, 1].argmax())

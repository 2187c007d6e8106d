"""The scheduler thread of one llama.cpp context (``Scheduler``).

It is the only thread that ever touches the context (a llama.cpp context is
not thread-safe). Requests from any thread are handed to it; at every step it
packs the next token of every running sequence, and as much waiting prompt as
fits, into one multi-sequence ``llama_batch`` and decodes them together, so
concurrent requests share each pass over the weights (batched decoding).

On a GPU ``llama_decode`` only queues the work: the scheduler handles the text
of one step (detokenising, stop strings, callbacks) while the next computes.

Prompt admission (``prompt_steps``). llama.cpp splits a step into
micro-batches (n_ubatch tokens) and, with one KV stream per slot, puts
several sequences into one micro-batch only when their ids are consecutive,
and then with the same number of tokens from each (``split_equal``). A step
that mixes one next token of running sequences with prompt chunks, or
prompt chunks of unequal lengths from neighbouring slots, thus runs extra
slivers of micro-batches, each costing a pass over the weights. With
``prompt_steps`` > 0 the waiting prompts go first, in steps of their own
(at most ``prompt_steps`` in a row while sequences wait for their next
token), packed as llama-batched-bench packs them: whole micro-batches of one
sequence each (slots in descending order, so that no two share one), a
prompt cut only at a micro-batch boundary; running sequences take the
lowest free slots, so that their next tokens go in one micro-batch. With
0, prompts fill what the next tokens of running sequences leave of every
step, as they arrive (the policy before; it stalls no stream, and on a CPU,
where the work is the tokens, it costs nothing more).

Prompt reuse: each slot remembers the tokens in its KV cache; a new request
goes to the free slot sharing the longest prefix with it, or copies that prefix
from whichever slot holds it (``llama_memory_seq_cp``), and only the rest of
the prompt is evaluated.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rag.errors import BackendError
from rag.generation.batch import Batch
from rag.generation.job import GenerationJob
from rag.generation.types import Sampling

__all__ = ["Scheduler", "Slot"]

log = logging.getLogger(__name__)


@dataclass
class Slot:
    seq_id: int
    sampler: Any  # greedy, for sampling on the CPU side
    cached: list[int] = field(default_factory=list)  # tokens in this sequence's KV cache
    job: GenerationJob | None = None
    last_used: float = 0.0
    backend_chain: Any = None  # greedy, attached to the context (at its creation, or since random sampling)
    owned_chain: Any = None  # backend_chain when this scheduler made it (freed here)
    custom: Any = None  # the current job's own sampler chain (random sampling)
    custom_on_backend: bool = False  # attached to the context in place of backend_chain

    @property
    def resident(self) -> int:
        """Tokens of ``cached`` already in the KV cache: a running sequence's
        last sampled token enters it only with the next step."""
        return self.job.n_past if self.job is not None else len(self.cached)


class Scheduler:
    """Decodes the jobs handed to ``put`` on a thread of its own, until
    ``stop`` (or a failure, after which ``closed`` is True)."""

    def __init__(
        self,
        lc: Any,
        ctx: Any,
        vocab: Any,
        slots: list[Slot],
        batch: Batch,
        *,
        n_vocab: int,
        piece: Callable[[int], bytes],
        prompt_cache: bool,
        min_copy: int,
        backend_sampling: bool,
        overlap: bool,
        name: str,
        greedy_chain: Callable[[], Any] | None = None,
        prompt_steps: int = 0,
        n_ubatch: int = 512,
    ) -> None:
        self._lc = lc
        self._ctx = ctx
        self._mem = lc.llama_get_memory(ctx)
        self._vocab = vocab
        self._slots = slots
        self._batch = batch
        self._np = batch.np
        self.n_vocab = n_vocab
        self._piece = piece
        self.prompt_cache = prompt_cache
        self._min_copy = min_copy
        self._backend_sampling = backend_sampling
        self._overlap = overlap
        self._greedy_chain = greedy_chain  # a new greedy chain for the decode graph
        self._prompt_steps = prompt_steps
        self._n_ubatch = max(1, min(n_ubatch, batch.capacity))
        self._held = 0  # prompt-only steps in a row while sequences waited for their next token
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._incoming: queue.SimpleQueue[GenerationJob | None] = queue.SimpleQueue()
        self._waiting: list[GenerationJob] = []
        self._wake = threading.Event()
        self.closed = False
        # Called on this thread once the text of a step has gone to the jobs'
        # callbacks (the model process sends a step's text in one message).
        self.on_text_handled: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, job: GenerationJob) -> None:
        self._incoming.put(job)
        self._wake.set()

    @property
    def active(self) -> int:
        return sum(1 for s in self._slots if s.job is not None) + len(self._waiting) + self._incoming.qsize()

    def stop(self) -> None:
        """Cancels the running jobs, fails the waiting ones, ends the thread."""
        self.closed = True
        if self._thread.is_alive():
            self._incoming.put(None)
            self._wake.set()
            self._thread.join(timeout=60)
        if not self._thread.is_alive():
            lc = self._lc
            for slot in self._slots:
                if slot.custom_on_backend:
                    lc.llama_set_sampler(self._ctx, slot.seq_id, None)
                for chain in (slot.custom, slot.owned_chain):
                    if chain is not None:
                        lc.llama_sampler_free(chain)
                slot.custom = slot.owned_chain = None
                slot.custom_on_backend = False

    def _use_sampling(self, slot: Slot, sampling: Sampling | None) -> None:
        """The slot's sampler for its next job: greedy (what the context was
        created with), or a chain of the job's own, attached to the context in
        place of greedy where llama.cpp can run it in the decode graph (a
        change of a sequence's sampler makes llama.cpp plan its graph again)."""
        lc = self._lc
        if slot.custom is not None:
            if slot.custom_on_backend:
                # A chain is set up for the graph once: greedy comes back as a new one.
                assert self._greedy_chain is not None
                fresh = self._greedy_chain()
                lc.llama_set_sampler(self._ctx, slot.seq_id, fresh)
                if slot.owned_chain is not None:
                    lc.llama_sampler_free(slot.owned_chain)
                slot.backend_chain = slot.owned_chain = fresh
            lc.llama_sampler_free(slot.custom)
            slot.custom, slot.custom_on_backend = None, False
        if sampling is None:
            return
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if sampling.top_k > 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(sampling.top_k))
        if sampling.top_p < 1.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(sampling.top_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(sampling.temperature))
        seed = lc.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
        slot.custom = chain
        if self._backend_sampling and self._greedy_chain is not None:
            slot.custom_on_backend = bool(lc.llama_set_sampler(self._ctx, slot.seq_id, chain))

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
            self.closed = True
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
                        slot.job.finish("cancelled")
                return False
            self._waiting.append(job)

    def _admit(self) -> None:
        lc = self._lc
        while self._waiting:
            job = self._waiting[0]
            if job.cancelled:
                self._waiting.pop(0)
                job.finish("cancelled")
                continue
            free = [s for s in self._slots if s.job is None]
            if not free:
                return
            self._waiting.pop(0)
            if self._prompt_steps > 0:
                # The lowest free slot keeps the running sequences' ids together
                # (one micro-batch for their next tokens); a prefix cached
                # elsewhere is copied below (cheap on a GPU).
                slot = min(free, key=lambda s: s.seq_id)
                keep = _common_prefix(slot.cached, job.tokens)
            else:
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
            if job.sampling is not None or slot.custom is not None:
                self._use_sampling(slot, job.sampling)
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

    def _fill(self) -> list[Slot]:
        """Packs the batch (see the module's note on prompt admission).
        Returns the slots with an output in it."""
        batch = self._batch
        batch.clear()
        if self._prompt_steps <= 0:
            return self._fill_mixed()
        outputs: list[Slot] = []
        decoding = [s for s in self._slots if s.job is not None and s.job.n_past >= len(s.job.tokens)
                    and s.job.ending is None]
        prompts = [s for s in self._slots if s.job is not None and s.job.n_past < len(s.job.tokens)]
        if prompts and decoding and self._held < self._prompt_steps:
            self._held += 1
            decoding = []  # they wait for this step
        elif decoding:
            self._held = 0
        for slot in decoding:
            self._add_next_token(slot, outputs)
        for slot in sorted(prompts, key=lambda s: -s.seq_id):
            job = slot.job
            assert job is not None
            if job.cancelled:
                self._release(slot, "cancelled")
                continue
            left = len(job.tokens) - job.n_past
            take = min(batch.room, left)
            if take < left:
                take -= take % self._n_ubatch  # a part ends at a micro-batch boundary
            if take > 0:
                self._add_prompt_run(slot, take, outputs)
        return outputs

    def _fill_mixed(self) -> list[Slot]:
        """The next token of every running sequence first, so decoding never
        stalls behind a long prompt; prompts fill what is left."""
        batch = self._batch
        outputs: list[Slot] = []
        for slot in self._slots:
            job = slot.job
            if job is None or job.n_past < len(job.tokens) or job.ending is not None:
                continue
            self._add_next_token(slot, outputs)
        for slot in self._slots:
            job = slot.job
            if job is None or job.n_past >= len(job.tokens) or batch.room == 0:
                continue
            if job.cancelled:
                self._release(slot, "cancelled")
                continue
            self._add_prompt_run(slot, min(batch.room, len(job.tokens) - job.n_past), outputs)
        return outputs

    def _add_next_token(self, slot: Slot, outputs: list[Slot]) -> None:
        job = slot.job
        assert job is not None
        if job.cancelled:
            self._release(slot, "cancelled")
            return
        job.out_index = self._batch.add_one(job.last_token, job.n_past, slot.seq_id, True)
        job.n_past += 1
        outputs.append(slot)

    def _add_prompt_run(self, slot: Slot, take: int, outputs: list[Slot]) -> None:
        job = slot.job
        assert job is not None
        chunk = job.tokens[job.n_past : job.n_past + take]
        last = job.n_past + take == len(job.tokens)
        index = self._batch.add_run(chunk, job.n_past, slot.seq_id, last)
        slot.cached.extend(chunk)
        job.n_past += take
        if last:
            job.out_index = index
            outputs.append(slot)

    def _launch(self, outputs: list[Slot]) -> bool:
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

    def _collect(self, outputs: list[Slot]) -> None:
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
                if not job.emit(job.decoder.decode(piece)):
                    job.ending = "cancelled" if job.cancelled else "stop"
                    break
        if self.on_text_handled is not None:
            self.on_text_handled()

    def _sample(self, slot: Slot) -> int:
        job = slot.job
        assert job is not None
        if self._backend_sampling and (slot.custom is None or slot.custom_on_backend):
            # Sampling ran inside llama_decode's graph; only the id is read.
            token = int(self._lc.llama_get_sampled_token_ith(self._ctx, job.out_index))
            if token >= 0:
                return token
        if slot.custom is not None:
            return int(self._lc.llama_sampler_sample(slot.custom, self._ctx, job.out_index))
        logits = self._lc.llama_get_logits_ith(self._ctx, job.out_index)
        row = self._np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        token = int(row.argmax())
        if job.logprobs is not None:
            # log softmax of the chosen (largest) logit: -log sum exp(l - max)
            top = float(row[token])
            job.logprobs.append(-float(self._np.log(self._np.exp(row - top).sum())))
        return token

    def _release(self, slot: Slot, reason: str) -> None:
        job = slot.job
        slot.job = None
        slot.last_used = time.perf_counter()
        if job is None:
            return
        # Keep the KV cache of what was evaluated: the prompt and all
        # generated tokens but the last (never fed back).
        slot.cached = slot.cached[: job.n_past]
        job.finish(reason)


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


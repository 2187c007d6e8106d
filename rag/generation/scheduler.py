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

Where a prompt goes and how much of it the KV cache already holds (prompt
reuse), and each slot's sampler chain: ``rag/generation/slots.py``.
"""

from __future__ import annotations

import bisect
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from rag.errors import BackendError
from rag.generation.batch import Batch
from rag.generation.extractive import token_logprob
from rag.generation.job import GenerationJob
from rag.generation.slots import Slot, place
from rag.generation.trace import StepTrace

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)


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
        trace: StepTrace | None = None,
        min_keep: int = 0,
        chain: bool = False,
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
        self._min_keep = min_keep
        self.backend_sampling = backend_sampling  # sampled inside the decode graph
        self._overlap = overlap
        # Steps of next tokens queued before the last one's tokens are known (llama_decode_chained, a patch of
        # llama.cpp: native.QuickCalls.decode_chained); where the llama.cpp loaded has it, on a GPU.
        self._chain = chain and overlap and backend_sampling and bool(getattr(lc, "chained_available", False))
        self._greedy_chain = greedy_chain  # a new greedy chain for the decode graph
        self._prompt_steps = prompt_steps
        self._n_ubatch = max(1, min(n_ubatch, batch.capacity))
        self._held = 0  # prompt-only steps in a row while sequences waited for their next token
        self._trace = trace
        self._decodes = 0  # next tokens of running sequences in the step being packed
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._incoming: queue.SimpleQueue[GenerationJob | None] = queue.SimpleQueue()
        self._waiting: list[GenerationJob] = []
        # The slots holding a job, by sequence id: every step walks these, not all slots.
        self._busy: list[Slot] = []
        self._stopping = False  # stop() was asked: ends the thread at the next turn
        self._chains_due: dict[int, Slot] = {}  # placed while a step computed: chain to change first
        # A step of next tokens queued by _collect before its bookkeeping: its outputs, began, called,
        # whether every one of its tokens is a plain greedy one sampled in the graph (_steady), and the
        # jobs its rows were for (a job may end, and another take its slot, while it computes).
        self._ahead: tuple[list[Slot], float, float, bool, list[GenerationJob | None]] | None = None
        self._plain = False  # what _steady found
        self._tokens = batch.np.zeros(batch.capacity, dtype=batch.np.int32)  # a step's tokens, read at once
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
        return len(self._busy) + len(self._waiting) + self._incoming.qsize()

    def stop(self) -> None:
        """Cancels the running jobs, fails the waiting ones, ends the thread."""
        self.closed = True
        if self._thread.is_alive():
            self._incoming.put(None)
            self._wake.set()
            self._thread.join(timeout=60)
        if not self._thread.is_alive():
            for slot in self._slots:
                slot.free_samplers(self._lc, self._ctx)

    # --- scheduler -----------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                if self._ahead is None:  # else a step is computing: requests are placed meanwhile (_step)
                    self._take_incoming()
                    if self._stopping:
                        self._shut()
                        break
                    self._admit()
                    if not self._busy:
                        if self._trace is not None:
                            self._trace.flush()
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

    def _take_incoming(self) -> None:
        """Moves the jobs handed to ``put`` to the waiting list (``stop``'s
        mark sets ``_stopping``)."""
        while not self._stopping:
            try:
                job = self._incoming.get_nowait()
            except queue.Empty:
                return
            if job is None:
                self._stopping = True
            else:
                self._waiting.append(job)

    def _shut(self) -> None:
        for waiting in self._waiting:
            waiting.future.set_exception(BackendError("the model was closed"))
        for slot in self._slots:
            if slot.job is not None:
                slot.job.finish("cancelled")

    def _admit(self, in_flight: bool = False) -> None:
        """Places waiting jobs in free slots (``place``: on the host, a slot's
        KV cells cleared, or a prefix kept or copied). ``in_flight``: a step
        is computing on the device meanwhile (placing a burst of 16 prompts
        took 3-4 ms between two steps on the H200's host); a slot's sampler
        chain then changes at the next step's start, not under the graph in
        flight."""
        while self._waiting:
            job = self._waiting[0]
            if job.cancelled:
                self._waiting.pop(0)
                job.finish("cancelled")
                continue
            placed = place(
                self._lc, self._mem, job, self._slots,
                lowest_free=self._prompt_steps > 0, prompt_cache=self.prompt_cache, min_copy=self._min_copy,
                min_keep=self._min_keep,
            )
            if placed is None:
                return
            self._waiting.pop(0)
            slot, keep = placed
            slot.cached = job.tokens[:keep]
            slot.job = job
            bisect.insort(self._busy, slot, key=lambda s: s.seq_id)
            slot.last_used = time.perf_counter()
            self._lc.llama_sampler_reset(slot.sampler)
            if job.sampling is not None or slot.custom is not None:
                if in_flight:
                    self._chains_due[slot.seq_id] = slot
                else:
                    self._use_sampling(slot)
            job.slot = slot.seq_id
            job.n_past = keep
            job.cached = keep
            job.started = time.perf_counter()

    def _use_sampling(self, slot: Slot) -> None:
        assert slot.job is not None
        slot.use_sampling(self._lc, self._ctx, slot.job.sampling, self._greedy_chain, self.backend_sampling)

    def _step(self) -> None:
        """One decoding step. On a GPU ``llama_decode`` only queues the work,
        so the text of the previous step's tokens (detokenising, stop strings,
        callbacks) is handled while the device computes this one; a sequence
        whose stop string shows up then has one token decoded in vain. On a
        CPU the decode is the work itself: text first, then the step, and a
        stopped sequence costs nothing more."""
        plain = False
        if self._ahead is not None:  # queued by the last step's _collect
            outputs, began, called, plain, jobs = self._ahead
            self._ahead = None
            launched = True
        else:
            for slot in self._chains_due.values():
                if slot.job is not None:
                    self._use_sampling(slot)
            self._chains_due.clear()
            if not self._overlap:
                self._drain()
            began = time.perf_counter()
            outputs = self._fill()
            jobs = [slot.job for slot in outputs]
            launched = self._batch.n > 0 and self._launch(outputs)
            called = time.perf_counter()
        if self._overlap:
            if launched:
                # Requests that came while the last step ran are placed while this one computes.
                self._take_incoming()
                self._admit(in_flight=True)
            self._drain()
        if launched:
            collected = self._collect(outputs, jobs, plain)
            if self._trace is not None:
                n = self._batch.n
                self._trace.record(began, called, collected, n, n - self._decodes, len(outputs))
        for slot in [s for s in self._busy if s.job is not None and s.job.ending is not None and not s.job.unsent]:
            assert slot.job is not None and slot.job.ending is not None
            self._release(slot, slot.job.ending)

    def _fill(self) -> list[Slot]:
        """Packs the batch (see the module's note on prompt admission).
        Returns the slots with an output in it."""
        batch = self._batch
        batch.clear()
        self._decodes = 0
        if self._prompt_steps <= 0:
            return self._fill_mixed()
        outputs: list[Slot] = []
        decoding = [s for s in self._busy if s.job is not None and s.job.n_past >= len(s.job.tokens)
                    and s.job.ending is None]
        prompts = [s for s in self._busy if s.job is not None and s.job.n_past < len(s.job.tokens)]
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
        for slot in list(self._busy):
            job = slot.job
            if job is None or job.n_past < len(job.tokens) or job.ending is not None:
                continue
            self._add_next_token(slot, outputs)
        for slot in list(self._busy):
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
        self._decodes += 1
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
        # A GPU step of next tokens only returns once queued: it keeps the GIL
        # (native.QuickCalls.llama_decode_held); anything longer lets go of it.
        held = self._overlap and self._decodes == self._batch.n
        decode = lc.llama_decode_held if held else lc.llama_decode
        rc = decode(self._ctx, self._batch.as_raw())
        if rc == 0:
            return True
        self._failed(rc, outputs)
        return False

    def _failed(self, rc: int, outputs: list[Slot]) -> None:
        # Cannot happen while every slot stays within n_ctx; if it does,
        # fail the running requests, start afresh and go on serving.
        log.error("llama_decode returned %d; failing %d requests", rc, len(outputs))
        self._lc.llama_memory_clear(self._mem, True)
        self._busy.clear()
        for slot in self._slots:
            slot.cached = []
            job = slot.job
            slot.job = None
            if job is not None and not job.future.done():
                job.future.set_exception(BackendError(f"llama_decode failed with {rc}"))

    def _collect(self, outputs: list[Slot], jobs: list[GenerationJob | None], plain: bool = False) -> float:
        """Reads the step's sampled tokens (waiting for the device) and decides
        what it can from the token ids alone; the text comes in ``_drain``.
        Returns when the tokens were read. ``jobs``: the job of each output
        row when the step was queued (a row whose slot has another job since
        is not wanted). ``plain``: a step queued ahead whose every token is a
        greedy one sampled in the graph, in rows 0 … n-1: read in one call
        (``QuickCalls.sampled_tokens``) where that can be done.

        When every sequence of a step of next tokens goes on and nothing
        waits, the next step goes to the device first (``_ahead``): its batch
        is this one with the new tokens, one position on, and what follows
        here runs while it computes. Chained (``_chain``, a plain step): that
        next step is even queued before this one's tokens are known,
        llama.cpp taking them on the device's side
        (``QuickCalls.decode_chained``), so that its work on the host
        (llama_decode's, 0.4 ms a step at 16 streams and 1.9 ms at 64 on the
        H100) runs while this step computes; a sequence that ends with this
        step's token then has one token decoded in vain."""
        lc = self._lc
        n = len(outputs)
        ahead = False
        if plain and self._chain and self._chainable(outputs, jobs):
            began = time.perf_counter()
            self._batch.pos[:n] += 1
            rc = lc.decode_chained(self._ctx, self._batch.as_raw(), self._tokens)  # waits, letting go of the GIL
            now = time.perf_counter()
            if rc != 0:
                self._failed(rc, outputs)
                return now
            tokens: list[int] = self._tokens[:n].tolist()
            self._batch.token[:n] = tokens
            self._ahead = (outputs, began, now, True, jobs)
            ahead = True
        else:
            lc.llama_synchronize(self._ctx)  # the wait, letting go of the GIL; the reads below are quick
            if plain and self.backend_sampling and lc.sampled_tokens(self._ctx, n, self._tokens):
                tokens = self._tokens[:n].tolist()
            else:
                tokens = [self._sample(slot) for slot in outputs]
            now = time.perf_counter()  # after sampling: llama_decode may return before the device is done
            ahead = self._overlap and self._steady(outputs, jobs, tokens)
            if ahead:
                began = time.perf_counter()
                self._batch.token[:n] = tokens
                self._batch.pos[:n] += 1
                if self._launch(outputs):
                    self._ahead = (outputs, began, time.perf_counter(), self._plain, jobs)
        for slot, launched_for, token in zip(outputs, jobs, tokens, strict=True):
            job = slot.job
            if job is None or job is not launched_for or job.ending is not None:
                continue  # stopped (or its slot passed on) while this step ran: the token is not wanted
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
            if ahead:
                job.n_past += 1  # the token is in the step already queued
            job.unsent.append(token)
            # The sampled token enters the KV cache with the next step.
            slot.cached.append(token)
            if job.produced >= job.max_tokens:
                job.ending = "length"
        return now

    def _steady(self, outputs: list[Slot], jobs: list[GenerationJob | None], tokens: list[int]) -> bool:
        """Whether the step after this one holds just the same sequences' next
        tokens: this one did, every sequence goes on (no end of generation,
        no length reached, no cancel or stop), and no request waits to be
        placed or has a sampler chain to change. Sets ``_plain``: whether every
        token of that step will be a plain greedy one (no sampler chain of its
        own, no copy constraint, no log-probabilities)."""
        if not self._alone(outputs):
            return False
        plain = True
        for slot, launched_for, token in zip(outputs, jobs, tokens, strict=True):
            job = slot.job
            if (job is None or job is not launched_for or job.ending is not None or job.cancelled
                    or job.produced + 1 >= job.max_tokens):
                return False
            if slot.custom is not None or job.copy is not None or job.logprobs is not None:
                plain = False
            if not job.ignore_eog:
                is_eog = self._eog.get(token)
                if is_eog is None:
                    is_eog = self._eog[token] = bool(self._lc.llama_vocab_is_eog(self._vocab, token))
                if is_eog:
                    return False
        self._plain = plain
        return True

    def _alone(self, outputs: list[Slot]) -> bool:
        """Whether this step held just the running sequences' next tokens and
        nothing waits: no request to place, no sampler chain to change."""
        return not (len(outputs) != self._batch.n or self._decodes != self._batch.n or len(self._busy) != len(outputs)
                    or self._waiting or not self._incoming.empty() or self._chains_due or self._stopping)

    def _chainable(self, outputs: list[Slot], jobs: list[GenerationJob | None]) -> bool:
        """``_steady`` before the step's tokens are known: the same sequences
        and nothing waiting, every one wanting a token after this step's; an
        end of generation among this step's tokens is only seen afterwards."""
        if not self._alone(outputs):
            return False
        for slot, launched_for in zip(outputs, jobs, strict=True):
            job = slot.job
            if (job is None or job is not launched_for or job.ending is not None or job.cancelled
                    or job.produced + 1 >= job.max_tokens):
                return False
        return True

    def _drain(self) -> None:
        """Turns sampled tokens into text: stop strings, the caller's callback."""
        for slot in self._busy:
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
        if self.backend_sampling and (slot.custom is None or slot.custom_on_backend):
            # Sampling ran inside llama_decode's graph; only the id is read.
            token = int(self._lc.llama_get_sampled_token_ith(self._ctx, job.out_index))
            if token >= 0:
                return token
        if slot.custom is not None:
            return int(self._lc.llama_sampler_sample(slot.custom, self._ctx, job.out_index))
        logits = self._lc.llama_get_logits_ith(self._ctx, job.out_index)
        row = self._np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        token = int(row.argmax()) if job.copy is None else job.copy.choose(row)  # extractive.py
        if job.logprobs is not None:
            job.logprobs.append(token_logprob(self._np, row, token))
        return token

    def _release(self, slot: Slot, reason: str) -> None:
        job = slot.job
        slot.job = None
        if slot in self._busy:
            self._busy.remove(slot)
        slot.last_used = time.perf_counter()
        if job is None:
            return
        # Keep the KV cache of what was evaluated: the prompt and all
        # generated tokens but the last (never fed back).
        slot.cached = slot.cached[: job.n_past]
        job.finish(reason)


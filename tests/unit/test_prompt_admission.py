"""The scheduler's prompt admission (rag/generation/scheduler.py), on a fake
llama.cpp that records every step's batch and splits it into micro-batches as
llama.cpp does with one KV stream per sequence (``split_equal``, sequential):
how many passes over the weights a burst of prompts costs, and how long a
running stream waits for its next token."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rag.errors import BackendError
from rag.generation import GenerationParams
from rag.generation.batch import Batch
from rag.generation.job import GenerationJob
from rag.generation.scheduler import Scheduler
from rag.generation.slots import Slot
from rag.generation.trace import StepTrace
from tests.support.fakes import FakeLlamaCalls

N_BATCH = 2048
N_UBATCH = 512
TOKEN = 7  # every sampled token: no end of generation, plain text


def split_equal(seqs: list[int], n_ubatch: int) -> list[int]:
    """llama.cpp's ``llama_batch_allocr::split_equal(n_ubatch, sequential=true)``
    over a batch of single-sequence tokens: the sizes of its micro-batches."""
    used = [False] * len(seqs)
    sizes = []
    while not all(used):
        chosen: list[int] = []  # sequence ids, consecutive from the first unused token's
        for i, s in enumerate(seqs):
            if used[i] or s in chosen:
                continue
            if not chosen or s == chosen[-1] + 1:
                chosen.append(s)
        queues = {s: [i for i, t in enumerate(seqs) if t == s and not used[i]] for s in chosen}
        size, rounds = 0, 0
        while all(len(q) > rounds for q in queues.values()):
            for q in queues.values():
                used[q[rounds]] = True
            rounds += 1
            size += len(chosen)
            if (rounds + 1) * len(chosen) > n_ubatch:
                break
        sizes.append(size)
    return sizes


class FakeLlama(FakeLlamaCalls):
    """The llama.cpp functions the scheduler calls. ``llama_decode`` records
    the batch; ``gate`` (when set) holds the first decode until released."""

    token = TOKEN

    def __init__(self) -> None:
        self.batch: Batch | None = None
        self.steps: list[list[int]] = []  # sequence id of each token of each step
        self.outputs: list[int] = []
        self.held: list[int] = []  # the steps decoded keeping the GIL (llama_decode_held)
        self.calls: list[str] = []  # "decode", "sync", "seq_rm" in the order made
        self.gate: threading.Event | None = None
        self.gated = threading.Event()

    def llama_memory_seq_rm(self, mem: Any, seq: int, p0: int, p1: int) -> bool:
        self.calls.append("seq_rm")
        return True

    def llama_synchronize(self, ctx: Any) -> None:
        self.calls.append("sync")

    def llama_decode_held(self, ctx: Any, raw: Any) -> int:
        self.held.append(len(self.steps))
        return self.llama_decode(ctx, raw)

    def llama_decode(self, ctx: Any, raw: Any) -> int:
        batch = self.batch
        assert batch is not None
        base = batch.seq_values.ctypes.data
        self.steps.append([(int(p) - base) // 4 for p in batch.seq_id[: batch.n]])
        self.calls.append("decode")
        if self.gate is not None:
            gate, self.gate = self.gate, None
            self.gated.set()
            assert gate.wait(10)
        return 0


def make_scheduler(fake: FakeLlama, slots: int, prompt_steps: int, trace: StepTrace | None = None) -> Scheduler:
    batch = Batch(SimpleNamespace(llama_batch=SimpleNamespace), N_BATCH, slots)
    fake.batch = batch
    return Scheduler(
        fake, object(), object(), [Slot(seq_id=i, sampler=None) for i in range(slots)], batch,
        n_vocab=16, piece=lambda t: b"x", prompt_cache=True, min_copy=16, backend_sampling=True,
        overlap=True, name="fake", prompt_steps=prompt_steps, n_ubatch=N_UBATCH, trace=trace,
    )


def burst(fake: FakeLlama, prompt_steps: int, *, prompts: int = 16, length: int = 505,
          gen: int = 4, trace: StepTrace | None = None) -> tuple[list[list[int]], list[GenerationJob]]:
    """One stream decoding (seq 0), then ``prompts`` requests arriving while a
    step computes, as over HTTP; every job runs to the end."""
    scheduler = make_scheduler(fake, prompts + 1, prompt_steps, trace)
    try:
        first = GenerationJob([1, 2, 3], GenerationParams(max_tokens=3 * gen + 40, ignore_eog=True))
        fake.gate = threading.Event()
        gate = fake.gate
        scheduler.put(first)
        assert fake.gated.wait(10)
        jobs = [GenerationJob([1] + [100 + i] * (length - 1), GenerationParams(max_tokens=gen, ignore_eog=True))
                for i in range(prompts)]
        for job in jobs:  # the scheduler thread is inside llama_decode: it takes them together
            scheduler.put(job)
        gate.set()
        for job in [first, *jobs]:
            assert job.result(10).completion_tokens == job.max_tokens
        assert scheduler.active == 0  # a slot leaves the busy list before its job's result is set
        return fake.steps, jobs
    finally:
        scheduler.stop()


def passes(steps: list[list[int]]) -> int:
    return sum(len(split_equal(step, N_UBATCH)) for step in steps)


def test_a_burst_of_prompts_goes_in_whole_micro_batches() -> None:
    steps, jobs = burst(FakeLlama(), prompt_steps=8)
    prompt_steps = [s for s in steps[1:] if len(s) > 17]
    # 16 prompts of 505 tokens: 16 micro-batches of one prompt each, no slivers,
    # four prompts to a 2,048-token step, and no running stream's token among them.
    assert [split_equal(s, N_UBATCH) for s in prompt_steps] == [[505] * 4] * 4
    assert all(0 not in s for s in prompt_steps)
    # Then every stream's next token in one micro-batch (consecutive slots).
    decode = [s for s in steps if len(s) == 17]
    assert decode and all(split_equal(s, N_UBATCH) == [17] for s in decode)
    assert sorted(j.slot for j in jobs) == list(range(1, 17))


def test_on_a_gpu_steps_of_next_tokens_keep_the_gil_and_prompt_steps_let_go() -> None:
    fake = FakeLlama()
    steps, _ = burst(fake, prompt_steps=8)
    next_tokens_only = [i for i, s in enumerate(steps) if len(set(s)) == len(s)]  # one token per sequence
    assert len(next_tokens_only) > 4 and len(next_tokens_only) < len(steps)
    assert fake.held == next_tokens_only


def test_requests_that_come_while_a_step_computes_are_placed_before_it_is_waited_for() -> None:
    # On a GPU llama_decode returns once the step is queued: the burst that
    # came meanwhile has its slots' KV cells cleared then, not between this
    # step's end and the next step's start, when the device would sit idle.
    fake = FakeLlama()
    steps, jobs = burst(fake, prompt_steps=8)
    first_sync = fake.calls.index("sync")
    second_decode = fake.calls.index("decode", fake.calls.index("decode") + 1)
    assert fake.calls[:first_sync].count("seq_rm") == 1 + len(jobs)  # the first stream's, then the burst's
    assert "seq_rm" not in fake.calls[first_sync:second_decode]
    assert len(steps[1]) == 4 * 505  # the next step holds the burst's prompts


def test_the_policy_before_ran_more_passes_for_the_same_burst() -> None:
    filled = passes(burst(FakeLlama(), prompt_steps=8)[0])
    mixed_steps = burst(FakeLlama(), prompt_steps=0)[0]
    # Mixed: the running stream's token and unequal prompt chunks of
    # neighbouring slots split into slivers of micro-batches.
    assert any(min(split_equal(s, N_UBATCH)) < 32 for s in mixed_steps if len(s) > 17)
    assert passes(mixed_steps) > filled


@pytest.mark.parametrize("limit", [1, 3])
def test_a_running_stream_waits_at_most_prompt_steps_steps(limit: int) -> None:
    steps, _ = burst(FakeLlama(), prompt_steps=limit, prompts=32)
    # From the burst on (the gated step was the first stream's), steps without
    # the first stream's token come at most ``limit`` in a row while it runs.
    run = longest = 0
    last = max(i for i, s in enumerate(steps) if 0 in s)
    for step in steps[1:last]:
        run = 0 if 0 in step else run + 1
        longest = max(longest, run)
    assert longest == limit


def test_the_step_trace_records_every_step_once_the_scheduler_idles(tmp_path: Path) -> None:
    path = tmp_path / "steps.jsonl"
    steps, _ = burst(FakeLlama(), prompt_steps=8, trace=StepTrace(path))
    deadline = time.monotonic() + 10
    while len(path.read_text().splitlines() if path.exists() else []) < len(steps):
        assert time.monotonic() < deadline, "the trace was not written when the scheduler fell idle"
        time.sleep(0.01)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["tokens"] for r in rows] == [len(s) for s in steps]
    # The first step is the first stream's 3-token prompt; then prompt steps hold prompt tokens only
    # (prompts go first), decode steps none.
    assert rows[0]["prompt"] == 3
    assert all(r["prompt"] == r["tokens"] for r in rows if r["tokens"] > 17)
    assert all(r["prompt"] == 0 for r in rows[1:] if r["tokens"] <= 17)
    assert all(r["began"] <= r["launched"] <= r["collected"] for r in rows)
    assert all(a["collected"] <= b["began"] for a, b in itertools.pairwise(rows))


class SampledLlama(FakeLlama):
    """Each step's sampled tokens differ (by step and output row); every
    decode records its batch as (sequence, position, token)."""

    def __init__(self) -> None:
        super().__init__()
        self.fed: list[list[tuple[int, int, int]]] = []

    def llama_get_sampled_token_ith(self, ctx: Any, i: int) -> int:
        return 1000 + 100 * len(self.steps) + i

    def llama_decode(self, ctx: Any, raw: Any) -> int:
        batch = self.batch
        assert batch is not None
        base = batch.seq_values.ctypes.data
        self.fed.append([((int(p) - base) // 4, int(q), int(t))
                         for p, q, t in zip(batch.seq_id[: batch.n], batch.pos[: batch.n], batch.token[: batch.n],
                                            strict=True)])
        return super().llama_decode(ctx, raw)


def test_a_step_of_the_same_sequences_next_tokens_is_queued_before_the_last_ones_bookkeeping() -> None:
    # On a GPU, when every sequence of a step of next tokens goes on and
    # nothing waits, the next step is that batch with the sampled tokens,
    # one position on, queued as soon as they are read.
    fake = SampledLlama()
    batch = Batch(SimpleNamespace(llama_batch=SimpleNamespace), N_BATCH, 3)
    fake.batch = batch
    ahead: list[bool] = []

    class Watched(Scheduler):
        def _steady(self, outputs: list[Slot], jobs: list[GenerationJob | None], tokens: list[int]) -> bool:
            ahead.append(super()._steady(outputs, jobs, tokens))
            return ahead[-1]

    scheduler = Watched(
        fake, object(), object(), [Slot(seq_id=i, sampler=None) for i in range(3)], batch,
        n_vocab=16, piece=lambda t: b"x", prompt_cache=False, min_copy=16, backend_sampling=True,
        overlap=True, name="fake", prompt_steps=8, n_ubatch=N_UBATCH,
    )
    try:
        jobs = [GenerationJob(list(range(1, 5 + i)), GenerationParams(max_tokens=8, ignore_eog=True)) for i in range(3)]
        for job in jobs:
            scheduler.put(job)
        assert all(job.result(10).completion_tokens == 8 for job in jobs)
    finally:
        scheduler.stop()
    assert sum(ahead) >= 4  # most steps of the three streams' next tokens went ahead
    assert fake.read_at_once >= 4  # their tokens read in one call (checked against the rows below)
    sampled: dict[int, int] = {}  # each sequence's last sampled token
    next_pos: dict[int, int] = {}
    for step, fed in enumerate(fake.fed):
        rows = [(i, seq, pos, token) for i, (seq, pos, token) in enumerate(fed)]
        for _, seq, pos, token in rows:
            if seq in sampled and pos == next_pos[seq]:  # a next token: the one sampled for it last
                assert token == sampled[seq], (step, seq)
            next_pos[seq] = pos + 1
        for i, seq, _, _ in rows:  # the rows with an output: a sequence's last row in the step
            if all(s != seq or j <= i for j, s, _, _ in rows):
                sampled[seq] = 1000 + 100 * (step + 1) + i
    lengths = {seq: len(jobs[seq].tokens) for seq in range(3)}
    assert all(next_pos[seq] == lengths[seq] + 7 for seq in range(3))  # 7 next tokens fed after each prompt


class ChainedLlama(SampledLlama):
    """llama.cpp with ``llama_decode_chained`` (scripts/patches/llama.cpp-chained-decode.patch):
    the batch's token ids are the last decode's sampled tokens, row by row, written to ``prev``
    too. ``eog``: a sampled token that ends generation; ``on_chained``: called with each
    chained call's tokens (a request coming while the step computes)."""

    chained_available = True

    def __init__(self, eog: int = -1) -> None:
        super().__init__()
        self.eog = eog
        self.chained: list[int] = []  # the steps queued chained
        self.on_chained: Any = None

    def llama_vocab_is_eog(self, vocab: Any, token: int) -> bool:
        return token == self.eog

    def decode_chained(self, ctx: Any, raw: Any, prev: Any) -> int:
        batch = self.batch
        assert batch is not None
        n = batch.n
        tokens = [self.llama_get_sampled_token_ith(ctx, i) for i in range(n)]  # the last decode's
        prev[:n] = tokens
        placeholder = batch.token[:n].copy()
        batch.token[:n] = tokens  # what llama.cpp feeds (and this fake records)
        self.chained.append(len(self.steps))
        rc = self.llama_decode(ctx, raw)
        batch.token[:n] = placeholder
        if self.on_chained is not None:
            self.on_chained(tokens)
        return rc


def chained_scheduler(fake: SampledLlama, slots: int, *, chain: bool = True) -> Scheduler:
    batch = Batch(SimpleNamespace(llama_batch=SimpleNamespace), N_BATCH, slots)
    fake.batch = batch
    return Scheduler(
        fake, object(), object(), [Slot(seq_id=i, sampler=None) for i in range(slots)], batch,
        n_vocab=16, piece=lambda t: b"x", prompt_cache=False, min_copy=16, backend_sampling=True,
        overlap=True, name="fake", prompt_steps=8, n_ubatch=N_UBATCH, chain=chain,
    )


def fed_consistently(fed: list[list[tuple[int, int, int]]]) -> dict[int, int]:
    """Checks that every next token a step fed a sequence is the one sampled for it last (at the
    position after its last; a row at an earlier position starts another job's prompt);
    returns each sequence's next position."""
    sampled: dict[int, int] = {}
    next_pos: dict[int, int] = {}
    for step, rows in enumerate(fed):
        for seq, pos, token in rows:
            if pos < next_pos.get(seq, 0):  # a new job's prompt in the slot: nothing sampled for it yet
                sampled.pop(seq, None)
            elif seq in sampled and pos == next_pos[seq]:
                assert token == sampled[seq], (step, seq, pos)
            next_pos[seq] = pos + 1
        for i, (seq, _, _) in enumerate(rows):  # the rows with an output: a sequence's last row in the step
            if all(s != seq or j <= i for j, (s, _, _) in enumerate(rows)):
                sampled[seq] = 1000 + 100 * (step + 1) + i
    return next_pos


def test_chained_steps_feed_every_sequence_the_token_sampled_for_it_last() -> None:
    # With llama_decode_chained a step of the same sequences' next tokens is queued before the
    # last step's tokens are read; llama.cpp takes them on its side, and hands them back.
    fake = ChainedLlama()
    scheduler = chained_scheduler(fake, 3)
    try:
        jobs = [GenerationJob(list(range(1, 5 + i)), GenerationParams(max_tokens=12)) for i in range(3)]
        for job in jobs:
            scheduler.put(job)
        results = [job.result(10) for job in jobs]
    finally:
        scheduler.stop()
    assert all(r.completion_tokens == 12 and r.finish_reason == "length" for r in results)
    assert len(fake.chained) >= 6
    next_pos = fed_consistently(fake.fed)
    # No token decoded in vain: each sequence got its prompt and 11 next tokens (the 12th is never fed).
    assert all(next_pos[seq] == len(jobs[seq].tokens) + 11 for seq in range(3))


def test_a_stream_ending_in_a_chained_step_passes_its_slot_on_without_its_token_in_vain() -> None:
    # Stream A (slot 0) samples an end of generation; the step after, already queued with A's row,
    # computes while a new request C takes A's slot. A's row of that step is not C's first token.
    fake = ChainedLlama()
    scheduler = chained_scheduler(fake, 2)
    a = GenerationJob([1, 2, 3], GenerationParams(max_tokens=40))
    b = GenerationJob([1, 2, 3, 4], GenerationParams(max_tokens=40))
    c = GenerationJob([5, 6, 7, 8, 9], GenerationParams(max_tokens=6))

    def come(tokens: list[int]) -> None:
        if len(fake.chained) == 4:
            fake.eog = tokens[0]  # A's token of the step before this one: its end
            fake.on_chained = None
            scheduler.put(c)

    fake.on_chained = come
    try:
        scheduler.put(a)
        scheduler.put(b)
        results = {name: job.result(10) for name, job in (("a", a), ("b", b), ("c", c))}
    finally:
        scheduler.stop()
    assert results["a"].finish_reason == "stop"
    assert results["b"].completion_tokens == 40 and results["c"].completion_tokens == 6
    assert c.slot == 0 and a.slot == 0
    next_pos = fed_consistently(fake.fed)  # C's next tokens are the ones sampled for C
    c_rows = [(step, pos) for step, rows in enumerate(fake.fed) for seq, pos, token in rows
              if seq == 0 and token in (5, 6, 7, 8, 9)]
    assert [pos for _, pos in c_rows] == [0, 1, 2, 3, 4]  # C's prompt (nothing of A's kept: no prompt cache)
    assert c_rows[0][0] == fake.chained[3] + 1  # in the step after the one with A's row in vain: no more of A's
    # then C's 6 tokens, the first 5 fed back: none of them A's row decoded in vain
    assert next_pos[0] == len(c.tokens) + 5
    assert all(seq != 0 or pos >= 5 for rows in fake.fed[c_rows[0][0] + 1:] for seq, pos, _ in rows)


def test_steps_are_not_chained_when_the_setting_is_off_or_llama_cpp_lacks_the_call() -> None:
    for fake, chain in ((ChainedLlama(), False), (SampledLlama(), True)):
        scheduler = chained_scheduler(fake, 2, chain=chain)
        try:
            jobs = [GenerationJob([1, 2, 3], GenerationParams(max_tokens=10)) for _ in range(2)]
            for job in jobs:
                scheduler.put(job)
            assert all(job.result(10).completion_tokens == 10 for job in jobs)
        finally:
            scheduler.stop()
        assert not getattr(fake, "chained", [])
        fed_consistently(fake.fed)


@pytest.mark.parametrize("chained", [False, True])
def test_a_failed_decode_fails_the_running_requests_and_the_scheduler_serves_on(chained: bool) -> None:
    fake = ChainedLlama()
    failing = {6}  # the step llama.cpp refuses (1: no KV slot), chained or not

    def decode(ctx: Any, raw: Any, _decode: Any = fake.llama_decode) -> int:
        if len(fake.steps) in failing:
            failing.clear()
            return 1
        return int(_decode(ctx, raw))

    fake.llama_decode = decode  # type: ignore[method-assign]
    scheduler = chained_scheduler(fake, 2, chain=chained)
    try:
        jobs = [GenerationJob([1, 2, 3], GenerationParams(max_tokens=20)) for _ in range(2)]
        for job in jobs:
            scheduler.put(job)
        for job in jobs:
            with pytest.raises(BackendError, match="llama_decode failed with 1"):
                job.result(10)
        later = GenerationJob([4, 5, 6], GenerationParams(max_tokens=3))
        scheduler.put(later)
        assert later.result(10).completion_tokens == 3
    finally:
        scheduler.stop()
    assert bool(fake.chained) == chained

"""rag/generation/slots.py's ``common_prefix``: how many leading tokens two
prompts share, as placing a request compares it with every slot's cache."""

from __future__ import annotations

import random

import pytest

from rag.generation import GenerationParams
from rag.generation.job import GenerationJob
from rag.generation.slots import Slot, common_prefix, place


@pytest.mark.parametrize("shared", [0, 1, 15, 16, 17, 255, 256, 257, 600])
def test_the_shared_prefix_is_counted_exactly(shared: int) -> None:
    a = list(range(1000))
    b = a[:shared] + [-1] * 50
    assert common_prefix(a, b) == shared
    assert common_prefix(b, a) == shared


def test_a_limit_caps_the_count() -> None:
    a = list(range(700))
    assert common_prefix(a, a, 500) == 500
    assert common_prefix(a, a, 10) == 10
    assert common_prefix(a, a[:300], 500) == 300
    assert common_prefix(a, a, 0) == 0
    assert common_prefix([], a) == 0


class _Memory:
    """The two llama.cpp memory calls ``place`` makes; every removal works."""

    def llama_memory_seq_rm(self, mem: object, seq: int, p0: int, p1: int) -> bool:
        return True

    def llama_memory_seq_cp(self, mem: object, src: int, dst: int, p0: int, p1: int) -> None:
        pass


@pytest.mark.parametrize("seed", range(40))
def test_placing_copies_the_longest_prefix_any_slot_holds(seed: int) -> None:
    """Whatever the slots hold, a request starts from the longest prefix any
    other slot shares with it when that saves more than ``min_copy`` tokens."""
    rng = random.Random(seed)
    stems = [[rng.randrange(50) for _ in range(rng.randrange(1, 80))] for _ in range(4)]

    def prompt() -> list[int]:
        stem = rng.choice(stems)
        return stem[: rng.randrange(len(stem) + 1)] + [rng.randrange(50) for _ in range(rng.randrange(1, 40))]

    slots = [Slot(seq_id=i, sampler=None, cached=prompt()) for i in range(12)]
    for s in rng.sample(slots, 4):
        s.job = GenerationJob(s.cached[:] or [1], GenerationParams(max_tokens=4))
        s.job.n_past = rng.randrange(len(s.job.tokens) + 1)  # part of its prompt in the KV cache so far
    job = GenerationJob(prompt(), GenerationParams(max_tokens=4))
    min_copy = rng.choice([0, 4, 16])
    target = min((s for s in slots if s.job is None), key=lambda s: s.seq_id)
    own = min(common_prefix(target.cached, job.tokens), len(job.tokens) - 1)
    best = max((min(common_prefix(s.cached, job.tokens, s.resident), len(job.tokens) - 1)
                for s in slots if s is not target), default=0)
    placed = place(_Memory(), None, job, slots, lowest_free=True, prompt_cache=True, min_copy=min_copy)
    assert placed is not None and placed[0] is target
    assert placed[1] == (best if best > own + min_copy else own)


@pytest.mark.parametrize(
    ("shared", "min_keep", "kept"), [(14, 0, 14), (14, 32, 0), (31, 32, 0), (32, 32, 32), (90, 32, 90)]
)
def test_a_prefix_shorter_than_min_keep_is_evaluated_again(shared: int, min_keep: int, kept: int) -> None:
    """A slot's own prefix, or one copied from another slot, is reused only
    when it is at least ``min_keep`` tokens long."""
    prompt = list(range(100, 200))
    own = Slot(seq_id=0, sampler=None, cached=prompt[:shared] + [-1] * 20)
    placed = place(_Memory(), None, GenerationJob(prompt, GenerationParams(max_tokens=4)), [own],
                   lowest_free=True, prompt_cache=True, min_copy=0, min_keep=min_keep)
    assert placed == (own, kept)
    # The same prefix held by another slot (busy) is copied only as far.
    busy = Slot(seq_id=1, sampler=None, cached=prompt[:shared] + [-1] * 20)
    busy.job = GenerationJob(busy.cached[:], GenerationParams(max_tokens=4))
    busy.job.n_past = len(busy.cached)
    empty = Slot(seq_id=0, sampler=None)
    placed = place(_Memory(), None, GenerationJob(prompt, GenerationParams(max_tokens=4)), [empty, busy],
                   lowest_free=True, prompt_cache=True, min_copy=0, min_keep=min_keep)
    assert placed == (empty, kept)

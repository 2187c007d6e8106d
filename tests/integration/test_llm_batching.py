"""The llama.cpp scheduler with the real bundled model: batched decoding of
concurrent requests, prompt-prefix reuse, stop strings, cancellation."""

from __future__ import annotations

import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.generation import GenerationParams
from rag.generation.llama import LlamaModel
from rag.generation.slots import common_prefix
from rag.generation.types import GpuArgmax, Sampling

pytestmark = pytest.mark.slow

PROMPTS = [
    "Context:\n[1] The Eiffel Tower was completed in 1889 in Paris.\n\n"
    "Question: When was the Eiffel Tower completed?\nShort answer:",
    "Context:\n[1] The lighthouse radio call sign is ORCHID-2093.\n\n"
    "Question: What is the radio call sign?\nShort answer:",
    "The capital of France is",
    "Once upon a time, in a small village,",
]


@pytest.fixture(scope="module")
def model(model_path: Path) -> Iterator[LlamaModel]:
    m = LlamaModel(model_path, n_ctx=1024, threads=2, parallel=4, n_batch=256)
    yield m
    m.close()


def test_concurrent_requests_decode_together_and_match_one_at_a_time(model: LlamaModel) -> None:
    alone = [model.generate(model.tokenize(p), GenerationParams(max_tokens=24)) for p in PROMPTS]
    jobs = [model.submit(model.tokenize(p), GenerationParams(max_tokens=24)) for p in PROMPTS]
    together = [j.result(timeout=300) for j in jobs]
    # Greedy decoding: the same answer whether alone or batched with others.
    # Only its beginning: batched matrix products round differently, and the
    # 270M model's near-ties later on can then go the other way.
    for a, b in zip(alone, together, strict=True):
        assert a.completion_tokens == b.completion_tokens == 24 and a.finish_reason == "length"
        assert a.text.split("\n")[0][:30] == b.text.split("\n")[0][:30]
    assert "1889" in together[0].text


def test_prompts_first_gives_the_same_answers_and_reuses_a_prefix(model_path: Path) -> None:
    # The GPU's admission (prompts first, whole micro-batches, lowest free
    # slot) on the real model: a prompt longer than a micro-batch, prompts
    # arriving while others decode, and a prefix cached in another slot.
    m = LlamaModel(model_path, n_ctx=1024, threads=2, parallel=4, n_batch=256, n_ubatch=64, prompt_steps=2)
    try:
        alone = [m.generate(m.tokenize(p), GenerationParams(max_tokens=16)) for p in PROMPTS]
        long_prompt = m.tokenize("The handbook of the operations team, read before the first shift. " * 12)
        assert len(long_prompt) > 64
        running = m.submit(long_prompt, GenerationParams(max_tokens=40, ignore_eog=True))
        jobs = [m.submit(m.tokenize(p), GenerationParams(max_tokens=16)) for p in PROMPTS[:3]]
        for a, b in zip(alone[:3], [j.result(timeout=300) for j in jobs], strict=True):
            assert a.text.split("\n")[0][:30] == b.text.split("\n")[0][:30]
        assert running.result(timeout=300).completion_tokens == 40
        again = m.generate(long_prompt + m.tokenize(" And then?")[1:], GenerationParams(max_tokens=2))
        assert again.cached_tokens >= len(long_prompt) - 1
    finally:
        m.close()


@pytest.mark.parametrize("native", [True, False], ids=["C", "Python"])
def test_the_gpu_path_answers_together_as_alone(model_path: Path, model: LlamaModel, native: bool) -> None:
    # As on a GPU, on this CPU: the batch-greedy sampler in the decode graph
    # (one argmax shared by the sequences of a graph, forgotten when the next
    # graph is built; batch_greedy.c's or its Python twin), text handled while
    # a step is queued, steps of next tokens decoded keeping the GIL; another
    # thread calling into llama.cpp all along, a sampled request in between
    # (its chain replaces a slot's greedy one, which then comes back as a new
    # chain).
    m = LlamaModel(model_path, n_ctx=1024, threads=2, parallel=4, n_batch=256, n_ubatch=64, prompt_steps=2,
                   backend_sampling=True, overlap=True, native_sampler=native)
    assert m.sampler == ("batch-greedy (C)" if native else "batch-greedy (Python)")
    assert model.sampler == "host"
    alone = [m.generate(m.tokenize(p), GenerationParams(max_tokens=16)) for p in PROMPTS[:3]]
    # The graph's argmax picks what an argmax over the logits on the host picks.
    on_host = [model.generate(model.tokenize(p), GenerationParams(max_tokens=16)) for p in PROMPTS[:3]]
    for a, h in zip(alone, on_host, strict=True):
        assert a.text.split("\n")[0][:30] == h.text.split("\n")[0][:30]
    done = threading.Event()

    def tokenize_all_along() -> None:
        while not done.is_set():
            m.tokenize(PROMPTS[0])

    other = threading.Thread(target=tokenize_all_along)
    other.start()
    try:
        for sampling in (None, Sampling(temperature=1.2, top_p=0.9, seed=3), None):
            # (the fourth prompt has a near-tie that batching tips either way, on both paths)
            jobs = [m.submit(m.tokenize(p), GenerationParams(max_tokens=16)) for p in PROMPTS[:3]]
            jobs.append(m.submit(m.tokenize(PROMPTS[3]), GenerationParams(max_tokens=16, sampling=sampling)))
            together = [j.result(timeout=300) for j in jobs]
            for a, b in zip(alone[:3], together, strict=False):
                assert a.text.split("\n")[0][:30] == b.text.split("\n")[0][:30]
            assert together[-1].completion_tokens == 16
    finally:
        done.set()
        other.join()
        m.close()


@pytest.mark.parametrize(("gpu_argmax", "patched", "native", "sampler"), [
    ("kernel", False, True, "batch-greedy (C, one argmax)"),
    ("kernel", False, False, "batch-greedy (Python, one argmax)"),
    ("graph", True, True, "batch-greedy (C)"),
    ("auto", True, True, "batch-greedy (C, one argmax)"),
    ("auto", False, True, "batch-greedy (C)"),
])
def test_the_batch_argmax_as_one_node_or_in_two_stages_picks_the_host_s_tokens(
    model_path: Path, model: LlamaModel, monkeypatch: pytest.MonkeyPatch, gpu_argmax: GpuArgmax, patched: bool,
    native: bool, sampler: str,
) -> None:
    # One ggml_argmax over the batch's [n_vocab, rows] logits (a CUDA build with
    # scripts/patches/llama.cpp-argmax-split.patch, whose kernel splits rows
    # itself; "auto" asks the loaded library, here pretended) or two stages of
    # stock ggml ops: every sequence of a batch gets what an argmax over its
    # logits on the host picks.
    monkeypatch.setattr("rag.generation.llama.cuda_argmax_splits_rows", lambda: patched)
    m = LlamaModel(model_path, n_ctx=1024, threads=2, parallel=4, n_batch=256, n_ubatch=64, backend_sampling=True,
                   native_sampler=native, gpu_argmax=gpu_argmax)
    try:
        assert m.sampler == sampler
        jobs = [m.submit(m.tokenize(p), GenerationParams(max_tokens=12)) for p in PROMPTS[:3]]
        together = [j.result(timeout=300) for j in jobs]
    finally:
        m.close()
    on_host = [model.generate(model.tokenize(p), GenerationParams(max_tokens=12)) for p in PROMPTS[:3]]
    for a, h in zip(together, on_host, strict=True):
        assert a.text.split("\n")[0][:30] == h.text.split("\n")[0][:30]


def test_a_repeated_prefix_is_not_evaluated_again(model: LlamaModel) -> None:
    tokens = model.tokenize(PROMPTS[1])
    first = model.generate(tokens, GenerationParams(max_tokens=8, stop=("\n",)))
    again = model.generate(tokens, GenerationParams(max_tokens=8, stop=("\n",)))
    assert again.cached_tokens == len(tokens) - 1
    assert again.text == first.text
    longer = model.tokenize(PROMPTS[1] + " ORCHID-2093.\n\nQuestion: Who uses it?\nShort answer:")
    follow = model.generate(longer, GenerationParams(max_tokens=8, stop=("\n",)))
    assert follow.cached_tokens >= len(tokens) - 1


def test_stop_strings_end_the_answer_and_are_not_in_it(model: LlamaModel) -> None:
    g = model.generate(model.tokenize(PROMPTS[0]), GenerationParams(max_tokens=64, stop=("\n", "Question:")))
    assert g.finish_reason == "stop" and "\n" not in g.text and "1889" in g.text


def test_on_text_returning_false_cancels(model: LlamaModel) -> None:
    seen: list[str] = []

    def on_text(piece: str) -> bool:
        seen.append(piece)
        return len(seen) < 3

    g = model.generate(model.tokenize(PROMPTS[3]), GenerationParams(max_tokens=200), on_text=on_text)
    assert g.finish_reason == "cancelled" and g.completion_tokens < 20
    job = model.submit(model.tokenize(PROMPTS[3]), GenerationParams(max_tokens=200))
    job.cancel()
    assert job.result(timeout=60).finish_reason == "cancelled"


def test_the_context_window_is_enforced(model: LlamaModel) -> None:
    with pytest.raises(ValueError):
        model.submit([1] * 1000, GenerationParams(max_tokens=100))


def test_a_prefix_is_copied_from_a_busy_slot(model_path: Path) -> None:
    m = LlamaModel(model_path, n_ctx=1024, threads=2, parallel=2, n_batch=256)
    try:
        # Longer than the 64 tokens below which a CPU re-evaluates rather than copies.
        context = "The tower is 330 metres tall and was designed by the engineer Gustave Eiffel's company. " * 4
        base = f"Context:\n[1] {context}\n\nQuestion: How tall is it?\nShort answer: 330 metres.\n\n"
        m.generate(m.tokenize(base), GenerationParams(max_tokens=2))
        first_prompt = m.tokenize(base + "Question: Where is it?\nShort answer:")
        first = m.submit(first_prompt, GenerationParams(max_tokens=40, ignore_eog=True))
        second_prompt = m.tokenize(base + "Question: Who built it?\nShort answer:")
        second = m.submit(second_prompt, GenerationParams(max_tokens=8, stop=("\n",))).result(timeout=300)
        first.result(timeout=300)
        # The first request took the slot holding `base`; the second found only
        # the other slot free and copied the prefix from the busy one.
        assert second.cached_tokens >= len(m.tokenize(base)) - 2
        fresh = LlamaModel(model_path, n_ctx=1024, threads=2, parallel=1, prompt_cache=False)
        try:
            assert fresh.generate(second_prompt, GenerationParams(max_tokens=8, stop=("\n",))).text == second.text
        finally:
            fresh.close()
    finally:
        m.close()


def test_a_short_shared_prefix_is_evaluated_again_below_prompt_cache_min(model_path: Path) -> None:
    # Two prompts sharing only their first line: on the CPU (the default
    # minimum there is 0) the second reuses it; with a minimum above its length
    # (the GPU's default, 32) it is evaluated again, and the answer is the same.
    head = "Context: the fair\n"
    prompts = [head + f"Question: {q}\nShort answer:" for q in ("Who built the tower?", "How tall is it?")]
    texts, cached = [], []
    for minimum in (None, 32):
        m = LlamaModel(model_path, n_ctx=256, threads=2, parallel=1, n_gpu_layers=0, prompt_cache_min=minimum)
        try:
            assert m.prompt_cache_min == (0 if minimum is None else minimum)
            m.generate(m.tokenize(prompts[0]), GenerationParams(max_tokens=2))
            shared = common_prefix(m.tokenize(prompts[0]), m.tokenize(prompts[1]))
            assert 0 < shared < 32
            out = m.generate(m.tokenize(prompts[1]), GenerationParams(max_tokens=8, ignore_eog=True))
            texts.append(out.text)
            cached.append((out.cached_tokens, shared))
        finally:
            m.close()
    assert cached[0][0] == cached[0][1] and cached[1][0] == 0, cached
    assert texts[0] == texts[1]


def test_the_window_cache_is_full_size_where_that_costs_no_memory(model_path: Path) -> None:
    # Gemma 3's sliding-window layers see 512 tokens: a slot of 1,024 cells needs
    # as many for its window and a 512-token micro-batch, so it keeps them all;
    # a 2,048-cell slot keeps its window only, unless prompt reuse needs them all.
    prompt = PROMPTS[0].replace("Context:\n", "Context:\n" + "Paris hosted the fair that year. " * 100)
    answers = []
    for n_ctx, prompt_cache, swa_full, full in [
        (1024, False, None, True),
        (2048, False, None, False),
        (2048, True, None, True),
        (1024, False, False, False),
    ]:
        m = LlamaModel(model_path, n_ctx=n_ctx, threads=2, parallel=1, prompt_cache=prompt_cache, swa_full=swa_full)
        try:
            tokens = m.tokenize(prompt)
            assert len(tokens) > 600  # beyond the window
            assert m.swa_full is full
            answers.append(m.generate(tokens, GenerationParams(max_tokens=12, ignore_eog=True)).text)
        finally:
            m.close()
    assert len(set(answers)) == 1, answers


def test_chained_steps_decode_what_steps_queued_after_their_tokens_decode(model_path: Path) -> None:
    # llama_decode_chained (scripts/patches/llama.cpp-chained-decode.patch, applied to CUDA builds; a stock
    # build has no such call and the test is skipped): the same greedy answers, with requests ending on stop
    # strings and length at different steps and others arriving while steps are chained.
    from rag.generation.native import QuickCalls, llama_cpp

    if not QuickCalls(llama_cpp()).chained_available:
        pytest.skip("this llama.cpp build has no llama_decode_chained (a stock CPU build)")
    answers: dict[bool, list[tuple[str, int, str]]] = {}
    for chain in (False, True):
        m = LlamaModel(model_path, n_ctx=512, threads=2, parallel=4, n_batch=256, n_ubatch=64,
                       backend_sampling=True, overlap=True, chain_steps=chain)
        try:
            scheduler = m._scheduler
            assert scheduler is not None and scheduler._chain == chain
            chained: list[int] = []

            def counted(lc: QuickCalls, ctx: Any, batch: Any, prev: Any, seen: list[int] = chained) -> int:
                seen.append(batch.n_tokens)
                return QuickCalls.decode_chained(lc, ctx, batch, prev)

            scheduler._lc.decode_chained = types.MethodType(counted, scheduler._lc)
            params = [GenerationParams(max_tokens=12 + 6 * i, stop=("\n",) if i % 2 else ()) for i in range(4)]
            jobs = [m.submit(m.tokenize(p), params[i]) for i, p in enumerate(PROMPTS)]
            first = jobs[3].result(timeout=300)
            later = [m.submit(m.tokenize(p), GenerationParams(max_tokens=10)) for p in PROMPTS[:2]]
            results = [first, *(j.result(timeout=300) for j in jobs[:3] + later)]
            answers[chain] = [(g.text, g.completion_tokens, g.finish_reason) for g in results]
            assert (len(chained) > 10) == chain and (not chain or max(chained) == 4)
        finally:
            m.close()
    assert answers[True] == answers[False]
    assert {reason for _, _, reason in answers[True]} == {"stop", "length"}

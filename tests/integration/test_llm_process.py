"""A model instance in a child process (rag/generation/process.py) with the real
bundled model: the same answers as in-process, streaming, cancellation,
concurrent requests, no torch in the child, and recovery from a crash."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.errors import BackendError, ConfigurationError
from rag.generation import GenerationParams, ModelPool, PromptTooLong, load_models
from rag.generation.child import SWITCH_INTERVAL_S
from rag.generation.llama import LlamaModel
from rag.generation.process import ModelProcess
from rag.prompt import PromptRecipe
from rag.settings import Settings

pytestmark = pytest.mark.slow

LINE = GenerationParams(max_tokens=12, stop=("\n",))
LONG = GenerationParams(max_tokens=400, ignore_eog=True)  # cancelled long before its end
PROMPT = (
    "Context:\n[1] The Eiffel Tower was completed in 1889 in Paris.\n\n"
    "Question: When was the Eiffel Tower completed?\nShort answer:"
)


@pytest.fixture(scope="module")
def remote(model_path: Path) -> Iterator[ModelProcess]:
    m = ModelProcess(model_path, n_ctx=1024, threads=2, parallel=4, n_batch=256)
    yield m
    m.close()


def _wait_until(condition: object, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_child_answers_as_the_model_does_in_process(remote: ModelProcess, model_path: Path) -> None:
    local = LlamaModel(model_path, n_ctx=1024, threads=2, parallel=1, n_batch=256)
    try:
        tokens = local.tokenize(PROMPT)
        assert remote.tokenize(PROMPT) == tokens
        assert remote.detokenize(tokens[1:]) == local.detokenize(tokens[1:])
        assert remote.token_text(tokens[0]) == local.token_text(tokens[0]) == "<bos>"
        # Several texts in one round trip, repeats and cached ones among them.
        many = [PROMPT + " twice", "", PROMPT, "ok", PROMPT + " twice"]
        assert remote.tokenize_many(many) == local.tokenize_many(many) == [local.tokenize(t) for t in many]
        here = local.generate(tokens, LINE)
    finally:
        local.close()
    pieces: list[str] = []
    there = remote.generate(tokens, LINE, on_text=lambda p: pieces.append(p) is None)
    assert there.text == here.text and "1889" in there.text
    assert "".join(pieces).strip() == there.text
    assert there.completion_tokens == here.completion_tokens and there.finish_reason == here.finish_reason
    assert remote.info["torch_loaded"] is False and remote.info["pid"] == remote.pid != os.getpid()
    # The scheduler thread waits for the GIL no longer than this behind the model process's other threads.
    assert remote.info["switch_interval_s"] == pytest.approx(SWITCH_INTERVAL_S)


def test_the_child_fits_a_prompt_as_a_builder_here_does(remote: ModelProcess, model_path: Path) -> None:
    # One round trip: the child builds the prompt beside its tokenizer, history and cut passage included.
    vocab = LlamaModel(model_path, n_ctx=1024, vocab_only=True)
    try:
        passages = [f"Passage {i}: the tower was painted in {1890 + i} by crew {i}. " * 12 for i in range(1, 6)]
        recipe = PromptRecipe("gemma-chat", history=(("user", "Who built it?"), ("assistant", "Gustave Eiffel.")))
        question = "When was the tower painted?"
        fitted = []
        for budget in (2000, 400, 120):
            here = recipe.builder(vocab.tokenize, vocab.detokenize).build(question, passages, budget)
            there = remote.fit_prompt(recipe, question, passages, budget)
            assert there == here and len(there.tokens) <= budget
            fitted.append(there)
    finally:
        vocab.close()
    assert fitted[0].passages_used == 5 and not fitted[0].truncated
    assert 0 < fitted[1].passages_used < 5 and fitted[1].truncated
    assert fitted[2].passages_used == 0 or fitted[2].passages_used < fitted[1].passages_used


def test_a_prompt_sent_as_text_is_tokenized_in_the_child_within_its_budget(remote: ModelProcess) -> None:
    tokens = remote.tokenize(PROMPT)
    pieces: list[str] = []
    there = remote.submit_text(PROMPT, len(tokens), LINE, on_text=lambda p: pieces.append(p) is None).result(120)
    assert there.prompt_tokens == len(tokens) and there.text == remote.generate(tokens, LINE).text
    assert "".join(pieces).strip() == there.text and "1889" in there.text
    over = remote.submit_text(PROMPT, len(tokens) - 1, LINE)  # refused in the child, nothing queued
    with pytest.raises(PromptTooLong) as refused:
        over.result(60)
    assert (refused.value.tokens, refused.value.budget) == (len(tokens), len(tokens) - 1)
    assert remote.active == 0


def test_an_answer_that_cannot_be_read_fails_its_request_and_the_rest_go_on(
    remote: ModelProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A message this side fails to handle (a bug, or a child of another
    # version) must not stop the one thread that reads every answer.
    tokens = remote.tokenize(PROMPT)
    dispatch = remote._dispatch
    broken: list[str] = []

    def once_unreadable(message: tuple[object, ...]) -> None:
        if message[0] == "done" and not broken:
            broken.append("done")
            raise TypeError("an answer of another shape")
        dispatch(message)

    monkeypatch.setattr(remote, "_dispatch", once_unreadable)
    with pytest.raises(BackendError, match="could not be read"):
        remote.generate(tokens, LINE)
    assert "1889" in remote.generate(tokens, LINE).text and remote.active == 0


def test_tokenizer_calls_at_once_while_generating_agree_with_one_by_one(remote: ModelProcess) -> None:
    """The child answers calls on several threads, beside its scheduler's."""
    texts = [f"{i} {PROMPT * (1 + i % 3)}" for i in range(24)]
    expected = [remote.tokenize(t) for t in texts]  # one by one (and now cached: ask others below)
    job = remote.submit(remote.tokenize(PROMPT), LONG)
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda t: remote.tokenize(t + " again"), texts))
            pieces = list(pool.map(lambda toks: remote.detokenize(toks[1:]), expected))
    finally:
        job.cancel()
    assert [g[: len(e) - 1] for g, e in zip(got, expected, strict=True)] == [e[:-1] for e in expected]
    assert pieces == [remote.detokenize(e[1:]) for e in expected]


def test_concurrent_requests_and_token_times(remote: ModelProcess) -> None:
    params = GenerationParams(max_tokens=16, ignore_eog=True)
    jobs = [remote.submit(remote.tokenize(f"{i} {PROMPT}"), params) for i in range(6)]
    results = [j.result(timeout=300) for j in jobs]
    assert all(r.completion_tokens == 16 and r.finish_reason == "length" for r in results)
    assert all(len(j.token_times) == 16 and j.token_times == sorted(j.token_times) for j in jobs)
    assert remote.active == 0


def test_on_text_false_and_cancel_stop_the_generation(remote: ModelProcess) -> None:
    tokens = remote.tokenize("Once upon a time, in a small village,")
    seen: list[str] = []
    g = remote.generate(tokens, LONG, on_text=lambda p: len(seen) < 2 and not seen.append(p))
    assert g.finish_reason == "cancelled" and g.completion_tokens < 400
    started = threading.Event()
    job = remote.submit(tokens, LONG, on_text=lambda _: started.set() or True)
    assert started.wait(120), "no text came"  # cancelled mid-answer, not before nor after
    job.cancel()
    result = job.result(timeout=60)
    assert result.finish_reason == "cancelled" and result.completion_tokens < 400


def test_bad_requests_are_refused_before_they_reach_the_child(remote: ModelProcess) -> None:
    with pytest.raises(ValueError):
        remote.submit([], GenerationParams(max_tokens=4))
    with pytest.raises(ValueError):
        remote.submit([2] * 1000, GenerationParams(max_tokens=100))


def test_a_crashed_child_fails_its_requests_and_is_started_again(model_path: Path) -> None:
    m = ModelProcess(model_path, n_ctx=512, threads=2, parallel=2, n_batch=128)
    try:
        first_pid = m.pid
        assert first_pid is not None
        tokens = m.tokenize("Once upon a time, in a small village,")
        started = threading.Event()
        job = m.submit(tokens, LONG, on_text=lambda _: started.set() is None)
        assert started.wait(120)
        os.kill(first_pid, signal.SIGKILL)  # as a segfault in llama.cpp would end it
        with pytest.raises(BackendError, match="exited"):
            job.result(timeout=60)
        _wait_until(lambda: m.alive and m.pid != first_pid)
        assert m.restarts == 1
        assert m.generate(tokens, GenerationParams(max_tokens=4)).completion_tokens == 4
    finally:
        m.close()
    assert not m.alive
    with pytest.raises(BackendError, match="closed"):
        m.tokenize("x")


def test_a_model_that_cannot_load_is_a_configuration_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ConfigurationError, match="cannot load model"):
        ModelProcess(broken, n_ctx=512, threads=1)


def test_settings_choose_the_isolation(model_path: Path, tmp_path: Path) -> None:
    common = {"llm_model": str(model_path), "llm_n_ctx": 512, "max_tokens": 64, "llm_threads": 1,
              "llm_parallel": 1, "data_dir": tmp_path}
    [inline] = load_models(Settings(llm_isolation="inline", **common))  # type: ignore[arg-type]
    assert isinstance(inline, LlamaModel)
    inline.close()
    models = load_models(Settings(llm_pool_size=2, **common))  # type: ignore[arg-type]
    pool = ModelPool(models, queue_size=0)
    try:
        assert all(isinstance(m, ModelProcess) for m in models) and pool.capacity == 2
        assert len({m.pid for m in models}) == 2  # type: ignore[attr-defined]
    finally:
        pool.close()

"""Extractive decoding's constraint (rag/generation/extractive.py) on made-up
token sequences and logits, and its source built from a real prompt."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from rag.generation.extractive import CopyConstraint, token_logprob
from rag.generation.llama import LlamaModel
from rag.generation.types import CopySource
from rag.prompt import PromptBuilder, copy_source

END = 9


def logits_favouring(*order: int, n_vocab: int = 12) -> np.ndarray:
    """Logits where ``order[0]`` is the most likely token, then ``order[1]``..."""
    row = np.zeros(n_vocab, dtype=np.float32)
    for i, token in enumerate(order):
        row[token] = 10.0 - i
    return row


def test_only_tokens_continuing_a_span_are_allowed() -> None:
    c = CopyConstraint(CopySource(runs=((1, 2, 3, 4), (5, 2, 6)), end=(END,)))
    # Nothing copied yet: any token of the source, not the end.
    assert c.allowed().tolist() == [1, 2, 3, 4, 5, 6]
    assert c.choose(logits_favouring(7, END, 2)) == 2  # 7 and the end are not allowed
    # "2" stands in both runs: what follows either, or the end.
    assert c.allowed().tolist() == [3, 6, END]
    assert c.choose(logits_favouring(0, 3)) == 3
    assert c.allowed().tolist() == [4, END]
    assert c.choose(logits_favouring(4)) == 4
    # The end of a run: a span never crosses into the next one.
    assert c.allowed().tolist() == [END]
    assert c.choose(logits_favouring(5, END)) == END
    assert c.copied == 3


def test_greedy_answers_are_spans_of_one_run() -> None:
    rng = random.Random(3)
    runs = tuple(tuple(rng.randrange(8) for _ in range(rng.randrange(1, 12))) for _ in range(3))
    for _ in range(200):
        c = CopyConstraint(CopySource(runs=runs, end=(END,)))
        out: list[int] = []
        for _ in range(10):
            token = c.choose(np.array([rng.gauss(0, 1) for _ in range(12)], dtype=np.float32))
            if token == END:
                break
            out.append(token)
        assert out
        assert any(run[i : i + len(out)] == tuple(out) for run in runs for i in range(len(run)))


def test_an_end_bias_ends_spans_sooner() -> None:
    runs = ((1, 2, 3),)
    row = logits_favouring(2, 3, END)  # the end is third after "2" and "3"
    plain = CopyConstraint(CopySource(runs=runs, end=(END,)))
    biased = CopyConstraint(CopySource(runs=runs, end=(END,), end_bias=2.5))
    assert [plain.choose(row), plain.choose(row)] == [2, 3]
    assert [biased.choose(row), biased.choose(row)] == [2, END]  # 8 + 2.5 beats 9; never before a copied token


def test_without_a_source_decoding_is_unconstrained() -> None:
    c = CopyConstraint(CopySource(runs=()))
    assert c.choose(logits_favouring(7)) == 7


def test_token_logprob_is_the_log_softmax() -> None:
    row = np.array([1.0, 3.0, -2.0, 0.5], dtype=np.float32)
    expected = row - np.log(np.exp(row).sum())
    for token in range(4):
        assert token_logprob(np, row, token) == pytest.approx(float(expected[token]), abs=1e-5)
    assert math.isfinite(token_logprob(np, np.array([0.0, 90.0], dtype=np.float32), 0))


@pytest.fixture(scope="module")
def vocab(model_path: Path) -> LlamaModel:
    return LlamaModel(model_path, n_ctx=4096, vocab_only=True)


def test_the_source_is_the_passages_tokens_as_the_prompt_holds_them(vocab: LlamaModel) -> None:
    passages = ["The Harbor Bridge opened in 1932.\nIt spans 503 metres.", "Marie Duval (1840-1911) founded it."]
    builder = PromptBuilder("completion", vocab.tokenize, vocab.detokenize)
    prompt = builder.build("When did the bridge open?", passages, budget=1000)
    source = copy_source(prompt, vocab.tokenize)
    assert len(source.runs) == 2
    tokens = prompt.tokens
    for run in source.runs:
        assert any(tokens[i : i + len(run)] == list(run) for i in range(len(tokens)))
    # "\n" and its repeats, each one token; "Question:" is more than one.
    newlines = [vocab.tokenize("\n" * n)[1:] for n in (1, 2, 3)]
    assert all(len(t) == 1 for t in newlines)
    assert source.end == tuple(t[0] for t in newlines)

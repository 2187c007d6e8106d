"""Extractive decoding with the bundled model on the CPU, in process and
through a model process: the answer is a span of the passages."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rag.generation import GenerationParams
from rag.generation.llama import LlamaModel
from rag.generation.process import ModelProcess
from rag.prompt import PromptBuilder, copy_source

pytestmark = pytest.mark.slow

PASSAGES = [
    "The lighthouse on Gull Rock was built in 1871 by the engineer Thomas Reed. "
    "Its lamp was electrified in 1923 and automated in 1986.",
    "Gull Rock lies four miles off the coast. Seals breed on its northern shore every winter.",
]
QUESTIONS = [
    "Who built the lighthouse on Gull Rock?",
    "When was the lamp of the lighthouse automated?",
    "How far off the coast is Gull Rock?",
    "What breeds on the northern shore of Gull Rock?",
]


def test_extractive_answers_are_spans_of_the_passages(model_path: Path) -> None:
    local = LlamaModel(model_path, n_ctx=1024, threads=2, parallel=1, n_batch=256)
    remote = ModelProcess(model_path, n_ctx=1024, threads=2, parallel=1, n_batch=256)
    try:
        for question in QUESTIONS:
            prompt = PromptBuilder("completion", local.tokenize, local.detokenize).build(question, PASSAGES, 900)
            params = GenerationParams(max_tokens=24, stop=prompt.stop, logprobs=True,
                                      extractive=copy_source(prompt, local.tokenize))
            answer = local.generate(prompt.tokens, params)
            assert answer.text, question
            assert any(answer.text in p for p in PASSAGES), (question, answer.text)
            assert len(answer.token_logprobs) == answer.completion_tokens
            assert all(math.isfinite(lp) and lp <= 0.0 for lp in answer.token_logprobs)
            # The same through the model process (the params are sent as they are).
            there = remote.generate(prompt.tokens, params)
            assert there.text == answer.text
    finally:
        local.close()
        remote.close()

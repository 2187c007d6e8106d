"""Token log-probabilities of generated answers (``logprobs=True``), in
process and through a model process: the abstention model reads them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rag.generation import GenerationParams
from rag.generation.llama import LlamaModel
from rag.generation.process import ModelProcess

pytestmark = pytest.mark.slow

PROMPT = (
    "Context:\n[1] The Eiffel Tower was completed in 1889 in Paris.\n\n"
    "Question: When was the Eiffel Tower completed?\nShort answer:"
)


def test_logprobs_of_each_generated_token_in_process_and_in_a_child(model_path: Path) -> None:
    local = LlamaModel(model_path, n_ctx=1024, threads=2, parallel=1, n_batch=256)
    try:
        tokens = local.tokenize(PROMPT)
        plain = local.generate(tokens, GenerationParams(max_tokens=12, stop=("\n",)))
        scored = local.generate(tokens, GenerationParams(max_tokens=12, stop=("\n",), logprobs=True))
    finally:
        local.close()
    assert plain.token_logprobs == []
    assert scored.text == plain.text and "1889" in scored.text
    assert len(scored.token_logprobs) == scored.completion_tokens > 0
    assert all(math.isfinite(lp) and lp <= 0.0 for lp in scored.token_logprobs)
    assert max(scored.token_logprobs) > math.log(0.5)  # the model is sure of some of "1889"

    remote = ModelProcess(model_path, n_ctx=1024, threads=2, parallel=1, n_batch=256)
    try:
        there = remote.generate(tokens, GenerationParams(max_tokens=12, stop=("\n",), logprobs=True))
    finally:
        remote.close()
    assert there.text == scored.text
    assert there.token_logprobs == pytest.approx(scored.token_logprobs, abs=1e-3)

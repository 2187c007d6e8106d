"""Random sampling (temperature, top-p) with the real bundled model, with the
sampler chain in the decode graph (as on a GPU) and on the CPU side."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.generation import Generation, GenerationParams
from rag.generation.llama import LlamaModel
from rag.generation.types import Sampling

pytestmark = pytest.mark.slow

PROMPT = "Once upon a time, in a small village,"


@pytest.mark.parametrize("backend_sampling", [False, True])
def test_random_sampling_follows_its_seed_and_greedy_comes_back(model_path: Path, backend_sampling: bool) -> None:
    m = LlamaModel(model_path, n_ctx=256, threads=2, parallel=2, n_batch=128, prompt_cache=False,
                   backend_sampling=backend_sampling)
    try:
        tokens = m.tokenize(PROMPT)

        def twelve(sampling: Sampling | None = None) -> Generation:
            return m.generate(tokens, GenerationParams(max_tokens=12, ignore_eog=True, sampling=sampling))

        greedy = twelve()
        hot = Sampling(temperature=1.5, top_p=0.95, seed=7)
        first = twelve(hot)
        second = twelve(hot)
        others = {twelve(Sampling(1.5, 0.95, seed=s)).text for s in range(1, 5)}
        again = twelve()
    finally:
        m.close()
    assert first.completion_tokens == 12 and first.text == second.text  # same seed, same draws
    assert len(others | {greedy.text}) > 1  # other seeds draw other text
    assert again.text == greedy.text  # the slot is greedy again afterwards

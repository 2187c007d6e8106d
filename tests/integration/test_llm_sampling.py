"""Random sampling (temperature, top-p) with the real bundled model, with the
sampler chain in the decode graph (as on a GPU) and on the CPU side."""

from __future__ import annotations

from pathlib import Path

import pytest

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
        greedy = m.generate(tokens, max_tokens=12, ignore_eog=True)
        hot = Sampling(temperature=1.5, top_p=0.95, seed=7)
        first = m.generate(tokens, max_tokens=12, ignore_eog=True, sampling=hot)
        second = m.generate(tokens, max_tokens=12, ignore_eog=True, sampling=hot)
        others = {m.generate(tokens, max_tokens=12, ignore_eog=True, sampling=Sampling(1.5, 0.95, seed=s)).text
                  for s in range(1, 5)}
        again = m.generate(tokens, max_tokens=12, ignore_eog=True)
    finally:
        m.close()
    assert first.completion_tokens == 12 and first.text == second.text  # same seed, same draws
    assert len(others | {greedy.text}) > 1  # other seeds draw other text
    assert again.text == greedy.text  # the slot is greedy again afterwards

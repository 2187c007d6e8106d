"""The GGUF LoRA adapter setting, with the real bundled model and adapters
built for it by the test (tests/support/lora.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.errors import ConfigurationError
from rag.generation import GenerationParams, load_models
from rag.generation.llama import LlamaModel
from rag.settings import Settings
from tests.support.lora import write_lora

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"


def _answer(model: LlamaModel) -> str:
    try:
        return model.generate(model.tokenize(PROMPT), GenerationParams(max_tokens=12)).text
    finally:
        model.close()


def _model(path: Path, lora: Path | None = None, scale: float = 1.0) -> LlamaModel:
    return LlamaModel(path, n_ctx=256, threads=2, parallel=1, n_batch=64, lora_path=lora, lora_scale=scale)


@pytest.fixture(scope="module")
def base_answer(model_path: Path) -> str:
    return _answer(_model(model_path))


def test_an_adapter_that_adds_nothing_leaves_the_answer(model_path: Path, base_answer: str, tmp_path: Path) -> None:
    zero = write_lora(model_path, tmp_path / "zero.gguf", std=0.0)
    assert _answer(_model(model_path, zero)) == base_answer


def test_an_adapter_changes_the_answer_by_its_scale(model_path: Path, base_answer: str, tmp_path: Path) -> None:
    lora = write_lora(model_path, tmp_path / "noisy.gguf", std=0.05, seed=1)
    adapted = _answer(_model(model_path, lora))
    assert adapted != base_answer
    assert _answer(_model(model_path, lora, scale=0.0)) == base_answer
    # The same adapter through the settings the service starts from.
    settings = Settings(data_dir=tmp_path / "data", llm_model=str(model_path), llm_lora_path=str(lora),
                        llm_pool_size=1, llm_parallel=1, llm_n_ctx=512, llm_threads=2)
    [model] = load_models(settings)
    assert _answer(model) == adapted


def test_bad_adapters_are_refused_with_a_reason(model_path: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", llm_model=str(model_path),
                        llm_lora_path=str(tmp_path / "missing.gguf"))
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_models(settings)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF not really")
    with pytest.raises(ConfigurationError, match="LoRA adapter"):
        _model(model_path, broken)

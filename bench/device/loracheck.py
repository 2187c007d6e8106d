"""On the GPU machine: a GGUF LoRA adapter with full offload (run by
bench/device/run.sh). The adapters are built beforehand on the dev machine
with tests/support/lora.py: ``zero.gguf`` (B = 0) must leave the answer as it
is, ``noisy.gguf`` must change it, and at scale 0 leave it again."""

from __future__ import annotations

import sys
from pathlib import Path

from rag.generation import GenerationParams
from rag.generation.llama import LlamaModel

model_path, folder = Path(sys.argv[1]), Path(sys.argv[2])


def answer(lora: Path | None = None, scale: float = 1.0) -> str:
    m = LlamaModel(model_path, n_ctx=256, n_gpu_layers=-1, parallel=1, flash_attn="on", lora_path=lora,
                   lora_scale=scale)
    try:
        return m.generate(m.tokenize("The capital of France is"), GenerationParams(max_tokens=12)).text
    finally:
        m.close()


base = answer()
zero = answer(folder / "zero.gguf")
noisy = answer(folder / "noisy.gguf")
noisy0 = answer(folder / "noisy.gguf", 0.0)
print(f"lora: base={base!r} zero={zero!r} noisy={noisy!r} noisy@0={noisy0!r}")
print(f"lora: zero==base {zero == base}; noisy!=base {noisy != base}; noisy@0==base {noisy0 == base}")

"""On the GPU machine: does loading the CUDA model survive what was imported
before it? Each case runs in a fresh interpreter; prints its exit status."""

from __future__ import annotations

import subprocess
import sys

MODEL = sys.argv[1]
LOAD = (
    "from pathlib import Path; from rag.generation import GenerationParams; "
    "from rag.generation.llama import LlamaModel; "
    f"m = LlamaModel(Path({MODEL!r}), n_ctx=256, n_gpu_layers=-1, parallel=1); "
    "print('answer', repr(m.generate(m.tokenize('The capital of France is'), GenerationParams(max_tokens=6)).text)); "
    "m.close()"
)
CASES = {
    "nothing first": LOAD,
    "numpy first": "import numpy; " + LOAD,
    "torch first": "import torch; " + LOAD,
    "sentence_transformers first": "import sentence_transformers; " + LOAD,
    "llama_cpp, then numpy": "import llama_cpp; import numpy; " + LOAD,
    "llama_cpp, then torch": "import llama_cpp; import torch; " + LOAD,
    "numpy first, OPENBLAS_NUM_THREADS=1": "import os; os.environ['OPENBLAS_NUM_THREADS']='1'; import numpy; " + LOAD,
}
for name, code in CASES.items():
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    answer = [line for line in p.stdout.splitlines() if line.startswith("answer")]
    print(f"importorder: {name}: exit {p.returncode} {answer[0] if answer else ''}", flush=True)

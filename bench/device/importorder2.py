"""Follow-up of importorder.py: the error output of the failing cases, and
loading the CUDA model before torch is imported."""

from __future__ import annotations

import subprocess
import sys

MODEL = sys.argv[1]
LOAD = (
    "from pathlib import Path; from rag.generation import GenerationParams; "
    "from rag.generation.llama import LlamaModel; "
    f"m = LlamaModel(Path({MODEL!r}), n_ctx=256, n_gpu_layers=-1, parallel=1); "
    "print('answer', repr(m.generate(m.tokenize('The capital of France is'), GenerationParams(max_tokens=6)).text)); "
)
CASES = {
    "numpy first": "import numpy; " + LOAD,
    "llama_cpp, then torch": "import llama_cpp; import torch; " + LOAD,
    "model loaded, then torch and an embedding": LOAD
    + "import torch, sentence_transformers; print('torch', torch.ones(2).sum().item(), torch.cuda.is_available()); "
    + "print('answer2', repr(m.generate(m.tokenize('The capital of Italy is'), GenerationParams(max_tokens=6)).text))",
}
for name, code in CASES.items():
    p = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True, timeout=120)
    lines = [x for x in (p.stdout + p.stderr).splitlines()
             if not x.startswith(("llama_", "load", "print_info", "graph_", "sched_", ".", "  ", "init"))]
    print(f"importorder2: {name}: exit {p.returncode}", flush=True)
    for x in lines[-12:]:
        print("    " + x[:300], flush=True)

"""On the GPU machine: the service's generation path with full offload and
flash attention, for each KV-cache type (run by bench/device/run.sh)."""

from __future__ import annotations

from pathlib import Path

from rag.generation import GenerationParams
from rag.generation.llama import LlamaModel

MODEL = Path("/root/w/model.gguf")
PROMPT = (
    "Context:\n[1] The Eiffel Tower was completed in 1889 and is located in Paris.\n\n"
    "Question: When was the Eiffel Tower completed?\nShort answer:"
)

for kv in ("f16", "q8_0", "q4_0"):
    m = LlamaModel(MODEL, n_ctx=4096, threads=16, n_gpu_layers=-1, parallel=4, flash_attn="on", kv_cache_type=kv)
    g = m.generate(m.tokenize(PROMPT), GenerationParams(max_tokens=16, stop=("\n",)))
    job = m.submit(m.tokenize("Once upon a time"), GenerationParams(max_tokens=129, ignore_eog=True))
    job.result()
    t = job.token_times
    print(
        f"kv={kv}: answer={g.text!r} ttft={g.time_to_first_token_s * 1000:.1f}ms "
        f"tg={(len(t) - 1) / (t[-1] - t[0]):.0f} tok/s offload={m.n_gpu_layers}",
        flush=True,
    )
    m.close()

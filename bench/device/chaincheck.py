"""On the GPU machine (e2e.sh chain): the same greedy requests through the
service's LlamaModel with chained decode steps (llama_decode_chained, the
default where llama.cpp has it) and without (RAG_LLM_CHAIN_STEPS=false):
16 streams submitted together, of varied lengths, half ending at a stop
string; then 4 more arriving while the first ones run. Prints how many
answers are the same, chained steps counted, and the first differences.
Batched float sums on a GPU may round differently between two runs whose
steps hold other rows, so a near-tie can go the other way later in an
answer: "same start" compares the first 40 characters.

    python3 bench/device/chaincheck.py MODEL.gguf
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rag.generation import GenerationParams
from rag.generation.llama import LlamaModel
from rag.generation.native import QuickCalls

TOPICS = ["the Eiffel Tower", "the Amazon river", "photosynthesis", "the Roman empire", "a lighthouse keeper",
          "the moon landing", "a chess opening", "volcanoes", "the printing press", "honey bees", "the violin",
          "glaciers", "the first computers", "a desert city", "tea ceremonies", "the Olympic games"]


def run(path: Path, chain: bool) -> tuple[list[tuple[str, int, str]], int]:
    m = LlamaModel(path, n_ctx=1024, threads=16, n_gpu_layers=-1, parallel=64, flash_attn="on", chain_steps=chain)
    chained: list[int] = []

    def counted(lc: QuickCalls, ctx: Any, batch: Any, prev: Any, seen: list[int] = chained) -> int:
        seen.append(batch.n_tokens)
        return QuickCalls.decode_chained(lc, ctx, batch, prev)

    try:
        assert m._scheduler is not None
        print(f"chain={chain}: scheduler chains {m._scheduler._chain}, sampler {m.sampler}", flush=True)
        m._scheduler._lc.decode_chained = types.MethodType(counted, m._scheduler._lc)
        prompts = [f"Here is a short essay about {t}.\n\n" for t in TOPICS]
        params = [GenerationParams(max_tokens=40 + 8 * (i % 8), stop=("\n",) if i % 2 else ()) for i in range(16)]
        jobs = [m.submit(m.tokenize(p), params[i]) for i, p in enumerate(prompts)]
        jobs[0].result(timeout=120)
        late = [m.submit(m.tokenize(f"A few facts about {t}:"), GenerationParams(max_tokens=48)) for t in TOPICS[:4]]
        out = [(g.text, g.completion_tokens, g.finish_reason) for g in (j.result(timeout=120) for j in jobs + late)]
    finally:
        m.close()
    return out, len(chained)


def main() -> None:
    path = Path(sys.argv[1])
    plain, _ = run(path, False)
    chained, n = run(path, True)
    same = sum(a == b for a, b in zip(plain, chained, strict=True))
    start = sum(a[0][:40] == b[0][:40] for a, b in zip(plain, chained, strict=True))
    reasons = sorted({r for _, _, r in chained})
    print(f"chaincheck: {same} of {len(plain)} answers the same, {start} the same start; "
          f"{n} chained steps; finish reasons {reasons}", flush=True)
    for a, b in zip(plain, chained, strict=True):
        if a != b:
            print(f"chaincheck differs: {a!r} | {b!r}", flush=True)


if __name__ == "__main__":
    main()

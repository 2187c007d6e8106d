"""Which prompt style suits a model? Exact match and F1 (SQuAD normalisation) of
generated answers for each style, on the same questions and the same retrieved
context, in one process.

    python bench/prompt_style.py --data-dir /tmp/squad/data --collection squad --sample 30

The collection must already be indexed (see bench/squad_ask.py); the service
must not be running on that data directory (Qdrant local mode is one process).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script too, as bench/generation.py

from bench.report import print_squad_scores
from rag.evaluation import exact_match, f1_score
from rag.generation import GenerationParams
from rag.options import SearchOptions
from rag.prompt import PromptBuilder, ResolvedPromptStyle
from rag.settings import Settings
from runtime import build_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--collection", default="squad")
    parser.add_argument("--qa", type=Path, default=Path("../shared/eval/squad-dev/qa.jsonl"))
    parser.add_argument("--sample", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()

    settings = Settings(data_dir=args.data_dir, llm_n_ctx=2048, embedded_worker=False)
    runtime = build_runtime(settings, "api")
    assert runtime.pool is not None
    model = runtime.pool.models[0]
    questions = [json.loads(line) for line in args.qa.read_text().splitlines() if line.strip()]
    sample = random.Random(args.seed).sample([q for q in questions if q["answers"]], args.sample)
    styles: list[ResolvedPromptStyle] = ["gemma-chat", "completion"]
    scores: dict[str, list[tuple[float, float]]] = {s: [] for s in styles}
    started = time.perf_counter()
    for q in sample:
        hits = runtime.service.search(args.collection, q["question"], SearchOptions(top_k=args.top_k))
        for style in styles:
            prompt = PromptBuilder(style, model.tokenize, model.detokenize).build(
                q["question"], [h.text for h in hits], budget=settings.llm_n_ctx - args.max_tokens
            )
            answer = model.generate(prompt.tokens, GenerationParams(max_tokens=args.max_tokens, stop=prompt.stop)).text
            scores[style].append((exact_match(answer, q["answers"]), f1_score(answer, q["answers"])))
    runtime.close()
    print(f"{len(sample)} answerable squad-dev questions, top-{args.top_k} retrieved chunks as context, "
          f"{time.perf_counter() - started:.0f}s")
    print_squad_scores("prompt style", scores)


if __name__ == "__main__":
    main()

"""Which prompt and context give the bundled model its best answers? EM/F1
(SQuAD) of each variant on the same answerable squad-dev questions and the
same retrieved passages, in one process (the collection built by
bench/answers.py).

    nice -n 10 python -m bench.answer_variants --sample 40
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from bench.report import print_squad_scores
from rag.evaluation import exact_match, f1_score
from rag.generation import GenerationParams
from rag.options import SearchOptions
from rag.prompt import PromptBuilder
from rag.settings import Settings
from runtime import build_runtime

# name -> (worked examples, passages, reversed order, max tokens)
VARIANTS = {
    "completion, top 5": (False, 5, False, 24),
    "completion, top 3": (False, 3, False, 24),
    "examples, top 5": (True, 5, False, 24),
    "examples, top 3": (True, 3, False, 24),
    "examples, top 3, best passage last": (True, 3, True, 24),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/answers/data"))
    parser.add_argument("--qa", type=Path, default=Path("/work/shared/eval/squad-dev/qa.jsonl"))
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--variants", default=";".join(VARIANTS), help="names separated by ;")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=args.data_dir, llm_n_ctx=2048, embedded_worker=False, llm_threads=args.threads,
        llm_parallel=1, embedding_threads=1, llm_isolation="inline",
    )
    runtime = build_runtime(settings, "api")
    assert runtime.pool is not None
    model = runtime.pool.models[0]
    rows = [json.loads(line) for line in args.qa.read_text().splitlines() if line.strip()]
    sample = random.Random(args.seed).sample([r for r in rows if r["answers"]], args.sample)
    chosen = [v for v in args.variants.split(";") if v]
    scores: dict[str, list[tuple[float, float]]] = {v: [] for v in chosen}
    started = time.perf_counter()
    for n, q in enumerate(sample, start=1):
        hits = runtime.service.search("squad", q["question"], SearchOptions(top_k=5))
        for name in chosen:
            examples, k, reverse, max_tokens = VARIANTS[name]
            passages = [h.text for h in hits[:k]]
            if reverse:
                passages.reverse()
            builder = PromptBuilder("completion", model.tokenize, model.detokenize, examples=examples)
            prompt = builder.build(q["question"], passages, budget=settings.llm_n_ctx - max_tokens)
            answer = model.generate(prompt.tokens, GenerationParams(max_tokens=max_tokens, stop=prompt.stop)).text
            scores[name].append((exact_match(answer, q["answers"]), f1_score(answer, q["answers"])))
        if n % 10 == 0:
            print(f"{n} questions, {time.perf_counter() - started:.0f}s", flush=True)
    runtime.close()
    print(f"{len(sample)} answerable squad-dev questions (seed {args.seed}), {time.perf_counter() - started:.0f}s")
    print_squad_scores("variant", scores)


if __name__ == "__main__":
    main()

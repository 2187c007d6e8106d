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
from dataclasses import dataclass
from pathlib import Path

from bench.report import print_squad_scores
from rag.evaluation import exact_match, f1_score
from rag.generation import GenerationParams
from rag.grounding import question_sentences
from rag.options import SearchOptions
from rag.prompt import PromptBuilder, copy_source
from rag.settings import Settings
from runtime import build_runtime


@dataclass(frozen=True)
class Variant:
    examples: bool = True  # worked examples open the prompt
    passages: int = 3  # the best k of the retrieved passages
    best_last: bool = False  # passages in reverse rank order
    max_tokens: int = 24
    extractive: bool = False  # the answer copied from the passages (rag/generation/extractive.py)
    end_bias: float = 0.0  # added to the end tokens' logits (extractive): shorter spans
    sentences: int = 0  # extractive: copy from the n sentences sharing most words with the question (0: all)


VARIANTS = {
    "completion, top 5": Variant(examples=False, passages=5),
    "completion, top 3": Variant(examples=False),
    "examples, top 5": Variant(passages=5),
    "examples, top 3": Variant(),
    "examples, top 3, best passage last": Variant(best_last=True),
    "examples, top 2": Variant(passages=2),
    "examples, top 3, 8 tokens": Variant(max_tokens=8),
    "examples, top 3, 16 tokens": Variant(max_tokens=16),
    "examples, top 3, 32 tokens": Variant(max_tokens=32),
    "extractive, top 3": Variant(extractive=True),
    "extractive, top 2": Variant(passages=2, extractive=True),
    "extractive, top 5": Variant(passages=5, extractive=True),
    "extractive, top 3, best passage last": Variant(best_last=True, extractive=True),
    "extractive, top 3, 8 tokens": Variant(max_tokens=8, extractive=True),
    "extractive, top 3, 16 tokens": Variant(max_tokens=16, extractive=True),
    "extractive, top 3, 32 tokens": Variant(max_tokens=32, extractive=True),
    "extractive, top 3, no examples": Variant(examples=False, extractive=True),
    "extractive, top 3, end bias 1": Variant(extractive=True, end_bias=1.0),
    "extractive, top 3, end bias 2": Variant(extractive=True, end_bias=2.0),
    "extractive, top 3, end bias 4": Variant(extractive=True, end_bias=4.0),
    "extractive, top 2, end bias 2": Variant(passages=2, extractive=True, end_bias=2.0),
    "extractive, top 2, best passage last": Variant(passages=2, best_last=True, extractive=True),
    "extractive, top 5, best passage last": Variant(passages=5, best_last=True, extractive=True),
    "extractive, top 3, best passage last, end bias 2": Variant(best_last=True, extractive=True, end_bias=2.0),
    "extractive, top 3, best passage last, end bias 4": Variant(best_last=True, extractive=True, end_bias=4.0),
    "extractive, top 3, best passage last, best sentence": Variant(best_last=True, extractive=True, sentences=1),
    "extractive, top 3, best passage last, best 2 sentences": Variant(best_last=True, extractive=True, sentences=2),
    "extractive, top 3, best passage last, best 3 sentences": Variant(best_last=True, extractive=True, sentences=3),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/answers/data"))
    parser.add_argument("--qa", type=Path, default=Path("/work/shared/eval/squad-dev/qa.jsonl"))
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--variants", default=";".join(VARIANTS), help="names separated by ;")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--offset", type=int, default=0, help="skip the first questions of the sample")
    parser.add_argument("--show", action="store_true", help="print every answer")
    args = parser.parse_args()

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=args.data_dir, llm_n_ctx=2048, embedded_worker=False, llm_threads=args.threads,
        llm_parallel=1, embedding_threads=1, llm_isolation="inline",
    )
    runtime = build_runtime(settings, "api")
    assert runtime.pool is not None
    model = runtime.pool.models[0]
    rows = [json.loads(line) for line in args.qa.read_text().splitlines() if line.strip()]
    # One seeded order of all answerable questions: --offset/--sample take
    # consecutive slices of it (chunks of one run, merged by hand).
    sample = [r for r in rows if r["answers"]]
    random.Random(args.seed).shuffle(sample)
    sample = sample[args.offset : args.offset + args.sample]
    chosen = [v for v in args.variants.split(";") if v]
    scores: dict[str, list[tuple[float, float]]] = {v: [] for v in chosen}
    started = time.perf_counter()
    for n, q in enumerate(sample, start=1):
        hits = runtime.service.search("squad", q["question"], SearchOptions(top_k=5))
        for name in chosen:
            v = VARIANTS[name]
            passages = [h.text for h in hits[: v.passages]]
            builder = PromptBuilder(
                "completion", model.tokenize, model.detokenize, examples=v.examples, best_last=v.best_last
            )
            prompt = builder.build(q["question"], passages, budget=settings.llm_n_ctx - v.max_tokens)
            texts = question_sentences(q["question"], prompt.passages, v.sentences) if v.sentences else None
            copy = copy_source(prompt, model.tokenize, v.end_bias, texts) if v.extractive else None
            params = GenerationParams(max_tokens=v.max_tokens, stop=prompt.stop, extractive=copy)
            answer = model.generate(prompt.tokens, params).text
            scores[name].append((exact_match(answer, q["answers"]), f1_score(answer, q["answers"])))
            if args.show:
                print(f"  {name}: {answer!r} (gold {q['answers'][0]!r})", flush=True)
        if n % 10 == 0:
            print(f"{n} questions, {time.perf_counter() - started:.0f}s", flush=True)
    runtime.close()
    print(f"{len(sample)} answerable squad-dev questions (seed {args.seed}, offset {args.offset}), "
          f"{time.perf_counter() - started:.0f}s")
    print_squad_scores("variant", scores)


if __name__ == "__main__":
    main()

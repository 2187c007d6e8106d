"""How long fitting an /ask prompt takes, tokenizer calls included, with the
model in its own process as the service runs it (``ModelProcess``): the
passages of a question placed into a Gemma chat or completion prompt by
``PromptBuilder.build``, after the texts it will most likely tokenize were
asked for in one round trip (``likely_texts``, ``TextModel.tokenize_many``),
as ``Answering`` does. Each round uses new texts (nothing cached).

    python bench/prompt_build.py --model MODEL.gguf [--passages 5] [--words 120] [--rounds 9]

PROMPT_BUILD_REPO=DIR: that checkout's code (before/after on one machine).

``--refused`` (give a ``--budget`` the whole prompt exceeds): the ways
``Answering`` goes when the whole prompt does not fit: sent as text and
refused by the model process (``submit_text``, ``PromptTooLong``), then
``fitting_texts`` in one round trip; or predicted too long (characters per
token), ``likely_texts`` and ``fitting_texts`` in one round trip; against
session 10's way (``likely_texts``, then each passage's texts one round trip
at a time); and the way it goes since session 16, fitted in the model
process in one round trip (``TextModel.fit_prompt``); alternating round by
round. ``--same-passages``: every round the same passages (new questions),
as a collection's best passages come back request after request.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [os.environ.get("PROMPT_BUILD_REPO") or str(_HERE.parent),
               *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

from rag.generation.process import ModelProcess  # noqa: E402
from rag.prompt import PromptBuilder  # noqa: E402

try:
    from rag.prompt import PromptRecipe
except ImportError:  # code before session 16 (PROMPT_BUILD_REPO)
    PromptRecipe = None  # type: ignore[assignment,misc]

FILLER = ("The scheduler packs the prompts of a burst into whole micro-batches, one sequence each, "
          "and the running streams' next tokens into one more.")


def passage(words: int, salt: str) -> str:
    filler = FILLER.split()
    return " ".join([salt, *(filler[i % len(filler)] for i in range(words))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--style", choices=["gemma-chat", "completion"], default="gemma-chat")
    ap.add_argument("--passages", type=int, default=5)
    ap.add_argument("--words", type=int, default=120)
    ap.add_argument("--budget", type=int, default=3800)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--refused", action="store_true")
    ap.add_argument("--same-passages", action="store_true")
    args = ap.parse_args()
    model = ModelProcess(args.model, n_ctx=4096, threads=2, parallel=1, n_gpu_layers=0)
    if args.refused:
        try:
            refused(model, args)
        finally:
            model.close()
        return
    try:
        times, tokens = [], 0
        for r in range(args.rounds + 1):
            question = f"How does the scheduler admit prompts? ({r})"
            passages = [passage(args.words, f"r{r}p{i}") for i in range(args.passages)]
            builder = PromptBuilder(args.style, model.tokenize, model.detokenize)
            started = time.perf_counter()
            likely = getattr(builder, "likely_texts", None)  # absent in code before it
            if likely is not None:
                model.tokenize_many(likely(question, passages))
            prompt = builder.build(question, passages, budget=args.budget)
            if r:  # the first round warms the model process up
                times.append(time.perf_counter() - started)
            tokens = len(prompt.tokens)
        ms = sorted(1000 * t for t in times)
        print(f"prompt build  {args.style}  {args.passages} passages  {tokens} tokens  "
              f"median {statistics.median(ms):.2f} ms  ({ms[0]:.2f}-{ms[-1]:.2f}, {len(ms)} rounds)")
    finally:
        model.close()


def refused(model: ModelProcess, args: argparse.Namespace) -> None:
    from rag.generation import GenerationParams, PromptTooLong

    times: dict[str, list[float]] = {"refused, fitting_texts": [], "predicted, likely+fitting_texts": [],
                                      "likely_texts, one by one": []}
    if PromptRecipe is not None:
        times["fit_prompt, in the model process"] = []
    tokens = 0
    for r in range(args.rounds + 1):
        for way in times:
            question = f"How does the scheduler admit prompts? ({r} {way})"
            salt = "" if args.same_passages else f"r{r}"
            passages = [passage(args.words, f"{salt}p{i}{way[:3]}") for i in range(args.passages)]
            builder = PromptBuilder(args.style, model.tokenize, model.detokenize)
            started = time.perf_counter()
            if way.startswith("fit_prompt"):
                prompt = model.fit_prompt(PromptRecipe(args.style), question, passages, args.budget)
                if r:
                    times[way].append(time.perf_counter() - started)
                continue
            if way.startswith("refused"):
                job = model.submit_text(builder.text(question, passages), args.budget, GenerationParams(max_tokens=8))
                try:
                    job.result(60)
                    raise SystemExit("the whole prompt fitted: give a smaller --budget")
                except PromptTooLong:
                    pass
                model.tokenize_many(builder.fitting_texts(question, passages))
            elif way.startswith("predicted"):
                both = builder.likely_texts(question, passages) + builder.fitting_texts(question, passages)
                model.tokenize_many(both)
            else:
                model.tokenize_many(builder.likely_texts(question, passages))
            prompt = builder.build(question, passages, budget=args.budget)
            if r:
                times[way].append(time.perf_counter() - started)
            tokens = len(prompt.tokens)
    for way, ts in times.items():
        ms = sorted(1000 * t for t in ts)
        print(f"prompt build  {args.style}  {args.passages} passages  {tokens} tokens  {way}: "
              f"median {statistics.median(ms):.2f} ms  ({ms[0]:.2f}-{ms[-1]:.2f}, {len(ms)} rounds)")


if __name__ == "__main__":
    main()

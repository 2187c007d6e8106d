"""How long fitting a long conversation, or an oversized question, into the
context takes: ``PromptBuilder.build`` with the model's own tokenizer
(llama.cpp, in this process: the tokenizer's cost, without the model
process's round trips), for a chat without passages as
``/v1/chat/completions`` sends it.

    python bench/long_chat.py --model MODEL.gguf [--turns 20,100,400] [--words 400]
        [--question-chars 100000,2000000] [--budget 2040] [--rounds 3]

Each turn of the history has ``--words`` words (about 1.3 tokens each), each
round new texts. LONG_CHAT_REPO=DIR: that checkout's code (before/after on
one machine)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [os.environ.get("LONG_CHAT_REPO") or str(_HERE.parent),
               *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

from rag.generation.llama import LlamaModel  # noqa: E402
from rag.prompt import PromptBuilder  # noqa: E402

SENTENCE = "the team reads the handbook before each shift and keeps it at hand during inspections"
WORDS = SENTENCE.split()


def text(words: int, salt: str) -> str:
    return " ".join([salt, *(WORDS[i % len(WORDS)] for i in range(words))])


def timed(model: LlamaModel, question: str, history: list[tuple[str, str]], budget: int) -> tuple[float, int, int]:
    builder = PromptBuilder("gemma-chat", model.tokenize, model.detokenize, history=history, retrieval=False)
    t = time.perf_counter()
    prompt = builder.build(question, [], budget)
    return time.perf_counter() - t, len(prompt.tokens), len(builder._history)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--turns", default="20,100,400")
    ap.add_argument("--words", type=int, default=400)
    ap.add_argument("--question-chars", default="100000,2000000")
    ap.add_argument("--budget", type=int, default=2040)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    model = LlamaModel(args.model, n_ctx=4096, vocab_only=True)
    for n in (int(x) for x in args.turns.split(",") if x):
        runs = []
        for r in range(args.rounds):
            history = [("user" if i % 2 == 0 else "assistant", text(args.words, f"r{r}t{i}")) for i in range(n)]
            runs.append(timed(model, text(20, f"q{r}"), history, args.budget))  # type: ignore[arg-type]
        s = [x[0] for x in runs]
        print(f"long chat: {n} turns of {args.words} words, budget {args.budget}: build median "
              f"{1000 * statistics.median(s):.1f} ms ({1000 * min(s):.1f}-{1000 * max(s):.1f}), prompt "
              f"{runs[0][1]} tokens, {runs[0][2]} turns kept", flush=True)
    for chars in (int(x) for x in args.question_chars.split(",") if x):
        runs = []
        for r in range(args.rounds):
            question = (text(chars // 5, f"q{r}") + " ")[:chars]
            runs.append(timed(model, question, [], args.budget))
        s = [x[0] for x in runs]
        print(f"long question: {chars:,} characters, budget {args.budget}: build median "
              f"{1000 * statistics.median(s):.1f} ms ({1000 * min(s):.1f}-{1000 * max(s):.1f}), prompt "
              f"{runs[0][1]} tokens", flush=True)


if __name__ == "__main__":
    main()

"""Prompt assembly, fitted to the model's context window.

Two styles, chosen per model:

- ``gemma-chat``: Gemma's chat format, assembled here rather than by llama.cpp,
  since a GGUF may carry no template (llama-cpp-python then falls back to a
  llama-2 format, which is wrong for Gemma). Gemma has no system role, so the
  instructions open the first user turn::

      <start_of_turn>user\\n{instructions}\\n\\n{context}\\n\\nQuestion: …<end_of_turn>\\n
      <start_of_turn>model\\n

- ``completion``: a plain completion prompt ending in ``Short answer:``. Base
  (not instruction-tuned) models such as the bundled Gemma 3 270M answer far
  better this way (docs/benchmarks.md).

Token counts use the model's own tokenizer; the context is trimmed to fit
``n_ctx - max_tokens``, never overflowing.

Chat history (earlier turns of an OpenAI-style conversation) comes before the
context passages, oldest first, so that the prompt of the next turn starts with
the same tokens as this one and llama.cpp reuses their KV cache; the oldest
turns are dropped first when the budget is short. Without passages (plain chat
with the base model, no collection) the context block is left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rag.generation.types import CopySource
from rag.gguf_info import read_gguf_string

__all__ = [
    "MAX_CHARS_PER_TOKEN",
    "BuiltPrompt",
    "PromptBuilder",
    "PromptRecipe",
    "ResolvedPromptStyle",
    "Turn",
    "copy_source",
    "copy_texts",
    "detect_prompt_style",
    "is_gemma_template",
    "reachable",
]

log = logging.getLogger(__name__)

ResolvedPromptStyle = Literal["gemma-chat", "completion"]

Turn = tuple[Literal["user", "assistant"], str]

# Well above the characters one token covers (Gemma 3's longest token has 31):
# a text longer than budget × this cannot fit in budget tokens, so no more of
# it need ever be tokenized (``reachable``).
MAX_CHARS_PER_TOKEN = 128


def reachable(question: str, history: Sequence[Turn], budget: int) -> tuple[str, list[Turn]]:
    """What of a conversation could be kept in ``budget`` tokens at all: the
    question's first ``budget * MAX_CHARS_PER_TOKEN`` characters, and the
    newest turns of the history that hold no more characters together (and
    no more than ``budget // 2`` turns: a turn takes more than two tokens in
    either style), in whole pairs as ``PromptBuilder`` drops them (oldest
    first). The rest could never fit, and tokenizing it costs about 0.4 µs a
    character (llama.cpp's Gemma tokenizer on the dev VM): a 20 MB message
    took 36 s."""
    limit = budget * MAX_CHARS_PER_TOKEN
    total = kept = 0
    for _, text in reversed(history):
        total += len(text)
        if total > limit or kept == budget // 2:
            break
        kept += 1
    drop = len(history) - kept
    drop += drop % 2 if len(history) - drop > 1 else 0
    return question[:limit], list(history[drop:])


START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"

INSTRUCTIONS = (
    "Answer the question using only the numbered context passages below. "
    "Cite the passages you used as [n]. If the passages do not contain the answer, "
    "say that the documents don't contain it."
)


def is_gemma_template(template: str) -> bool:
    """Whether a (Jinja) chat template renders Gemma's turns: the ones this
    module assembles as ``gemma-chat``."""
    return START_OF_TURN in template and END_OF_TURN in template and "model" in template


def detect_prompt_style(model_path: Path, *, base_model: bool = False) -> ResolvedPromptStyle:
    """The style for ``auto``: ``completion`` for a known base model (the
    bundled one); else from the chat template the GGUF carries
    (``tokenizer.chat_template``): Gemma's turns -> ``gemma-chat``; another
    format (ChatML, Llama…) -> ``completion``, since this module renders no
    other chat format; no template -> ``gemma-chat`` (Gemma GGUFs converted
    without one are the design target)."""
    if base_model:
        return "completion"
    template = read_gguf_string(model_path, "tokenizer.chat_template")
    if template is None:
        return "gemma-chat"
    if is_gemma_template(template):
        return "gemma-chat"
    log.warning("%s carries a chat template that is not Gemma's: using plain completion prompts", model_path.name)
    return "completion"


# Worked examples that open a completion prompt (``examples=True``): a base
# model copies their form, a short span taken from the context. Invented text,
# nothing from any evaluation set. They come first, so that every prompt
# starts with the same tokens and llama.cpp reuses their KV cache.
EXAMPLES = (
    "Context:\n[1] The Harbor Bridge opened in 1932 after eight years of construction. "
    "Its steel arch spans 503 metres and carries eight lanes of traffic.\n\n"
    "Question: How long did the construction of the Harbor Bridge take?\nShort answer: eight years\n\n"
    "Context:\n[1] Marie Duval founded the Lyon Botanical Society in 1871. The society's first garden "
    "was planted on land donated by the city council.\n\n"
    "Question: Who donated the land for the society's first garden?\nShort answer: the city council\n\n"
)


@dataclass(frozen=True)
class BuiltPrompt:
    text: str
    tokens: list[int]
    passages_used: int  # how many passages (in rank order) made it in, even partly
    truncated: bool  # whether any passage was cut or left out
    stop: tuple[str, ...]
    passages: tuple[str, ...] = ()  # the passages as the prompt holds them (the last one maybe cut)


def copy_source(
    prompt: BuiltPrompt,
    tokenize: Callable[[str], list[int]],
    end_bias: float = 0.0,
    texts: Sequence[str] | None = None,
) -> CopySource:
    """Extractive decoding's source for ``prompt``: each of its passages in
    tokens as they read there (after a blank: ``[n] text``), and the tokens
    that end a copied answer: each stop string that is one token, also
    repeated (Gemma has one token for "\n\n", which the worked examples put
    after each answer). ``texts``: copy from these (parts of the passages)
    instead."""

    def plain(text: str) -> list[int]:
        tokens, bos = tokenize(text), tokenize("")
        return tokens[len(bos) :] if bos and tokens[: len(bos)] == bos else tokens

    copied, ends = _copy_texts(prompt.passages if texts is None else texts, prompt.stop)
    runs = tuple(tuple(plain(text)) for text in copied)
    end = tuple(dict.fromkeys(t[0] for t in (plain(text) for text in ends) if len(t) == 1))
    return CopySource(runs=runs, end=end, end_bias=end_bias)


def copy_texts(passages: Sequence[str], stop: Sequence[str]) -> list[str]:
    """The texts ``copy_source`` tokenizes for these passages (with the BOS
    check's ""), to be tokenized beforehand in one go."""
    copied, ends = _copy_texts(passages, stop)
    return [*copied, *ends, ""]


def _copy_texts(passages: Sequence[str], stop: Sequence[str]) -> tuple[list[str], list[str]]:
    return [" " + text.strip() for text in passages], [s * n for s in stop for n in (1, 2, 3)]


@dataclass(frozen=True)
class PromptRecipe:
    """What a ``PromptBuilder`` is made of, its tokenizer aside. It pickles: a
    model in another process fits the prompt beside its own tokenizer in one
    round trip (``TextModel.fit_prompt``), where fitting from here took one
    for each text the guess had missed (the cut passage, its detokenized
    head, the final prompt), each some 12 ms under a 16-stream load."""

    style: ResolvedPromptStyle
    history: tuple[Turn, ...] = ()
    retrieval: bool = True
    best_last: bool = False

    def builder(self, tokenize: Callable[[str], list[int]], detokenize: Callable[[list[int]], str]) -> PromptBuilder:
        return PromptBuilder(
            self.style, tokenize, detokenize, history=self.history, retrieval=self.retrieval, best_last=self.best_last
        )


class PromptBuilder:
    """Builds prompts for one model: its style and its tokenizer.

    ``tokenize`` must treat special-token text (``<start_of_turn>``) as the special
    token and add BOS when the model wants one; ``detokenize`` is its inverse.
    """

    def __init__(
        self,
        style: ResolvedPromptStyle,
        tokenize: Callable[[str], list[int]],
        detokenize: Callable[[list[int]], str],
        *,
        history: Sequence[Turn] = (),
        retrieval: bool = True,
        examples: bool = True,
        best_last: bool = False,
    ) -> None:
        self.style = style
        # The passages that fit, in rank order, written from the last to the
        # best, each still numbered by its rank: the best passage then stands
        # next to the question (docs/benchmarks.md, issue 14).
        self._best_last = best_last
        self._examples = examples and style == "completion" and retrieval
        self._tokenize = tokenize
        self._detokenize = detokenize
        self._history = list(history)
        self._retrieval = retrieval

    def _render_history(self) -> str:
        return "".join(self._render_turns())

    def _render_turns(self) -> list[str]:
        if self.style == "gemma-chat":
            parts = []
            for i, (role, text) in enumerate(self._history):
                body = text.strip()
                if i == 0 and role == "user" and self._retrieval:
                    body = f"{INSTRUCTIONS}\n\n{body}"
                parts.append(f"{START_OF_TURN}{'user' if role == 'user' else 'model'}\n{body}{END_OF_TURN}\n")
            return parts
        return [f"Question: {text.strip()}\n" if role == "user" else f"Short answer: {text.strip()}\n\n"
                for role, text in self._history]

    def _render(self, question: str, passages: Sequence[str]) -> str:
        history = self._render_history()
        numbered = [f"[{i}] {text.strip()}" for i, text in enumerate(passages, start=1)]
        context = "\n\n".join(reversed(numbered) if self._best_last else numbered)
        if self.style == "gemma-chat":
            if not self._retrieval:
                return f"{history}{START_OF_TURN}user\n{question.strip()}{END_OF_TURN}\n{START_OF_TURN}model\n"
            lead = "" if self._history else f"{INSTRUCTIONS}\n\n"
            return (
                f"{history}{START_OF_TURN}user\n{lead}Context:\n{context}\n\n"
                f"Question: {question.strip()}{END_OF_TURN}\n{START_OF_TURN}model\n"
            )
        # No instruction line: the base model copies it instead of answering.
        if not self._retrieval:
            return f"{history}Question: {question.strip()}\nShort answer:"
        demo = EXAMPLES if self._examples else ""
        return f"{demo}{history}Context:\n{context}\n\nQuestion: {question.strip()}\nShort answer:"

    @property
    def stop(self) -> tuple[str, ...]:
        if self.style == "gemma-chat":
            return (END_OF_TURN,)
        return ("\n", "Question:")

    def text(self, question: str, passages: Sequence[str]) -> str:
        """The whole prompt, every passage in it (``build``'s usual result)."""
        return self._render(question, passages)

    def likely_texts(self, question: str, passages: Sequence[str]) -> list[str]:
        """The texts ``build`` tokenizes when every passage fits, the usual
        case (the whole prompt, once): tokenized beforehand together with
        others (``TextModel.tokenize_many``), they spare a model in another
        process a round trip each."""
        return [self.text(question, passages)]

    def fitting_texts(self, question: str, passages: Sequence[str]) -> list[str]:
        """The texts ``build`` tokenizes when the whole prompt does not fit:
        the frame without passages, each passage as it is counted, "" (the
        BOS check) and each turn of the history (counted when the frame does
        not fit); left are the final prompt and, when the last passage that
        fits is cut, its two parts."""
        return [self._render(question, []), "", *(f"[{i}] {text.strip()}\n\n" for i, text in enumerate(passages, 1)),
                *self._render_turns()]

    def build(self, question: str, passages: Sequence[str], budget: int) -> BuiltPrompt:
        """The prompt with as many passages (in the given order) as fit in
        ``budget`` tokens; the last one that fits only partly is cut."""
        if budget <= 0:
            raise ValueError("prompt budget must be positive")
        question, self._history = reachable(question, self._history, budget)
        # Usually everything fits: the whole prompt tokenized once, not each
        # passage on its own first (llama.cpp's tokenizer is most of the cost).
        text = self._render(question, passages)
        tokens = self._tokenize(text)
        if len(tokens) <= budget:
            return BuiltPrompt(text=text, tokens=tokens, passages_used=len(passages), truncated=False,
                               stop=self.stop, passages=tuple(passages))
        frame = self._tokenize(self._render(question, []))
        if len(frame) > budget and len(self._history) > 1:
            # Oldest turns go first (the question and its context matter more),
            # in pairs, each turn counted once: dropping them one pair at a time
            # and tokenizing the frame again each time took seconds for a
            # conversation of a hundred turns.
            over = len(frame) - budget
            counts = [len(self._tokenize_plain(turn)) for turn in self._render_turns()]
            drop = 0
            while over > 0 and drop + 2 < len(counts):
                # Each pair taken to free two tokens more than its count (a join may
                # tokenize differently): this errs toward too few, never too many;
                # the loop below drops the rest pair by pair.
                over -= counts[drop] + counts[drop + 1] + 2
                drop += 2
            del self._history[:drop]
            frame = self._tokenize(self._render(question, []))
        while len(frame) > budget and self._history:
            # What the counts missed (the instructions move to the first turn left).
            del self._history[: 2 if len(self._history) > 1 else 1]
            frame = self._tokenize(self._render(question, []))
        if len(frame) > budget:
            # Even the question does not fit: keep its beginning.
            q_tokens = self._tokenize_plain(question)
            keep = max(1, len(q_tokens) - (len(frame) - budget) - 8)
            question = self._detokenize(q_tokens[:keep])
            return self._final(question, [], budget, truncated=True)

        # Measure each passage once; "\n\n[n] " joins cost a few tokens, which
        # `_final` checks against the real tokenization.
        remaining = budget - len(frame)
        kept: list[str] = []
        truncated = False
        for i, text in enumerate(passages, start=1):
            tokens = self._tokenize_plain(f"[{i}] {text.strip()}\n\n")
            if len(tokens) <= remaining:
                kept.append(text)
                remaining -= len(tokens)
                continue
            truncated = True
            prefix = self._tokenize_plain(f"[{i}] ")
            room = remaining - len(prefix) - 2
            if room >= 16:  # a stub of a passage is noise, not context
                body = self._tokenize_plain(text.strip())
                kept.append(self._detokenize(body[:room]))
            break
        truncated = truncated or len(kept) < len(passages)
        return self._final(question, kept, budget, truncated=truncated)

    def _tokenize_plain(self, text: str) -> list[int]:
        tokens = self._tokenize(text)
        bos = self._tokenize("")
        return tokens[len(bos) :] if bos and tokens[: len(bos)] == bos else tokens

    def _final(self, question: str, kept: list[str], budget: int, *, truncated: bool) -> BuiltPrompt:
        while True:
            text = self._render(question, kept)
            tokens = self._tokenize(text)
            if len(tokens) <= budget or not kept:
                break
            # Joins tokenized a little differently: shave the last passage.
            over = len(tokens) - budget
            last = self._tokenize_plain(kept[-1])
            if len(last) - over - 4 < 16:
                kept.pop()
            else:
                kept[-1] = self._detokenize(last[: len(last) - over - 4])
            truncated = True
        return BuiltPrompt(
            text=text,
            tokens=tokens,
            passages_used=len(kept),
            truncated=truncated,
            stop=self.stop,
            passages=tuple(kept),
        )

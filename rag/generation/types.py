"""What the rest of the service sees of generation: a finished ``Generation``,
a running one (``GenerationHandle``) and a model instance (``TextModel``),
whether it runs in this process (``rag.generation.llama.LlamaModel``) or in a
child process (``rag.generation.process.ModelProcess``)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from rag.prompt import BuiltPrompt, PromptRecipe

__all__ = ["CopySource", "FlashAttention", "Generation", "GenerationHandle", "GenerationParams", "GpuArgmax",
           "KvCacheType", "PromptTooLong", "Sampling", "TextModel"]

KvCacheType = Literal["f16", "q8_0", "q4_0"]
FlashAttention = Literal["auto", "on", "off"]
GpuArgmax = Literal["auto", "kernel", "graph"]


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float
    total_s: float
    finish_reason: str  # "stop", "length" or "cancelled"
    cached_tokens: int = 0  # prompt tokens reused from the KV cache, not evaluated
    queue_s: float = 0.0  # waiting for a free sequence slot
    # Natural-log probability of each generated token, when asked for
    # (``logprobs=True``) and the logits are read on the CPU; else empty.
    token_logprobs: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Sampling:
    """Random sampling instead of greedy: the ``top_k`` most likely tokens, of
    those the smallest set holding ``top_p`` of the probability, scaled by
    ``temperature``, then drawn (llama-server's order and its default top-k).
    On a GPU the whole chain runs inside the decode graph, as greedy does."""

    temperature: float
    top_p: float = 1.0
    top_k: int = 40
    seed: int | None = None


@dataclass(frozen=True)
class CopySource:
    """Extractive decoding: the answer is copied from ``runs`` (token sequences,
    one per passage; a span never crosses from one into the next) and may end,
    after at least one copied token, with one of ``end`` (rag/generation/extractive.py)."""

    runs: tuple[tuple[int, ...], ...]
    end: tuple[int, ...] = ()
    end_bias: float = 0.0  # added to the end tokens' logits: shorter spans


@dataclass(frozen=True)
class GenerationParams:
    """What one generation asks for, the same for every ``TextModel``: at most
    ``max_tokens`` tokens, ending at the first of ``stop``; greedy unless
    ``sampling``. ``ignore_eog`` generates past end-of-generation tokens
    (benchmarks: a fixed number of tokens); ``logprobs`` records each generated
    token's log-probability where the logits are read on the CPU (not with
    sampling in the decode graph). ``extractive`` restricts each token to one
    continuing a span of its runs, where the logits are read on the CPU, as
    ``logprobs`` (greedy only; not with sampling in the decode graph, a GPU's
    default, where it is ignored). Picklable: the model process gets it as is."""

    max_tokens: int
    stop: Sequence[str] = ()
    ignore_eog: bool = False
    sampling: Sampling | None = None
    logprobs: bool = False
    extractive: CopySource | None = None


class PromptTooLong(Exception):
    """``TextModel.submit_text``: the prompt's ``tokens`` exceed the budget
    given; nothing was queued."""

    def __init__(self, tokens: int, budget: int) -> None:
        super().__init__(f"the prompt is {tokens} tokens, over the budget of {budget}")
        self.tokens = tokens
        self.budget = budget


class GenerationHandle(Protocol):
    """A queued or running generation: ``GenerationJob`` in this process,
    ``RemoteJob`` in a model process."""

    future: concurrent.futures.Future[Generation]
    token_times: list[float]

    def cancel(self) -> None: ...

    def result(self, timeout: float | None = None) -> Generation: ...

    async def wait(self) -> Generation: ...


class TextModel(Protocol):
    """What the pool and the service use of a model instance. ``LlamaModel``
    and ``ModelProcess`` subclass it for ``generate``."""

    path: Path
    n_ctx: int
    parallel: int

    @property
    def name(self) -> str: ...

    def tokenize(self, text: str) -> list[int]: ...

    def tokenize_many(self, texts: Sequence[str]) -> list[list[int]]:
        """``tokenize`` of each text; a model in another process answers all
        of them in one round trip."""
        return [self.tokenize(text) for text in texts]

    def detokenize(self, tokens: list[int]) -> str: ...

    def token_text(self, token: int) -> str: ...

    def fit_prompt(self, recipe: PromptRecipe, question: str, passages: Sequence[str], budget: int) -> BuiltPrompt:
        """The prompt of ``recipe`` with as many of ``passages`` as fit in
        ``budget`` tokens (``PromptBuilder.build``), built where the tokenizer
        is: a model in another process builds it there, in one round trip."""
        return recipe.builder(self.tokenize, self.detokenize).build(question, passages, budget)

    def submit(
        self, tokens: list[int], params: GenerationParams, on_text: Callable[[str], bool] | None = None
    ) -> GenerationHandle:
        """Queue a generation; ``on_text`` gets each new piece of its text
        and returns False to stop it (the client left)."""
        ...

    def submit_text(
        self, text: str, budget: int, params: GenerationParams, on_text: Callable[[str], bool] | None = None
    ) -> GenerationHandle:
        """``submit`` of the tokens of ``text`` if there are at most ``budget``
        of them; else ``PromptTooLong``, raised here or by the handle's future
        (a model in another process tokenizes the text there: one message on
        the way in, where ``tokenize`` and ``submit`` took a round trip and a
        message, each through the event loop and a thread of either process)."""
        tokens = self.tokenize(text)
        if len(tokens) > budget:
            raise PromptTooLong(len(tokens), budget)
        return self.submit(tokens, params, on_text)

    def generate(
        self, tokens: list[int], params: GenerationParams, on_text: Callable[[str], bool] | None = None
    ) -> Generation:
        """Blocking form of ``submit``."""
        return self.submit(tokens, params, on_text).result()

    def close(self) -> None: ...

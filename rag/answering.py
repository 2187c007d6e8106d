"""Answers from passages: the model pool, the prompt and grounding.

``Answering`` is what ``RagService`` hands the question and the retrieved
passages to (or no passages: a plain chat with the base model). It decides
whether to abstain without generating, builds the prompt within the context,
streams the generation as ``AnswerEvent``s and judges whether the answer stands
in the passages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

from rag import metrics
from rag.errors import InvalidRequestError, RagError
from rag.generation import (
    CopySource,
    Generation,
    GenerationHandle,
    GenerationParams,
    ModelPool,
    PromptTooLong,
    Sampling,
    TextModel,
)
from rag.generation.stream import TextStream
from rag.grounding import Grounding, GroundingJudge, question_sentences
from rag.prompt import (
    MAX_CHARS_PER_TOKEN,
    BuiltPrompt,
    PromptBuilder,
    PromptRecipe,
    ResolvedPromptStyle,
    Turn,
    copy_source,
    copy_texts,
    reachable,
)
from rag.retrieval import SearchHit
from rag.settings import Settings

__all__ = [
    "NO_ANSWER",
    "Answer",
    "AnswerDelta",
    "AnswerDone",
    "AnswerEvent",
    "AnswerSources",
    "Answering",
    "final_answer",
]

NO_ANSWER = "The documents don't contain an answer to this question."


@dataclass(frozen=True)
class Answer:
    answer: str
    sources: list[SearchHit]
    # False when the service abstains: retrieval found nothing good enough (no
    # generation ran), or the generated answer is judged not to stand in the
    # passages (``draft`` holds it, ``reason`` says why).
    grounded: bool
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    finish_reason: str = "stop"  # "stop", "length" or "cancelled"
    grounding: Grounding | None = None  # evidence, supported, abstention score (answers from passages)
    reason: str | None = None  # why it abstained
    draft: str | None = None  # the generated answer that was withheld
    prompt_style: str | None = None  # the prompt format generation used


@dataclass(frozen=True)
class AnswerSources:
    """First event of a streamed answer: the passages the prompt holds."""

    sources: list[SearchHit]
    grounded: bool


@dataclass(frozen=True)
class AnswerDelta:
    text: str


@dataclass(frozen=True)
class AnswerDone:
    answer: Answer


AnswerEvent = AnswerSources | AnswerDelta | AnswerDone


class CharsPerToken:
    """The characters per token of the prompts the model took or refused
    (a running mean; the event loop's alone): a prompt that looks longer than
    its budget is fitted at once, not sent whole first to be refused."""

    def __init__(self) -> None:
        self.mean = 0.0

    def may_fit(self, text: str, budget: int) -> bool:
        if len(text) > budget * MAX_CHARS_PER_TOKEN:  # whatever the mean: the model would tokenize it for nothing
            return False
        return self.mean <= 0 or len(text) <= budget * self.mean

    def saw(self, text: str, tokens: int) -> None:
        if tokens > 0:
            ratio = len(text) / tokens
            self.mean = ratio if self.mean <= 0 else 0.9 * self.mean + 0.1 * ratio


@dataclass(frozen=True)
class Answering:
    """Generation: the model pool (None in a process started without a model),
    its prompt format and limits, and the similarity below which ``ask``
    abstains without generating."""

    pool: ModelPool | None
    prompt_style: ResolvedPromptStyle
    n_ctx: int
    max_tokens: int
    score_threshold: float
    # Evidence for answers and abstention after generation (rag/grounding.py).
    grounding: GroundingJudge = field(default_factory=GroundingJudge)
    # Answers from passages copied from them (completion prompts; rag/generation/extractive.py).
    extractive: bool = False
    end_bias: float = 0.0  # extractive answers: bias toward ending the span
    copy_sentences: int = 0  # extractive answers: from the n sentences most like the question (0: all)
    best_last: bool = False  # completion prompts: passages from the last to the best
    chars: CharsPerToken = field(default_factory=lambda: CharsPerToken())

    @classmethod
    def from_settings(
        cls, settings: Settings, pool: ModelPool | None, prompt_style: ResolvedPromptStyle
    ) -> Answering:
        return cls(
            pool=pool,
            prompt_style=prompt_style,
            n_ctx=settings.llm_n_ctx,
            max_tokens=settings.max_tokens,
            score_threshold=settings.score_threshold,
            grounding=GroundingJudge(settings.abstain_threshold),
            extractive=settings.answer_extractive,
            end_bias=settings.answer_end_bias,
            copy_sentences=settings.answer_copy_sentences,
            best_last=settings.answer_best_last,
        )

    def abstains(self, sources: list[SearchHit]) -> bool:
        """Whether ``ask`` answers "not in the documents" without generating:
        nothing found, or no source as similar to the question as the threshold
        asks (cosine; in lexical mode, where nothing is embedded, finding any
        matching term is enough)."""
        if not sources:
            return True
        similarities = [s.similarity for s in sources if s.similarity is not None]
        return bool(similarities) and max(similarities) < self.score_threshold

    def check_max_tokens(self, max_tokens: int | None) -> int:
        n_ctx = self.n_ctx
        max_tokens = max_tokens or self.max_tokens
        if max_tokens >= n_ctx - 64:
            raise InvalidRequestError(f"max_tokens must be below {n_ctx - 64}")
        return max_tokens

    async def stream(
        self,
        question: str,
        sources: list[SearchHit] | None,
        max_tokens: int,
        history: Sequence[Turn],
        started: float,
        timings: dict[str, float],
        sampling: Sampling | None = None,
        ignore_eos: bool = False,
    ) -> AsyncIterator[AnswerEvent]:
        """The answer from ``sources`` (``None``: the base model alone, no
        passages) as events; with passages too weak to answer from, the
        abstention without generating. ``started``: when the request began;
        ``timings``: what it took so far (retrieval)."""
        if sources is not None and self.abstains(sources):
            yield AnswerSources(sources=sources, grounded=False)
            yield AnswerDelta(NO_ANSWER)
            timings["total_s"] = time.perf_counter() - started
            why = "no passage was found" if not sources else "no passage is similar enough to the question"
            yield AnswerDone(Answer(answer=NO_ANSWER, sources=sources, grounded=False, timings=timings, reason=why))
            return
        if self.pool is None:
            raise RagError("this process was started without a model (RAG_LLM_LOAD=false)")
        retrieved = time.perf_counter()
        passages = [s.text for s in sources] if sources is not None else []
        budget = self.n_ctx - max_tokens
        # What could never fit is left out before anything is tokenized.
        question, history = reachable(question, history, budget)
        generations: list[Generation] = []
        async with self.pool.acquire() as model:
            acquired = built = time.perf_counter()
            whole: bool | None = True  # whether the whole prompt is expected to fit (None: maybe not)
            if not self._copies(sources, sampling):
                # The usual case: the whole prompt, every passage in it, goes to
                # the model as text and is tokenized there; it did not fit if
                # PromptTooLong comes back before any text. One that looks too
                # long (by the characters per token of the prompts before) is
                # fitted at once.
                builder = self._builder(model, sources, history)
                params = GenerationParams(max_tokens=max_tokens, stop=builder.stop, ignore_eog=ignore_eos,
                                          sampling=sampling, logprobs=sources is not None)
                text = builder.text(question, passages)
                if self.chars.may_fit(text, budget):
                    try:
                        async with aclosing(self._generate(
                            lambda push: model.submit_text(text, budget, params, push), sources, generations,
                        )) as events:
                            async for event in events:
                                yield event
                        self.chars.saw(text, generations[0].prompt_tokens)
                    except PromptTooLong as refused:
                        self.chars.saw(text, refused.tokens)
                        whole = False
                else:
                    whole = None
            used: list[SearchHit] = sources or []
            passages_used = len(passages)
            if not generations:
                prompt, extractive = await asyncio.to_thread(
                    self._build_prompt, model, question, sources, max_tokens, history, sampling, whole
                )
                built = time.perf_counter()
                passages_used = prompt.passages_used
                if sources is not None:
                    used = sources[:passages_used] if passages_used else sources[:1]
                params = GenerationParams(max_tokens=max_tokens, stop=prompt.stop, ignore_eog=ignore_eos,
                                          sampling=sampling, logprobs=sources is not None, extractive=extractive)
                tokens = prompt.tokens
                async with aclosing(self._generate(
                    lambda push: model.submit(tokens, params, push), used if sources is not None else None,
                    generations,
                )) as events:
                    async for event in events:
                        yield event
            generation = generations[0]
        timings.update(
            queue_s=acquired - retrieved + generation.queue_s,
            # fitting the prompt (the tokenizer's round trips) when the whole did not fit or
            # tokens are copied; else the model tokenizes it (in time_to_first_token_s)
            prompt_s=built - acquired,
            time_to_first_token_s=generation.time_to_first_token_s,
            generation_s=generation.total_s,
            total_s=time.perf_counter() - started,
        )
        decode_s = generation.total_s - generation.time_to_first_token_s
        if generation.completion_tokens > 1 and decode_s > 0:
            timings["decode_tokens_per_s"] = (generation.completion_tokens - 1) / decode_s
        usage = {
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens,
            "cached_prompt_tokens": generation.cached_tokens,
        }
        if sources is not None:
            usage["context_passages"] = passages_used
        metrics.observe_generation(timings, usage)
        text = generation.text or (NO_ANSWER if sources is not None else "")
        grounding = reason = draft = None
        if sources is not None:
            # After the stream: a client showing deltas learns from `done`
            # that the answer was withheld (grounded false, reason).
            grounding = self.grounding.assess(
                question, generation.text, [(s.rank, s.text) for s in used], generation.token_logprobs
            )
            if grounding.abstain:
                reason, draft, text = grounding.reason, generation.text, NO_ANSWER
        yield AnswerDone(
            Answer(
                answer=text,
                sources=used,
                grounded=sources is not None and reason is None,
                usage=usage,
                timings=timings,
                finish_reason=generation.finish_reason,
                grounding=grounding,
                reason=reason,
                draft=draft,
                prompt_style=self.prompt_style,
            )
        )

    def _copies(self, sources: list[SearchHit] | None, sampling: Sampling | None) -> bool:
        """Whether the answer is copied from the passages (extractive decoding:
        greedy answers from passages, completion prompts; an instruction-tuned
        model's chat answer cites and may refuse)."""
        return self.extractive and sources is not None and sampling is None and self.prompt_style == "completion"

    def _recipe(self, sources: list[SearchHit] | None, history: Sequence[Turn]) -> PromptRecipe:
        return PromptRecipe(
            self.prompt_style,
            history=tuple(history),
            retrieval=sources is not None,
            best_last=self.best_last and self.prompt_style == "completion",
        )

    def _builder(self, model: TextModel, sources: list[SearchHit] | None, history: Sequence[Turn],
                 tokenize: Callable[[str], list[int]] | None = None) -> PromptBuilder:
        return self._recipe(sources, history).builder(tokenize or model.tokenize, model.detokenize)

    @staticmethod
    async def _generate(
        submit: Callable[[Callable[[str], bool]], GenerationHandle],
        sources: list[SearchHit] | None,
        out: list[Generation],
    ) -> AsyncGenerator[AnswerEvent, None]:
        """One generation's events: ``sources`` (the passages in the prompt;
        None: no retrieval) with its first text, then its text; its
        ``Generation`` goes to ``out``. ``submit`` queues it, given where its
        text goes; what it raises, or its future, passes on."""
        # Pieces that arrive while this task is busy are joined: one loop wake-up each time.
        pieces = TextStream(asyncio.get_running_loop())
        job = submit(pieces.push)
        job.future.add_done_callback(lambda _: pieces.end())
        announce = sources is not None
        try:
            async for piece in pieces:
                if announce:
                    yield AnswerSources(sources=sources or [], grounded=True)
                    announce = False
                yield AnswerDelta(piece)
            out.append(await job.wait())
        finally:
            job.cancel()  # a no-op once finished; stops it when the client left
        if announce:
            yield AnswerSources(sources=sources or [], grounded=True)

    def _build_prompt(
        self,
        model: TextModel,
        question: str,
        sources: list[SearchHit] | None,
        max_tokens: int,
        history: Sequence[Turn],
        sampling: Sampling | None = None,
        whole: bool | None = True,
    ) -> tuple[BuiltPrompt, CopySource | None]:
        """The prompt, and extractive decoding's source when the answer is to
        be copied from the passages (greedy answers from passages, completion
        prompts: an instruction-tuned model's chat answer cites and may refuse).
        Copies aside, the model fits the prompt where its tokenizer is
        (``TextModel.fit_prompt``). ``whole`` (copies): whether the whole prompt
        is expected to fit (None: maybe; False: the model refused it) decides
        what is tokenized in one go."""
        passages = [s.text for s in sources] if sources is not None else []
        budget = self.n_ctx - max_tokens
        if not self._copies(sources, sampling):
            # Fitted where the tokenizer is: one round trip to a model process.
            return model.fit_prompt(self._recipe(sources, history), question, passages, budget), None
        known: dict[str, list[int]] = {}

        def tokenize(text: str) -> list[int]:
            tokens = known.get(text)
            return list(tokens) if tokens is not None else model.tokenize(text)

        builder = self._builder(model, sources, history, tokenize)
        # Copies need the tokens of each passage here. What building will most likely
        # tokenize, in one round trip to a model process (a dozen one by one for five
        # passages and their copies).
        texts = [] if whole is False else builder.likely_texts(question, passages)
        if whole is not True:
            texts += builder.fitting_texts(question, passages)
        if not self.copy_sentences:
            texts += copy_texts(passages, builder.stop)
        known.update(zip(texts, model.tokenize_many(texts), strict=True))
        prompt = builder.build(question, passages, budget=budget)
        if not prompt.passages:
            return prompt, None
        sentences = question_sentences(question, prompt.passages, self.copy_sentences) if self.copy_sentences else None
        return prompt, copy_source(prompt, tokenize, self.end_bias, sentences)


async def final_answer(events: AsyncIterator[AnswerEvent]) -> Answer:
    """The ``Answer`` that ends an answer stream."""
    async with aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if isinstance(event, AnswerDone):
                return event.answer
    raise RagError("the answer stream ended without an answer")

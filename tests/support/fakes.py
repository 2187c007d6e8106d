"""Deterministic stand-ins for the heavy outside systems, for the fast tier:
a text model that answers from its prompt without llama.cpp, and an embedder
that hashes words instead of running a network. Both follow the interfaces the
service uses (``rag.generation.TextModel``, ``rag.embedder.Embedder``)."""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from rag.errors import BackendError
from rag.generation import Generation, GenerationParams, PromptTooLong, TextModel
from rag.generation.handle import FutureHandle

__all__ = ["FakeJob", "FakeTextModel", "HashEmbedder", "first_passage_words"]

_WORD = re.compile(r"\w+")


class HashEmbedder:
    """Bag of hashed lower-case words, L2-normalised: the cosine of two texts
    grows with the words they share; texts sharing none are orthogonal (up to
    hash collisions, which only add)."""

    def __init__(self, dimension: int = 256, model_id: str = "hash:256") -> None:
        self.dimension = dimension
        self.model_id = model_id
        self.name = model_id.replace(":", "-")
        self.max_seq_length = 256
        self.device = "cpu"
        self.calls = 0
        self.longest = 0  # the longest text embedded

    @property
    def chunk_token_limit(self) -> int:
        return self.max_seq_length - 2

    def count_tokens(self, text: str) -> int:
        return len(_WORD.findall(text))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        self.longest = max(self.longest, *map(len, texts)) if texts else self.longest
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0]

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embed(texts)

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dimension
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            vector[int.from_bytes(digest, "little") % self.dimension] += 1.0
        norm = math.sqrt(sum(v * v for v in vector))
        if norm == 0:
            vector[0], norm = 1.0, 1.0
        return [v / norm for v in vector]


def first_passage_words(prompt: str, n: int = 6) -> str:
    """The default fake answer: the first ``n`` words of context passage [1], or,
    for a prompt without passages, the words of the question echoed."""
    context = prompt[prompt.rfind("Context:\n") :] if "Context:\n" in prompt else prompt  # after any worked examples
    match = re.search(r"\[1\] (.*?)(?:\n\n\[2\] |\n\nQuestion: |$)", context, re.S)
    if match:
        return " ".join(match.group(1).split()[:n])
    question = re.findall(r"(?:Question: |<start_of_turn>user\n)(.*)", prompt)
    return "echo " + " ".join((question[-1] if question else "").split()[:n])


class FakeJob(FutureHandle):
    """A generation running on its own thread (``FakeTextModel._run``)."""


class FakeTextModel(TextModel):
    """A text model whose tokens are Unicode code points and whose answer is
    ``answer(prompt)`` (default: ``first_passage_words``), emitted one word per
    token. ``hold`` (an Event) keeps every generation waiting until it is set;
    ``fail`` makes generations fail with that error (a crashed model process),
    after ``fail_after`` words of text. ``tokenizes_later``: ``submit_text``
    refuses a prompt over its budget through the job's future, as a model
    process does, not at once."""

    def __init__(
        self,
        *,
        name: str = "fake-model",
        n_ctx: int = 2048,
        parallel: int = 2,
        answer: Callable[[str], str] = first_passage_words,
    ) -> None:
        self.path = Path(name)
        self.n_ctx = n_ctx
        self.parallel = parallel
        self._name = name
        self._answer = answer
        self.hold: threading.Event | None = None
        self.fail: BaseException | None = None
        self.fail_after = 0
        self.tokenizes_later = False
        self.texts: list[str] = []  # each submit_text's prompt
        self.prompts: list[str] = []
        self.jobs: list[FakeJob] = []
        self.options: list[dict[str, Any]] = []  # each submit's ignore_eog and sampling
        self.params: list[GenerationParams] = []  # each submit's whole request
        self.closed = False

    @property
    def name(self) -> str:
        return self._name

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(chr(t) for t in tokens)

    def token_text(self, token: int) -> str:
        return chr(token)

    def submit(
        self, tokens: list[int], params: GenerationParams, on_text: Callable[[str], bool] | None = None
    ) -> FakeJob:
        max_tokens = params.max_tokens
        if len(tokens) + max_tokens > self.n_ctx:
            raise ValueError(f"{len(tokens)} prompt tokens + {max_tokens} exceed the context of {self.n_ctx}")
        prompt = self.detokenize(tokens)
        self.prompts.append(prompt)
        self.options.append({"ignore_eog": params.ignore_eog, "sampling": params.sampling})
        self.params.append(params)
        job = FakeJob()
        self.jobs.append(job)
        threading.Thread(
            target=self._run, args=(job, prompt, len(tokens), max_tokens, params.stop, on_text), daemon=True
        ).start()
        return job

    def submit_text(
        self, text: str, budget: int, params: GenerationParams, on_text: Callable[[str], bool] | None = None
    ) -> FakeJob:
        self.texts.append(text)
        if self.tokenizes_later and len(text) > budget:
            job = FakeJob()
            threading.Thread(target=job.future.set_exception, args=(PromptTooLong(len(text), budget),)).start()
            return job
        return cast(FakeJob, super().submit_text(text, budget, params, on_text))

    def close(self) -> None:
        self.closed = True

    def _run(
        self,
        job: FakeJob,
        prompt: str,
        prompt_tokens: int,
        max_tokens: int,
        stop: Sequence[str],
        on_text: Callable[[str], bool] | None,
    ) -> None:
        started = time.perf_counter()
        if self.hold is not None:
            while not self.hold.wait(0.01):
                if job.cancelled:
                    break
        if self.fail is not None and not self.fail_after:
            job.future.set_exception(self.fail)
            return
        text = self._answer(prompt)
        for s in stop:
            text = text.split(s, 1)[0] if s else text
        words = text.split(" ")
        produced, out, reason, first = 0, [], "stop", None
        for i, word in enumerate(words):
            if job.cancelled:
                reason = "cancelled"
                break
            if produced >= max_tokens:
                reason = "length"
                break
            piece = word if i == 0 else " " + word
            produced += 1
            out.append(piece)
            job.token_times.append(time.perf_counter())
            first = first or time.perf_counter()
            if on_text is not None and not on_text(piece):
                reason = "cancelled"
                break
            if self.fail is not None and produced >= self.fail_after:
                job.future.set_exception(self.fail)
                return
        ended = time.perf_counter()
        job.future.set_result(
            Generation(
                text="".join(out).strip(),
                prompt_tokens=prompt_tokens,
                completion_tokens=produced,
                time_to_first_token_s=(first or ended) - started,
                total_s=ended - started,
                finish_reason=reason,
                token_logprobs=[-0.1] * produced,  # a sure model (the abstention model reads these)
            )
        )


def crashed() -> BackendError:
    """The error a dead model process fails its requests with."""
    return BackendError("the model process died")


class FakeLlamaCalls:
    """The llama.cpp functions ``Scheduler`` calls (rag/generation/scheduler.py),
    doing nothing: every sampled token is ``token`` and none ends generation.
    Subclasses record or time the ones they watch."""

    token = 7

    def llama_get_memory(self, ctx: Any) -> Any:
        return ctx

    def llama_memory_seq_rm(self, mem: Any, seq: int, p0: int, p1: int) -> bool:
        return True

    def llama_memory_seq_cp(self, mem: Any, src: int, dst: int, p0: int, p1: int) -> None:
        pass

    def llama_memory_clear(self, mem: Any, data: bool) -> None:
        pass

    def llama_sampler_reset(self, sampler: Any) -> None:
        pass

    def llama_synchronize(self, ctx: Any) -> None:
        pass

    def llama_get_sampled_token_ith(self, ctx: Any, i: int) -> int:
        return self.token

    def sampled_tokens(self, ctx: Any, n: int, out: Any) -> bool:
        """``QuickCalls.sampled_tokens``: rows 0 … n-1's tokens in one call."""
        self.read_at_once = getattr(self, "read_at_once", 0) + 1
        for i in range(n):
            out[i] = self.llama_get_sampled_token_ith(ctx, i)
        return True

    def llama_vocab_is_eog(self, vocab: Any, token: int) -> bool:
        return False

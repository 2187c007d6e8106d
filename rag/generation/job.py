"""One generation request inside a model's scheduler (``GenerationJob``): its
prompt, its progress, its text through the stop matcher, and its future."""

from __future__ import annotations

import codecs
import logging
import time
from collections.abc import Callable

from rag.generation.extractive import CopyConstraint
from rag.generation.handle import FutureHandle
from rag.generation.stops import StopMatcher
from rag.generation.types import Generation, GenerationParams

__all__ = ["GenerationJob"]

log = logging.getLogger(__name__)


class GenerationJob(FutureHandle):
    """One request inside a model's scheduler. ``on_text`` is called on the
    scheduler thread with each new piece of text and returns False to stop
    (client gone); ``cancel`` may be called from any thread."""

    def __init__(
        self,
        tokens: list[int],
        params: GenerationParams,
        on_text: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__()
        self.tokens = tokens
        self.max_tokens = params.max_tokens
        self.on_text = on_text
        self.ignore_eog = params.ignore_eog
        self.sampling = params.sampling
        self.logprobs: list[float] | None = [] if params.logprobs else None
        self.copy = CopyConstraint(params.extractive) if params.extractive is not None else None
        self._matcher = StopMatcher(params.stop)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.submitted = time.perf_counter()
        self.started = 0.0
        self.first_at: float | None = None
        self.slot = -1
        self.n_past = 0  # tokens of this sequence already in the KV cache
        self.cached = 0
        self.produced = 0
        self.last_token = -1
        self.out_index = -1  # this job's output row in the current batch
        self.unsent: list[int] = []  # sampled tokens whose text is not yet emitted
        self.ending: str | None = None  # why it ends, once known; released when its text is out

    # --- scheduler side ----------------------------------------------------
    def emit(self, piece: str) -> bool:
        """Feeds decoded text through the stop matcher; False when done."""
        if not self._matcher.text:
            # Leading blanks are no answer; a "\n" stop must not end it empty.
            piece = piece.lstrip()
        out, hit = self._matcher.feed(piece)
        if out and self.on_text is not None and not self.on_text(out):
            self.cancel()
            return False
        return not hit

    def finish(self, reason: str) -> None:
        if self.future.done():
            return
        if reason != "cancelled":
            self._matcher.feed(self.decoder.decode(b"", final=True))
            tail = self._matcher.flush()
            if tail and self.on_text is not None:
                self.on_text(tail)
        ended = time.perf_counter()
        if reason == "cancelled":
            log.info("generation cancelled after %d of at most %d tokens", self.produced, self.max_tokens)
        self.future.set_result(
            Generation(
                text=self._matcher.text.strip(),
                prompt_tokens=len(self.tokens),
                completion_tokens=self.produced,
                time_to_first_token_s=(self.first_at or ended) - (self.started or self.submitted),
                total_s=ended - (self.started or self.submitted),
                finish_reason=reason,
                cached_tokens=self.cached,
                queue_s=(self.started or ended) - self.submitted,
                token_logprobs=list(self.logprobs or [])[: self.produced],
            )
        )


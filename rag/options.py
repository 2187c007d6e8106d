"""What a caller chooses for one search or one answer.

``/search``, ``/ask``, chat, ``rag eval``, the quality gate and bench/ all hand
the service (and it the retriever) one of these instead of the same keyword
arguments at every step. A ``None`` field means the setting's value
(``RAG_TOP_K``, ``RAG_SEARCH_MODE``, ``RAG_MAX_TOKENS``; re-ranking when a
re-ranker is configured), decided where the setting lives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rag.generation import Sampling
from rag.settings import SearchMode
from rag.store import SearchFilter

__all__ = ["AskOptions", "SearchOptions"]


@dataclass(frozen=True)
class SearchOptions:
    """How many chunks, found how (dense, lexical or hybrid), among which
    documents (``where``), re-ranked or not."""

    top_k: int | None = None
    mode: SearchMode | None = None
    where: SearchFilter | None = None
    rerank: bool | None = None


@dataclass(frozen=True)
class AskOptions:
    """The search that finds the passages, then how long and how the answer is
    generated."""

    search: SearchOptions = field(default_factory=SearchOptions)
    max_tokens: int | None = None
    sampling: Sampling | None = None  # None: greedy
    ignore_eos: bool = False  # generate max_tokens tokens whatever the model says (benchmarks)

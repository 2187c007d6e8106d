"""``TokenCache``: the tokens of texts tokenized before, least recently used
out first. The API process keeps one in front of its model process's
tokenizer (each miss is a round trip); a model fitting prompts keeps one for
the passages that come back request after request."""

from __future__ import annotations

import threading

__all__ = ["TokenCache"]


class TokenCache:
    """The last ``size`` texts the model process tokenized, and their tokens.

    Each tokenization is a round trip to the child, answered between the
    scheduler's steps; building one prompt asks for the same text more than
    once (the chat frame is tokenized again as the final prompt; every
    passage's BOS check tokenizes ""), so a burst of requests waited on a
    dozen round trips each where half would do (docs/benchmarks.md, issue 16).
    Tokens depend on the model's vocabulary alone, which a restarted child
    keeps. Thread-safe; hands out copies."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._tokens: dict[str, list[int]] = {}  # insertion order = least recently used first

    def get(self, text: str) -> list[int] | None:
        with self._lock:
            tokens = self._tokens.pop(text, None)
            if tokens is None:
                return None
            self._tokens[text] = tokens
            return list(tokens)

    def put(self, text: str, tokens: list[int]) -> None:
        with self._lock:
            self._tokens.pop(text, None)
            self._tokens[text] = list(tokens)
            while len(self._tokens) > self._size:
                del self._tokens[next(iter(self._tokens))]

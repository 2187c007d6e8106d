"""Turn parsed blocks into embedder-sized chunks.

The embedder truncates anything past its sequence limit, so a chunk that is too
long silently loses text from the index. ``chunk_blocks`` therefore guarantees
``token_count <= max_tokens`` for every chunk, measured with the embedder's own
counter on the final chunk text (not an estimate), whatever the input.

It also guarantees ``len(text) <= max_chars`` (default: ``CHARS_PER_TOKEN``
characters per allowed token), because a token count alone can be fooled: the
bundled model's WordPiece tokenizer turns any "word" longer than 100 characters
into a single ``[UNK]`` token, so a 1.1 MB string without spaces counted as one
token and became one 1.1 MB chunk. English text averages about 4.5 characters
per token with that tokenizer, so the character bound only bites on such input.
The counter is never called on more than ``max_chars`` characters, which keeps
the work linear for any input (a BPE tokenizer can be quadratic in the length
of one word).

Structure first: a section title always starts a new chunk, so a chunk never
mixes two sections and its ``section`` metadata is honest. Within a section,
whole blocks (paragraphs, list items, tables) are packed together; a block is
only cut when it cannot fit in a chunk of its own, first at sentence
boundaries, then at word boundaries, and as a last resort inside a word.

Cost: ``count_tokens`` is called once per sentence that fits a chunk, about
log2(words per chunk) times per chunk cut from a longer sentence, a few times
per chunk for its overlap, and once per emitted chunk to verify the bound; every
call sees at most ``max_chars`` characters.

Why one module of about 500 lines: it is one algorithm (sections, packing,
sentence then word then character cuts, overlap, the final bound check) whose
steps share the bounds and the token counter; the property tests
(``tests/unit/test_chunking_properties.py``) hold it as a whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ingest.parsing import Block

__all__ = ["CHARS_PER_TOKEN", "SECTION_MAX_CHARS", "Chunk", "chunk_blocks", "split_sentences"]

TokenCounter = Callable[[str], int]

# Default character bound per allowed token (see the module docstring).
CHARS_PER_TOKEN = 10
# A chunk's ``section`` is the text of a title; a pathological "title" (a huge
# markdown heading, a sheet name) must not be copied onto every chunk.
SECTION_MAX_CHARS = 200

_TITLE = "Title"

# Whitespace runs, matched once each (linear). A run ends a sentence when it
# holds a line break, or follows . ! or ? (optionally with one closing quote or
# bracket). The previous regular expression, with ``[ \t]*\n`` alternatives,
# rescanned a run of spaces from every position in it: quadratic (1.6 s for
# 40,000 spaces). Deliberately simple (abbreviations like "e.g. x" are split):
# a wrong cut only costs a slightly less tidy chunk boundary, never text.
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\S+")
_SENTENCE_END = frozenset(".!?")
_CLOSERS = frozenset("\"'\u201d\u2019)]")


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
    return list(_iter_sentences(text))


def _iter_sentences(text: str) -> Iterator[tuple[str, str]]:
    started = False
    sep = ""
    pos = 0
    for match in _SPACE.finditer(text):
        start, end = match.span()
        newline = "\n" in match.group()
        # Leading and trailing whitespace always goes.
        if not newline and start > 0 and end < len(text) and not _ends_sentence(text, start):
            continue
        sentence = text[pos:start]
        if sentence:
            yield (sep if started else "", sentence)
            started = True
            sep = "\n" if newline else " "
        pos = match.end()
    if pos < len(text):
        yield (sep if started else "", text[pos:])


def _ends_sentence(text: str, space_at: int) -> bool:
    before = text[space_at - 1]
    if before in _SENTENCE_END:
        return True
    return before in _CLOSERS and space_at >= 2 and text[space_at - 2] in _SENTENCE_END


def chunk_blocks(
    blocks: Sequence[Block],
    count_tokens: TokenCounter,
    max_tokens: int,
    overlap_tokens: int,
    max_chars: int | None = None,
) -> list[Chunk]:
    """Pack ``blocks`` into chunks of at most ``max_tokens`` tokens and
    ``max_chars`` characters (default ``max_tokens * CHARS_PER_TOKEN``).

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
    if max_chars is None:
        max_chars = max_tokens * CHARS_PER_TOKEN
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    packer = _Packer(count_tokens, max_tokens, overlap_tokens, max_chars)
    chunks: list[Chunk] = []
    for group in _group_by_section(blocks):
        section = group.section[:SECTION_MAX_CHARS] if group.section else group.section
        for pieces in packer.pack(group):
            text = _render(pieces)
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=text,
                    page=pieces[0].page,
                    section=section,
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


def _longest_fit(
    size: Callable[[int], int], n: int, room: int, per_token: float | None
) -> tuple[int, int] | None:
    """The largest ``k`` in [1, n] with ``size(k) <= room`` (``size`` grows with
    ``k``), or one within ``room // 32`` of the room, and its size; None if even
    ``k = 1`` is too big. Interpolates from ``per_token`` (items per token) and
    from each count, falling back to bisection when a guess does not halve the
    interval, so it never needs more than about twice a bisection's counts."""
    slack = room // 32
    lo, lo_size, hi = 0, 0, n + 1
    k = n if per_token is None else max(1, min(n, int(room * per_token)))
    counts = 0
    while True:
        k_size = size(k)
        counts += 1
        if k_size <= room:
            lo, lo_size = k, k_size
            if k == n or room - k_size <= slack:
                break
        else:
            hi = k
        if hi - lo <= 1:
            break
        guess = int(k * room / k_size) if k_size else hi - 1
        if k_size <= room:
            guess = max(guess, lo + 1)
        if counts > 3 or not lo < guess < hi:
            guess = (lo + hi) // 2
        k = guess
    return (lo, lo_size) if lo else None


class _Words:
    """The words of one sentence too long for a chunk, taken a chunk's room at a time.

    Items are ``(glue, text)``: ``glue`` goes before the item when it follows
    another one (the sentence's separator for the first word, a space between
    words, nothing between fragments of one word). Words longer than
    ``max_chars`` are pre-cut into ``max_chars`` fragments. Items are read
    lazily, so memory stays proportional to one chunk, not to the sentence.
    """

    def __init__(self, sentence: str, sep: str, page: int | None, max_chars: int) -> None:
        self.page = page
        self._items_per_token: float | None = None
        self._items = self._read(sentence, sep, max_chars)
        self._buffer: list[tuple[str, str]] = []

    @staticmethod
    def _read(sentence: str, sep: str, max_chars: int) -> Iterator[tuple[str, str]]:
        glue = sep
        for match in _WORD.finditer(sentence):
            word = match.group()
            for start in range(0, len(word), max_chars):
                yield (glue if start == 0 else "", word[start : start + max_chars])
            glue = " "

    def _peek(self, n: int) -> tuple[str, str] | None:
        while len(self._buffer) <= n:
            item = next(self._items, None)
            if item is None:
                return None
            self._buffer.append(item)
        return self._buffer[n]

    @property
    def exhausted(self) -> bool:
        return self._peek(0) is None

    def _render(self, n: int) -> str:
        items = self._buffer[:n]
        return items[0][1] + "".join(glue + text for glue, text in items[1:])

    def take(self, count: TokenCounter, room_tokens: int, room_chars: int, *, after: bool) -> _Piece | None:
        """A long run of leading items within both rooms (``room_chars`` includes
        the first item's glue when ``after`` another piece), or None.

        The longest such run, to within ``room_tokens // 32`` tokens: the search
        starts from the token density seen so far and interpolates, so a chunk
        usually costs two or three counts rather than a bisection's dozen."""
        n = total = 0
        while (item := self._peek(n)) is not None:
            glue, text = item
            add = len(text) + (len(glue) if n or after else 0)
            if total + add > room_chars:
                break
            total += add
            n += 1
        if n == 0:
            return None
        found = _longest_fit(lambda k: count(self._render(k)), n, room_tokens, self._items_per_token)
        if found is None:
            return None
        k, tokens = found
        if tokens:
            self._items_per_token = k / tokens
        text = self._render(k)
        glue = self._buffer[0][0]
        del self._buffer[:k]
        return _Piece(text, tokens, self.page, glue)

    def cut_head(self, cut: Callable[[str], list[tuple[str, int]]]) -> None:
        """Replace the first item (too many tokens for a chunk on its own) by its fragments."""
        head = self._peek(0)
        assert head is not None
        glue, text = head
        fragments = [(glue if i == 0 else "", fragment) for i, (fragment, _) in enumerate(cut(text))]
        self._buffer[:1] = fragments


class _Packer:
    """Greedy packing of pieces into chunks under hard token and character bounds.

    The chunk being filled is ``_current`` (overlap pieces first, then
    ``_fresh`` new ones), with its token sum and exact rendered length kept up
    to date so that adding a piece costs O(1).
    """

    def __init__(self, count_tokens: TokenCounter, max_tokens: int, overlap_tokens: int, max_chars: int) -> None:
        self._count = count_tokens
        self._max = max_tokens
        self._overlap = overlap_tokens
        self._max_chars = max_chars
        self._overlap_chars = overlap_tokens * max_chars // max_tokens
        self._last_count: tuple[str, int] | None = None
        self._reset([])

    def _reset(self, pieces: list[_Piece]) -> None:
        self._current = pieces
        self._tokens = _size(pieces)
        self._chars = len(_render(pieces)) if pieces else 0
        self._fresh = 0

    def _room_chars(self, piece_sep: str) -> int:
        return self._max_chars - self._chars - (len(piece_sep) if self._current else 0)

    def _fits_now(self, piece: _Piece) -> bool:
        return self._tokens + piece.tokens <= self._max and len(piece.text) <= self._room_chars(piece.sep)

    def _append(self, piece: _Piece) -> None:
        self._chars += len(piece.text) + (len(piece.sep) if self._current else 0)
        self._current.append(piece)
        self._tokens += piece.tokens
        self._fresh += 1

    def verified_count(self, text: str) -> int:
        """Exact size of an emitted chunk (cached: ``_fits`` just counted it)."""
        if self._last_count is not None and self._last_count[0] == text:
            return self._last_count[1]
        return self._count(text)

    def pack(self, group: _Group) -> Iterator[list[_Piece]]:
        """Yield the piece lists of this group's chunks, in order."""
        self._reset([])
        for block in group.blocks:
            units: Iterable[_Piece | _Words] = self._units(block)
            if len(block.text) <= self._max_chars:
                units = list(units)
                whole = [u for u in units if isinstance(u, _Piece)]
                if len(whole) == len(units) and whole:
                    size = _Piece(_render(whole), _size(whole), block.page, "\n")
                    if not self._fits_now(size) and size.tokens <= self._max and len(size.text) <= self._max_chars:
                        # Keep the block whole in the next chunk instead of cutting it.
                        yield from self._make_room(size)
            for unit in units:
                if isinstance(unit, _Words):
                    yield from self._pour(unit)
                    continue
                if not self._fits_now(unit):
                    yield from self._make_room(unit)
                self._append(unit)
        if self._fresh:
            yield from self._emit(self._current, len(self._current) - self._fresh)

    def _close(self) -> Generator[list[_Piece], None, None]:
        """Emit the chunk being filled; its tail becomes the next one's overlap."""
        emitted = yield from self._emit(self._current, len(self._current) - self._fresh)
        self._reset(self._tail(emitted))

    def _make_room(self, piece: _Piece) -> Generator[list[_Piece], None, None]:
        """Close the chunk if it has fresh text, then trim overlap until ``piece`` fits."""
        if self._fresh:
            yield from self._close()
        if not self._fits_now(piece):
            current = list(self._current)
            while current:
                current = current[1:]
                self._reset(current)
                if self._fits_now(piece):
                    break

    def _pour(self, words: _Words) -> Iterator[list[_Piece]]:
        """Fill chunks with the words of a sentence too long for one chunk."""
        while not words.exhausted:
            room_chars = self._max_chars - self._chars
            piece = words.take(self._count, self._max - self._tokens, room_chars, after=bool(self._current))
            if piece is not None:
                self._append(piece)
            elif self._fresh:
                yield from self._close()
            elif self._current:
                self._reset([])  # not even one word fits beside the overlap: drop it
            else:
                words.cut_head(self._cut_word)

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
        # Rare: halve. A single piece always fits (each is within both bounds
        # on its own text), so this terminates.
        middle = len(pieces) // 2
        yield from self._emit(pieces[:middle], 0)
        return (yield from self._emit(pieces[middle:], 0))

    def _fits(self, pieces: list[_Piece]) -> bool:
        if len(pieces) == 1:
            return pieces[0].tokens <= self._max and len(pieces[0].text) <= self._max_chars
        text = _render(pieces)
        if len(text) > self._max_chars:
            return False
        if self._last_count is None or self._last_count[0] != text:
            self._last_count = (text, self._count(text))
        return self._last_count[1] <= self._max

    def _tail(self, pieces: list[_Piece]) -> list[_Piece]:
        """Trailing pieces worth at most ``overlap_tokens`` (and their share of
        ``max_chars``), down to single words."""
        tail: list[_Piece] = []
        budget = self._overlap
        char_budget = self._overlap_chars
        for piece in reversed(pieces):
            cost = len(piece.text) + len(piece.sep)
            if piece.tokens <= budget and cost <= char_budget:
                tail.append(piece)
                budget -= piece.tokens
                char_budget -= cost
                continue
            # Part of a sentence: its longest run of trailing words that fits.
            words = piece.text.split()
            per_token = len(words) / piece.tokens if piece.tokens else None
            suffix = self._suffix(words, budget, char_budget - len(piece.sep), per_token)
            if suffix is not None:
                tail.append(_Piece(suffix[0], suffix[1], piece.page, piece.sep))
            break
        tail.reverse()
        return tail

    def _suffix(
        self, words: list[str], budget: int, char_budget: int, per_token: float | None
    ) -> tuple[str, int] | None:
        """A long run of trailing ``words`` within both budgets (see ``_longest_fit``)."""
        if budget <= 0 or not words:
            return None
        # Most words the character budget allows.
        most, length = 0, -1
        while most < len(words) and length + 1 + len(words[-most - 1]) <= char_budget:
            most += 1
            length += 1 + len(words[-most])
        if most == 0:
            return None
        found = _longest_fit(lambda m: self._count(" ".join(words[-m:])), most, budget, per_token)
        if found is None:
            return None
        m, tokens = found
        return " ".join(words[-m:]), tokens

    def _units(self, block: Block) -> Iterator[_Piece | _Words]:
        """The block's sentences: a piece for each that fits a chunk on its own,
        a word stream for each that does not."""
        for sep, sentence in _iter_sentences(block.text.strip()):
            sep = sep or "\n"
            if len(sentence) <= self._max_chars:
                tokens = self._count(sentence)
                if tokens <= self._max:
                    yield _Piece(sentence, tokens, block.page, sep)
                    continue
            yield _Words(sentence, sep, block.page, self._max_chars)

    def _cut_word(self, word: str) -> list[tuple[str, int]]:
        """Halve an over-long 'word' (a URL, a base64 blob…) until pieces fit."""
        tokens = self._count(word)
        if tokens <= self._max:
            return [(word, tokens)]
        if len(word) == 1:
            raise ValueError(f"max_tokens={self._max} is smaller than the single character {word!r}")
        middle = len(word) // 2
        return self._cut_word(word[:middle]) + self._cut_word(word[middle:])

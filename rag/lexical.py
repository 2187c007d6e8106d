"""BM25-style sparse vectors for the lexical half of hybrid retrieval.

Qdrant scores a sparse query against a sparse document as the dot product of
their weights; with the collection's ``IDF`` modifier it multiplies each query
term by the term's inverse document frequency, computed by Qdrant over the
collection (so IDF stays right as documents come and go). This module supplies
the rest of BM25:

* documents: each term's weight is the saturated, length-normalised term
  frequency ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg_len))``;
* queries: each distinct term with weight 1.

Together that is exactly Okapi BM25. ``avg_len`` is fixed per encoder (chunks
are bounded by the chunker, so their lengths vary little) rather than a running
average: a running average would make a chunk's weights depend on what was
indexed before it, and re-indexing would silently change scores.

Term ids are a stable 32-bit hash (CRC-32) of the normalised term, so no
vocabulary has to be stored or shared between processes; a collision only
merges two rare terms' statistics.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass

__all__ = ["LexicalEncoder", "SparseTerms", "term_id", "tokenize"]

_WORD = re.compile(r"\w+", re.UNICODE)

# Function words carry no topic; dropping them keeps sparse vectors short and
# stops them from adding noise to scores (their IDF is low, but not zero).
_STOPWORD_LIST = """
    a about above after again against all am an and any are as at be because been
    before being below between both but by can could did do does doing down during
    each few for from further had has have having he her here hers herself him
    himself his how i if in into is it its itself just me more most my myself no
    nor not now of off on once only or other our ours ourselves out over own same
    she should so some such than that the their theirs them themselves then there
    these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your yours yourself
    yourselves s t
"""
_STOPWORDS = frozenset(_STOPWORD_LIST.split())


def _stem(word: str) -> str:
    """A light English suffix stripper (plural and a few inflections).

    Deliberately conservative: it only folds forms that almost always mean the
    same thing ("wars"/"war", "studies"/"study"); numbers and short words are
    left alone.
    """
    if len(word) <= 3 or word.isdigit():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str, *, stem: bool = True) -> list[str]:
    """Lower-cased, accent-folded word tokens without stop words."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    words = (w for w in _WORD.findall(folded) if w not in _STOPWORDS)
    return [_stem(w) for w in words] if stem else list(words)


def term_id(term: str) -> int:
    """Stable unsigned 32-bit id of a term (the same in every process)."""
    return zlib.crc32(term.encode("utf-8"))


@dataclass(frozen=True)
class SparseTerms:
    """A sparse vector: parallel lists of term ids and weights, ids unique."""

    indices: list[int]
    values: list[float]

    def __bool__(self) -> bool:
        return bool(self.indices)


class LexicalEncoder:
    def __init__(self, *, k1: float = 1.2, b: float = 0.75, avg_len: float = 100.0, stem: bool = True) -> None:
        if k1 < 0 or not 0 <= b <= 1 or avg_len <= 0:
            raise ValueError("BM25 needs k1 >= 0, 0 <= b <= 1 and avg_len > 0")
        self.k1 = k1
        self.b = b
        self.avg_len = avg_len
        self.stem = stem

    def _counts(self, text: str) -> Counter[int]:
        return Counter(term_id(t) for t in tokenize(text, stem=self.stem))

    def encode_document(self, text: str) -> SparseTerms:
        counts = self._counts(text)
        length = sum(counts.values())
        norm = self.k1 * (1 - self.b + self.b * length / self.avg_len)
        indices = sorted(counts)
        values = [counts[i] * (self.k1 + 1) / (counts[i] + norm) for i in indices]
        return SparseTerms(indices, values)

    def encode_query(self, text: str) -> SparseTerms:
        indices = sorted(self._counts(text))
        return SparseTerms(indices, [1.0] * len(indices))

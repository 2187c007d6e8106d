"""The quality gate's metric: answer-recall@k on a collection's golden questions.

A golden question is a question, the answer strings that count as right, and the
document that should answer it (its id or file name). It is answered when one of
the top-k chunks retrieved for it comes from that document and contains one of
the answers after SQuAD normalisation (lowercase, punctuation and the articles
a/an/the removed, whitespace collapsed). Recall is the share answered.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from rag.errors import InvalidRequestError

__all__ = [
    "RECALL_AT",
    "GoldenQuestion",
    "Retrieved",
    "answer_recall",
    "contains_answer",
    "normalize_answer",
    "parse_golden_jsonl",
    "passes_gate",
]

RECALL_AT = 5
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


@dataclass(frozen=True)
class GoldenQuestion:
    question: str
    answers: list[str]
    document: str  # document id or file name


class Retrieved(Protocol):
    @property
    def document_id(self) -> str: ...
    @property
    def filename(self) -> str: ...
    @property
    def text(self) -> str: ...


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def contains_answer(text: str, answers: Sequence[str]) -> bool:
    """Whether one of ``answers`` appears in ``text`` as whole words, both normalised."""
    haystack = f" {normalize_answer(text)} "
    return any((needle := normalize_answer(a)) and f" {needle} " in haystack for a in answers)


def answer_recall(
    questions: Sequence[GoldenQuestion],
    retrieve: Callable[[str, int], Sequence[Retrieved]],
    k: int = RECALL_AT,
) -> float:
    """Share of ``questions`` whose top-``k`` chunks hold an answer from the right document."""
    if not questions:
        return 0.0
    answered = 0
    for q in questions:
        for hit in retrieve(q.question, k)[:k]:
            if q.document in (hit.document_id, hit.filename) and contains_answer(hit.text, q.answers):
                answered += 1
                break
    return answered / len(questions)


def passes_gate(current: float, candidate: float, margin: float) -> bool:
    """A candidate may be below the current score by at most ``margin``."""
    return candidate >= current - margin - 1e-9


def parse_golden_jsonl(text: str) -> list[GoldenQuestion]:
    """One JSON object per line: {"question": str, "answers": [str, ...], "document": str}."""
    out: list[GoldenQuestion] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(item, dict):
            raise InvalidRequestError(f"line {number}: expected an object")
        question, answers, document = item.get("question"), item.get("answers"), item.get("document")
        if not isinstance(question, str) or not question.strip():
            raise InvalidRequestError(f"line {number}: 'question' must be a non-empty string")
        if (
            not isinstance(answers, list)
            or not answers
            or not all(isinstance(a, str) and normalize_answer(a) for a in answers)
        ):
            raise InvalidRequestError(f"line {number}: 'answers' must be a non-empty list of strings")
        if not isinstance(document, str) or not document.strip():
            raise InvalidRequestError(f"line {number}: 'document' must be a document id or file name")
        out.append(GoldenQuestion(question.strip(), [str(a) for a in answers], document.strip()))
    if not out:
        raise InvalidRequestError("no golden questions in the upload")
    return out

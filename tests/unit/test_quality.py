from __future__ import annotations

from dataclasses import dataclass

import pytest

from rag.errors import InvalidRequestError
from rag.quality import (
    GoldenQuestion,
    answer_recall,
    contains_answer,
    normalize_answer,
    parse_golden_jsonl,
    passes_gate,
)


@dataclass
class Hit:
    document_id: str
    filename: str
    text: str


def test_squad_normalisation() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a day.") == "apple day"
    assert normalize_answer("ZEBRA-4471") == "zebra4471"
    assert normalize_answer("  Theatre  ") == "theatre"  # 'the' only as a word


def test_answers_match_whole_words_after_normalisation() -> None:
    assert contains_answer("The code is ZEBRA-4471, keep it.", ["zebra 4471", "Zebra-4471"])
    assert not contains_answer("The code is ZEBRA-44712.", ["ZEBRA-4471"])
    assert contains_answer("It opens in the spring.", ["Spring"])
    assert not contains_answer("anything", ["the"])  # an answer that normalises to nothing never matches


def test_recall_needs_the_right_document_in_the_top_k() -> None:
    questions = [
        GoldenQuestion("q1", ["Paris"], "doc-a"),
        GoldenQuestion("q2", ["Rome"], "b.txt"),
        GoldenQuestion("q3", ["Oslo"], "doc-c"),
    ]
    index = {
        "q1": [Hit("doc-x", "x.txt", "Paris"), Hit("doc-a", "a.txt", "the capital is Paris")],
        "q2": [Hit("doc-b", "b.txt", "Rome, of course")],  # matched by file name
        "q3": [Hit("doc-x", "x.txt", "Oslo")] * 5 + [Hit("doc-c", "c.txt", "Oslo")],  # 6th: outside top-5
    }
    assert answer_recall(questions, lambda q, k: index[q]) == pytest.approx(2 / 3)
    assert answer_recall([], lambda q, k: []) == 0.0


def test_gate_margin() -> None:
    assert passes_gate(0.8, 0.8, 0.0)
    assert passes_gate(0.8, 0.75, 0.05)
    assert not passes_gate(0.8, 0.7, 0.05)
    assert passes_gate(0.5, 0.9, 0.0)


def test_golden_jsonl_parsing() -> None:
    items = parse_golden_jsonl(
        '{"question": "Who?", "answers": ["Ann", "Anne"], "document": "a.txt"}\n\n'
        '{"question": "When?", "answers": ["1999"], "document": "9f1c"}\n'
    )
    assert [i.question for i in items] == ["Who?", "When?"] and items[0].answers == ["Ann", "Anne"]
    for bad, where in (
        ("not json", "line 1"),
        ('{"question": "x", "answers": [], "document": "d"}', "answers"),
        ('{"question": "x", "answers": ["y"]}', "document"),
        ('{"question": "x", "answers": ["The"], "document": "d"}', "answers"),
        ('["x"]', "object"),
        ("", "no golden"),
    ):
        with pytest.raises(InvalidRequestError, match=where):
            parse_golden_jsonl(bad)

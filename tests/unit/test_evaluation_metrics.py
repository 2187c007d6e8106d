from __future__ import annotations

import pytest

from rag.errors import InvalidRequestError
from rag.evaluation import contains_answer, exact_match, f1_score, normalize_answer, percentile, render_table
from rag.intake import check_metadata


def test_squad_normalisation() -> None:
    assert normalize_answer("The  Walt Disney Company!") == "walt disney company"
    assert normalize_answer("an Apple, a day") == "apple day"


def test_contains_answer_matches_whole_normalised_words() -> None:
    passage = "In 1957, ABC stylized its logo as 'abc'. The Walt Disney Company owns it."
    assert contains_answer(passage, ["the Walt Disney company"])
    assert contains_answer(passage, ["nope", "1957"])
    assert not contains_answer(passage, ["195"])
    assert not contains_answer(passage, [""])
    assert not contains_answer(passage, [])


def test_exact_match_and_f1_take_the_best_gold_answer() -> None:
    assert exact_match("Disney", ["The Walt Disney Company", "disney"]) == 1.0
    assert exact_match("Walt", ["Disney"]) == 0.0
    assert f1_score("Walt Disney", ["The Walt Disney Company"]) == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert f1_score("unrelated", ["Disney"]) == 0.0


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile([3.0], 95) == 3.0
    assert percentile([], 50) is None


def test_table_shows_every_measure() -> None:
    report = {
        "collection": "c",
        "mode": "hybrid",
        "reranked": False,
        "questions": 3,
        "answerable": 2,
        "unanswerable": 1,
        "answer_recall": {"@1": 0.5, "@5": 1.0, "@10": 1.0},
        "mrr": 0.75,
        "abstention": None,
        "false_abstention": 0.0,
        "retrieval_latency_ms": {"p50": 12.5, "p95": 20.0},
        "generation": {
            "sample": 1,
            "exact_match": 0.0,
            "f1": 0.4,
            "abstained": 0.0,
            "latency_ms": {"p50": 1, "p95": 2},
        },
    }
    table = render_table(report)
    for text in ("answer-recall@5", "1.000", "MRR", "0.750", "n/a", "12.5 / 20.0 ms", "F1", "0.400"):
        assert text in table


def test_upload_metadata_is_flat_and_typed() -> None:
    ok = {"team": "red", "year": 2024, "score": 0.5, "draft": False, "tags": ["a", "b"]}
    assert check_metadata(ok) == ok
    for bad in ({"bad key": 1}, {"x": {"nested": 1}}, {"x": None}, {"x": [1, [2]]}, {"1x": 1}):
        with pytest.raises(InvalidRequestError):
            check_metadata(bad)

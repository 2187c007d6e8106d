"""Paragraph classification without the spaCy runs whose answer the service
does not use (ingest.unstructured_setup.skip_unused_classification): Titles,
list items and every block's text and section stay as unstructured's full
classification gives them; long paragraphs are not run through spaCy."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from ingest.parsing import parse_file
from ingest.unstructured_setup import _NARRATIVE_CALLERS, skip_unused_classification

TEXTS = [
    "Results and Discussion",
    "THE HISTORY OF THE COMPANY",
    "• apples and pears",
    "1. The first step",
    "The committee met in 1998.",
    "Revenue grew by four per cent in the year, and the board approved a new plan for the next decade.",
    "ANNUAL REPORT TABLE OF CONTENTS SECTION ONE SECTION TWO SECTION THREE SECTION FOUR APPENDIX",
    "Tables chairs lamps sofas beds desks shelves rugs mirrors clocks vases frames cushions",
    "12 345 678 910 1112 1314 1516 1718 1920 2122 2324 2526 2728",
    "",
]


def _element_from_text(text: str) -> Any:
    from unstructured.partition.text import element_from_text

    return element_from_text(text)


def test_titles_and_list_items_are_classified_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    skip_unused_classification()
    text_type = importlib.import_module("unstructured.partition.text_type")
    fast = text_type.is_possible_narrative_text
    with_fast = [_element_from_text(t).category if t else None for t in TEXTS]
    for name in _NARRATIVE_CALLERS:
        monkeypatch.setattr(importlib.import_module(name), "is_possible_narrative_text", fast._rag_original)
    before = [_element_from_text(t).category if t else None for t in TEXTS]
    assert "Title" in before and "ListItem" in before
    for text, old, new in zip(TEXTS, before, with_fast, strict=True):
        if old in ("Title", "ListItem", None) or new in ("Title", "ListItem", None):
            assert new == old, text
        else:  # the one difference allowed: which of the two plain-text categories
            assert {old, new} <= {"NarrativeText", "UncategorizedText"}, text


def test_long_paragraphs_are_not_run_through_spacy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    skip_unused_classification()
    tokenize = importlib.import_module("unstructured.nlp.tokenize")
    seen: list[str] = []
    original = tokenize._run_pipeline
    monkeypatch.setattr(tokenize, "_run_pipeline", lambda text: seen.append(text) or original(text))
    tokenize._process_cached.cache_clear()
    long = " ".join(f"The river number {i} flows past the old mill and into the sea." for i in range(5))
    path = tmp_path / "notes.txt"
    path.write_text(f"Rivers of the North\n\n{long}\n\nMills\n\n{long.replace('river', 'stream')}\n")
    blocks = parse_file(path, path.name)
    assert [(b.section, b.category == "Title") for b in blocks] == [
        ("Rivers of the North", True),
        ("Rivers of the North", False),
        ("Mills", True),
        ("Mills", False),
    ]
    assert seen and all(len(text.split(" ")) <= 12 for text in seen)

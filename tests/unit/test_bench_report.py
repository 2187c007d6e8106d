"""bench/report.py: the JSON report and the SQuAD score table every benchmark
prints the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.report import emit, print_squad_scores


def test_emit_prints_and_writes_the_same_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = {"chunks": 3, "backends": {"onnx": {"recall": 0.5}}}
    emit(report, tmp_path / "r.json")
    emit(report, None)
    out = capsys.readouterr().out
    written = (tmp_path / "r.json").read_text()
    assert written.endswith("\n") and json.loads(written) == report
    assert out == 2 * (written.rstrip("\n") + "\n")


def test_squad_scores_are_means_per_name(capsys: pytest.CaptureFixture[str]) -> None:
    print_squad_scores("style", {"a": [(1.0, 1.0), (0.0, 0.5)], "b": [(0.0, 0.0)]})
    assert capsys.readouterr().out.splitlines() == [
        "| style | exact match | F1 |", "|---|---|---|", "| a | 0.500 | 0.750 |", "| b | 0.000 | 0.000 |",
    ]

"""bench/answers.py: where squad-dev is found, and the mode a merge reports."""

from __future__ import annotations

import json
from pathlib import Path

from bench.answers import default_squad, run_mode


def test_squad_dev_is_found_above_a_worktree(tmp_path: Path) -> None:
    squad = tmp_path / "shared" / "eval" / "squad-dev"
    squad.mkdir(parents=True)
    (squad / "qa.jsonl").write_text("")
    assert default_squad(tmp_path / "main") == squad  # /work/main
    assert default_squad(tmp_path / "wt" / "answers") == squad  # /work/wt/answers
    assert default_squad(tmp_path / "elsewhere" / "x" / "y") == squad
    (squad / "qa.jsonl").unlink()
    assert default_squad(tmp_path / "wt" / "answers") is None


def test_merge_reports_the_mode_the_records_were_made_with(tmp_path: Path) -> None:
    records = tmp_path / "run.jsonl"
    assert run_mode(records, [{"mode": "dense"}, {"mode": "dense"}]) == "dense"
    assert run_mode(records, [{"mode": "dense"}, {"mode": "lexical"}]) is None
    assert run_mode(records, [{}]) is None  # older records: no mode, no report
    (tmp_path / "run.report.json").write_text(json.dumps({"mode": "lexical"}))
    assert run_mode(records, [{}]) == "lexical"

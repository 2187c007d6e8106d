"""How a benchmark hands back its results: the JSON report (on stdout and in
``--json``) and the Markdown table of SQuAD scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["emit", "print_squad_scores"]


def emit(report: dict[str, Any], path: Path | None) -> None:
    """``report`` as indented JSON on stdout, and in ``path`` when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if path:
        path.write_text(text + "\n")


def print_squad_scores(label: str, scores: dict[str, list[tuple[float, float]]]) -> None:
    """One Markdown row a name: the mean of its (exact match, F1) pairs."""
    print(f"| {label} | exact match | F1 |\n|---|---|---|")
    for name, pairs in scores.items():
        ems, f1s = zip(*pairs, strict=True)
        print(f"| {name} | {sum(ems) / len(ems):.3f} | {sum(f1s) / len(f1s):.3f} |")

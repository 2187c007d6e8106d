"""bench/device/timeline.py: a round's prompt phase step by step."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

_spec = importlib.util.spec_from_file_location(
    "timeline", Path(__file__).resolve().parents[2] / "bench" / "device" / "timeline.py"
)
assert _spec is not None and _spec.loader is not None
timeline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(timeline)


def step(began: float, seconds: float, prompt: int) -> dict[str, Any]:
    return {"began": began, "collected": began + seconds, "prompt": prompt}


def test_prompt_steps_are_listed_by_position_with_the_gap_before_each(capsys: pytest.CaptureFixture[str]) -> None:
    http = {"service-chat-S16": {"streams": {"16": {"rounds": [
        {"started": 10.0, "wall_s": 1.0}, {"started": 20.0, "wall_s": 1.0}]}}}}
    steps = []
    for t0, first in ((10.0, 0.012), (20.0, 0.010)):
        steps += [step(t0 + 0.005, first, 508), step(t0 + 0.018, 0.045, 2032), step(t0 + 0.070, 0.003, 0)]
    timeline.prompt_steps(http, steps, {16: {"t_pp": 0.160, "t_tg": 0.4, "t": 0.56}}, "service-chat-S")
    out = capsys.readouterr().out
    assert out.startswith("prompt steps service-chat-S16: 2 rounds  #0 508 tok 11.0 ms (gap 0.00)")
    assert "#1 2032 tok 45.0 ms (gap 2.00)" in out  # 18 ms after the start, 17 and 15 ms after the first began
    assert "#2" not in out and out.rstrip().endswith("batched-bench 40.0 ms per 2,048 tokens")


def test_a_json_of_one_service_is_read_as_one_of_several() -> None:
    # bench/load.py without --versus writes one service's report, keyed by its fields, not by its label.
    one = {"kind": "chat", "url": "http://x", "label": "svc-chat-S1",
           "streams": {"1": {"rounds": [{"started": 10.0, "wall_s": 1.0}]}}}
    assert timeline.rounds_of(one, "svc-chat-S") == {1: [{"started": 10.0, "wall_s": 1.0}]}
    assert timeline.rounds_of({"svc-chat-S1": one}, "svc-chat-S") == timeline.rounds_of(one, "svc-chat-S")

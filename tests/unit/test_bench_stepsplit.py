"""bench/device/stepsplit.py: a decode step split into llama_decode, the wait and the scheduler's own part."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "stepsplit", Path(__file__).resolve().parents[2] / "bench" / "device" / "stepsplit.py"
)
assert _spec is not None and _spec.loader is not None
stepsplit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stepsplit)


def write(path: Path, rows: list[tuple[float, float, float, int, int]]) -> Path:
    path.write_text("".join(json.dumps({"began": b, "launched": la, "collected": c, "tokens": n, "prompt": p,
                                        "outputs": n}) + "\n" for b, la, c, n, p in rows))
    return path


def test_decode_steps_are_split_by_sequence_count_and_idle_gaps_and_prompt_steps_left_out(tmp_path: Path) -> None:
    rows = [(0.0, 0.010, 0.020, 2, 2)]  # a prompt step: neither it nor the step after it counts
    t = 0.020
    for _ in range(4):  # single-stream steps: 0.01 ms between, 0.3 ms in llama_decode, 0.7 ms waiting
        rows.append((t + 0.00001, t + 0.00031, t + 0.00101, 1, 0))
        t += 0.00101
    rows.append((t + 1.0, t + 1.0003, t + 1.001, 1, 0))  # after an idle second: not a step's period
    split = stepsplit.split([write(tmp_path / "s.jsonl", rows)])
    assert list(split) == [1]
    one = split[1]
    assert one["steps"] == 3
    assert one["host"] == pytest.approx(0.3) and one["wait"] == pytest.approx(0.7)
    assert one["between"] == pytest.approx(0.01) and one["period"] == pytest.approx(1.01)


def test_the_single_stream_is_set_against_llama_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rows = [(i * 0.00125, i * 0.00125 + 0.0003, (i + 1) * 0.00125, 1, 0) for i in range(5)]
    path = write(tmp_path / "s.jsonl", rows)
    monkeypatch.setattr("sys.argv", ["stepsplit.py", str(path), "--tg", "1000"])
    stepsplit.main()
    out = capsys.readouterr().out
    assert "steps of   1 sequences:      4 steps" in out
    assert "period 1.250" in out and "llama-bench 1.000 ms a token: ratio 0.800" in out


def test_chained_steps_began_before_the_last_ones_tokens_were_read_and_still_count(tmp_path: Path) -> None:
    # llama_decode_chained: step k+1 is queued (began) before step k's tokens come back (collected).
    rows = [(0.0, 0.001, 0.002, 1, 0)]
    for _ in range(4):
        rows.append((rows[-1][2] - 0.0005, rows[-1][2] + 0.0001, rows[-1][2] + 0.001, 1, 0))
    one = stepsplit.split([write(tmp_path / "s.jsonl", rows)])[1]
    assert one["steps"] == 4 and one["between"] == pytest.approx(-0.5) and one["period"] == pytest.approx(1.0)

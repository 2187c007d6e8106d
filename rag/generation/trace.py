"""A record of the scheduler's steps, for finding where a burst's time goes
(``RAG_LLM_STEP_TRACE``; off by default).

One JSON line per step: when it began, when ``llama_decode``'s call returned
and when its sampled tokens had been read (``time.perf_counter``, the
machine's monotonic clock, so a load client on the same machine can set its
own timestamps beside them), the tokens in the batch, how many of them were
prompt, and the sequences that produced a token. Lines are kept in memory
and appended to the file when the scheduler has nothing left to do, so
writing never lands inside a burst.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["StepTrace"]

_FLUSH_AT = 8192  # steps kept before writing anyway (a scheduler that never idles)


class StepTrace:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._rows: list[tuple[float, float, float, int, int, int]] = []

    def record(self, began: float, launched: float, collected: float, tokens: int, prompt: int, outputs: int) -> None:
        self._rows.append((began, launched, collected, tokens, prompt, outputs))
        if len(self._rows) >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        with self.path.open("a", encoding="utf-8") as out:
            for began, launched, collected, tokens, prompt, outputs in rows:
                out.write(json.dumps({"began": round(began, 6), "launched": round(launched, 6),
                                      "collected": round(collected, 6), "tokens": tokens, "prompt": prompt,
                                      "outputs": outputs}) + "\n")

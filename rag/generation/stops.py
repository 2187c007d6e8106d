"""Stop strings in streamed text."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopMatcher"]


class StopMatcher:
    """Finds stop strings in streamed text, holding back what could still
    become one so that no part of a stop string is ever emitted."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self.text = ""
        self._emitted = 0

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add text; returns (text safe to emit now, whether a stop was hit)."""
        self.text += piece
        hits = [self.text.find(s, max(0, self._emitted - len(s))) for s in self._stops]
        cut = min((i for i in hits if i >= 0), default=-1)
        if cut >= 0:
            self.text = self.text[:cut]
            out = self.text[self._emitted :]
            self._emitted = len(self.text)
            return out, True
        safe_end = max(self._emitted, len(self.text) - self._hold)
        out = self.text[self._emitted : safe_end]
        self._emitted = safe_end
        return out, False

    def flush(self) -> str:
        out = self.text[self._emitted :]
        self._emitted = len(self.text)
        return out


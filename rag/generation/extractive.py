"""Extractive decoding (``CopyConstraint``): every generated token continues a
run of tokens that stands in the source (the passages of the prompt), so the
answer is a span copied from them, token for token.

SQuAD-style answers are spans of the passage; a small base model left free
paraphrases, adds words or drifts into the question. Greedy decoding under the
constraint takes, at each step, the most likely token among those that follow
some position where the answer so far matches the source; one of the ``end``
tokens (a newline: the completion prompt's stop) may end the answer once at
least one token was copied. The constraint needs the logits on the CPU: the
scheduler applies it where it reads them (greedy, not sampled in the decode
graph), as it records log-probabilities.
"""

from __future__ import annotations

from typing import Any

from rag.generation.types import CopySource

__all__ = ["CopyConstraint", "token_logprob"]


class CopyConstraint:
    """The state of one extractive generation: the positions of the source
    where the tokens copied so far end (any position before the first)."""

    def __init__(self, source: CopySource) -> None:
        import numpy as np

        self._np = np
        flat: list[int] = []
        for run in source.runs:
            flat.extend(run)
            flat.append(-1)  # no span crosses from one passage into the next
        self._src = np.array(flat, dtype=np.int64)
        self._end = np.array(sorted(set(source.end)), dtype=np.int64)
        self._end_bias = source.end_bias
        self._pos = np.flatnonzero(self._src >= 0)  # positions whose token may come next
        self.copied = 0

    def allowed(self) -> Any:
        """The token ids that may come next (sorted, unique)."""
        np = self._np
        following = self._src[self._pos]
        ids = np.unique(following[following >= 0])
        if self.copied and len(self._end):
            ids = np.union1d(ids, self._end)
        return ids

    def choose(self, logits: Any) -> int:
        """The most likely allowed token of ``logits`` (one row over the
        vocabulary), and the state moved past it."""
        ids = self.allowed()
        if not len(ids):  # an empty source: nothing to copy from
            return int(logits.argmax())
        scores = logits[ids]
        if self.copied and self._end_bias:
            scores = scores + self._end_bias * self._np.isin(ids, self._end)
        token = int(ids[int(scores.argmax())])
        self.advance(token)
        return token

    def advance(self, token: int) -> None:
        """Moves past ``token``; an end token (or one not in the source) leaves
        the state as it was."""
        following = self._src[self._pos]
        matched = self._pos[following == token]
        if len(matched):
            self._pos = matched + 1
            self.copied += 1


def token_logprob(np: Any, logits: Any, token: int) -> float:
    """Natural-log probability of ``token`` under the softmax of ``logits``."""
    top = float(logits.max())
    return float(logits[token]) - top - float(np.log(np.exp(logits - top).sum()))

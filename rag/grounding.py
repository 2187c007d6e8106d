"""Is a generated answer grounded in its passages? Evidence spans and abstention.

Two questions about every answer ``ask`` generates:

* **Evidence**: where in the cited passages does the answer stand? The sentence
  of a passage that holds the answer (exactly, or most of its words) is quoted
  with the passage's rank and character offsets into its text; ``supported`` is
  True when all the answer's content words are found in one such sentence.
* **Abstention**: do the passages answer the question at all? SQuAD 2.0's
  unanswerable questions are written against the same paragraphs as the
  answerable ones, so retrieval finds relevant-looking text and the cosine gate
  never fires. What tells them apart is whether the passage says what the
  question asks: a word of the question missing from the sentence the answer
  was taken from (a changed name, a date, an added "not"), an answer the model
  is unsure of (low token log-probabilities), an answer not found in the text.
  ``GroundingJudge`` turns these features into one probability that the
  question is unanswerable with a logistic regression fitted on squad-dev
  (coefficients in ``ABSTENTION_MODEL``; ``bench/abstention.py`` fits them
  and sweeps the threshold) and abstains above ``threshold``
  (``RAG_ABSTAIN_THRESHOLD``). The shipped model (session 7) weighs only the
  question against its best three passages (``passage_features``): the
  answer's own features, its token log-probabilities and a yes/no
  verification pass added nothing on held-out squad-dev (docs/benchmarks.md).

Everything here is plain text work on the answer, the passages and the token
log-probabilities of the answer: no model runs.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag.abstention_model import MODEL

__all__ = [
    "ABSTENTION_MODEL",
    "FEATURES",
    "Evidence",
    "Grounding",
    "GroundingJudge",
    "content_words",
    "find_evidence",
    "grounding_features",
    "is_refusal",
    "passage_features",
    "question_sentences",
    "split_sentences",
]

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
# A sentence ends at . ! ? before a capital or digit, and at every line break
# (headings, list items and table rows stand on lines of their own).
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*[ \t]+(?=[\"'(\[]?[A-Z0-9])|[ \t]*\n\s*")
_STOP_TEXT = """a an the of in on at to for from by with about as into over under after before between during
and or but nor so yet if then than that this these those there here it its it's is are was were be been
being am do does did done have has had having can could will would shall should may might must
what which who whom whose when where why how whatever whichever
i me my we our you your he him his she her they them their one ones
not no any some all each every other another such same own only also very just too more most much many
s t up out off again further once name named call called"""
_STOP = frozenset(_STOP_TEXT.split())
_REFUSAL = re.compile(
    r"\b(don'?t|do not|does not|doesn'?t|cannot|can'?t|is not|isn'?t)\b.{0,40}"
    r"\b(contain|answer|mention|say|state|provide|information)|\bno (information|answer|mention)\b",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    """A light stemmer: enough to match "wars"/"war", "founded"/"found".
    Remembered: an answer is judged against its passages' every word, and the
    judging runs on the event loop at the end of each /ask (a burst's streams
    end together, and their judgings queue there)."""
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    for suffix in ("ies", "es", "s", "ed", "ing", "ly"):
        if len(w) > len(suffix) + 3 and w.endswith(suffix):
            return w[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return w


def content_words(text: str) -> list[str]:
    """Stemmed words of ``text`` without stop words, in order."""
    return list(_content_words(text))


@functools.lru_cache(maxsize=4096)
def _content_words(text: str) -> tuple[str, ...]:
    # Judging one answer reads each sentence of its passages several times.
    return tuple(_stem(w) for w in _WORD.findall(text) if w.lower() not in _STOP)


def is_refusal(answer: str) -> bool:
    """Whether the model itself said the documents don't answer."""
    return bool(_REFUSAL.search(answer))


@functools.lru_cache(maxsize=1024)
def split_sentences(text: str) -> tuple[tuple[int, int], ...]:
    """Character spans of the sentences of ``text`` (blank-trimmed). Judging
    one answer splits each of its passages three times, and the passages of
    a collection come back request after request: half of ``assess``'s time,
    on the event loop, before the cache."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            out.append((a, b))
    return tuple(out)


def question_sentences(question: str, passages: Sequence[str], n: int) -> list[str]:
    """The ``n`` sentences of ``passages`` that hold the largest share of the
    question's content words (ties: the earlier passage), in that order. On
    squad-dev's held-out part the best one holds the gold answer for 0.61 of
    the answerable questions, the best two for 0.72: more often than the
    sentence the bundled model answered from (0.31; docs/benchmarks.md)."""
    q_words = set(content_words(question))
    scored = []
    for p, text in enumerate(passages):
        for a, b in split_sentences(text):
            share = len(q_words & set(content_words(text[a:b]))) / len(q_words) if q_words else 0.0
            scored.append((-share, p, a, text[a:b]))
    scored.sort(key=lambda s: s[:3])
    return [s[3] for s in scored[:n]]


@dataclass(frozen=True)
class Evidence:
    """A quoted span of a passage: ``text == passage_text[start:end]``."""

    rank: int  # the passage's rank among the answer's sources
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Grounding:
    evidence: list[Evidence]
    supported: bool  # the answer's content words all stand in one quoted sentence
    abstain: bool = False
    reason: str | None = None  # why it abstains
    unanswerable_probability: float | None = None
    features: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Match:
    rank: int
    start: int
    end: int
    support: float  # share of the answer's content words in the sentence (1.0: the answer verbatim)
    exact: bool


def _best_match(answer: str, passages: Sequence[tuple[int, str]]) -> _Match | None:
    """The sentence that best holds ``answer``: verbatim first (earliest rank),
    else the largest share of its content words."""
    needle = " ".join(answer.split()).strip(" .,;:!?\"'").lower()
    words = set(content_words(answer))
    best: _Match | None = None
    for rank, text in passages:
        sentences = split_sentences(text)
        if needle:
            lowered = text.lower()
            at = lowered.find(needle)
            if at < 0 and len(needle) > 3 and needle in " ".join(lowered.split()):
                # Whitespace differs (line breaks inside the passage): where, in the text as it is
                # (the pattern compiled only then: an answer's is new each time and long).
                pattern = r"\s+".join(re.escape(part) for part in needle.split())
                found = re.search(pattern, lowered)
                at = found.start() if found else -1
            if at >= 0:
                for a, b in sentences:
                    if a <= at < b or (at < a and at + len(needle) > a):
                        return _Match(rank, a, b, 1.0, True)
        if not words:
            continue
        for a, b in sentences:
            present = set(content_words(text[a:b]))
            share = len(words & present) / len(words)
            if share > 0 and (best is None or share > best.support):
                best = _Match(rank, a, b, share, False)
    return best


def _cited(answer: str) -> set[int]:
    return {int(n) for n in re.findall(r"\[(\d{1,2})\]", answer)}


def find_evidence(answer: str, passages: Sequence[tuple[int, str]]) -> tuple[list[Evidence], bool]:
    """Quoted evidence for ``answer`` among ``passages`` ((rank, text) pairs)
    and whether the answer is supported. Passages the answer cites as ``[n]``
    are searched first; the rest only if they hold nothing."""
    body = re.sub(r"\s*\[\d{1,2}\]", "", answer).strip()
    if not body or is_refusal(body):
        return [], False
    cited = _cited(answer)
    order = [p for p in passages if p[0] in cited] + [p for p in passages if p[0] not in cited]
    match = _best_match(body, [p for p in order if p[0] in cited]) if cited else None
    if match is None or match.support < 1.0:
        other = _best_match(body, order)
        if other is not None and (match is None or other.support > match.support):
            match = other
    if match is None:
        return [], False
    text = dict(passages)[match.rank]
    evidence = Evidence(match.rank, match.start, match.end, text[match.start : match.end])
    return [evidence], match.support >= 1.0


# Features, in the order ``ABSTENTION_MODEL`` weighs them.
FEATURES = (
    "question_coverage",  # share of the question's content words in the evidence sentence and the one before
    "question_coverage_best",  # best share in any single sentence of the (best three) passages
    "missing_names",  # capitalised or numeric question words absent from the evidence window
    "missing_words",  # question content words absent from the evidence window
    "negation_mismatch",  # the question says not/never/no, the evidence window does not
    "answer_in_question",  # share of the answer's content words already in the question
    "answer_support",  # share of the answer's content words in its sentence (1.0: verbatim)
    "refusal",  # the model said the documents don't contain it
    "mean_logprob",  # mean log-probability of the answer's tokens
    "min_logprob",  # the least likely token of the answer
    "first_logprob",  # the first token
    "answer_words",  # log(1 + number of words in the answer)
    # Session 7: the question against the passages alone (the answer does not
    # enter), aimed at how SQuAD 2.0's unanswerable questions were written
    # (a paragraph's question with a name, number or word swapped, negated).
    "best_margin",  # best sentence's share of the question's content words minus the second best's
    "missing_words_passages",  # share of the question's content words in none of the passages
    "missing_names_passages",  # the question's names/numbers in none of the passages
    "missing_names_best",  # the question's names/numbers not in the best sentence (and the one before)
    "missing_words_best",  # share of the question's content words not in the best sentence (and the one before)
    "missing_bigrams",  # share of the question's word pairs (one a content word) in none of the passages
    "negation_mismatch_best",  # the question says not/never/no, the best sentence (and the one before) does not
    "question_words",  # log(1 + number of the question's content words)
    "type_mismatch",  # when/how many/who asked, the answer has no number/date or name
)

# Fitted by bench/abstention.py on the fit part of squad-dev (docs/benchmarks.md):
# weights of the standardised features, their means and spreads, the intercept,
# and the threshold of the chosen operating point.
ABSTENTION_MODEL: dict[str, Any] = MODEL


_NEGATION = re.compile(r"\b(not|never|no|none|nor|neither|n't|without)\b|n't\b", re.IGNORECASE)


def _window_text(text: str, start: int, end: int) -> str:
    """The evidence sentence and the one before it (which often names what
    "it" or "he" stands for)."""
    spans = split_sentences(text)
    idx = next((i for i, (a, b) in enumerate(spans) if a <= start < b), None)
    if idx is not None and idx > 0:
        start = spans[idx - 1][0]
    return text[start:end]


def _window_words(text: str, start: int, end: int) -> list[str]:
    return content_words(_window_text(text, start, end))


def _names(question: str) -> set[str]:
    words = _WORD.findall(question)
    # The first word is capitalised anyway; numbers and proper names inside count.
    return {_stem(w) for i, w in enumerate(words) if (i > 0 and w[:1].isupper()) or w[:1].isdigit()} - {
        _stem(w) for w in _STOP
    }


_NUMBER_ASKED = re.compile(
    r"\b(when|what (year|decade|century|date|day|month|time|age|percentage)|which (year|decade|century)|"
    r"how (many|much|long|old|far|large|big|tall|high|often|fast))\b",
    re.IGNORECASE,
)
_MONTHS = "january february march april may june july august september october november december"
_NUMBER_TEXT = """one two three four five six seven eight nine ten eleven twelve twenty thirty hundred thousand
million billion half dozen first second third century centuries decade decades year years"""
_NUMBER_WORDS = frozenset(_NUMBER_TEXT.split() + _MONTHS.split())


def _type_mismatch(question: str, answer: str) -> float:
    """1.0 when the question asks for a number or date and the answer holds
    none, or asks "who" and the answer names no one (no capitalised word)."""
    words = _WORD.findall(answer)
    if _NUMBER_ASKED.search(question):
        return float(not any(w[:1].isdigit() or w.lower() in _NUMBER_WORDS for w in words))
    if re.match(r"\s*(who|whom|whose)\b", question, re.IGNORECASE):
        return float(not any(w[:1].isupper() for w in words))
    return 0.0


def _bigrams(text: str) -> set[tuple[str, str]]:
    words = [_stem(w) for w in _WORD.findall(text)]
    return {(a, b) for a, b in itertools.pairwise(words) if a not in _STOP or b not in _STOP}


# The passage features look at the best three passages whatever RAG_TOP_K is:
# the abstention model was fitted on three (docs/benchmarks.md, issue 14).
PASSAGE_FEATURE_DEPTH = 3


def passage_features(question: str, passages: Sequence[tuple[int, str]]) -> dict[str, float]:
    """Features of the question against the passages (the best
    ``PASSAGE_FEATURE_DEPTH`` by rank), whatever the answer: what of the
    question the passages, and their sentence most like it, lack."""
    passages = sorted(passages)[:PASSAGE_FEATURE_DEPTH]
    q_words = set(content_words(question))
    names = _names(question)
    all_words: set[str] = set()
    all_bigrams: set[tuple[str, str]] = set()
    shares: list[tuple[float, int, int, int]] = []  # (-share, passage, start, end), as question_sentences ranks
    for p, (_, text) in enumerate(passages):
        all_words |= set(content_words(text))
        all_bigrams |= _bigrams(text)
        for a, b in split_sentences(text):
            share = len(q_words & set(content_words(text[a:b]))) / len(q_words) if q_words else 0.0
            shares.append((-share, p, a, b))
    shares.sort()
    q_bigrams = _bigrams(question)
    negated = bool(_NEGATION.search(question))
    features = {
        "question_coverage_best": -shares[0][0] if shares else 0.0,
        "best_margin": -shares[0][0] + shares[1][0] if len(shares) > 1 else (-shares[0][0] if shares else 0.0),
        "missing_words_passages": len(q_words - all_words) / len(q_words) if q_words else 0.0,
        "missing_names_passages": float(len(names - all_words)),
        "missing_names_best": float(len(names)),
        "missing_words_best": 1.0 if q_words else 0.0,
        "missing_bigrams": len(q_bigrams - all_bigrams) / len(q_bigrams) if q_bigrams else 0.0,
        "negation_mismatch_best": float(negated),
        "question_words": math.log1p(len(q_words)),
    }
    if shares:
        _, p, a, b = shares[0]
        text = passages[p][1]
        window_text = _window_text(text, a, b)
        window = set(content_words(window_text))
        features["missing_names_best"] = float(len(names - window))
        if q_words:
            features["missing_words_best"] = len(q_words - window) / len(q_words)
        features["negation_mismatch_best"] = float(negated and not _NEGATION.search(window_text))
    return features


def grounding_features(
    question: str,
    answer: str,
    passages: Sequence[tuple[int, str]],
    evidence: Sequence[Evidence],
    token_logprobs: Sequence[float] = (),
) -> dict[str, float]:
    q_words = set(content_words(question))
    texts = dict(passages)
    coverage = best = 0.0
    missing = float(len(_names(question)))
    missing_words = float(len(q_words))
    negated = bool(_NEGATION.search(question))
    negation_mismatch = float(negated)
    if q_words:
        for _, text in passages:
            for a, b in split_sentences(text):
                present = set(content_words(text[a:b]))
                best = max(best, len(q_words & present) / len(q_words))
        if evidence:
            ev = evidence[0]
            window = set(_window_words(texts[ev.rank], ev.start, ev.end))
            coverage = len(q_words & window) / len(q_words)
            missing = float(len(_names(question) - window))
            missing_words = float(len(q_words - window))
            window_text = _window_text(texts[ev.rank], ev.start, ev.end)
            negation_mismatch = float(negated and not _NEGATION.search(window_text))
    body = re.sub(r"\s*\[\d{1,2}\]", "", answer).strip()
    support = 0.0
    if evidence:
        words = set(content_words(body))
        quoted = set(content_words(evidence[0].text))
        support = 1.0 if body.lower().strip(" .") in evidence[0].text.lower() else (
            len(words & quoted) / len(words) if words else 0.0
        )
    a_words = set(content_words(body))
    in_question = len(a_words & q_words) / len(a_words) if a_words else 0.0
    lps = [lp for lp in token_logprobs if math.isfinite(lp)]
    features = {
        "question_coverage": coverage,
        "question_coverage_best": best,
        "missing_names": missing,
        "missing_words": missing_words,
        "negation_mismatch": negation_mismatch,
        "answer_in_question": in_question,
        "answer_support": support,
        "refusal": float(is_refusal(body) or not body),
        "answer_words": math.log1p(len(body.split())),
        "type_mismatch": _type_mismatch(question, body),
    }
    features.update(passage_features(question, passages))
    if lps:  # absent (sampling in the decode graph): the model then counts them at their means
        features.update(mean_logprob=sum(lps) / len(lps), min_logprob=min(lps), first_logprob=lps[0])
    return features


# +1: a higher value means "unanswerable" in the reason's words, -1: a lower one.
_TOWARD_UNANSWERABLE = {
    "question_coverage": -1,
    "question_coverage_best": -1,
    "missing_names": 1,
    "missing_words": 1,
    "negation_mismatch": 1,
    "answer_in_question": 1,
    "answer_support": -1,
    "refusal": 1,
    "mean_logprob": -1,
    "min_logprob": -1,
    "first_logprob": -1,
    "best_margin": -1,
    "missing_words_passages": 1,
    "missing_names_passages": 1,
    "missing_names_best": 1,
    "missing_words_best": 1,
    "missing_bigrams": 1,
    "negation_mismatch_best": 1,
    "question_words": 1,
    "type_mismatch": 1,
}


class GroundingJudge:
    """Evidence for every answer; abstention where the model says the question
    is unanswerable with probability ``threshold`` or more (1.0: never on
    content, only on a refusal or an answer with no evidence)."""

    def __init__(self, threshold: float | None = None, model: Mapping[str, object] | None = None) -> None:
        spec = dict(model or ABSTENTION_MODEL)
        self._weights = dict(spec["weights"])  # type: ignore[call-overload]
        self._mean = dict(spec["mean"])  # type: ignore[call-overload]
        self._scale = dict(spec["scale"])  # type: ignore[call-overload]
        self._intercept = float(spec["intercept"])  # type: ignore[arg-type]
        self.threshold = float(spec["threshold"] if threshold is None else threshold)  # type: ignore[arg-type]

    def probability(self, features: Mapping[str, float]) -> float:
        z = self._intercept
        for name, weight in self._weights.items():
            if name in features:
                z += float(weight) * (features[name] - float(self._mean[name])) / float(self._scale[name])
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def _reason(self, features: Mapping[str, float]) -> str:
        """The feature that pushed hardest toward "unanswerable", in words;
        only one whose value points the way its words say (correlated
        features can get weights of the other sign: the model may count a
        missing word less where the best sentence already lacks it, but "no
        word is missing" is no reason to abstain)."""
        pushes = {}
        for name, weight in self._weights.items():
            if name not in features:
                continue
            deviation = features[name] - float(self._mean[name])
            push = float(weight) * deviation / float(self._scale[name])
            if push > 0 and _TOWARD_UNANSWERABLE.get(name, 0) * deviation >= 0:
                pushes[name] = push
        if not pushes:
            return "the passages do not appear to answer the question"
        top = max(pushes, key=lambda n: pushes[n])
        return {
            "question_coverage": "the passage the answer comes from does not mention all that the question asks about",
            "question_coverage_best": "no passage sentence mentions all that the question asks about",
            "missing_names": "a name or number of the question is not in the passage the answer comes from",
            "missing_words": "words of the question are missing from the passage the answer comes from",
            "negation_mismatch": "the question asks about something that did not happen; the passage does not say so",
            "answer_in_question": "the answer only repeats the question",
            "answer_support": "the answer is not stated in the cited passages",
            "refusal": "the model found no answer in the passages",
            "mean_logprob": "the model is unsure of its answer",
            "min_logprob": "the model is unsure of part of its answer",
            "first_logprob": "the model is unsure of its answer",
            "answer_words": "the answer's length is unlike an answer taken from the passages",
            "best_margin": "no passage sentence stands out as the one the question is about",
            "missing_words_passages": "words of the question are in none of the passages",
            "missing_names_passages": "a name or number of the question is in none of the passages",
            "missing_names_best": "a name or number of the question is not where the passages speak of it",
            "missing_words_best": "words of the question are missing where the passages speak of it",
            "missing_bigrams": "the passages do not say what the question says in its words",
            "negation_mismatch_best": "the question asks about something that did not happen; "
            "the passage does not say so",
            "question_words": "the question asks about more than the passages say",
            "type_mismatch": "the answer is not the kind of thing the question asks for",
        }.get(top, "the passages do not appear to answer the question")

    def assess(
        self,
        question: str,
        answer: str,
        passages: Sequence[tuple[int, str]],
        token_logprobs: Sequence[float] = (),
    ) -> Grounding:
        evidence, supported = find_evidence(answer, passages)
        features = grounding_features(question, answer, passages, evidence, token_logprobs)
        p = self.probability(features)
        if features["refusal"]:
            return Grounding(evidence, False, True, "the model found no answer in the passages", p, features)
        if p >= self.threshold:
            return Grounding(evidence, supported, True, self._reason(features), p, features)
        return Grounding(evidence, supported, False, None, p, features)

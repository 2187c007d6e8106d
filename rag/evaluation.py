"""Evaluation of a collection against a QA set: how often retrieval finds the
answer, how often ``ask`` abstains, and how good generated answers are.

A QA item is ``{"question", "answers": [...], "document"}``; no answers means the
question is unanswerable from the collection. The measures:

* answer-recall@k: share of answerable questions where one of the top k chunks
  comes from the item's document (matched by file name, or by document id) and
  contains one of the answers, both normalised as SQuAD does (lower case, no
  punctuation, no articles, single spaces);
* MRR: mean of 1/rank of the first such chunk within the deepest k (0 if none);
* abstention: share of unanswerable questions where ``ask`` would answer "not in
  the documents" (decided by retrieval alone, the same gate ``ask`` applies
  before generating); false abstention: the same on answerable questions;
* on a sample of generated answers (generation is slow; 0 skips it), answerable
  and, if asked for, unanswerable questions: exact match and F1 (SQuAD) of the
  answers as returned (a withheld answer scores 0) and of the drafts before
  abstention; abstention after generation (``grounded`` false) on the
  unanswerable ones, false abstention on the answerable ones; how often an
  answer is ``supported``, and how often its quoted evidence contains a gold
  answer;
* latency p50/p95 of a single search (as ``/search`` runs it) on a sample of
  questions, and of ``ask`` on the generation sample. The recall measures embed
  the questions in batches, which gives the same rankings much faster.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rag.answering import NO_ANSWER
from rag.errors import InvalidRequestError
from rag.options import AskOptions, SearchOptions
from rag.quality import contains_answer, normalize_answer
from rag.retrieval import SearchHit
from rag.service import RagService
from rag.settings import SearchMode

__all__ = [
    "EvaluationReport",
    "QAItem",
    "contains_answer",
    "evaluate",
    "exact_match",
    "f1_score",
    "normalize_answer",
    "percentile",
    "render_table",
    "summarize_answers",
]

def exact_match(prediction: str, answers: Sequence[str]) -> float:
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def f1_score(prediction: str, answers: Sequence[str]) -> float:
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for answer in answers:
        gold = normalize_answer(answer).split()
        common = sum((Counter(pred_tokens) & Counter(gold)).values())
        if not common:
            continue
        precision, recall = common / len(pred_tokens), common / len(gold)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass(frozen=True)
class QAItem:
    question: str
    answers: list[str] = field(default_factory=list)
    document: str | None = None  # file name or document id the answer comes from

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


def first_correct_rank(item: QAItem, hits: Sequence[SearchHit]) -> int | None:
    for hit in hits:
        from_document = item.document is None or item.document in (hit.filename, hit.document_id)
        if from_document and contains_answer(hit.text, item.answers):
            return hit.rank
    return None


@dataclass(frozen=True)
class EvaluationReport:
    collection: str
    mode: str
    reranked: bool
    questions: int
    answerable: int
    unanswerable: int
    recall_at: dict[int, float | None]
    mrr: float | None
    abstention: float | None  # on unanswerable questions (higher is better)
    false_abstention: float | None  # on answerable questions (lower is better)
    retrieval_latency_ms: dict[str, float | None]
    generation: dict[str, Any] | None  # sample, exact_match, f1, abstained, latency

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "mode": self.mode,
            "reranked": self.reranked,
            "questions": self.questions,
            "answerable": self.answerable,
            "unanswerable": self.unanswerable,
            "answer_recall": {f"@{k}": v for k, v in self.recall_at.items()},
            "mrr": self.mrr,
            "abstention": self.abstention,
            "false_abstention": self.false_abstention,
            "retrieval_latency_ms": self.retrieval_latency_ms,
            "generation": self.generation,
        }


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def _ms(values: Sequence[float]) -> dict[str, float | None]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    return {"p50": r(percentile(values, 50)), "p95": r(percentile(values, 95))}


async def evaluate(
    service: RagService,
    collection: str,
    items: Sequence[QAItem],
    *,
    mode: SearchMode | None = None,
    ks: Sequence[int] = (1, 5, 10),
    generate_sample: int = 0,
    latency_sample: int = 100,
    seed: int = 0,
    rerank: bool | None = None,
    generate_unanswerable: int = 0,
    details: list[dict[str, Any]] | None = None,
) -> EvaluationReport:
    """``details``, when given, receives one record per generated answer
    (features of the abstention model included: bench/abstention.py fits on
    them)."""
    if not items:
        raise InvalidRequestError("the QA set is empty")
    if not ks or min(ks) < 1 or max(ks) > 100:
        raise InvalidRequestError("k values must be between 1 and 100")
    depth = max(ks)
    mode = mode or service.search_mode
    service.get_collection(collection)  # 404 before any work
    ranks: list[int | None] = []
    abstained_unanswerable = abstained_answerable = 0
    options = SearchOptions(top_k=depth, mode=mode, rerank=rerank)
    all_hits = await asyncio.to_thread(service.search_batch, collection, [i.question for i in items], options)
    for item, hits in zip(items, all_hits, strict=True):
        abstains = service.answering.abstains(hits)
        if item.answerable:
            ranks.append(first_correct_rank(item, hits))
            abstained_answerable += abstains
        else:
            abstained_unanswerable += abstains
    latencies: list[float] = []
    rng = random.Random(seed)
    for item in rng.sample(list(items), min(latency_sample, len(items))):
        started = time.perf_counter()
        await asyncio.to_thread(service.search, collection, item.question, options)
        latencies.append(time.perf_counter() - started)
    answerable = len(ranks)
    unanswerable = len(items) - answerable
    recall = {k: _share(sum(1 for r in ranks if r is not None and r <= k), answerable) for k in sorted(set(ks))}
    mrr = sum(1 / r for r in ranks if r is not None) / answerable if answerable else None

    generation = None
    if generate_sample > 0 or generate_unanswerable > 0:
        answerable_pool = [i for i in items if i.answerable]
        unanswerable_pool = [i for i in items if not i.answerable]
        sample = rng.sample(answerable_pool, min(generate_sample, len(answerable_pool)))
        sample += rng.sample(unanswerable_pool, min(generate_unanswerable, len(unanswerable_pool)))
        rng.shuffle(sample)  # interleaved: a run stopped early has both kinds
        generation = await _generate(service, collection, sample, mode, rerank, details)
    return EvaluationReport(
        collection=collection,
        mode=mode,
        reranked=service.retriever.use_reranker(rerank),
        questions=len(items),
        answerable=answerable,
        unanswerable=unanswerable,
        recall_at=recall,
        mrr=mrr,
        abstention=_share(abstained_unanswerable, unanswerable),
        false_abstention=_share(abstained_answerable, answerable),
        retrieval_latency_ms=_ms(latencies),
        generation=generation,
    )


async def _generate(
    service: RagService,
    collection: str,
    sample: Sequence[QAItem],
    mode: SearchMode,
    rerank: bool | None,
    details: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    for item in sample:
        started = time.perf_counter()
        answer = await service.ask(collection, item.question, AskOptions(SearchOptions(mode=mode, rerank=rerank)))
        elapsed = time.perf_counter() - started
        grounding = answer.grounding
        quote = grounding.evidence[0].text if grounding and grounding.evidence else ""
        draft = answer.draft if answer.draft is not None else answer.answer
        record: dict[str, Any] = {
            "question": item.question,
            "answers": item.answers,
            "document": item.document,
            "answer": answer.answer,
            "draft": draft,
            "grounded": answer.grounded and answer.answer != NO_ANSWER,
            "reason": answer.reason,
            "supported": bool(grounding and grounding.supported and answer.grounded),
            "quote": quote,
            "probability": grounding.unanswerable_probability if grounding else None,
            "features": grounding.features if grounding else None,
            "latency_s": round(elapsed, 3),
        }
        records.append(record)
        if details is not None:
            details.append(record)
    return summarize_answers(records)


def summarize_answers(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The generation part of a report from per-answer records (as
    ``evaluate(details=...)`` collects them; ``grounded`` false = withheld)."""
    answerable = [r for r in records if r["answers"]]
    n, u = len(answerable), len(records) - len(answerable)

    def mean(values: Sequence[float]) -> float | None:
        return sum(values) / len(values) if values else None

    def quoted(r: dict[str, Any]) -> bool:
        return bool(r["quote"]) and contains_answer(r["quote"], r["answers"])

    answers = [r["answer"] if r["grounded"] else NO_ANSWER for r in answerable]
    return {
        "sample": n,
        "unanswerable_sample": u,
        "exact_match": mean([exact_match(a, r["answers"]) for a, r in zip(answers, answerable, strict=True)]),
        "f1": mean([f1_score(a, r["answers"]) for a, r in zip(answers, answerable, strict=True)]),
        "draft_exact_match": mean([exact_match(r["draft"], r["answers"]) for r in answerable]),
        "draft_f1": mean([f1_score(r["draft"], r["answers"]) for r in answerable]),
        "abstained": _share(sum(not r["grounded"] for r in answerable), n),  # false abstention after generation
        "abstention": _share(sum(not r["grounded"] for r in records if not r["answers"]), u),
        "supported": _share(sum(bool(r["supported"] and r["grounded"]) for r in answerable), n),
        "evidence_contains_answer": _share(sum(quoted(r) for r in answerable), n),
        "latency_ms": _ms([r["latency_s"] for r in records]),
    }


def render_table(report: dict[str, Any]) -> str:
    """A report (``EvaluationReport.as_dict()``, or the same read back from JSON)
    as a plain-text table."""

    def fmt(value: Any) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:.3f}"
        return str(value)

    def ms(latency: dict[str, Any]) -> str:
        p50, p95 = latency.get("p50"), latency.get("p95")
        if p50 is None or p95 is None:
            return "n/a"
        return f"{float(p50):.1f} / {float(p95):.1f} ms"

    rows: list[tuple[str, str]] = [
        ("collection", report["collection"]),
        ("mode", report["mode"] + (" + re-ranking" if report.get("reranked") else "")),
        (
            "questions",
            f"{report['questions']} ({report['answerable']} answerable, {report['unanswerable']} unanswerable)",
        ),
    ]
    rows += [(f"answer-recall{k}", fmt(v)) for k, v in report["answer_recall"].items()]
    rows += [
        ("MRR", fmt(report["mrr"])),
        ("retrieval gate: abstention", fmt(report["abstention"])),
        ("retrieval gate: false abstention", fmt(report["false_abstention"])),
        (
            "retrieval latency p50 / p95",
            ms(report["retrieval_latency_ms"]),
        ),
    ]
    gen = report.get("generation")
    if gen:
        rows += [
            (
                "generated answers (sample)",
                f"{gen['sample']} answerable, {gen.get('unanswerable_sample', 0)} unanswerable",
            ),
            ("  abstention (unanswerable)", fmt(gen.get("abstention"))),
            ("  false abstention (answerable)", fmt(gen["abstained"])),
            ("  exact match", fmt(gen["exact_match"])),
            ("  F1", fmt(gen["f1"])),
            ("  EM / F1 before abstention", f"{fmt(gen.get('draft_exact_match'))} / {fmt(gen.get('draft_f1'))}"),
            ("  supported by a quote", fmt(gen.get("supported"))),
            ("  evidence contains answer", fmt(gen.get("evidence_contains_answer"))),
            ("  ask latency p50 / p95", ms(gen["latency_ms"])),
        ]
    width = max(len(name) for name, _ in rows)
    line = "-" * (width + 2 + max(len(v) for _, v in rows))
    return "\n".join([line, *(f"{name.ljust(width)}  {value}" for name, value in rows), line])

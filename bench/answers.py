"""Answers on squad-dev through the service's own ask path: EM/F1, abstention
after generation, evidence, and one record per question for fitting the
abstention model (bench/abstention.py).

squad-dev is split by document (``FIT_DOCUMENTS`` / the rest: ``heldout``):
the abstention model is fitted on one part and reported on the other. Each run
samples answerable and unanswerable questions of one part (seeded), calls
``rag.evaluation.evaluate`` (what ``rag eval`` runs) with those items, and
writes the report and the per-question records.

    nice -n 10 python -m bench.answers --part fit --answerable 150 --unanswerable 150 --out fit.jsonl
    nice -n 10 python -m bench.answers --part heldout --answerable 500 --unanswerable 200 --out heldout.jsonl

The collection is built in ``--data-dir`` on first use (the 18 documents,
default chunking) with the service's own upload and indexing code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SQUAD_SUBPATH = Path("shared") / "eval" / "squad-dev"
# Documents whose questions the abstention model is fitted on; the others are
# held out. Five documents have unanswerable questions: three here (372), two held
# out (French and Indian War, Prime number: 385).
FIT_DOCUMENTS = frozenset(
    {
        "1973_oil_crisis.pptx",
        "Jacksonville,_Florida.md",
        "Private_school.html",
        "American_Broadcasting_Company.pdf",
        "Apollo_program.docx",
        "Chloroplast.html",
        "Doctor_Who.md",
        "Genghis_Khan.txt",
        "Kenya.pptx",
    }
)


def default_squad(root: Path = ROOT) -> Path | None:
    """squad-dev beside the repository or above it: ``<dir>/shared/eval/squad-dev``
    for the nearest ``<dir>`` among the checkout's parents (a worktree such as
    /work/wt/<name> finds /work/shared like /work/main does); None if none has it."""
    for parent in root.parents:
        candidate = parent / SQUAD_SUBPATH
        if (candidate / "qa.jsonl").is_file():
            return candidate
    return None


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def part_items(qa: Path, part: str) -> list[Any]:
    from rag.evaluation import QAItem

    items = []
    for line in qa.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if (row["document"] in FIT_DOCUMENTS) == (part == "fit"):
            items.append(QAItem(question=row["question"], answers=list(row["answers"]), document=row["document"]))
    return items


def ensure_collection(runtime: Any, documents: Path) -> None:
    from rag.errors import NotFoundError
    from rag.intake import Upload

    service = runtime.service
    try:
        service.get_collection("squad")
        return
    except NotFoundError:
        pass
    service.create_collection("squad")
    for path in sorted(documents.iterdir()):
        with path.open("rb") as fh:
            (result,) = service.add_documents("squad", [Upload(path.name, None, fh)])
        outcome = runtime.indexer.index_document(result.document.id)
        log(f"  {path.name}: {outcome.status}, {outcome.chunks} chunks")


class RecordSink(list[dict[str, Any]]):
    """The per-question records, each also written to the file as it comes:
    a run stopped early still leaves what it measured."""

    def __init__(self, path: Path, mode: str) -> None:
        super().__init__()
        self._fh = path.open("w", encoding="utf-8")
        self._mode = mode

    def append(self, record: dict[str, Any]) -> None:
        record = {**record, "mode": self._mode}
        super().append(record)
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        if len(self) % 10 == 0:
            log(f"  {len(self)} answers")

    def close(self) -> None:
        self._fh.close()


def run_mode(path: Path, records: list[dict[str, Any]]) -> str | None:
    """The search mode a record file was made with: its records' ``mode``, else
    the run's ``.report.json`` beside it; None where neither says."""
    modes = {r["mode"] for r in records if r.get("mode")}
    if len(modes) == 1:
        return modes.pop()
    report = path.with_suffix(".report.json")
    if not modes and report.is_file():
        mode = json.loads(report.read_text()).get("mode")
        return str(mode) if mode else None
    return None


def merge(paths: list[Path]) -> None:
    """The generation rows of ``rag eval``'s table over the records of several
    runs (chunks of one run)."""
    from rag.evaluation import render_table, summarize_answers

    records, modes = [], set()
    for path in paths:
        chunk = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        records += chunk
        modes.add(run_mode(path, chunk) or "unknown (the records do not say)")
    generation = summarize_answers(records)
    report = {"collection": "squad", "mode": " + ".join(sorted(modes)), "questions": len(records),
              "answerable": generation["sample"], "unanswerable": generation["unanswerable_sample"],
              "answer_recall": {}, "mrr": None, "abstention": None, "false_abstention": None,
              "retrieval_latency_ms": {}, "generation": generation}
    print(render_table(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/answers/data"))
    parser.add_argument("--squad", type=Path, default=None,
                        help="squad-dev (documents/, qa.jsonl) [default: shared/eval/squad-dev above the checkout]")
    parser.add_argument("--part", choices=("fit", "heldout"))
    parser.add_argument("--answerable", type=int, default=100)
    parser.add_argument("--unanswerable", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--abstain-threshold", type=float, default=None)
    parser.add_argument("--offset", type=int, default=0, help="skip this many answerable questions of the order")
    parser.add_argument("--unanswerable-offset", type=int, default=0)
    parser.add_argument("--no-extractive", action="store_true", help="free decoding (RAG_ANSWER_EXTRACTIVE=false)")
    parser.add_argument("--out", type=Path, help="per-question records (JSON lines)")
    parser.add_argument("--merge", type=Path, nargs="+", help="only summarise these record files, as rag eval does")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge)
        return
    if args.out is None or args.part is None:
        parser.error("--out and --part are required")
    squad = args.squad or default_squad()
    if squad is None:
        parser.error(f"squad-dev not found in shared/eval/ above {ROOT}: pass --squad DIR")
    if not (squad / "qa.jsonl").is_file() or not (squad / "documents").is_dir():
        parser.error(f"--squad {squad}: expected qa.jsonl and documents/ there")

    from rag.evaluation import evaluate, render_table
    from rag.settings import Settings
    from runtime import build_runtime

    fields: dict[str, Any] = {
        "data_dir": args.data_dir,
        "llm_n_ctx": args.n_ctx,
        "max_tokens": args.max_tokens,
        "llm_threads": args.threads,
        "llm_parallel": 1,
        "embedding_threads": 1,
        "embedded_worker": False,
        "abstain_threshold": args.abstain_threshold,
        "answer_extractive": not args.no_extractive,
    }
    if args.top_k:
        fields["top_k"] = args.top_k
    settings = Settings(_env_file=None, **fields)  # type: ignore[call-arg]
    runtime = build_runtime(settings, "api")
    try:
        ensure_collection(runtime, squad / "documents")
        items = part_items(squad / "qa.jsonl", args.part)
        # One seeded order of each kind: --offset / --unanswerable-offset take
        # consecutive slices of it, so a long run goes in chunks (--merge).
        rng = random.Random(args.seed)
        answerable = [i for i in items if i.answerable]
        unanswerable = [i for i in items if not i.answerable]
        rng.shuffle(answerable)
        rng.shuffle(unanswerable)
        chosen = answerable[args.offset : args.offset + args.answerable]
        chosen += unanswerable[args.unanswerable_offset : args.unanswerable_offset + args.unanswerable]
        log(f"{args.part}: {len(items)} questions, generating for {len(chosen)}")
        details = RecordSink(args.out, settings.search_mode)
        started = time.perf_counter()
        report = asyncio.run(
            evaluate(
                runtime.service,
                "squad",
                chosen,
                generate_sample=sum(i.answerable for i in chosen),
                generate_unanswerable=sum(not i.answerable for i in chosen),
                latency_sample=0,
                seed=args.seed,
                details=details,
            )
        )
        elapsed = time.perf_counter() - started
        details.close()
    finally:
        runtime.close()
    data = report.as_dict()
    data["elapsed_s"] = round(elapsed, 1)
    data["settings"] = {k: str(v) for k, v in fields.items()}
    args.out.with_suffix(".report.json").write_text(json.dumps(data, indent=2))
    print(render_table(data))
    print(f"{elapsed:.0f}s")


if __name__ == "__main__":
    main()

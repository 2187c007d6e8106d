"""Abstention features without generating: the question against the passages
``ask`` would answer from, for every question of squad-dev.

The features of ``rag.grounding.passage_features`` (and the best sentence's
share of the question) do not depend on the answer, so they can be computed
for all 5,954 questions from retrieval alone (seconds, no model run): large
samples for fitting and judging the abstention model, where a generated answer
costs ~3 s. The retrieval is the service's own (``search_batch``, the same
ranking as ``ask``'s search), ``--top-k`` passages as ``ask`` uses them.

    python -m bench.abstention_signals --out signals.jsonl [--records heldout.jsonl ...]

``--records``: generated-answer records of bench/answers.py; each is written
again (``<name>.s7.jsonl``) with all of today's features recomputed from its
question, draft answer and the same passages, and the stored log-probability
features kept (the per-token values are not stored). The stored features the
recomputation also yields are compared: a difference means other passages.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from bench.answers import FIT_DOCUMENTS, default_squad, ensure_collection

LOGPROB_FEATURES = ("mean_logprob", "min_logprob", "first_logprob")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def squad_runtime(data_dir: Path, squad: Path) -> Any:
    """The service without a model (retrieval only) over squad-dev's collection
    in ``data_dir``, built there on first use; the caller closes it."""
    from rag.settings import Settings
    from runtime import build_runtime

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=data_dir, llm_load=False, embedding_threads=1, embedded_worker=False
    )
    runtime = build_runtime(settings, "api")
    try:
        ensure_collection(runtime, squad / "documents")
    except BaseException:
        runtime.close()
        raise
    return runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/answers/data"))
    parser.add_argument("--squad", type=Path, default=None)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--records", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    squad = args.squad or default_squad()
    if squad is None:
        parser.error("squad-dev not found above the checkout: pass --squad DIR")

    from rag.grounding import find_evidence, grounding_features, passage_features
    from rag.options import SearchOptions

    runtime = squad_runtime(args.data_dir, squad)
    try:
        service = runtime.service
        options = SearchOptions(top_k=args.top_k)
        rows = [json.loads(line) for line in (squad / "qa.jsonl").read_text().splitlines() if line.strip()]
        started = time.perf_counter()
        hits = service.search_batch("squad", [r["question"] for r in rows], options)
        log(f"{len(rows)} questions retrieved in {time.perf_counter() - started:.1f}s (mode {service.search_mode})")
        passages_of: dict[str, list[tuple[int, str]]] = {}
        lines = []
        for row, found in zip(rows, hits, strict=True):
            passages = [(h.rank, h.text) for h in found]
            passages_of[row["question"]] = passages
            features = passage_features(row["question"], passages)
            lines.append(json.dumps({
                "question": row["question"],
                "answers": row["answers"],
                "document": row["document"],
                "part": "fit" if row["document"] in FIT_DOCUMENTS else "heldout",
                "mode": service.search_mode,
                "sources": [h.filename for h in found],
                "features": {k: round(v, 6) for k, v in features.items()},
            }) + "\n")
        data = "".join(lines).encode()
        args.out.write_bytes(gzip.compress(data, mtime=0) if args.out.suffix == ".gz" else data)
        log(f"features of {len(rows)} questions: {args.out}")
        for path in args.records:
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            differ = 0
            out = path.with_name(path.stem + ".s7.jsonl")
            with out.open("w", encoding="utf-8") as fh:
                for record in records:
                    stored = record.get("features")
                    passages = passages_of.get(record["question"])
                    if passages is None:
                        passages = [(h.rank, h.text) for h in service.search("squad", record["question"], options)]
                    if stored:
                        evidence, _ = find_evidence(record["draft"], passages)
                        fresh = grounding_features(record["question"], record["draft"], passages, evidence)
                        same = all(
                            math.isclose(fresh[k], v, abs_tol=1e-9) for k, v in stored.items() if k in fresh
                        )
                        differ += not same
                        fresh.update({k: stored[k] for k in LOGPROB_FEATURES if k in stored})
                        record["features"] = fresh
                        record["same_passages"] = same
                    fh.write(json.dumps(record) + "\n")
            log(f"{path}: {len(records)} records -> {out}; stored features differ for {differ}")
    finally:
        runtime.close()


if __name__ == "__main__":
    main()

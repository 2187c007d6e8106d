"""A verification pass as an abstention signal, measured offline on the
records of bench/answers.py: the bundled model reads the quoted evidence, the
question and the answer, and the log-odds of " yes" against " no" after
"Does the context answer the question?" is the signal (two one-token
generations restricted to one token each, the second reusing the first's KV
cache; rag/generation/extractive.py).

    python -m bench.verify --records heldout.jsonl [--records fit.jsonl ...] [--offset N --limit M]

``--offset`` / ``--limit`` take a slice of each file's generated records (a
long pass goes in chunks: ``cat`` the outputs, each named by its slice).

Prints each file's AUC of the signal (unanswerable vs answerable) and the
abstention it reaches at <= 10% false abstention, and writes the records with
``features["verify"]`` beside them (``.verified.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.abstention import auc, best_at
from rag.generation import GenerationParams, resolve_model_path
from rag.generation.llama import LlamaModel
from rag.generation.types import CopySource
from rag.settings import Settings

# Two invented worked examples, one of each kind (a base model copies the form).
EXAMPLES = (
    "Context: The Harbor Bridge opened in 1932 after eight years of construction.\n"
    "Question: When did the Harbor Bridge open?\nAnswer: 1932\n"
    "Does the context answer the question? yes\n\n"
    "Context: The Harbor Bridge opened in 1932 after eight years of construction.\n"
    "Question: When did the Harbor Bridge close?\nAnswer: 1932\n"
    "Does the context answer the question? no\n\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=Path, nargs="+", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/answers/data"))
    parser.add_argument("--offset", type=int, default=0, help="skip this many generated records of each file")
    parser.add_argument("--limit", type=int, default=0, help="at most this many records of each file (0: all)")
    args = parser.parse_args()

    model_path = resolve_model_path(Settings(_env_file=None, data_dir=args.data_dir))  # type: ignore[call-arg]
    model = LlamaModel(model_path, n_ctx=1024, threads=args.threads, parallel=1)
    yes, no = (model.tokenize(w)[1:] for w in (" yes", " no"))
    assert len(yes) == len(no) == 1
    started = time.perf_counter()
    try:
        for path in args.records:
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            records = [r for r in records if r.get("features")][args.offset :]
            if args.limit:
                records = records[: args.limit]
            scored = []
            for record in records:
                quote = " ".join(record["quote"].split())
                text = (f"{EXAMPLES}Context: {quote}\nQuestion: {record['question'].strip()}\n"
                        f"Answer: {' '.join(record['draft'].split())}\nDoes the context answer the question?")
                tokens = model.tokenize(text)[-900:]
                lps = []
                for word in (yes, no):
                    params = GenerationParams(max_tokens=1, logprobs=True, extractive=CopySource(runs=(tuple(word),)))
                    lps.append(model.generate(tokens, params).token_logprobs[0])
                record["features"]["verify"] = lps[0] - lps[1] if quote else -10.0
                scored.append(record)
                if len(scored) % 20 == 0:
                    print(f"  {len(scored)} records, {time.perf_counter() - started:.0f}s", flush=True)
            part = f"-{args.offset}-{args.offset + len(scored)}" if args.offset or args.limit else ""
            out = path.with_name(f"{path.stem}.verified{part}.jsonl")
            out.write_text("".join(json.dumps(r) + "\n" for r in scored))
            score = np.array([r["features"]["verify"] for r in scored])
            label = np.array([0.0 if r["answers"] else 1.0 for r in scored])
            # Low yes-odds = unanswerable.
            ab, _ = best_at(-score, label)
            print(f"{path}: {len(scored)} records ({int(label.sum())} unanswerable), verify AUC "
                  f"{auc(-score, label):.3f}, abstention at <=10% false abstention {ab:.3f}, "
                  f"{time.perf_counter() - started:.0f}s", flush=True)
    finally:
        model.close()


if __name__ == "__main__":
    main()

"""A trained answerability judge (issue 14, session 8): the bundled embedder,
all-MiniLM-L6-v2, fine-tuned as a cross-encoder ([CLS] question [SEP] the best
sentences of a passage -> "this passage answers the question" logit) on the
fit part of squad-dev only, judged on every held-out question.

    python -m bench.train_abstainer passages --out answers-s8-passages.jsonl.gz
    python -m bench.train_abstainer train --passages answers-s8-passages.jsonl.gz --out scores.jsonl [--fold 0|1]
    python -m bench.train_abstainer eval --scores scores.jsonl [fold0.jsonl fold1.jsonl] \
        --signals answers-s7-signals.jsonl.gz

``passages``: the three passages ``ask`` answers from, for all 5,954 questions
(the service's own ``search_batch``, as bench/abstention_signals.py), stored
once with each distinct chunk's text once.

``train``: pairs from the fit part (bench/answers.py's ``FIT_DOCUMENTS``):
an answerable question against each of its passages, labelled 1 where the
passage's window (its sentence sharing most of the question's content words,
and its neighbours) holds a gold answer, 0 where the passage holds none (hard
on-topic negatives: retrieved for the question, not answering it); a passage
holding the answer outside the window is left out. Unanswerable questions
against all their passages: 0. A question's score is the most answerable of
its three windows; it is written for every held-out question (or, with
``--fold k``, trained on the other fold of fit documents and written for the
fit questions of fold ``k``: out-of-fold scores for fitting a combination).
``--mixed-only``: only the fit documents that have unanswerable questions
train (both kinds asked of the same paragraphs, so the topic says nothing).
``--lora-rank r``: only low-rank deltas of the attention and feed-forward
projections and the head are trained (a small artifact); 0: all weights.

``eval``: AUC, abstention at <= 10% false abstention and the trade-off curve
on all held-out questions, paired against the shipped model
(rag/abstention_model.py) on the same questions with bench/abstention.py's
functions; then the score as one more feature of the logistic model (fitted
on the fit part with out-of-fold scores).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from bench.abstention import auc, best_at, cross_validated_auc, fit, paired_auc_interval, read_lines, scores
from bench.abstention_signals import squad_runtime
from bench.answers import FIT_DOCUMENTS, default_squad

# Two folds of the fit documents for out-of-fold scores; the three with
# unanswerable questions are spread over both (149 + 127 and 96 of them).
FOLDS = (
    frozenset({"1973_oil_crisis.pptx", "Private_school.html", "Apollo_program.docx", "Doctor_Who.md", "Kenya.pptx"}),
    frozenset({"Jacksonville,_Florida.md", "American_Broadcasting_Company.pdf", "Chloroplast.html",
               "Genghis_Khan.txt"}),
)
WINDOW_CHARS = 600
DEPTH = 3


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_lines(path: Path, lines: list[str]) -> None:
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


# --- passages ---------------------------------------------------------------------------------------------


def dump_passages(args: argparse.Namespace) -> None:
    squad = args.squad or default_squad()
    if squad is None:
        raise SystemExit("squad-dev not found above the checkout: pass --squad DIR")
    from rag.options import SearchOptions

    runtime = squad_runtime(args.data_dir, squad)
    try:
        service = runtime.service
        rows = [json.loads(line) for line in (squad / "qa.jsonl").read_text().splitlines() if line.strip()]
        started = time.perf_counter()
        hits = service.search_batch("squad", [r["question"] for r in rows], SearchOptions(top_k=args.top_k))
        log(f"{len(rows)} questions retrieved in {time.perf_counter() - started:.1f}s (mode {service.search_mode})")
        chunks: dict[str, int] = {}
        lines = []
        for i, (row, found) in enumerate(zip(rows, hits, strict=True)):
            ids = [chunks.setdefault(h.text, len(chunks)) for h in sorted(found, key=lambda h: h.rank)]
            lines.append(json.dumps({
                "i": i, "question": row["question"], "answers": row["answers"], "document": row["document"],
                "part": "fit" if row["document"] in FIT_DOCUMENTS else "heldout", "passages": ids,
            }))
        write_lines(args.out, [json.dumps({"chunks": list(chunks)}), *lines])
        log(f"{len(rows)} questions, {len(chunks)} distinct passages: {args.out}")
    finally:
        runtime.close()


def load_passages(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    lines = read_lines(path)
    chunks: list[str] = json.loads(lines[0])["chunks"]
    return chunks, [json.loads(line) for line in lines[1:]]


def window(question: str, text: str) -> str:
    """The passage's sentence holding the largest share of the question's
    content words (as rag.grounding ranks them), with its neighbours while the
    window stays under ``WINDOW_CHARS``."""
    from rag.grounding import content_words, split_sentences

    spans = split_sentences(text)
    if not spans:
        return text
    q_words = set(content_words(question))
    shares = [len(q_words & set(content_words(text[a:b]))) for a, b in spans]
    best = max(range(len(spans)), key=lambda j: (shares[j], -j))
    lo = hi = best
    for step in (1, -1, 2, -2):
        j = best + step
        if 0 <= j < len(spans):
            a, b = spans[min(lo, j)][0], spans[max(hi, j)][1]
            if b - a <= WINDOW_CHARS:
                lo, hi = min(lo, j), max(hi, j)
    return text[spans[lo][0]:spans[hi][1]][: WINDOW_CHARS * 2]


def holds(answers: list[str], text: str) -> bool:
    low = text.lower()
    return any(a.strip() and a.strip().lower() in low for a in answers)


# --- the model ----------------------------------------------------------------------------------------------


def build_judge(lora_rank: int, alpha: float) -> tuple[Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from torch import nn
    from transformers import AutoModel, AutoTokenizer

    from rag.embedder import resolve_embedding_model
    from rag.settings import BUNDLED_EMBEDDING_MODEL

    path = resolve_embedding_model(BUNDLED_EMBEDDING_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    encoder = AutoModel.from_pretrained(str(path), local_files_only=True)

    class LoRALinear(nn.Module):
        def __init__(self, base: nn.Linear) -> None:
            super().__init__()
            self.base = base
            self.lora_a = nn.Parameter(torch.randn(lora_rank, base.in_features) / math.sqrt(base.in_features))
            self.lora_b = nn.Parameter(torch.zeros(base.out_features, lora_rank))
            self.scale = alpha / lora_rank

        def forward(self, x: Any) -> Any:
            return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

    if lora_rank:
        for p in encoder.parameters():
            p.requires_grad = False
        for layer in encoder.encoder.layer:
            att = layer.attention
            att.self.query = LoRALinear(att.self.query)
            att.self.key = LoRALinear(att.self.key)
            att.self.value = LoRALinear(att.self.value)
            att.output.dense = LoRALinear(att.output.dense)
            layer.intermediate.dense = LoRALinear(layer.intermediate.dense)
            layer.output.dense = LoRALinear(layer.output.dense)

    class Judge(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = nn.Linear(encoder.config.hidden_size, 1)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.head(pooled).squeeze(-1)

    return Judge(), tokenizer


def batches(pairs: list[tuple[str, str, float]], size: int, rng: random.Random) -> list[list[tuple[str, str, float]]]:
    """Shuffled batches of pairs of similar length (less padding)."""
    order = pairs[:]
    rng.shuffle(order)
    out = []
    for k in range(0, len(order), size * 20):
        block = sorted(order[k:k + size * 20], key=lambda p: len(p[0]) + len(p[1]))
        out.extend(block[j:j + size] for j in range(0, len(block), size))
    rng.shuffle(out)
    return out


def train(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    chunks, rows = load_passages(args.passages)
    if args.fold is None:
        train_rows = [r for r in rows if r["part"] == "fit"]
        score_rows = [r for r in rows if r["part"] == "heldout"]
    else:
        train_rows = [r for r in rows if r["part"] == "fit" and r["document"] not in FOLDS[args.fold]]
        score_rows = [r for r in rows if r["part"] == "fit" and r["document"] in FOLDS[args.fold]]
    if args.mixed_only:
        mixed = {r["document"] for r in train_rows if not r["answers"]}
        train_rows = [r for r in train_rows if r["document"] in mixed]
    pairs: list[tuple[str, str, float]] = []
    skipped = 0
    for r in train_rows:
        for cid in r["passages"][:DEPTH]:
            text = chunks[cid]
            win = window(r["question"], text) if args.context == "window" else text
            if not r["answers"]:
                pairs.append((r["question"], win, 0.0))
            elif holds(r["answers"], win):
                pairs.append((r["question"], win, 1.0))
            elif holds(r["answers"], text):
                skipped += 1
            else:
                pairs.append((r["question"], win, 0.0))
    if args.limit:
        rng.shuffle(pairs)
        pairs = pairs[: args.limit]
    positives = sum(p[2] for p in pairs)
    unanswerable = sum(1 for r in train_rows if not r["answers"])
    log(f"train: {len(train_rows)} questions ({unanswerable} unanswerable) -> {len(pairs)} pairs, "
        f"{positives:.0f} answering, {len(pairs) - positives:.0f} not; {skipped} left out (answer outside window)")

    judge, tokenizer = build_judge(args.lora_rank, args.lora_alpha)
    trainable = [p for p in judge.parameters() if p.requires_grad]
    log(f"trainable parameters: {sum(p.numel() for p in trainable):,}")
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.01)
    plan = [batches(pairs, args.batch, rng) for _ in range(args.epochs)]
    total = sum(len(b) for b in plan)
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    pos_weight = torch.tensor((len(pairs) - positives) / max(positives, 1.0))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    def encode(batch: list[tuple[str, str]]) -> Any:
        return tokenizer([q for q, _ in batch], [p for _, p in batch], truncation="only_second",
                         max_length=args.max_len, padding=True, return_tensors="pt")

    started = time.perf_counter()
    step = 0
    judge.train()
    for epoch, epoch_batches in enumerate(plan):
        running = 0.0
        for batch in epoch_batches:
            enc = encode([(q, p) for q, p, _ in batch])
            labels = torch.tensor([y for _, _, y in batch])
            loss = loss_fn(judge(**enc), labels)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            running += float(loss.detach())
            if step % 50 == 0:
                log(f"epoch {epoch + 1} step {step}/{total} loss {running / 50:.4f} "
                    f"({time.perf_counter() - started:.0f}s)")
                running = 0.0
    log(f"trained in {time.perf_counter() - started:.0f}s")

    judge.eval()
    started = time.perf_counter()
    items = [(r, window(r["question"], chunks[c]) if args.context == "window" else chunks[c])
             for r in score_rows for c in r["passages"][:DEPTH]]
    logits: list[float] = []
    with torch.inference_mode():
        order = sorted(range(len(items)), key=lambda k: len(items[k][1]))
        out = [0.0] * len(items)
        for k in range(0, len(order), 64):
            idx = order[k:k + 64]
            enc = encode([(items[j][0]["question"], items[j][1]) for j in idx])
            for j, v in zip(idx, judge(**enc).tolist(), strict=True):
                out[j] = float(v)
        logits = out
    log(f"scored {len(items)} pairs of {len(score_rows)} questions in {time.perf_counter() - started:.0f}s")
    lines, k = [], 0
    for r in score_rows:
        n = len(r["passages"][:DEPTH])
        per = logits[k:k + n]
        k += n
        lines.append(json.dumps({"i": r["i"], "part": r["part"], "document": r["document"],
                                 "unanswerable": not r["answers"], "logits": [round(v, 5) for v in per],
                                 "score": round(max(per), 5) if per else 0.0}))
    write_lines(args.out, lines)
    log(f"{len(lines)} question scores: {args.out}")
    if args.save:
        state = {n: p.detach().clone() for n, p in judge.named_parameters() if p.requires_grad}
        torch.save({"state": state, "lora_rank": args.lora_rank, "lora_alpha": args.lora_alpha,
                    "max_len": args.max_len, "context": args.context}, args.save)
        log(f"trained weights ({sum(v.numel() for v in state.values()):,} values): {args.save} "
            f"({args.save.stat().st_size / 1e6:.1f} MB)")


# --- eval ---------------------------------------------------------------------------------------------------


def evaluate(args: argparse.Namespace) -> None:
    import numpy as np

    from rag.grounding import ABSTENTION_MODEL

    signals = [json.loads(line) for line in read_lines(args.signals)]
    names = tuple(ABSTENTION_MODEL["weights"])
    judged: dict[int, float] = {}
    for path in args.scores:
        for line in read_lines(path):
            rec = json.loads(line)
            judged[rec["i"]] = -float(rec["score"])  # high = unanswerable, as the abstention model's p
    held = [i for i, s in enumerate(signals) if s["part"] == "heldout" and i in judged]
    fit_rows = [i for i, s in enumerate(signals) if s["part"] == "fit" and i in judged]

    def matrix(idx: list[int]) -> tuple[Any, Any, Any]:
        x = np.array([[float(signals[i]["features"][n]) for n in names] for i in idx]).reshape(len(idx), len(names))
        y = np.array([0.0 if signals[i]["answers"] else 1.0 for i in idx])
        ce = np.array([judged[i] for i in idx])
        return x, y, ce

    model = {k: ABSTENTION_MODEL[k] for k in ("weights", "mean", "scale", "intercept")}
    x_h, y_h, ce_h = matrix(held)
    shipped = scores(model, x_h, names)
    print(f"held out: {int(y_h.sum())} unanswerable + {int((1 - y_h).sum())} answerable "
          f"(of {sum(1 for s in signals if s['part'] == 'heldout')} held-out questions)")

    def report(label: str, s: Any) -> None:
        low, high = paired_auc_interval(s, shipped, y_h)
        print(f"| {label} | {auc(s, y_h):.3f} | {best_at(s, y_h, args.limit)[0]:.3f} | "
              f"{auc(s, y_h) - auc(shipped, y_h):+.3f} ({low:+.3f} to {high:+.3f}) |")

    docs = sorted({signals[i]["document"] for i in held if not signals[i]["answers"]})
    within = np.array([signals[i]["document"] in docs for i in held])
    print("\n| judge | AUC held out | abstention at <=10% false | vs shipped (95% paired bootstrap) |")
    print("|---|---|---|---|")
    print(f"| shipped model (rag/abstention_model.py) | {auc(shipped, y_h):.3f} | "
          f"{best_at(shipped, y_h, args.limit)[0]:.3f} | |")
    report("cross-encoder (max over 3 windows)", ce_h)
    combo = None
    if fit_rows:
        x_f, y_f, ce_f = matrix(fit_rows)
        both = (*names, "cross_encoder")
        xf2, xh2 = np.hstack([x_f, ce_f[:, None]]), np.hstack([x_h, ce_h[:, None]])
        cv = cross_validated_auc(xf2, y_f, args.l2, both)
        combo_model = fit(xf2, y_f, args.l2, names=both)
        combo = scores(combo_model, xh2, both)
        report(f"logistic: the 9 features + cross-encoder (fit part out of fold, CV {cv:.3f})", combo)
        print(f"\ncombination weights: {json.dumps(combo_model['weights'])}")
        print(f"cross-encoder AUC on the fit part out of fold: {auc(ce_f, y_f):.3f}; "
              f"shipped model there {auc(scores(model, x_f, names), y_f):.3f}")
    print(f"\nwithin the held-out documents with unanswerable questions ({', '.join(docs)}; "
          f"{int(y_h[within].sum())} + {int((1 - y_h[within]).sum())}): "
          f"shipped {auc(shipped[within], y_h[within]):.3f}, "
          f"cross-encoder {auc(ce_h[within], y_h[within]):.3f}"
          + (f", combination {auc(combo[within], y_h[within]):.3f}" if combo is not None else ""))
    print("\ntrade-off on the held-out part: false abstention -> abstention (each judge's own thresholds)")
    print("| false abstention <= | shipped | cross-encoder |" + (" combination |" if combo is not None else "")
          + "\n|---|---|---|" + ("---|" if combo is not None else ""))
    for limit in (0.01, 0.02, 0.05, 0.10, 0.15, 0.20, 0.30, 0.40, 0.50, 0.60, 0.80):
        cells = [best_at(s, y_h, limit)[0] for s in (shipped, ce_h, *(() if combo is None else (combo,)))]
        print(f"| {limit:.2f} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("passages")
    p.add_argument("--data-dir", type=Path, default=Path("/tmp/answers/data"))
    p.add_argument("--squad", type=Path, default=None)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train")
    t.add_argument("--passages", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True, help="per-question scores (JSON lines)")
    t.add_argument("--fold", type=int, choices=(0, 1), default=None)
    t.add_argument("--context", choices=("window", "passage"), default="window")
    t.add_argument("--max-len", type=int, default=160)
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=5e-5)
    t.add_argument("--lora-rank", type=int, default=0)
    t.add_argument("--lora-alpha", type=float, default=16.0)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--mixed-only", action="store_true",
                   help="train on the documents with unanswerable questions only (no topic to tell the kinds apart)")
    t.add_argument("--limit", type=int, default=0, help="train on this many pairs only (a quick check)")
    t.add_argument("--save", type=Path, default=None, help="write the trained weights here")
    e = sub.add_parser("eval")
    e.add_argument("--scores", type=Path, nargs="+", required=True)
    e.add_argument("--signals", type=Path, required=True)
    e.add_argument("--l2", type=float, default=1.0)
    e.add_argument("--limit", type=float, default=0.10)
    args = parser.parse_args()
    {"passages": dump_passages, "train": train, "eval": evaluate}[args.command](args)


if __name__ == "__main__":
    main()

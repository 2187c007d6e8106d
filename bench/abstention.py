"""Fits the abstention model on one part of squad-dev and reports it on the
other: per-question records come from bench/answers.py (features of each
generated answer, answerable or not).

    python -m bench.abstention --fit fit.jsonl --heldout heldout.jsonl [--features a,b,...] [--write]

Records with a ``part`` field (bench/abstention_signals.py's, one file for all
of squad-dev) are read from the fit or held-out part only, as named. Only the
``--features`` named enter the model (default: all of rag.grounding.FEATURES;
records lacking one are skipped).

Prints, on the held-out records: each candidate signal on its own (ROC AUC,
and the abstention it reaches at no more than 10% false abstention), the fitted
combination's whole trade-off curve (threshold -> abstention on unanswerable,
false abstention on answerable), and the chosen operating point: the lowest
false abstention among thresholds reaching the abstention target, else the
most abstention within the false-abstention limit. ``--write`` stores the
model in rag/abstention_model.py, which rag.grounding loads.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from rag.grounding import FEATURES

MODEL_FILE = Path(__file__).resolve().parents[1] / "rag" / "abstention_model.py"


def read_lines(path: Path) -> list[str]:
    """The lines of a JSON-lines file, gzip-compressed when named ``*.gz``."""
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    return [line for line in text.splitlines() if line.strip()]


def load(path: Path, names: tuple[str, ...] = FEATURES, part: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    rows, labels = [], []
    for line in read_lines(path):
        record = json.loads(line)
        if not record.get("features"):
            continue  # abstained before generation (retrieval gate)
        if part is not None and record.get("part", part) != part:
            continue
        if any(name not in record["features"] for name in names):
            continue
        rows.append([float(record["features"][name]) for name in names])
        labels.append(0.0 if record["answers"] else 1.0)  # 1: unanswerable
    return np.array(rows).reshape(len(rows), len(names)), np.array(labels)


def fit(
    x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 50, names: tuple[str, ...] = FEATURES
) -> dict[str, Any]:
    """L2-regularised logistic regression on standardised features (Newton)."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
    # Balance the classes: the operating point is chosen on rates, not counts.
    w_pos = 0.5 / max(y.mean(), 1e-9)
    w_neg = 0.5 / max(1 - y.mean(), 1e-9)
    sample_w = np.where(y == 1, w_pos, w_neg)
    beta = np.zeros(z.shape[1])
    reg = np.eye(z.shape[1]) * l2
    reg[0, 0] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-z @ beta))
        grad = z.T @ (sample_w * (p - y)) + reg @ beta
        hess = (z * (sample_w * p * (1 - p))[:, None]).T @ z + reg
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return {
        "weights": {n: round(float(b), 6) for n, b in zip(names, beta[1:], strict=True)},
        "mean": {n: round(float(m), 6) for n, m in zip(names, mean, strict=True)},
        "scale": {n: round(float(s), 6) for n, s in zip(names, scale, strict=True)},
        "intercept": round(float(beta[0]), 6),
    }


def scores(model: dict[str, Any], x: np.ndarray, names: tuple[str, ...] = FEATURES) -> np.ndarray:
    w = np.array([model["weights"][n] for n in names])
    m = np.array([model["mean"][n] for n in names])
    s = np.array([model["scale"][n] for n in names])
    return np.asarray(1 / (1 + np.exp(-(model["intercept"] + ((x - m) / s) @ w))))


def auc(score: np.ndarray, y: np.ndarray) -> float:
    pos, neg = score[y == 1], score[y == 0]
    if not len(pos) or not len(neg):
        return math.nan
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def rates(score: np.ndarray, y: np.ndarray, refused: np.ndarray, t: float) -> tuple[float, float]:
    abstain = (score >= t) | refused
    return float(abstain[y == 1].mean()), float(abstain[y == 0].mean())


def best_at(score: np.ndarray, y: np.ndarray, limit: float = 0.10) -> tuple[float, float]:
    """The most abstention (and its threshold) with false abstention <= limit."""
    best = (0.0, math.inf)
    for t in np.unique(score):
        ab = float((score[y == 1] >= t).mean())
        fa = float((score[y == 0] >= t).mean())
        if fa <= limit and ab > best[0]:
            best = (ab, float(t))
    return best


def generation_table(path: Path, model: dict[str, Any]) -> str:
    """The records' answers re-decided by ``model`` (the service's own judge:
    abstain when refused or p >= threshold), summarised by rag.evaluation."""
    from rag.evaluation import render_table, summarize_answers
    from rag.grounding import GroundingJudge

    judge = GroundingJudge(model=model)
    records = []
    for line in read_lines(path):
        record = json.loads(line)
        features = record.get("features")
        if features:
            withheld = bool(features.get("refusal")) or judge.probability(features) >= judge.threshold
            record["grounded"] = not withheld
        records.append(record)
    gen = summarize_answers(records)
    table = render_table({
        "collection": "squad", "mode": "hybrid", "questions": len(records),
        "answerable": gen["sample"], "unanswerable": gen["unanswerable_sample"], "answer_recall": {},
        "mrr": None, "abstention": None, "false_abstention": None, "retrieval_latency_ms": {}, "generation": gen,
    })
    return table


def model_scores(path: Path, model: dict[str, Any], names: tuple[str, ...]) -> np.ndarray:
    """Another abstention model's probabilities for the held-out records
    ``load`` keeps with ``names`` (computed from their stored features)."""
    from rag.grounding import GroundingJudge

    judge = GroundingJudge(model=model)
    out = []
    for line in read_lines(path):
        record = json.loads(line)
        features = record.get("features")
        if not features or any(name not in features for name in names):
            continue
        if record.get("part", "heldout") != "heldout":
            continue
        out.append(judge.probability(features))
    return np.array(out)


def paired_auc_interval(a: np.ndarray, b: np.ndarray, y: np.ndarray, rounds: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of AUC(a) - AUC(b) on the same records."""
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(rounds):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            diffs.append(auc(a[i], y[i]) - auc(b[i], y[i]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def cross_validated_auc(x: np.ndarray, y: np.ndarray, l2: float, names: tuple[str, ...], folds: int = 5) -> float:
    """Mean held-out AUC over ``folds`` seeded folds of the fit part (for choosing ``--l2``)."""
    order = np.random.default_rng(0).permutation(len(y))
    out = []
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        model = fit(x[train], y[train], l2, names=names)
        out.append(auc(scores(model, x[test], names), y[test]))
    return float(np.mean(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit", type=Path, required=True)
    parser.add_argument("--heldout", type=Path, required=True)
    parser.add_argument("--features", default=",".join(FEATURES), help="comma-separated names (rag.grounding.FEATURES)")
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--cv", action="store_true", help="5-fold cross-validated AUC on the fit part for some l2")
    parser.add_argument("--target", type=float, default=0.80, help="abstention wanted on unanswerable")
    parser.add_argument("--limit", type=float, default=0.10, help="false abstention allowed on answerable")
    parser.add_argument("--compare", type=Path,
                        help="a model file (MODEL = {...}, e.g. an earlier rag/abstention_model.py) to compare with "
                        "on the held-out records")
    parser.add_argument("--keep-model", action="store_true",
                        help="no fit: the shipped model (rag.grounding.ABSTENTION_MODEL) with its own features; "
                        "only its operating point is chosen on --fit")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--default-threshold", type=float, default=None,
                        help="threshold written as the service's default [default: the chosen operating point]")
    parser.add_argument("--note", default="", help="docstring of the written model file (why this default)")
    args = parser.parse_args()
    names = tuple(n.strip() for n in args.features.split(",") if n.strip())
    if args.keep_model:
        from rag.grounding import ABSTENTION_MODEL

        names = tuple(ABSTENTION_MODEL["weights"])
    unknown = set(names) - set(FEATURES)
    if unknown:
        parser.error(f"unknown features: {sorted(unknown)}")

    x_fit, y_fit = load(args.fit, names, "fit")
    x_test, y_test = load(args.heldout, names, "heldout")
    print(f"fit: {int(y_fit.sum())} unanswerable + {int((1 - y_fit).sum())} answerable; "
          f"held out: {int(y_test.sum())} + {int((1 - y_test).sum())}")
    print("\nsingle signals on the held-out part (sign chosen on the fit part)")
    print("| signal | AUC fit | AUC held out | abstention at <=10% false abstention |\n|---|---|---|---|")
    for i, name in enumerate(names):
        sign = 1.0 if auc(x_fit[:, i], y_fit) >= 0.5 else -1.0
        s = sign * x_test[:, i]
        ab, _ = best_at(s, y_test, args.limit)
        print(f"| {name} ({'high' if sign > 0 else 'low'} = unanswerable) | {auc(sign * x_fit[:, i], y_fit):.3f} "
              f"| {auc(s, y_test):.3f} | {ab:.3f} |")
    if args.cv:
        for l2 in (0.1, 1.0, 10.0, 30.0, 100.0):
            print(f"cross-validated AUC on the fit part, l2 {l2}: {cross_validated_auc(x_fit, y_fit, l2, names):.3f}")

    if args.keep_model:
        model = {k: ABSTENTION_MODEL[k] for k in ("weights", "mean", "scale", "intercept")}
    else:
        model = fit(x_fit, y_fit, args.l2, names=names)
    s_fit, s_test = scores(model, x_fit, names), scores(model, x_test, names)
    if "refusal" in names:
        refused_fit, refused_test = x_fit[:, names.index("refusal")] > 0, x_test[:, names.index("refusal")] > 0
    else:
        refused_fit, refused_test = np.zeros(len(y_fit), bool), np.zeros(len(y_test), bool)
    what = "the shipped model" if args.keep_model else f"combination (logistic regression, l2 {args.l2})"
    print(f"\n{what}: AUC fit {auc(s_fit, y_fit):.3f}, "
          f"held out {auc(s_test, y_test):.3f}; abstention at <=10% false abstention on the held-out part "
          f"{best_at(s_test, y_test, args.limit)[0]:.3f}")
    if args.compare:
        import runpy

        other = runpy.run_path(str(args.compare))["MODEL"]
        before = model_scores(args.heldout, other, names)
        low, high = paired_auc_interval(s_test, before, y_test)
        print(f"{args.compare}: AUC {auc(before, y_test):.3f}, abstention at "
              f"<=10% false abstention {best_at(before, y_test, args.limit)[0]:.3f}; difference "
              f"{auc(s_test, y_test) - auc(before, y_test):+.3f} (95% bootstrap interval {low:+.3f} to {high:+.3f})")
    print("\ntrade-off on the held-out part (refusals always abstain)")
    print("| RAG_ABSTAIN_THRESHOLD | abstention (unanswerable) | false abstention (answerable) |\n|---|---|---|")
    grid = [round(t, 2) for t in np.arange(0.05, 1.0001, 0.05)]
    for t in grid:
        ab, fa = rates(s_test, y_test, refused_test, t)
        print(f"| {t:.2f} | {ab:.3f} | {fa:.3f} |")
    # The operating point is chosen on the fit part, then read on the held-out part.
    fine = [round(t, 3) for t in np.arange(0.01, 1.0001, 0.005)]
    reaching = [t for t in fine if rates(s_fit, y_fit, refused_fit, t)[0] >= args.target]
    within = [t for t in fine if rates(s_fit, y_fit, refused_fit, t)[1] <= args.limit]
    if reaching and rates(s_fit, y_fit, refused_fit, max(reaching))[1] <= args.limit:
        chosen = max(reaching)
    elif within:
        chosen = min(within)
    else:
        chosen = 1.0
    ab, fa = rates(s_test, y_test, refused_test, chosen)
    fab, ffa = rates(s_fit, y_fit, refused_fit, chosen)
    print(f"\nchosen on the fit part: threshold {chosen:.3f} (fit: abstention {fab:.3f}, false {ffa:.3f}); "
          f"held out: abstention {ab:.3f}, false abstention {fa:.3f}")
    model["operating_point"] = chosen
    model["threshold"] = chosen if args.default_threshold is None else args.default_threshold
    if "draft" in read_lines(args.heldout)[0]:
        print(f"\nthe held-out answers with this model at the chosen point ({chosen:.3f}), as `rag eval` reports them:")
        print(generation_table(args.heldout, {**model, "threshold": chosen}))
    print(json.dumps(model, indent=2))
    if args.write:
        MODEL_FILE.write_text(
            '"""The abstention model: written by bench/abstention.py (docs/benchmarks.md).'
            + (f"\n\n{args.note.strip()}\n" if args.note.strip() else "")
            + '"""\n\n'
            f"MODEL = {json.dumps(model, indent=4)}\n"
        )
        print(f"written to {MODEL_FILE}")


if __name__ == "__main__":
    main()

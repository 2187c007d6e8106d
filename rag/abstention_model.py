"""The abstention model: written by bench/abstention.py (docs/benchmarks.md).

Session 7: the question against its three best passages only (rag.grounding.passage_features),
fitted on all 2,426 questions of squad-dev's fit part from retrieval alone (bench/abstention_signals.py).
On the 3,528 held-out questions: AUC 0.650; the operating point chosen on the fit part (most
abstention at <= 10% false abstention there: RAG_ABSTAIN_THRESHOLD=0.67) abstains on 0.231 of the
unanswerable with 0.109 false abstention. The default threshold stays 1.0 (abstain only on a refusal
or an answer with no evidence): at that point about four in five withheld answers would be answers
to answerable questions on squad-dev. RAG_ABSTAIN_THRESHOLD=0.67 turns it on.
"""

MODEL = {
    "weights": {
        "question_coverage_best": -1.324432,
        "best_margin": 0.340624,
        "missing_words_passages": -0.215519,
        "missing_names_passages": 0.009313,
        "missing_names_best": 0.328152,
        "missing_words_best": -0.478737,
        "missing_bigrams": -0.131252,
        "negation_mismatch_best": 0.10069,
        "question_words": -0.297014
    },
    "mean": {
        "question_coverage_best": 0.662892,
        "best_margin": 0.195078,
        "missing_words_passages": 0.159007,
        "missing_names_passages": 0.04864,
        "missing_names_best": 0.238252,
        "missing_words_best": 0.314154,
        "missing_bigrams": 0.651802,
        "negation_mismatch_best": 0.011129,
        "question_words": 1.797857
    },
    "scale": {
        "question_coverage_best": 0.206327,
        "best_margin": 0.204183,
        "missing_words_passages": 0.164531,
        "missing_names_passages": 0.218913,
        "missing_names_best": 0.520911,
        "missing_words_best": 0.208324,
        "missing_bigrams": 0.224891,
        "negation_mismatch_best": 0.104907,
        "question_words": 0.329538
    },
    "intercept": -0.17292,
    "operating_point": 0.67,
    "threshold": 1.0
}

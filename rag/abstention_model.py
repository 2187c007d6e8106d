"""The abstention model: written by bench/abstention.py (docs/benchmarks.md).

The threshold is set by hand to 1.0 (abstain only when the model itself finds
no answer): the operating point chosen on the fit part (0.605: abstention
0.395, false abstention 0.081 there) did not hold on the held-out documents
(abstention 0.075, false abstention 0.137; AUC 0.58), so no default threshold
withholds answers on content. RAG_ABSTAIN_THRESHOLD turns it on.
"""

MODEL = {
    "weights": {
        "question_coverage": -0.165471,
        "question_coverage_best": -0.122824,
        "missing_names": 0.015197,
        "missing_words": 0.035102,
        "negation_mismatch": -0.073076,
        "answer_in_question": 0.075936,
        "answer_support": -0.195516,
        "refusal": 0.0,
        "mean_logprob": 0.012184,
        "min_logprob": 0.00055,
        "first_logprob": -0.142038,
        "answer_words": 0.049111
    },
    "mean": {
        "question_coverage": 0.457328,
        "question_coverage_best": 0.634519,
        "missing_names": 0.68,
        "missing_words": 3.013333,
        "negation_mismatch": 0.013333,
        "answer_in_question": 0.317778,
        "answer_support": 0.691244,
        "refusal": 0.0,
        "mean_logprob": -1.023478,
        "min_logprob": -2.20132,
        "first_logprob": -1.790329,
        "answer_words": 1.86788
    },
    "scale": {
        "question_coverage": 0.298156,
        "question_coverage_best": 0.203945,
        "missing_names": 1.14496,
        "missing_words": 1.865428,
        "negation_mismatch": 0.114698,
        "answer_in_question": 0.344256,
        "answer_support": 0.308493,
        "refusal": 1.0,
        "mean_logprob": 0.431869,
        "min_logprob": 0.634052,
        "first_logprob": 0.681476,
        "answer_words": 0.780533
    },
    "intercept": 0.002458,
    "threshold": 1.0
}

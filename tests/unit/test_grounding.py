"""Evidence spans, support and the abstention decision (rag.grounding)."""

from __future__ import annotations

from rag.grounding import (
    ABSTENTION_MODEL,
    FEATURES,
    GroundingJudge,
    content_words,
    find_evidence,
    grounding_features,
    is_refusal,
    passage_features,
    question_sentences,
    split_sentences,
)

PASSAGES = [
    (1, "The Eiffel Tower is in Paris. It was completed in 1889 for the World's Fair.\n\nIt is 330 m tall."),
    (2, "Gustave Eiffel's company designed and built the tower. Maurice Koechlin drew the first plans."),
]


def test_sentences_split_with_offsets() -> None:
    text = PASSAGES[0][1]
    spans = split_sentences(text)
    assert [text[a:b] for a, b in spans] == [
        "The Eiffel Tower is in Paris.",
        "It was completed in 1889 for the World's Fair.",
        "It is 330 m tall.",
    ]


def test_verbatim_answer_quotes_its_sentence_with_offsets() -> None:
    evidence, supported = find_evidence("1889", PASSAGES)
    assert supported
    (ev,) = evidence
    assert ev.rank == 1
    assert PASSAGES[0][1][ev.start : ev.end] == ev.text == "It was completed in 1889 for the World's Fair."


def test_a_verbatim_answer_is_found_where_the_passage_spaces_it_otherwise() -> None:
    passages = [(1, "The bridge opened in 1932. Its steel arch   spans\tthe harbour. It took eight years.")]
    evidence, supported = find_evidence("its steel arch spans  the harbour", passages)
    assert supported and evidence[0].text == "Its steel arch   spans\tthe harbour." and evidence[0].start == 27
    evidence, supported = find_evidence("its steel arch spans the river", passages)  # not verbatim: by its words
    assert evidence[0].text == "Its steel arch   spans\tthe harbour."


def test_cited_passage_is_searched_first() -> None:
    evidence, supported = find_evidence("the tower [2]", PASSAGES)
    assert supported and evidence[0].rank == 2


def test_answer_with_words_of_one_sentence_is_supported_when_all_present() -> None:
    evidence, supported = find_evidence("Koechlin, Maurice", PASSAGES)
    assert supported and evidence[0].rank == 2 and "Koechlin" in evidence[0].text
    evidence, supported = find_evidence("Maurice Ravel", PASSAGES)
    assert not supported and evidence and evidence[0].rank == 2  # the closest sentence, still quoted


def test_refusal_and_empty_answers_have_no_evidence() -> None:
    assert is_refusal("The documents don't contain an answer to this question.")
    assert not is_refusal("1889")
    assert find_evidence("The documents don't contain it.", PASSAGES) == ([], False)
    assert find_evidence("", PASSAGES) == ([], False)


def test_features_see_a_question_word_missing_from_the_answers_sentence() -> None:
    answerable = "When was the Eiffel Tower completed?"
    changed = "When was the Eiffel Tower demolished?"  # SQuAD 2.0 style: same paragraph, one word changed
    ev, _ = find_evidence("1889", PASSAGES)
    good = grounding_features(answerable, "1889", PASSAGES, ev, [-0.1, -0.2])
    bad = grounding_features(changed, "1889", PASSAGES, ev, [-0.1, -0.2])
    assert set(good) == set(FEATURES)
    assert "mean_logprob" not in grounding_features(answerable, "1889", PASSAGES, ev, [])
    assert good["question_coverage"] == 1.0 > bad["question_coverage"]
    assert good["answer_support"] == 1.0
    assert good["mean_logprob"] == -0.15000000000000002 or abs(good["mean_logprob"] + 0.15) < 1e-9
    assert content_words("Who founded the companies?") == ["founded", "company"] or "compan" in " ".join(
        content_words("Who founded the companies?")
    )


def test_judge_abstains_above_its_threshold_with_a_reason() -> None:
    model = {
        "weights": {name: 0.0 for name in FEATURES} | {"question_coverage": -2.0},
        "mean": {name: 0.0 for name in FEATURES} | {"question_coverage": 0.8},
        "scale": {name: 1.0 for name in FEATURES} | {"question_coverage": 0.2},
        "intercept": 0.0,
        "threshold": 0.5,
    }
    judge = GroundingJudge(model=model)
    kept = judge.assess("When was the Eiffel Tower completed?", "1889", PASSAGES, [-0.1])
    assert not kept.abstain and kept.supported and kept.evidence
    withheld = judge.assess("When was the Eiffel Tower demolished?", "1889", PASSAGES, [-0.1])
    assert withheld.abstain and withheld.reason and "question asks" in withheld.reason
    assert withheld.unanswerable_probability is not None and withheld.unanswerable_probability > 0.5
    # The setting moves the point: a threshold of 1 never abstains on content.
    assert not GroundingJudge(threshold=1.0, model=model).assess(
        "When was the Eiffel Tower demolished?", "1889", PASSAGES
    ).abstain
    # A refusal always abstains.
    refused = judge.assess("Who?", "The documents don't contain it.", PASSAGES)
    assert refused.abstain and refused.reason


def test_committed_model_is_complete() -> None:
    for key in ("weights", "mean", "scale"):
        assert set(ABSTENTION_MODEL[key]) <= set(FEATURES)
    judge = GroundingJudge()
    assert 0.0 <= judge.threshold <= 1.0
    p = judge.probability(grounding_features("Who built it?", "Eiffel", PASSAGES, [], []))
    assert 0.0 <= p <= 1.0


def test_question_sentences_are_the_ones_sharing_most_words_with_the_question() -> None:
    passages = [
        "Paris is the capital of France. The Eiffel Tower was completed in 1889.",
        "The tower is 330 metres tall. Gustave Eiffel's company built the tower.",
    ]
    best = question_sentences("When was the Eiffel Tower completed?", passages, 2)
    assert best[0] == "The Eiffel Tower was completed in 1889."
    assert best[1] == "Gustave Eiffel's company built the tower."  # two of the three words
    assert question_sentences("Who built the tower?", passages, 1) == ["Gustave Eiffel's company built the tower."]
    assert question_sentences("anything", passages, 0) == []


def test_passage_features_see_what_an_edited_question_adds() -> None:
    # SQuAD 2.0's unanswerable questions are answerable ones with a name, a
    # number or a word changed, or a "not" added: the passages lack it.
    asked = passage_features("When was the tower completed for the World's Fair?", PASSAGES)
    swapped = passage_features("When was the Chrysler Building completed?", PASSAGES)
    negated = passage_features("When was the tower not completed for the World's Fair?", PASSAGES)
    assert set(asked) < set(FEATURES)
    assert asked["missing_names_passages"] == asked["missing_names_best"] == 0.0
    assert asked["missing_words_passages"] == 0.0
    assert asked["missing_words_best"] < swapped["missing_words_best"]
    assert swapped["missing_names_passages"] == 2.0 and swapped["missing_words_passages"] > 0.5
    assert swapped["missing_bigrams"] > asked["missing_bigrams"]
    assert negated["negation_mismatch_best"] == 1.0 and asked["negation_mismatch_best"] == 0.0
    assert asked["best_margin"] == 0.5  # 3 of its 4 words in one sentence, at most 1 in any other
    assert passage_features("When?", [])["best_margin"] == 0.0


def test_type_mismatch_compares_what_is_asked_with_the_answer() -> None:
    ev, _ = find_evidence("1889", PASSAGES)
    assert grounding_features("When was it completed?", "1889", PASSAGES, ev)["type_mismatch"] == 0.0
    ev, _ = find_evidence("the World's Fair", PASSAGES)
    assert grounding_features("When was it completed?", "the World's Fair", PASSAGES, ev)["type_mismatch"] == 1.0
    assert grounding_features("Who drew the first plans?", "Maurice Koechlin", PASSAGES, ev)["type_mismatch"] == 0.0
    assert grounding_features("Who drew the first plans?", "the first plans", PASSAGES, ev)["type_mismatch"] == 1.0
    assert grounding_features("What is in Paris?", "the tower", PASSAGES, ev)["type_mismatch"] == 0.0


def test_a_model_of_passage_features_alone_abstains_on_the_edited_question() -> None:
    model = {
        "weights": {"missing_names_passages": 3.0},
        "mean": {"missing_names_passages": 0.5},
        "scale": {"missing_names_passages": 1.0},
        "intercept": 0.0,
        "threshold": 0.5,
    }
    judge = GroundingJudge(model=model)
    assert not judge.assess("When was the Eiffel Tower completed?", "1889", PASSAGES).abstain
    withheld = judge.assess("When was the Chrysler Building completed?", "1889", PASSAGES)
    assert withheld.abstain and withheld.reason == "a name or number of the question is in none of the passages"


def test_passage_features_read_the_best_three_passages_only() -> None:
    far = (4, "The Chrysler Building was completed in 1930.")
    question = "When was the Chrysler Building completed?"
    three = [*PASSAGES, (3, "Paris has many museums.")]
    assert passage_features(question, [far, *three]) == passage_features(question, three)
    assert passage_features(question, [far, *PASSAGES])["missing_names_passages"] == 0.0


def test_the_reason_is_a_feature_pointing_the_way_its_words_say() -> None:
    # Correlated features can get weights of either sign: few missing words
    # may push toward "unanswerable", but is not given as the reason.
    names = ("missing_words_passages", "question_coverage_best")
    model = {
        "weights": {"missing_words_passages": -1.0, "question_coverage_best": -0.5},
        "mean": dict.fromkeys(names, 0.5),
        "scale": dict.fromkeys(names, 0.1),
        "intercept": 0.0,
        "threshold": 0.5,
    }
    question = "When was the tower completed for the World's Fair?"
    withheld = GroundingJudge(model=model).assess(question, "1889", PASSAGES)
    assert withheld.abstain
    assert withheld.reason == "the passages do not appear to answer the question"


def test_shipped_model_at_its_operating_point_withholds_an_edited_question() -> None:
    judge = GroundingJudge(threshold=ABSTENTION_MODEL["operating_point"])
    assert GroundingJudge().threshold == 1.0  # off by default: docs/benchmarks.md, issue 14
    passages = [
        (1, "The Eiffel Tower was completed in 1889 for the World's Fair. It is 330 m tall."),
        (2, "Gustave Eiffel's company designed and built the tower."),
        (3, "Paris has many museums, and the Louvre is the largest."),
    ]
    kept = judge.assess("When was the Eiffel Tower completed?", "1889", passages)
    withheld = judge.assess("When was the Chrysler Building demolished?", "1889", passages)
    assert not kept.abstain
    assert withheld.abstain and withheld.reason
    assert withheld.unanswerable_probability is not None and kept.unanswerable_probability is not None
    assert withheld.unanswerable_probability > kept.unanswerable_probability

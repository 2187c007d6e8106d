"""Prompt assembly against the real Gemma vocabulary, token by token."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.generation.llama import LlamaModel
from rag.prompt import PromptBuilder, PromptRecipe, copy_source, copy_texts


@pytest.fixture(scope="module")
def vocab(model_path: Path) -> LlamaModel:
    # vocab_only: the tokenizer without the weights, fast to load.
    return LlamaModel(model_path, n_ctx=4096, vocab_only=True)


def single_token(vocab: LlamaModel, text: str) -> int:
    tokens = vocab.tokenize(text)[1:]  # drop BOS
    assert len(tokens) == 1, f"{text!r} is not one token: {tokens}"
    return tokens[0]


def test_turn_markers_are_single_special_tokens(vocab: LlamaModel) -> None:
    start = single_token(vocab, "<start_of_turn>")
    end = single_token(vocab, "<end_of_turn>")
    assert vocab.token_text(start) == "<start_of_turn>"
    assert vocab.token_text(end) == "<end_of_turn>"


def test_gemma_chat_prompt_token_by_token(vocab: LlamaModel) -> None:
    builder = PromptBuilder("gemma-chat", vocab.tokenize, vocab.detokenize)
    prompt = builder.build("Who wrote it?", ["Alice wrote the report.", "Bob read it."], budget=1000)
    start = single_token(vocab, "<start_of_turn>")
    end = single_token(vocab, "<end_of_turn>")
    tokens = prompt.tokens

    assert tokens[0] == vocab.tokenize("")[0]  # BOS
    assert tokens[1] == start
    assert vocab.detokenize(tokens[2:4]) == "user\n"
    # exactly two turns opened, one closed, and the prompt ends by opening the model's turn
    assert tokens.count(start) == 2
    assert tokens.count(end) == 1
    i_end = tokens.index(end)
    assert tokens[i_end + 1 :] == vocab.tokenize("\n<start_of_turn>model\n")[1:]
    body = vocab.detokenize(tokens[2:i_end])
    assert body.startswith("user\nAnswer the question using only the numbered context passages")
    assert "[1] Alice wrote the report.\n\n[2] Bob read it." in body
    assert body.endswith("Question: Who wrote it?")
    # no stray markers inside the user's text
    assert "<start_of_turn>" not in body and "<end_of_turn>" not in body
    assert prompt.stop == ("<end_of_turn>",)
    assert not prompt.truncated and prompt.passages_used == 2


def test_completion_prompt_ends_with_short_answer(vocab: LlamaModel) -> None:
    builder = PromptBuilder("completion", vocab.tokenize, vocab.detokenize)
    prompt = builder.build("Who wrote it?", ["Alice wrote the report."], budget=500)
    assert prompt.text.endswith("Question: Who wrote it?\nShort answer:")
    assert "<start_of_turn>" not in prompt.text
    assert prompt.stop[0] == "\n"


@pytest.mark.parametrize("style", ["gemma-chat", "completion"])
def test_long_context_is_trimmed_to_the_budget(vocab: LlamaModel, style: str) -> None:
    builder = PromptBuilder(style, vocab.tokenize, vocab.detokenize)  # type: ignore[arg-type]
    passages = [f"Passage {i}: " + "the quick brown fox jumps over the lazy dog " * 40 for i in range(20)]
    for budget in (200, 512, 1500, 3000):
        prompt = builder.build("What does the fox do?", passages, budget=budget)
        assert len(prompt.tokens) <= budget
        assert len(vocab.tokenize(prompt.text)) == len(prompt.tokens)
        assert prompt.truncated
        assert 0 < prompt.passages_used < len(passages)
        # rank order is kept: the first passage is always the one given first
        assert "[1] Passage 0:" in prompt.text
        # a bigger budget holds more context, and uses most of it
        assert len(prompt.tokens) > budget * 0.8


def test_everything_fits_when_room(vocab: LlamaModel) -> None:
    builder = PromptBuilder("gemma-chat", vocab.tokenize, vocab.detokenize)
    prompt = builder.build("q?", ["a", "b", "c"], budget=4000)
    assert prompt.passages_used == 3 and not prompt.truncated


def test_worked_examples_open_every_completion_prompt(vocab: LlamaModel) -> None:
    from rag.prompt import EXAMPLES

    builder = PromptBuilder("completion", vocab.tokenize, vocab.detokenize, examples=True)
    one = builder.build("Who wrote it?", ["Alice wrote the report."], budget=1000)
    two = builder.build("Who read it?", ["Bob read the report."], budget=1000)
    assert one.text.startswith(EXAMPLES) and one.text.endswith("Question: Who wrote it?\nShort answer:")
    # The same leading tokens: their KV cache is reused from one prompt to the next.
    shared = len(vocab.tokenize(EXAMPLES)) - 1
    assert one.tokens[:shared] == two.tokens[:shared]
    # Not for chat prompts, nor without retrieval.
    chat = PromptBuilder("gemma-chat", vocab.tokenize, vocab.detokenize, examples=True)
    assert EXAMPLES not in chat.build("Who?", ["Alice."], budget=1000).text
    plain = PromptBuilder("completion", vocab.tokenize, vocab.detokenize, examples=True, retrieval=False)
    assert EXAMPLES not in plain.build("Who?", [], budget=1000).text


def test_best_last_writes_the_passages_that_fit_from_the_last_to_the_best(vocab: LlamaModel) -> None:
    passages = ["Alpha is first.", "Beta is second.", "Gamma is third. " * 40]
    builder = PromptBuilder("completion", vocab.tokenize, vocab.detokenize, best_last=True)
    prompt = builder.build("Which is first?", passages[:2], budget=1000)
    assert "Context:\n[2] Beta is second.\n\n[1] Alpha is first.\n\nQuestion: Which is first?" in prompt.text
    assert prompt.passages == ("Alpha is first.", "Beta is second.")
    # Short of room, the lowest-ranked passage is the one cut or left out, as in rank order.
    plain = PromptBuilder("completion", vocab.tokenize, vocab.detokenize).build("Which is first?", passages, 300)
    tight = builder.build("Which is first?", passages, budget=300)
    assert tight.passages == plain.passages and tight.passages_used == plain.passages_used < 4
    assert tight.text.index("[2] Beta") < tight.text.index("[1] Alpha") < tight.text.rindex("Question:")


@pytest.mark.parametrize("style", ["gemma-chat", "completion"])
@pytest.mark.parametrize("retrieval", [True, False])
@pytest.mark.parametrize("history", [(), (("user", "Earlier?"), ("assistant", "Yes."))])
def test_the_likely_texts_are_all_a_fitting_prompt_tokenizes(
    vocab: LlamaModel, style: str, retrieval: bool, history: tuple[tuple[str, str], ...]
) -> None:
    """Tokenized beforehand in one go, ``likely_texts`` (and ``copy_texts`` for
    extractive answers) leave nothing to ask one by one when every passage fits."""
    asked: list[str] = []

    def tokenize(text: str) -> list[int]:
        asked.append(text)
        return vocab.tokenize(text)

    builder = PromptBuilder(style, tokenize, vocab.detokenize, history=history, retrieval=retrieval)  # type: ignore[arg-type]
    passages = ["Alice wrote the report.", "  Bob read it twice. "] if retrieval else []
    known = set(builder.likely_texts("Who wrote it?", passages)) | set(copy_texts(passages, builder.stop))
    prompt = builder.build("Who wrote it?", passages, budget=1000)
    if passages:
        copy_source(prompt, tokenize)
    assert prompt.passages_used == len(passages) and not prompt.truncated
    assert set(asked) <= known


@pytest.mark.parametrize("style", ["gemma-chat", "completion"])
def test_the_fitting_texts_leave_only_the_final_prompt_when_the_whole_does_not_fit(
    vocab: LlamaModel, style: str
) -> None:
    """The model refused the whole prompt: ``fitting_texts`` (asked for in one
    go) are all that fitting it passage by passage tokenizes but the final
    prompt and the two parts of a passage cut."""
    passages = ["Alice wrote the report in March.", "Bob read it twice. " * 30, "Carol filed it. " * 30]
    plain = PromptBuilder(style, vocab.tokenize, vocab.detokenize)
    whole, frame = (len(vocab.tokenize(plain.text("Who wrote it?", p))) for p in (passages, []))
    for budget in (whole - 60, whole - 200, frame + 20):
        asked: list[str] = []

        def tokenize(text: str, asked: list[str] = asked) -> list[int]:
            asked.append(text)
            return vocab.tokenize(text)

        builder = PromptBuilder(style, tokenize, vocab.detokenize)
        known = set(builder.fitting_texts("Who wrote it?", passages)) | {builder.text("Who wrote it?", passages)}
        prompt = builder.build("Who wrote it?", passages, budget=budget)
        assert prompt.truncated and len(prompt.tokens) <= budget
        n = prompt.passages_used  # the passage cut is the last one in, or the next one, left out
        cut = {t for i in (n, n + 1) if 0 < i <= len(passages) for t in (f"[{i}] ", passages[i - 1].strip())}
        assert set(asked) - known <= {prompt.text} | cut, budget


def _conversation(turns: int) -> list[tuple[str, str]]:
    return [("user" if i % 2 == 0 else "assistant", f"turn {i}: " + "words of the earlier talk " * (5 + 7 * (i % 5)))
            for i in range(turns)]


@pytest.mark.parametrize("style", ["gemma-chat", "completion"])
@pytest.mark.parametrize("retrieval", [True, False])
def test_a_long_conversation_keeps_the_newest_pairs_of_turns_that_fit_counting_each_turn_once(
    vocab: LlamaModel, style: str, retrieval: bool
) -> None:
    history = _conversation(60)
    passages = ["Alice wrote the report."] if retrieval else []
    chars: list[int] = []

    def tokenize(text: str) -> list[int]:
        chars.append(len(text))
        return vocab.tokenize(text)

    def builder(turns: list[tuple[str, str]], tok: object = vocab.tokenize) -> PromptBuilder:
        return PromptBuilder(style, tok, vocab.detokenize, history=turns, retrieval=retrieval)  # type: ignore[arg-type]

    for budget in (800, 1500, 3000):
        chars.clear()
        prompt = builder(history, tokenize).build("Who wrote it?", passages, budget)
        # The oldest turns go, in pairs, as few as leave a frame that fits.
        drop = next(d for d in range(0, len(history) + 1, 2)
                    if len(vocab.tokenize(builder(history[d:]).text("Who wrote it?", []))) <= budget)
        assert 0 < drop < len(history), budget
        assert prompt.text == builder(history[drop:]).build("Who wrote it?", passages, budget).text
        assert len(prompt.tokens) <= budget
        # Each turn tokenized a few times at most: dropping a pair at a time and
        # tokenizing the frame again each time was quadratic in the turns.
        assert sum(chars) < 5 * sum(len(t) for _, t in history), budget


def test_an_oversized_question_is_cut_to_what_could_fit_before_it_is_tokenized(vocab: LlamaModel) -> None:
    from rag.prompt import MAX_CHARS_PER_TOKEN

    question = "What did the team read before each shift? " * 50_000  # 2.1 million characters
    longest: list[int] = []

    def tokenize(text: str) -> list[int]:
        longest.append(len(text))
        return vocab.tokenize(text)

    prompt = PromptBuilder("gemma-chat", tokenize, vocab.detokenize, retrieval=False).build(question, [], budget=200)
    assert prompt.truncated and 180 <= len(prompt.tokens) <= 200  # the room is used: the question's beginning
    assert prompt.text.startswith("<start_of_turn>user\nWhat did the team read before each shift? What did")
    assert max(longest) <= 200 * MAX_CHARS_PER_TOKEN + 100


def test_what_of_a_conversation_could_fit_at_all() -> None:
    from rag.prompt import MAX_CHARS_PER_TOKEN, reachable

    limit = 10 * MAX_CHARS_PER_TOKEN
    history = [("user", "a" * 300), ("assistant", "b" * 300), ("user", "c" * 500), ("assistant", "d" * 400)]
    question, kept = reachable("q" * (limit + 50), history, budget=10)  # type: ignore[arg-type]
    assert question == "q" * limit
    assert kept == history[2:]  # the newest turns holding at most `limit` characters, in whole pairs
    assert reachable("q", history, budget=100) == ("q", history)  # type: ignore[arg-type]
    assert reachable("q", [("user", "x" * (limit + 1))], budget=10) == ("q", [])
    many = [("user" if i % 2 == 0 else "assistant", "x") for i in range(100)]
    assert reachable("q", many, budget=10)[1] == many[-4:]  # at most budget // 2 turns, in whole pairs


def test_a_model_fits_prompts_as_a_builder_does_keeping_the_passages_tokens(
    vocab: LlamaModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    passages = [f"Passage {i}: the lighthouse keeper logged {i * 7} storms in {1900 + i}. " * 10 for i in range(1, 6)]
    recipe = PromptRecipe("gemma-chat")
    tokenized: list[str] = []
    tokenize = vocab.tokenize
    monkeypatch.setattr(vocab, "tokenize", lambda text: tokenized.append(text) or tokenize(text))
    for i, budget in enumerate((400, 400, 250, 2000)):
        question = f"How many storms were logged in year {i}?"
        tokenized.clear()
        fitted = vocab.fit_prompt(recipe, question, passages, budget)
        assert fitted == recipe.builder(tokenize, vocab.detokenize).build(question, passages, budget)
        if i == 1:  # the same passages again: only what holds the question is tokenized
            assert all(question in text or not any(p.strip() in text for p in passages) for text in tokenized)
    assert fitted.passages_used == 5

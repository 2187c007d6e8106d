"""Evidence and abstention through the HTTP API, in process with the fake
model (its answer: the first words of passage [1], so always in the text)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rag.answering import NO_ANSWER
from rag.settings import Settings
from tests.fast.helpers import sse_events, upload
from tests.support.fakes import FakeTextModel

DOCS = {
    "cats.md": "# Cats\n\nDomestic cats sleep for around sixteen hours every day. They hunt at dusk.\n",
    "tea.txt": "Green tea is brewed at eighty degrees for two minutes.\n",
}


def _collection(client: TestClient) -> TestClient:
    client.post("/v1/collections", json={"name": "pets"})
    assert upload(client, "pets", DOCS).status_code == 202
    return client


@pytest.fixture
def pets(client: TestClient) -> TestClient:
    return _collection(client)


def _check(body: dict[str, object], sources: list[dict[str, object]], answer: str | None = None) -> None:
    assert body["grounded"] is True and body["reason"] is None and body["supported"] is True
    (ev,) = body["evidence"]  # type: ignore[misc]
    source = next(s for s in sources if s["rank"] == ev["rank"])
    assert source["text"][ev["start"] : ev["end"]] == ev["quote"]  # type: ignore[index]
    text = answer if answer is not None else body["answer"]
    assert text.split()[0] in ev["quote"]  # type: ignore[union-attr]


def test_ask_returns_the_quoted_evidence(pets: TestClient) -> None:
    body = pets.post("/v1/collections/pets/ask", json={"question": "How long do cats sleep every day?"}).json()
    _check(body, body["sources"])
    assert body["prompt_style"] in ("completion", "gemma-chat")
    assert 0.0 <= body["unanswerable_probability"] <= 1.0 and body["draft"] is None


def test_stream_done_and_openai_responses_carry_it(pets: TestClient) -> None:
    question = "How long do cats sleep every day?"
    r = pets.post("/v1/collections/pets/ask", json={"question": question, "stream": True})
    events = sse_events(r.text)
    _check(json.loads(events[-1][1]), json.loads(events[0][1])["sources"])
    chat = pets.post(
        "/v1/chat/completions", json={"model": "rag/pets", "messages": [{"role": "user", "content": question}]}
    ).json()
    _check(chat, chat["sources"], chat["choices"][0]["message"]["content"])
    stream = pets.post(
        "/v1/chat/completions",
        json={"model": "rag/pets", "messages": [{"role": "user", "content": question}], "stream": True},
    )
    chunks = [json.loads(d) for _, d in sse_events(stream.text) if d != "[DONE]"]
    _check(chunks[-1], chunks[-1]["sources"], "".join(c["choices"][0]["delta"].get("content", "") for c in chunks))


def test_a_low_threshold_withholds_the_answer_with_a_reason(
    app_client: Callable[..., TestClient], fast_settings: Settings
) -> None:
    client = _collection(app_client(settings=fast_settings.model_copy(update={"abstain_threshold": 0.0})))
    body = client.post("/v1/collections/pets/ask", json={"question": "How long do cats sleep every day?"}).json()
    assert body["grounded"] is False and body["answer"] == NO_ANSWER and body["reason"]
    assert body["draft"] and body["supported"] is False and body["evidence"]
    r = client.post("/v1/collections/pets/ask", json={"question": "How long do cats sleep?", "stream": True})
    done = json.loads(sse_events(r.text)[-1][1])
    assert done["grounded"] is False and done["answer"] == NO_ANSWER and done["reason"]


def test_a_refusal_is_withheld_even_at_threshold_one(
    app_client: Callable[..., TestClient], fast_settings: Settings, tmp_path: Path
) -> None:
    from rag.store import VectorStore
    from runtime import Parts
    from tests.support.fakes import HashEmbedder

    refusing = FakeTextModel(answer=lambda prompt: "The passages do not contain that information.")
    parts = Parts(store=VectorStore(), embedder=HashEmbedder(), models=[refusing], inline_tasks=True)  # type: ignore[arg-type]
    client = _collection(app_client(settings=fast_settings.model_copy(update={"abstain_threshold": 1.0}), parts_=parts))
    body = client.post("/v1/collections/pets/ask", json={"question": "How long do cats sleep?"}).json()
    assert body["grounded"] is False and body["answer"] == NO_ANSWER
    assert body["reason"] == "the model found no answer in the passages"


def test_eval_reports_generated_abstention_and_evidence(pets: TestClient) -> None:
    items = [
        {"question": "How long do cats sleep every day?", "answers": ["sixteen hours"], "document": "cats.md"},
        {"question": "At what temperature is green tea brewed?", "answers": ["eighty degrees"], "document": "tea.txt"},
        {"question": "How long do cats sleep at the zoo?", "answers": []},
    ]
    report = pets.post(
        "/v1/collections/pets/evaluations",
        json={"items": items, "generate_sample": 2, "generate_unanswerable": 1, "latency_sample": 0},
    ).json()
    gen = report["generation"]
    assert gen["sample"] == 2 and gen["unanswerable_sample"] == 1
    assert gen["evidence_contains_answer"] is not None and gen["supported"] is not None
    assert gen["abstention"] in (0.0, 1.0) and gen["abstained"] is not None
    for row in ("abstention (unanswerable)", "false abstention (answerable)", "evidence contains answer", "F1"):
        assert row in report["table"]

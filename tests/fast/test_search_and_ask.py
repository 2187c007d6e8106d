"""/search, /ask (JSON and SSE) and /evaluations, in process with the fake model."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from rag.answering import NO_ANSWER
from rag.prompt import EXAMPLES
from rag.settings import Settings
from runtime import Parts
from tests.fast.helpers import sse_events, upload
from tests.support.fakes import FakeTextModel, HashEmbedder, crashed

DOCS = {
    "cats.md": "# Cats\n\nDomestic cats sleep for around sixteen hours every day.\n",
    "dogs.txt": "A dog needs a walk twice a day and likes to chase a ball in the park.\n",
    "tea.txt": "Green tea is brewed at eighty degrees for two minutes.\n",
    "rome.txt": "Rome is the capital of Italy and was founded on seven hills.\n",
}


@pytest.fixture
def pets(client: TestClient) -> TestClient:
    client.post("/v1/collections", json={"name": "pets"})
    assert upload(client, "pets", {"cats.md": DOCS["cats.md"]}, metadata='{"team": "felines"}').status_code == 202
    rest = {k: v for k, v in DOCS.items() if k != "cats.md"}
    assert upload(client, "pets", rest, metadata='{"team": "other"}').status_code == 202
    return client


def _words(text: object, n: int = 6) -> str:
    return " ".join(str(text).split()[:n])


def _search(client: TestClient, **body: object) -> list[dict[str, object]]:
    response = client.post("/v1/collections/pets/search", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert set(data["timings"]) >= {"embed_s", "store_s", "total_s"}
    return data["results"]  # type: ignore[no-any-return]


def test_search_finds_the_right_passage_in_every_mode(pets: TestClient) -> None:
    for mode in ("hybrid", "dense", "lexical"):
        hits = _search(pets, query="how many hours do cats sleep", mode=mode)
        assert hits[0]["filename"] == "cats.md", mode
        assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    assert _search(pets, query="how many hours do cats sleep", mode="lexical")[0]["similarity"] is None


def test_top_k_defaults_to_the_setting(app_client: Callable[..., TestClient], fast_settings: Settings) -> None:
    client = app_client(settings=fast_settings.model_copy(update={"top_k": 2}))
    client.post("/v1/collections", json={"name": "pets"})
    upload(client, "pets", DOCS)
    assert len(_search(client, query="the a day")) == 2
    assert len(_search(client, query="the a day", top_k=3)) == 3


def test_filters(pets: TestClient) -> None:
    query = "a day"
    assert {h["filename"] for h in _search(pets, query=query, filter={"filenames": ["tea.txt"]})} == {"tea.txt"}
    by_team = _search(pets, query=query, filter={"metadata": {"team": ["felines"]}})
    assert {h["filename"] for h in by_team} == {"cats.md"}
    cats_id = by_team[0]["document_id"]
    assert {h["document_id"] for h in _search(pets, query=query, filter={"document_ids": [cats_id]})} == {cats_id}
    assert _search(pets, query=query, filter={"uploaded_after": "2999-01-01T00:00:00Z"}) == []
    assert len(_search(pets, query=query, filter={"uploaded_before": "2999-01-01T00:00:00Z"})) == 4


def test_search_errors(pets: TestClient) -> None:
    def error(body: dict[str, object], name: str = "pets") -> tuple[int, str]:
        r = pets.post(f"/v1/collections/{name}/search", json=body)
        return r.status_code, r.json()["error"]["code"]

    assert error({"query": "cats"}, "nope") == (404, "not_found")
    assert error({"query": ""}) == (422, "invalid_request")
    assert error({"query": "   "}) == (422, "invalid_request")
    assert error({"query": "cats", "top_k": 0}) == (422, "invalid_request")
    assert error({"query": "cats", "mode": "fuzzy"}) == (422, "invalid_request")
    assert error({"query": "cats", "rerank": True}) == (422, "invalid_request")  # no re-ranker configured
    assert error({"query": "cats", "filter": {"unknown": 1}}) == (422, "invalid_request")


def test_ask_answers_from_the_best_passage(pets: TestClient, model: FakeTextModel) -> None:
    response = pets.post("/v1/collections/pets/ask", json={"question": "How many hours do cats sleep?"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["grounded"] is True and body["finish_reason"] == "stop"
    assert body["sources"][0]["filename"] == "cats.md"
    assert body["answer"] == _words(body["sources"][0]["text"])  # the fake's answer: passage [1]
    assert body["usage"]["completion_tokens"] == 6 and body["usage"]["context_passages"] >= 1
    assert set(body["timings"]) >= {"retrieval_s", "generation_s", "total_s"}
    # The prompt: the bundled model's completion style, the passages from the
    # last to the best, each numbered by its rank (RAG_ANSWER_BEST_LAST).
    prompt = model.prompts[-1]
    assert prompt.startswith(EXAMPLES)  # worked examples first (rag/prompt.py)
    prompt = prompt[len(EXAMPLES) :]
    n = body["usage"]["context_passages"]
    assert prompt.startswith(f"Context:\n[{n}] ") and prompt.endswith("Short answer:")
    best = "[1] " + body["sources"][0]["text"].strip()
    assert prompt.endswith(f"{best}\n\nQuestion: How many hours do cats sleep?\nShort answer:")


def test_answers_from_passages_are_copied_from_the_sentence_most_like_the_question(
    pets: TestClient, model: FakeTextModel
) -> None:
    """RAG_ANSWER_EXTRACTIVE and RAG_ANSWER_COPY_SENTENCES=1 (the defaults):
    greedy decoding restricted to the best sentence's tokens; random sampling
    is left free."""
    assert pets.post("/v1/collections/pets/ask", json={"question": "How many hours do cats sleep?"}).status_code == 200
    copy = model.params[-1].extractive
    assert copy is not None
    best = " Domestic cats sleep for around sixteen hours every day."
    assert [model.detokenize(list(run)) for run in copy.runs] == [best]
    assert copy.end == (ord("\n"),)  # the completion prompt's stop
    messages = [{"role": "user", "content": "How many hours do cats sleep?"}]
    sampled = {"model": "rag/pets", "messages": messages, "temperature": 0.7, "seed": 1}
    assert pets.post("/v1/chat/completions", json=sampled).status_code == 200
    assert model.params[-1].sampling is not None and model.params[-1].extractive is None


@pytest.mark.parametrize("tokenizes_later", [False, True])
def test_a_prompt_too_long_as_a_whole_is_built_to_fit(
    pets: TestClient, app_client: Callable[..., TestClient], fast_settings: Settings, model: FakeTextModel,
    tokenizes_later: bool,
) -> None:
    # The whole prompt goes to the model as text (not when the answer is
    # copied from the passages, which needs its tokens here); over the budget
    # it comes back refused (at once, or through the job as from a model
    # process) and is built again within it, the last passages cut. Once the
    # service has seen prompts, one that looks too long is fitted at once.
    model.tokenizes_later = tokenizes_later
    generated = fast_settings.model_copy(update={"answer_extractive": False})
    question = {"question": "How many hours do cats sleep?"}
    whole = app_client(settings=generated).post("/v1/collections/pets/ask", json=question).json()
    assert model.texts == model.prompts  # sent as text, taken whole
    length = len(model.prompts[-1])  # the fake's tokens are characters
    budget = length - 40
    fresh = app_client(settings=generated)  # the same collection; a service that has seen no prompt yet
    for attempts in (1, 1):  # the first is sent whole and refused; the second is not sent whole
        cut = fresh.post("/v1/collections/pets/ask", json=question | {"max_tokens": model.n_ctx - budget}).json()
        assert len(model.texts) == 1 + attempts and model.texts[-1] == model.prompts[0]
        assert len(model.prompts[-1]) <= budget
        assert cut["grounded"] is True and cut["answer"] == whole["answer"]
        assert cut["usage"]["prompt_tokens"] <= budget < whole["usage"]["prompt_tokens"] == length
        assert cut["timings"]["prompt_s"] > 0
    assert len(model.prompts) == 3 and model.prompts[1] == model.prompts[2]


def test_max_tokens_limits_the_answer(pets: TestClient) -> None:
    body = pets.post("/v1/collections/pets/ask", json={"question": "How long do cats sleep?", "max_tokens": 2}).json()
    assert body["answer"] == _words(body["sources"][0]["text"], 2) and body["finish_reason"] == "length"
    too_many = pets.post("/v1/collections/pets/ask", json={"question": "cats?", "max_tokens": 4000})
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "invalid_request"


def test_abstains_without_generating(pets: TestClient, model: FakeTextModel, client: TestClient) -> None:
    body = pets.post("/v1/collections/pets/ask", json={"question": "Quantum chromodynamics lattice gauge?"}).json()
    assert (body["answer"], body["grounded"], body["usage"]) == (NO_ANSWER, False, {})
    client.post("/v1/collections", json={"name": "empty"})
    empty = client.post("/v1/collections/empty/ask", json={"question": "How long do cats sleep?"}).json()
    assert (empty["answer"], empty["grounded"], empty["sources"]) == (NO_ANSWER, False, [])
    assert model.prompts == []


def test_ask_ignores_eos_only_when_streamed(pets: TestClient, model: FakeTextModel) -> None:
    body = {"question": "How many hours do cats sleep?", "ignore_eos": True}
    assert pets.post("/v1/collections/pets/ask", json=body).status_code == 200
    with pets.stream("POST", "/v1/collections/pets/ask", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        assert "event: done" in "".join(r.iter_text())
    assert [o["ignore_eog"] for o in model.options] == [False, True]


def test_ask_takes_filters_and_modes(pets: TestClient) -> None:
    body = pets.post(
        "/v1/collections/pets/ask",
        json={"question": "How long is tea brewed?", "mode": "lexical", "filter": {"filenames": ["tea.txt"]}},
    ).json()
    assert {s["filename"] for s in body["sources"]} == {"tea.txt"} and body["grounded"]


def test_sse_framing(pets: TestClient) -> None:
    with pets.stream("POST", "/v1/collections/pets/ask", json={"question": "cats sleep hours?", "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        body = "".join(r.iter_text())
    events = sse_events(body)
    names = [name for name, _ in events]
    assert names[0] == "sources" and names[-1] == "done" and set(names[1:-1]) == {"delta"}
    sources = json.loads(events[0][1])
    assert sources["grounded"] is True and sources["sources"][0]["filename"] == "cats.md"
    text = "".join(json.loads(data)["text"] for name, data in events if name == "delta")
    done = json.loads(events[-1][1])
    assert text == done["answer"] == _words(sources["sources"][0]["text"])
    assert {"answer", "usage", "timings", "finish_reason", "grounded", "evidence", "supported"} <= set(done)
    assert "sources" not in done


def test_sse_abstention_is_one_delta(pets: TestClient) -> None:
    r = pets.post("/v1/collections/pets/ask", json={"question": "Quantum chromodynamics?", "stream": True})
    events = sse_events(r.text)
    assert [n for n, _ in events] == ["sources", "delta", "done"]
    assert json.loads(events[0][1])["grounded"] is False
    assert json.loads(events[1][1]) == {"text": NO_ANSWER}


def test_errors_before_the_stream_are_http_errors(pets: TestClient) -> None:
    r = pets.post("/v1/collections/nope/ask", json={"question": "cats?", "stream": True})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = pets.post("/v1/collections/pets/ask", json={"question": "cats?", "stream": True, "max_tokens": 4000})
    assert r.status_code == 422


def test_a_model_failure_is_503_or_an_error_event(pets: TestClient, model: FakeTextModel) -> None:
    model.fail = crashed()
    for stream in (False, True):  # nothing was sent yet: the sources go out with the answer's first text
        r = pets.post("/v1/collections/pets/ask", json={"question": "How long do cats sleep?", "stream": stream})
        assert r.status_code == 503 and r.json()["error"]["code"] == "backend_error"
    model.fail_after = 1
    r = pets.post("/v1/collections/pets/ask", json={"question": "How long do cats sleep?", "stream": True})
    events = sse_events(r.text)  # the answer had begun: the stream ends with an error event
    assert [n for n, _ in events] == ["sources", "delta", "error"]
    assert json.loads(events[2][1])["error"]["code"] == "backend_error"


def test_a_full_queue_is_429_with_retry_after(
    app_client: Callable[..., TestClient], fast_settings: Settings, parts: Parts
) -> None:
    model = FakeTextModel(parallel=1)
    model.hold = threading.Event()
    client = app_client(
        settings=fast_settings.model_copy(update={"llm_queue_size": 0}),
        parts_=Parts(store=parts.store, embedder=parts.embedder, models=[model], inline_tasks=True),
    )
    client.post("/v1/collections", json={"name": "pets"})
    upload(client, "pets", DOCS)
    first: dict[str, int] = {}
    waiting = threading.Thread(
        target=lambda: first.update(
            status=client.post("/v1/collections/pets/ask", json={"question": "cats sleep?"}).status_code
        )
    )
    waiting.start()
    try:
        deadline = time.monotonic() + 30
        while not model.jobs:  # the first request holds the only slot
            assert time.monotonic() < deadline, "the first request never reached the model"
            time.sleep(0.01)
        busy = client.post("/v1/collections/pets/ask", json={"question": "cats sleep?"})
        assert busy.status_code == 429 and busy.json()["error"]["code"] == "busy"
        assert int(busy.headers["retry-after"]) >= 1
    finally:
        model.hold.set()
        waiting.join(30)
    assert first == {"status": 200}


def test_evaluations(pets: TestClient) -> None:
    items = [
        {"question": "How many hours do cats sleep?", "answers": ["sixteen hours"], "document": "cats.md"},
        {"question": "What is the capital of Italy?", "answers": ["Rome"], "document": "rome.txt"},
        {"question": "Quantum chromodynamics lattice?", "answers": []},
    ]
    r = pets.post("/v1/collections/pets/evaluations", json={"items": items, "k": [1, 5], "generate_sample": 2})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["answer_recall"] == {"@1": 1.0, "@5": 1.0}
    assert (report["answerable"], report["unanswerable"], report["abstention"]) == (2, 1, 1.0)
    assert report["generation"]["sample"] == 2 and "answer-recall@1" in report["table"]
    bad = pets.post("/v1/collections/pets/evaluations", json={"items": items, "k": [0]})
    assert bad.status_code == 422


def test_a_burst_of_asks_larger_than_pythons_thread_pool_searches_all_at_once(
    app_client: Callable[..., TestClient], fast_settings: Settings, embedder: HashEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each search waits in the embedder until all of the burst's are there: in Python's
    # default pool (cores + 4 threads) the later ones would wait for threads the earlier hold.
    client = app_client(settings=fast_settings.model_copy(update={"llm_queue_size": 64}))
    client.post("/v1/collections", json={"name": "pets"})
    assert upload(client, "pets", {"cats.md": DOCS["cats.md"]}).status_code == 202
    burst = (os.cpu_count() or 1) + 6
    together = threading.Barrier(burst, timeout=30)
    embed = embedder.embed_queries

    def held(texts: list[str]) -> list[list[float]]:
        together.wait()
        return embed(texts)

    monkeypatch.setattr(embedder, "embed_queries", held)
    codes: list[int] = []
    asks = [threading.Thread(target=lambda: codes.append(client.post(
        "/v1/collections/pets/ask", json={"question": "How long do cats sleep?"}).status_code)) for _ in range(burst)]
    for t in asks:
        t.start()
    for t in asks:
        t.join(60)
    assert codes == [200] * burst

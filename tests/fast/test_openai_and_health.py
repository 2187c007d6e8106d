"""The OpenAI-compatible routes and the health probes, in process."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from rag.settings import Settings
from runtime import Parts
from tests.fast.helpers import sse_events, upload
from tests.support.fakes import FakeTextModel, HashEmbedder

CATS = "Domestic cats sleep for around sixteen hours every day."


@pytest.fixture
def pets(client: TestClient) -> TestClient:
    client.post("/v1/collections", json={"name": "pets"})
    upload(client, "pets", {"cats.txt": CATS, "dogs.txt": "A dog needs a walk twice a day."})
    return client


def _chat(client: TestClient, model: str, content: str, **extra: object) -> dict[str, object]:
    messages = [{"role": "user", "content": content}]
    r = client.post("/v1/chat/completions", json={"model": model, "messages": messages, **extra})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_models_lists_base_collections_and_embedder(pets: TestClient, embedder: HashEmbedder) -> None:
    data = pets.get("/v1/models").json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["fake-model", "rag/pets", embedder.name]


def test_chat_with_the_base_model_and_with_a_collection(pets: TestClient, model: FakeTextModel) -> None:
    plain = _chat(pets, "fake-model", "Say hello")
    assert plain["choices"][0]["message"]["content"] == "echo Say hello"  # type: ignore[index]
    assert plain.get("sources") is None and plain["usage"]["completion_tokens"] == 3  # type: ignore[index]
    grounded = _chat(pets, "rag/pets", "How long do cats sleep?")
    assert grounded["choices"][0]["message"]["content"].startswith("Domestic cats")  # type: ignore[index]
    assert grounded["sources"][0]["filename"] == "cats.txt"  # type: ignore[index]
    # History comes before the question in the prompt; system messages are left out.
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    assert pets.post("/v1/chat/completions", json={"model": "fake-model", "messages": messages}).status_code == 200
    assert model.prompts[-1] == (
        "Question: first question\nShort answer: first answer\n\nQuestion: second question\nShort answer:"
    )


def test_chat_stream_is_openai_chunks_then_done(pets: TestClient) -> None:
    r = pets.post(
        "/v1/chat/completions",
        json={
            "model": "rag/pets",
            "messages": [{"role": "user", "content": "How long do cats sleep?"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert all(name is None for name, _ in events) and events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    last = chunks[-1]
    assert text.startswith("Domestic cats") and last["choices"][0]["finish_reason"] == "stop"
    assert last["sources"][0]["filename"] == "cats.txt" and last["usage"]["completion_tokens"] >= 1


def test_chat_errors(pets: TestClient) -> None:
    def error(body: dict[str, object]) -> tuple[int, str]:
        r = pets.post("/v1/chat/completions", json=body)
        return r.status_code, r.json()["error"]["code"]

    user = [{"role": "user", "content": "hi"}]
    assert error({"model": "gpt-unknown", "messages": user}) == (404, "not_found")
    assert error({"model": "rag/nope", "messages": user}) == (404, "not_found")
    assert error({"model": "rag/nope", "messages": user, "stream": True}) == (404, "not_found")
    assert error({"model": "fake-model", "messages": [{"role": "assistant", "content": "hi"}]}) == (
        422,
        "invalid_request",
    )
    assert error({"model": "fake-model", "messages": [{"role": "tool", "content": "x"}, *user]})[0] == 422
    assert error({"model": "fake-model"}) == (422, "invalid_request")


def test_embeddings(pets: TestClient, embedder: HashEmbedder) -> None:
    r = pets.post("/v1/embeddings", json={"model": embedder.name, "input": ["cats sleep", "dogs"]})
    assert r.status_code == 200, r.text
    data = r.json()
    assert [d["index"] for d in data["data"]] == [0, 1] and data["model"] == embedder.name
    assert data["data"][0]["embedding"] == pytest.approx(embedder.embed_query("cats sleep"))
    assert data["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    b64 = pets.post(
        "/v1/embeddings", json={"model": embedder.name, "input": "cats sleep", "encoding_format": "base64"}
    ).json()["data"][0]["embedding"]
    raw = base64.b64decode(b64)
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(embedder.embed_query("cats sleep"), abs=1e-6)
    assert pets.post("/v1/embeddings", json={"model": "other", "input": "x"}).status_code == 404
    assert pets.post("/v1/embeddings", json={"model": embedder.name, "input": []}).status_code == 422
    many = pets.post("/v1/embeddings", json={"model": embedder.name, "input": ["x"] * 257})
    assert many.status_code == 422 and many.json()["error"]["code"] == "invalid_request"


def test_health_and_readiness(client: TestClient, model: FakeTextModel) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"registry": "ok", "store": "ok", "queue": "ok", "model": "ok"},
    }
    model.alive = False  # type: ignore[attr-defined]  # a model process restarting
    down = client.get("/readyz")
    assert down.status_code == 503 and down.json()["checks"]["model"] == "1 of 1 model processes restarting"


def test_a_process_without_a_model(
    app_client: Callable[..., TestClient], fast_settings: Settings, parts: Parts
) -> None:
    client = app_client(settings=fast_settings.model_copy(update={"llm_load": False}))
    client.post("/v1/collections", json={"name": "pets"})
    upload(client, "pets", {"cats.txt": CATS})
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["rag/pets", parts.embedder.name]  # type: ignore[union-attr]
    r = client.post("/v1/collections/pets/ask", json={"question": "How long do cats sleep?"})
    assert r.status_code == 500 and "RAG_LLM_LOAD=false" in r.json()["error"]["message"]
    assert client.post("/v1/collections/pets/search", json={"query": "cats"}).status_code == 200


def test_a_conversation_far_longer_than_the_context_is_cut_before_the_model_tokenizes_it(
    pets: TestClient, model: FakeTextModel
) -> None:
    from rag.prompt import MAX_CHARS_PER_TOKEN

    # 2 MB of earlier turns and a 3 MB question: a model tokenizes ~2.5 MB a
    # second, and a 20 MB message kept the model process's tokenizer busy 36 s.
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "x" * 50_000}
               for i in range(40)]
    messages = [*history, {"role": "user", "content": "What now? " + "y" * 3_000_000}]
    r = pets.post("/v1/chat/completions", json={"model": "fake-model", "messages": messages, "max_tokens": 16})
    assert r.status_code == 200, r.text
    budget = model.n_ctx - 16
    # Nothing went to the model whole; no more of a text than could fit was handed over.
    assert not model.texts or max(map(len, model.texts)) <= 2 * budget * MAX_CHARS_PER_TOKEN
    prompt = model.prompts[-1]
    assert prompt.startswith("Question: What now? yyy") and prompt.endswith("\nShort answer:")
    assert len(prompt) <= budget  # the fake model's tokens are characters


def test_a_chat_grounded_in_a_collection_searches_for_the_first_characters_of_a_huge_question(
    pets: TestClient, embedder: HashEmbedder
) -> None:
    from rag.retrieval import SEARCHED_CHARS

    embedder.longest = 0
    reply = _chat(pets, "rag/pets", "How long do cats sleep? " * 100_000)  # 2.4 MB
    assert reply["sources"][0]["filename"] == "cats.txt"  # type: ignore[index]
    assert embedder.longest == SEARCHED_CHARS


def test_an_embedding_input_is_read_no_further_than_the_model_could(pets: TestClient, embedder: HashEmbedder) -> None:
    from rag.service import EMBED_CHARS_PER_TOKEN

    embedder.longest = 0
    huge = "cats sleep " * 200_000  # 2.2 MB
    r = pets.post("/v1/embeddings", json={"model": embedder.name, "input": [huge, "dogs"]})
    assert r.status_code == 200, r.text
    limit = embedder.max_seq_length * EMBED_CHARS_PER_TOKEN
    assert embedder.longest == limit
    assert r.json()["usage"]["prompt_tokens"] == embedder.count_tokens(huge[:limit]) + 1

"""Serving over HTTP against a real `rag serve`: streaming answers, the
OpenAI-compatible API through the official `openai` client, concurrent asks on
a pool of model instances, and a client that hangs up mid-answer."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.docmaker import make_all
from tests.support.service import (
    ADMIN_KEY,
    ServiceProcess,
    child_pids,
    running,
    upload,
    wait_for,
    wait_indexed,
)

pytestmark = pytest.mark.slow

openai = pytest.importorskip("openai")


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {"RAG_DATA_DIR": str(data_dir), "RAG_LLM_N_CTX": "2048", "RAG_MAX_TOKENS": "32", **extra}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    # Two model instances of two sequences each: 4 answers at once, 4 waiting.
    root = tmp_path_factory.mktemp("serving")
    env = _env(root / "data", RAG_LLM_POOL_SIZE="2", RAG_LLM_PARALLEL="2", RAG_LLM_QUEUE_SIZE="4", RAG_LLM_THREADS="2")
    with running("serve", env, root / "serve.log") as proc:
        yield proc


@pytest.fixture(scope="module")
def handbook(service: ServiceProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, str]]:
    docs = make_all(tmp_path_factory.mktemp("docs"))
    chosen = {k: docs[k] for k in ("txt", "md")}
    with service.client() as c:
        assert c.post("/v1/collections", json={"name": "handbook"}).status_code == 201
        items = upload(c, "handbook", [p for p, _, _ in chosen.values()]).json()["documents"]
        assert all(d["status"] == "indexed" for d in wait_indexed(c, "handbook", [i["id"] for i in items]))
    return chosen


def _sse(lines: Iterator[str]) -> Iterator[tuple[str | None, str]]:
    event: str | None = None
    for line in lines:
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            yield event, line[len("data: ") :]
            event = None


def test_ask_streams_sources_then_deltas_then_usage(service: ServiceProcess, handbook: Any) -> None:
    path, question, fact = handbook["txt"]
    with service.client() as c:
        whole = c.post("/v1/collections/handbook/ask", json={"question": question}).json()
        with c.stream("POST", "/v1/collections/handbook/ask", json={"question": question, "stream": True}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = [(e, json.loads(d)) for e, d in _sse(r.iter_lines())]
    names = [e for e, _ in events]
    assert names[0] == "sources" and names[-1] == "done"
    assert set(names[1:-1]) == {"delta"} and len(names) >= 3
    sources = events[0][1]["sources"]
    assert events[0][1]["grounded"] is True and sources[0]["filename"] == path.name
    text = "".join(d["text"] for e, d in events if e == "delta")
    done = events[-1][1]
    assert text.strip() == done["answer"] == whole["answer"]
    assert fact in done["answer"]
    assert done["usage"]["completion_tokens"] > 0 and done["usage"]["prompt_tokens"] > 0
    assert done["timings"]["time_to_first_token_s"] > 0 and done["finish_reason"] in ("stop", "length")


def test_streaming_errors_before_output_are_plain_http_errors(service: ServiceProcess) -> None:
    with service.client() as c:
        r = c.post("/v1/collections/nope/ask", json={"question": "x", "stream": True})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_sixteen_simultaneous_asks_get_answers_or_clean_429s(service: ServiceProcess, handbook: Any) -> None:
    questions = [handbook[k] for k in ("txt", "md")]
    results: list[tuple[str, httpx.Response | BaseException]] = []
    barrier = threading.Barrier(16)

    def ask(i: int) -> None:
        _, question, fact = questions[i % 2]
        try:
            with service.client() as c:
                barrier.wait()
                results.append((fact, c.post("/v1/collections/handbook/ask", json={"question": question})))
        except BaseException as exc:
            results.append((fact, exc))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 16
    answered = refused = 0
    for fact, r in results:
        assert isinstance(r, httpx.Response), r
        assert r.status_code in (200, 429), r.text
        if r.status_code == 429:
            refused += 1
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["code"] == "busy"
        else:
            answered += 1
            assert fact in r.json()["answer"], r.json()
    # 4 sequences run and 4 wait: at least those 8 are answered.
    assert answered >= 8 and answered + refused == 16
    with service.client() as c:
        assert c.get("/readyz").status_code == 200


def test_openai_client_models_chat_and_embeddings(service: ServiceProcess, handbook: Any) -> None:
    path, question, fact = handbook["md"]
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key=ADMIN_KEY, max_retries=0)

    ids = [m.id for m in client.models.list()]
    assert "rag/handbook" in ids
    base = ids[0]
    assert not base.startswith("rag/")

    reply = client.chat.completions.create(model="rag/handbook", messages=[{"role": "user", "content": question}])
    assert reply.object == "chat.completion"
    assert fact in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    sources = (reply.model_extra or {})["sources"]
    assert sources[0]["filename"] == path.name

    stream = client.chat.completions.create(
        model="rag/handbook",
        messages=[{"role": "user", "content": question}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == reply.choices[0].message.content
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    assert (last.model_extra or {})["sources"][0]["filename"] == path.name
    assert last.usage is not None and last.usage.completion_tokens > 0

    # History: a follow-up turn of a conversation, and the base model without retrieval.
    follow = client.chat.completions.create(
        model="rag/handbook",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": reply.choices[0].message.content or ""},
            {"role": "user", "content": handbook["txt"][1]},
        ],
    )
    alone = client.chat.completions.create(
        model="rag/handbook", messages=[{"role": "user", "content": handbook["txt"][1]}]
    )
    # The earlier turns are in the prompt (the 270M base model may well repeat
    # the earlier answer, so only the plumbing is checked).
    assert follow.usage is not None and alone.usage is not None
    assert follow.usage.prompt_tokens > alone.usage.prompt_tokens
    assert follow.choices[0].message.content
    plain = client.chat.completions.create(
        model=base, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=8
    )
    assert plain.choices[0].message.content is not None
    assert "sources" not in (plain.model_extra or {}) or plain.model_extra["sources"] is None

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="rag/nope", messages=[{"role": "user", "content": "hi"}])

    embedding_model = "all-MiniLM-L6-v2"
    one = client.embeddings.create(model=embedding_model, input="a lighthouse")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384
    many = client.embeddings.create(
        model=embedding_model, input=["a lighthouse", "a greenhouse"], encoding_format="float"
    )
    assert [d.index for d in many.data] == [0, 1]
    assert many.data[0].embedding == pytest.approx(one.data[0].embedding, abs=1e-5)
    assert many.usage.prompt_tokens > 0


def _long_story(client: httpx.Client) -> dict[str, Any]:
    """A streamed chat with the base model that would run to 3000 tokens."""
    base = client.get("/v1/models").json()["data"][0]["id"]
    return {"model": base, "messages": [{"role": "user", "content": "Tell a long story."}], "stream": True,
            "max_tokens": 3000}  # fmt: skip


def test_a_client_that_hangs_up_stops_the_generation(tmp_path: Path) -> None:
    # One sequence slot and no queue: while an answer runs, any other ask gets 429.
    # The chat format makes the base model ramble on to max_tokens.
    env = _env(
        tmp_path / "data",
        RAG_LLM_PROMPT_STYLE="gemma-chat",
        RAG_LLM_PARALLEL="1",
        RAG_LLM_QUEUE_SIZE="0",
        RAG_LLM_N_CTX="4096",
    )
    with running("serve", env, tmp_path / "serve.log") as proc:
        with proc.client() as c:
            body = _long_story(c)
            with c.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                events = _sse(r.iter_lines())  # kept referenced: dropping it closes the stream
                for _ in range(5):
                    next(events)
                busy = c.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2})
                assert busy.status_code == 429  # the first answer still holds the only slot
            # Hung up: the slot comes free long before 3000 tokens could be written.
            hung_up = time.monotonic()

            def free() -> bool:
                r = c.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2})
                return r.status_code == 200

            wait_for(free, timeout=20, interval=0.2, what="the slot to come free")
            assert time.monotonic() - hung_up < 20
        assert "cancelled" in proc.log()


def test_a_crashed_model_process_fails_its_answer_and_the_service_recovers(tmp_path: Path) -> None:
    # The model runs in a child process (RAG_LLM_ISOLATION=process, the default):
    # killing it, as a native crash in llama.cpp would, ends the answer in
    # progress with an error; the API stays up and a new child takes over.
    env = _env(tmp_path / "data", RAG_LLM_PROMPT_STYLE="gemma-chat", RAG_LLM_PARALLEL="1", RAG_LLM_N_CTX="4096")
    with running("serve", env, tmp_path / "serve.log") as proc:
        [child] = child_pids(proc.proc.pid, "rag.generation.child")
        with proc.client() as c:
            body = _long_story(c)
            with c.stream("POST", "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                events = _sse(r.iter_lines())
                for _ in range(3):
                    next(events)
                os.kill(child, signal.SIGKILL)
                rest = [json.loads(d) for _, d in events if d != "[DONE]"]
            assert rest and rest[-1]["error"]["code"] == "backend_error", rest[-3:]
            assert "model process exited" in rest[-1]["error"]["message"]
            assert c.get("/healthz").status_code == 200

            def recovered() -> bool:
                return c.get("/readyz").status_code == 200

            wait_for(recovered, timeout=120, interval=0.2, what="the model process to be started again")
            [again] = child_pids(proc.proc.pid, "rag.generation.child")
            assert again != child
            reply = c.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 4})
            assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] > 0
        assert "exited with code -9" in proc.log()
    # Stopping the service stops its model process too.
    wait_for(lambda: not _running(again), timeout=30, what="the model process to end")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"

"""Answers a reader can check, over HTTP against a real `rag serve`: quoted
evidence with offsets in /ask, its stream and the OpenAI-compatible route,
`rag ask` printing the quote; abstention after generation with a reason; the
prompt style taken from a chat template carried by the GGUF."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docmaker import make_all
from tests.support.chat_model import with_chat_template
from tests.support.service import ServiceProcess, free_port, rag_cli, upload, wait_indexed

pytestmark = pytest.mark.slow

NO_ANSWER = "The documents don't contain an answer to this question."


def _start(root: Path, **extra: str) -> ServiceProcess:
    env = {
        "RAG_DATA_DIR": str(root / "data"),
        "RAG_LLM_N_CTX": "2048",
        "RAG_MAX_TOKENS": "32",
        "RAG_LLM_THREADS": "2",
        "RAG_LLM_PARALLEL": "1",
        **extra,
    }
    proc = ServiceProcess("serve", env, root / "serve.log", port=free_port())
    proc.wait_ready()
    return proc


def _index(proc: ServiceProcess, docs: list[Path]) -> None:
    with proc.client() as c:
        assert c.post("/v1/collections", json={"name": "handbook"}).status_code == 201
        items = upload(c, "handbook", docs).json()["documents"]
        assert all(d["status"] == "indexed" for d in wait_indexed(c, "handbook", [i["id"] for i in items]))


@pytest.fixture(scope="module")
def handbook(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, str]]:
    return make_all(tmp_path_factory.mktemp("docs"))


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory, handbook: Any) -> Iterator[ServiceProcess]:
    proc = _start(tmp_path_factory.mktemp("bundled"))
    try:
        _index(proc, [handbook["txt"][0], handbook["md"][0]])
        yield proc
    finally:
        proc.stop()


def _check_evidence(body: dict[str, Any], sources: list[dict[str, Any]], fact: str) -> None:
    assert body["grounded"] is True and body["reason"] is None
    assert body["supported"] is True
    (ev,) = body["evidence"]
    source = next(s for s in sources if s["rank"] == ev["rank"])
    assert source["text"][ev["start"] : ev["end"]] == ev["quote"]
    assert fact in ev["quote"]


def test_ask_quotes_the_supporting_sentence(bundled: ServiceProcess, handbook: Any) -> None:
    _, question, fact = handbook["txt"]
    with bundled.client() as c:
        body = c.post("/v1/collections/handbook/ask", json={"question": question}).json()
    assert fact in body["answer"]
    assert body["prompt_style"] == "completion"  # the bundled base model
    _check_evidence(body, body["sources"], fact)
    assert 0.0 <= body["unanswerable_probability"] < 1.0


def test_stream_and_openai_route_carry_the_evidence(bundled: ServiceProcess, handbook: Any) -> None:
    _, question, fact = handbook["md"]
    with bundled.client() as c:
        with c.stream("POST", "/v1/collections/handbook/ask", json={"question": question, "stream": True}) as r:
            events = []
            name = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[len("data: ") :])))
        sources = events[0][1]["sources"]
        done = events[-1]
        assert done[0] == "done"
        _check_evidence(done[1], sources, fact)
        chat = c.post(
            "/v1/chat/completions",
            json={"model": "rag/handbook", "messages": [{"role": "user", "content": question}]},
        ).json()
    assert fact in chat["choices"][0]["message"]["content"]
    _check_evidence(chat, chat["sources"], fact)
    assert chat["prompt_style"] == "completion"


def test_rag_ask_prints_the_quote(bundled: ServiceProcess, handbook: Any) -> None:
    _, question, fact = handbook["txt"]
    out = rag_cli("ask", question, "--collection", "handbook", "--url", bundled.url, timeout=300)
    assert out.returncode == 0, out.stderr
    quote_lines = [line for line in out.stdout.splitlines() if line.startswith("supported by [")]
    assert quote_lines and fact in quote_lines[0], out.stdout


def test_chat_template_in_the_gguf_picks_gemma_chat_and_abstention_withholds(
    tmp_path_factory: pytest.TempPathFactory, model_path: Path, handbook: Any
) -> None:
    """A GGUF carrying Gemma's chat template is served with gemma-chat prompts
    (RAG_LLM_PROMPT_STYLE=auto); with RAG_ABSTAIN_THRESHOLD=0 every generated
    answer is withheld: grounded false, a reason, the draft kept apart."""
    root = tmp_path_factory.mktemp("chat")
    chat_model = with_chat_template(model_path, root / "gemma-chat-template.gguf")
    proc = _start(root, RAG_LLM_MODEL=str(chat_model), RAG_ABSTAIN_THRESHOLD="0")
    try:
        _index(proc, [handbook["txt"][0]])
        _, question, _ = handbook["txt"]
        with proc.client() as c:
            body = c.post("/v1/collections/handbook/ask", json={"question": question}).json()
            chat = c.post(
                "/v1/chat/completions",
                json={"model": "gemma-chat-template", "messages": [{"role": "user", "content": "Hello"}]},
            ).json()
    finally:
        proc.stop()
    assert body["prompt_style"] == "gemma-chat"
    assert body["grounded"] is False and body["reason"] and body["answer"] == NO_ANSWER
    assert body["draft"] is not None and body["sources"]
    assert chat["prompt_style"] == "gemma-chat"


def test_rag_eval_reports_abstention_evidence_and_f1_in_one_table(
    bundled: ServiceProcess, handbook: Any, tmp_path: Path
) -> None:
    _, question, fact = handbook["txt"]
    qa = tmp_path / "qa.jsonl"
    rows = [
        {"question": question, "answers": [fact], "document": handbook["txt"][0].name},
        {"question": "Who painted the whiteboard in the inspection room?", "answers": []},
    ]
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = ["eval", str(qa), "--collection", "handbook", "--url", bundled.url, "--generate", "1"]
    out = rag_cli(*base, "--generate-unanswerable", "1", "--json", timeout=600)
    assert out.returncode == 0, out.stderr
    gen = json.loads(out.stdout)["generation"]
    assert gen["sample"] == 1 and gen["unanswerable_sample"] == 1
    assert gen["f1"] is not None and gen["f1"] > 0
    assert gen["evidence_contains_answer"] == 1.0 and gen["supported"] == 1.0
    assert gen["abstained"] == 0.0 and gen["abstention"] in (0.0, 1.0)
    done = rag_cli(*base, timeout=600)
    assert done.returncode == 0, done.stderr
    table = done.stdout
    for row in ("abstention (unanswerable)", "false abstention (answerable)", "evidence contains answer", "F1"):
        assert row in table, table

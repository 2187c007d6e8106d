"""The web page in a real browser (Debian's chromium, headless, driven by
Playwright), against a real `rag serve`; and, on the same service, the request
id followed through the logs and the metrics the flow leaves behind.

chromium comes from `scripts/install --dev` (apt); Playwright only drives it
(``executable_path``), nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.service import ADMIN_KEY, ServiceProcess, running, upload, wait_for, wait_indexed

pytestmark = pytest.mark.slow

REFUNDS = (
    "Returns and refunds\n\n"
    "Customers may return any unused item within 30 days of delivery. "
    "Refunds take 14 days after the return is received at the warehouse.\n"
)
SHIPPING = "Shipping\n\nOrders ship within 2 business days from the Lyon warehouse.\n"


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "chromium is not installed (scripts/install --dev installs it)"
        if os.environ.get("RAG_TEST_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("web")
    env = {
        "RAG_DATA_DIR": str(root / "data"),
        "RAG_LLM_N_CTX": "2048",
        "RAG_MAX_TOKENS": "24",
        "RAG_LOG_FORMAT": "json",
    }
    with running("serve", env, root / "serve.log") as proc:
        yield proc


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


def _drop_files(page: Any, files: dict[str, str]) -> None:
    """Drag-and-drop: a real drop event on the drop zone carrying ``files``."""
    page.locator("#dropzone").evaluate(
        """(zone, files) => {
            const data = new DataTransfer();
            for (const [name, text] of Object.entries(files)) {
                data.items.add(new File([text], name, { type: "text/plain" }));
            }
            for (const type of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
            }
        }""",
        files,
    )


def test_the_page_end_to_end_in_chromium(service: ServiceProcess, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1200, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())  # the delete confirmations
    page.goto(service.url + "/")
    expect(page.get_by_role("heading", name="Welcome")).to_be_visible()
    # API keys are on: the page meets a 401, asks for a key, and sends it from then on.
    expect(page.locator("#key-dialog")).to_be_visible()
    page.get_by_label("Key", exact=True).fill(ADMIN_KEY)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#key-dialog")).to_be_hidden()

    # Create a collection (keyboard: type the name, Enter submits).
    page.get_by_label("New collection").fill("browser")
    page.get_by_label("New collection").press("Enter")
    expect(page.locator("#collection-title")).to_have_text("browser")
    expect(page.get_by_role("link", name="Documents", exact=True)).to_have_attribute("aria-current", "page")

    # Drop two files and one the service refuses; each gets a status line,
    # the two end "indexed", the third "failed" with its reason.
    _drop_files(page, {"refunds.txt": REFUNDS, "shipping.txt": SHIPPING, "notes.xyz": "?"})
    lines = page.locator("#upload-status .upload-line")
    expect(lines).to_have_count(3)
    expect(page.locator('#upload-status .upload-line[data-state="indexed"]')).to_have_count(2, timeout=300_000)
    expect(lines.first).to_contain_text("chunk")
    expect(lines.filter(has_text="notes.xyz")).to_have_attribute("data-state", "failed")
    expect(lines.filter(has_text="notes.xyz")).to_contain_text("unsupported file type")
    expect(page.locator("#documents-table tbody tr")).to_have_count(2)

    # Ask: the answer streams in, with its numbered sources.
    page.get_by_role("link", name="Chat", exact=True).click()
    page.get_by_label("Question").fill("How long do refunds take?")
    page.get_by_label("Question").press("Enter")
    reply = page.locator(".turn .reply").last
    expect(reply.locator(".source-link").first).to_be_visible(timeout=120_000)
    expect(reply.locator(".status")).to_contain_text("tokens", timeout=300_000)
    answer = reply.locator(".answer").inner_text()
    assert answer.strip() and answer != "(no answer)", answer
    page.screenshot(path=str(tmp_path / "chat.png"))

    # A citation opens its passage, the supporting part highlighted. The
    # bundled base model rarely writes [n] inline; the numbered source under
    # the answer is the same citation then.
    inline = reply.locator(".answer .citation")
    citation = inline.first if inline.count() else reply.locator(".source-link").first
    citation.click()
    dialog = page.locator("#passage-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#passage-title")).to_contain_text("refunds.txt")
    expect(page.locator("#passage-text")).to_contain_text("Refunds take 14 days")
    expect(page.locator("#passage-text mark")).not_to_have_count(0)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # Nothing in the documents: the reply says so, with the service's reason.
    page.get_by_label("Question").fill("Zxqv plorth quindle vabbernack?")
    page.get_by_label("Question").press("Enter")
    refusal = page.locator(".turn .reply").last
    expect(refusal.locator(".reason")).to_be_visible(timeout=120_000)
    expect(refusal).to_have_class(re.compile("abstained"))

    # Search: raw hits with scores, in the chosen mode.
    page.get_by_role("link", name="Search", exact=True).click()
    page.locator("#search-query").fill("warehouse refunds")
    page.get_by_label("Mode").select_option("lexical")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#search-meta")).to_contain_text("mode lexical")
    expect(page.locator("#search-results .hit").first).to_contain_text("score")

    # Re-index page: a full run succeeds, a version is served, rollback is offered.
    page.get_by_role("link", name="Re-index & versions", exact=True).click()
    page.get_by_role("button", name="Full re-index").click()
    expect(page.locator("#runs-table tbody tr").first).to_contain_text("succeeded", timeout=300_000)
    expect(page.locator("#versions-table tbody")).to_contain_text("active")
    expect(page.get_by_role("button", name="Roll back to the previous version")).to_be_enabled()

    # Delete a document from its row.
    page.get_by_role("link", name="Documents", exact=True).click()
    page.get_by_role("button", name="Delete shipping.txt").click()
    expect(page.locator("#documents-table tbody tr")).to_have_count(1)
    with service.client() as c:
        assert [d["filename"] for d in c.get("/v1/collections/browser/documents").json()] == ["refunds.txt"]

    # Phone width: one column, nothing wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    for view in ("Documents", "Chat", "Search", "Re-index & versions"):
        page.get_by_role("link", name=view, exact=True).click()
        overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, (view, overflow)
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert errors == []
    page.close()


def test_inline_citations_open_the_quoted_span(service: ServiceProcess, browser: Any) -> None:
    """The bundled base model seldom writes [n]; an instruction-tuned one does.
    Here /ask answers with a recorded stream that cites [2] and quotes a span,
    so the page's handling of inline citations is checked whatever the model."""
    from playwright.sync_api import expect

    passage = "Shipping\nOrders ship within 2 business days from the Lyon warehouse."
    start = passage.index("Orders")
    sources = [
        {"rank": r, "document_id": f"d{r}", "filename": f"{name}.txt", "page": r, "section": None,
         "chunk_index": 0, "text": text, "score": 1.0 / r, "similarity": 0.5, "metadata": {}}
        for r, name, text in ((1, "refunds", REFUNDS), (2, "shipping", passage))
    ]
    done = {"answer": "Within 2 business days [2].", "grounded": True, "reason": None, "supported": True,
            "evidence": [{"rank": 2, "start": start, "end": len(passage), "quote": passage[start:]}],
            "usage": {"completion_tokens": 7}, "timings": {"total_s": 0.5}, "finish_reason": "stop"}
    body = "".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n"
        for name, data in (
            ("sources", {"grounded": True, "sources": sources}),
            ("delta", {"text": "Within 2 business "}),
            ("delta", {"text": "days [2]."}),
            ("done", done),
        )
    )
    with service.client() as c:
        c.post("/v1/collections", json={"name": "cited"})
    page = browser.new_page()
    page.add_init_script(f"sessionStorage.setItem('rag.apiKey', {json.dumps(ADMIN_KEY)})")
    page.route("**/v1/collections/cited/ask", lambda route: route.fulfill(
        status=200, headers={"content-type": "text/event-stream"}, body=body))
    page.goto(service.url + "/#/c/cited/chat")
    page.get_by_label("Question").fill("When do orders ship?")
    page.get_by_label("Question").press("Enter")
    citation = page.locator(".answer .citation")
    expect(citation).to_have_text("[2]")
    expect(citation).to_have_attribute("aria-label", "Source 2: shipping.txt, page 2")
    expect(page.locator(".source-link.cited")).to_have_count(1)
    citation.focus()
    page.keyboard.press("Enter")  # keyboard opens it too
    expect(page.locator("#passage-title")).to_have_text("[2] shipping.txt")
    expect(page.locator("#passage-meta")).to_contain_text("page 2")
    expect(page.locator("#passage-text mark")).to_have_text(passage[start:])
    page.close()


def test_one_request_id_follows_an_upload_to_its_last_chunk(service: ServiceProcess, tmp_path: Path) -> None:
    (tmp_path / "faq.txt").write_text("FAQ\n\n" + "Our support desk answers within one day. " * 120)
    with service.client() as c:
        c.post("/v1/collections", json={"name": "traced"})
        r = c.post(
            "/v1/collections/traced/documents",
            files=[("files", ("faq.txt", (tmp_path / "faq.txt").read_bytes()))],
            headers={"X-Request-ID": "trace-upload-1"},
        )
        assert r.status_code == 202 and r.headers["x-request-id"] == "trace-upload-1"
        doc = r.json()["documents"][0]
        (done,) = wait_indexed(c, "traced", [doc["id"]])
        assert done["status"] == "indexed" and done["chunk_count"] > 1
        generated = c.get("/v1/collections/traced").headers["x-request-id"]
        assert generated and generated != "trace-upload-1"

    def traced() -> list[dict[str, Any]] | None:
        entries = [json.loads(line) for line in service.log_path.read_text().splitlines() if line.startswith("{")]
        mine = [e for e in entries if e.get("request_id") == "trace-upload-1"]
        return mine if any(" indexed: " in e["message"] for e in mine) else None

    mine = wait_for(traced, timeout=30, what="the task's last log line")
    messages = [e["message"] for e in mine]
    assert messages[0].startswith("POST /v1/collections/traced/documents 202")
    assert any(m.startswith(f"indexing document {doc['id']}") for m in messages)
    assert any(m.startswith("parsed faq.txt") for m in messages)
    n = done["chunk_count"]
    assert any(m.startswith("upserted chunks ") and m.endswith(f"-{n - 1} of {n} of {doc['id']}") for m in messages)
    assert f"document {doc['id']} indexed: {n} chunks" in messages
    assert {e["logger"] for e in mine} >= {"rag.http", "ingest.queue", "ingest.pipeline"}


def test_metrics_after_uploads_and_answers(service: ServiceProcess, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    (tmp_path / "refunds.txt").write_text(REFUNDS)
    (tmp_path / "shipping.txt").write_text(SHIPPING)
    with service.client() as c:
        c.post("/v1/collections", json={"name": "measured"})
        docs = upload(c, "measured", [tmp_path / "refunds.txt", tmp_path / "shipping.txt"]).json()["documents"]
        wait_indexed(c, "measured", [d["id"] for d in docs])
        r = c.post("/v1/collections/measured/ask", json={"question": "How long do refunds take?", "max_tokens": 8})
        assert r.status_code == 200
        body = c.get("/metrics")
    assert body.status_code == 200 and body.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body.text)
        for s in f.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("rag_documents_processed_total", outcome="indexed") >= 2
    assert value("rag_chunks_processed_total", outcome="indexed") >= 2
    for stage in ("parse", "chunk", "embed", "upsert"):
        assert value("rag_ingest_stage_seconds_count", stage=stage) >= 2, stage
    assert value("rag_generation_time_to_first_token_seconds_count") >= 1
    assert value("rag_model_queue_wait_seconds_count") >= 1
    assert value("rag_http_request_duration_seconds_count", method="POST", route="/v1/collections/{name}/ask",
                 status="200") >= 1
    assert value("rag_documents", status="indexed") >= 2
    assert value("rag_ingest_queue_depth") == 0
    assert value("rag_model_process_up", instance="0") == 1
    assert ("rag_model_process_restarts_total", (("instance", "0"),)) in samples


"""The web page's files, /metrics and the request id, through the fast tier.
(The page itself runs in a real browser in tests/integration/test_web.py.)"""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.web import STATIC_DIR
from tests.fast.helpers import upload


def _value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def test_the_page_and_every_module_it_imports_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/static/js/main.js">' in page.text
    modules = {"main.js"}
    seen: set[str] = set()
    while modules - seen:
        name = sorted(modules - seen)[0]
        seen.add(name)
        r = client.get(f"/static/js/{name}")
        assert r.status_code == 200, name
        assert "javascript" in r.headers["content-type"], (name, r.headers["content-type"])
        modules |= set(re.findall(r'from "\./([\w-]+\.js)"', r.text))
    assert seen == {p.name for p in (STATIC_DIR / "js").glob("*.js")}
    assert client.get("/static/app.css").headers["content-type"].startswith("text/css")


def test_the_page_loads_nothing_from_elsewhere() -> None:
    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), path


def test_every_form_control_has_a_label() -> None:
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    labelled = set(re.findall(r'<label[^>]*for="([^"]+)"', html))
    for tag, attrs in re.findall(r"<(input|select|textarea)\b([^>]*)>", html):
        found = re.search(r'id="([^"]+)"', attrs)
        assert found, (tag, attrs)
        assert found.group(1) in labelled or "aria-label=" in attrs, found.group(1)


def test_request_ids_and_metrics_of_an_upload_and_an_answer(client: TestClient) -> None:
    before = client.get("/metrics").text
    client.post("/v1/collections", json={"name": "m"})
    r = upload(client, "m", {"a.txt": "Refunds take 14 days.", "b.txt": "Orders ship in 2 days."})
    assert r.status_code == 202
    assert client.get("/v1/collections/m", headers={"X-Request-ID": "abc-1"}).headers["x-request-id"] == "abc-1"
    ask = client.post("/v1/collections/m/ask", json={"question": "How long do refunds take?"})
    assert ask.status_code == 200
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    assert _value(text, "rag_documents", status="indexed") == 2
    assert _value(text, "rag_ingest_queue_depth") == 0
    assert (
        _value(text, "rag_generation_time_to_first_token_seconds_count")
        == _value(before, "rag_generation_time_to_first_token_seconds_count") + 1
    )
    route = {"method": "POST", "route": "/v1/collections/{name}/ask", "status": "200"}
    assert _value(text, "rag_http_request_duration_seconds_count", **route) >= 1
    assert _value(text, "rag_model_requests_running") == 0

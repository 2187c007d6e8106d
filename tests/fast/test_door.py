"""The door, route by route, in process: no key is 401, a missing or lesser
role is 403, and a key for collection A never learns anything of collection B (listings, counts,
models, search, ask, chat, documents, runs, error messages). Then key
management, /docs, authentication off, CORS and the cross-site guard, limits
on the request and stored file names."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.auth import is_open_path
from rag.settings import Settings
from runtime import Runtime
from tests.fast.helpers import upload
from tests.support.service import AUTH_HEADERS

A_TEXT = "# Alpha\n\nThe alpha handbook says refunds take five days.\n"
B_TEXT = "# Bravo\n\nThe bravo secret plan: zebra quartz lighthouse.\n"

# (method, path, JSON body or None, role needed). {c}: the collection; {doc}, {run}, {schedule}: its ids.
ROUTES: list[tuple[str, str, Any, str]] = [
    ("GET", "/v1/collections/{c}", None, "read"),
    ("POST", "/v1/collections/{c}/documents", "upload", "write"),
    ("GET", "/v1/collections/{c}/documents", None, "read"),
    ("GET", "/v1/collections/{c}/documents/{doc}", None, "read"),
    ("POST", "/v1/collections/{c}/search", {"query": "plan"}, "read"),
    ("POST", "/v1/collections/{c}/ask", {"question": "What is the plan?"}, "read"),
    ("POST", "/v1/collections/{c}/ask", {"question": "What is the plan?", "stream": True}, "read"),
    ("POST", "/v1/collections/{c}/evaluations", {"items": [{"question": "plan?", "answers": ["zebra"]}]}, "read"),
    ("GET", "/v1/collections/{c}/source", None, "admin"),
    ("PUT", "/v1/collections/{c}/source", {"folder": "/nowhere"}, "admin"),
    ("DELETE", "/v1/collections/{c}/source", None, "admin"),
    ("POST", "/v1/collections/{c}/schedules", {"cron": "0 3 * * *", "kind": "full"}, "admin"),
    ("GET", "/v1/collections/{c}/schedules", None, "admin"),
    ("GET", "/v1/collections/{c}/schedules/{schedule}", None, "admin"),
    ("PATCH", "/v1/collections/{c}/schedules/{schedule}", {"enabled": False}, "admin"),
    ("DELETE", "/v1/collections/{c}/schedules/{schedule}", None, "admin"),
    ("POST", "/v1/collections/{c}/reindex", {"kind": "full"}, "admin"),
    ("GET", "/v1/collections/{c}/runs", None, "read"),
    ("GET", "/v1/collections/{c}/runs/{run}", None, "read"),
    ("GET", "/v1/collections/{c}/versions", None, "read"),
    ("POST", "/v1/collections/{c}/rollback", None, "admin"),
    ("PUT", "/v1/collections/{c}/golden", "golden", "admin"),
    ("GET", "/v1/collections/{c}/golden", None, "admin"),
    ("DELETE", "/v1/collections/{c}/documents/{doc}", None, "write"),
    ("DELETE", "/v1/collections/{c}", None, "admin"),  # last: the allowed calls run in this order
]
# Routes of no one collection: (method, path, body, needs admin:*).
GLOBAL_ROUTES: list[tuple[str, str, Any, bool]] = [
    ("GET", "/v1/collections", None, False),
    ("POST", "/v1/collections", {"name": "new-one"}, False),
    ("GET", "/v1/models", None, False),
    ("POST", "/v1/chat/completions", {"model": "rag/{c}", "messages": [{"role": "user", "content": "plan?"}]}, False),
    ("POST", "/v1/embeddings", {"model": "hash-256", "input": "x"}, False),
    ("GET", "/v1/keys", None, True),
    ("POST", "/v1/keys", {"name": "k", "scopes": ["read:a"]}, True),
    ("DELETE", "/v1/keys/{key}", None, True),
    ("GET", "/metrics", None, True),
]


def _call(client: TestClient, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    if body == "upload":
        return client.post(path, files=[("files", ("new.txt", b"fresh words"))], headers=headers)
    if body == "golden":
        line = '{"question": "plan?", "answers": ["zebra"], "document": "b.md"}\n'
        return client.put(path, content=line, headers={**headers, "content-type": "application/x-ndjson"})
    return client.request(method, path, json=body, headers=headers)


class World:
    """Collections a and b with a document, a run and a schedule each; keys
    for them; and the admin client."""

    def __init__(self, client: TestClient) -> None:
        self.admin = client
        self.ids: dict[str, dict[str, str]] = {}
        for name, text in (("a", A_TEXT), ("b", B_TEXT)):
            assert client.post("/v1/collections", json={"name": name}).status_code == 201
            doc = upload(client, name, {f"{name}.md": text}).json()["documents"][0]["id"]
            run = client.post(f"/v1/collections/{name}/reindex", json={"kind": "full"}).json()["id"]
            schedule = client.post(
                f"/v1/collections/{name}/schedules", json={"cron": "0 3 * * *", "kind": "full", "enabled": False}
            ).json()["id"]
            self.ids[name] = {"c": name, "doc": doc, "run": run, "schedule": schedule}
        self.keys = {scope: self.key(scope) for scope in ("read:a", "write:a", "admin:a")}

    def key(self, *scopes: str) -> dict[str, str]:
        r = self.admin.post("/v1/keys", json={"name": "test", "scopes": list(scopes)})
        assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {r.json()['key']}"}

    def path(self, template: str, collection: str) -> str:
        return template.format(**self.ids[collection], key="some-key-id")


@pytest.fixture
def world(client: TestClient) -> World:
    return World(client)


def api_routes(routes: list[Any]) -> list[APIRoute]:
    """The app's API routes. FastAPI 0.163 keeps an included router as one
    entry of ``app.routes`` (``_IncludedRouter``, its routes under
    ``original_router``); earlier versions copied them into ``app.routes``."""
    out: list[APIRoute] = []
    for r in routes:
        if isinstance(r, APIRoute):
            out.append(r)
        elif hasattr(r, "original_router"):
            out += api_routes(r.original_router.routes)
    return out


def test_every_route_declares_who_may_call_it(client: TestClient) -> None:
    def roles(dependant: Any) -> list[Any]:
        found = [getattr(dependant.call, "auth_role", None)]
        for sub in dependant.dependencies:
            found += roles(sub)
        return [r for r in found if r is not None]

    unguarded = [
        f"{sorted(r.methods)} {r.path}"
        for r in api_routes(client.app.routes)  # type: ignore[attr-defined]
        if not is_open_path(r.path, docs_open=False) and not roles(r.dependant)
    ]
    assert unguarded == []
    declared = {(m, r.path) for r in api_routes(client.app.routes) for m in r.methods}  # type: ignore[attr-defined]
    assert len(declared) > 30  # the walk reaches the routes
    tested = {(m, p.replace("{c}", "{name}").replace("{doc}", "{document_id}").replace("{run}", "{run_id}")
               .replace("{schedule}", "{schedule_id}").replace("{key}", "{key_id}")) for m, p, _, _ in ROUTES}
    tested |= {(m, p.replace("{key}", "{key_id}")) for m, p, _, _ in GLOBAL_ROUTES}
    missing = {d for d in declared if d not in tested and not is_open_path(d[1], docs_open=False)}
    assert missing == set(), "routes without a test in ROUTES/GLOBAL_ROUTES"


def test_the_door_and_the_shared_dependencies_need_no_thread_hop(client: TestClient) -> None:
    """The dependencies of api.auth and api.deps only read attributes and
    compare scopes: async, so FastAPI runs them on the event loop instead of
    a thread-pool hop each, which a burst of requests waits on in turn."""
    import inspect

    def calls(dependant: Any) -> list[Any]:
        return [dependant.call, *(c for sub in dependant.dependencies for c in calls(sub))]

    ours = {
        c
        for r in api_routes(client.app.routes)  # type: ignore[attr-defined]
        for c in calls(r.dependant)[1:]
        if getattr(c, "__module__", "") in ("api.auth", "api.deps")
    }
    assert {c.__name__ for c in ours} >= {"get_principal", "get_service", "get_runtime", "check", "_any_key"}
    assert {c.__qualname__ for c in ours if not inspect.iscoroutinefunction(c)} == set()


ORDER = ["read", "write", "admin"]


def test_collection_routes_refuse_no_key_a_wrong_key_and_a_lesser_role(world: World) -> None:
    for method, template, body, role in ROUTES:
        path = world.path(template, "a")
        no_key = _call(world.admin, method, path, body, {"Authorization": ""})
        assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "unauthorized", path
        assert no_key.headers["www-authenticate"] == "Bearer"
        assert _call(world.admin, method, path, body, {"Authorization": "Bearer rag-not-a-key"}).status_code == 401
        for held in ORDER[: ORDER.index(role)]:
            r = _call(world.admin, method, path, body, world.keys[f"{held}:a"])
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (method, path, held, r.text)


def test_collection_routes_let_the_role_through(world: World) -> None:
    # In ROUTES' order, which ends with the deletions.
    for method, template, body, role in ROUTES:
        path = world.path(template, "a")
        for held in ORDER[ORDER.index(role) :]:
            if method == "DELETE" and held != role:
                continue  # deleted once is enough
            r = _call(world.admin, method, path, body, world.keys[f"{held}:a"])
            assert r.status_code not in (401, 403), (method, path, held, r.status_code, r.text)
            assert "'b'" not in r.text and "bravo" not in r.text.lower()


def test_a_key_for_a_cannot_tell_b_from_a_collection_that_does_not_exist(world: World) -> None:
    key = world.keys["admin:a"]
    world.ids["zz-missing"] = {**world.ids["b"], "c": "zz-missing"}
    for method, template, body, _ in ROUTES:
        on_b = _call(world.admin, method, world.path(template, "b"), body, key)
        on_missing = _call(world.admin, method, world.path(template, "zz-missing"), body, key)
        assert on_b.status_code == on_missing.status_code == 403, (method, template)
        assert on_b.json()["error"] == {
            "code": "forbidden",
            "message": on_missing.json()["error"]["message"].replace("zz-missing", "b"),
        }
        # B's ids under A's name: not found, nothing of B in the answer.
        if "{doc}" in template or "{run}" in template or "{schedule}" in template:
            crossed = _call(world.admin, method, template.format(**{**world.ids["b"], "c": "a"}), body, key)
            assert crossed.status_code == 404, (method, template, crossed.text)
            assert "bravo" not in crossed.text.lower() and "zebra" not in crossed.text.lower()


def test_listings_models_search_ask_and_chat_show_only_the_keys_collections(world: World) -> None:
    key = world.keys["read:a"]
    c = world.admin
    listed = c.get("/v1/collections", headers=key).json()
    assert [x["name"] for x in listed] == ["a"] and listed[0]["documents"] == 1
    models = [m["id"] for m in c.get("/v1/models", headers=key).json()["data"]]
    assert "rag/a" in models and "rag/b" not in models
    assert {"rag/a", "rag/b"} <= {m["id"] for m in c.get("/v1/models").json()["data"]}  # the admin sees both
    hits = c.post("/v1/collections/a/search", json={"query": "zebra quartz lighthouse plan"}, headers=key).json()
    assert all(h["filename"] == "a.md" for h in hits["results"])
    asked = c.post("/v1/collections/a/ask", json={"question": "zebra quartz lighthouse?"}, headers=key)
    assert asked.status_code == 200 and "zebra" not in asked.text
    chat = {"messages": [{"role": "user", "content": "What is the plan?"}]}
    on_b = c.post("/v1/chat/completions", json={**chat, "model": "rag/b"}, headers=key)
    on_missing = c.post("/v1/chat/completions", json={**chat, "model": "rag/zz"}, headers=key)
    assert on_b.status_code == on_missing.status_code == 403
    assert on_b.json()["error"]["message"] == on_missing.json()["error"]["message"].replace("zz", "b")
    streamed = c.post("/v1/chat/completions", json={**chat, "model": "rag/b", "stream": True}, headers=key)
    assert streamed.status_code == 403 and "zebra" not in streamed.text
    assert c.post("/v1/chat/completions", json={**chat, "model": "rag/a"}, headers=key).status_code == 200
    assert c.get("/metrics", headers=key).status_code == 403  # totals span every collection
    # A key without a scope on b is told the same of b as of a collection that does not exist.
    hidden = c.get("/v1/collections/b", headers=key)
    never_was = c.get("/v1/collections/b-gone", headers=key)
    assert hidden.status_code == never_was.status_code == 403
    assert hidden.json()["error"]["message"] == never_was.json()["error"]["message"].replace("b-gone", "b")


def test_routes_of_no_collection_need_a_key_and_keys_need_admin_of_all(world: World) -> None:
    for method, template, body, admin_only in GLOBAL_ROUTES:
        path = template.format(key="some-key-id")
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            body = {**body, "model": body["model"].format(c="a")}
        assert _call(world.admin, method, path, body, {"Authorization": ""}).status_code == 401, path
        r = _call(world.admin, method, path, body, world.keys["admin:a"])
        if admin_only:
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", path
        elif path == "/v1/collections" and method == "POST":
            assert r.status_code == 403  # admin:a may create only 'a'
        else:
            assert r.status_code not in (401, 403), (path, r.text)


def test_keys_are_created_listed_and_revoked_through_the_api(world: World) -> None:
    c = world.admin
    created = c.post("/v1/keys", json={"name": "bot", "scopes": ["write:a", "read:b"]})
    assert created.status_code == 201
    body = created.json()
    key = {"Authorization": f"Bearer {body['key']}"}
    listed = {k["id"]: k for k in c.get("/v1/keys").json()}
    assert body["id"] in listed and "key" not in listed[body["id"]] and listed[body["id"]]["prefix"] == body["key"][:8]
    assert {x["name"] for x in c.get("/v1/collections", headers=key).json()} == {"a", "b"}
    assert c.post("/v1/keys", json={"name": "bad", "scopes": ["owner:a"]}).status_code == 422
    assert c.delete(f"/v1/keys/{body['id']}").status_code == 204
    assert c.get("/v1/collections", headers=key).status_code == 401
    assert c.delete("/v1/keys/nope").status_code == 404
    # A collection admin may create its own collection name, not others.
    own = world.key("admin:c")
    assert c.post("/v1/collections", json={"name": "c"}, headers=own).status_code == 201
    assert c.post("/v1/collections", json={"name": "d"}, headers=own).status_code == 403


def test_health_is_open_and_says_nothing_about_collections(world: World) -> None:
    for path in ("/healthz", "/readyz"):
        r = world.admin.get(path, headers={"Authorization": ""})
        assert r.status_code == 200 and "rag/" not in r.text and "'a'" not in r.text and '"b"' not in r.text


def test_docs_need_a_key_by_default_and_can_be_opened_or_turned_off(
    app_client: Callable[..., TestClient], fast_settings: Settings
) -> None:
    keyed = app_client()
    assert keyed.get("/docs", headers={"Authorization": ""}).status_code == 401
    assert keyed.get("/openapi.json", headers={"Authorization": ""}).status_code == 401
    assert keyed.get("/openapi.json").status_code == 200
    opened = app_client(settings=fast_settings.model_copy(update={"docs": "open"}))
    assert opened.get("/docs", headers={"Authorization": ""}).status_code == 200
    assert opened.get("/v1/collections", headers={"Authorization": ""}).status_code == 401
    off = app_client(settings=fast_settings.model_copy(update={"docs": "off"}))
    assert off.get("/docs").status_code == 404 and off.get("/openapi.json").status_code == 404


def test_authentication_off_is_explicit_loopback_and_warned(
    app_client: Callable[..., TestClient], fast_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    assert Settings(_env_file=None).auth_enabled  # type: ignore[call-arg]
    off = fast_settings.model_copy(update={"auth_enabled": False, "host": "0.0.0.0"})
    assert off.bind_host == "127.0.0.1"
    assert off.model_copy(update={"auth_off_allow_remote": True}).bind_host == "0.0.0.0"
    assert fast_settings.model_copy(update={"host": "0.0.0.0"}).bind_host == "0.0.0.0"
    with caplog.at_level(logging.WARNING):
        client = app_client(settings=off)
    assert any("authentication is OFF" in r.getMessage() for r in caplog.records)
    assert client.post("/v1/collections", json={"name": "open"}, headers={"Authorization": ""}).status_code == 201
    # A web page elsewhere still cannot post into it.
    refused = upload_from(client, "https://evil.example")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "cross_origin_refused"
    assert client.get("/v1/collections/open/documents").json() == []


def upload_from(client: TestClient, origin: str) -> Any:
    return client.post(
        "/v1/collections/open/documents",
        files=[("files", ("x.txt", b"planted"))],
        headers={"Authorization": "", "Origin": origin, "Sec-Fetch-Site": "cross-site"},
    )


def test_cors_only_for_configured_origins(app_client: Callable[..., TestClient], fast_settings: Settings) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}
    closed = app_client()
    r = closed.get("/v1/collections", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in closed.options("/v1/collections", headers=preflight).headers
    opened = app_client(settings=fast_settings.model_copy(update={"cors_origins": ["https://app.example"]}))
    ok = opened.options("/v1/collections", headers=preflight)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://app.example"
    r = opened.post("/v1/collections", json={"name": "x"}, headers={"Origin": "https://app.example"})
    assert r.status_code == 201 and r.headers["access-control-allow-origin"] == "https://app.example"
    other = opened.post("/v1/collections", json={"name": "y"}, headers={"Origin": "https://evil.example"})
    assert other.status_code == 403


def test_request_size_and_file_count_limits(app_client: Callable[..., TestClient], fast_settings: Settings) -> None:
    client = app_client(
        settings=fast_settings.model_copy(
            update={"max_request_bytes": 64 * 1024, "max_upload_bytes": 32 * 1024, "max_files_per_request": 3}
        )
    )
    client.post("/v1/collections", json={"name": "small"})
    big = client.post("/v1/collections/small/documents", files=[("files", ("big.txt", b"x" * 70_000))])
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    many = client.post(
        "/v1/collections/small/documents", files=[("files", (f"f{i}.txt", b"words here")) for i in range(4)]
    )
    assert many.status_code == 413 and "at most 3" in many.json()["error"]["message"]
    assert client.get("/v1/collections/small/documents").json() == []
    fine = client.post(
        "/v1/collections/small/documents", files=[("files", (f"f{i}.txt", b"words %d" % i)) for i in range(3)]
    )
    assert fine.status_code == 202


def test_a_body_that_is_not_an_upload_has_a_limit_of_its_own(
    app_client: Callable[..., TestClient], fast_settings: Settings
) -> None:
    client = app_client(settings=fast_settings.model_copy(update={"max_request_bytes": 256 * 1024,
                                                                     "max_json_bytes": 64 * 1024}))
    client.post("/v1/collections", json={"name": "small"})
    question = {"model": "fake-model", "messages": [{"role": "user", "content": "x" * 100_000}]}
    big = client.post("/v1/chat/completions", json=question)
    assert big.status_code == 413 and "RAG_MAX_JSON_BYTES" in big.json()["error"]["message"]
    golden = client.put("/v1/collections/small/golden", content=b'{"question": "q"}\n' * 5000)
    assert golden.status_code == 413
    # A file upload of the same size is within its own limit.
    upload = client.post("/v1/collections/small/documents", files=[("files", ("a.txt", b"word " * 20_000))])
    assert upload.status_code == 202, upload.text
    small = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}
    assert client.post("/v1/chat/completions", json=small).status_code == 200


def test_stored_names_are_clean_and_the_original_is_kept_escaped(client: TestClient, runtime: Runtime) -> None:
    client.post("/v1/collections", json={"name": "names"})
    given = "inv\u202eoice\x1b[2Jfdp" + "y" * 600 + ".txt"  # (httpx percent-encodes newlines and tabs)
    r = upload(client, "names", {given: b"hello names"})
    assert r.status_code == 202, r.text
    item = r.json()["documents"][0]
    doc = client.get(f"/v1/collections/names/documents/{item['id']}").json()
    assert doc["filename"] == item["filename"]
    assert doc["filename"].endswith(".txt") and len(doc["filename"]) == 255
    assert doc["filename"].isprintable() and "\u202e" not in doc["filename"]
    assert doc["original_filename"].startswith("inv\\u202eoice\\x1b[2Jfdp")
    plain = upload(client, "names", {"plain.txt": b"plain"}).json()["documents"][0]
    assert client.get(f"/v1/collections/names/documents/{plain['id']}").json()["original_filename"] is None
    assert AUTH_HEADERS  # the tier's default key made all of the above


def test_a_first_start_without_a_bootstrap_key_logs_a_generated_one_once(
    app_client: Callable[..., TestClient], fast_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = fast_settings.model_copy(update={"bootstrap_admin_key": None})
    with caplog.at_level(logging.WARNING):
        client = app_client(settings=settings)
    shown = [r.getMessage() for r in caplog.records if "generated the admin API key" in r.getMessage()]
    assert len(shown) == 1
    key = next(word for word in shown[0].split() if word.startswith("rag-"))
    assert client.get("/v1/keys", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/v1/keys").status_code == 401  # the tier's usual key was never made here
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        app_client(settings=settings)  # the same data directory, started again
    assert not [r for r in caplog.records if "generated the admin API key" in r.getMessage()]

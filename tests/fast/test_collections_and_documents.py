"""Collections and documents over HTTP, in process: every route and its errors."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from rag.settings import Settings
from runtime import Runtime
from tests.fast.helpers import upload

CATS = "# Cats\n\nDomestic cats sleep for around sixteen hours every day.\n"
DOGS = "# Dogs\n\nA dog needs a walk twice a day and likes to chase a ball.\n"


def _error(response: object) -> tuple[int, str]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return response.status_code, body["error"]["code"]  # type: ignore[attr-defined]


def test_collections_are_created_listed_shown_and_deleted(client: TestClient) -> None:
    created = client.post("/v1/collections", json={"name": "handbook"})
    assert created.status_code == 201 and created.json()["name"] == "handbook"
    assert _error(client.post("/v1/collections", json={"name": "handbook"})) == (409, "already_exists")
    assert _error(client.post("/v1/collections", json={"name": "-bad name"})) == (422, "invalid_request")
    assert _error(client.post("/v1/collections", json={"name": "x", "extra": 1})) == (422, "invalid_request")
    assert [c["name"] for c in client.get("/v1/collections").json()] == ["handbook"]
    shown = client.get("/v1/collections/handbook").json()
    assert (shown["documents"], shown["chunks"], shown["points"]) == (0, 0, 0)
    assert _error(client.get("/v1/collections/nope")) == (404, "not_found")
    assert client.delete("/v1/collections/handbook").status_code == 204
    assert _error(client.delete("/v1/collections/handbook")) == (404, "not_found")
    assert client.get("/v1/collections").json() == []


def test_unknown_routes_and_methods_keep_the_error_shape(client: TestClient) -> None:
    assert _error(client.get("/v1/nothing-here")) == (404, "not_found")
    assert _error(client.put("/v1/collections")) == (405, "method_not_allowed")


def test_an_upload_is_indexed_and_counted(client: TestClient, runtime: Runtime) -> None:
    client.post("/v1/collections", json={"name": "pets"})
    response = upload(client, "pets", {"cats.md": CATS, "dogs.txt": DOGS})
    assert response.status_code == 202
    items = response.json()["documents"]
    assert [(i["filename"], i["status"], i["duplicate"]) for i in items] == [
        ("cats.md", "queued", False),
        ("dogs.txt", "queued", False),
    ]
    # Tasks ran in the request: both are indexed now.
    docs = client.get("/v1/collections/pets/documents").json()
    assert {d["filename"]: d["status"] for d in docs} == {"cats.md": "indexed", "dogs.txt": "indexed"}
    one = client.get(f"/v1/collections/pets/documents/{items[0]['id']}").json()
    assert one["chunk_count"] >= 1 and len(one["sha256"]) == 64 and one["indexed_at"]
    info = client.get("/v1/collections/pets").json()
    assert info["documents"] == 2 and info["points"] == info["chunks"] >= 2
    assert info["status_counts"]["indexed"] == 2
    with runtime.registry.unit_of_work() as uow:
        cid = uow.collections.get("pets").id
    assert runtime.store.count(cid) == info["points"]


def test_identical_content_is_one_document(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "pets"})
    first = upload(client, "pets", {"cats.md": CATS}).json()["documents"][0]
    again = upload(client, "pets", {"copy.md": CATS}).json()["documents"][0]
    assert again["duplicate"] is True and again["id"] == first["id"]
    assert len(client.get("/v1/collections/pets/documents").json()) == 1


def test_a_bad_file_fails_alone(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "pets"})
    items = upload(client, "pets", {"cats.md": CATS, "tool.exe": b"MZ\x00", "empty.txt": ""}).json()["documents"]
    by_name = {i["filename"]: i for i in items}
    assert by_name["cats.md"]["status"] == "queued"
    assert by_name["tool.exe"]["status"] == "rejected"
    assert by_name["tool.exe"]["error"]["code"] == "unsupported_file_type"
    assert by_name["empty.txt"]["error"]["code"] == "invalid_request"
    assert [d["filename"] for d in client.get("/v1/collections/pets/documents").json()] == ["cats.md"]


def test_when_every_file_is_refused_the_request_fails(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "pets"})
    assert _error(upload(client, "pets", {"tool.exe": b"MZ"})) == (415, "unsupported_file_type")
    assert _error(upload(client, "pets", {"a.txt": ""})) == (422, "invalid_request")
    assert _error(upload(client, "nope", {"a.txt": "text"})) == (404, "not_found")
    assert _error(client.post("/v1/collections/pets/documents")) == (422, "invalid_request")


def test_too_large_is_413_and_nothing_is_kept(
    app_client: Callable[..., TestClient], fast_settings: Settings
) -> None:
    client = app_client(settings=fast_settings.model_copy(update={"max_upload_bytes": 100}))
    client.post("/v1/collections", json={"name": "pets"})
    assert _error(upload(client, "pets", {"big.txt": "x" * 101})) == (413, "file_too_large")
    assert client.get("/v1/collections/pets/documents").json() == []
    assert not any(p.is_file() for p in fast_settings.blob_dir.rglob("*"))


def test_metadata_is_attached_and_checked(client: TestClient) -> None:
    client.post("/v1/collections", json={"name": "pets"})
    ok = upload(client, "pets", {"cats.md": CATS}, metadata='{"team": "legal", "year": 2026, "tags": ["a", "b"]}')
    doc = client.get(f"/v1/collections/pets/documents/{ok.json()['documents'][0]['id']}").json()
    assert doc["metadata"] == {"team": "legal", "year": 2026, "tags": ["a", "b"]}
    for bad in ("{not json", "[1, 2]", '{"bad key": 1}', '{"k": {"nested": 1}}'):
        assert _error(upload(client, "pets", {"dogs.txt": DOGS}, metadata=bad)) == (422, "invalid_request"), bad


def test_deleting_a_document_removes_its_points_and_original(client: TestClient, runtime: Runtime) -> None:
    client.post("/v1/collections", json={"name": "pets"})
    ids = [i["id"] for i in upload(client, "pets", {"cats.md": CATS, "dogs.txt": DOGS}).json()["documents"]]
    with runtime.registry.unit_of_work() as uow:
        cid = uow.collections.get("pets").id
        cats = uow.documents.get(cid, ids[0])
    assert runtime.store.count(cid, ids[0]) > 0
    assert client.delete(f"/v1/collections/pets/documents/{ids[0]}").status_code == 204
    assert runtime.store.count(cid, ids[0]) == 0 and runtime.store.count(cid, ids[1]) > 0
    assert not runtime.blobs.path(cats.content_hash).exists()
    assert _error(client.get(f"/v1/collections/pets/documents/{ids[0]}")) == (404, "not_found")
    assert _error(client.delete(f"/v1/collections/pets/documents/{ids[0]}")) == (404, "not_found")


def test_deleting_a_collection_removes_everything_in_it(client: TestClient, runtime: Runtime) -> None:
    client.post("/v1/collections", json={"name": "pets"})
    upload(client, "pets", {"cats.md": CATS})
    with runtime.registry.unit_of_work() as uow:
        cid = uow.collections.get("pets").id
    assert client.delete("/v1/collections/pets").status_code == 204
    assert runtime.store.count(cid) == 0
    assert not any(p.is_file() for p in runtime.settings.blob_dir.rglob("*"))

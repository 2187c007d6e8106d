"""The service starts on a data directory whose registry was made by the schema
of commit e4b7f23 (before migrations): start-up migrates it, and every
collection, document, schedule and run is there over HTTP."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from rag.settings import Settings
from tests.support.registry_e4b7f23 import make_old_registry


def test_the_service_starts_on_an_old_data_directory_and_keeps_everything(
    app_client: Callable[..., TestClient], fast_settings: Settings
) -> None:
    fast_settings.data_dir.mkdir(parents=True)
    written = make_old_registry(fast_settings.resolved_database_url)
    client = app_client()
    collections = client.get("/v1/collections").json()
    assert [c["name"] for c in collections] == [r["name"] for r in written["collections"]]
    by_name = {r["id"]: r["name"] for r in written["collections"]}
    for row in written["documents"]:
        doc = client.get(f"/v1/collections/{by_name[row['collection_id']]}/documents/{row['id']}").json()
        assert (doc["filename"], doc["status"], doc["sha256"]) == (row["filename"], row["status"], row["content_hash"])
        assert doc["metadata"] == (row["metadata"] or {})
    schedules = [s for name in by_name.values() for s in client.get(f"/v1/collections/{name}/schedules").json()]
    assert {s["id"] for s in schedules} == {r["id"] for r in written["schedules"]}
    runs = [r for name in by_name.values() for r in client.get(f"/v1/collections/{name}/runs").json()]
    assert {r["id"] for r in runs} == {r["id"] for r in written["reindex_runs"]}
    versions = client.get("/v1/collections/handbook/versions").json()
    assert [(v["version"], v["status"]) for v in versions] == [(1, "previous"), (2, "active")]
    # And it takes new work.
    assert client.post("/v1/collections", json={"name": "after"}).status_code == 201

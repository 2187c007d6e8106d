"""Versions behind the alias, on both engines (Qdrant Edge and the server path)."""

from __future__ import annotations

import pytest

from rag.errors import BackendError
from rag.store import ChunkPoint
from tests.support.stores import StoreFactory


def _point(doc: str, i: int, vector: list[float]) -> ChunkPoint:
    return ChunkPoint(document_id=doc, chunk_index=i, text=f"{doc}-{i}", vector=vector, filename=f"{doc}.txt")


def test_versions_alias_switch_and_rollback(make_store: StoreFactory) -> None:
    store = make_store()
    cid = "0c1d2e3f-aaaa-bbbb-cccc-000000000001"
    store.ensure_collection(cid, 3)  # version 1 behind the alias
    assert store.list_versions(cid) == [1] and store.aliased_version(cid) == 1
    store.upsert(cid, [_point("a", 0, [1, 0, 0])])

    # Version 2 with another vector size is built beside it, unseen by queries.
    store.create_version(cid, 2, 4)
    v2 = store.at_version(cid, 2)
    v2.upsert(cid, [_point("a", 0, [0, 1, 0, 0]), _point("b", 0, [0, 0, 1, 0])])
    assert store.count(cid) == 1 and v2.count(cid) == 2
    assert [h.document_id for h in store.search(cid, 5, dense=[1, 0, 0])] == ["a"]

    store.point_alias(cid, 2)
    assert store.aliased_version(cid) == 2 and store.count(cid) == 2
    assert {h.document_id for h in store.search(cid, 5, dense=[0, 0, 1, 0])} == {"a", "b"}
    with pytest.raises(BackendError):
        store.drop_version(cid, 2)  # the served version is never dropped

    # A deleted document leaves every version.
    store.delete_document_everywhere(cid, "a")
    assert store.at_version(cid, 1).count(cid) == 0 and store.count(cid) == 1

    store.point_alias(cid, 1)  # rollback
    assert store.aliased_version(cid) == 1
    store.drop_version(cid, 2)
    assert store.list_versions(cid) == [1]
    store.drop_collection(cid)
    assert store.list_versions(cid) == [] and store.aliased_version(cid) is None and store.count(cid) == 0


def test_an_unversioned_collection_is_replaced_by_the_alias(make_store: StoreFactory) -> None:
    store = make_store()
    cid = "0c1d2e3f-aaaa-bbbb-cccc-000000000002"
    store.backend.create(store._name(cid), 3)  # as releases before versions named it
    assert store.aliased_version(cid) is None and store.count(cid) == 0
    store.create_version(cid, 1, 3)
    store.at_version(cid, 1).upsert(cid, [_point("a", 0, [1, 0, 0])])
    store.point_alias(cid, 1)
    assert store.aliased_version(cid) == 1 and store.count(cid) == 1


def test_the_served_version_survives_a_restart(make_store: StoreFactory) -> None:
    store = make_store()
    cid = "0c1d2e3f-aaaa-bbbb-cccc-000000000003"
    store.ensure_collection(cid, 3)
    store.create_version(cid, 2, 3)
    store.at_version(cid, 2).upsert(cid, [_point("b", 0, [0, 1, 0])])
    store.point_alias(cid, 2)
    store.close()
    reopened = make_store(reopen=0)
    try:
        assert reopened.aliased_version(cid) == 2 and reopened.list_versions(cid) == [1, 2]
        assert [h.document_id for h in reopened.search(cid, 3, dense=[0, 1, 0])] == ["b"]
    finally:
        reopened.close()

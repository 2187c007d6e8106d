"""Folder bindings of collections and the files a sync has seen in them."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from rag.registry._sql import Repository
from rag.registry.records import FolderFileRecord
from rag.registry.tables import FolderBindingRow, FolderFileRow

__all__ = ["FolderRepository"]


class FolderRepository(Repository):
    def set_binding(self, collection_id: str, path: str | None) -> None:
        row = self._s.get(FolderBindingRow, collection_id)
        if path is None:
            if row is not None:
                self._s.delete(row)
        elif row is None:
            self._s.add(FolderBindingRow(collection_id=collection_id, path=path))
        else:
            row.path = path

    def get_binding(self, collection_id: str) -> str | None:
        row = self._s.get(FolderBindingRow, collection_id)
        return row.path if row else None

    def list_files(self, collection_id: str) -> dict[str, FolderFileRecord]:
        rows = self._s.scalars(select(FolderFileRow).where(FolderFileRow.collection_id == collection_id)).all()
        return {r.relpath: FolderFileRecord(r.relpath, r.document_id, r.content_hash, bool(r.owned)) for r in rows}

    def put_file(
        self, collection_id: str, relpath: str, document_id: str, content_hash: str, *, owned: bool = True
    ) -> None:
        row = self._s.get(FolderFileRow, (collection_id, relpath))
        if row is None:
            self._s.add(
                FolderFileRow(
                    collection_id=collection_id,
                    relpath=relpath,
                    document_id=document_id,
                    content_hash=content_hash,
                    owned=owned,
                )
            )
        else:
            row.document_id = document_id
            row.content_hash = content_hash
            row.owned = owned

    def delete_file(self, collection_id: str, relpath: str) -> None:
        self._s.execute(
            delete(FolderFileRow).where(FolderFileRow.collection_id == collection_id, FolderFileRow.relpath == relpath)
        )

    def count_refs(self, document_id: str) -> int:
        query = select(func.count()).select_from(FolderFileRow).where(FolderFileRow.document_id == document_id)
        return int(self._s.scalar(query) or 0)

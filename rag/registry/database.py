"""The registry's one engine, its units of work, and the schema upgrade at start-up.

A :class:`UnitOfWork` is one transaction with every repository bound to it:
what is done inside one ``with`` block commits together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from rag.errors import BackendError
from rag.registry.collections import CollectionRepository
from rag.registry.documents import DocumentRepository
from rag.registry.folders import FolderRepository
from rag.registry.golden import GoldenRepository
from rag.registry.keys import ApiKeyRepository, key_by_hash
from rag.registry.migrate import upgrade
from rag.registry.records import ApiKeyRecord
from rag.registry.runs import RunRepository
from rag.registry.schedules import ScheduleRepository
from rag.registry.versions import VersionRepository

__all__ = ["Database", "UnitOfWork"]


class UnitOfWork:
    """The repositories, all on one session (one transaction)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.collections = CollectionRepository(session)
        self.documents = DocumentRepository(session)
        self.versions = VersionRepository(session)
        self.folders = FolderRepository(session)
        self.schedules = ScheduleRepository(session)
        self.runs = RunRepository(session)
        self.golden = GoldenRepository(session)
        self.api_keys = ApiKeyRepository(session)


class Database:
    """Opens the engine and brings the schema to the newest revision."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        kwargs: dict[str, Any] = {"pool_pre_ping": not url.startswith("sqlite")}  # a file needs no ping
        if url.startswith("sqlite"):
            # The embedded worker runs in threads of the API process.
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError) as exc:
            raise BackendError(f"cannot open the registry database: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            try:
                upgrade(self.engine)
            except SQLAlchemyError as exc:
                raise BackendError(f"cannot open the registry database: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.unit_of_work() as uow:
            uow.session.execute(select(1))

    def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        """The API key with this hash, read on a pooled connection without a
        session: a third of a unit of work's cost, on every request."""
        try:
            with self.engine.connect() as conn:
                return key_by_hash(conn, key_hash)
        except SQLAlchemyError as exc:
            raise BackendError(f"registry database error: {exc}") from exc

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        """One transaction: committed when the block ends, rolled back if it raises.
        Database errors come out as :class:`BackendError`."""
        session = self._sessions()
        try:
            yield UnitOfWork(session)
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise BackendError(f"registry database error: {exc}") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()

"""The registry of collections, documents and what re-indexing needs: index
versions, folder bindings, cron schedules with their claimed slots, re-index
runs, the per-collection re-index lock and golden questions.

SQLite in the data directory by default, PostgreSQL by setting; the schema is
brought up to date by Alembic at start-up (``migrate.py``). This package is the
only code that talks SQL:

- ``tables``: the ORM tables (the head revision's schema);
- ``records``: the frozen records and typed updates callers get and give;
- one repository per concern (``collections``, ``documents``, ``versions``,
  ``folders``, ``schedules``, ``runs``, ``golden``, ``keys``), each working inside a
  transaction it is handed;
- ``database``: ``Database``, the one engine, and ``unit_of_work()``: one
  transaction over every repository. Callers open one for each step that must
  commit as a whole (one repository call, or several together).
"""

from rag.registry.database import Database, UnitOfWork
from rag.registry.records import (
    OPEN_RUN_STATUSES,
    ApiKeyRecord,
    CollectionRecord,
    DocumentRecord,
    DocumentStatus,
    FolderFileRecord,
    GoldenRecord,
    RunRecord,
    RunStatus,
    RunUpdate,
    ScheduleRecord,
    ScheduleUpdate,
    VersionRecord,
    VersionStatus,
)

__all__ = [
    "OPEN_RUN_STATUSES",
    "ApiKeyRecord",
    "CollectionRecord",
    "Database",
    "DocumentRecord",
    "DocumentStatus",
    "FolderFileRecord",
    "GoldenRecord",
    "RunRecord",
    "RunStatus",
    "RunUpdate",
    "ScheduleRecord",
    "ScheduleUpdate",
    "UnitOfWork",
    "VersionRecord",
    "VersionStatus",
]

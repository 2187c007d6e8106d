"""Fixtures the integration modules share: a client of the module's ``service``
(each module starts its own), and the split mode's PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import require_service
from tests.support.databases import postgres_database
from tests.support.service import ServiceProcess

REDIS_DB = 14


@pytest.fixture
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with service.client() as c:
        yield c


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require_service("PostgreSQL", 5432)
    with postgres_database("rag_test") as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", 6379)
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    return f"redis://127.0.0.1:6379/{REDIS_DB}"

"""API keys: create (the key is in this one response only), list, revoke.
Only a key with the scope ``admin:*`` may manage keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.auth import GlobalAdmin
from rag.auth import KeyAuthority
from rag.errors import ConfigurationError
from rag.registry import ApiKeyRecord

router = APIRouter(prefix="/v1/keys", tags=["keys"])


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    scopes: list[str] = Field(
        min_length=1, max_length=100, description="<read|write|admin>:<collection or *>, e.g. read:handbook"
    )


class KeyPublic(BaseModel):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, r: ApiKeyRecord) -> KeyPublic:
        return cls(
            id=r.id, name=r.name, prefix=r.prefix, scopes=r.scopes, created_at=r.created_at, revoked_at=r.revoked_at
        )


class KeyCreated(KeyPublic):
    key: str = Field(description="The key itself: shown in this response only.")


def _authority(request: Request) -> KeyAuthority:
    authority: Any = getattr(request.app.state, "auth", None)
    if authority is None:
        raise ConfigurationError("authentication is off (RAG_AUTH_ENABLED=false): there are no keys to manage")
    return authority  # type: ignore[no-any-return]


@router.post("", status_code=201, response_model=KeyCreated, dependencies=[GlobalAdmin])
async def create_key(body: KeyCreate, request: Request) -> KeyCreated:
    record, key = await run_in_threadpool(_authority(request).create, body.name, body.scopes)
    return KeyCreated(**KeyPublic.of(record).model_dump(), key=key)


@router.get("", response_model=list[KeyPublic], dependencies=[GlobalAdmin])
async def list_keys(request: Request) -> list[KeyPublic]:
    return [KeyPublic.of(r) for r in await run_in_threadpool(_authority(request).list)]


@router.delete("/{key_id}", status_code=204, dependencies=[GlobalAdmin])
async def revoke_key(key_id: str, request: Request) -> Response:
    await run_in_threadpool(_authority(request).revoke, key_id)
    return Response(status_code=204)

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, File, Form, Response, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.auth import ReadScope, WriteScope
from api.deps import RuntimeDep, ServiceDep
from api.errors import error_body, status_for
from api.schemas import DocumentPublic, UploadItem, UploadResponse
from rag.errors import InvalidRequestError, RequestTooLargeError
from rag.intake import Upload

router = APIRouter(prefix="/v1/collections/{name}/documents", tags=["documents"])


@router.post(
    "",
    status_code=202,
    response_model=UploadResponse,
    responses={413: {}, 415: {}, 422: {}},
    dependencies=[WriteScope],
    summary="Upload one or more files; each is queued for indexing",
)
async def upload_documents(
    name: str,
    service: ServiceDep,
    runtime: RuntimeDep,
    files: list[UploadFile] = File(...),
    metadata: str | None = Form(
        default=None, description="A JSON object attached to every file of this upload; filterable at search."
    ),
) -> JSONResponse:
    limit = runtime.settings.max_files_per_request
    if len(files) > limit:
        raise RequestTooLargeError(f"{len(files)} files in one upload; at most {limit} (RAG_MAX_FILES_PER_REQUEST)")
    uploads = [Upload(f.filename or "", f.content_type, f.file) for f in files]
    results = await run_in_threadpool(service.add_documents, name, uploads, _metadata(metadata))
    # When every file was refused, the request as a whole failed with that reason.
    refused = [r.error for r in results if r.error is not None]
    if refused and len(refused) == len(results):
        first = refused[0]
        return JSONResponse(error_body(first.code, "; ".join(e.message for e in refused)), status_for(first))
    body = UploadResponse(documents=[UploadItem.of(r) for r in results])
    return JSONResponse(body.model_dump(mode="json"), status_code=202)


def _metadata(raw: str | None) -> dict[str, Any] | None:
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidRequestError("metadata must be a JSON object")
    return value


@router.get("", response_model=list[DocumentPublic], dependencies=[ReadScope])
async def list_documents(name: str, service: ServiceDep) -> list[DocumentPublic]:
    return [DocumentPublic.of(d) for d in await run_in_threadpool(service.list_documents, name)]


@router.get("/{document_id}", response_model=DocumentPublic, dependencies=[ReadScope])
async def get_document(name: str, document_id: str, service: ServiceDep) -> DocumentPublic:
    return DocumentPublic.of(await run_in_threadpool(service.get_document, name, document_id))


@router.delete("/{document_id}", status_code=204, dependencies=[WriteScope])
async def delete_document(name: str, document_id: str, service: ServiceDep) -> Response:
    await run_in_threadpool(service.delete_document, name, document_id)
    return Response(status_code=204)

"""A stand-in Qdrant *server* for tests: Qdrant's REST API over qdrant-client's local mode.

Why this exists: split-process tests (the API process plus a separate Celery worker)
need one Qdrant that both processes reach by URL. Local mode (``QdrantClient(path=...)``)
is single-process (it holds an exclusive file lock), and no Qdrant server binary can be
installed where these tests run. So this module serves the subset of Qdrant's REST API
that ``rag.store`` (and the planned hybrid search) uses, and answers every request
with qdrant-client's own local engine, so search semantics are Qdrant's real local
implementation (exact, brute-force search; payload indexes are accepted and ignored).

This is test support only. Production talks to a real Qdrant server (see docker/).

Endpoints (paths, bodies and responses as read from qdrant_client/http/api/*.py):

    GET    /                                      VersionInfo (version check on connect)
    GET    /healthz /livez /readyz                plain text
    GET    /collections                           CollectionsResponse
    GET    /aliases                               CollectionsAliasesResponse
    POST   /collections/aliases                   ChangeAliasesOperation -> bool
    GET    /collections/{name}                    CollectionInfo
    PUT    /collections/{name}                    CreateCollection -> bool
    DELETE /collections/{name}                    bool
    GET    /collections/{name}/exists             CollectionExistence
    GET    /collections/{name}/aliases            CollectionsAliasesResponse
    PUT    /collections/{name}/index              CreateFieldIndex -> UpdateResult
    DELETE /collections/{name}/index/{field}      UpdateResult
    PUT    /collections/{name}/points             PointInsertOperations -> UpdateResult
    POST   /collections/{name}/points             PointRequest -> list[Record]
    POST   /collections/{name}/points/delete      PointsSelector -> UpdateResult
    POST   /collections/{name}/points/count       CountRequest -> CountResult
    POST   /collections/{name}/points/scroll      ScrollRequest -> ScrollResult
    POST   /collections/{name}/points/query       QueryRequest -> QueryResponse
    POST   /collections/{name}/points/query/batch QueryRequestBatch -> list[QueryResponse]

Every answer is ``{"result": ..., "status": "ok", "time": seconds}``; errors are
``{"status": {"error": "..."}, "time": ...}`` with 404 for a missing collection, 400 for
bad input and 500 otherwise, like Qdrant. Query parameters (``wait``, ``timeout``,
``ordering``, ``consistency``) are accepted and ignored: every write is applied before
the response, which is what ``wait=true`` promises.

Run: ``python -m tests.support.qdrant_server --port 6333 [--path DIR]`` (no path: in
memory), or ``with run_qdrant_server(tmp_path) as url: ...`` from a test.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Body, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from qdrant_client import QdrantClient, models
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["create_app", "main", "run_qdrant_server"]

_REPO_ROOT = Path(__file__).resolve().parents[2]
# Reported by GET /: the installed client's own version, so its compatibility check passes.
_VERSION = importlib.metadata.version("qdrant-client")


def _error(status_code: int, message: str, started: float | None = None) -> JSONResponse:
    elapsed = time.perf_counter() - started if started is not None else 0.0
    return JSONResponse({"status": {"error": message}, "time": elapsed}, status_code=status_code)


def _qdrant_error(exc: Exception, started: float) -> JSONResponse:
    """Map local-mode exceptions to the status codes and messages a Qdrant server uses."""
    message = str(exc)
    if isinstance(exc, ValueError):
        if message.startswith("Collection ") and message.endswith(" not found"):
            name = message[len("Collection ") : -len(" not found")]
            return _error(404, f"Not found: Collection `{name}` doesn't exist!", started)
        return _error(400, f"Wrong input: {message}", started)
    return _error(500, f"Service internal error: {type(exc).__name__}: {message}", started)


def create_app(path: str | None = None) -> FastAPI:
    """The ASGI app; ``path`` is the local store's directory (``None``: in memory)."""
    client = QdrantClient(path=path) if path else QdrantClient(location=":memory:")
    lock = threading.Lock()  # local mode is a plain Python object with no lock of its own

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        with lock:
            client.close()  # flushes and releases the store's file lock

    app = FastAPI(title="qdrant test server", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.exception_handler(RequestValidationError)
    async def _bad_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, f"Format error in JSON body: {exc.errors()}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    def run(fn: Callable[[], Any]) -> JSONResponse:
        started = time.perf_counter()
        try:
            with lock:
                result = jsonable_encoder(fn())
        except Exception as exc:
            return _qdrant_error(exc, started)
        return JSONResponse({"result": result, "status": "ok", "time": time.perf_counter() - started})

    # --- service ---------------------------------------------------------------

    @app.get("/")
    def root() -> dict[str, Any]:
        return {"title": "qdrant - vector search engine (test stand-in)", "version": _VERSION, "commit": None}

    @app.get("/healthz", response_class=PlainTextResponse)
    @app.get("/livez", response_class=PlainTextResponse)
    @app.get("/readyz", response_class=PlainTextResponse)
    def health() -> str:
        return "healthz check passed"

    # --- collections and aliases -------------------------------------------------

    @app.get("/collections")
    def get_collections() -> JSONResponse:
        return run(client.get_collections)

    @app.get("/aliases")
    def get_aliases() -> JSONResponse:
        return run(client.get_aliases)

    # Declared before /collections/{name} so "aliases" is never taken for a name.
    @app.post("/collections/aliases")
    def update_aliases(body: models.ChangeAliasesOperation) -> JSONResponse:
        return run(lambda: client.update_collection_aliases(change_aliases_operations=body.actions))

    @app.get("/collections/{name}")
    def get_collection(name: str) -> JSONResponse:
        return run(lambda: client.get_collection(name))

    @app.put("/collections/{name}")
    def create_collection(name: str, body: models.CreateCollection) -> JSONResponse:
        # Storage tuning (HNSW, shards, WAL, quantization, ...) means nothing to local mode.
        return run(
            lambda: client.create_collection(
                name,
                vectors_config=body.vectors,
                sparse_vectors_config=body.sparse_vectors,
                metadata=body.metadata,
            )
        )

    @app.delete("/collections/{name}")
    def delete_collection(name: str) -> JSONResponse:
        return run(lambda: client.delete_collection(name))

    @app.get("/collections/{name}/exists")
    def collection_exists(name: str) -> JSONResponse:
        return run(lambda: models.CollectionExistence(exists=client.collection_exists(name)))

    @app.get("/collections/{name}/aliases")
    def get_collection_aliases(name: str) -> JSONResponse:
        def aliases() -> models.CollectionsAliasesResponse:
            client.get_collection(name)  # 404 for a missing collection, as the server does
            return client.get_collection_aliases(name)

        return run(aliases)

    @app.put("/collections/{name}/index")
    def create_field_index(name: str, body: models.CreateFieldIndex) -> JSONResponse:
        def create() -> models.UpdateResult:
            with warnings.catch_warnings():  # "payload indexes have no effect in local mode"
                warnings.simplefilter("ignore", UserWarning)
                return client.create_payload_index(name, field_name=body.field_name, field_schema=body.field_schema)

        return run(create)

    @app.delete("/collections/{name}/index/{field}")
    def delete_field_index(name: str, field: str) -> JSONResponse:
        return run(lambda: client.delete_payload_index(name, field))

    # --- points ------------------------------------------------------------------

    @app.put("/collections/{name}/points")
    def upsert_points(name: str, body: Annotated[models.PointInsertOperations, Body()]) -> JSONResponse:
        points = body.points if isinstance(body, models.PointsList) else body.batch
        return run(
            lambda: client.upsert(name, points=points, update_filter=body.update_filter, update_mode=body.update_mode)
        )

    @app.post("/collections/{name}/points")
    def get_points(name: str, body: models.PointRequest) -> JSONResponse:
        return run(
            lambda: client.retrieve(
                name,
                ids=body.ids,
                with_payload=True if body.with_payload is None else body.with_payload,
                with_vectors=body.with_vector or False,
            )
        )

    @app.post("/collections/{name}/points/delete")
    def delete_points(name: str, body: Annotated[models.PointsSelector, Body()]) -> JSONResponse:
        return run(lambda: client.delete(name, points_selector=body))

    @app.post("/collections/{name}/points/count")
    def count_points(name: str, body: models.CountRequest) -> JSONResponse:
        return run(lambda: client.count(name, count_filter=body.filter, exact=body.exact is not False))

    @app.post("/collections/{name}/points/scroll")
    def scroll_points(name: str, body: models.ScrollRequest) -> JSONResponse:
        def scroll() -> models.ScrollResult:
            points, next_offset = client.scroll(
                name,
                scroll_filter=body.filter,
                limit=10 if body.limit is None else body.limit,
                order_by=body.order_by,
                offset=body.offset,
                with_payload=True if body.with_payload is None else body.with_payload,
                with_vectors=body.with_vector or False,
            )
            return models.ScrollResult(points=points, next_page_offset=next_offset)

        return run(scroll)

    def query(name: str, request: models.QueryRequest) -> models.QueryResponse:
        return client.query_points(
            name,
            query=request.query,
            using=request.using,
            prefetch=request.prefetch,
            query_filter=request.filter,
            search_params=request.params,
            limit=10 if request.limit is None else request.limit,
            offset=request.offset,
            with_payload=request.with_payload or False,  # REST defaults: no payload, no vectors
            with_vectors=request.with_vector or False,
            score_threshold=request.score_threshold,
            lookup_from=request.lookup_from,
        )

    @app.post("/collections/{name}/points/query")
    def query_points(name: str, body: models.QueryRequest) -> JSONResponse:
        return run(lambda: query(name, body))

    @app.post("/collections/{name}/points/query/batch")
    def query_batch_points(name: str, body: models.QueryRequestBatch) -> JSONResponse:
        return run(lambda: [query(name, request) for request in body.searches])

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Qdrant REST stand-in for tests (local-mode engine).")
    parser.add_argument("--port", type=int, default=6333)
    parser.add_argument("--path", default=None, help="store directory (default: in memory)")
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.path), host="127.0.0.1", port=args.port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def run_qdrant_server(tmp_path: Path, *, startup_timeout: float = 60.0) -> Iterator[str]:
    """Run the stand-in as a subprocess storing in ``tmp_path/qdrant``; yield its URL."""
    port = _free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / f"qdrant-server-{port}.log"
    command = [sys.executable, "-m", "tests.support.qdrant_server", "--port", str(port)]
    command += ["--path", str(tmp_path / "qdrant")]
    pythonpath = [str(_REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=_REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"qdrant test server exited ({proc.returncode}):\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"qdrant test server did not start in {startup_timeout}s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()  # uvicorn shuts down gracefully on SIGTERM, closing the store
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()

"""The ``rag`` command.

``serve``, ``api``, ``worker`` and ``beat`` start the service's processes;
``ingest``, ``ask``, ``eval``, ``reindex`` and ``runs`` are clients of a running
service over HTTP (in the embedded mode the service holds the store, so a second
process can't open it).

Why one module of about 450 lines: one Typer command per function, each an
option list and a few lines that start a process or call the HTTP API; the
logic they run lives in ``runtime/``, ``rag/`` and the API.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["app", "main"]

app = typer.Typer(help="Self-hosted retrieval-augmented generation.", no_args_is_help=True)

UrlOption = Annotated[
    str | None,
    typer.Option("--url", envvar="RAG_URL", help="Base URL of the service [default: from settings]."),
]


def _settings() -> Any:
    from rag.errors import ConfigurationError
    from rag.settings import Settings

    try:
        return Settings()
    except ConfigurationError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc


def _configure_logging(settings: Any) -> None:
    from rag.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)


def _uvicorn_options(settings: Any) -> dict[str, Any]:
    """uvicorn logs through the root logger (our format); the middleware writes the access lines."""
    return {"log_config": None, "access_log": False, "timeout_keep_alive": settings.http_keep_alive_s}


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Run the service: HTTP API with the ingestion worker in the same process
    (embedded mode) or the API alone when a broker URL is set."""
    import uvicorn

    from api.app import create_app

    settings = _settings()
    _configure_logging(settings)
    uvicorn.run(
        create_app(settings, role="api" if settings.is_split_mode else "serve"),
        host=host or settings.bind_host,
        port=port or settings.port,
        **_uvicorn_options(settings),
    )


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Run the HTTP API only (split mode: workers run as `rag worker`)."""
    import uvicorn

    from api.app import create_app

    settings = _settings()
    if not settings.is_split_mode:
        typer.echo(
            "error: `rag api` is for split mode (set RAG_BROKER_URL and RAG_QDRANT_URL); "
            "use `rag serve` for the embedded mode",
            err=True,
        )
        raise typer.Exit(2)
    _configure_logging(settings)
    uvicorn.run(
        create_app(settings, role="api"),
        host=host or settings.bind_host,
        port=port or settings.port,
        **_uvicorn_options(settings),
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(help="Tasks at once (documents, re-index runs). Default: RAG_WORKER_CONCURRENCY."),
    ] = None,
) -> None:
    """Run an ingestion worker (split mode): documents and re-index runs."""
    from runtime import build_runtime

    settings = _settings()
    if not settings.is_split_mode:
        typer.echo("error: `rag worker` needs RAG_BROKER_URL (split mode); `rag serve` runs its own", err=True)
        raise typer.Exit(2)
    _configure_logging(settings)
    runtime = build_runtime(settings, "worker")
    if settings.worker_metrics_port:
        from rag.metrics import start_worker_metrics_server

        start_worker_metrics_server(settings.worker_metrics_port)
    try:
        runtime.run_worker(concurrency or settings.worker_concurrency)
    finally:
        runtime.close()


@app.command()
def beat() -> None:
    """Run Celery beat (split mode): starts the re-index runs of the stored cron
    schedules. Several may run; each slot is claimed once in the registry."""
    from runtime import build_beat

    settings = _settings()
    _configure_logging(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    runtime = build_beat(settings)
    try:
        runtime.run()
    finally:
        runtime.close()


def _client(url: str | None) -> Any:
    """A client of the running service; it sends the key in RAG_API_KEY."""
    import os

    import httpx

    if url is None:
        settings = _settings()
        url = f"http://{settings.host}:{settings.port}"
    key = os.environ.get("RAG_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, timeout=httpx.Timeout(300.0, connect=5.0), headers=headers)


def _fail(response: Any) -> None:
    try:
        err = response.json()["error"]
        message = f"{err['code']}: {err['message']}"
    except (ValueError, KeyError, TypeError):
        message = response.text
    typer.echo(f"error ({response.status_code}): {message}", err=True)
    raise typer.Exit(1)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to upload.", exists=True)],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name.")],
    url: UrlOption = None,
    wait: Annotated[bool, typer.Option(help="Wait until every file is indexed.")] = True,
) -> None:
    """Upload files (folders recursively) into a collection, creating it if needed."""
    import httpx
    from tqdm import tqdm

    files = sorted({f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()})
    if not files:
        typer.echo("nothing to upload", err=True)
        raise typer.Exit(1)
    with _client(url) as client:
        try:
            r = client.post("/v1/collections", json={"name": collection})
        except httpx.ConnectError as exc:
            typer.echo(f"error: cannot reach the service at {client.base_url} ({exc})", err=True)
            raise typer.Exit(1) from exc
        if r.status_code not in (201, 409):
            _fail(r)
        ids: dict[str, str] = {}
        failed = 0
        for path in tqdm(files, desc="upload", unit="file"):
            with path.open("rb") as fh:
                r = client.post(f"/v1/collections/{collection}/documents", files={"files": (path.name, fh)})
            if r.status_code != 202:
                failed += 1
                tqdm.write(f"{path}: {r.json().get('error', {}).get('message', r.text)}")
                continue
            for item in r.json()["documents"]:
                if item["id"]:
                    ids[item["id"]] = item["filename"]
        if not wait:
            typer.echo(f"queued {len(ids)} document(s)")
            return
        done: dict[str, dict[str, Any]] = {}
        with tqdm(total=len(ids), desc="index", unit="doc") as bar:
            while len(done) < len(ids):
                for doc in client.get(f"/v1/collections/{collection}/documents").json():
                    if doc["id"] in ids and doc["id"] not in done and doc["status"] in ("indexed", "failed"):
                        done[doc["id"]] = doc
                        bar.update(1)
                        if doc["status"] == "failed":
                            tqdm.write(f"{doc['filename']}: failed: {doc['error']}")
                time.sleep(0.5)
    indexed = sum(1 for d in done.values() if d["status"] == "indexed")
    chunks = sum(d["chunk_count"] for d in done.values())
    typer.echo(f"{indexed} indexed ({chunks} chunks), {len(done) - indexed + failed} failed")
    if len(done) - indexed + failed:
        raise typer.Exit(1)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name.")],
    url: UrlOption = None,
    top_k: Annotated[int | None, typer.Option(help="Passages to retrieve.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON response.")] = False,
) -> None:
    """Ask a question; prints the answer and its sources."""
    body: dict[str, Any] = {"question": question}
    if top_k:
        body["top_k"] = top_k
    with _client(url) as client:
        r = client.post(f"/v1/collections/{collection}/ask", json=body)
    if r.status_code != 200:
        _fail(r)
    data = r.json()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(data["answer"])
    if not data.get("grounded", True) and data.get("reason"):
        typer.echo(f"(not answered: {data['reason']})")
    for ev in data.get("evidence") or []:
        mark = "supported by" if data.get("supported") else "closest passage text"
        typer.echo(f'{mark} [{ev["rank"]}] chars {ev["start"]}-{ev["end"]}: "{ev["quote"]}"')
    typer.echo("")
    for s in data["sources"]:
        page = f", page {s['page']}" if s["page"] else ""
        typer.echo(f"[{s['rank']}] {s['filename']}{page} (score {s['score']:.3f})")


@app.command(name="eval")
def eval_(
    qa_file: Annotated[Path, typer.Argument(help="QA set, JSON lines: {question, answers: [...], document}.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name.")],
    url: UrlOption = None,
    mode: Annotated[str | None, typer.Option(help="hybrid, dense or lexical [default: the service's].")] = None,
    generate: Annotated[
        int, typer.Option(help="Answerable questions to generate answers for (exact match, F1); 0: none.")
    ] = 5,
    generate_unanswerable: Annotated[
        int, typer.Option(help="Unanswerable questions to generate answers for (abstention); 0: none.")
    ] = 0,
    limit: Annotated[int, typer.Option(help="Use the first N questions only (0: all).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Evaluate a collection on a QA set: answer-recall@1/5/10, MRR, abstention,
    exact match / F1 of generated answers, latency."""
    items: list[dict[str, Any]] = []
    try:
        with qa_file.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    answers = list(row.get("answers") or [])
                    items.append({"question": row["question"], "answers": answers, "document": row.get("document")})
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise ValueError(f"line {number}: {type(exc).__name__}: {exc}") from exc
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {qa_file}: cannot read the QA set ({exc})", err=True)
        raise typer.Exit(2) from exc
    if limit:
        items = items[:limit]
    body: dict[str, Any] = {
        "items": items,
        "generate_sample": generate,
        "generate_unanswerable": generate_unanswerable,
    }
    if mode:
        body["mode"] = mode
    with _client(url) as client:
        client.timeout = httpx_timeout_for(len(items), generate + generate_unanswerable)
        r = client.post(f"/v1/collections/{collection}/evaluations", json=body)
    if r.status_code != 200:
        _fail(r)
    data = r.json()
    if as_json:
        data.pop("table", None)
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(data["table"])


def httpx_timeout_for(questions: int, generated: int) -> Any:
    import httpx

    # About a second per question on a small CPU, plus generation; never below 5 minutes.
    return httpx.Timeout(max(300.0, questions * 1.0 + generated * 30.0), connect=5.0)
@app.command()
def reindex(
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name.")],
    kind: Annotated[str, typer.Option(help="full: rebuild a new version; sync: mirror the bound folder.")] = "full",
    url: UrlOption = None,
    wait: Annotated[bool, typer.Option(help="Wait until the run ends.")] = True,
) -> None:
    """Start a re-index run now."""
    with _client(url) as client:
        r = client.post(f"/v1/collections/{collection}/reindex", json={"kind": kind})
        if r.status_code != 202:
            _fail(r)
        run = r.json()
        while wait and run["status"] in ("queued", "running"):
            time.sleep(1)
            run = client.get(f"/v1/collections/{collection}/runs/{run['id']}").json()
    _print_runs([run])
    if run["status"] in ("failed", "rejected"):
        raise typer.Exit(1)


@app.command()
def runs(
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name.")],
    url: UrlOption = None,
    limit: Annotated[int, typer.Option(help="Most recent runs to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON response.")] = False,
) -> None:
    """List a collection's re-index runs, newest first: counts, timing, outcome."""
    with _client(url) as client:
        r = client.get(f"/v1/collections/{collection}/runs")
    if r.status_code != 200:
        _fail(r)
    items = r.json()[:limit]
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    _print_runs(items)


def _print_runs(items: list[dict[str, Any]]) -> None:
    if not items:
        typer.echo("no runs")
        return
    typer.echo(
        f"{'started':<20} {'kind':<8} {'trigger':<8} {'status':<9} {'added':>5} {'upd':>5} {'del':>5} "
        f"{'same':>5} {'fail':>5} {'secs':>7}  versions  scores / error"
    )
    for run in items:
        c = run["counts"]
        when = (run["started_at"] or run["created_at"])[:19].replace("T", " ")
        secs = f"{run['duration_s']:.1f}" if run["duration_s"] is not None else "-"
        versions = f"{run['from_version'] or '-'}→{run['to_version'] or '-'}"
        scores = run["scores"]
        note = ""
        if scores["current"] is not None or scores["candidate"] is not None:
            note = f"recall@5 {scores['current']}→{scores['candidate']} "
        note += run["error"] or ""
        typer.echo(
            f"{when:<20} {run['kind']:<8} {run['trigger']:<8} {run['status']:<9} {c['added']:>5} {c['updated']:>5} "
            f"{c['deleted']:>5} {c['unchanged']:>5} {c['failed']:>5} {secs:>7}  {versions:<8}  {note}"
        )


keys_app = typer.Typer(
    help="API keys, written to the registry directly (run where the service's settings and data "
    "directory are; the service need not be running). Also: POST/GET/DELETE /v1/keys.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


def _authority() -> Any:
    from rag.auth import KeyAuthority, load_or_create_secret
    from rag.registry import Database

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.auth_enabled:
        typer.echo("note: authentication is off (RAG_AUTH_ENABLED=false); keys take effect when it is on", err=True)
    return KeyAuthority(
        Database(settings.resolved_database_url), load_or_create_secret(settings.auth_secret, settings.data_dir)
    )


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", "-n", help="What the key is for.")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help="<read|write|admin>:<collection or *>; repeat for more.")
    ],
) -> None:
    """Create a key and print it (shown this once; only its HMAC is stored)."""
    from rag.errors import RagError

    try:
        record, key = _authority().create(name, scope)
    except RagError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"id     {record.id}\nscopes {' '.join(record.scopes)}\nkey    {key}")


@keys_app.command("list")
def keys_list() -> None:
    """Every key: id, first characters, scopes, state."""
    for r in _authority().list():
        state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
        typer.echo(f"{r.id:<36}  {r.prefix:<8}  {state:<24}  {r.name}  [{' '.join(r.scopes)}]")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (from `rag keys list`).")]) -> None:
    """Revoke a key: refused from the next request on."""
    from rag.errors import RagError

    try:
        _authority().revoke(key_id)
    except RagError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"revoked {key_id}")


def main() -> None:
    app(prog_name="rag")


if __name__ == "__main__":
    main()

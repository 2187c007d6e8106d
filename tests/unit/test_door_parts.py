"""The door's parts on their own: keys hashed at rest and checked by scope, the
bootstrap key, file names made safe, the cross-site guard, and request bodies
refused with 413 while they stream (a real uvicorn server and a raw socket)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.limits import BodyLimitMiddleware, OriginGuardMiddleware
from rag.auth import BOOTSTRAP_KEY_ID, KeyAuthority, Principal, Role, load_or_create_secret, parse_scopes
from rag.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from rag.filenames import MAX_NAME_CHARS, clean_filename
from rag.registry import Database
from tests.support.service import free_port, read_http_head, wait_for


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Database]:
    r = Database(f"sqlite:///{tmp_path / 'registry.db'}")
    yield r
    r.close()


# --- keys ---------------------------------------------------------------------------
def test_keys_are_stored_as_hmac_only_and_revocation_is_immediate(registry: Database, tmp_path: Path) -> None:
    authority = KeyAuthority(registry, load_or_create_secret(None, tmp_path / "data"))
    record, key = authority.create("reader", ["read:a"])
    assert key.startswith("rag-") and len(key) > 40 and record.prefix == key[:8]
    with registry.engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.execute(text("SELECT * FROM api_keys")) for v in row)
    assert key not in stored and key[8:] not in stored  # only the prefix and the HMAC are kept
    assert authority.authenticate(key).scopes == parse_scopes(["read:a"])
    # The same database with another secret recognises nothing.
    other = KeyAuthority(registry, b"x" * 64)
    with pytest.raises(AuthenticationError):
        other.authenticate(key)
    for bad in (None, "", key + "x", key[:-1]):
        with pytest.raises(AuthenticationError):
            authority.authenticate(bad)
    authority.revoke(record.id)
    with pytest.raises(AuthenticationError):
        authority.authenticate(key)
    with pytest.raises(NotFoundError):
        authority.revoke("no-such-key")


def test_a_checked_key_is_recalled_for_a_while_and_revocation_here_is_immediate(
    registry: Database, tmp_path: Path
) -> None:
    now = [100.0]
    authority = KeyAuthority(registry, load_or_create_secret(None, tmp_path), cache_s=5.0, clock=lambda: now[0])
    record, key = authority.create("reader", ["read:a"])
    other_record, other_key = authority.create("writer", ["write:b"])
    assert authority.recall(key) is None  # never checked: the registry decides
    assert authority.authenticate(key).key_id == record.id
    recalled = authority.recall(key)
    assert recalled is not None and recalled.scopes == parse_scopes(["read:a"])
    for bad in (None, "", key + "x"):
        assert authority.recall(bad) is None
    now[0] += 5.0
    assert authority.recall(key) is None  # too old: asked again
    authority.authenticate(key)
    authority.authenticate(other_key)
    authority.revoke(record.id)  # through this process: forgotten at once
    assert authority.recall(key) is None
    with pytest.raises(AuthenticationError):
        authority.authenticate(key)
    assert authority.recall(other_key) is not None  # the others stay
    # Revoked elsewhere (another API process, `rag keys revoke`): trusted until the time is up.
    elsewhere = KeyAuthority(registry, load_or_create_secret(None, tmp_path))
    elsewhere.revoke(other_record.id)
    assert authority.recall(other_key) is not None
    now[0] += 5.0
    assert authority.recall(other_key) is None
    with pytest.raises(AuthenticationError):
        authority.authenticate(other_key)
    # Off (cache_s 0, the constructor's default): nothing is recalled.
    off = KeyAuthority(registry, load_or_create_secret(None, tmp_path))
    _, third = off.create("third", ["read:c"])
    off.authenticate(third)
    assert off.recall(third) is None


def test_the_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = load_or_create_secret(None, tmp_path)
    assert load_or_create_secret(None, tmp_path) == first and len(first) == 64
    assert (tmp_path / "auth_secret").stat().st_mode & 0o077 == 0
    assert load_or_create_secret("s" * 32, tmp_path) == b"s" * 32
    with pytest.raises(ConfigurationError):
        load_or_create_secret("short", tmp_path)


def test_bootstrap_key_on_the_first_start_only(registry: Database, tmp_path: Path) -> None:
    authority = KeyAuthority(registry, load_or_create_secret(None, tmp_path))
    generated = authority.ensure_bootstrap(None)
    assert generated is not None and authority.authenticate(generated).is_admin
    assert authority.ensure_bootstrap(None) is None  # printed once: a second start makes none
    assert authority.ensure_bootstrap("given-admin-key-0123456789") is None  # nor takes a new one
    assert [k.id for k in authority.list()] == [BOOTSTRAP_KEY_ID]


def test_a_configured_bootstrap_key_and_a_revoked_one_stays_revoked(tmp_path: Path) -> None:
    registry = Database(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        authority = KeyAuthority(registry, load_or_create_secret(None, tmp_path))
        with pytest.raises(ConfigurationError):
            authority.ensure_bootstrap("too-short")
        assert authority.ensure_bootstrap("given-admin-key-0123456789") is None  # given, so not printed
        assert authority.authenticate("given-admin-key-0123456789").is_admin
        assert authority.list()[0].prefix == "(setting)"  # nothing of a chosen key in clear
        authority.revoke(BOOTSTRAP_KEY_ID)
        authority.ensure_bootstrap("given-admin-key-0123456789")  # a restart with the setting still there
        with pytest.raises(AuthenticationError):
            authority.authenticate("given-admin-key-0123456789")
    finally:
        registry.close()


def test_scopes_nest_and_unknown_collections_look_missing() -> None:
    p = Principal(key_id="k", scopes=parse_scopes(["write:a", "read:b", "admin:c"]))
    assert p.can(Role.READ, "a") and p.can(Role.WRITE, "a") and not p.can(Role.ADMIN, "a")
    assert p.can(Role.READ, "b") and not p.can(Role.WRITE, "b")
    assert p.can(Role.ADMIN, "c") and p.can(Role.READ, "c") and not p.is_admin
    with pytest.raises(PermissionDeniedError):
        p.check(Role.ADMIN, "a")
    # No scope on a collection: 403, in words that say nothing of whether it exists.
    with pytest.raises(PermissionDeniedError) as hidden:
        p.check(Role.READ, "secret")
    assert hidden.value.message == "this key has no scope on collection 'secret'"
    with pytest.raises(PermissionDeniedError):
        p.check_admin()
    everything = Principal(key_id="k", scopes=parse_scopes(["admin:*"]))
    assert everything.is_admin and everything.can(Role.ADMIN, "anything")
    for bad in ([], ["read"], ["owner:a"], ["read:bad name"], ["read:"]):
        with pytest.raises(InvalidRequestError):
            parse_scopes(bad)


# --- names ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("report.pdf", "report.pdf"),
        ("a\x00b\nc\r.txt", "ab c .txt"),
        ("\x1b[31mred\x1b[0m.md", "[31mred[0m.md"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # right-to-left override: no longer shows as ...exe.pdf
        ("\u2066isolated\u2069 \u200bzero width.txt", "isolated zero width.txt"),
        ("line\u2028break.txt", "line break.txt"),
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\x\\notes.txt", "notes.txt"),
        ("tab\tand   spaces.txt", "tab and spaces.txt"),
        ("cafe\u0301.txt", "caf\u00e9.txt"),  # NFC
    ],
)
def test_names_lose_control_and_format_characters(given: str, stored: str) -> None:
    clean = clean_filename(given)
    assert clean.name == stored
    assert clean.original is None if stored == given else clean.original is not None
    if clean.original is not None:
        assert clean.original.isprintable() and "\u202e" not in clean.original and "\x1b" not in clean.original


def test_long_names_keep_their_extension_and_the_original_escaped() -> None:
    given = "x" * 1000 + ".docx"
    clean = clean_filename(given)
    assert len(clean.name) == MAX_NAME_CHARS and clean.name.endswith(".docx")
    assert clean.original == given
    assert clean_filename("\u202e" + "y" * 300 + ".txt").original.startswith("\\u202e")  # type: ignore[union-attr]
    for empty in ("", "/", "\x00\x01", "..", "dir/"):
        with pytest.raises(InvalidRequestError):
            clean_filename(empty)


# --- cross-site requests ---------------------------------------------------------------
def _guarded_app(origins: list[str]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/things")
    async def make() -> dict[str, bool]:
        return {"made": True}

    @app.get("/v1/things")
    async def read() -> dict[str, bool]:
        return {"read": True}

    app.add_middleware(OriginGuardMiddleware, allowed_origins=origins)
    return app


def test_a_cross_site_form_post_is_refused_and_same_origin_or_configured_pass() -> None:
    with TestClient(_guarded_app(["https://trusted.example"]), base_url="http://rag.local:8000") as client:
        form = {"files": ("x.txt", b"x")}
        refused = client.post("/v1/things", files=form, headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "cross_origin_refused"
        assert client.post("/v1/things", headers={"Origin": "null"}).status_code == 403
        assert client.post("/v1/things", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert client.post("/v1/things", headers={"Origin": "http://rag.local:8000"}).status_code == 200
        assert client.post("/v1/things", headers={"Origin": "https://trusted.example"}).status_code == 200
        assert client.post("/v1/things").status_code == 200  # curl, SDKs: no Origin
        assert client.get("/v1/things", headers={"Origin": "https://evil.example"}).status_code == 200


# --- body limits while the body streams -------------------------------------------------
LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def limited_server() -> Iterator[tuple[int, list[int]]]:
    """A real uvicorn server with the body limit; the list counts the requests
    that reached the route."""
    reached: list[int] = []
    app = FastAPI()

    @app.post("/upload")
    async def upload(files: list[UploadFile] = File(...)) -> dict[str, int]:
        reached.append(len(files))
        return {"files": len(files)}

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        size = len(await request.body())
        reached.append(size)
        return {"size": size}

    app.add_middleware(BodyLimitMiddleware, max_bytes=LIMIT)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, what="uvicorn to start")
    yield port, reached
    server.should_exit = True
    thread.join(30)


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0.05)[0])


def test_a_declared_content_length_over_the_limit_is_refused_before_any_body(
    limited_server: tuple[int, list[int]],
) -> None:
    port, reached = limited_server
    before = len(reached)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 10737418240\r\n\r\n"
        )  # 10 GiB announced, not one byte sent
        head = read_http_head(sock, 30)
        assert head.startswith(b"HTTP/1.1 413"), head
        assert b"connection: close" in head.lower()
    assert len(reached) == before


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(limited_server: tuple[int, list[int]]) -> None:
    port, reached = limited_server
    before = len(reached)
    chunk = b"a" * 16384
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        # Never finished: the server can only answer by refusing it on the way.
        while not _readable(sock):
            assert sent < 40 * LIMIT, "the server kept reading far past the limit"
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        head = read_http_head(sock, 30)
        assert head.startswith(b"HTTP/1.1 413"), head
        assert sent > LIMIT
    assert len(reached) == before


def test_a_multipart_upload_over_the_limit_streamed_in_chunks_never_reaches_the_route(
    limited_server: tuple[int, list[int]],
) -> None:
    port, reached = limited_server
    before = len(reached)
    part_head = b'--b\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n\r\n'
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(b"%x\r\n%s\r\n" % (len(part_head), part_head))
        started = time.monotonic()
        while not _readable(sock):
            assert time.monotonic() - started < 120
            sock.sendall(b"4000\r\n" + b"z" * 0x4000 + b"\r\n")
        head = read_http_head(sock, 30)
        assert head.startswith(b"HTTP/1.1 413"), head
    assert len(reached) == before


def test_bodies_under_the_limit_pass(limited_server: tuple[int, list[int]]) -> None:
    port, _ = limited_server
    import httpx

    r = httpx.post(f"http://127.0.0.1:{port}/raw", content=b"x" * (LIMIT - 1))
    assert r.status_code == 200 and r.json() == {"size": LIMIT - 1}
    r = httpx.post(f"http://127.0.0.1:{port}/upload", files=[("files", ("a.txt", b"a")), ("files", ("b.txt", b"b"))])
    assert r.status_code == 200 and r.json() == {"files": 2}
    r = httpx.post(f"http://127.0.0.1:{port}/raw", content=b"x" * (LIMIT + 1))
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


# --- rag keys ------------------------------------------------------------------------
def test_rag_keys_create_list_and_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from api.cli import app

    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "--name", "ci bot", "-s", "read:docs", "-s", "write:docs"])
    assert made.exit_code == 0, made.output
    fields = dict(line.split(None, 1) for line in made.output.strip().splitlines())
    assert fields["scopes"] == "read:docs write:docs" and fields["key"].startswith("rag-")
    listed = runner.invoke(app, ["keys", "list"])
    assert fields["id"] in listed.output and "active" in listed.output and fields["key"] not in listed.output
    registry = Database(f"sqlite:///{(tmp_path / 'data' / 'registry.db').resolve()}")
    try:
        authority = KeyAuthority(registry, load_or_create_secret(None, tmp_path / "data"))
        assert authority.authenticate(fields["key"]).can(Role.WRITE, "docs")  # what the service will check
        assert runner.invoke(app, ["keys", "revoke", fields["id"]]).exit_code == 0
        with pytest.raises(AuthenticationError):
            authority.authenticate(fields["key"])
    finally:
        registry.close()
    assert "revoked" in runner.invoke(app, ["keys", "list"]).output
    bad = runner.invoke(app, ["keys", "create", "--name", "x", "-s", "everything"])
    assert bad.exit_code == 1 and "scope" in bad.output


def test_rag_serve_keeps_idle_connections_longer_than_clients_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With uvicorn's 5 s a pooled client connection (aiohttp keeps them 15 s)
    # was reset when its next request met the service closing it.
    import uvicorn
    from typer.testing import CliRunner

    from api.cli import app

    seen: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda _app, **options: seen.append(options))
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    assert runner.invoke(app, ["serve", "--port", "8123"]).exit_code == 0
    monkeypatch.setenv("RAG_HTTP_KEEP_ALIVE_S", "30")
    assert runner.invoke(app, ["serve"]).exit_code == 0
    assert [(o["timeout_keep_alive"], o.get("port")) for o in seen] == [(75, 8123), (30, 8000)]

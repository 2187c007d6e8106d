"""The whole app behind a real uvicorn server (fast-tier parts), spoken to over
a raw socket: the door answers before the body is read. A body announced or
streamed past RAG_MAX_REQUEST_BYTES is 413 while it is still coming; without a
key it is 401 before a byte of it is read."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn

from api.app import create_app
from rag.settings import Settings
from runtime import Parts
from tests.support.service import ADMIN_KEY, free_port, read_http_head, wait_for

LIMIT = 512 * 1024


@pytest.fixture
def port(fast_settings: Settings, parts: Parts) -> Iterator[int]:
    settings = fast_settings.model_copy(update={"max_request_bytes": LIMIT, "max_upload_bytes": LIMIT})
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, parts=parts), host="127.0.0.1", port=free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=60, what="the service to start")
    yield server.config.port
    server.should_exit = True
    thread.join(60)


def _request(port: int, headers: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"POST /v1/collections/c/documents HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
    return sock


def test_a_10_gib_announcement_is_refused_at_once(port: int) -> None:
    auth = f"Authorization: Bearer {ADMIN_KEY}\r\n"
    with _request(port, auth + "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 10737418240\r\n") as s:
        head = read_http_head(s)
    assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower(), head


def test_a_chunked_upload_is_refused_once_it_passes_the_limit(port: int) -> None:
    auth = f"Authorization: Bearer {ADMIN_KEY}\r\n"
    sent = 0
    with _request(port, auth + "Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n") as s:
        part = b'--b\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n\r\n'
        s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        sent = len(part)
        while not select.select([s], [], [], 0.05)[0]:  # the body never ends: only a refusal answers it
            assert sent < 20 * LIMIT, "still reading far past the limit"
            s.sendall(b"4000\r\n" + b"w" * 0x4000 + b"\r\n")
            sent += 0x4000
        head = read_http_head(s)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert sent > LIMIT


def test_without_a_key_the_body_is_never_read(port: int) -> None:
    with _request(port, "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000\r\n") as s:
        head = read_http_head(s)  # nothing of the body was sent
    assert head.startswith(b"HTTP/1.1 401"), head

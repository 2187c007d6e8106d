"""Runs the real service as separate processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "ADMIN_KEY",
    "AUTH_HEADERS",
    "ServiceProcess",
    "child_pids",
    "cli_env",
    "free_port",
    "rag_cli",
    "read_http_head",
    "running",
    "split_env",
    "upload",
    "wait_for",
    "wait_indexed",
]

ROOT = Path(__file__).resolve().parents[2]

# Every service a test starts gets this admin key (RAG_BOOTSTRAP_ADMIN_KEY), and
# every client of it sends it: the one place tests meet authentication.
ADMIN_KEY = "rag-test-admin-key-0123456789abcdef"
AUTH_HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


def cli_env() -> dict[str, str]:
    """The environment of a ``rag`` client command run by a test: the admin key."""
    return {**os.environ, "RAG_API_KEY": ADMIN_KEY}


def rag_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``rag <args>`` as a client command (the test admin key in its environment);
    the caller checks the exit status."""
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def read_http_head(sock: socket.socket, timeout: float = 60) -> bytes:
    """What a raw socket receives up to the end of an HTTP response's headers
    (or until the peer closes)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_pids(pid: int, command_part: str = "") -> list[int]:
    """Processes whose parent is ``pid`` (and whose command line contains
    ``command_part``), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and command_part in cmdline:
            found.append(int(entry.name))
    return found


def wait_for(predicate: Any, *, timeout: float, interval: float = 0.25, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class ServiceProcess:
    """``rag <command>`` in a subprocess, with its output in a log file."""

    def __init__(self, command: str, env: Mapping[str, str], log_path: Path, port: int | None = None):
        self.command = command
        self.port = port
        self.log_path = log_path
        # Only the RAG_* variables the test gives (and the test admin key), and no
        # .env: the process runs in the log's folder, with this checkout first on its import path.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
        path = os.pathsep.join(p for p in (str(ROOT), inherited.get("PYTHONPATH", "")) if p)
        full_env = {
            **inherited,
            "RAG_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            **env,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": path,
        }
        args = [sys.executable, "-m", "api.cli", command]
        if port is not None:
            args += ["--port", str(port)]
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            args, cwd=log_path.parent, env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout: float = 300) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout, headers=AUTH_HEADERS)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def wait_ready(self, timeout: float = 180) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rag {self.command} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(ready, timeout=timeout, interval=0.5, what=f"rag {self.command} to be ready")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log()}") from exc

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode)


def split_env(data_dir: Path, *, broker: str, database: str, qdrant: str, **extra: str) -> dict[str, str]:
    """The settings every process of one split-mode deployment shares."""
    return {
        "RAG_DATA_DIR": str(data_dir),
        "RAG_BROKER_URL": broker,
        "RAG_DATABASE_URL": database,
        "RAG_QDRANT_URL": qdrant,
        **extra,
    }


@contextmanager
def running(
    command: str, env: Mapping[str, str], log_path: Path, *, port: int | None = None, timeout: float = 180
) -> Iterator[ServiceProcess]:
    """``rag <command>`` started, ready (``serve`` and ``api``: on ``port``, else a
    free one) and stopped when the block ends, whatever happens in it."""
    if port is None and command in ("serve", "api"):
        port = free_port()
    proc = ServiceProcess(command, env, log_path, port=port)
    try:
        if port is not None:
            proc.wait_ready(timeout)
        yield proc
    finally:
        proc.stop()


def wait_indexed(client: httpx.Client, collection: str, ids: list[str], timeout: float = 300) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        docs = {d["id"]: d for d in client.get(f"/v1/collections/{collection}/documents").json()}
        if all(docs[i]["status"] in ("indexed", "failed") for i in ids):
            return [docs[i] for i in ids]
        return None

    return wait_for(done, timeout=timeout, interval=0.5, what="documents to be indexed")  # type: ignore[no-any-return]


def upload(
    client: httpx.Client, collection: str, paths: list[Path], headers: Mapping[str, str] | None = None
) -> httpx.Response:
    files = [("files", (p.name, p.read_bytes())) for p in paths]
    return client.post(f"/v1/collections/{collection}/documents", files=files, headers=headers)

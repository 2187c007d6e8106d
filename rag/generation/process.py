"""A model instance in a child process of its own (``RAG_LLM_ISOLATION=process``):
the parent side, ``ModelProcess``; the child runs child.py.

The API process holds torch (the embedder, the re-ranker); the child holds
llama.cpp and never imports torch. Two reasons:

* On the GPU machine a CUDA build of llama.cpp could not share a process with
  torch: loading the model after ``import numpy``/``import torch`` segfaulted,
  importing torch after llama.cpp aborted (``free(): invalid pointer``); both
  bring their own CUDA runtime and cuBLAS under the same sonames
  (docs/results/gpu-import-order.log). The child loads llama.cpp first, in a
  fresh interpreter.
* A native crash inside llama.cpp (a bad GGUF, a driver fault, an out-of-memory
  abort) ends the child, not the service: its requests fail with
  ``BackendError`` (HTTP 503) and the child is started again.

``ModelProcess`` has the interface of ``LlamaModel`` (llama.py) (``submit``,
``generate``, ``tokenize``…), so ``ModelPool`` and the service do not know which
one they hold. The child runs one ``LlamaModel`` (its scheduler thread batches
all requests of this instance, as in-process); the two talk over a socket pair
with pickled messages. The text of one scheduler step, every stream's, is one
item; a sender thread sends whatever items wait in one message, so the
scheduler thread never waits on the socket.

Protocol (tuples; the child always sends lists of them):

==============================================================  ==================================================
parent → child                                                  child → parent
==============================================================  ==================================================
``("submit", id, tokens, params)``                              ``("texts", [(id, piece), …])``: one step's text
``("submit_text", id, text, budget, params)``                   ``("done", id, Generation, token_times)``
``("cancel", id)``                                              ``("error", id, msg)``, ``("too_long", id, n, budget)``
``("call", id, method, arg)``                                   ``("reply", id, value)`` / ``("fail", id, msg)``
``("close",)``                                                  first: ``("ready", info)`` or ``("failed", msg)``
==============================================================  ==================================================
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.errors import BackendError, ConfigurationError
from rag.generation.handle import FutureHandle
from rag.generation.tokens import TokenCache
from rag.generation.types import Generation, GenerationParams, PromptTooLong, TextModel
from rag.logs import current_log_format

if TYPE_CHECKING:
    from rag.prompt import BuiltPrompt, PromptRecipe

__all__ = ["ModelProcess", "RemoteJob", "TokenCache"]

log = logging.getLogger(__name__)

# Loading a large GGUF from a slow disk can take minutes; a child that has not
# answered by then is stuck.
LOAD_TIMEOUT_S = 900.0
# A child that keeps crashing is started again after 1, 2, 4 … at most 60 s.
_RESTART_BACKOFF_MAX_S = 60.0
# Tokenizing is quick; a model process that does not answer in this time hangs.
CALL_TIMEOUT_S = 60.0
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class RemoteJob(FutureHandle):
    """A generation running in the model process; the surface of
    ``GenerationJob`` (job.py) that callers use."""

    def __init__(self, owner: ModelProcess, job_id: int, on_text: Callable[[str], bool] | None) -> None:
        super().__init__()
        self._owner = owner
        self.id = job_id
        self.on_text = on_text

    def cancel(self) -> None:
        if self._cancelled.is_set() or self.future.done():
            return
        self._cancelled.set()
        self._owner._send_quietly(("cancel", self.id))


class ModelProcess(TextModel):
    """One model instance served by a child process; thread-safe.

    ``options`` are ``LlamaModel``'s keyword arguments. The constructor returns
    once the model is loaded, or raises ``ConfigurationError`` with the
    child's reason. If the child dies later, its running requests fail with
    ``BackendError`` and a new child is started in the background; requests
    made meanwhile fail the same way."""

    def __init__(self, path: Path, *, parallel: int = 1, n_ctx: int = 4096, **options: Any) -> None:
        self.path = path
        self.parallel = parallel
        self.n_ctx = n_ctx
        self.n_gpu_layers = 0
        self.info: dict[str, Any] = {}
        self._options = {"n_ctx": n_ctx, "parallel": parallel, **options}
        self._ids = itertools.count(1)
        self._token_cache = TokenCache()
        self._lock = threading.Lock()  # guards the fields below and sending
        self._jobs: dict[int, RemoteJob] = {}
        self._calls: dict[int, concurrent.futures.Future[Any]] = {}
        self._conn: Connection | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._restarts = 0
        self._state = "starting"
        self._start()

    # --- the LlamaModel surface ---------------------------------------------
    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def alive(self) -> bool:
        return self._state == "ready"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def restarts(self) -> int:
        return self._restarts

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._jobs)

    def tokenize(self, text: str) -> list[int]:
        cached = self._token_cache.get(text)
        if cached is not None:
            return cached
        result: list[int] = self._call("tokenize", text)
        self._token_cache.put(text, result)
        return list(result)

    def tokenize_many(self, texts: Sequence[str]) -> list[list[int]]:
        """The texts the cache lacks go to the child in one call."""
        found = {text: self._token_cache.get(text) for text in texts}
        missing = list(dict.fromkeys(text for text, tokens in found.items() if tokens is None))
        if missing:
            answered: list[list[int]] = self._call("tokenize_many", missing)
            for text, tokens in zip(missing, answered, strict=True):
                self._token_cache.put(text, tokens)
                found[text] = tokens
        return [list(found[text] or ()) for text in texts]

    def detokenize(self, tokens: list[int]) -> str:
        result: str = self._call("detokenize", list(tokens))
        return result

    def fit_prompt(self, recipe: PromptRecipe, question: str, passages: Sequence[str], budget: int) -> BuiltPrompt:
        prompt: BuiltPrompt = self._call("fit_prompt", (recipe, question, list(passages), budget))
        return prompt

    def token_text(self, token: int) -> str:
        result: str = self._call("token_text", token)
        return result

    def submit(
        self, tokens: list[int], params: GenerationParams, on_text: Callable[[str], bool] | None = None
    ) -> RemoteJob:
        if not tokens:
            raise ValueError("an empty prompt")
        if len(tokens) + params.max_tokens > self.n_ctx:
            raise ValueError("prompt and max_tokens exceed the context window")
        return self._queue(on_text, "submit", list(tokens), params)

    def submit_text(
        self, text: str, budget: int, params: GenerationParams, on_text: Callable[[str], bool] | None = None
    ) -> RemoteJob:
        """The child tokenizes ``text``; over ``budget`` tokens (or past the
        context window), the job's future fails with ``PromptTooLong``."""
        return self._queue(on_text, "submit_text", text, min(budget, self.n_ctx - params.max_tokens), params)

    def _queue(self, on_text: Callable[[str], bool] | None, *message: Any) -> RemoteJob:
        with self._lock:
            self._check_ready()
            job = RemoteJob(self, next(self._ids), on_text)
            self._jobs[job.id] = job
            try:
                self._send((message[0], job.id, *message[1:]))
            except BackendError:
                del self._jobs[job.id]
                raise
        return job

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._state = "closed"
        self._send_quietly(("close",))
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._conn is not None:
            self._conn.close()
        self._fail_all("the model is closed")

    # --- plumbing -------------------------------------------------------------
    def _check_ready(self) -> None:
        if self._closed:
            raise BackendError("the model is closed")
        if self._state != "ready":
            raise BackendError("the model process is restarting; try again shortly")

    def _call(self, method: str, arg: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            self._check_ready()
            call_id = next(self._ids)
            self._calls[call_id] = future
            try:
                self._send(("call", call_id, method, arg))
            except BackendError:
                del self._calls[call_id]
                raise
        try:
            return future.result(timeout=CALL_TIMEOUT_S)
        except concurrent.futures.TimeoutError as exc:
            with self._lock:
                self._calls.pop(call_id, None)
            raise BackendError(f"the model process did not answer {method} in {CALL_TIMEOUT_S:.0f} s") from exc

    def _send(self, message: tuple[Any, ...]) -> None:
        """Caller holds the lock."""
        assert self._conn is not None
        try:
            self._conn.send(message)
        except OSError as exc:
            raise BackendError(f"the model process is gone: {exc}") from exc

    def _send_quietly(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            if self._conn is None:
                return
            with contextlib.suppress(OSError, ValueError):  # the child is gone; the reader reports it
                self._conn.send(message)

    def _start(self, restart: bool = False) -> None:
        """Start a child and wait for its model; raises ConfigurationError."""
        parent_sock, child_sock = socket.socketpair()
        # The child imports this package from where the parent found it.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rag.generation.child", str(child_sock.fileno()), current_log_format()],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                close_fds=True,
                env=env,
            )
        finally:
            child_sock.close()
        conn = Connection(parent_sock.detach())
        try:
            conn.send(("load", str(self.path), self._options))
            if not conn.poll(LOAD_TIMEOUT_S):
                raise ConfigurationError(f"the model process did not load {self.path} in {LOAD_TIMEOUT_S:.0f} s")
            [first] = conn.recv()
        except (EOFError, OSError) as exc:
            conn.close()
            code = proc.wait()
            raise ConfigurationError(f"the model process for {self.path} exited (code {code}) while loading") from exc
        except BaseException:
            conn.close()
            proc.kill()
            proc.wait()
            raise
        if first[0] != "ready":
            conn.close()
            proc.wait()
            raise ConfigurationError(str(first[1]))
        with self._lock:
            if self._closed:  # closed while this child was starting (a restart)
                conn.close()
                proc.kill()
                proc.wait()
                return
            self.info = dict(first[1])
            self.n_gpu_layers = int(self.info.get("n_gpu_layers", 0))
            self._conn, self._proc = conn, proc
            self._restarts += restart
            self._state = "ready"
        threading.Thread(target=self._read, args=(conn, proc), name=f"model-process-{proc.pid}", daemon=True).start()
        log.info("model process %d ready: %s", proc.pid, self.info)

    def _read(self, conn: Connection, proc: subprocess.Popen[bytes]) -> None:
        try:
            while True:
                for message in conn.recv():
                    try:
                        self._dispatch(message)
                    except Exception as exc:  # this reader must go on: every request waits on it
                        log.exception("model process %d: a %r message failed", proc.pid, message[0])
                        self._fail(message, f"the model process's answer could not be read: {exc}")
        except (EOFError, OSError):
            pass
        code = proc.wait()
        with self._lock:
            if self._closed:
                return
            self._state = "restarting"
            self._conn = None
        conn.close()
        log.error("model process %d exited with code %s; starting it again", proc.pid, code)
        self._fail_all(f"the model process exited (code {code}); it is being restarted")
        self._restart()

    def _restart(self) -> None:
        delay = 1.0
        while not self._closed:
            try:
                self._start(restart=True)
                return
            except ConfigurationError as exc:
                log.error("restarting the model process failed: %s; next try in %.0f s", exc, delay)
                time.sleep(delay)
                delay = min(2 * delay, _RESTART_BACKOFF_MAX_S)

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "texts":
            for job_id, piece in message[1]:
                job = self._jobs.get(job_id)
                if job is not None and job.on_text is not None and not job.cancelled:
                    try:
                        more = job.on_text(piece)
                    except Exception:  # the caller's bug must not stop this reader
                        log.exception("on_text failed; cancelling the generation")
                        more = False
                    if not more:
                        job.cancel()
        elif kind == "done":
            with self._lock:
                job = self._jobs.pop(message[1], None)
            if job is not None:
                job.token_times = message[3]
                generation: Generation = message[2]  # pickled as it is by the child's sender thread
                job.future.set_result(generation)
        elif kind in ("error", "too_long"):
            with self._lock:
                job = self._jobs.pop(message[1], None)
            if job is not None:
                job.future.set_exception(
                    BackendError(message[2]) if kind == "error" else PromptTooLong(message[2], message[3])
                )
        elif kind in ("reply", "fail"):
            with self._lock:
                future = self._calls.pop(message[1], None)
            if future is not None:
                if kind == "reply":
                    future.set_result(message[2])
                else:
                    future.set_exception(BackendError(message[2]))

    def _fail(self, message: tuple[Any, ...], reason: str) -> None:
        """Fails the request or call ``message`` was about, if it named one."""
        key = message[1] if len(message) > 1 and isinstance(message[1], int) else None
        with self._lock:
            job = self._jobs.pop(key, None) if key is not None else None
            call = self._calls.pop(key, None) if key is not None else None
        for future in (job.future if job is not None else None, call):
            if future is not None and not future.done():
                future.set_exception(BackendError(reason))

    def _fail_all(self, reason: str) -> None:
        with self._lock:
            jobs, self._jobs = self._jobs, {}
            calls, self._calls = self._calls, {}
        for job in jobs.values():
            if not job.future.done():
                job.future.set_exception(BackendError(reason))
        for future in calls.values():
            if not future.done():
                future.set_exception(BackendError(reason))

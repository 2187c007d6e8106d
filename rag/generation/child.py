"""The model process itself: ``python -m rag.generation.child FD`` loads one
``LlamaModel`` and answers the parent's messages on the socket FD (the
protocol is in process.py). It loads llama.cpp before anything that could
pull in numpy or torch, and never imports torch."""

from __future__ import annotations

import concurrent.futures
import functools
import gc
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rag.generation.types import Generation, GenerationParams
from rag.logs import configure_logging

__all__ = ["SWITCH_INTERVAL_S", "main"]


def _serve(conn: Connection) -> None:
    """The child's main loop: load the model, then answer messages until the
    parent says close or goes away."""
    _, path, options = conn.recv()
    # Before anything that could pull in numpy or torch: llama.cpp's libraries
    # (and their CUDA runtime) are loaded first.
    from rag.generation.llama import LlamaModel

    try:
        model = LlamaModel(Path(path), **options)
    except Exception as exc:  # reported to the parent, which raises it
        conn.send([("failed", str(exc) or repr(exc))])
        return
    # What is loaded stays: the collector need not walk it again. A full
    # collection walks every tracked object with the GIL held, and the thread
    # that triggers it is whichever allocates (requests being unpickled),
    # while the scheduler waits for the GIL between its llama.cpp calls.
    gc.freeze()
    # A thread that wants the GIL waits a whole switch interval (5 ms by
    # default) before it asks the holder to let go. The scheduler thread takes
    # it back after every llama.cpp call that let go of it, and inside a prompt
    # step llama.cpp calls into Python once per slot for every graph it builds
    # (the batch-greedy sampler): each of those waited behind whichever thread
    # of this process was running Python (requests coming in, text going out).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
    sender = threading.Thread(target=_send_loop, args=(conn, outbox), name="model-sender", daemon=True)
    sender.start()
    outbox.put(
        (
            "ready",
            {
                "pid": os.getpid(),
                "n_gpu_layers": model.n_gpu_layers,
                "n_vocab": model.n_vocab,
                "threads": model.threads,
                "torch_loaded": "torch" in sys.modules,
                "switch_interval_s": sys.getswitchinterval(),
                "sampler": model.sampler,
            },
        )
    )
    texts = _StepTexts(outbox)
    model.on_text_handled(texts.flush)
    jobs: dict[int, Any] = {}
    calls: dict[str, Callable[[Any], Any]] = {
        "tokenize": model.tokenize,
        "tokenize_many": model.tokenize_many,
        "detokenize": model.detokenize,
        "token_text": model.token_text,
        "fit_prompt": lambda arg: model.fit_prompt(*arg),
    }
    # Calls are answered on threads of their own, several at once: a burst of
    # requests each tokenizing its prompt waited here one after the other,
    # behind this loop's other messages (llama.cpp's tokenizer reads the
    # vocabulary only and ctypes lets go of the GIL, as llama-server tokenizes
    # on its HTTP threads while it decodes).
    answering = concurrent.futures.ThreadPoolExecutor(_CALL_THREADS, thread_name_prefix="model-call")
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break  # the parent is gone
            kind = message[0]
            if kind == "submit":
                _, job_id, tokens, params = message
                _submit(model, jobs, outbox, texts, job_id, tokens, params)
            elif kind == "submit_text":
                _, job_id, text, budget, params = message
                _submit_text(model, jobs, outbox, texts, job_id, text, budget, params)
            elif kind == "cancel":
                job = jobs.get(message[1])
                if job is not None:
                    job.cancel()
            elif kind == "call":
                _, call_id, method, arg = message
                answering.submit(_answer, outbox, calls, call_id, method, arg)
            elif kind == "close":
                break
    finally:
        answering.shutdown(wait=True, cancel_futures=True)
        model.close()
        outbox.put(None)
        sender.join(timeout=10)


_CALL_THREADS = 4
SWITCH_INTERVAL_S = 1e-4  # see _serve; bench/graph_build.py --busy --switch-interval


def _answer(
    outbox: queue.SimpleQueue[tuple[Any, ...] | None],
    calls: dict[str, Callable[[Any], Any]],
    call_id: int,
    method: str,
    arg: Any,
) -> None:
    try:
        outbox.put(("reply", call_id, calls[method](arg)))
    except Exception as exc:
        outbox.put(("fail", call_id, f"{method}: {exc}"))


class _StepTexts:
    """The text of one scheduler step, every stream's, goes out as one
    ``("texts", [(id, piece), …])`` item: collected by the jobs' callbacks,
    flushed when the scheduler has handled the step's text (and before a job's
    ``done``, which must not overtake its text)."""

    def __init__(self, outbox: queue.SimpleQueue[tuple[Any, ...] | None]) -> None:
        self._outbox = outbox
        self._lock = threading.Lock()
        self._items: list[tuple[int, str]] = []

    def add(self, job_id: int, piece: str) -> bool:
        with self._lock:
            self._items.append((job_id, piece))
        return True

    def flush(self) -> None:
        with self._lock:
            if self._items:
                self._outbox.put(("texts", self._items))
                self._items = []


def _submit(
    model: Any,
    jobs: dict[int, Any],
    outbox: queue.SimpleQueue[tuple[Any, ...] | None],
    texts: _StepTexts,
    job_id: int,
    tokens: list[int],
    params: GenerationParams,
) -> None:
    try:
        job = model.submit(tokens, params, functools.partial(texts.add, job_id))
    except Exception as exc:
        outbox.put(("error", job_id, str(exc)))
        return
    jobs[job_id] = job

    def done(future: concurrent.futures.Future[Generation]) -> None:
        jobs.pop(job_id, None)
        texts.flush()
        exc = future.exception()
        if exc is not None:
            outbox.put(("error", job_id, str(exc)))
        else:
            # The Generation as it is, pickled by the sender thread: dataclasses.asdict
            # copied it deeply here, on the scheduler's thread (~0.1-0.2 ms a request,
            # 16 of them in a row at the end of a burst).
            outbox.put(("done", job_id, future.result(), job.token_times))

    job.future.add_done_callback(done)


def _submit_text(
    model: Any,
    jobs: dict[int, Any],
    outbox: queue.SimpleQueue[tuple[Any, ...] | None],
    texts: _StepTexts,
    job_id: int,
    text: str,
    budget: int,
    params: GenerationParams,
) -> None:
    """Tokenized here, in order with the other messages (llama.cpp's tokenizer
    lets go of the GIL: the scheduler goes on meanwhile)."""
    try:
        tokens = model.tokenize(text)
    except Exception as exc:
        outbox.put(("error", job_id, f"tokenize: {exc}"))
        return
    if len(tokens) > budget:
        outbox.put(("too_long", job_id, len(tokens), budget))
    else:
        _submit(model, jobs, outbox, texts, job_id, tokens, params)


def _send_loop(conn: Connection, outbox: queue.SimpleQueue[tuple[Any, ...] | None]) -> None:
    """Everything waiting goes out in one message: at 16 streams a step's
    pieces cost one send, not sixteen."""
    while True:
        item = outbox.get()
        batch = []
        while item is not None:
            batch.append(item)
            try:
                item = outbox.get_nowait()
            except queue.Empty:
                break
        if batch:
            try:
                conn.send(batch)
            except (OSError, ValueError):
                return
        if item is None:
            return


def main() -> None:
    # Ctrl-C reaches the whole process group; the parent decides when the
    # child ends (it sends close, or its end of the socket closes).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent's log format (text or JSON lines) comes as the second argument.
    configure_logging("json" if sys.argv[2:3] == ["json"] else "text")
    _serve(Connection(int(sys.argv[1])))


if __name__ == "__main__":
    main()

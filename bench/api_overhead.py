"""The API process's own cost per request, on a CPU machine, without llama.cpp.

The service is served as ``rag serve`` serves it (uvicorn, the app of
``create_app``, authentication on), with the fast tier's fake embedder and
in-memory store and, instead of a model, ``PacedModel``: one scheduler thread
that takes the requests waiting at each step, spends ``--prompt-ms`` per new
prompt (at most four per step, as a 2,048-token step holds four 512-token
prompts) or ``--step-ms`` per decode step (sleeping, so the GIL is free as it
is while llama.cpp runs), and hands each running stream one token a step,
as the real scheduler does; ``--tokenize-ms`` holds each tokenizer call that
long, one at a time, and a prompt sent as text (``submit_text``) is
tokenized so on a thread of the model's, as the model process tokenizes it
on its main loop (the submit times the server reports are when the API
process handed each request over).
So the caller's wall time beyond ``16 × prompt / 4 + 128 × step`` is what
the HTTP path adds: the burst's spread arrival at the scheduler and the
delivery of the text.

``bench/load.py``'s client (the one the GPU runs use) drives each server;
servers of several variants (``--variant NAME:ENV=VALUE,...``, each its own
process) run side by side and their rounds alternate. The server also prints
the scheduler's view of each burst: when the last request of a round
reached it, counted from the first.

Usage::

    python bench/api_overhead.py --streams 16 --rounds 7 \\
        --variant base --variant uvloop:RAG_HTTP_LOOP=uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# bench/ingest.py would shadow the ingest package: the repository root first, bench/ off the path.
# API_OVERHEAD_REPO: serve another checkout's code (before/after in one run).
_HERE = Path(__file__).resolve().parent
_ROOT = os.environ.get("API_OVERHEAD_REPO") or str(_HERE.parent)
sys.path[:] = [_ROOT, *(p for p in sys.path if Path(p or ".").resolve() != _HERE)]

from rag.generation import Generation, GenerationParams, PromptTooLong, TextModel  # noqa: E402
from rag.generation.handle import FutureHandle  # noqa: E402
from rag.generation.process import TokenCache  # noqa: E402

KEY = "bench-admin-key-0123456789abcdef"


class _Job(FutureHandle):
    def __init__(self, tokens: int, params: GenerationParams, on_text: Callable[[str], bool] | None) -> None:
        super().__init__()
        self.prompt_tokens = tokens
        self.params = params
        self.on_text = on_text
        self.submitted = time.perf_counter()
        self.first = 0.0
        self.produced = 0


class PacedModel(TextModel):
    """A model whose steps take the time a GPU's would (module docstring)."""

    def __init__(self, *, step_ms: float, prompt_ms: float, tokenize_ms: float, parallel: int = 64) -> None:
        self.path = Path("paced-model")
        self.n_ctx = 4096
        self.parallel = parallel
        self._step = step_ms / 1000
        self._prompt = prompt_ms / 1000
        self._tokenize_s = tokenize_ms / 1000
        self._tokenizer = threading.Lock()
        self._token_cache = TokenCache()  # as ModelProcess keeps one
        self._inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._texts: queue.SimpleQueue[tuple[_Job, str, int]] = queue.SimpleQueue()
        self.submits: list[float] = []
        threading.Thread(target=self._run, name="paced-scheduler", daemon=True).start()
        threading.Thread(target=self._tokenize_texts, name="paced-tokenizer", daemon=True).start()

    @property
    def name(self) -> str:
        return "paced-model"

    def tokenize(self, text: str) -> list[int]:
        cached = self._token_cache.get(text)
        if cached is not None:
            return cached
        if self._tokenize_s:
            with self._tokenizer:
                time.sleep(self._tokenize_s)
        tokens = [ord(c) for c in text]
        self._token_cache.put(text, tokens)
        return tokens

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(chr(t) for t in tokens)

    def token_text(self, token: int) -> str:
        return chr(token)

    def submit(
        self, tokens: list[int], params: GenerationParams, on_text: Callable[[str], bool] | None = None
    ) -> _Job:
        job = _Job(len(tokens), params, on_text)
        self.submits.append(job.submitted)
        self._inbox.put(job)
        return job

    def submit_text(
        self, text: str, budget: int, params: GenerationParams, on_text: Callable[[str], bool] | None = None
    ) -> _Job:
        """As the model process takes a prompt sent as text: tokenized on the
        model's side, one at a time (``--tokenize-ms`` each), then queued;
        the caller does not wait for it."""
        job = _Job(0, params, on_text)
        self.submits.append(job.submitted)
        self._texts.put((job, text, budget))
        return job

    def _tokenize_texts(self) -> None:
        while True:
            job, text, budget = self._texts.get()
            if self._tokenize_s:
                time.sleep(self._tokenize_s)
            job.prompt_tokens = len(text)  # tokenize(): a character a token
            if job.prompt_tokens > budget:
                job.future.set_exception(PromptTooLong(job.prompt_tokens, budget))
            else:
                self._inbox.put(job)

    def close(self) -> None:
        self._inbox.put(None)

    def _run(self) -> None:
        waiting: list[_Job] = []
        running: list[_Job] = []
        while True:
            if not waiting and not running:
                item = self._inbox.get()
                if item is None:
                    return
                waiting.append(item)
            while True:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    return
                waiting.append(item)
            if waiting:  # prompts first, four to a step
                batch, waiting = waiting[:4], waiting[4:]
                time.sleep(self._prompt * len(batch))
                emit = batch
                running.extend(batch)
            else:
                time.sleep(self._step)
                emit = running
            now = time.perf_counter()
            for job in list(emit):
                job.first = job.first or now
                job.produced += 1
                job.token_times.append(now)
                alive = job.cancelled or job.on_text is None or job.on_text(" w")
                if not alive or job.cancelled or job.produced >= job.params.max_tokens:
                    running.remove(job)
                    job.future.set_result(
                        Generation(
                            text=" w" * job.produced,
                            prompt_tokens=job.prompt_tokens,
                            completion_tokens=job.produced,
                            time_to_first_token_s=job.first - job.submitted,
                            total_s=now - job.submitted,
                            finish_reason="length" if alive and not job.cancelled else "cancelled",
                        )
                    )


def serve(args: argparse.Namespace) -> None:
    """The server process: the app with the paced model, until SIGTERM; then
    the scheduler's submit times go to ``--submits``."""
    import uvicorn

    from api.app import create_app
    from rag.settings import Settings
    from rag.store import VectorStore
    from rag.store.server import ServerBackend
    from runtime import Parts
    from tests.support.fakes import HashEmbedder

    if os.environ.get("SWITCH_MS"):  # experiments: the GIL's switch interval
        sys.setswitchinterval(float(os.environ["SWITCH_MS"]) / 1000)
    model = PacedModel(step_ms=args.step_ms, prompt_ms=args.prompt_ms, tokenize_ms=args.tokenize_ms)
    data = Path(tempfile.mkdtemp(prefix="api-overhead-"))
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=data,
        bootstrap_admin_key=KEY,
        embedded_worker=False,
        parse_isolation="inline",
        llm_n_ctx=4096,
        max_tokens=256,
        llm_parallel=64,
        llm_queue_size=64,
        llm_prompt_style="gemma-chat",
    )
    parts = Parts(store=VectorStore(backend=ServerBackend.local(None)), embedder=HashEmbedder(), models=[model],
                  inline_tasks=True)
    app = create_app(settings, parts=parts)  # type: ignore[arg-type]
    stages: list[tuple[str, float]] = []
    if args.trace:
        app = _traced(app, stages)

    profiler = None
    if os.environ.get("PROFILE"):  # the event loop's thread under cProfile, written at the end (pstats)
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()

    def dump(*_: Any) -> None:
        Path(args.submits).write_text(json.dumps({"submits": model.submits, "stages": stages}))
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.environ["PROFILE"])
        os._exit(0)

    signal.signal(signal.SIGTERM, dump)
    options: dict[str, Any] = {"log_config": None, "access_log": False}
    if args.loop:
        options["loop"] = args.loop
    if args.http:
        options["http"] = args.http
    uvicorn.run(app, host="127.0.0.1", port=args.port, **options)


def _traced(app: Any, stages: list[tuple[str, float]]) -> Any:
    """When each request reached each stage (``--trace``): the server's
    front door, authentication, the route, the prompt built."""
    from api.auth import AuthMiddleware
    from rag.answering import Answering
    from rag.auth import KeyAuthority

    def stamp(name: str) -> None:
        stages.append((name, time.perf_counter()))

    def wrap(cls: Any, attr: str, before: str, after: str) -> None:
        inner = getattr(cls, attr)

        def traced(*a: Any, **k: Any) -> Any:
            stamp(before)
            try:
                return inner(*a, **k)
            finally:
                stamp(after)

        setattr(cls, attr, traced)

    wrap(KeyAuthority, "authenticate", "auth_start", "auth_end")
    wrap(Answering, "_build_prompt", "prompt_start", "prompt_end")
    auth_call = AuthMiddleware.__call__

    async def auth_entry(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/completions"):
            stamp("auth_mw")
        await auth_call(self, scope, receive, send)

    AuthMiddleware.__call__ = auth_entry  # type: ignore[method-assign]
    from api.routes import openai as routes

    endpoint = routes.chat_completions

    async def handler(*a: Any, **k: Any) -> Any:
        stamp("handler")
        return await endpoint(*a, **k)

    for r in app.router.routes:
        if getattr(r, "path", "") == "/v1/chat/completions":
            r.dependant.call = handler

    async def front(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/completions"):
            stamp("asgi")
        await app(scope, receive, send)

    return front


def _cpu_s(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(port: int, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited ({proc.returncode})")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server on port {port} did not start")


def bursts(submits: list[float], rounds: list[dict[str, Any]]) -> list[float]:
    """For each round, when its last request reached the scheduler, counted from the round's start."""
    out = []
    for r in rounds:
        mine = [t for t in submits if r["started"] <= t <= r["started"] + r["wall_s"]]
        out.append(max(mine) - r["started"] if mine else float("nan"))
    return out


async def drive(
    args: argparse.Namespace, servers: list[tuple[str, int, str]], streams: list[int]
) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Each server's rounds, alternating, through one client per server (its
    connections kept from the warm-up round on, as bench/load.py keeps them)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("load", _HERE / "load.py")
    assert spec is not None and spec.loader is not None
    load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load)

    results: dict[str, dict[int, list[dict[str, Any]]]] = {n: {s: [] for s in streams} for n, *_ in servers}
    clients = {}
    for name, port, client_kind in servers:
        largs = argparse.Namespace(
            url=f"http://127.0.0.1:{port}", kind=args.kind, model="paced-model", collection="bench",
            label=name, max_tokens=args.max_tokens, ignore_eos=True, temperature=None, top_p=None,
            prompt_words=args.prompt_words, timeout=120.0, api_key=KEY, client=client_kind,
        )
        clients[name] = (largs, load.make_client(largs, max(streams)))
    try:
        for s in streams:
            for r in range(-1, args.rounds):  # round -1: warm-up
                order = servers if r % 2 == 0 else servers[::-1]
                for name, *_ in order:
                    largs, client = clients[name]
                    one = await load.one_round(client, largs, s, salt=f"{name}-{s}-{r}")
                    if r >= 0:
                        results[name][s].append(one)
    finally:
        for _, client in clients.values():
            await client.__aexit__(None, None, None)
    return results


def stage_table(stages: list[list[Any]], rounds: list[dict[str, Any]]) -> dict[str, tuple[float, float, float]]:
    """Per stage: the median over rounds of when its first, median and last
    request got there, from the round's start."""
    out: dict[str, list[tuple[float, float, float]]] = {}
    for r in rounds:
        mine: dict[str, list[float]] = {}
        for stage, t in stages:
            if r["started"] <= t <= r["started"] + r["wall_s"]:
                mine.setdefault(stage, []).append(t - r["started"])
        for stage, ts in mine.items():
            ts.sort()
            out.setdefault(stage, []).append((ts[0], ts[len(ts) // 2], ts[-1]))
    order = ["asgi", "auth_mw", "auth_start", "auth_end", "handler", "prompt_start", "prompt_end"]
    return {k: tuple(statistics.median(x[i] for x in out[k]) for i in range(3))  # type: ignore[misc]
            for k in sorted(out, key=lambda k: order.index(k) if k in order else 99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=8700)
    ap.add_argument("--submits", default="")
    ap.add_argument("--trace", action="store_true", help="the server records when requests reach each stage")
    ap.add_argument("--loop", default="")
    ap.add_argument("--http", default="")
    ap.add_argument("--step-ms", type=float, default=3.0)
    ap.add_argument("--prompt-ms", type=float, default=8.0)
    ap.add_argument("--tokenize-ms", type=float, default=1.0)
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME[:VAR=VALUE,...]: a server with these environment variables (or --loop/--http "
                         "through SERVER_LOOP/SERVER_HTTP; API_OVERHEAD_REPO=DIR: that checkout's code; "
                         "CLIENT=aiohttp: that client for this one)")
    ap.add_argument("--streams", default="16")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--kind", default="chat")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-words", type=int, default=390)
    ap.add_argument("--client", default="httpx", help="bench/load.py --client")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.serve:
        serve(args)
        return

    variants = args.variant or ["base"]
    procs: list[tuple[str, int, subprocess.Popen[bytes], str]] = []
    clients: dict[str, str] = {}
    tmp = Path(tempfile.mkdtemp(prefix="api-overhead-run-"))
    for i, spec in enumerate(variants):
        name, _, env_text = spec.partition(":")
        env = dict(os.environ)
        for pair in filter(None, env_text.split(",")):
            k, _, v = pair.partition("=")
            env[k] = v
        port = args.port + i
        if env.get("CLIENT"):
            clients[name] = env["CLIENT"]
        submits = str(tmp / f"{name}.json")
        cmd = [sys.executable, __file__, "--serve", "--port", str(port), "--submits", submits,
               "--step-ms", str(args.step_ms), "--prompt-ms", str(args.prompt_ms),
               "--tokenize-ms", str(args.tokenize_ms)]
        if env.get("SERVER_LOOP"):
            cmd += ["--loop", env["SERVER_LOOP"]]
        if env.get("SERVER_HTTP"):
            cmd += ["--http", env["SERVER_HTTP"]]
        if env.get("TRACE"):
            cmd += ["--trace"]
        procs.append((name, port, subprocess.Popen(cmd, env=env), submits))
    report: dict[str, Any] = {"args": vars(args) | {"json": str(args.json)}, "variants": {}}
    try:
        for _, port, proc, _ in procs:
            _wait_ready(port, proc)
        streams = [int(s) for s in args.streams.split(",")]
        servers = [(n, p, clients.get(n, args.client)) for n, p, *_ in procs]
        cpu0 = {name: _cpu_s(proc.pid) for name, _, proc, _ in procs}
        results = asyncio.run(drive(args, servers, streams))
        requests = (args.rounds + 1) * sum(streams)  # with the warm-up round
        for name, _, proc, _ in procs:
            cpu = _cpu_s(proc.pid) - cpu0[name]
            report.setdefault("server_cpu_ms_per_request", {})[name] = cpu / requests * 1000
            print(f"{name:<14} server CPU {cpu:.2f} s for {requests} requests: "
                  f"{cpu / requests * 1000:.3f} ms a request (every thread of its process)", flush=True)
    finally:
        for _, _, proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for _, _, proc, _ in procs:
            proc.wait(timeout=30)
    ideal = {s: (-(-s // 4) * 4 * args.prompt_ms + (args.max_tokens - 1) * args.step_ms) / 1000 for s in streams}
    for name, _, _, submits_path in procs:
        dumped = json.loads(Path(submits_path).read_text()) if Path(submits_path).exists() else {}
        submits, stages = dumped.get("submits", []), dumped.get("stages", [])
        report["variants"][name] = {}
        for s in streams:
            rounds = results[name][s]
            arrived = bursts(submits, rounds)
            keys = ["wall_s", "ttft_p50_s", "gap_p50_s", "server_before_gen_p50_s", "outside_server_p50_s"]
            med = {k: statistics.median(x[k] for x in rounds) for k in keys if k in rounds[0]}
            med["last_arrival_s"] = statistics.median(arrived)
            report["variants"][name][s] = {"median": med, "rounds": rounds, "last_arrival_s": arrived}
            if stages:
                report["variants"][name][s]["stages"] = stage_table(stages, rounds)
                for stage, (first, p50, last) in report["variants"][name][s]["stages"].items():
                    print(f"    {stage:<13} first {first * 1000:6.1f}  p50 {p50 * 1000:6.1f}  "
                          f"last {last * 1000:6.1f} ms")
            print(f"{name:<14} S={s:<3} wall {med['wall_s'] * 1000:7.1f} ms (ideal {ideal[s] * 1000:.0f}; "
                  f"{min(x['wall_s'] for x in rounds) * 1000:.0f}-{max(x['wall_s'] for x in rounds) * 1000:.0f})  "
                  f"last arrival {med['last_arrival_s'] * 1000:6.1f} ms  ttft p50 {med['ttft_p50_s'] * 1000:6.1f}  "
                  f"before gen p50 {med.get('server_before_gen_p50_s', float('nan')) * 1000:6.1f}  "
                  f"outside p50 {med.get('outside_server_p50_s', float('nan')) * 1000:6.1f}  "
                  f"gap p50 {med['gap_p50_s'] * 1000:.2f} ms", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

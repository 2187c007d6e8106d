"""A streaming load client for the service's HTTP endpoints and llama-server,
measured at the caller.

For each stream count S it sends S streaming requests at once, each with a
prompt of its own (salted, so that no prompt cache helps), and records, here:
the wall time from sending the first request to the last byte of the last
response, each stream's time to first text, and the gaps between the text
chunks of a stream. Every round is new prompts; a warm-up round per S first.
The same client talks to:

- ``chat``: ``POST /v1/chat/completions`` (the service with the base model: no
  retrieval; or llama-server, which speaks the same API);
- ``ask``: ``POST /v1/collections/{name}/ask`` with ``"stream": true`` (the
  service: retrieval, then generation).

``--ignore-eos`` asks each stream for exactly ``--max-tokens`` tokens
(llama-server's request field of that name; the service accepts it too).

``--versus URL`` measures a second service beside the first, with the same
client, their rounds alternating and taking turns going first
(``--versus-label``, ``--versus-json``): a before/after where the machine's
drift within a run falls on both alike.

``--versus-kind`` and ``--versus-prompt-words`` give the second one a kind
and prompt length of its own: ``/ask`` and chat of the same length, on the
same service, round by round.

``--reference CMD`` takes its turn in the same rotation: a shell command
(``{streams}`` replaced by S) that does the same work without the service and
prints ``T TOKENS`` on its last line, its wall time in seconds and the tokens
(prompt + generated) of each of its S sequences; bench/device/batched_t.sh
runs llama-batched-bench so. Each round of a service then gets
``ratio_to_reference``: its tokens per second against the reference's in the
same round, measured next to it; a GPU's speed drifts by up to 20% within a
few minutes (docs/benchmarks.md, session 11), more than a service's overhead.

``--prime`` precedes every measured round of a service with one request of
the same shape, not timed, as batched_t.sh's llama-batched-bench runs one
sequence right before its S: a service whose process sat idle while the
others used the GPU ran its next burst's prompt phase up to 30% slower
(docs/benchmarks.md, session 15).

Usage::

    python bench/load.py --url http://127.0.0.1:8000 --kind chat --model gemma-3-270m-q4_k_m \\
        --streams 1,4,16 --rounds 5 --ignore-eos --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

FILLER = (
    "The handbook describes the daily routine of the operations team. Staff are expected to read it "
    "before their first shift and to keep it at hand during inspections. Every procedure below was "
    "reviewed by the operations board last spring, and the vault access code is ZEBRA-4471. "
)


def prompt_text(words: int, salt: str) -> str:
    filler = FILLER.split()
    body = " ".join(itertools.islice(itertools.cycle(filler), words))
    return f"{salt} {body}\nWhat is the vault access code?"


def request_body(args: argparse.Namespace, text: str) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"max_tokens": args.max_tokens, "stream": True}
    if args.ignore_eos:
        body["ignore_eos"] = True
    if args.temperature is not None:
        body["temperature"] = args.temperature
    if args.top_p is not None:
        body["top_p"] = args.top_p
    if args.kind == "chat":
        body.update(model=args.model, messages=[{"role": "user", "content": text}],
                    stream_options={"include_usage": True})
        return "/v1/chat/completions", body
    body.update(question=text)
    return f"/v1/collections/{args.collection}/ask", body


class _Events:
    """The SSE lines of one response, read as they come: arrival times of text,
    and the usage and timings at the end."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.arrivals: list[float] = []
        self.usage: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}
        self.event = ""

    def line(self, line: str) -> bool:
        """False after ``[DONE]``."""
        if line.startswith("event:"):
            self.event = line[6:].strip()
            return True
        if not line.startswith("data:"):
            return True
        data = line[5:].strip()
        if data == "[DONE]":
            return False
        obj = json.loads(data)
        if self.kind == "chat":
            choices = obj.get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                self.arrivals.append(time.perf_counter())
            if obj.get("usage"):
                self.usage = obj["usage"]
            if obj.get("timings"):
                self.timings = obj["timings"]
        elif self.event == "delta" and obj.get("text"):
            self.arrivals.append(time.perf_counter())
        elif self.event == "done":
            self.usage = obj.get("usage", {})
            self.timings = obj.get("timings", {})
        return True


async def one_stream(client: Any, args: argparse.Namespace, text: str, started: float) -> dict[str, Any]:
    url, body = request_body(args, text)
    events = _Events(args.kind)
    if isinstance(client, httpx.AsyncClient):
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {(await response.aread())[:300]!r}")
            async for line in response.aiter_lines():
                if not events.line(line):
                    break
    else:  # aiohttp.ClientSession
        async with client.post(url, json=body) as response:
            if response.status != 200:
                raise RuntimeError(f"{url}: {response.status} {(await response.read())[:300]!r}")
            async for raw in response.content:
                if not events.line(raw.decode().rstrip("\r\n")):
                    break
    return {"arrivals": events.arrivals, "ended": time.perf_counter(), "usage": events.usage, "started": started,
            "timings": events.timings}


def server_split(streams: list[dict[str, Any]]) -> dict[str, float]:
    """Where a round's time went by the service's own timings (the last chunk's
    or the done event's ``timings``; llama-server sends none): ``before_gen``,
    from the handler's start to the model's scheduler taking the request
    (retrieval, prompt building and its tokenizer calls, the hand-over to the
    model process); ``outside``, the rest of the caller's time for the
    stream (connection, request parsing, the last bytes' delivery)."""
    before, outside = [], []
    parts: dict[str, list[float]] = {}
    for x in streams:
        t = x["timings"]
        if "total_s" in t and "generation_s" in t:
            before.append(t["total_s"] - t["generation_s"])
            outside.append((x["ended"] - x["started"]) - t["total_s"])
            for key in _BEFORE_GEN_PARTS:
                if isinstance(t.get(key), (int, float)):
                    parts.setdefault(key, []).append(float(t[key]))
    if not before:
        return {}
    return {"server_before_gen_p50_s": _pct(before, 0.5), "server_before_gen_max_s": max(before),
            "outside_server_p50_s": _pct(outside, 0.5),
            **{f"server_{key}_p50": _pct(values, 0.5) for key, values in parts.items()}}


# The service's timings of the way to the model (/ask: the search, its parts, fitting the prompt, the queue).
_BEFORE_GEN_PARTS = ("retrieval_s", "search_s", "embed_s", "store_s", "rerank_s", "prompt_s", "queue_s")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one_round(client: Any, args: argparse.Namespace, s: int, salt: str) -> dict[str, float]:
    texts = [prompt_text(args.prompt_words, f"{salt}-{i}") for i in range(s)]
    started = time.perf_counter()
    streams = await asyncio.gather(*(one_stream(client, args, t, started) for t in texts))
    wall = max(x["ended"] for x in streams) - started
    ttft = [x["arrivals"][0] - started for x in streams if x["arrivals"]]
    gaps = [b - a for x in streams for a, b in itertools.pairwise(x["arrivals"])]
    prompt_tokens = sum(int(x["usage"].get("prompt_tokens", 0)) for x in streams)
    completion_tokens = sum(int(x["usage"].get("completion_tokens", 0)) for x in streams)
    chunks = sum(len(x["arrivals"]) for x in streams)
    return {
        "wall_s": wall,
        "tokens_per_s": (prompt_tokens + completion_tokens) / wall,
        "completion_tokens_per_s": completion_tokens / wall,
        "prompt_tokens": prompt_tokens / s, "completion_tokens": completion_tokens / s, "chunks": chunks / s,
        "ttft_p50_s": _pct(ttft, 0.5), "ttft_max_s": max(ttft, default=float("nan")),
        "gap_p50_s": _pct(gaps, 0.5), "gap_p95_s": _pct(gaps, 0.95), "gap_max_s": max(gaps, default=float("nan")),
        **server_split(streams),
        "started": started,
    }


def make_client(args: argparse.Namespace, max_streams: int) -> Any:
    """httpx's AsyncClient, or with ``--client aiohttp`` aiohttp's ClientSession
    (C parsers: less of the client's own time in the measurement, for the
    service and llama-server alike)."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    if getattr(args, "client", "httpx") == "aiohttp":
        import aiohttp

        return aiohttp.ClientSession(
            base_url=args.url, headers=headers, timeout=aiohttp.ClientTimeout(total=args.timeout),
            connector=aiohttp.TCPConnector(limit=max_streams + 4),
        )
    limits = httpx.Limits(max_connections=max_streams + 4, max_keepalive_connections=max_streams + 4)
    return httpx.AsyncClient(base_url=args.url, limits=limits, timeout=args.timeout, headers=headers)


def round_order(labels: list[str], r: int) -> list[str]:
    """Round ``r``'s order of the services measured side by side (and the
    reference, when there is one): every order in turn, so that over a
    multiple of ``len(labels)!`` rounds each label runs equally often in each
    position and right after each other one. Whatever drifts on the machine
    meanwhile (the GPU's clocks, another tenant), and whatever one run leaves
    to the next (a process's caches gone cold after another's), falls on all
    alike. (With two services and the reference, the order that only reversed
    itself kept the second service always in the middle, never after itself.)"""
    orders = list(itertools.permutations(labels))
    return list(orders[r % len(orders)])


async def reference_round(command: str, s: int) -> dict[str, float]:
    """One run of ``--reference``'s command for S sequences: its ``T TOKENS``."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_shell(command.replace("{streams}", str(s)),
                                                 stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    lines = out.decode().split()
    if proc.returncode != 0 or len(lines) < 2:
        raise RuntimeError(f"--reference {command!r} for {s} sequences: exit {proc.returncode}, output {out[-300:]!r}")
    return {"t_s": float(lines[-2]), "tokens_per_sequence": float(lines[-1]), "started": started}


def with_reference(rounds: list[dict[str, float]], reference: list[dict[str, float]]) -> None:
    """Adds each round's ``ratio_to_reference``: its tokens per second per
    stream against the reference's per sequence, round by round."""
    for r, ref in zip(rounds, reference, strict=True):
        r["ratio_to_reference"] = ((r["prompt_tokens"] + r["completion_tokens"]) / r["wall_s"]) / (
            ref["tokens_per_sequence"] / ref["t_s"])


def summarize(label: str, s: int, rounds: list[dict[str, float]]) -> dict[str, Any]:
    summary = {k: {"median": statistics.median(r[k] for r in rounds), "min": min(r[k] for r in rounds),
                   "max": max(r[k] for r in rounds)}
               for k in rounds[0] if k != "started" and all(k in r for r in rounds)}
    m = {k: v["median"] for k, v in summary.items()}
    print(f"{label:<16} S={s:<3} wall {m['wall_s']:.3f} s ({summary['wall_s']['min']:.3f}-"
          f"{summary['wall_s']['max']:.3f})  {m['tokens_per_s']:,.0f} tok/s (prompt+gen), "
          f"gen {m['completion_tokens_per_s']:,.0f} tok/s  ttft p50 {1000 * m['ttft_p50_s']:.1f} ms  "
          f"gap p50 {1000 * m['gap_p50_s']:.2f} ms p95 {1000 * m['gap_p95_s']:.2f} ms  "
          f"tokens {m['prompt_tokens']:.0f}+{m['completion_tokens']:.0f}  chunks {m['chunks']:.0f}"
          + (f"  before gen p50 {1000 * m['server_before_gen_p50_s']:.1f} max "
             f"{1000 * m['server_before_gen_max_s']:.1f} ms" if "server_before_gen_p50_s" in m else "")
          + "".join(f"  {key[:-2]} {1000 * m[f'server_{key}_p50']:.1f}" for key in _BEFORE_GEN_PARTS
                    if f"server_{key}_p50" in m)
          + (f"  ratio to reference {m['ratio_to_reference']:.3f} ({summary['ratio_to_reference']['min']:.3f}-"
             f"{summary['ratio_to_reference']['max']:.3f})" if "ratio_to_reference" in m else ""),
          flush=True)
    return {"rounds": rounds, "summary": summary}


def summarize_reference(s: int, rounds: list[dict[str, float]]) -> dict[str, Any]:
    t = [r["t_s"] for r in rounds]
    print(f"{'reference':<16} S={s:<3} T {statistics.median(t):.3f} s ({min(t):.3f}-{max(t):.3f}), "
          f"{rounds[0]['tokens_per_sequence']:.0f} tokens per sequence", flush=True)
    return {"rounds": rounds, "summary": {"t_s": {"median": statistics.median(t), "min": min(t), "max": max(t)}}}


async def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each service's report, by label: ``--url`` alone, or beside ``--versus``
    with their rounds alternating."""
    streams = [int(x) for x in args.streams.split(",")]
    targets = {args.label: args}
    if args.versus:
        targets[args.versus_label] = versus_args(args)
    out = {label: {"kind": a.kind, "url": a.url, "label": label, "streams": {}} for label, a in targets.items()}
    async with contextlib.AsyncExitStack() as stack:
        clients = {label: await stack.enter_async_context(make_client(a, max(streams))) for label, a in targets.items()}
        labels = [*clients, *([REFERENCE] if args.reference else [])]
        if args.reference:
            out[REFERENCE] = {"kind": "reference", "command": args.reference, "label": REFERENCE, "streams": {}}
        for s in streams:
            for label, client in clients.items():
                await one_round(client, targets[label], s, salt=f"{label}-warm{s}")
            rounds: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
            for r in range(args.rounds):
                for label in round_order(labels, r):
                    if label == REFERENCE:
                        rounds[label].append(await reference_round(args.reference, s))
                        continue
                    if args.prime:
                        await one_round(clients[label], targets[label], 1, salt=f"{label}-prime{r}")
                    rounds[label].append(await one_round(clients[label], targets[label], s, salt=f"{label}-r{r}"))
            for label in clients:
                if args.reference:
                    with_reference(rounds[label], rounds[REFERENCE])
                out[label]["streams"][s] = summarize(label, s, rounds[label])
            if args.reference:
                out[REFERENCE]["streams"][s] = summarize_reference(s, rounds[REFERENCE])
    return out


REFERENCE = "reference"  # --reference's label among the services


def versus_args(args: argparse.Namespace) -> argparse.Namespace:
    """The second service's arguments: ``--versus``'s URL, and the kind and
    prompt length of ``--versus-kind``/``--versus-prompt-words`` where given
    (``/ask`` beside chat of the same length, on one service)."""
    changes: dict[str, Any] = {"url": args.versus}
    if args.versus_kind:
        changes["kind"] = args.versus_kind
    if args.versus_prompt_words is not None:
        changes["prompt_words"] = args.versus_prompt_words
    return argparse.Namespace(**{**vars(args), **changes})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--kind", choices=["chat", "ask"], default="chat")
    ap.add_argument("--model", default="gemma-3-270m-q4_k_m", help="chat: the model id")
    ap.add_argument("--collection", default="bench", help="ask: the collection")
    ap.add_argument("--label", default="service")
    ap.add_argument("--streams", default="1,4,16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt-words", type=int, default=390, help="words of filler (about 1.3 tokens each)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--ignore-eos", action="store_true")
    ap.add_argument("--temperature", type=float)
    ap.add_argument("--top-p", type=float)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--client", choices=["httpx", "aiohttp"], default="httpx")
    ap.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY'")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--versus", help="a second service's URL, measured with the same client, rounds alternating")
    ap.add_argument("--versus-label", default="before")
    ap.add_argument("--versus-json", type=Path)
    ap.add_argument("--versus-kind", choices=["chat", "ask"], help="the second service's kind (default: --kind)")
    ap.add_argument("--versus-prompt-words", type=int, help="the second service's prompt words")
    ap.add_argument("--prime", action="store_true",
                    help="one request of the same shape, not timed, right before each measured round of a service")
    ap.add_argument("--reference", help="a command doing the same work without the service, in the rotation too; "
                                        "{streams} is replaced, it prints 'T TOKENS' last (see above)")
    ap.add_argument("--reference-json", type=Path)
    args = ap.parse_args()
    reports = asyncio.run(run(args))
    for label, path in ((args.label, args.json), (args.versus_label, args.versus_json),
                        (REFERENCE, args.reference_json)):
        if path and label in reports:
            path.write_text(json.dumps(reports[label], indent=2))


if __name__ == "__main__":
    main()

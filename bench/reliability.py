"""Hostile inputs against a real `rag serve`, at full size: time to the outcome,
the reason, peak RSS of the API process and of the parse child.

    PYTHONPATH=. nice -n 10 .venv/bin/python -m bench.reliability            # all cases
    PYTHONPATH=. .venv/bin/python -m bench.reliability --only pdf-bomb,huge-line
    PYTHONPATH=. .venv/bin/python -m bench.reliability --latency              # parse latency, inline vs child

The service runs with the default limits except RAG_PARSE_TIMEOUT_S (60, so the
never-ending parse ends within a minute) and without the model (ingestion only).
Results: a table on stdout (docs/reliability.md holds the last one).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.docmaker import make_all, make_document
from tests.support.hostile import huge_line, no_spaces, office_bomb, office_element_bomb, pdf_bomb, pdf_slow
from tests.support.service import ServiceProcess, child_pids, free_port, upload, wait_for

_MB = 1024 * 1024


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _parse_children(service: ServiceProcess) -> list[int]:
    return [pid for server in child_pids(service.proc.pid, "forkserver") for pid in child_pids(server)]


def _cases(folder: Path) -> dict[str, Callable[[], Path]]:
    return {
        "pdf-bomb": lambda: pdf_bomb(folder / "bomb-1gb.pdf", inflated_mb=1024),
        "docx-bomb": lambda: office_bomb(folder / "docx", "docx", inflated_mb=1024),
        "xlsx-bomb": lambda: office_bomb(folder / "xlsx", "xlsx", inflated_mb=1024),
        "pptx-bomb": lambda: office_bomb(folder / "pptx", "pptx", inflated_mb=1024),
        "docx-elements": lambda: office_element_bomb(folder / "elements", paragraphs=20_000_000),
        "never-ending-pdf": lambda: pdf_slow(folder / "slow.pdf", operations=2_000_000),
        "huge-line": lambda: huge_line(folder / "huge-line.txt"),
        "no-spaces": lambda: no_spaces(folder / "no-spaces.txt"),
    }


def run_cases(only: set[str] | None) -> None:
    with tempfile.TemporaryDirectory(prefix="rag-reliability-") as tmp:
        root = Path(tmp)
        env = {"RAG_DATA_DIR": str(root / "data"), "RAG_LLM_LOAD": "false", "RAG_PARSE_TIMEOUT_S": "60"}
        service = ServiceProcess("serve", env, root / "serve.log", port=free_port())
        rows = []
        try:
            service.wait_ready()
            with service.client(timeout=600) as client:
                client.post("/v1/collections", json={"name": "bench"})
                # warm the parse server
                warm = make_document("md", root / "warm", title="Warm", paragraphs=["Warm up."])
                doc = upload(client, "bench", [warm]).json()["documents"][0]["id"]
                _wait(client, doc, service, 600)
                print(f"API process after start-up: RSS {_rss_mb(service.proc.pid):.0f} MB", flush=True)
                for name, make in _cases(root).items():
                    if only and name not in only:
                        continue
                    path = make()
                    doc = upload(client, "bench", [path]).json()["documents"][0]["id"]
                    started = time.monotonic()
                    record, child_peak, api_peak = _wait(client, doc, service, 1800)
                    seconds = time.monotonic() - started
                    reason = record.get("error") or f"{record['chunk_count']} chunks"
                    rows.append((name, path.stat().st_size, record["status"], seconds, child_peak, api_peak, reason))
                    print(_row(rows[-1]), flush=True)
                if not only or "delete-cancels" in only:
                    rows.append(_delete_case(client, service, root))
                    print(_row(rows[-1]), flush=True)
                print(f"API process peak RSS (VmHWM) over the run: {_rss_mb(service.proc.pid, 'VmHWM'):.0f} MB")
        finally:
            service.stop()
        print("\n| case | file | outcome | seconds | parse child peak RSS MB | API RSS MB | reason |")
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            print(_row(row))


def _row(row: tuple[str, int, str, float, float, float, str]) -> str:
    name, size, status, seconds, child, api, reason = row
    return f"| {name} | {size / 1024:.0f} KB | {status} | {seconds:.1f} | {child:.0f} | {api:.0f} | {reason[:140]} |"


def _wait(client: httpx.Client, doc: str, service: ServiceProcess, timeout: float) -> tuple[dict, float, float]:
    child_peak = api_peak = 0.0
    deadline = time.monotonic() + timeout
    while True:
        for pid in _parse_children(service):
            child_peak = max(child_peak, _rss_mb(pid))
        api_peak = max(api_peak, _rss_mb(service.proc.pid))
        docs = {d["id"]: d for d in client.get("/v1/collections/bench/documents").json()}
        if docs[doc]["status"] in ("indexed", "failed"):
            return docs[doc], child_peak, api_peak
        if time.monotonic() > deadline:
            raise TimeoutError(doc)
        time.sleep(0.1)


def _delete_case(
    client: httpx.Client, service: ServiceProcess, root: Path
) -> tuple[str, int, str, float, float, float, str]:
    client.post("/v1/collections", json={"name": "doomed"})
    slow = pdf_slow(root / "doomed.pdf", operations=2_000_000)
    upload(client, "doomed", [slow])
    wait_for(lambda: _parse_children(service), timeout=600, interval=0.05, what="the parse child")
    time.sleep(2)
    started = time.monotonic()
    client.delete("/v1/collections/doomed")
    wait_for(lambda: not _parse_children(service), timeout=60, interval=0.02, what="the child to be killed")
    seconds = time.monotonic() - started
    return (
        "delete-cancels",
        slow.stat().st_size,
        "cancelled",
        seconds,
        0.0,
        _rss_mb(service.proc.pid),
        "DELETE of the collection to parse child gone",
    )


def latency(rounds: int) -> None:
    """Per-format parse time of the same small documents: inline (in the calling
    process, after a warm-up) and in a child forked from the warm parse server."""
    from ingest.sandbox import InlineParser, ProcessParser

    with tempfile.TemporaryDirectory(prefix="rag-latency-") as tmp:
        sets = [make_all(Path(tmp) / f"set{i}") for i in range(rounds + 1)]  # distinct text: no cache hits
        inline, child = InlineParser(), ProcessParser()
        child.start()
        for parser in (inline, child):  # warm-up round
            for path, _, _ in sets[0].values():
                parser.parse(path, path.name)
        print("| format | inline median ms | child process median ms |")
        print("|---|---|---|")
        for fmt in sets[0]:
            timings: dict[str, list[float]] = {"inline": [], "child": []}
            for docs in sets[1:]:
                path = docs[fmt][0]
                for label, parser in (("inline", inline), ("child", child)):
                    started = time.perf_counter()
                    parser.parse(path, path.name)
                    timings[label].append((time.perf_counter() - started) * 1000)
            print(f"| {fmt} | {statistics.median(timings['inline']):.0f} | {statistics.median(timings['child']):.0f} |")
        child.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument("--latency", action="store_true", help="parse latency, inline vs child process")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.latency:
        latency(args.rounds)
    else:
        run_cases(set(args.only.split(",")) if args.only else None)


if __name__ == "__main__":
    main()

"""On the GPU machine: the whole service over HTTP, as a user runs it.

Starts ``rag serve`` (embedded mode: the embedder on the GPU through torch in
the API process, the CUDA llama.cpp model in its model process), uploads the
test documents of every format, waits until they are indexed, then asks over
/ask (whole and streamed), the OpenAI-compatible chat and embeddings routes,
and 16 simultaneous asks; prints what came back with its timings. With
``--isolation inline`` the model is loaded in the API process instead (the
set-up that crashed on the H100 image).

    python bench/device/service_check.py --model M.gguf --data-dir D [--isolation inline] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.docmaker import make_all, make_document  # noqa: E402
from tests.support.service import ADMIN_KEY as BENCH_KEY  # noqa: E402
from tests.support.service import AUTH_HEADERS as AUTH  # noqa: E402
from tests.support.service import child_pids  # noqa: E402


def documents(directory: Path) -> dict[str, tuple[Path, str, str]]:
    try:
        return make_all(directory)
    except ImportError as exc:  # a writer library missing there: the formats that need none
        print(f"check: make_all: {exc}; text formats only", flush=True)
        out = {}
        for fmt, fact in (("txt", "ORCHID-2093"), ("md", "FALCON-7312"), ("html", "MAPLE-5820"),
                          ("pdf", "ZEBRA-4471")):
            path = make_document(fmt, directory, title=f"{fmt} notes",
                                 paragraphs=[f"The {fmt} access code is {fact}."])
            out[fmt] = (path, f"What is the {fmt} access code?", fact)
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--isolation", default="process")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--embedding-device", default="cuda")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(args.data_dir),
        "RAG_LLM_MODEL": args.model,
        "RAG_LLM_PROMPT_STYLE": "completion",  # the bundled base model's style
        "RAG_LLM_ISOLATION": args.isolation,
        "RAG_LLM_PARALLEL": "16",
        "RAG_LLM_QUEUE_SIZE": "16",
        "RAG_LLM_FLASH_ATTN": "on",
        "RAG_EMBEDDING_DEVICE": args.embedding_device,
        "RAG_BOOTSTRAP_ADMIN_KEY": BENCH_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    log_path = args.data_dir.with_suffix(".log")
    log = log_path.open("wb")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(args.port)], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    report: dict[str, Any] = {"isolation": args.isolation}
    url = f"http://127.0.0.1:{args.port}"
    try:
        while True:
            if proc.poll() is not None:
                report["exit"] = proc.returncode
                tail = log_path.read_text(errors="replace").splitlines()
                report["log_tail"] = [x for x in tail if not x.startswith(("llama_", "load", "print_info"))][-15:]
                print(f"check: rag serve exited with {proc.returncode} before it was ready", flush=True)
                for line in report["log_tail"]:
                    print("    " + line[:300], flush=True)
                return
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        report["ready_s"] = round(time.monotonic() - started, 1)
        model_procs = child_pids(proc.pid, "rag.generation.child")
        print(f"check: ready in {report['ready_s']} s; model processes {model_procs}", flush=True)
        with httpx.Client(base_url=url, timeout=300, headers=AUTH) as c:
            report["readyz"] = c.get("/readyz").json()
            docs = documents(args.data_dir.parent / f"docs-{args.isolation}")
            assert c.post("/v1/collections", json={"name": "handbook"}).status_code == 201
            files = [("files", (p.name, p.read_bytes())) for p, _, _ in docs.values()]
            t0 = time.monotonic()
            items = c.post("/v1/collections/handbook/documents", files=files).json()["documents"]
            while True:
                states = {d["filename"]: d for d in c.get("/v1/collections/handbook/documents").json()}
                if all(d["status"] in ("indexed", "failed") for d in states.values()):
                    break
                time.sleep(0.5)
            report["indexed"] = {k: (v["status"], v.get("chunk_count"), v.get("error")) for k, v in states.items()}
            report["index_s"] = round(time.monotonic() - t0, 1)
            print(f"check: {len(items)} uploaded, indexed in {report['index_s']} s: {report['indexed']}", flush=True)
            answers = []
            for fmt, (path, question, fact) in docs.items():
                r = c.post("/v1/collections/handbook/ask", json={"question": question}).json()
                ok = fact in r["answer"] and r["sources"][0]["filename"] == path.name
                answers.append({"fmt": fmt, "question": question, "answer": r["answer"], "fact_in_answer": ok,
                                "source": r["sources"][0]["filename"], "timings": r["timings"]})
                print(f"check: ask {fmt}: {r['answer']!r} (fact {'found' if ok else 'MISSING'}; source "
                      f"{r['sources'][0]['filename']}; ttft {r['timings']['time_to_first_token_s'] * 1000:.1f} ms)",
                      flush=True)
            report["answers"] = answers
            path, question, fact = docs["txt"]
            with c.stream("POST", "/v1/collections/handbook/ask", json={"question": question, "stream": True}) as r:
                events = [line.split(": ", 1)[1] for line in r.iter_lines() if line.startswith("event: ")]
            report["stream_events"] = {e: events.count(e) for e in dict.fromkeys(events)}
            print(f"check: streamed ask events {report['stream_events']}", flush=True)
            chat = c.post("/v1/chat/completions", json={
                "model": "rag/handbook", "messages": [{"role": "user", "content": question}]}).json()
            report["chat"] = {"content": chat["choices"][0]["message"]["content"],
                              "source": chat["sources"][0]["filename"]}
            emb = c.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": ["a lighthouse"]}).json()
            report["embedding_dims"] = len(emb["data"][0]["embedding"])
            print(f"check: chat {report['chat']}; embedding dims {report['embedding_dims']}", flush=True)

            # 16 asks at once: all decoded together by the model process's scheduler.
            results: list[Any] = []
            barrier = threading.Barrier(16)

            def ask(i: int) -> None:
                _, q, f = list(docs.values())[i % len(docs)]
                with httpx.Client(base_url=url, timeout=300, headers=AUTH) as cc:
                    barrier.wait()
                    resp = cc.post("/v1/collections/handbook/ask", json={"question": q, "max_tokens": 64})
                    results.append((f, resp.status_code, resp.json()))

            threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.monotonic() - t0
            codes = [code for _, code, _ in results]
            tokens = sum(b["usage"]["completion_tokens"] for _, code, b in results if code == 200)
            found = sum(1 for f, code, b in results if code == 200 and f in b["answer"])
            report["concurrent16"] = {"codes": {k: codes.count(k) for k in set(codes)}, "wall_s": round(wall, 3),
                                      "completion_tokens": tokens, "fact_in_answer": found}
            print(f"check: 16 at once: {report['concurrent16']}", flush=True)
        smi = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip() if shutil.which("nvidia-smi") else ""
        report["gpu_processes"] = smi.splitlines()
        print(f"check: GPU processes (pid, memory): {smi.splitlines()}; api pid {proc.pid}, model {model_procs}",
              flush=True)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()

#!/bin/bash
# Here (the dev machine, CPU), from the repository root, after bundle.sh: the
# data directory that /ask is measured on, on the device (e2e.sh http): the
# collection "bench" holding this repository's documentation (README,
# ARCHITECTURE, docs/*.md), indexed by the service with the embedder the
# device loads (bundle.sh's fp16-stored MiniLM, loaded as fp32). The device
# has no parser packages; an index records the embedding model it was built
# with, so the model sits at the same path, /root/w/minilm, on both machines.
# torch here as on the GPU (the default backend on a CPU, ONNX, cannot export the
# fp16-stored weights). Output: .device/c5/data-ask.tgz (its own folder since session 23: beside minilm.tgz in c6 it made one call too large; carried with the
# embedder; e2e.sh unpacks it).
set -euo pipefail
PY=${PY:-.venv/bin/python}
W=/root/w
PORT=${PORT:-8765}
KEY=bench-admin-key-0123456789abcdef
[ -d .device/cache/minilm ] || { echo "run bench/device/bundle.sh first" >&2; exit 1; }
mkdir -p $W .device/c5 && rm -f .device/c6/data-ask.tgz && rm -rf $W/minilm $W/data-ask && cp -r .device/cache/minilm $W/minilm
RAG_DATA_DIR=$W/data-ask RAG_LLM_LOAD=false RAG_EMBEDDING_MODEL=$W/minilm RAG_EMBEDDING_DEVICE=cpu RAG_EMBEDDING_BACKEND=torch \
  RAG_BOOTSTRAP_ADMIN_KEY=$KEY $PY -m api.cli serve --host 127.0.0.1 --port $PORT > .device/cache/askdata.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do curl -sf http://127.0.0.1:$PORT/readyz > /dev/null && break; sleep 1; done
RAG_API_KEY=$KEY $PY -m api.cli ingest --url http://127.0.0.1:$PORT -c bench README.md ARCHITECTURE.md docs/*.md
kill $pid && wait $pid || true
tar czf .device/c5/data-ask.tgz -C $W data-ask
du -sh .device/c5/*

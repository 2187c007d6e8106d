#!/bin/bash
# On a CPU machine, from the repository root: this checkout's service ("now")
# against another checkout's ("before", e.g. a `git worktree` of an earlier
# commit), both `rag serve` with the model in its model process, chat through
# one client with their rounds alternating (bench/load.py --versus).
#   BEFORE_DIR=/tmp/wt-old MODEL=model.gguf bench/cpu_versus.sh
# Settings: 8 slots of 512 cells, 2 threads, 40-word prompts, 32 tokens, 1 and 8 streams, 9 rounds.
# KIND=ask ASK_DATA=DIR EMBEDDING_MODEL=PATH: /ask over the collection "bench" of a copy of that data
# directory for each (bench/device/askdata.sh makes one: /root/w/data-ask, /root/w/minilm); the
# passages then overflow the 480 tokens left of a slot and every prompt is fitted.
# SERVE_ENV="VAR=value ...": settings for both services (e.g. RAG_LLM_PROMPT_CACHE=false).
set -euo pipefail
: "${BEFORE_DIR:?a checkout of the code to compare with}" "${MODEL:?a GGUF file}"
KEY=bench-admin-key-0123456789abcdef
PY=$PWD/.venv/bin/python
pids=()
serve() {  # port code-dir
  rm -rf /tmp/cpu-versus-$1 && mkdir -p /tmp/cpu-versus-$1
  [ -z "${ASK_DATA:-}" ] || cp -r "$ASK_DATA"/. /tmp/cpu-versus-$1/
  (cd "$2" && env -i PATH="$PATH" HOME="$HOME" RAG_DATA_DIR=/tmp/cpu-versus-$1 RAG_LLM_MODEL="$MODEL" RAG_LLM_THREADS=2 \
    ${EMBEDDING_MODEL:+RAG_EMBEDDING_MODEL=$EMBEDDING_MODEL} ${SERVE_ENV:-} \
    RAG_LLM_PARALLEL=8 RAG_LLM_QUEUE_SIZE=8 RAG_LLM_N_CTX=512 RAG_LLM_PROMPT_STYLE=gemma-chat RAG_BOOTSTRAP_ADMIN_KEY=$KEY \
    "$PY" -m api.cli serve --host 127.0.0.1 --port "$1" > /tmp/cpu-versus-$1.log 2>&1) &
  pids+=($!)
}
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
serve 8801 "$PWD"
serve 8802 "$BEFORE_DIR"
for p in 8801 8802; do
  for _ in $(seq 1 300); do curl -sf http://127.0.0.1:$p/readyz > /dev/null && break; sleep 1; done
done
words=40; [ "${KIND:-chat}" = chat ] || words=0
"$PY" bench/load.py --url http://127.0.0.1:8801 --label now --model "$(basename "$MODEL" .gguf)" --kind "${KIND:-chat}" \
  --streams 1,8 --collection bench --prompt-words $words --rounds 9 --max-tokens 32 --ignore-eos --client aiohttp --api-key $KEY \
  --versus http://127.0.0.1:8802 --versus-label before --json /tmp/cpu-versus.json

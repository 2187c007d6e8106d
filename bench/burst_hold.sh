#!/bin/bash
# A burst's first prompt step on the dev VM (CPU), the service now against
# another checkout, side by side: rag serve with the model process, GPU-style
# prompt steps (RAG_LLM_PROMPT_STEPS=8, n_batch 512), the scheduler's step
# trace; bench/load.py sends 16 streams at once, rounds alternating; then, per
# round, when the first step began and the prompts each prompt step finished.
#   bench/burst_hold.sh BEFORE_CHECKOUT [ROUNDS]      (e.g. git worktree add /tmp/before HEAD~1)
# The model: MODEL (default /tmp/model.gguf; README: the bundled GGUF's parts joined).
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=$1; ROUNDS=${2:-8}; MODEL=${MODEL:-/tmp/model.gguf}; KEY=bench-admin-key-0123456789abcdef
W=$(mktemp -d); PY=$PWD/.venv/bin/python
serve() {  # code port
  mkdir -p $W/data-$2
  (cd $1 && env -i PATH=/usr/bin:/bin HOME=$HOME PYTHONPATH=$1 RAG_DATA_DIR=$W/data-$2 RAG_LLM_MODEL=$MODEL \
    RAG_LLM_PARALLEL=16 RAG_LLM_QUEUE_SIZE=16 RAG_LLM_N_CTX=512 RAG_LLM_N_BATCH=512 RAG_LLM_PROMPT_STEPS=8 \
    RAG_LLM_STEP_TRACE=$W/steps-$2.jsonl RAG_LLM_PROMPT_STYLE=gemma-chat RAG_BOOTSTRAP_ADMIN_KEY=$KEY \
    $PY -m api.cli serve --host 127.0.0.1 --port $2 > $W/serve-$2.log 2>&1 &)
}
serve $PWD 8021; serve "$(cd "$BEFORE" && pwd)" 8022
trap 'pkill -f "port 802[12]" || true' EXIT
for p in 8021 8022; do
  for _ in $(seq 1 180); do curl -sf http://127.0.0.1:$p/readyz > /dev/null && break; sleep 1; done
done
$PY bench/load.py --url http://127.0.0.1:8021 --label now --versus http://127.0.0.1:8022 --versus-label before \
  --kind chat --model model --streams 16 --rounds $ROUNDS --prompt-words 80 --max-tokens 4 --ignore-eos \
  --client aiohttp --api-key $KEY --json $W/now.json --versus-json $W/before.json
pkill -f "port 802[12]" || true; sleep 2  # the traces are written when the schedulers idle
$PY - $W <<'PYEOF'
import json, sys
w = sys.argv[1]
for label, port in (("now", 8021), ("before", 8022)):
    rounds = json.load(open(f"{w}/{label}.json"))["streams"]["16"]["rounds"]
    steps = [json.loads(line) for line in open(f"{w}/steps-{port}.jsonl")]
    for r in rounds:
        mine = [s for s in steps if r["started"] <= s["began"] <= r["started"] + r["wall_s"]]
        prompt = [s["outputs"] for s in mine if s["prompt"] > 0]
        print(f"{label:<6} wall {1000 * r['wall_s']:.0f} ms  first step at {1000 * (mine[0]['began'] - r['started']):.1f} ms"
              f"  prompts finished per prompt step {prompt}")
PYEOF

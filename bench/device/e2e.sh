#!/bin/bash
# Device, from the repository root, after setup.sh and part.sh for every model
# part (bench/device/bundle.sh made them): generation measured from the caller.
#   e2e.sh harness   bench/generation.py: S = $STREAMS requests submitted at once,
#                    wall time to the last token at the caller, through the model
#                    process and in-process, against llama-batched-bench's total
#                    time T (same n_batch/n_ubatch, n_ctx per slot, sequences);
#                    single stream and the 1,839-token prompt against llama-bench
#   e2e.sh http      the same client (bench/load.py) against the service's
#                    /v1/chat/completions (rag serve, model process) and against
#                    llama-server from the same llama.cpp: default sampling, then -bs
# Results under $OUT (at most 8 files come back per call).
set -o pipefail
REPO=$PWD
W=/root/w
cd $W
while [ ! -f build.done ]; do sleep 5; done
[ "$(cat build.done)" = 0 ] || { tail -30 build.log; exit 1; }
cp -a build/bin/*.so* llama_cpp/lib/ 2>/dev/null
[ -f model.gguf ] || cat parts/model.* > model.gguf
echo "model sha256 $(sha256sum model.gguf | cut -c1-16)"
export PYTHONPATH=$W:$W/site:$REPO PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
cd $REPO
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv,noheader
M=$W/model.gguf
B=$W/build/bin
STREAMS=${STREAMS:-1,4,16,32,64}
ROUNDS=${ROUNDS:-5}
SLOT=${SLOT:-1024}           # KV cells per sequence, on every side
NP=${NP:-64}                 # sequence slots, on every side
step=${1:-harness}
KEY=bench-admin-key-0123456789abcdef

if [ "$step" = harness ]; then
  python3 bench/generation.py --model $M --batched-bench $B/llama-batched-bench --threads 16 --n-gpu-layers -1 \
    --flash-attn on --rounds $ROUNDS --streams $STREAMS --slot-ctx $SLOT --skip single,high_level,batched,prefix \
    --json $OUT/caller.json 2>&1 | grep -v "^load\|^llama_kv" | tee $OUT/caller.log
  python3 bench/generation.py --model $M --llama-bench $B/llama-bench --threads 16 --n-gpu-layers -1 \
    --flash-attn on --isolation process --rounds 3 --reps 5 --skip high_level,batched,caller \
    --json $OUT/single.json 2>&1 | grep -v "^load\|^llama_kv" | tee $OUT/single.log
  exit 0
fi

wait_ready() {  # url, seconds
  for _ in $(seq 1 "$2"); do curl -sf "$1" > /dev/null && return 0; sleep 1; done
  echo "not ready: $1"; return 1
}
load() {  # port label model [extra]
  python3 bench/load.py --url http://127.0.0.1:$1 --label $2 --model $3 --kind chat --streams $STREAMS \
    --rounds $ROUNDS --max-tokens 128 --ignore-eos --json $W/$2.json ${@:4} 2>&1 | tee -a $OUT/http.log
}
if [ "$step" = http ]; then
  : > $OUT/http.log
  RAG_DATA_DIR=$W/data-http RAG_LLM_MODEL=$M RAG_LLM_PARALLEL=$NP RAG_LLM_QUEUE_SIZE=$NP RAG_LLM_N_CTX=$SLOT \
  RAG_LLM_FLASH_ATTN=on RAG_LLM_THREADS=16 RAG_LLM_PROMPT_STYLE=gemma-chat RAG_EMBEDDING_MODEL=$W/minilm \
  RAG_EMBEDDING_DEVICE=cuda RAG_BOOTSTRAP_ADMIN_KEY=$KEY ${RAG_EXTRA_ENV:-} python3 -m api.cli serve --host 127.0.0.1 --port 8000 > $W/serve.log 2>&1 &
  pid=$!
  wait_ready http://127.0.0.1:8000/readyz 180 && load 8000 service-chat model --api-key $KEY
  load 8000 service-chat-t08 model --api-key $KEY --temperature 0.8 --top-p 0.95
  kill $pid; wait $pid
  for variant in default bs bs-t08; do
    flags=""; [ $variant != default ] && flags="-bs"
    extra=""; [ $variant = bs-t08 ] && extra="--temperature 0.8 --top-p 0.95"
    $B/llama-server -m $M -ngl 99 -fa on -np $NP -c $((NP * SLOT)) -b 2048 -ub 512 -t 16 $flags \
      --host 127.0.0.1 --port 8080 > $W/llama-server-$variant.log 2>&1 &
    pid=$!
    wait_ready http://127.0.0.1:8080/health 120 && load 8080 llama-server-$variant model $extra
    kill $pid; wait $pid
  done
  python3 - $W $OUT/http.json <<'PYEOF'
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
out = {p.stem: json.loads(p.read_text()) for p in sorted(w.glob("*.json")) if p.stem.startswith(("service", "llama-server"))}
Path(sys.argv[2]).write_text(json.dumps(out, indent=1))
PYEOF
  tail -c 20000 $W/serve.log > $OUT/serve.log
  grep -h "n_ctx_slot\|initializing\|backend" $W/llama-server-*.log | head -20 > $OUT/llama-server.log
fi

#!/bin/bash
# Device, from the repository root, after setup.sh and part.sh for every model
# part (bench/device/bundle.sh made them): generation measured from the caller.
#   e2e.sh harness   bench/generation.py: S = $STREAMS requests submitted at once,
#                    wall time to the last token at the caller, through the model
#                    process and in-process, each with the prompt admission of now
#                    and of before (prompt_steps=0, "-mixed"), all four loaded at
#                    once and their rounds alternating, against llama-batched-bench's
#                    total time T (same n_batch/n_ubatch, n_ctx per slot, sequences);
#                    single stream and the 1,839-token prompt against llama-bench, its
#                    decode steps split by the step trace (single-steps.log, stepsplit.py)
#   e2e.sh http      the same client (bench/load.py --client $CLIENT, default aiohttp)
#                    against two services at once (rag serve, model process, embedder
#                    on the GPU): now and before ($BEFORE: settings of the service
#                    before, e.g. LLAMA_SAMPLED_COPY_PER_ROW=1; with parts/before.tgz,
#                    bundle.sh's BEFORE_REF, the service before is that commit's code,
#                    on asyncio's loop and h11 as it ran then), /v1/chat/completions alternating
#                    per stream count ($PAIRS times, the two taking turns going first;
#                    INTERLEAVE=1: round by round instead, through one client, load.py --versus,
#                    with llama-batched-bench's T for the same S taking its turn in every round
#                    (batched_t.sh): each round's ratio_to_reference is against the T run beside it;
#                    LOAD_ARGS=--prime: one untimed request before each service round, as batched-bench
#                    runs one sequence before its S),
#                    llama-batched-bench's T ($TB_ROUNDS runs)
#                    before and after; then on the first, alternating per stream
#                    count, /ask (retrieval + generation, over the data directory of
#                    bench/device/askdata.sh, $ASK_DATA) and chat with prompts as
#                    long as /ask's ($ASK_WORDS words of filler; INTERLEAVE=1: round
#                    by round, load.py --versus-kind), and chat with
#                    random sampling ($SAMPLING); ASK_VERSUS="VAR=value ...": instead, /ask
#                    of the service now against a second one with those settings (e.g. the
#                    question embedder on the CPU; "before VAR=value": the code before, bundle.sh's
#                    BEFORE_REF), rounds alternating, then that one's /ask against its own chat as long; at 16 streams the service now once more
#                    through httpx's client (the client of the earlier sessions);
#                    BEFORE_SERVICE=0: this checkout's service alone (with INTERLEAVE=1 still T beside each
#                    chat round). The service now
#                    records its scheduler's steps (RAG_LLM_STEP_TRACE) and timeline.py
#                    splits each round's wall time with them (timeline.log)
#   e2e.sh prompt    bench/device/prompt_phase.py: a burst's prompt phase packed as
#                    llama-batched-bench packs it and as the scheduler does
#   e2e.sh raw       bench/device/rawdecode.py --service: decode steps without the
#                    scheduler, reading the sampled tokens back each step or not;
#                    $RAW_ROUNDS rounds alternating one copy per row of sampled
#                    tokens (LLAMA_SAMPLED_COPY_PER_ROW=1, stock llama.cpp) and the
#                    patched one copy for adjacent rows (scripts/patches/; COPY_PER_ROW=0:
#                    the patched alone); RAW_ARGS=--argmax: the batch's argmax as one
#                    node (the patched kernel) and in two stages of stock ops;
#                    RAW_ARGS="--streams 1" (with COPY_PER_ROW=0): one sequence, the
#                    logits copied out as llama-bench's tg does, against the in-graph greedy
#   e2e.sh chain     bench/device/chaincheck.py: the same greedy requests through LlamaModel with
#                    chained decode steps (llama_decode_chained) and without: answers compared
#   e2e.sh ops       test-backend-ops (prebuild.sh TARGETS with it): ARGMAX on the GPU
#                    against the CPU, and its speed, the patched split kernel and the
#                    stock one (GGML_CUDA_ARGMAX_ONE_BLOCK_PER_ROW=1)
#   e2e.sh trace     bench/device/steptrace.py: the scheduler's phases per step for a
#                    burst of 16 and of 64 streams (in-process)
#   e2e.sh embed     bench/device/embed_query.py: one question at a time through the
#                    service's embedder, on CUDA and on the CPU (a lone /ask's embed_s),
#                    with pauses of $PAUSES s (0,0.5) before each, questions of one length
#                    and of varied lengths
#   e2e.sh profile   py-spy --native (bundle.sh PYSPY=1 carries its wheel) on the model
#                    process of one service under $PROFILE_STREAMS (16) streams of chat,
#                    then on the scheduler in-process (steptrace.py) and on llama.cpp's
#                    calls alone (rawdecode.py): raw stacks, for bench/device/stacks.py
#   e2e.sh peer      the same client against llama-server from the same llama.cpp:
#                    default sampling, then -bs ($PEER_ROUNDS rounds), then -bs with
#                    random sampling ($SAMPLING)
# Results under $OUT (at most 8 files come back per call).
set -o pipefail
REPO=$PWD
W=/root/w
cd $W
while [ ! -f build.done ]; do sleep 5; done
[ "$(cat build.done)" = 0 ] || { tail -30 build.log; exit 1; }
cp -a build/bin/*.so* llama_cpp/lib/ 2>/dev/null
# The model from its parts, once they are all here (e2e.sh ops, which needs none, may run before they are:
# session 21's ops call left an empty model.gguf that the next call took for the model).
[ -s model.gguf ] || ! ls parts/model.* > /dev/null 2>&1 || cat parts/model.* > model.gguf
[ -d minilm ] || [ ! -f parts/minilm.tgz ] || tar xzf parts/minilm.tgz
echo "model sha256 $(sha256sum model.gguf | cut -c1-16)"
export PYTHONPATH=$W:$W/site:$REPO PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
cd $REPO
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv,noheader
M=$W/model.gguf
B=$W/build/bin
STREAMS=${STREAMS:-1,4,16,32,64}
ROUNDS=${ROUNDS:-5}
PEER_ROUNDS=${PEER_ROUNDS:-3}
ASK_DATA=${ASK_DATA:-$W/parts/data-ask.tgz}
ASK_WORDS=${ASK_WORDS:-680}  # chat prompts about as long as /ask's (~890 tokens)
SAMPLING=${SAMPLING---temperature 0.8 --top-p 0.95}
BEFORE=${BEFORE:-}
NOW=${NOW:-}                 # settings of the service now, e.g. RAG_LLM_PROMPT_CACHE=false (chat's salted prompts never hit
                             # the prompt cache; /ask's share their passages from round to round and do)
CLIENT=${CLIENT:-aiohttp}
TB_ROUNDS=${TB_ROUNDS:-3}
PAIRS=${PAIRS:-1}            # http: chat blocks of now and before, $PAIRS times, taking turns going first
RAW_ROUNDS=${RAW_ROUNDS:-3}
SLOT=${SLOT:-1024}           # KV cells per sequence, on every side
NP=${NP:-64}                 # sequence slots, on every side
step=${1:-harness}
KEY=bench-admin-key-0123456789abcdef

if [ "$step" = prompt ]; then  # where the prompt phase of a burst goes (no scheduler)
  python3 bench/device/prompt_phase.py $M 2>&1 | grep "^prompt phase" | tee $OUT/prompt-phase.log
  exit 0
fi
if [ "$step" = raw ]; then  # 128 decode steps of 16 streams (RAW_ARGS --streams) without the scheduler (rawdecode.py)
  for r in $(seq 1 $RAW_ROUNDS); do
    for per_row in ${COPY_PER_ROW:-1 0}; do
      LLAMA_SAMPLED_COPY_PER_ROW=$per_row python3 bench/device/rawdecode.py $M --service ${RAW_ARGS---greedy-only} 2>&1 | grep "^raw" \
        | sed "s/^raw/raw round=$r copy_per_row=$per_row/" | tee -a $OUT/rawdecode.log
    done
  done
  exit 0
fi
if [ "$step" = chain ]; then  # the same greedy requests with chained decode steps and without (chaincheck.py)
  python3 bench/device/chaincheck.py $M 2>&1 | grep "^chain" | tee $OUT/chaincheck.log
  exit 0
fi
if [ "$step" = ops ]; then  # test-backend-ops: ARGMAX on the GPU against the CPU, then its speed, split kernel or not
  [ -x $B/test-backend-ops ] || { echo "no test-backend-ops: TARGETS of prebuild.sh/setup.sh" >&2; exit 1; }
  for one in 0 1; do  # GGML_CUDA_ARGMAX_ONE_BLOCK_PER_ROW=1: the stock kernel (ties: not the first column)
    GGML_CUDA_ARGMAX_ONE_BLOCK_PER_ROW=$one $B/test-backend-ops -b CUDA0 -o ARGMAX 2>&1 | grep -E "ARGMAX|passed|tests" \
      | sed "s/^/one_block_per_row=$one /" | tee -a $OUT/ops-argmax.log
  done
  for r in 1 2 3; do
    for one in 0 1; do
      GGML_CUDA_ARGMAX_ONE_BLOCK_PER_ROW=$one $B/test-backend-ops perf -b CUDA0 -o ARGMAX 2>&1 | grep "ARGMAX" \
        | sed "s/^/round=$r one_block_per_row=$one /" | tee -a $OUT/ops-argmax-perf.log
    done
  done
  exit 0
fi
if [ "$step" = embed ]; then  # one question at a time through the service's embedder, on CUDA and on the CPU
  for vary in "" --vary-length; do
    python3 bench/device/embed_query.py $W/minilm --queries ${QUERIES:-60} --pause ${PAUSES:-0,0.5} $vary 2>&1 \
      | grep "^embed" | tee -a $OUT/embed.log
  done
  exit 0
fi
if [ "$step" = trace ]; then  # the scheduler's phases, step by step (steptrace.py)
  for s in 16 64; do
    python3 bench/device/steptrace.py $M --streams $s --rounds 3 2>&1 | grep "^trace" | tee -a $OUT/steptrace.log
  done
  exit 0
fi
batched_bench() {  # llama-batched-bench's T for the HTTP runs' work: $TB_ROUNDS runs, JSON lines
  # A single sequence first, always: the first -npl value's prompt phase runs cold (0.50 s against
  # 0.47 s at 16, session 8); the services are warm. Its row is kept only when 1 is in $STREAMS.
  local npl=$STREAMS; [ "${STREAMS%%,*}" = 1 ] || npl=1,$STREAMS
  for _ in $(seq 1 $TB_ROUNDS); do
    $B/llama-batched-bench -m $M -t 16 -tb 16 -c $((NP * SLOT)) -b 2048 -ub 512 -npp 512 -ntg 128 \
      -npl $npl -ngl 99 -fa on --output-format jsonl 2>/dev/null | grep '^{' \
      | { [ "$npl" = "$STREAMS" ] && cat || grep -v '"pl": 1,'; } >> $OUT/batched-bench.jsonl
  done
}
if [ "$step" = harness ]; then
  python3 bench/generation.py --model $M --batched-bench $B/llama-batched-bench --threads 16 --n-gpu-layers -1 \
    --flash-attn on --rounds $ROUNDS --streams $STREAMS --slot-ctx $SLOT --skip single,high_level,batched,prefix \
    --caller-modes ${MODES:-process,inline,process-mixed,inline-mixed} --json $OUT/caller.json 2>&1 | grep -v "^load\|^llama_kv" | tee $OUT/caller.log
  rm -f $W/steps-single-*.jsonl
  python3 bench/generation.py --model $M --llama-bench $B/llama-bench --threads 16 --n-gpu-layers -1 \
    --flash-attn on --isolation process --rounds ${SINGLE_ROUNDS:-5} --reps 5 --skip high_level,batched,caller \
    --step-trace $W --json $OUT/single.json 2>&1 | grep -v "^load\|^llama_kv" | tee $OUT/single.log
  # Where a single stream's decode step goes (stepsplit.py), against llama-bench's time a token (median tg128)
  tg=$(python3 -c 'import json, statistics, sys; r = json.load(open(sys.argv[1]))["rounds"]
print(statistics.median(x["llama_bench"]["tg128"] for x in r))' $OUT/single.json)
  for f in $W/steps-single-*.jsonl; do
    echo "$(basename $f .jsonl): $(python3 bench/device/stepsplit.py $f --tg $tg)" | tee -a $OUT/single-steps.log
    gzip -c $f > $OUT/$(basename $f).gz && rm -f $f
  done
  exit 0
fi

wait_ready() {  # url, seconds[, pid: give up at once when that process is gone]
  local t0=$SECONDS
  for _ in $(seq 1 "$2"); do
    curl -sf "$1" > /dev/null && { echo "ready in $((SECONDS - t0)) s: $1"; return 0; }
    [ -z "${3:-}" ] || kill -0 "$3" 2>/dev/null || { echo "exited before ready: $1"; return 1; }
    sleep 1
  done
  echo "not ready: $1"; return 1
}
cpu_ticks() {  # /proc/stat's cpu line: user nice system idle iowait irq softirq steal (ticks)
  head -1 /proc/stat | cut -d' ' -f3-10
}
load() {  # port label model [extra]; after each block, the machine's CPU time during it (steal: the VM's host)
  local before; before=$(cpu_ticks)
  python3 bench/load.py --url http://127.0.0.1:$1 --label $2 --model $3 --streams $STREAMS \
    --max-tokens 128 --ignore-eos --client $CLIENT --json $W/$2.json ${LOAD_ARGS:-} "${@:4}" 2>&1 | tee -a $OUT/${LOG:-http.log}
  python3 - "$2" "$before" "$(cpu_ticks)" <<'PYEOF' | tee -a $OUT/${LOG:-http.log}
import sys
label, a, b = sys.argv[1], list(map(int, sys.argv[2].split())), list(map(int, sys.argv[3].split()))
d = [y - x for x, y in zip(a, b)]
total = sum(d) or 1
names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
print(f"cpu {label}: " + "  ".join(f"{n} {100 * v / total:.1f}%" for n, v in zip(names, d)))
PYEOF
}
merge() {  # output json, then the labels' prefixes
  python3 - $W "$@" <<'PYEOF'
import json, sys
from pathlib import Path
w, out, prefixes = Path(sys.argv[1]), Path(sys.argv[2]), tuple(sys.argv[3:])
Path(out).write_text(json.dumps({p.stem: json.loads(p.read_text()) for p in sorted(w.glob("*.json"))
                                 if p.stem.startswith(prefixes)}, indent=1))
PYEOF
}
# The services are found by their own command line (pgrep -f "^python3 -m api[.]cli serve .*--port N"):
# "port 8001" alone matched the device call's shell when its text held those words, and e2e.sh killed it.
serve() {  # port data-dir [VAR=value...]: rag serve with the model in a model process
  env ${CODE:+PYTHONPATH=$CODE:$W/noextras:$PYTHONPATH} RAG_DATA_DIR=$2 RAG_LLM_MODEL=$M RAG_LLM_PARALLEL=$NP RAG_LLM_QUEUE_SIZE=$NP RAG_LLM_N_CTX=$SLOT \
    RAG_LLM_FLASH_ATTN=on RAG_LLM_THREADS=16 RAG_LLM_PROMPT_STYLE=gemma-chat RAG_EMBEDDING_MODEL=$W/minilm \
    RAG_EMBEDDING_DEVICE=cuda RAG_BOOTSTRAP_ADMIN_KEY=$KEY "${@:3}" python3 -m api.cli serve --host 127.0.0.1 \
    --port $1 > $W/serve-$1.log 2>&1 &
}
before_code() {  # parts/before.tgz (bundle.sh BEFORE_REF): that commit's code, without uvloop/httptools (NOEXTRAS=0: with)
  [ -f $W/parts/before.tgz ] || return 0
  rm -rf $W/before $W/noextras && mkdir -p $W/before $W/noextras/uvloop $W/noextras/httptools
  tar xzf $W/parts/before.tgz -C $W/before
  [ "${NOEXTRAS:-1}" = 0 ] && rm -rf $W/noextras/* || \
    for m in uvloop httptools; do echo "raise ImportError('$m: off for the service before')" > $W/noextras/$m/__init__.py; done
  echo $W/before
}
if [ "$step" = http ]; then  # CHAT=0: no chat before/after pair; ASK=0: no /ask, long chat, sampling
  REFERENCE="M=$M B=$B NP=$NP SLOT=$SLOT bash bench/device/batched_t.sh {streams} $OUT/batched-bench.jsonl"
  : > $OUT/http.log; echo "load average at start: $(cat /proc/loadavg)" >> $OUT/http.log
  rm -rf $W/data-ask $W/data-before && tar xzf $ASK_DATA -C $W
  : > $OUT/batched-bench.jsonl
  batched_bench
  # An earlier call's JSON would be merged into this one's http.json (session 19: a run at 16 streams
  # reported the 64-stream rounds of the call before it).
  rm -f $W/steps.jsonl $W/steps-before.jsonl $W/{service,before,reference,versus}*.json
  serve 8000 $W/data-ask RAG_LLM_STEP_TRACE=$W/steps.jsonl $NOW; now=$!
  if [ "${CHAT:-1}" = 1 ] && [ "${BEFORE_SERVICE:-1}" = 1 ]; then
    code=$(before_code)
    (cd ${code:-.} && CODE=$code serve 8001 $W/data-before $BEFORE); before=$(pgrep -f "^python3 -m api[.]cli serve .*--port 8001" | head -1)
  fi
  wait_ready http://127.0.0.1:8000/readyz 240 $now || { tail -c 3000 $W/serve-8000.log > $OUT/serve.log; exit 1; }
  if [ "${CHAT:-1}" = 1 ] && [ "${BEFORE_SERVICE:-1}" = 1 ]; then
    wait_ready http://127.0.0.1:8001/readyz 240 $before || { tail -c 3000 $W/serve-8001.log > $OUT/serve.log; exit 1; }
    if [ "${INTERLEAVE:-0}" = 1 ]; then  # one client, the two services' rounds alternating (bench/load.py --versus)
      for s in ${STREAMS//,/ }; do
        STREAMS=$s load 8000 service-chat-S$s model --kind chat --rounds $ROUNDS --api-key $KEY \
          --versus http://127.0.0.1:8001 --versus-label before-chat-S$s --versus-json $W/before-chat-S$s.json \
          --reference "$REFERENCE" \
          --reference-json $W/reference-chat-S$s.json
      done
      PAIRS=0
    fi
    for pair in $(seq 1 $PAIRS); do  # the services take turns going first, pair by pair
      p=""; [ $PAIRS = 1 ] || p=p$pair-
      for s in ${STREAMS//,/ }; do
        if [ $((pair % 2)) = 1 ]; then
          STREAMS=$s load 8000 service-chat-${p}S$s model --kind chat --rounds $ROUNDS --api-key $KEY
          STREAMS=$s load 8001 before-chat-${p}S$s model --kind chat --rounds $ROUNDS --api-key $KEY
        else
          STREAMS=$s load 8001 before-chat-${p}S$s model --kind chat --rounds $ROUNDS --api-key $KEY
          STREAMS=$s load 8000 service-chat-${p}S$s model --kind chat --rounds $ROUNDS --api-key $KEY
        fi
      done
    done
    if [ "${HTTPX:-1}" = 1 ]; then  # HTTPX=0: not through httpx's client as well
      STREAMS=16 CLIENT=httpx load 8000 service-chat-httpx-S16 model --kind chat --rounds $ROUNDS --api-key $KEY
      STREAMS=16 CLIENT=httpx load 8001 before-chat-httpx-S16 model --kind chat --rounds $ROUNDS --api-key $KEY
    fi
    kill $before; while kill -0 $before 2>/dev/null; do sleep 0.5; done
  elif [ "${CHAT:-1}" = 1 ]; then  # BEFORE_SERVICE=0: this checkout's service alone (INTERLEAVE=1: T beside each round)
    for s in ${STREAMS//,/ }; do
      if [ "${INTERLEAVE:-0}" = 1 ]; then
        STREAMS=$s load 8000 service-chat-S$s model --kind chat --rounds $ROUNDS --api-key $KEY \
          --reference "$REFERENCE" \
          --reference-json $W/reference-chat-S$s.json
        continue
      fi
      STREAMS=$s load 8000 service-chat-S$s model --kind chat --rounds $ROUNDS --api-key $KEY
    done
  fi
  batched_bench  # T between the chat and the /ask runs as well (the GPU's speed drifts within a session)
  if [ "${ASK:-1}" = 1 ] && [ -n "${ASK_VERSUS:-}" ]; then  # /ask of two services, settings apart, rounds alternating
    IFS=';' read -ra variants <<< "$ASK_VERSUS"; v=0
    for variant in "${variants[@]}"; do  # "A;B": each against the service now in turn
      v=$((v + 1))
      rm -rf $W/data-ask2 && mkdir -p $W/data-ask2 && tar xzf $ASK_DATA -C $W/data-ask2 --strip-components=1
      echo "versus$v: $variant" | tee -a $OUT/http.log
      code=""  # "before VAR=value ...": that service runs the code before (bundle.sh BEFORE_REF)
      if [ "${variant%% *}" = before ]; then code=$(before_code); variant=${variant#before}; fi
      (cd ${code:-.} && CODE=$code serve 8002 $W/data-ask2 $variant); other=$(pgrep -f "^python3 -m api[.]cli serve .*--port 8002" | head -1)
      wait_ready http://127.0.0.1:8002/readyz 300 $other | tee -a $OUT/http.log
      curl -sf http://127.0.0.1:8002/readyz > /dev/null || { tail -c 3000 $W/serve-8002.log | tee $OUT/serve-8002.log; exit 1; }
      for s in ${STREAMS//,/ }; do
        STREAMS=$s load 8000 service-ask-v$v-S$s model --kind ask --collection bench --prompt-words 0 --rounds $ROUNDS \
          --api-key $KEY --versus http://127.0.0.1:8002 --versus-label versus$v-ask-S$s --versus-json $W/versus$v-ask-S$s.json
        # then that service's /ask against its own chat as long, as the service now was measured before
        STREAMS=$s load 8002 versus$v-askc-S$s model --kind ask --collection bench --prompt-words 0 --rounds $ROUNDS \
          --api-key $KEY --versus http://127.0.0.1:8002 --versus-label versus$v-chatlong-S$s --versus-kind chat \
          --versus-prompt-words $ASK_WORDS --versus-json $W/versus$v-chatlong-S$s.json
      done
      kill $other; while kill -0 $other 2>/dev/null; do sleep 0.5; done
    done
  elif [ "${ASK:-1}" = 1 ]; then
    for s in ${STREAMS//,/ }; do
      if [ "${INTERLEAVE:-0}" = 1 ]; then  # /ask and chat as long, round by round through one client
        STREAMS=$s load 8000 service-ask-S$s model --kind ask --collection bench --prompt-words 0 --rounds $ROUNDS \
          --api-key $KEY --versus http://127.0.0.1:8000 --versus-label service-chatlong-S$s --versus-kind chat \
          --versus-prompt-words $ASK_WORDS --versus-json $W/service-chatlong-S$s.json
        continue
      fi
      STREAMS=$s load 8000 service-ask-S$s model --kind ask --collection bench --prompt-words 0 --rounds $ROUNDS \
        --api-key $KEY
      STREAMS=$s load 8000 service-chatlong-S$s model --kind chat --prompt-words $ASK_WORDS --rounds $ROUNDS \
        --api-key $KEY
    done
    [ -n "$SAMPLING" ] && load 8000 service-sampled model --kind chat --rounds $ROUNDS --api-key $KEY $SAMPLING
  fi
  kill $now; wait $now
  batched_bench
  echo "load average at end: $(cat /proc/loadavg)" >> $OUT/http.log
  merge $OUT/http.json service before reference versus
  pairs=""; [ $PAIRS -le 1 ] || pairs=$(seq -f "service-chat-p%g-S" 1 $PAIRS)
  for prefix in service-chat-S $pairs service-ask-S service-chatlong-S; do  # where each round's time went (timeline.py)
    python3 bench/device/timeline.py $OUT/http.json $W/steps.jsonl $OUT/batched-bench.jsonl --prefix $prefix
  done 2>&1 | tee $OUT/timeline.log
  gzip -c $W/steps.jsonl > $OUT/steps.jsonl.gz
  if [ -f $W/steps-before.jsonl ]; then  # BEFORE="... RAG_LLM_STEP_TRACE=$W/steps-before.jsonl": its timeline too
    for prefix in before-chat-S $(echo $pairs | sed 's/service-/before-/g'); do
      python3 bench/device/timeline.py $OUT/http.json $W/steps-before.jsonl $OUT/batched-bench.jsonl \
        --prefix $prefix 2>&1 | tee -a $OUT/timeline.log
    done
    gzip -c $W/steps-before.jsonl > $OUT/steps-before.jsonl.gz
  fi
  tail -c 12000 $W/serve-8000.log > $OUT/serve.log
  grep -h "prompt\|n_ctx\|n_batch" $W/serve-8001.log 2>/dev/null | tail -5 >> $OUT/serve.log
fi
if [ "$step" = profile ]; then  # where the model process's time goes (py-spy --native; parts/py_spy-*.whl)
  [ -x $W/spy/bin/py-spy ] || python3 -m pip install -q --no-index --no-deps --target $W/spy $W/parts/py_spy-*.whl
  SPY=$W/spy/bin/py-spy
  rm -rf $W/data-ask && tar xzf $ASK_DATA -C $W
  serve 8000 $W/data-ask; now=$!
  wait_ready http://127.0.0.1:8000/readyz 240 || exit 1
  STREAMS=${PROFILE_STREAMS:-16} load 8000 service-chat-warm model --kind chat --rounds 3 --api-key $KEY > /dev/null
  STREAMS=${PROFILE_STREAMS:-16} load 8000 service-chat-profiled model --kind chat --rounds ${PROFILE_ROUNDS:-30} \
    --api-key $KEY > /dev/null & client=$!
  sleep 2
  child=$(pgrep -f "rag.generation.child" | head -1)
  $SPY record --native --threads -r ${RATE:-1000} -d ${SPY_S:-8} -p $child -f raw -o $OUT/profile-http.txt \
    > $W/spy.log 2>&1; tail -2 $W/spy.log
  wait $client; kill $now; wait $now
  # the same scheduler in this process (no HTTP, no model process): steptrace.py's bursts
  $SPY record --native --threads -r ${RATE:-1000} -f raw -o $OUT/profile-inproc.txt -- python3 \
    bench/device/steptrace.py $M --streams ${PROFILE_STREAMS:-16} --rounds 10 > $W/spy2.log 2>&1; tail -2 $W/spy2.log
  # llama.cpp's calls alone (rawdecode.py: fixed tokens, no scheduler)
  $SPY record --native --threads -r ${RATE:-1000} -f raw -o $OUT/profile-raw.txt -- python3 \
    bench/device/rawdecode.py $M --service --greedy-only > $W/spy3.log 2>&1; tail -2 $W/spy3.log
  exit 0
fi
if [ "$step" = peer ]; then
  LOG=peer.log; : > $OUT/peer.log
  for variant in default bs; do
    flags=""; [ $variant = bs ] && flags="-bs"
    $B/llama-server -m $M -ngl 99 -fa on -np $NP -c $((NP * SLOT)) -b 2048 -ub 512 -t 16 $flags \
      --host 127.0.0.1 --port 8080 > $W/llama-server-$variant.log 2>&1 &
    pid=$!
    wait_ready http://127.0.0.1:8080/health 120 && load 8080 llama-server-$variant model --kind chat \
      --rounds $PEER_ROUNDS
    [ $variant = bs ] && load 8080 llama-server-bs-sampled model --kind chat --rounds $PEER_ROUNDS $SAMPLING
    kill $pid; wait $pid
  done
  merge $OUT/peer.json llama-server
  grep -h "n_ctx_slot\|initializing\|backend" $W/llama-server-*.log | head -20 > $OUT/llama-server.log
fi

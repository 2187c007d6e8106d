#!/bin/bash
# llama-batched-bench's T for S sequences, as bench/load.py --reference wants it:
#   M=model.gguf B=build/bin NP=64 SLOT=1024 batched_t.sh S [jsonl]
# prints "T TOKENS" (seconds for the whole run of S sequences; prompt + generated
# tokens of each) from a run of -npl 1,S (one sequence first: the first -npl
# value's prompt phase runs cold, the services' never does), with e2e.sh's
# batched_bench settings; with a second argument, appends the S row to that file.
# NPP, NTG, NGL (512, 128, 99) only for trying it on a CPU.
set -o pipefail
S=$1
row=$($B/llama-batched-bench -m $M -t 16 -tb 16 -c $((NP * SLOT)) -b 2048 -ub 512 -npp ${NPP:-512} -ntg ${NTG:-128} \
  -npl 1,$S -ngl ${NGL:-99} -fa on --output-format jsonl 2>/dev/null | grep '^{' | grep "\"pl\": $S," | tail -1) || exit 1
[ -n "$2" ] && echo "$row" >> "$2"
python3 -c 'import json, sys; r = json.loads(sys.argv[1]); print(r["t"], r["pp"] + r["tg"])' "$row"

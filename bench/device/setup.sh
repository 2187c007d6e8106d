#!/bin/bash
# Device call 1, from the repository root, carrying .device/c0 (made here by
# bench/device/bundle.sh): unpack llama.cpp and the bindings under /root/w,
# install the wheels into /root/w/site, and start the CUDA build of llama.cpp
# (libraries, llama-bench, llama-batched-bench, llama-server; $TARGETS) in the
# background. Then one call per folder: bench/device/part.sh .device/m01 … m10 and c6 (the
# model's parts, the embedder and the /ask data directory). With bench/device/prebuild.sh's
# folder (.device/c7), bench/device/prebuilt.sh .device/c7 right after this call takes the
# place of the build where those binaries run here.
set -e
R=$PWD/.device/c0
mkdir -p /root/w/parts && cd /root/w
tar xzf $R/llama.cpp.tgz
(cd llama.cpp && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64) > src.sha256  # prebuilt.sh: built from the same source?
rm -rf llama_cpp && tar xzf $R/llama_cpp.tgz && mkdir -p llama_cpp/lib
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /root/w/site $R/whl/*.whl 2>&1 | tail -3
python3 --version; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
cmake -S llama.cpp -B build -G Ninja -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF \
  -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=ON \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DBUILD_SHARED_LIBS=ON > cmake.log 2>&1 || { tail -30 cmake.log; exit 1; }
setsid nohup bash -c "cmake --build build -j16 --target ${TARGETS:-llama llama-bench llama-batched-bench llama-server} > build.log 2>&1; echo \$? > build.done" < /dev/null > /dev/null 2>&1 &
sleep 3; tail -2 build.log

#!/bin/bash
# Here (a dev machine with this repository's .venv and the sdist in .device/cache, bundle.sh step 1):
# builds llama.cpp for the CPU with scripts/patches/ applied (the CUDA build's patches; a CPU install
# is the stock package) and runs the real-model test of llama_decode_chained against it, which a stock
# build skips. ~8 min on 2 cores the first time; the build is kept in .device/cache/cpu-patched.
#   bash bench/device/cpu_patched.sh [pytest -k expression, default: chained]
set -euo pipefail
LCP=${LCP:-0.3.36}
D=$PWD/.device/cache
C=$D/cpu-patched
SDIST=$D/llama_cpp_python-$LCP.tar.gz
[ -f "$SDIST" ] || .venv/bin/python -m pip download -q --no-deps --no-binary :all: llama-cpp-python==$LCP -d $D
rm -rf $C/src && mkdir -p $C/src && tar xzf "$SDIST" -C $C/src
L=$C/src/llama_cpp_python-$LCP/vendor/llama.cpp
for p in scripts/patches/llama.cpp-*.patch; do patch -s -p1 -d $L < "$p"; done
cmake -S $L -B $C/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=OFF \
  -DGGML_AVX=on -DGGML_AVX2=on -DGGML_FMA=on -DGGML_F16C=on -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF > $C/cmake.log
cmake --build $C/build --target llama -j"$(nproc)" > $C/build.log
# llama-cpp-python's package with these libraries in place of its own
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf $C/pkg && mkdir -p $C/pkg && cp -r "$SITE/llama_cpp" $C/pkg/ && cp -a $C/build/bin/*.so* $C/pkg/llama_cpp/lib/
PYTHONPATH=$C/pkg .venv/bin/python -m pytest -q -p no:cacheprovider tests/integration/test_llm_batching.py -k "${1:-chained}"

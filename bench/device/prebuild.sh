#!/bin/bash
# Here, from the repository root, after bench/device/bundle.sh, on a machine with
# CUDA's nvcc of the GPU machine's major version (13 there and here, /usr/local/cuda;
# NVCC=... for another): builds .device/c0/llama.cpp.tgz as setup.sh builds it on the
# GPU machine (CUDA sm_90, -DGGML_NATIVE=OFF, shared libraries, the same targets), so
# that a session need not wait 2.5-5 device minutes for that build:
#
#   cuBLAS  headers and libraries of the nvidia-cublas wheel of the same major version
#           (this machine's toolkit has none); the GPU machine's own are used there
#   libcuda a stub that only names libcuda.so.1 (the driver's, on the GPU machine);
#           executables link with --allow-shlib-undefined
#   RPATH   $ORIGIN first: the libraries are found beside the executables
#
# Out: .device/c7/prebuilt.tgz.0 and .device/c9/prebuilt.tgz.1 (build/bin's executables and libraries, in two halves) and
# .device/c7/prebuilt.src (a sha256 of the llama.cpp source it was built from); llama-server
# and llama-bench, when TARGETS has them, with the libraries only they use, in
# .device/c8/prebuilt-tools.tgz, with test-backend-ops when TARGETS has it (c7 alone is ~45 MB, and one device call carries 64 MiB with
# the ~19 MB working tree; session 20's c7 with them was 47.7 MB, too much). On the
# device, after setup.sh (which starts building there anyway): bash
# bench/device/prebuilt.sh .device/c7 uses these where they load and find the GPU,
# and stops that build; else the build goes on. 21 min on 2 cores; run again with more
# TARGETS (e.g. llama-bench llama-server too), it builds only what is missing; on a changed
# llama.cpp.tgz (a patch edited) only what the changed files touch (FRESH=1: from scratch).
set -euo pipefail
PY=${PY:-.venv/bin/python}
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
TARGETS=${TARGETS:-llama llama-batched-bench}  # setup.sh's TARGETS of the sessions' runs
D=$PWD/.device
P=$D/cache/prebuild
SRC=$D/c0/llama.cpp.tgz
[ -f "$SRC" ] || { echo "no $SRC: run bench/device/bundle.sh first" >&2; exit 1; }
MAJOR=$($NVCC --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
mkdir -p $P/stub $P/wheel $D/c7
C=$P/cublas/nvidia/cu$MAJOR
if [ ! -f $C/lib/libcublas.so.$MAJOR ]; then
  $PY -m pip download -q --no-deps "nvidia-cublas==$MAJOR.*" -d $P/wheel
  rm -rf $P/cublas && mkdir -p $P/cublas
  $PY -m zipfile -e "$(ls $P/wheel/nvidia_cublas-$MAJOR.*.whl | tail -1)" $P/cublas
fi
ln -sf libcublas.so.$MAJOR $C/lib/libcublas.so
ln -sf libcublasLt.so.$MAJOR $C/lib/libcublasLt.so
echo "void rag_cuda_stub(void) {}" | gcc -shared -fPIC -x c - -Wl,-soname,libcuda.so.1 -o $P/stub/libcuda.so
# The same llama.cpp.tgz as the last build here: built on (more TARGETS take minutes, not 21).
TGZ=$(sha256sum "$SRC" | cut -c1-64)
if [ -d $P/build ] && [ "$(cat $P/tgz.sha256 2>/dev/null)" = "$TGZ" ]; then
  echo "building on the last build (the same $SRC)"
elif [ -d $P/build ] && [ -d $P/llama.cpp ] && [ "${FRESH:-0}" = 0 ]; then
  # Another source (a patch changed, say): copied over the last one file by file where the content
  # differs (rsync -c leaves the others' times alone), so the build redoes only what those touch.
  rm -rf $P/new && mkdir -p $P/new && tar xzf "$SRC" -C $P/new
  echo "building on the last build; changed: $(rsync -rci --delete $P/new/llama.cpp/ $P/llama.cpp/ | awk '{print $2}' | tr '\n' ' ')"
  rm -rf $P/new $P/tgz.sha256
else
  rm -rf $P/llama.cpp $P/build $P/tgz.sha256 && tar xzf "$SRC" -C $P
fi
(cd $P/llama.cpp && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64) > $P/src.sha256
# setup.sh's flags, then what this machine needs to build them.
cmake -S $P/llama.cpp -B $P/build -G Ninja -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF \
  -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=ON \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DBUILD_SHARED_LIBS=ON \
  -DCMAKE_CUDA_COMPILER=$NVCC -DCMAKE_BUILD_RPATH='$ORIGIN' \
  -DCUDA_cublas_LIBRARY=$C/lib/libcublas.so -DCUDA_cublasLt_LIBRARY=$C/lib/libcublasLt.so \
  -DCUDA_cuda_driver_LIBRARY=$P/stub/libcuda.so -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined \
  -DCMAKE_CUDA_FLAGS="-I$C/include" -DCMAKE_CXX_FLAGS="-I$C/include" > $P/cmake.log 2>&1 \
  || { tail -30 $P/cmake.log; exit 1; }
cmake --build $P/build -j"$(nproc)" --target $TARGETS > $P/build.log 2>&1 || { tail -30 $P/build.log; exit 1; }
# The stub named no symbol, so the linker left libcuda.so.1 out of libggml-cuda.so's
# NEEDED list: now it defines the driver calls the library makes, and the library is
# linked again with it.
nm -D --undefined-only $P/build/bin/libggml-cuda.so | awk '{print $2}' | grep -E '^cu[A-Z]' | sort -u \
  | sed 's/.*/int &(void) { return 0; }/' | gcc -shared -fPIC -x c - -Wl,-soname,libcuda.so.1 -o $P/stub/libcuda.so
cmake --build $P/build -j"$(nproc)" --target $TARGETS >> $P/build.log 2>&1 || { tail -30 $P/build.log; exit 1; }
readelf -d $P/build/bin/libggml-cuda.so | grep -q 'libcuda.so.1' || { echo "libggml-cuda.so does not name libcuda.so.1" >&2; exit 1; }
TOOLS='^(llama-server|llama-bench|test-backend-ops|libllama-server-impl\.so|libllama-bench-impl\.so|libmtmd\.so.*)$'
(cd $P/build/bin && tar czf $D/c7/prebuilt.tgz $(ls | grep -E '^(llama-[a-z-]+|lib.*\.so.*)$' | grep -vE "$TOOLS"))
mkdir -p $D/c8 && rm -f $D/c8/prebuilt-tools.tgz
tools=$(cd $P/build/bin && ls | grep -E "$TOOLS" || true)
[ -z "$tools" ] || (cd $P/build/bin && tar czf $D/c8/prebuilt-tools.tgz $tools)
# In two halves, c7 and c9: the whole (45.5 MB) beside the 21 MB working tree was refused in session 23
# (one call carries 64 MiB). prebuilt.sh joins them: part.sh .device/c9 first, then prebuilt.sh .device/c7.
rm -rf $D/c9 && mkdir -p $D/c9 && rm -f $D/c7/prebuilt.tgz.*
(cd $D/c7 && split -n 2 -d -a 1 prebuilt.tgz prebuilt.tgz. && rm prebuilt.tgz && mv prebuilt.tgz.1 $D/c9/)
cp $P/src.sha256 $D/c7/prebuilt.src
echo "$TGZ" > $P/tgz.sha256
ls -la $D/c7 $D/c8 $D/c9

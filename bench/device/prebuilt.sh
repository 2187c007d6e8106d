#!/bin/bash
# Device, from the repository root, right after setup.sh, carrying the folder that
# bench/device/prebuild.sh filled here (.device/c7, after part.sh .device/c9): when its llama.cpp was built from
# the same llama.cpp.tgz that setup.sh unpacked, its libraries load and the bindings
# find the GPU through them, it takes the place of the build that setup.sh started
# (that build is stopped, build.done says 0). Otherwise nothing changes and the build
# goes on. Says which. llama-server and llama-bench (prebuild.sh's .device/c8, carried to
# /root/w/parts by part.sh .device/c8 before this call) come with it when carried.
R=$PWD/$1
W=/root/w
cd $W
# prebuild.sh's two halves: .device/c9's, kept in parts/ by an earlier call (part.sh .device/c9), and this one's.
[ -f $R/prebuilt.tgz ] || [ ! -f $R/prebuilt.tgz.0 ] || [ ! -f $W/parts/prebuilt.tgz.1 ] \
  || cat $R/prebuilt.tgz.0 $W/parts/prebuilt.tgz.1 > $W/prebuilt.tgz
[ -f $R/prebuilt.tgz ] && cp $R/prebuilt.tgz $W/prebuilt.tgz
[ -f $W/prebuilt.tgz ] || { echo "prebuilt: none carried; building here"; exit 0; }
want=$(cat $R/prebuilt.src)
have=$(cat src.sha256 2>/dev/null)
[ "$want" = "$have" ] || { echo "prebuilt: built from another llama.cpp ($want, here $have); building here"; exit 0; }
rm -rf prebuilt llama_cpp_pre && mkdir -p prebuilt && tar xzf $W/prebuilt.tgz -C prebuilt
[ ! -f $W/parts/prebuilt-tools.tgz ] || tar xzf $W/parts/prebuilt-tools.tgz -C prebuilt
missing=$(for f in prebuilt/*.so* prebuilt/llama-*; do ldd $f; done 2>&1 | grep "not found" | sort -u)
[ -z "$missing" ] || { echo "prebuilt: unresolved libraries: $missing; building here"; exit 0; }
cp -r llama_cpp llama_cpp_pre && cp -a prebuilt/*.so* llama_cpp_pre/lib/
mkdir -p pre_check && rm -rf pre_check/llama_cpp && mv llama_cpp_pre pre_check/llama_cpp
gpu=$(cd pre_check && PYTHONPATH=$W/pre_check:$W/site python3 -c "import llama_cpp as l; l.llama_backend_init(); print(int(l.llama_supports_gpu_offload()))" 2>&1 | tail -1)
rm -rf pre_check
[ "$gpu" = 1 ] || { echo "prebuilt: no GPU offload through it ($gpu); building here"; exit 0; }
# Stop setup.sh's build (its whole session, so that it writes no build.done), then take these.
pid=$(pgrep -f "cmake --build build" | head -1)
[ -n "$pid" ] && pkill -KILL -s "$(ps -o sid= -p $pid | tr -d ' ')"
sleep 1
rm -rf build/bin && mkdir -p build/bin && cp -a prebuilt/. build/bin/ && echo 0 > build.done
echo "prebuilt: in use ($(ls build/bin | tr '\n' ' '))"

#!/bin/sh
# spec/support/cuda_emu/build.sh OUT_DIR [LIB_DIR] — builds OUT_DIR/libsao_cuda.so, the CPU emulation of the
# CUDA backend: every kernels/cuda/*.cu turned into C++ (rewrite.lua), compiled against the fake
# CUDA / cuBLAS(Lt) / cuDNN / NCCL headers here and run by emu.cpp, cudnn_emu.cpp, cudnn_graph_emu.cpp and
# nccl_emu.cpp (the fake cuDNN and NCCL are linked in: SAO_CUDNN_LINKED and SAO_NCCL_LINKED make
# kernels/cuda/cudnn.cu and nccl.cu find them by name instead of dlopen),
# linked like the real backend (against LIB_DIR/libsao.so, default build/, exporting only sao_cuda_backend_v1). `make test-gpu-emu` builds it and runs the
# GPU specs with SAO_CUDA_LIB pointing at it. Needs g++ and luajit; no CUDA toolkit.
set -e
OUT=${1:-build/emu}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
LIB=$(cd "${2:-$ROOT/build}" && pwd)
mkdir -p "$OUT/src" "$OUT/obj"
CXXF="-std=c++17 -O1 -g -fPIC -ffp-contract=off -D_GNU_SOURCE -DSAO_WITH_CUDA -DSAO_CUDNN_LINKED -DSAO_NCCL_LINKED -I$HERE -I$ROOT/kernels/cuda \
  -I$ROOT/runtime/include -I$ROOT/runtime -Wall -Wno-unused-function -Wno-unknown-pragmas -Wno-unused-variable"
pids=""
for f in "$ROOT"/kernels/cuda/*.cu; do
  n=$(basename "$f" .cu)
  luajit "$HERE/rewrite.lua" "$f" "$OUT/src/$n.cpp"
  g++ $CXXF -c "$OUT/src/$n.cpp" -o "$OUT/obj/$n.o" & pids="$pids $!"
done
g++ $CXXF -c "$HERE/emu.cpp" -o "$OUT/obj/emu_runtime.o" & pids="$pids $!"
luajit "$HERE/rewrite.lua" "$HERE/selftest.cu" "$OUT/src/selftest.cpp"
g++ $CXXF -c "$OUT/src/selftest.cpp" -o "$OUT/selftest.o" & pids="$pids $!"
g++ $CXXF -c "$HERE/cudnn_emu.cpp" -o "$OUT/obj/emu_cudnn.o" & pids="$pids $!"
g++ $CXXF -c "$HERE/cudnn_graph_emu.cpp" -o "$OUT/obj/emu_cudnn_graph.o" & pids="$pids $!"
g++ $CXXF -c "$HERE/nccl_emu.cpp" -o "$OUT/obj/emu_nccl.o" & pids="$pids $!"
for p in $pids; do wait "$p"; done   # any failed compile stops the build here
g++ -shared -o "$OUT/libsao_cuda.so" "$OUT"/obj/*.o -L"$LIB" -lsao -Wl,-rpath,"$LIB" \
  -Wl,--no-undefined -Wl,--version-script="$ROOT/kernels/cuda/backend.map" -lpthread
# the emulator's own check: its thread orders (EMU_SCHED) expose racy kernels (selftest.cu)
g++ -o "$OUT/emu_selftest" "$OUT/selftest.o" "$OUT/obj/emu_runtime.o" -lpthread
"$OUT/emu_selftest" > "$OUT/emu_selftest.log" 2>&1 || { cat "$OUT/emu_selftest.log"; echo "build.sh: the emulator's self-test failed" >&2; exit 1; }
tail -1 "$OUT/emu_selftest.log"
echo "built $OUT/libsao_cuda.so (SAO_CUDA_LIB=$OUT/libsao_cuda.so runs the CUDA specs on it)"

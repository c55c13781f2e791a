#!/bin/sh
# bench/gpu_check.sh — run THERE, on a lent GPU machine, from the repository root, as the device
# tool's command, with .gpu/ (made here by bench/gpu_kit.sh) carried:
#
#   command "sh bench/gpu_check.sh", carry [".gpu"], timeout_s 570
#
# It unpacks the kit into .gpu/root, prints nvidia-smi and ldd of the libraries (so a missing one is
# visible), probes sao's CUDA backend, runs the GPU specs (sh spec/run.sh --tags=gpu), then every
# bench/gpu_*.lua, each step under its own timeout, within GPU_CHECK_BUDGET seconds in all (520:
# 8.7 minutes; each benchmark gets at most GPU_CHECK_BENCH_S and no more than its share of the time
# left). A failing step is reported and the next one still runs. It writes, under $OUT
# (./out/gpu-check when OUT is unset):
#   gpu-check.log     everything this script printed (device, environment, ldd, probe, summary)
#   gpu-tests.txt     the spec run's output, ending with "N passed, N failed, N skipped"
#   gpu-tolerances.jsonl  one line per tensor comparison of the specs: where, max abs error, tolerance
#   gpu-bench.jsonl   the benchmarks' JSON lines, after one "gpu_check" line naming the GPU, and
#                     one "gpu_check" status line after each benchmark (rc, seconds, lines)
#   gpu-bench.log     the benchmarks' whole output (stdout and stderr)
#   kit-info.txt      how the kit was made (commit, flags, Debian packages)
#   sanitize-TOOL.txt compute-sanitizer's report per tool, when GPU_CHECK_SANITIZE asks for it
#
# Environment: OUT; GPU_CHECK_BUDGET (s, default 520), GPU_CHECK_TEST_S (cap for the spec run,
# default 200), GPU_CHECK_BENCH_S (cap per benchmark, default 260), GPU_CHECK_SANITIZE (tools of
# compute-sanitizer to run on the kernel specs after them, e.g. "memcheck racecheck"; none by
# default) with GPU_CHECK_SANITIZE_S (cap per tool, default 120), GPU_CHECK_KEEP_ROOT=1 keeps
# .gpu/root afterwards (it is removed by default: unpacked, .gpu/ would be too big to carry).
# Nothing is installed outside the repository: the kit's libraries are found through their
# RUNPATHs, so no LD_LIBRARY_PATH is set for them (one is set only for CUDA libraries that
# libsao_cuda.so cannot find by itself). SAO_CUDNN_LIB is set to the first libcudnn.so.9 found
# (toolkit, system, python's nvidia/cudnn/lib) unless already set; none found is not an error.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
KIT=$ROOT/.gpu
R=$KIT/root
MA=x86_64-linux-gnu
OUT=${OUT:-$ROOT/out/gpu-check}
BUDGET=${GPU_CHECK_BUDGET:-520}
TEST_S=${GPU_CHECK_TEST_S:-200}
BENCH_S=${GPU_CHECK_BENCH_S:-260}
START=$(date +%s)
mkdir -p "$OUT" || exit 1

now() { date +%s; }
left() { echo $((START + BUDGET - $(now))); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
note() { printf '\n== %s  [t+%ds]\n' "$*" $(($(now) - START)); }
STEPS=""
FAILED=0
record() {   # record STEP STATUS: one line of the final summary; a status not "ok" counts as failed
  STEPS="$STEPS$(printf '%-22s %s' "$1" "$2")"$'\n'
  case "$2" in ok*) ;; *) FAILED=1 ;; esac
}
json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr -d '\n\r\t')"; }

cleanup() {
  [ "${GPU_CHECK_KEEP_ROOT:-0}" = 1 ] || rm -rf "$R"
}

main() {
  trap cleanup EXIT
  trap 'echo "gpu_check.sh: stopped by a signal"; exit 143' INT TERM

  # ---- the machine --------------------------------------------------------------------------
  note "machine"
  echo "date: $(date -u '+%Y-%m-%dT%H:%M:%SZ')   host: $(uname -n)   $(uname -srm)"
  [ -r /etc/os-release ] && echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")   $(ldd --version 2>&1 | head -1)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//') x $(nproc 2>/dev/null)"
  echo "repository: $ROOT   results: $OUT   budget: ${BUDGET}s"
  GPU=none
  GPU_INFO=none
  if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 30 nvidia-smi; rc=$?
    GPU=$(timeout 20 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
    GPU_INFO=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap \
                 --format=csv,noheader 2>/dev/null | head -1)
    [ -n "$GPU" ] || GPU=none
    [ -n "$GPU_INFO" ] || GPU_INFO=$GPU
    [ "$rc" -eq 0 ] && record nvidia-smi "ok" || record nvidia-smi "rc $rc"
  else
    echo "nvidia-smi: not found"
    record nvidia-smi "not found"
  fi
  echo "gpu: $GPU_INFO"
  if [ -f "$KIT/kit-info.txt" ]; then
    cp "$KIT/kit-info.txt" "$OUT/kit-info.txt"
    echo "kit: $(head -2 "$KIT/kit-info.txt" | tr '\n' ' ')"
  fi
  COMMIT=$(sed -n 's/^commit: //p' "$KIT/kit-info.txt" 2>/dev/null)
  # the kit's binaries against the C sources beside them (the Lua code and specs run from this tree)
  KIT_SOURCES=$(sed -n 's/^sources: \([0-9a-f]*\).*/\1/p' "$KIT/kit-info.txt" 2>/dev/null)
  TREE_SOURCES=$(sh bench/kit_sources.sh 2>/dev/null)
  if [ ! -f "$KIT/kit-info.txt" ]; then
    :   # no kit: reported below
  elif [ -z "$KIT_SOURCES" ]; then
    echo "WARNING: the kit does not say which sources it was built from (an older gpu_kit.sh)"
    record kit "WARNING: sources unknown"
  elif [ "$KIT_SOURCES" != "$TREE_SOURCES" ]; then
    echo "WARNING: STALE KIT: built from sources $KIT_SOURCES, this tree's are $TREE_SOURCES:" \
      "its libraries do not match the Lua code and specs here (run sh bench/gpu_kit.sh right before the call)"
    record kit "STALE (sources $KIT_SOURCES, tree $TREE_SOURCES)"
  else
    echo "kit sources: $KIT_SOURCES, the same as this tree's"
  fi
  {
    printf '{"gpu_check":"start","gpu":%s,"gpu_info":%s,"date":%s,"kit_commit":%s}\n' \
      "$(json_str "$GPU")" "$(json_str "$GPU_INFO")" "$(json_str "$(date -u '+%Y-%m-%dT%H:%M:%SZ')")" \
      "$(json_str "${COMMIT:-unknown}")"
  } >> "$OUT/gpu-bench.jsonl"

  # ---- the kit ------------------------------------------------------------------------------
  note "unpacking .gpu/root.tar.xz"
  if [ ! -f "$KIT/root.tar.xz" ] || [ ! -f "$KIT/build/libsao.so" ]; then
    echo "no kit in $KIT: run sh bench/gpu_kit.sh on the build machine and carry .gpu"
    record kit "missing"
    finish; return
  fi
  chmod 755 "$KIT/xz/xz" "$KIT/bin/busted" "$KIT/sao" 2>/dev/null   # in case the copy lost the x bits
  rm -rf "$R"; mkdir -p "$R"
  if LD_LIBRARY_PATH="$KIT/xz" "$KIT/xz/xz" -dc "$KIT/root.tar.xz" | tar -C "$R" -xf -; then
    record unpack "ok (the kit's xz)"
  elif rm -rf "$R" && mkdir -p "$R" && xz -dc "$KIT/root.tar.xz" | tar -C "$R" -xf -; then
    record unpack "ok (the image's xz)"
  else
    record unpack "FAILED"
    finish; return
  fi
  echo "$(du -sh "$R" | cut -f1) in $R"

  # ./sao: the specs and benchmarks run $ROOT/sao; the kit's finds .gpu/build and .gpu/root by RUNPATH
  if [ -e ./sao ] && ! grep -qF '$ORIGIN/.gpu/build' ./sao; then
    echo "WARNING: ./sao is not the kit's (a local build): left as it is, so specs that run ./sao use it"
    record ./sao "WARNING: not the kit's"
  else
    cp "$KIT/sao" ./sao.gpu-check.tmp && mv -f ./sao.gpu-check.tmp ./sao && chmod 755 ./sao
  fi

  export PATH="$KIT/bin:$R/usr/bin:$PATH"
  export LUA_PATH="./?.lua;./?/init.lua;$R/usr/share/lua/5.1/?.lua;$R/usr/share/lua/5.1/?/init.lua;$R/usr/share/luajit-2.1.0-beta3/?.lua"
  export LUA_CPATH="./?.so;$R/usr/lib/$MA/lua/5.1/?.so"
  export SAO_LIB="$KIT/build/libsao.so" SAO_CDEF="$KIT/build/sao_cdef.h"

  # CUDA libraries libsao_cuda.so does not find by itself (its RUNPATH has /usr/local/cuda/lib64):
  # look in the toolkit's other folders, python's nvidia/* wheels and the driver's folder
  missing=$(ldd "$KIT/build/libsao_cuda.so" 2>/dev/null | awk '$3 == "not" {print $1}')
  if [ -n "$missing" ]; then
    pybin=$(dirname "$(command -v python3 2>/dev/null || echo /nonexistent/bin/python3)")
    extra=""
    for so in $missing; do
      for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 \
               "$pybin"/../lib/python3*/site-packages/nvidia/*/lib /opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib \
               /usr/local/lib/python3*/dist-packages/nvidia/*/lib /usr/lib/python3/dist-packages/nvidia/*/lib \
               /usr/local/nvidia/lib64 /usr/lib/$MA; do
        if [ -e "$d/$so" ]; then extra="$extra:$d"; break; fi
      done
    done
    if [ -n "$extra" ]; then
      export LD_LIBRARY_PATH="${extra#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      echo "LD_LIBRARY_PATH for $(echo $missing): $LD_LIBRARY_PATH"
    fi
  fi

  # cuDNN: libsao_cuda.so dlopens it when a convolution first wants it ($SAO_CUDNN_LIB, else
  # libcudnn.so.9 through the loader's search, which misses a cuDNN that only PyTorch's wheel
  # brings). Point SAO_CUDNN_LIB at the first libcudnn.so.9 found in the toolkit's and the system's
  # folders or python's nvidia/cudnn/lib (its sub-libraries load from its own folder, by their
  # RUNPATH $ORIGIN: no LD_LIBRARY_PATH). None: the convolutions run as GEMMs, nothing else changes.
  if [ -z "${SAO_CUDNN_LIB:-}" ]; then
    pybin=$(dirname "$(command -v python3 2>/dev/null || echo /nonexistent/bin/python3)")
    pycudnn=$(timeout 30 python3 -c 'import nvidia.cudnn as m, os; print(os.path.join(list(m.__path__)[0], "lib"))' 2>/dev/null)
    for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda-*/lib64 /usr/local/cuda-*/lib /usr/lib/$MA \
             ${pycudnn:+"$pycudnn"} "$pybin"/../lib/python3*/site-packages/nvidia/cudnn/lib \
             /usr/local/lib/python3*/dist-packages/nvidia/cudnn/lib /usr/lib/python3/dist-packages/nvidia/cudnn/lib; do
      if [ -e "$d/libcudnn.so.9" ]; then export SAO_CUDNN_LIB="$d/libcudnn.so.9"; break; fi
    done
  fi
  if [ -n "${SAO_CUDNN_LIB:-}" ]; then
    echo "cuDNN: SAO_CUDNN_LIB=$SAO_CUDNN_LIB"
  else
    echo "cuDNN: no libcudnn.so.9 found (the convolutions run as im2col + cuBLASLt GEMMs; the cuDNN specs are pending)"
  fi

  # NCCL: dlopened as cuDNN is ($SAO_NCCL_LIB, else libnccl.so.2). The same search, python's
  # nvidia/nccl/lib included. None: the NCCL specs are pending; the rest is unchanged.
  if [ -z "${SAO_NCCL_LIB:-}" ]; then
    pynccl=$(timeout 30 python3 -c 'import nvidia.nccl as m, os; print(os.path.join(list(m.__path__)[0], "lib"))' 2>/dev/null)
    for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda-*/lib64 /usr/lib/$MA ${pynccl:+"$pynccl"} \
             /usr/local/lib/python3*/dist-packages/nvidia/nccl/lib /usr/lib/python3/dist-packages/nvidia/nccl/lib; do
      if [ -e "$d/libnccl.so.2" ]; then export SAO_NCCL_LIB="$d/libnccl.so.2"; break; fi
    done
  fi
  echo "NCCL: ${SAO_NCCL_LIB:-no libnccl.so.2 found (the NCCL specs are pending)}"

  note "environment"
  echo "PATH=$PATH"
  echo "LUA_PATH=$LUA_PATH"
  echo "LUA_CPATH=$LUA_CPATH"
  echo "SAO_LIB=$SAO_LIB SAO_CDEF=$SAO_CDEF LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-} SAO_CUDNN_LIB=${SAO_CUDNN_LIB:-} SAO_NCCL_LIB=${SAO_NCCL_LIB:-}"
  echo "luajit: $(command -v luajit) ($(luajit -v 2>&1))"
  echo "busted: $(command -v busted)"

  note "ldd"
  nf=0
  for f in "$ROOT/sao" "$SAO_LIB" "$KIT/build/libsao_cuda.so" "$(command -v luajit)"; do
    echo "-- ldd $f"
    ldd "$f" 2>&1
    n=$(ldd "$f" 2>&1 | grep -c 'not found')
    nf=$((nf + n))
  done
  echo "-- libraries resolved from outside the kit (the base system's and CUDA's):"
  for f in "$ROOT/sao" "$SAO_LIB" "$KIT/build/libsao_cuda.so"; do ldd "$f" 2>/dev/null; done |
    awk '$2 == "=>" {print $1, $3}' | sort -u | grep -v " $KIT/" | sed 's/^/   /'
  [ "$nf" -eq 0 ] && record ldd "ok" || record ldd "$nf not found"

  note "sao's CUDA backend"
  SAO_CUDNN_LOG=1 timeout 60 ./sao -e '
    local sao = require "sao"
    print("has_cuda", sao.has_cuda(), "device count", sao.cuda.count())
    print("unavailable", sao.cuda.unavailable())
    for _, d in ipairs(sao.cuda.devices()) do
      print("device", d.index, d.name, d.memory_bytes, d.capability)
    end
    print("cudnn", sao.cuda.cudnn())
    print("nccl", require("sao.nccl").available())
    print("conv_backend", sao.cuda.conv_backend())
    -- does this cuDNN build plans for the unified SDPA operations at SAO'"'"'s self-attention shape?
    if sao.cuda.count() > 0 then
      local ffi, C = require "ffi", sao.C
      local B, H, T, D = 2, 24, 1025, 64
      local n = B * H * T * D
      local t = {}
      for i, k in ipairs { "q", "k", "v", "dout", "dq", "dk", "dv" } do t[k] = sao.randn { n, seed = i }:to("cuda") end
      t.out, t.lse = sao.zeros(n):to("cuda"), sao.zeros(B * H * T):to("cuda")
      local desc = ffi.new("sao_attn_desc", { B = B, H = H, Hkv = H, T = T, M = T, D = D })
      sao.cuda.precision("bf16")
      sao.cuda.attention_impl("cudnn")
      local ok, err = pcall(function()
        sao.check(C.sao_cuda_attention_forward(sao.ctx, desc, t.q:data(), t.k:data(), t.v:data(), nil, nil,
          t.out:data(), t.lse:data()))
        sao.check(C.sao_cuda_attention_backward(sao.ctx, desc, t.q:data(), t.k:data(), t.v:data(), nil, nil,
          t.out:data(), t.lse:data(), t.dout:data(), t.dq:data(), t.dk:data(), t.dv:data(), nil))
      end)
      sao.cuda.attention_impl("auto")
      sao.cuda.precision("fp32")
      print("sdpa (forwards, backwards, last refusal)", sao.cuda.sdpa())
      if not ok then print("sdpa error", err) end
    end' 2>&1
  rc=$?
  [ "$rc" -eq 0 ] && record probe "ok" || record probe "rc $rc"

  # ---- the GPU specs ----------------------------------------------------------------------------
  t=$(min "$TEST_S" $(($(left) - 30)))
  note "GPU specs: sh spec/run.sh --tags=gpu (timeout ${t}s)"
  printf '# gpu: %s\n# date: %s\n# kit: commit %s\n' "$GPU_INFO" "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" \
    "${COMMIT:-unknown}" > "$OUT/gpu-tests.txt"
  if [ "$t" -lt 30 ]; then
    echo "no time left for the specs" | tee -a "$OUT/gpu-tests.txt"
    record specs "SKIPPED (no time left)"
  else
    t0=$(now)
    SAO_TOL_LOG="$OUT/gpu-tolerances.jsonl" timeout -k 10 "$t" sh spec/run.sh --tags=gpu 2>&1 | tee -a "$OUT/gpu-tests.txt"
    rc=${PIPESTATUS[0]}
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$OUT/gpu-tests.txt" | tail -1)
    case "$rc" in
      124|137) echo "TIMED OUT after ${t}s" | tee -a "$OUT/gpu-tests.txt"
               record specs "TIMED OUT after ${t}s" ;;
      0) record specs "ok: $summary ($(($(now) - t0))s)" ;;
      *) record specs "rc $rc: ${summary:-no summary} ($(($(now) - t0))s)" ;;
    esac
  fi

  # ---- compute-sanitizer on the kernel specs (opt-in: GPU_CHECK_SANITIZE="memcheck racecheck") ----
  # The emulation checks races by thread order (spec/cuda_sched_spec.lua) but cannot see an
  # out-of-bounds read inside the device arena; compute-sanitizer sees both on the real kernels.
  # Slow (10x to 100x), so off by default: each tool gets at most GPU_CHECK_SANITIZE_S (120) and
  # runs the op and attention specs; its report goes to sanitize-TOOL.txt.
  for tool in ${GPU_CHECK_SANITIZE:-}; do
    san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)
    t=$(min "${GPU_CHECK_SANITIZE_S:-120}" $(($(left) - 60)))
    if [ -z "$san" ]; then record "sanitize $tool" "SKIPPED (no compute-sanitizer)"; continue; fi
    if [ "$t" -lt 30 ]; then record "sanitize $tool" "SKIPPED (no time left)"; continue; fi
    note "compute-sanitizer --tool $tool (timeout ${t}s)"
    t0=$(now)
    timeout -k 10 "$t" "$san" --tool "$tool" --error-exitcode 97 --print-limit 50 \
      busted --lua=luajit -o TAP spec/cuda_ops_spec.lua spec/cuda_flash_spec.lua > "$OUT/sanitize-$tool.txt" 2>&1
    rc=$?
    tail -n 15 "$OUT/sanitize-$tool.txt"
    case "$rc" in
      0) record "sanitize $tool" "ok ($(($(now) - t0))s)" ;;
      97) record "sanitize $tool" "ERRORS (see sanitize-$tool.txt)" ;;
      124|137) record "sanitize $tool" "TIMED OUT after ${t}s" ;;
      *) record "sanitize $tool" "rc $rc (see sanitize-$tool.txt)" ;;
    esac
  done

  # ---- the GPU benchmarks -------------------------------------------------------------------
  found=0
  set -- $(ls bench/gpu_*.lua 2>/dev/null)
  for b in "$@"; do
    found=1
    # each gets at most BENCH_S, and no more than its share of what is left
    t=$(min "$BENCH_S" $((($(left) - 15) / $#)))
    shift
    if [ "$t" -lt 20 ]; then
      note "$b: skipped, no time left"
      record "$b" "SKIPPED (no time left)"
      printf '{"gpu_check":"bench","file":%s,"skipped":"no time left","gpu":%s}\n' \
        "$(json_str "$b")" "$(json_str "$GPU")" >> "$OUT/gpu-bench.jsonl"
      continue
    fi
    note "$b (timeout ${t}s)"
    printf '\n## %s  %s  gpu: %s\n' "$b" "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" "$GPU_INFO" >> "$OUT/gpu-bench.log"
    before=$(wc -l < "$OUT/gpu-bench.jsonl")
    t0=$(now)
    # (SAO_CUDNN_LOG: each cuDNN conv plan's algorithm, math type and workspace, to gpu-bench.log)
    SAO_CUDNN_LOG=1 timeout -k 10 "$t" ./sao "$b" 2>>"$OUT/gpu-bench.log" | tee -a "$OUT/gpu-bench.log" |
      grep --line-buffered '^{' >> "$OUT/gpu-bench.jsonl"
    rc=${PIPESTATUS[0]}
    secs=$(($(now) - t0))
    lines=$(($(wc -l < "$OUT/gpu-bench.jsonl") - before))
    tail -n "$lines" "$OUT/gpu-bench.jsonl" | head -n 20
    printf '{"gpu_check":"bench","file":%s,"rc":%d,"seconds":%d,"timeout_s":%d,"json_lines":%d,"gpu":%s}\n' \
      "$(json_str "$b")" "$rc" "$secs" "$t" "$lines" "$(json_str "$GPU")" >> "$OUT/gpu-bench.jsonl"
    case "$rc" in
      0) record "$b" "ok: $lines JSON lines (${secs}s)" ;;
      124|137) record "$b" "TIMED OUT after ${t}s ($lines JSON lines)" ;;
      *) record "$b" "rc $rc ($lines JSON lines, ${secs}s; see gpu-bench.log)" ;;
    esac
  done
  [ "$found" = 1 ] || { echo "no bench/gpu_*.lua"; record benchmarks "ok: none found"; }

  finish
}

finish() {
  note "summary"
  echo "gpu: $GPU_INFO"
  printf '%s' "$STEPS"
  echo "results in $OUT:"
  ls -l "$OUT"
  [ "$FAILED" -eq 0 ]
}

: > "$OUT/gpu-check.log"; : > "$OUT/gpu-bench.jsonl"; : > "$OUT/gpu-bench.log"; rm -f "$OUT/gpu-tests.txt" "$OUT/gpu-tolerances.jsonl"
main "$@" 2>&1 | tee -a "$OUT/gpu-check.log"
exit "${PIPESTATUS[0]}"

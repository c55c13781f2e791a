#!/bin/sh
# bench/gpu_kit.sh — run HERE (Debian 12 with nvcc and apt-get): builds sao with CUDA and stages into
# .gpu/ everything a bare, offline CUDA machine lacks, so that bench/gpu_check.sh can run the GPU
# specs and the GPU benchmarks there in one call of the device tool (docs/gpu.md, "Running the GPU
# checks on a lent machine").
#
#   sh bench/gpu_kit.sh        then the device call: command "sh bench/gpu_check.sh", carry [".gpu"]
#
# What it makes (.gpu/ is git-ignored; it is the one path to carry):
#   .gpu/build/libsao.so, libsao_cuda.so, sao_cdef.h   (SAO_LIB / SAO_CDEF point here)
#   .gpu/sao            the ./sao binary; gpu_check.sh copies it to the repository root, where the
#                       specs look for ./sao
#   .gpu/root.tar.xz    files from Debian packages (apt-get download + dpkg-deb -x): luajit, busted
#                       and the Lua modules it loads, lua-cjson, and every shared library that
#                       libsao.so, libsao_cuda.so, ./sao, luajit and the Lua C modules need, except
#                       glibc, libstdc++, libgcc_s and CUDA's own (the CUDA image has those).
#                       gpu_check.sh unpacks it into .gpu/root
#   .gpu/xz/            xz and liblzma, to unpack root.tar.xz on an image without xz
#   .gpu/bin/busted     runs Debian's busted script (#!/usr/bin/env lua) under the kit's luajit
#   .gpu/kit-info.txt   when, from which commit, with which flags and packages the kit was made
#
# No LD_LIBRARY_PATH is needed there: every staged library, libsao.so and ./sao get a RUNPATH
# ($ORIGIN-relative, set with patchelf) that points into .gpu/root, so the kit's libraries are
# loaded by the kit's programs only, and programs of the image (python3 with torch, which a
# benchmark may start) keep the image's own libraries.
#
# Work files (objects, .deb files, the staged tree, patchelf) stay in .gpu-build/ (git-ignored,
# not carried). Environment: KIT_OPT (default "-O2 -march=x86-64-v3": the device's CPU is not
# this one, so no -march=native), KIT_JOBS (default 2).
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
KIT=.gpu                       # carried to the device machine
WORK=.gpu-build                # not carried
OBJ=$WORK/obj
DEBS=$WORK/debs
STAGE=$WORK/root
MA=x86_64-linux-gnu
LIBD=usr/lib/$MA               # every staged library ends up under here (or one folder below)
OPT_KIT=${KIT_OPT:--O2 -march=x86-64-v3}
JOBS=${KIT_JOBS:-2}
LIMIT_MIB=45

say() { printf '== %s\n' "$*"; }
die() { printf 'gpu_kit.sh: %s\n' "$*" >&2; exit 1; }

command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ] ||
  die "no nvcc (on PATH or /usr/local/cuda/bin): the kit needs the CUDA backend"
for t in apt-get dpkg-deb dpkg-query ldd readelf objdump strip xz tar make git; do
  command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"
done
[ "$(uname -m)" = x86_64 ] || die "the device machine is x86-64; build the kit on x86-64"

# ---- 1. build: objects in .gpu-build/obj (never the repository's build/ or ./sao) --------------
say "building sao with CUDA into $OBJ (OPT=$OPT_KIT)"
mkdir -p "$OBJ"
# ./sao is linked as the Makefile's `sao` rule links it (its LDLIBS), but into the work folder (the
# Makefile's rule writes the repository's ./sao); its RUNPATH is set below.
SAO_RULE='$(BUILD)/sao.kit: $(BUILD)/runtime/main.o $(BUILD)/libsao.so ; $(CC) -fopenmp -o $@ $(BUILD)/runtime/main.o -L$(BUILD) -lsao -Wl,-E $(LDLIBS)'
TARGETS="$OBJ/libsao.so $OBJ/libsao_cuda.so $OBJ/sao_cdef.h $OBJ/sao.kit"
# The sources may change while this builds (others edit the tree): build until make -q says that
# everything is up to date, so that libsao.so and libsao_cuda.so come from the same sources.
for try in 1 2 3 4; do
  make --no-print-directory BUILD="$OBJ" OPT="$OPT_KIT" -j"$JOBS" --eval "$SAO_RULE" $TARGETS
  make -q --no-print-directory BUILD="$OBJ" OPT="$OPT_KIT" --eval "$SAO_RULE" $TARGETS && break
  [ "$try" -lt 4 ] || die "the sources kept changing during the build; run it again"
  say "sources changed during the build: building again"
done
[ -f "$OBJ/libsao_cuda.so" ] || die "make built no libsao_cuda.so (CUDA not detected?)"
SOURCES=$(sh bench/kit_sources.sh)   # what the binaries were built from (gpu_check.sh compares)

rm -rf "$KIT"
mkdir -p "$KIT/build" "$KIT/bin" "$KIT/xz"
cp "$OBJ/libsao.so" "$OBJ/libsao_cuda.so" "$OBJ/sao_cdef.h" "$KIT/build/"
cp "$OBJ/sao.kit" "$KIT/sao"
strip --strip-unneeded "$KIT/build/libsao.so" "$KIT/build/libsao_cuda.so"
strip "$KIT/sao"

# ---- 2. Debian packages -------------------------------------------------------------------------
# fetch PKG...: into $DEBS, once each; the installed version when the archive still has it, else
# the candidate (apt-get update is run once if a download fails).
fetch() {
  local p v
  mkdir -p "$DEBS"
  for p in "$@"; do
    ls "$DEBS/${p}"_*.deb >/dev/null 2>&1 && continue
    v=$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || true)
    ( cd "$DEBS" &&
      { { [ -n "$v" ] && apt-get download -q=2 "$p=$v" 2>/dev/null; } ||
        apt-get download -q=2 "$p" 2>/dev/null ||
        { apt-get update -q=2 >/dev/null 2>&1 && apt-get download -q=2 "$p"; }; } ) ||
      die "apt-get download $p failed"
  done
}
deb() { ls "$DEBS/${1}"_*.deb | tail -1; }

# By name: the interpreter, busted and the modules it requires, cjson; patchelf and xz for the work.
# (lua-cliargs also depends on lua-yaml and lua-inifile, which only read cliargs config files.)
LUA_PKGS="luajit libluajit-5.1-2 libluajit-5.1-common lua-busted lua-luassert lua-say lua-penlight
  lua-term lua-system lua-cliargs lua-mediator lua-filesystem lua-dkjson lua-cjson"
say "downloading luajit, busted and its modules, cjson, xz, patchelf"
fetch $LUA_PKGS xz-utils liblzma5 patchelf
TOOLS=$WORK/tools
rm -rf "$TOOLS"; mkdir -p "$TOOLS"
for p in xz-utils liblzma5 patchelf; do dpkg-deb -x "$(deb "$p")" "$TOOLS"; done
PATCHELF=$TOOLS/usr/bin/patchelf
"$PATCHELF" --version >/dev/null || die "patchelf from $(deb patchelf) does not run"

rm -rf "$STAGE"
mkdir -p "$STAGE"
for p in $LUA_PKGS; do dpkg-deb -x "$(deb "$p")" "$STAGE"; done

# The shared libraries: what ldd resolves for every ELF file the kit runs, less the base system.
is_base() {
  case "${1##*/}" in
    ld-linux*|libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libresolv.so*|libutil.so*|\
    libanl.so*|libmvec.so*|libstdc++.so*|libgcc_s.so*|linux-vdso*|\
    libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*|libcudnn*|libnvidia*|libsao.so*|libsao_cuda.so*) return 0 ;;
  esac
  return 1
}
lua_cmods() { find "$STAGE/$LIBD" -name 'liblua5.1-*.so*' -type f; }
elfs="$KIT/build/libsao.so $KIT/build/libsao_cuda.so $KIT/sao $STAGE/usr/bin/luajit $(lua_cmods)"
libs=$(for f in $elfs; do LD_LIBRARY_PATH="$KIT/build" ldd "$f"; done |
       awk '$2 == "=>" && $3 ~ /^\// {print $3} $2 == "=>" && $3 == "not" {print "MISSING:" $1}' | sort -u)
if printf '%s\n' "$libs" | grep -q '^MISSING:'; then
  die "ldd cannot resolve: $(printf '%s\n' "$libs" | sed -n 's/^MISSING://p' | tr '\n' ' ')"
fi

# owner PATH: the package that installed a library (usr-merged: try the path, its target, the /usr twins)
owner() {
  local f=$1 real c
  real=$(readlink -f "$f")
  for c in "$f" "$real" "/usr$f" "${f#/usr}" "/usr$real" "${real#/usr}"; do
    dpkg-query -S "$c" 2>/dev/null | head -1 | sed 's/[:,].*//' && return 0
  done
  return 1
}
pkgs=""
for f in $libs; do
  is_base "$f" && continue
  p=$(owner "$f") && [ -n "$p" ] || die "no package owns $f"
  pkgs="$pkgs $p"
done
pkgs=$(printf '%s\n' $pkgs | sort -u | tr '\n' ' ')
say "downloading $(printf '%s\n' $pkgs | wc -l) library packages"
fetch $pkgs
for p in $pkgs; do dpkg-deb -x "$(deb "$p")" "$STAGE"; done

# Prune to the interpreter, the Lua 5.1 modules, LuaJIT's jit.* modules and shared libraries, with
# /lib/$MA merged into /usr/lib/$MA.
(
  cd "$STAGE"
  if [ -d "lib/$MA" ]; then cp -a "lib/$MA/." "$LIBD/"; rm -rf lib; fi
  rm -rf etc usr/share/doc usr/share/man usr/share/lintian usr/share/bug usr/share/alsa \
         usr/share/lua/5.2 usr/share/lua/5.3 usr/share/lua/5.4 \
         "$LIBD/lua/5.2" "$LIBD/lua/5.3" "$LIBD/lua/5.4"
  find . -name 'liblua5.[234]-*' -exec rm -f {} +
  find . -type f ! -path './usr/share/lua/*' ! -path './usr/share/luajit-*' ! -path './usr/bin/luajit*' \
    ! -path './usr/bin/busted' ! -name '*.so' ! -name '*.so.*' -exec rm -f {} +
)
# Which of the staged libraries are loaded: resolve everything with the staged tree first; each must
# come from there (or be glibc/libstdc++/CUDA); the rest (libgio with glib, openblas's own
# libblas/liblapack, ...) is dropped.
libdirs=$(find "$STAGE/$LIBD" \( -name '*.so' -o -name '*.so.*' \) ! -path '*/lua/5.1/*' -exec dirname {} \; |
          sort -u | tr '\n' ':')
closure=$(for f in $elfs; do LD_LIBRARY_PATH="$libdirs$KIT/build" ldd "$f"; done |
          awk '$2 == "=>" {print $1, $3}' | sort -u)
bad=$(printf '%s\n' "$closure" | while read -r name path; do
        is_base "$path" && continue
        case "$path" in "$STAGE"/*|"$KIT"/*) ;; *) echo "$name => $path;" ;; esac
      done)
[ -z "$bad" ] || die "not resolved from the staged tree: $bad"
keep=$(printf '%s\n' "$closure" | awk '{print $2}' | grep "^$STAGE/" | xargs -r readlink -f | sort -u)
find "$STAGE" -type f \( -name '*.so' -o -name '*.so.*' \) ! -name 'liblua5.1-*' | while read -r f; do
  printf '%s\n' "$keep" | grep -qxF "$(readlink -f "$f")" || rm -f "$f"
done
find "$STAGE" -xtype l -exec rm -f {} +
find "$STAGE" -depth -type d -empty -exec rmdir {} \;

# RUNPATHs. Library folders, relative to $LIBD: "." and sub-folders one level down (openblas-pthread,
# pulseaudio). A library in $LIBD gets $ORIGIN and $ORIGIN/<sub>; one in a sub-folder $ORIGIN/.. and
# $ORIGIN/../<sub>; libsao.so $ORIGIN (for libsao_cuda.so's sake) and $ORIGIN/../root/$LIBD/...;
# ./sao (at the repository root) $ORIGIN/.gpu/build and $ORIGIN/.gpu/root/$LIBD/...
subs=$(cd "$STAGE/$LIBD" && find . -mindepth 1 -type f \( -name '*.so' -o -name '*.so.*' \) ! -path './lua/*' \
       -exec dirname {} \; | sort -u | sed 's|^\./||' | grep -vx '\.' || true)
for s in $subs; do case "$s" in */*) die "library folder two levels down: $s" ;; esac; done
runpath() {   # runpath PREFIX: PREFIX:PREFIX/sub1:...
  local r=$1 s
  for s in $subs; do r="$r:$1/$s"; done
  printf '%s' "$r"
}
find "$STAGE/$LIBD" -type f \( -name '*.so' -o -name '*.so.*' \) ! -path '*/lua/*' ! -name 'liblua5.1-*' |
while read -r f; do
  if [ "$(dirname "$f")" = "$STAGE/$LIBD" ]; then rp=$(runpath '$ORIGIN'); else rp=$(runpath '$ORIGIN/..'); fi
  "$PATCHELF" --set-rpath "$rp" "$f"
done
"$PATCHELF" --set-rpath "\$ORIGIN:$(runpath "\$ORIGIN/../root/$LIBD")" "$KIT/build/libsao.so"
"$PATCHELF" --set-rpath "\$ORIGIN/.gpu/build:$(runpath "\$ORIGIN/.gpu/root/$LIBD")" "$KIT/sao"

say "packing $STAGE into $KIT/root.tar.xz"
tar -C "$STAGE" --owner=0 --group=0 -cf - . | xz -6 -T"$JOBS" > "$KIT/root.tar.xz"

# xz for the device (a minimal image may have none): the binary and liblzma, not compressed
cp "$TOOLS/usr/bin/xz" "$KIT/xz/xz"
cp -L "$(find "$TOOLS" -name 'liblzma.so.5' | head -1)" "$KIT/xz/liblzma.so.5"

# busted: Debian's script starts with `#!/usr/bin/env lua`; run it under the kit's luajit instead
cat > "$KIT/bin/busted" <<'EOF'
#!/bin/sh
# busted from the kit (bench/gpu_kit.sh): Debian's busted script, run by the luajit on PATH
here=$(cd "$(dirname "$0")/.." && pwd)
exec luajit "$here/root/usr/bin/busted" "$@"
EOF
chmod 755 "$KIT/bin/busted"

# ---- 3. check the kit as the device will see it: a scratch folder with .gpu/ unpacked and ./sao at
# its root; no LD_LIBRARY_PATH; every library must resolve inside it (glibc, libstdc++, CUDA aside)
say "checking the unpacked kit"
chk=$(mktemp -d)
trap 'rm -rf "$chk"' EXIT
cp -a "$KIT" "$chk/.gpu"
mkdir -p "$chk/.gpu/root"
LD_LIBRARY_PATH="$chk/.gpu/xz" "$chk/.gpu/xz/xz" -dc "$chk/.gpu/root.tar.xz" | tar -C "$chk/.gpu/root" -xf -
cp "$chk/.gpu/sao" "$chk/sao"
bad=$(for f in "$chk/sao" "$chk/.gpu/build/libsao.so" "$chk/.gpu/build/libsao_cuda.so" \
               "$chk/.gpu/root/usr/bin/luajit" $(find "$chk/.gpu/root" -type f -name 'liblua5.1-*'); do
        env -u LD_LIBRARY_PATH ldd "$f" | awk -v f="${f#$chk/}" '$2 == "=>" {print f, $1, $3}'
      done | while read -r f name path; do
        is_base "$name" && continue
        case "$path" in "$chk"/*) ;; *) echo "$f: $name => $path;" ;; esac
      done)
[ -z "$bad" ] || die "the unpacked kit loads libraries from outside itself: $bad"
( cd "$chk" && env -i PATH="$chk/.gpu/bin:$chk/.gpu/root/usr/bin:/usr/bin:/bin" \
    LUA_PATH="./?.lua;$chk/.gpu/root/usr/share/lua/5.1/?.lua;$chk/.gpu/root/usr/share/lua/5.1/?/init.lua" \
    LUA_CPATH="$chk/.gpu/root/$LIBD/lua/5.1/?.so" \
    luajit -e 'require "busted.runner"; require "cjson"; require "lfs"; require "system"; require "term"' ) ||
  die "the kit's luajit cannot load busted's modules"
# libsao.so and libsao_cuda.so must agree (the backend refuses a libsao.so with other entry points);
# without a GPU here the backend still loads (cudart is here) and says there is no device.
cp -a lua "$chk/lua"
why=$(cd "$chk" && env -i PATH=/usr/bin:/bin LUA_CPATH="$chk/.gpu/root/$LIBD/lua/5.1/?.so" SAO_LIB="$chk/.gpu/build/libsao.so" SAO_CDEF="$chk/.gpu/build/sao_cdef.h" \
        ./sao -e 'local sao = require "sao"; print(sao.has_cuda(), sao.cuda.unavailable())' 2>&1) ||
  die "the kit's ./sao does not run: $why"
echo "kit probe (no GPU here): $why"
case "$why" in true*) ;; *) die "the kit's CUDA backend does not load: $why" ;; esac

# ---- 4. what went in ----------------------------------------------------------------------------
{
  echo "made: $(date -u '+%Y-%m-%dT%H:%M:%SZ') on $(uname -n) ($(. /etc/os-release && echo "$PRETTY_NAME"))"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "sources: $SOURCES (sh bench/kit_sources.sh)"
  echo "working tree changes (git status --porcelain): $(git status --porcelain 2>/dev/null | tr '\n' ';')"
  echo "nvcc: $( (command -v nvcc >/dev/null && nvcc --version || /usr/local/cuda/bin/nvcc --version) | tail -1)"
  echo "OPT: $OPT_KIT"
  echo "libsao_cuda.so needs: $(readelf -d "$KIT/build/libsao_cuda.so" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
  allelf="$KIT/sao $KIT/build/libsao.so $KIT/build/libsao_cuda.so $(find "$STAGE" -type f \( -name '*.so*' -o -path '*/bin/*' \))"
  echo "needs at least: $(for f in $allelf; do objdump -T "$f" 2>/dev/null; done | grep -o 'GLIBC_[0-9.]*\|GLIBCXX_[0-9.]*' |
        sort -Vu | awk -F_ '{last[$1] = $0} END {print last["GLIBC"], last["GLIBCXX"]}') (the image's glibc and libstdc++)"
  echo "packages:"
  for p in $LUA_PKGS $pkgs; do echo "  $p $(dpkg-deb -f "$(deb "$p")" Version)"; done
} > "$KIT/kit-info.txt"

size_kib=$(du -sk "$KIT" | cut -f1)
say "kit: $(du -sh "$KIT" | cut -f1) in $KIT ($(du -sh "$KIT/root.tar.xz" | cut -f1) of it root.tar.xz, $(du -sh "$STAGE" | cut -f1) unpacked)"
[ "$size_kib" -lt $((LIMIT_MIB * 1024)) ] || die ".gpu/ is $((size_kib / 1024)) MiB, over $LIMIT_MIB MiB"
tree_kib=$(git ls-files -z -co --exclude-standard | xargs -0 du -ck 2>/dev/null | awk 'END {print $1}')
say "what travels: the working tree $((tree_kib / 1024)) MiB + .gpu $((size_kib / 1024)) MiB (the device tool's limit: 64 MiB)"

cat <<EOF

Kit ready in $ROOT/$KIT. The device tool call (the script ends within 8 minutes):
  command:   sh bench/gpu_check.sh
  carry:     [".gpu"]
  timeout_s: 570
Results: under the call's files_at: gpu-check.log, gpu-tests.txt, gpu-tolerances.jsonl, gpu-bench.jsonl, gpu-bench.log,
kit-info.txt.
EOF

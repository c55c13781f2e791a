#!/bin/sh
# bench/kit_sources.sh — prints a fingerprint of the sources the GPU kit's binaries are built from
# (runtime/, kernels/ and the Makefile, the files as they are in the working tree): bench/gpu_kit.sh
# writes it into .gpu/kit-info.txt, bench/gpu_check.sh compares it with the tree it runs in, so a
# kit built from other sources than the Lua code and specs beside it is reported as stale.
cd "$(dirname "$0")/.." || exit 1
find runtime kernels Makefile -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.map' -o -name Makefile \) |
  LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16

// backend.cu — the one symbol libsao_cuda.so exports: the table of its entry points, which
// libsao.so's forwarders (runtime/cuda_load.c) call through once they have loaded this library.
// The Makefile's version script hides every other symbol, so the kernels' calls to each other
// bind here and never go back through the forwarders.
extern "C" {
#include "cuda_backend.h"
}

#define FILL(name, ...) b->fn_##name = name;
#define FILL_PTR(type, name, ...) b->fn_##name = name;

extern "C" __attribute__((visibility("default"))) int sao_cuda_backend_v1(sao_cuda_backend *b, size_t size) {
    if (!b || size != sizeof *b) return -1;
    SAO_CUDA_ENTRY_POINTS(FILL, FILL_PTR, FILL)
    return 0;
}

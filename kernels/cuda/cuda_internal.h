// cuda_internal.h — what every kernels/cuda/*.cu file shares: error checks that return a
// Lua-visible message (file:line, the CUDA call, its error string, a hint) instead of aborting,
// the launch grid for element-wise kernels, and the stream sao's device work runs on.
#ifndef SAO_CUDA_INTERNAL_H
#define SAO_CUDA_INTERNAL_H
extern "C" {
#include "internal.h"
}
#include <cuda_runtime.h>

#define CUDA_TRY(ctx, op, call)                                                                   \
    do {                                                                                          \
        cudaError_t e_ = (call);                                                                  \
        if (e_ != cudaSuccess)                                                                    \
            return sao_err(ctx, op, "%s:%d: %s: %s (is a GPU visible? check nvidia-smi)",          \
                           __FILE__, __LINE__, #call, cudaGetErrorString(e_));                     \
    } while (0)

// After a launch: the launch error, if any, as a sao error naming the kernel's op.
#define CUDA_LAUNCHED(ctx, op) CUDA_TRY(ctx, op, cudaGetLastError())

// Blocks of `threads` covering n elements (n > 0).
static inline unsigned sao_cuda_blocks(long long n, int threads) {
    return (unsigned)((n + threads - 1) / threads);
}

// The stream sao's kernels are launched on (the legacy default stream for now: every launch and
// copy is ordered; a per-context stream comes with the caching allocator).
static inline cudaStream_t sao_cuda_stream(void) { return 0; }

#endif

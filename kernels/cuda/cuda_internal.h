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

// linear.cu: strided batched fp32 GEMM on cuBLAS (column-major; TF32 tensor cores unless the GEMM
// precision is fp32), for attention.cu's tensor-core path.
int sao_cuda_gemm_batched(sao_ctx *ctx, const char *op, bool ta, bool tb, int m, int n, int k, float alpha,
                          const float *A, int lda, long long sA, const float *B, int ldb, long long sB, float beta,
                          float *C, int ldc, long long sC, int batch);

// linear.cu: C [m, n] (column-major, ldc) = op(A) op(B) + beta C for fp32 A and B: fp32 products
// in the fp32 GEMM precision mode, TF32 tensor cores in the tf32 and bf16 modes (bf16 inputs would
// cost a rounding pass over every im2col chunk and 3 bits of mantissa through the VAE's ~60 convs);
// the convolutions' im2col GEMMs (conv1d.cu).
int sao_cuda_gemm_f32(sao_ctx *ctx, const char *op, bool ta, bool tb, int m, int n, int k, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc);

// linear.cu: a bf16 copy of the read-only fp32 range [base, base + n) that the bf16-mode linear
// forward uses instead of rounding those weights at every call (on: make or refresh it; 0: drop).
int sao_cuda_bf16_mirror(sao_ctx *ctx, const float *base, int64_t n, int on);
// linear.cu: the bf16 copy (raw bits) of w[0 .. n) when a mirror holds that whole range, else NULL:
// whoever updates registered weights in place (the optimiser) writes their copies too.
uint16_t *sao_cuda_bf16_mirror_find(const float *w, int64_t n);

// The stream sao's kernels are launched on: the legacy default stream, so every launch and copy
// is ordered, and the caching allocator (alloc.cu) may hand a freed block to the next caller at
// once. A per-context stream will need the allocator to record an event per freed block.
// The one exception is a CUDA graph capture (dit_graph.cu): while this thread captures, launches
// go to the capture stream (a blocking stream, so its replays are ordered with the legacy stream's
// work on both sides) and the pointer checks below are skipped (the same call, with the same
// pointers, ran checked just before). Both variables are defined in device.cu.
extern thread_local cudaStream_t sao_cuda_cur_stream;
extern thread_local bool sao_cuda_capturing;
static inline cudaStream_t sao_cuda_stream(void) { return sao_cuda_cur_stream; }

// glue.cu: a scratch kept per device: bufs[dev] grown (sao_cuda_grow) to at least `floats` for the
// current device dev < SAO_CUDA_SCRATCH_DEVICES, under one lock; `what` names it in errors.
#define SAO_CUDA_SCRATCH_DEVICES 64
float *sao_cuda_device_scratch(sao_ctx *ctx, const char *op, const char *what, float **bufs, size_t *sizes,
                               size_t floats);

// alloc.cu: how many blocks have been handed back (sao_cuda_free) or released to the driver since
// the process started. A captured graph bakes in addresses: it may replay only while this count
// is the one it was captured under (nothing it uses can have gone to another owner).
int64_t sao_cuda_free_count(void);

// 0 when p is NULL or device (or managed) memory of the current device; otherwise a sao error
// naming the argument. A host pointer handed to a kernel would fault the whole CUDA context
// (every later call fails), so entry points check their pointers first (about a microsecond each).
static inline int sao_cuda_check_ptr(sao_ctx *ctx, const char *op, const char *what, const void *p) {
    if (!p || sao_cuda_capturing) return 0;
    cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return sao_err(ctx, op, "%s: cudaPointerGetAttributes: %s (is a GPU visible? check nvidia-smi)",
                       what, cudaGetErrorString(e));
    }
    if (a.type == cudaMemoryTypeManaged) return 0;
    if (a.type != cudaMemoryTypeDevice)
        return sao_err(ctx, op, "%s is host memory, not device memory (copy it first: t:to(\"cuda\"), "
                       "sao_tensor_to_cuda)", what);
    int dev = 0;
    CUDA_TRY(ctx, op, cudaGetDevice(&dev));
    if (a.device != dev)
        return sao_err(ctx, op, "%s is on device %d but device %d is current (cudaSetDevice(%d) first, "
                       "or copy it across)", what, a.device, dev, a.device);
    return 0;
}


// ---- shared by the element-wise and reduction kernels ----------------------------------------
#define SAO_CUDA_THREADS 256
#define SAO_CUDA_MAX_BLOCKS 1048576LL

// Grid-stride loop over [0, n): any grid size covers any n.
#define SAO_GRID_STRIDE(i, n)                                                                      \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                 \
         i += (long long)gridDim.x * blockDim.x)

// Device-pointer check, after the CPU twin's argument checks (a host pointer would fault the
// context); needs `ctx` and `op` in scope.
#define SAO_CUDA_PTR(p) sao_cuda_check_ptr(ctx, op, #p, p)

// Blocks of SAO_CUDA_THREADS for a grid-stride loop over n elements (capped).
static inline unsigned sao_cuda_stride_blocks(long long n) {
    long long b = (n + SAO_CUDA_THREADS - 1) / SAO_CUDA_THREADS;
    return (unsigned)(b < SAO_CUDA_MAX_BLOCKS ? b : SAO_CUDA_MAX_BLOCKS);
}

// Philox4x32-10, the twin of runtime/rng.c's sao_philox4x32 (the same four words for a counter
// and key): the random fills (device.cu) and the stochastic rounding of the optimiser (optim.cu).
__device__ static inline void sao_philox(unsigned long long counter, unsigned long long key, unsigned int *o) {
    unsigned int c0 = (unsigned int)counter, c1 = (unsigned int)(counter >> 32), c2 = 0, c3 = 0;
    unsigned int k0 = (unsigned int)key, k1 = (unsigned int)(key >> 32);
    for (int r = 0; r < 10; r++) {
        unsigned int hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        unsigned int hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        unsigned int n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
    o[0] = c0; o[1] = c1; o[2] = c2; o[3] = c3;
}

// Sum of v over the block (blockDim.x a multiple of 32): a fixed shuffle tree per warp, then one
// over the warp sums, so the order never changes. Every thread gets the total. sh: 33 doubles of
// shared memory, free for reuse on return.
__device__ static inline double sao_block_sum(double v, double *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarp = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarp ? sh[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
        if (lane == 0) sh[32] = v;
    }
    __syncthreads();
    double total = sh[32];
    __syncthreads();
    return total;
}

#endif

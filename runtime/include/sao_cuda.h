/* sao_cuda.h — the CUDA device runtime: device query, the caching device allocator, device
 * storage for tensors, transfers, and the first device kernels (each with its CPU twin as the
 * reference). Built from kernels/cuda/ into libsao_cuda.so when nvcc is found and loaded on the
 * first call (runtime/cuda_load.c); without it (a CPU-only build, or a backend that does not load)
 * every call answers with a clear error saying why and the memory statistics are zero, so Lua
 * code can probe and skip. */
#ifndef SAO_CUDA_H
#define SAO_CUDA_H
#include "sao.h"
#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices now: 0 in a CPU-only build, without a driver or without a GPU. */
int sao_cuda_device_count(void);
/* Name, memory and compute capability of device `dev`. */
int sao_cuda_device_props(sao_ctx *ctx, int dev, char *name /* out */, int name_len,
                          int64_t *total_bytes /* out */, int *major /* out */, int *minor /* out */);
/* Free and total memory of device `dev` as the driver reports them (sao's cached blocks count as used). */
int sao_cuda_mem_info(sao_ctx *ctx, int dev, int64_t *free_bytes /* out */, int64_t *total_bytes /* out */);
/* A contiguous copy of t in device memory (storage device SAO_CUDA, allocator "cuda"). */
sao_tensor *sao_tensor_to_cuda(sao_ctx *ctx, const sao_tensor *t, int dev);
/* A contiguous host copy of a device (or host) tensor. */
sao_tensor *sao_tensor_to_cpu(sao_ctx *ctx, const sao_tensor *t);
/* An uninitialised contiguous tensor in device `dev`'s memory (caching allocator); dev becomes current. */
sao_tensor *sao_tensor_empty_cuda(sao_ctx *ctx, int dtype, int ndim, const int64_t *shape, int dev);
/* The CUDA device number whose memory holds device tensor t (-1 and an error for a host tensor). */
int sao_cuda_tensor_device(sao_ctx *ctx, const sao_tensor *t);
/* Philox fill of a contiguous device tensor (f32): bit-identical to sao_rand_fill on the CPU
 * (which calls it for a device tensor). Queued on sao's stream: it returns without waiting. */
int sao_cuda_rand_fill(sao_ctx *ctx, sao_tensor *t, uint64_t seed, uint64_t offset, int normal);
/* Every element of a contiguous f32 device tensor set to (float)value (sao_tensor_fill_ calls it
 * for a device tensor). Queued, like the fill above. */
int sao_cuda_fill(sao_ctx *ctx, sao_tensor *t, double value);
/* Fences on sao's stream, for a host loop that queues work ahead of the GPU: sao_cuda_fence(slot)
 * marks the work queued so far, sao_cuda_fence_wait(slot) blocks until that work is done (at once
 * for a slot never marked). Slots 0..7, process-wide, of the current device. */
int sao_cuda_fence(sao_ctx *ctx, int slot);
int sao_cuda_fence_wait(sao_ctx *ctx, int slot);
/* SiLU on device pointers (n elements); twins of sao_silu_forward / sao_silu_backward. */
int sao_cuda_silu_forward(sao_ctx *ctx, const float *x, int64_t n, float *y /* out */);
int sao_cuda_silu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n,
                           float *dx /* out, accumulated */);


/* ---- the caching device allocator (kernels/cuda/alloc.cu) --------------------------------------
 * Blocks are rounded up to a size class (512 B steps up to 1 MiB, then quarter powers of two),
 * kept in per-(device, class) bins when freed and handed out again without a driver call. One
 * process-wide cache, thread-safe. Out-of-memory from cudaMalloc empties the cache and retries once. */
/* A block of at least `bytes` on the current device (bytes 0 gives a valid 512 B block). */
int sao_cuda_malloc(sao_ctx *ctx, size_t bytes, void **out /* out */);
/* Returns a block from sao_cuda_malloc to the cache (NULL: nothing). -1, and nothing done, for a
 * pointer the allocator did not hand out or already got back. */
int sao_cuda_free(void *ptr);
/* Gives every cached (free) block back to the driver; returns the bytes released. */
int64_t sao_cuda_empty_cache(void);
/* Bytes in live blocks, bytes cached in the bins, the peak of the first (since the process started
 * or the last sao_cuda_reset_peak), and the number of cudaMalloc calls made (sizes are size
 * classes). Any may be NULL. */
void sao_cuda_memory_stats(int64_t *allocated /* out */, int64_t *cached /* out */,
                           int64_t *peak /* out */, int64_t *n_cudamalloc /* out */);
/* Starts the peak afresh from the bytes live now (a training run measures its own peak). */
void sao_cuda_reset_peak(void);
/* The size class a request of `bytes` is rounded up to. */
size_t sao_cuda_size_class(size_t bytes);

/* ---- linear.cu: y = x W^T + b on device pointers (cuBLASLt, fp32 compute) -----------------------
 * Twins of sao_linear_forward / sao_linear_backward (sao_kernels.h): the same arguments, shapes
 * and accumulate semantics; every pointer is device memory on the current device. */
int sao_cuda_linear_forward(sao_ctx *ctx, const float *x, const float *w, const float *b,
                            int64_t n, int64_t in, int64_t out, int accumulate, float *y /* out */);
int sao_cuda_linear_backward(sao_ctx *ctx, const float *dy, const float *x, const float *w,
                             int64_t n, int64_t in, int64_t out,
                             float *dx /* out, accumulated */, float *dw /* out, accumulated */,
                             float *db /* out, accumulated */);
/* The same forward with x [N, in] and w [out, in] in bfloat16 (raw bits), fp32 accumulation,
 * b [out] f32 or NULL, y [N, out] f32. */
int sao_cuda_linear_forward_bf16(sao_ctx *ctx, const uint16_t *x, const uint16_t *w, const float *b,
                                 int64_t n, int64_t in, int64_t out, int accumulate, float *y /* out */);
/* Which library runs these GEMMs, process-wide: 1 cuBLASLt (the default; plain cuBLAS only where
 * its heuristic has no algorithm), 0 always plain cuBLAS (cublasSgemm / cublasGemmEx) — so specs
 * can cover both. -1 only asks. Returns the setting before the call. */
int sao_cuda_gemm_use_lt(int on);
/* Device memory the GEMM workspace of `device` holds (from the caching allocator): 0 until the
 * first GEMM there, then 32 MiB for the rest of the process. The training memory plan counts it. */
int64_t sao_cuda_gemm_workspace_bytes(int device);
/* How the fp32 GEMMs (sao_cuda_linear_forward / _backward, so every model's linear layers on a
 * GPU) multiply, process-wide: SAO_GEMM_FP32 (0, the default: within fp32 rounding of the CPU
 * twins), SAO_GEMM_TF32 (1: TF32 tensor-core products of the fp32 data), SAO_GEMM_BF16 (2: the
 * inputs rounded to bf16 into a scratch buffer, bf16 tensor-core products, fp32 accumulation and
 * output; weights, activations and gradients stay fp32). Another value only asks. Returns the
 * setting before the call (0 without a CUDA backend). */
enum { SAO_GEMM_FP32 = 0, SAO_GEMM_TF32 = 1, SAO_GEMM_BF16 = 2 };
int sao_cuda_gemm_precision(int mode);

#ifdef __cplusplus
}
#endif
#endif

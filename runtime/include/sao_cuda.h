/* sao_cuda.h — the CUDA device runtime: device query, device storage for tensors, transfers, and
 * the first device kernels (each with its CPU twin as the reference). Built from kernels/cuda/
 * when nvcc is found; a CPU-only build answers every call with a clear "built without CUDA" error
 * (runtime/cuda_off.c), so Lua code can probe and skip. */
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
/* A contiguous copy of t in device memory (storage device SAO_CUDA, allocator "cuda"). */
sao_tensor *sao_tensor_to_cuda(sao_ctx *ctx, const sao_tensor *t, int dev);
/* A contiguous host copy of a device (or host) tensor. */
sao_tensor *sao_tensor_to_cpu(sao_ctx *ctx, const sao_tensor *t);
/* Philox fill of a contiguous device tensor (f32): bit-identical to sao_rand_fill on the CPU. */
int sao_cuda_rand_fill(sao_ctx *ctx, sao_tensor *t, uint64_t seed, uint64_t offset, int normal);
/* SiLU on device pointers (n elements); twins of sao_silu_forward / sao_silu_backward. */
int sao_cuda_silu_forward(sao_ctx *ctx, const float *x, int64_t n, float *y /* out */);
int sao_cuda_silu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n,
                           float *dx /* out, accumulated */);

#ifdef __cplusplus
}
#endif
#endif

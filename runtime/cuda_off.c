/* cuda_off.c — the CUDA entry points of sao_cuda.h in a CPU-only build: each says so clearly.
 * Compiled only when the CUDA backend is not (see the Makefile); kernels/cuda/ replace it. */
#include "internal.h"
#include "sao_cuda.h"

#ifndef SAO_WITH_CUDA
static const char *why = "sao was built without CUDA (no nvcc found, or CUDA=0): rebuild with the CUDA toolkit";

int sao_cuda_device_count(void) { return 0; }

int sao_cuda_device_props(sao_ctx *ctx, int dev, char *name, int name_len, int64_t *total_bytes, int *major, int *minor) {
    SAO_UNUSED(name); SAO_UNUSED(name_len); SAO_UNUSED(total_bytes); SAO_UNUSED(major); SAO_UNUSED(minor);
    return sao_err(ctx, "cuda_device_props", "device %d: %s", dev, why);
}

sao_tensor *sao_tensor_to_cuda(sao_ctx *ctx, const sao_tensor *t, int dev) {
    SAO_UNUSED(t);
    return sao_err_null(ctx, "to_cuda", "device %d: %s", dev, why);
}

sao_tensor *sao_tensor_to_cpu(sao_ctx *ctx, const sao_tensor *t) {
    if (t->storage->device != SAO_CPU) return sao_err_null(ctx, "to_cpu", "%s", why);
    return sao_tensor_contiguous(ctx, t);
}

int sao_cuda_rand_fill(sao_ctx *ctx, sao_tensor *t, uint64_t seed, uint64_t offset, int normal) {
    SAO_UNUSED(t); SAO_UNUSED(seed); SAO_UNUSED(offset); SAO_UNUSED(normal);
    return sao_err(ctx, "cuda_rand_fill", "%s", why);
}

int sao_cuda_silu_forward(sao_ctx *ctx, const float *x, int64_t n, float *y) {
    SAO_UNUSED(x); SAO_UNUSED(n); SAO_UNUSED(y);
    return sao_err(ctx, "cuda_silu_forward", "%s", why);
}

int sao_cuda_silu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n, float *dx) {
    SAO_UNUSED(dy); SAO_UNUSED(x); SAO_UNUSED(n); SAO_UNUSED(dx);
    return sao_err(ctx, "cuda_silu_backward", "%s", why);
}
#endif

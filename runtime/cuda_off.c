/* cuda_off.c — the CUDA entry points of sao_cuda.h in a CPU-only build: each says so clearly, and
 * the allocator's statistics are all zero.
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

/* ---- the allocator: nothing is ever allocated, so every statistic is zero ---- */
int sao_cuda_malloc(sao_ctx *ctx, size_t bytes, void **out) {
    if (out) *out = NULL;
    return sao_err(ctx, "cuda_malloc", "%zu bytes: %s", bytes, why);
}

int sao_cuda_free(void *ptr) { return ptr ? -1 : 0; }   /* nothing here came from sao_cuda_malloc */

int64_t sao_cuda_empty_cache(void) { return 0; }

void sao_cuda_memory_stats(int64_t *allocated, int64_t *cached, int64_t *peak, int64_t *n_cudamalloc) {
    if (allocated) *allocated = 0;
    if (cached) *cached = 0;
    if (peak) *peak = 0;
    if (n_cudamalloc) *n_cudamalloc = 0;
}

/* The rule of kernels/cuda/alloc.cu (spec/cuda_spec.lua checks both builds give the same classes):
 * 512 B steps up to 1 MiB, then four classes per power of two. */
size_t sao_cuda_size_class(size_t n) {
    if (n == 0) n = 1;
    if (n <= ((size_t)1 << 20)) return (n + 511) & ~(size_t)511;
    int p = 63 - __builtin_clzll((unsigned long long)(n - 1));
    size_t step = (size_t)1 << (p - 2);
    return (n + step - 1) & ~(step - 1);
}

/* ---- linear ---- */
int sao_cuda_linear_forward(sao_ctx *ctx, const float *x, const float *w, const float *b,
                            int64_t n, int64_t in, int64_t out, int accumulate, float *y) {
    SAO_UNUSED(x); SAO_UNUSED(w); SAO_UNUSED(b); SAO_UNUSED(n); SAO_UNUSED(in); SAO_UNUSED(out);
    SAO_UNUSED(accumulate); SAO_UNUSED(y);
    return sao_err(ctx, "cuda_linear_forward", "%s (sao_linear_forward is the CPU kernel)", why);
}

int sao_cuda_linear_forward_bf16(sao_ctx *ctx, const uint16_t *x, const uint16_t *w, const float *b,
                                 int64_t n, int64_t in, int64_t out, int accumulate, float *y) {
    SAO_UNUSED(x); SAO_UNUSED(w); SAO_UNUSED(b); SAO_UNUSED(n); SAO_UNUSED(in); SAO_UNUSED(out);
    SAO_UNUSED(accumulate); SAO_UNUSED(y);
    return sao_err(ctx, "cuda_linear_forward_bf16", "%s", why);
}

int sao_cuda_linear_backward(sao_ctx *ctx, const float *dy, const float *x, const float *w,
                             int64_t n, int64_t in, int64_t out, float *dx, float *dw, float *db) {
    SAO_UNUSED(dy); SAO_UNUSED(x); SAO_UNUSED(w); SAO_UNUSED(n); SAO_UNUSED(in); SAO_UNUSED(out);
    SAO_UNUSED(dx); SAO_UNUSED(dw); SAO_UNUSED(db);
    return sao_err(ctx, "cuda_linear_backward", "%s (sao_linear_backward is the CPU kernel)", why);
}

int sao_cuda_gemm_use_lt(int on) { SAO_UNUSED(on); return 0; }
#endif

/* cuda_glue_off.c — runtime/cuda_glue.h in a CPU-only build (kernels/cuda/glue.cu replaces it):
 * choosing a device says clearly that sao was built without CUDA, so moving a model to a device
 * fails with that message before anything moves; the copies and kernels are unreachable (nothing
 * is ever on a device) and answer the same. */
#include "cuda_glue.h"

#ifndef SAO_WITH_CUDA
static const char *why = "sao was built without CUDA (no nvcc found, or CUDA=0): rebuild with the CUDA toolkit";

int sao_cuda_use(sao_ctx *ctx, const char *op, int device, const char *what) {
    return sao_err(ctx, op, "device %d: %s, or keep the %s on the CPU", device, why, what);
}

int sao_cuda_copy_rows(sao_ctx *ctx, float *dst, int64_t dst_pitch, const float *src, int64_t src_pitch,
                       int64_t rows, int64_t cols) {
    SAO_UNUSED(dst); SAO_UNUSED(dst_pitch); SAO_UNUSED(src); SAO_UNUSED(src_pitch); SAO_UNUSED(rows); SAO_UNUSED(cols);
    return sao_err(ctx, "cuda_copy", "%s", why);
}

int sao_cuda_zero(sao_ctx *ctx, float *dst, int64_t n) {
    SAO_UNUSED(dst); SAO_UNUSED(n);
    return sao_err(ctx, "cuda_zero", "%s", why);
}

int sao_cuda_add(sao_ctx *ctx, float *y, const float *x, int64_t n) {
    SAO_UNUSED(y); SAO_UNUSED(x); SAO_UNUSED(n);
    return sao_err(ctx, "cuda_add", "%s", why);
}

int sao_cuda_tanh(sao_ctx *ctx, float *x, int64_t n) {
    SAO_UNUSED(x); SAO_UNUSED(n);
    return sao_err(ctx, "cuda_tanh", "%s", why);
}

int sao_cuda_put(sao_ctx *ctx, float *dst, const float *host_src, int64_t n) {
    SAO_UNUSED(dst); SAO_UNUSED(host_src); SAO_UNUSED(n);
    return sao_err(ctx, "cuda_put", "%s", why);
}

int sao_cuda_get(sao_ctx *ctx, float *host_dst, const float *src, int64_t n) {
    SAO_UNUSED(host_dst); SAO_UNUSED(src); SAO_UNUSED(n);
    return sao_err(ctx, "cuda_get", "%s", why);
}

float *sao_cuda_grow(sao_ctx *ctx, float **buf, size_t *have, size_t need) {
    SAO_UNUSED(buf); SAO_UNUSED(have); SAO_UNUSED(need);
    return sao_err_null(ctx, "cuda_workspace", "%s", why);
}

int sao_cuda_put_bytes(sao_ctx *ctx, void *dst, const void *host_src, size_t bytes) {
    SAO_UNUSED(dst); SAO_UNUSED(host_src); SAO_UNUSED(bytes);
    return sao_err(ctx, "cuda_put", "%s", why);
}

int sao_cuda_get_bytes(sao_ctx *ctx, void *host_dst, const void *src, size_t bytes) {
    SAO_UNUSED(host_dst); SAO_UNUSED(src); SAO_UNUSED(bytes);
    return sao_err(ctx, "cuda_get", "%s", why);
}

int sao_cuda_t5_embed(sao_ctx *ctx, const float *table, const int64_t *ids, int64_t n, int64_t d, float *h) {
    SAO_UNUSED(table); SAO_UNUSED(ids); SAO_UNUSED(n); SAO_UNUSED(d); SAO_UNUSED(h);
    return sao_err(ctx, "t5_embed", "%s", why);
}

int sao_cuda_t5_bias(sao_ctx *ctx, const float *rel, const int32_t *bk, int64_t H, int64_t L, float *bias) {
    SAO_UNUSED(rel); SAO_UNUSED(bk); SAO_UNUSED(H); SAO_UNUSED(L); SAO_UNUSED(bias);
    return sao_err(ctx, "t5_bias", "%s", why);
}

int sao_cuda_t5_mask_rows(sao_ctx *ctx, float *x, const uint8_t *km, int64_t n, int64_t d) {
    SAO_UNUSED(x); SAO_UNUSED(km); SAO_UNUSED(n); SAO_UNUSED(d);
    return sao_err(ctx, "t5_mask_rows", "%s", why);
}
#endif

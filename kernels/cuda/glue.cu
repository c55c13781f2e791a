// glue.cu — the device memory helpers of runtime/cuda_glue.h, shared by the model code's CUDA kernel
// tables (dit_glue.cu, vae.c, t5.c): choosing a device, row copies, zero, y += x, tanh and blocking
// host <-> device copies.
#include "cuda_internal.h"
extern "C" {
#include "cuda_glue.h"
#include "sao_cuda.h"
}
#include <math.h>

extern "C" int sao_cuda_use(sao_ctx *ctx, const char *op, int device, const char *what) {
    int n = sao_cuda_device_count();
    if (n == 0)
        return sao_err(ctx, op, "device %d: no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES), "
                       "or keep the %s on the CPU", device, what);
    if (device < 0 || device >= n)
        return sao_err(ctx, op, "device %d: there are %d CUDA device(s), numbered 0 to %d", device, n, n - 1);
    CUDA_TRY(ctx, op, cudaSetDevice(device));
    return 0;
}

extern "C" int sao_cuda_copy_rows(sao_ctx *ctx, float *dst, int64_t dst_pitch, const float *src, int64_t src_pitch,
                                  int64_t rows, int64_t cols) {
    const char *op = "cuda_copy";
    if (rows <= 0 || cols <= 0) return 0;
    size_t w = (size_t)cols * sizeof(float);
    if (rows == 1) {
        CUDA_TRY(ctx, op, cudaMemcpyAsync(dst, src, w, cudaMemcpyDeviceToDevice, sao_cuda_stream()));
    } else {
        CUDA_TRY(ctx, op, cudaMemcpy2DAsync(dst, (size_t)dst_pitch * sizeof(float), src, (size_t)src_pitch * sizeof(float),
                                            w, (size_t)rows, cudaMemcpyDeviceToDevice, sao_cuda_stream()));
    }
    return 0;
}

extern "C" int sao_cuda_zero(sao_ctx *ctx, float *dst, int64_t n) {
    if (n <= 0) return 0;
    CUDA_TRY(ctx, "cuda_zero", cudaMemsetAsync(dst, 0, (size_t)n * sizeof(float), sao_cuda_stream()));
    return 0;
}

__global__ static void add_kernel(float *y, const float *x, long long n) {
    SAO_GRID_STRIDE(i, n) y[i] += x[i];
}

extern "C" int sao_cuda_add(sao_ctx *ctx, float *y, const float *x, int64_t n) {
    if (n <= 0) return 0;
    add_kernel<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(y, x, (long long)n);
    CUDA_LAUNCHED(ctx, "cuda_add");
    return 0;
}

__global__ static void tanh_kernel(float *x, long long n) {
    SAO_GRID_STRIDE(i, n) x[i] = tanhf(x[i]);
}

extern "C" int sao_cuda_tanh(sao_ctx *ctx, float *x, int64_t n) {
    if (n <= 0) return 0;
    tanh_kernel<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(x, (long long)n);
    CUDA_LAUNCHED(ctx, "cuda_tanh");
    return 0;
}

__global__ static void scale_kernel(float *x, long long n, float s) {
    SAO_GRID_STRIDE(i, n) x[i] = __fmul_rn(x[i], s);   // one rounding, as the CPU loop (no fusion to undo)
}

extern "C" int sao_cuda_scale(sao_ctx *ctx, float *x, int64_t n, float s) {
    if (n <= 0) return 0;
    scale_kernel<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(x, (long long)n, s);
    CUDA_LAUNCHED(ctx, "cuda_scale");
    return 0;
}

extern "C" float *sao_cuda_grow(sao_ctx *ctx, float **buf, size_t *have, size_t need) {
    if (need <= *have) return *buf;
    sao_cuda_free(*buf);   // stream-ordered: safe while queued kernels still use it
    *buf = NULL;
    *have = 0;
    void *p = NULL;
    size_t bytes = need * sizeof(float);
    if (sao_cuda_malloc(ctx, bytes, &p)) return NULL;
    *buf = (float *)p;
    *have = sao_cuda_size_class(bytes) / sizeof(float);   // the block's real size
    return *buf;
}

extern "C" int sao_cuda_put_bytes(sao_ctx *ctx, void *dst, const void *host_src, size_t bytes) {
    if (!bytes) return 0;
    CUDA_TRY(ctx, "cuda_put", cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice));
    return 0;
}

extern "C" int sao_cuda_get_bytes(sao_ctx *ctx, void *host_dst, const void *src, size_t bytes) {
    if (!bytes) return 0;
    CUDA_TRY(ctx, "cuda_get", cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost));
    return 0;
}

extern "C" int sao_cuda_memcpy(sao_ctx *ctx, void *dst, const void *src, size_t bytes) {
    if (!bytes) return 0;
    CUDA_TRY(ctx, "cuda_memcpy", cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
    return 0;
}

extern "C" int sao_cuda_put(sao_ctx *ctx, float *dst, const float *host_src, int64_t n) {
    return n <= 0 ? 0 : sao_cuda_put_bytes(ctx, dst, host_src, (size_t)n * sizeof(float));
}

extern "C" int sao_cuda_get(sao_ctx *ctx, float *host_dst, const float *src, int64_t n) {
    return n <= 0 ? 0 : sao_cuda_get_bytes(ctx, host_dst, src, (size_t)n * sizeof(float));
}

/* rmsnorm.c — T5's RMSNorm: y = gamma * x / sqrt(mean(x^2) + eps), no mean subtraction, no bias
 * (T5 eps 1e-6; the variance in fp32 or better, as HF T5LayerNorm).
 *
 * Shapes: x, y [N, C]; gamma [C]; rstd [N] (saved for the backward).
 * Rows in parallel; dgamma as 64-column blocks over all rows in order (thread-count independent).
 */
#include "kcommon.h"
#include <math.h>

/* The backward's argument check (kcheck.h: the CUDA twin in kernels/cuda/norms.cu calls it too; the
 * forward's is layernorm.c's sao_norm_forward_check). */
int sao_rmsnorm_backward_check(sao_ctx *ctx, const char *op, const float *dy, const float *x,
                               const float *gamma, const float *rstd, int64_t n, int64_t c,
                               const float *dx) {
    if (n < 0 || c < 1) return sao_err(ctx, op, "bad shape n=%lld c=%lld", (long long)n, (long long)c);
    SAO_NEED(ctx, op, dy);
    SAO_NEED(ctx, op, x);
    SAO_NEED(ctx, op, rstd);
    if (dx) SAO_NEED(ctx, op, gamma);
    return 1;
}

int sao_rmsnorm_forward(sao_ctx *ctx, const float *x, const float *gamma, int64_t n, int64_t c,
                        float eps, float *y, float *rstd) {
    SAO_CHECK(sao_norm_forward_check(ctx, "rmsnorm_forward", x, gamma, n, c, y));
    sao_threads_apply(ctx);
    #pragma omp parallel for schedule(static) if (n * c >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *xr = x + i * c;
        float *yr = y + i * c;
        double ss = 0.0;
        #pragma omp simd reduction(+:ss)
        for (int64_t j = 0; j < c; j++) ss += (double)xr[j] * xr[j];
        float rs = (float)(1.0 / sqrt(ss / (double)c + (double)eps));
        #pragma omp simd
        for (int64_t j = 0; j < c; j++) yr[j] = gamma[j] * (xr[j] * rs);
        if (rstd) rstd[i] = rs;
    }
    return 0;
}

int sao_rmsnorm_backward(sao_ctx *ctx, const float *dy, const float *x, const float *gamma,
                         const float *rstd, int64_t n, int64_t c, float *dx, float *dgamma) {
    SAO_CHECK(sao_rmsnorm_backward_check(ctx, "rmsnorm_backward", dy, x, gamma, rstd, n, c, dx));
    sao_threads_apply(ctx);
    if (dx) {
        #pragma omp parallel for schedule(static) if (n * c >= SAO_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            const float *xr = x + i * c, *dyr = dy + i * c;
            float *dxr = dx + i * c;
            float rs = rstd[i];
            double sgx = 0.0;   /* sum of (dy*gamma) * xhat */
            #pragma omp simd reduction(+:sgx)
            for (int64_t j = 0; j < c; j++) sgx += (double)(dyr[j] * gamma[j]) * (xr[j] * rs);
            float b = (float)(sgx / (double)c);
            #pragma omp simd
            for (int64_t j = 0; j < c; j++) dxr[j] += rs * (dyr[j] * gamma[j] - (xr[j] * rs) * b);
        }
    }
    if (dgamma) {
        int64_t nblk = (c + 63) / 64;
        #pragma omp parallel for schedule(static) if (n * c >= SAO_PAR_MIN)
        for (int64_t blk = 0; blk < nblk; blk++) {
            int64_t j0 = blk * 64, j1 = j0 + 64 < c ? j0 + 64 : c;
            float ag[64] = {0};
            for (int64_t i = 0; i < n; i++) {
                const float *xr = x + i * c, *dyr = dy + i * c;
                float rs = rstd[i];
                #pragma omp simd
                for (int64_t j = j0; j < j1; j++) ag[j - j0] += dyr[j] * (xr[j] * rs);
            }
            for (int64_t j = j0; j < j1; j++) dgamma[j] += ag[j - j0];
        }
    }
    return 0;
}

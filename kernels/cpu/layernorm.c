/* layernorm.c — LayerNorm over the last dimension (the DiT's pre-norms: gamma, zero beta, eps 1e-5).
 *
 * Shapes: x, y [N, C]; gamma, beta [C]; mean, rstd [N] (saved for the backward).
 * Row statistics are accumulated in double. Rows are independent (parallel over rows); dgamma and
 * dbeta are column sums computed in 64-column blocks over all rows in order, so the result does
 * not depend on the thread count.
 */
#include "kcommon.h"
#include <math.h>

/* ---- argument checks (kcheck.h: rmsnorm.c and the CUDA twins in kernels/cuda/norms.cu call them
 * too; the forward check is both norms') --------------------------------------------------------- */
int sao_norm_forward_check(sao_ctx *ctx, const char *op, const float *x, const float *gamma,
                           int64_t n, int64_t c, const float *y) {
    if (n < 0 || c < 1) return sao_err(ctx, op, "bad shape n=%lld c=%lld", (long long)n, (long long)c);
    SAO_NEED(ctx, op, x);
    SAO_NEED(ctx, op, gamma);
    SAO_NEED(ctx, op, y);
    return 1;
}

int sao_layernorm_backward_check(sao_ctx *ctx, const char *op, const float *dy, const float *x,
                                 const float *gamma, const float *mean, const float *rstd,
                                 int64_t n, int64_t c, const float *dx) {
    if (n < 0 || c < 1) return sao_err(ctx, op, "bad shape n=%lld c=%lld", (long long)n, (long long)c);
    SAO_NEED(ctx, op, dy);
    SAO_NEED(ctx, op, x);
    SAO_NEED(ctx, op, mean);
    SAO_NEED(ctx, op, rstd);
    if (dx) SAO_NEED(ctx, op, gamma);
    return 1;
}

/* ---- kernels ---------------------------------------------------------------------------------- */
int sao_layernorm_forward(sao_ctx *ctx, const float *x, const float *gamma, const float *beta,
                          int64_t n, int64_t c, float eps, float *y, float *mean, float *rstd) {
    SAO_CHECK(sao_norm_forward_check(ctx, "layernorm_forward", x, gamma, n, c, y));
    sao_threads_apply(ctx);
    #pragma omp parallel for schedule(static) if (n * c >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *xr = x + i * c;
        float *yr = y + i * c;
        double s = 0.0;
        #pragma omp simd reduction(+:s)
        for (int64_t j = 0; j < c; j++) s += xr[j];
        double mu = s / (double)c;
        double v = 0.0;
        #pragma omp simd reduction(+:v)
        for (int64_t j = 0; j < c; j++) { double d = xr[j] - mu; v += d * d; }
        double rs = 1.0 / sqrt(v / (double)c + (double)eps);
        float muf = (float)mu, rsf = (float)rs;
        if (beta) {
            #pragma omp simd
            for (int64_t j = 0; j < c; j++) yr[j] = (xr[j] - muf) * rsf * gamma[j] + beta[j];
        } else {
            #pragma omp simd
            for (int64_t j = 0; j < c; j++) yr[j] = (xr[j] - muf) * rsf * gamma[j];
        }
        if (mean) mean[i] = muf;
        if (rstd) rstd[i] = rsf;
    }
    return 0;
}

int sao_layernorm_backward(sao_ctx *ctx, const float *dy, const float *x, const float *gamma,
                           const float *mean, const float *rstd, int64_t n, int64_t c,
                           float *dx, float *dgamma, float *dbeta) {
    SAO_CHECK(sao_layernorm_backward_check(ctx, "layernorm_backward", dy, x, gamma, mean, rstd, n, c,
                                           dx));
    sao_threads_apply(ctx);
    if (dx) {
        #pragma omp parallel for schedule(static) if (n * c >= SAO_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            const float *xr = x + i * c, *dyr = dy + i * c;
            float *dxr = dx + i * c;
            float mu = mean[i], rs = rstd[i];
            double sg = 0.0, sgx = 0.0;   /* sums of g = dy*gamma and g*xhat */
            #pragma omp simd reduction(+:sg, sgx)
            for (int64_t j = 0; j < c; j++) {
                float g = dyr[j] * gamma[j];
                float xh = (xr[j] - mu) * rs;
                sg += g;
                sgx += (double)g * xh;
            }
            float a = (float)(sg / (double)c), b = (float)(sgx / (double)c);
            #pragma omp simd
            for (int64_t j = 0; j < c; j++) {
                float xh = (xr[j] - mu) * rs;
                dxr[j] += rs * (dyr[j] * gamma[j] - a - xh * b);
            }
        }
    }
    if (dgamma || dbeta) {
        int64_t nblk = (c + 63) / 64;
        #pragma omp parallel for schedule(static) if (n * c >= SAO_PAR_MIN)
        for (int64_t blk = 0; blk < nblk; blk++) {
            int64_t j0 = blk * 64, j1 = j0 + 64 < c ? j0 + 64 : c;
            float ag[64] = {0}, ab[64] = {0};
            for (int64_t i = 0; i < n; i++) {
                const float *xr = x + i * c, *dyr = dy + i * c;
                float mu = mean[i], rs = rstd[i];
                #pragma omp simd
                for (int64_t j = j0; j < j1; j++) {
                    ag[j - j0] += dyr[j] * ((xr[j] - mu) * rs);
                    ab[j - j0] += dyr[j];
                }
            }
            for (int64_t j = j0; j < j1; j++) {
                if (dgamma) dgamma[j] += ag[j - j0];
                if (dbeta) dbeta[j] += ab[j - j0];
            }
        }
    }
    return 0;
}

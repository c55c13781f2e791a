/* reduce.c — reductions and layout helpers: the sum of squares behind the global gradient norm
 * (and the non-finite check: the sum is inf/NaN when any element is), and the [B,R,C] -> [B,C,R]
 * transpose between latents [B, C, T] and tokens [B, T, C].
 *
 * Sums run in double over fixed 4096-element blocks added in order: thread-count independent.
 */
#include "kcommon.h"
#include <stdlib.h>

#define BLK 4096

/* ---- argument checks (kcheck.h: the CUDA twins in optim.cu and elementwise.cu call them too) ---- */
int sao_sumsq_check(sao_ctx *ctx, const char *op, const float *x, int64_t n, const double *out) {
    if (n < 0) return sao_err(ctx, op, "negative element count %lld", (long long)n);
    SAO_NEED(ctx, op, out);
    if (n == 0) return 0;
    SAO_NEED(ctx, op, x);
    return 1;
}

int sao_transpose_check(sao_ctx *ctx, const char *op, const float *x, int64_t B, int64_t R,
                        int64_t C, const float *y) {
    if (B < 0 || R < 0 || C < 0)
        return sao_err(ctx, op, "bad shape B=%lld R=%lld C=%lld", (long long)B, (long long)R, (long long)C);
    if (B * R * C == 0) return 0;
    SAO_NEED(ctx, op, x);
    SAO_NEED(ctx, op, y);
    if (x == y) return sao_err(ctx, op, "x and y are the same buffer (the transpose is not in place)");
    return 1;
}

/* ---- kernels ---------------------------------------------------------------------------------- */
int sao_sumsq(sao_ctx *ctx, const float *x, int64_t n, double *out) {
    const char *op = "sumsq";
    int rc = sao_sumsq_check(ctx, op, x, n, out);
    if (rc < 0) return -1;
    if (rc == 0) {
        *out = 0.0;
        return 0;
    }
    int64_t nb = (n + BLK - 1) / BLK;
    double *part = malloc((size_t)nb * sizeof(double));
    if (!part) return sao_err(ctx, op, "out of memory for %lld block sums", (long long)nb);
    sao_threads_apply(ctx);
    #pragma omp parallel for schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t k = 0; k < nb; k++) {
        int64_t i0 = k * BLK, i1 = i0 + BLK < n ? i0 + BLK : n;
        double s = 0.0;
        #pragma omp simd reduction(+:s)
        for (int64_t i = i0; i < i1; i++) s += (double)x[i] * (double)x[i];
        part[k] = s;
    }
    double s = 0.0;
    for (int64_t k = 0; k < nb; k++) s += part[k];
    free(part);
    *out = s;
    return 0;
}

int sao_transpose_forward(sao_ctx *ctx, const float *x, int64_t B, int64_t R, int64_t C,
                          int accumulate, float *y) {
    SAO_CHECK(sao_transpose_check(ctx, "transpose_forward", x, B, R, C, y));
    sao_threads_apply(ctx);
    /* 32 x 32 tiles keep both sides in cache */
    int64_t tr = (R + 31) / 32, tc = (C + 31) / 32;
    #pragma omp parallel for schedule(static) if (B * R * C >= SAO_PAR_MIN)
    for (int64_t job = 0; job < B * tr * tc; job++) {
        int64_t b = job / (tr * tc), r0 = (job / tc) % tr * 32, c0 = job % tc * 32;
        int64_t r1 = r0 + 32 < R ? r0 + 32 : R, c1 = c0 + 32 < C ? c0 + 32 : C;
        const float *xb = x + b * R * C;
        float *yb = y + b * R * C;
        for (int64_t c = c0; c < c1; c++)
            for (int64_t r = r0; r < r1; r++) {
                if (accumulate) yb[c * R + r] += xb[r * C + c];
                else yb[c * R + r] = xb[r * C + c];
            }
    }
    return 0;
}

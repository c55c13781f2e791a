/* loss.c — mean squared error, the v-objective loss (spec 7.3): loss = mean((pred - target)^2).
 *
 * The forward sums in double over fixed 4096-element blocks, then adds the block sums in order, so
 * the loss does not depend on the thread count (bit-exact resume across machines needs this).
 */
#include "kcommon.h"
#include <stdlib.h>

#define BLK 4096

int sao_mse_forward(sao_ctx *ctx, const float *pred, const float *target, int64_t n, double *loss) {
    const char *op = "mse_forward";
    if (n < 1) return sao_err(ctx, op, "need at least one element, got %lld", (long long)n);
    SAO_NEED(ctx, op, pred);
    SAO_NEED(ctx, op, target);
    SAO_NEED(ctx, op, loss);
    int64_t nb = (n + BLK - 1) / BLK;
    double *part = malloc((size_t)nb * sizeof(double));
    if (!part) return sao_err(ctx, op, "out of memory for %lld block sums", (long long)nb);
    sao_threads_apply(ctx);
    #pragma omp parallel for schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t k = 0; k < nb; k++) {
        int64_t i0 = k * BLK, i1 = i0 + BLK < n ? i0 + BLK : n;
        double s = 0.0;
        #pragma omp simd reduction(+:s)
        for (int64_t i = i0; i < i1; i++) {
            double d = (double)pred[i] - (double)target[i];
            s += d * d;
        }
        part[k] = s;
    }
    double s = 0.0;
    for (int64_t k = 0; k < nb; k++) s += part[k];
    free(part);
    *loss = s / (double)n;
    return 0;
}

int sao_mse_backward(sao_ctx *ctx, const float *pred, const float *target, int64_t n, double dloss,
                     float *dpred) {
    const char *op = "mse_backward";
    if (n < 1) return sao_err(ctx, op, "need at least one element, got %lld", (long long)n);
    SAO_NEED(ctx, op, pred);
    SAO_NEED(ctx, op, target);
    SAO_NEED(ctx, op, dpred);
    float k = (float)(2.0 * dloss / (double)n);
    sao_threads_apply(ctx);
    #pragma omp parallel for simd schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dpred[i] += k * (pred[i] - target[i]);
    return 0;
}

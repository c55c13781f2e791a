/* loss.c — mean squared error, the v-objective loss (spec 7.3): loss = mean((pred - target)^2),
 * and the objective's inputs: x_t = a x0 + s n and v = a n - s x0 per batch item.
 *
 * The forward sums in double over fixed 4096-element blocks, then adds the block sums in order, so
 * the loss does not depend on the thread count (bit-exact resume across machines needs this).
 */
#include "kcommon.h"
#include <math.h>
#include <stdlib.h>

#define BLK 4096

/* ---- argument checks (kcheck.h: the CUDA twins in kernels/cuda/optim.cu call them too) --------- */
/* what both passes read */
static int check_inputs(sao_ctx *ctx, const char *op, const float *pred, const float *target,
                        int64_t n) {
    if (n < 1) return sao_err(ctx, op, "need at least one element, got %lld", (long long)n);
    SAO_NEED(ctx, op, pred);
    SAO_NEED(ctx, op, target);
    return 0;
}

int sao_mse_forward_check(sao_ctx *ctx, const char *op, const float *pred, const float *target,
                          int64_t n, const double *loss) {
    if (check_inputs(ctx, op, pred, target, n)) return -1;
    SAO_NEED(ctx, op, loss);
    return 1;
}

int sao_mse_backward_check(sao_ctx *ctx, const char *op, const float *pred, const float *target,
                           int64_t n, const float *dpred) {
    if (check_inputs(ctx, op, pred, target, n)) return -1;
    SAO_NEED(ctx, op, dpred);
    return 1;
}

int sao_v_target_check(sao_ctx *ctx, const char *op, int64_t B, int64_t per, const float *x0, const float *noise,
                       const float *a, const float *s, const float *xt, const float *v) {
    if (B < 1 || per < 1) return sao_err(ctx, op, "bad sizes B=%lld per=%lld", (long long)B, (long long)per);
    SAO_NEED(ctx, op, x0);
    SAO_NEED(ctx, op, noise);
    SAO_NEED(ctx, op, a);
    SAO_NEED(ctx, op, s);
    SAO_NEED(ctx, op, xt);
    SAO_NEED(ctx, op, v);
    return 1;
}

/* ---- kernels ---------------------------------------------------------------------------------- */
int sao_mse_forward(sao_ctx *ctx, const float *pred, const float *target, int64_t n, double *loss) {
    const char *op = "mse_forward";
    SAO_CHECK(sao_mse_forward_check(ctx, op, pred, target, n, loss));
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
    SAO_CHECK(sao_mse_backward_check(ctx, "mse_backward", pred, target, n, dpred));
    float k = (float)(2.0 * dloss / (double)n);
    sao_threads_apply(ctx);
    #pragma omp parallel for simd schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dpred[i] += k * (pred[i] - target[i]);
    return 0;
}

/* x_t and v: one fmaf per output with the other product inside it, so no compiler has a multiply-add
 * left to contract, and the CUDA twin (kernels/cuda/optim.cu) gives the same bits. */
int sao_v_target(sao_ctx *ctx, int64_t B, int64_t per, const float *x0, const float *noise, const float *a,
                 const float *s, float *xt, float *v) {
    SAO_CHECK(sao_v_target_check(ctx, "v_target", B, per, x0, noise, a, s, xt, v));
    sao_threads_apply(ctx);
    #pragma omp parallel for schedule(static) if (B * per >= SAO_PAR_MIN)
    for (int64_t i = 0; i < B * per; i++) {
        float ab = a[i / per], sb = s[i / per];
        xt[i] = fmaf(x0[i], ab, noise[i] * sb);
        v[i] = fmaf(noise[i], ab, -(x0[i] * sb));
    }
    return 0;
}

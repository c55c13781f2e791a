/* adamw.c — the optimiser step and the EMA of the weights (spec 7.5, 7.6).
 *
 * AdamW as torch.optim.AdamW (decoupled weight decay, bias correction, amsgrad off), with the
 * per-element arithmetic in double and one rounding to fp32 per stored value; SAO decays every
 * trainable tensor (biases and LayerNorm gains included). The EMA is ema_pytorch's lerp; its
 * decay schedule is scalar arithmetic and lives in Lua.
 * Elementwise, so the result does not depend on the thread count.
 */
#include "kcommon.h"
#include <math.h>

/* ---- argument checks (kcheck.h: the CUDA twins in kernels/cuda/optim.cu call them too) --------- */
int sao_adamw_check(sao_ctx *ctx, const char *op, const float *param, const float *grad,
                    const float *m, const float *v, int64_t n, double beta1, double beta2,
                    int64_t step) {
    if (n < 0) return sao_err(ctx, op, "negative element count %lld", (long long)n);
    if (step < 1) return sao_err(ctx, op, "step %lld: the count is 1-based and includes this step",
                                 (long long)step);
    if (!(beta1 >= 0.0 && beta1 < 1.0 && beta2 >= 0.0 && beta2 < 1.0))
        return sao_err(ctx, op, "betas (%g, %g) must lie in [0, 1)", beta1, beta2);
    if (n == 0) return 0;
    SAO_NEED(ctx, op, param);
    SAO_NEED(ctx, op, grad);
    SAO_NEED(ctx, op, m);
    SAO_NEED(ctx, op, v);
    return 1;
}

int sao_ema_check(sao_ctx *ctx, const char *op, const float *ema, const float *param, int64_t n,
                  double decay) {
    if (n < 0) return sao_err(ctx, op, "negative element count %lld", (long long)n);
    if (!(decay >= 0.0 && decay <= 1.0)) return sao_err(ctx, op, "decay %g outside [0, 1]", decay);
    if (n == 0) return 0;
    SAO_NEED(ctx, op, ema);
    SAO_NEED(ctx, op, param);
    return 1;
}

/* ---- kernels ---------------------------------------------------------------------------------- */
int sao_adamw_step(sao_ctx *ctx, float *param, const float *grad, float *m, float *v, int64_t n,
                   double lr, double beta1, double beta2, double eps, double weight_decay,
                   int64_t step, double grad_scale) {
    SAO_CHECK(sao_adamw_check(ctx, "adamw_step", param, grad, m, v, n, beta1, beta2, step));
    double decay = 1.0 - lr * weight_decay;
    double step_size = lr / (1.0 - pow(beta1, (double)step));
    double bc2_sqrt = sqrt(1.0 - pow(beta2, (double)step));
    sao_threads_apply(ctx);
    #pragma omp parallel for simd schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        double g = (double)grad[i] * grad_scale;
        double mi = beta1 * (double)m[i] + (1.0 - beta1) * g;
        double vi = beta2 * (double)v[i] + (1.0 - beta2) * g * g;
        double p = (double)param[i] * decay;
        p -= step_size * mi / (sqrt(vi) / bc2_sqrt + eps);
        m[i] = (float)mi;
        v[i] = (float)vi;
        param[i] = (float)p;
    }
    return 0;
}

int sao_ema_update(sao_ctx *ctx, float *ema, const float *param, int64_t n, double decay) {
    SAO_CHECK(sao_ema_check(ctx, "ema_update", ema, param, n, decay));
    double w = 1.0 - decay;
    sao_threads_apply(ctx);
    #pragma omp parallel for simd schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        double e = (double)ema[i];
        ema[i] = (float)(e + w * ((double)param[i] - e));
    }
    return 0;
}

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
#include <stdio.h>
#include <string.h>

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

int sao_adamw_multi_check(sao_ctx *ctx, const char *op, const sao_optim_tensor *t, int count,
                          const sao_optim_hyper *h) {
    if (count < 0) return sao_err(ctx, op, "negative tensor count %d", count);
    if (count == 0) return 0;
    SAO_NEED(ctx, op, t);
    SAO_NEED(ctx, op, h);
    if (!(h->ema_decay <= 1.0)) return sao_err(ctx, op, "EMA decay %g above 1", h->ema_decay);
    if (h->stochastic != 0 && h->stochastic != 1)
        return sao_err(ctx, op, "stochastic is %d: 0 (round to nearest) or 1", h->stochastic);
    int work = 0;
    for (int i = 0; i < count; i++) {
        char what[48];
        snprintf(what, sizeof what, "%s (tensor %d)", op, i + 1);
        int rc = sao_adamw_check(ctx, what, t[i].param, t[i].grad, t[i].m, t[i].v, t[i].n, h->beta1,
                                 h->beta2, h->step);
        if (rc < 0) return -1;
        if (rc > 0) work = 1;
    }
    return work;
}

/* ---- kernels ---------------------------------------------------------------------------------- */
int sao_adamw_step(sao_ctx *ctx, float *param, const float *grad, float *m, float *v, int64_t n,
                   double lr, double beta1, double beta2, double eps, double weight_decay,
                   int64_t step, double grad_scale) {
    SAO_CHECK(sao_adamw_check(ctx, "adamw_step", param, grad, m, v, n, beta1, beta2, step));
    /* the fused step's arithmetic (below), on one tensor, without EMA or bf16 copy */
    sao_optim_tensor t = {param, grad, m, v, NULL, NULL, n, 0};
    sao_optim_hyper h = {lr, beta1, beta2, eps, weight_decay, step, grad_scale, -1.0, 0, 0};
    return sao_adamw_multi(ctx, &t, 1, &h);
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

/* bf16 bits of f rounded stochastically with the 16 random bits r (NaN stays a quiet NaN, +-inf
 * stays): adding r below the kept bits and truncating rounds up with probability (dropped bits) / 2^16. */
static uint16_t bf16_stochastic(float f, uint32_t r) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    if ((u & 0x7fffffffu) == 0x7f800000u) return (uint16_t)(u >> 16);
    return (uint16_t)((u + (r & 0xffffu)) >> 16);
}

/* The 16 rounding bits of element j of the stream (seed, step): sao_adamw_multi's comment. */
static uint32_t sr_bits(uint64_t seed, int64_t step, uint64_t j) {
    uint32_t b[4];
    sao_philox4x32(j / 4 + ((uint64_t)step << 40), seed, b);
    return b[j % 4] & 0xffffu;
}

int sao_adamw_multi(sao_ctx *ctx, const sao_optim_tensor *t, int count, const sao_optim_hyper *h) {
    const char *op = "adamw_multi";
    SAO_CHECK(sao_adamw_multi_check(ctx, op, t, count, h));
    double decay = 1.0 - h->lr * h->weight_decay;
    double step_size = h->lr / (1.0 - pow(h->beta1, (double)h->step));
    double bc2_sqrt = sqrt(1.0 - pow(h->beta2, (double)h->step));
    double beta1 = h->beta1, beta2 = h->beta2, eps = h->eps, gs = h->grad_scale;
    double ew = 1.0 - h->ema_decay;
    sao_threads_apply(ctx);
    for (int k = 0; k < count; k++) {
        float *param = t[k].param, *m = t[k].m, *v = t[k].v;
        const float *grad = t[k].grad;
        float *ema = h->ema_decay >= 0.0 ? t[k].ema : NULL;
        uint16_t *bf = t[k].param_bf16;
        int64_t n = t[k].n;
        #pragma omp parallel for schedule(static) if (n >= SAO_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            double g = (double)grad[i] * gs;
            double mi = beta1 * (double)m[i] + (1.0 - beta1) * g;
            double vi = beta2 * (double)v[i] + (1.0 - beta2) * g * g;
            double p = (double)param[i] * decay;
            p -= step_size * mi / (sqrt(vi) / bc2_sqrt + eps);
            float pf = (float)p;
            m[i] = (float)mi;
            v[i] = (float)vi;
            param[i] = pf;
            if (ema) {
                double e = (double)ema[i];
                ema[i] = h->ema_decay == 0.0 ? pf : (float)(e + ew * ((double)pf - e));
            }
            if (bf) bf[i] = h->stochastic ? bf16_stochastic(pf, sr_bits(h->sr_seed, h->step, t[k].sr_offset + (uint64_t)i))
                                          : sao_f32_to_bf16(pf);
        }
    }
    return 0;
}

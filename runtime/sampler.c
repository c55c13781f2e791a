/* sampler.c — the per-step math of the k-diffusion samplers SAO uses (SAO_SPEC §8), on flat
 * float arrays. The loop, the schedule choice and the denoiser call live in lua/sao/sampler.lua.
 *
 * Conventions: sigmas are the variance-exploding noise levels (x = z0 + sigma n); a step goes
 * from sig to sig_next using denoised D = D(x, sig). History: den1/den2 hold the previous one and
 * two denoised values, h1/h2 the previous step sizes in -log sigma; `have` says how many history
 * entries are valid (0, 1, 2). The step shifts the history itself (den2 <- den1 <- D). */
#include "internal.h"
#include "sao_model.h"
#include "sampler_step.h"
#include <math.h>
#include <string.h>

int sao_sigmas_polyexponential(sao_ctx *ctx, int n, double sigma_min, double sigma_max, double rho,
                               double *out) {
    if (n < 1) return sao_err(ctx, "sigmas", "need at least 1 step, got %d", n);
    if (!(sigma_min > 0) || !(sigma_max >= sigma_min))
        return sao_err(ctx, "sigmas", "need 0 < sigma_min <= sigma_max (got %g, %g)", sigma_min, sigma_max);
    double lmin = log(sigma_min), lmax = log(sigma_max);
    for (int i = 0; i < n; i++) {
        double ramp = n == 1 ? 1.0 : pow(1.0 - (double)i / (n - 1), rho);
        out[i] = exp(ramp * (lmax - lmin) + lmin);
    }
    out[n] = 0.0;
    return 0;
}

/* v-prediction to denoised (k-diffusion VDenoiser, sigma_data 1): D = x/(s^2+1) - s/sqrt(s^2+1) v */
int sao_vdenoise(sao_ctx *ctx, int64_t n, const float *x, const float *v, double sigma, float *den) {
    SAO_UNUSED(ctx);
    double c_skip = 1.0 / (sigma * sigma + 1.0), c_out = -sigma / sqrt(sigma * sigma + 1.0);
    for (int64_t i = 0; i < n; i++) den[i] = sao_vdenoise_elem(c_skip, c_out, x[i], v[i]);
    return 0;
}

int sao_step_coefs_init(sao_ctx *ctx, const char *op, sao_step_coefs *c, int kind, int have, double sig,
                        double sig_next, double h1, double h2, double eta, int has_noise, const float *den1,
                        const float *den2) {
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->have = have;
    if (sig_next == 0.0 && kind != SAO_SAMPLER_EULER) {     /* last step: the denoised estimate */
        c->kind = SAO_STEP_COPY;
        return 0;
    }
    switch (kind) {
    case SAO_SAMPLER_EULER:                                 /* d = (x - D)/sig; x += d (sig_next - sig) */
        c->a = (sig_next - sig) / sig;
        return 0;
    case SAO_SAMPLER_DPMPP_2M_SDE: {
        double h = log(sig) - log(sig_next), eh = eta * h;
        c->a = sig_next / sig * exp(-eh);
        c->b = -expm1(-h - eh);
        c->corr = have >= 1 ? 0.5 * c->b * (h / h1) : 0.0;  /* midpoint: 0.5 b (1/r) (D - D1) */
        c->nz = (eta != 0.0 && has_noise) ? sig_next * sqrt(-expm1(-2.0 * eh)) : 0.0;
        break;
    }
    case SAO_SAMPLER_DPMPP_3M_SDE: {
        double h = log(sig) - log(sig_next), he = (eta + 1.0) * h;
        c->a = exp(-he);
        c->b = -expm1(-he);
        c->phi2 = -c->b / he + 1.0;
        c->phi3 = c->phi2 / he - 0.5;
        c->nz = (eta != 0.0 && has_noise) ? sig_next * sqrt(-expm1(-2.0 * h * eta)) : 0.0;
        c->r0 = have >= 1 ? h1 / h : 0;
        c->r1 = have >= 2 ? h2 / h : 0;
        break;
    }
    default:
        return sao_err(ctx, op, "unknown sampler kind %d", kind);
    }
    c->noise = c->nz != 0.0;
    if ((have >= 1 && !den1) || (have >= 2 && kind == SAO_SAMPLER_DPMPP_3M_SDE && !den2))
        return sao_err(ctx, op, "a history of %d steps needs den1%s", have, have >= 2 ? " and den2" : "");
    return 0;
}

int sao_sample_step(sao_ctx *ctx, int kind, int64_t n, float *x, const float *den, float *den1,
                    float *den2, int have, double sig, double sig_next, double h1, double h2,
                    double eta, const float *noise) {
    sao_step_coefs c;
    if (sao_step_coefs_init(ctx, "sample_step", &c, kind, have, sig, sig_next, h1, h2, eta, noise != NULL, den1, den2))
        return -1;
    for (int64_t i = 0; i < n; i++)
        x[i] = sao_step_elem(&c, x[i], den[i], den1 ? den1[i] : 0.0f, den2 ? den2[i] : 0.0f,
                             c.noise ? noise[i] : 0.0f);
    /* Euler keeps no history */
    if (kind != SAO_SAMPLER_EULER) {
        if (den2 && den1) memcpy(den2, den1, (size_t)n * sizeof(float));
        if (den1) memcpy(den1, den, (size_t)n * sizeof(float));
    }
    return 0;
}

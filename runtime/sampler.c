/* sampler.c — the per-step math of the k-diffusion samplers SAO uses (SAO_SPEC §8), on flat
 * float arrays. The loop, the schedule choice and the denoiser call live in lua/sao/sampler.lua.
 *
 * Conventions: sigmas are the variance-exploding noise levels (x = z0 + sigma n); a step goes
 * from sig to sig_next using denoised D = D(x, sig). History: den1/den2 hold the previous one and
 * two denoised values, h1/h2 the previous step sizes in -log sigma; `have` says how many history
 * entries are valid (0, 1, 2). The step shifts the history itself (den2 <- den1 <- D). */
#include "internal.h"
#include "sao_model.h"
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
    for (int64_t i = 0; i < n; i++) den[i] = (float)(c_skip * x[i] + c_out * v[i]);
    return 0;
}

static void shift(int64_t n, const float *den, float *den1, float *den2) {
    if (den2 && den1) memcpy(den2, den1, (size_t)n * sizeof(float));
    if (den1) memcpy(den1, den, (size_t)n * sizeof(float));
}

int sao_sample_step(sao_ctx *ctx, int kind, int64_t n, float *x, const float *den, float *den1,
                    float *den2, int have, double sig, double sig_next, double h1, double h2,
                    double eta, const float *noise) {
    const char *op = "sample_step";
    if (sig_next == 0.0 && kind != SAO_SAMPLER_EULER) {     /* last step: the denoised estimate */
        memcpy(x, den, (size_t)n * sizeof(float));
        shift(n, den, den1, den2);
        return 0;
    }
    switch (kind) {
    case SAO_SAMPLER_EULER: {
        /* d = (x - D)/sig; x += d (sig_next - sig) */
        double r = (sig_next - sig) / sig;
        for (int64_t i = 0; i < n; i++) x[i] = (float)(x[i] + (x[i] - den[i]) * r);
        return 0;
    }
    case SAO_SAMPLER_DPMPP_2M_SDE: {
        double h = log(sig) - log(sig_next), eh = eta * h;
        double a = sig_next / sig * exp(-eh), b = -expm1(-h - eh);
        double corr = (have >= 1) ? 0.5 * b * (h / h1) : 0.0;   /* midpoint: 0.5 b (1/r) (D - D1) */
        double nz = (eta != 0.0 && noise) ? sig_next * sqrt(-expm1(-2.0 * eh)) : 0.0;
        for (int64_t i = 0; i < n; i++) {
            double v = a * x[i] + b * den[i];
            if (have >= 1) v += corr * ((double)den[i] - den1[i]);
            if (nz != 0.0) v += noise[i] * nz;
            x[i] = (float)v;
        }
        break;
    }
    case SAO_SAMPLER_DPMPP_3M_SDE: {
        double h = log(sig) - log(sig_next), he = (eta + 1.0) * h;
        double e = exp(-he), one_m = -expm1(-he);
        double phi2 = -one_m / he + 1.0, phi3 = phi2 / he - 0.5;
        double nz = (eta != 0.0 && noise) ? sig_next * sqrt(-expm1(-2.0 * h * eta)) : 0.0;
        double r0 = have >= 1 ? h1 / h : 0, r1 = have >= 2 ? h2 / h : 0;
        for (int64_t i = 0; i < n; i++) {
            double v = e * x[i] + one_m * den[i];
            if (have >= 2) {
                double d10 = ((double)den[i] - den1[i]) / r0, d11 = ((double)den1[i] - den2[i]) / r1;
                double d1 = d10 + (d10 - d11) * r0 / (r0 + r1), d2 = (d10 - d11) / (r0 + r1);
                v += phi2 * d1 - phi3 * d2;
            } else if (have == 1) {
                v += phi2 * ((double)den[i] - den1[i]) / r0;
            }
            if (nz != 0.0) v += noise[i] * nz;
            x[i] = (float)v;
        }
        break;
    }
    default:
        return sao_err(ctx, op, "unknown sampler kind %d", kind);
    }
    shift(n, den, den1, den2);
    return 0;
}

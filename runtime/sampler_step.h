/* sampler_step.h — one element of the samplers' per-step math, shared by runtime/sampler.c (the
 * host loop) and kernels/cuda/sampler.cu (its device twin), so that both compute one formula.
 *
 * The step's scalars (sao_step_coefs, from sao_step_coefs_init in sampler.c) are computed once on
 * the host in double; each element is then a few double operations rounded to float once. Every
 * multiply-add is an explicit fma() and no other product meets an add, so no compiler contraction
 * (gcc's -ffp-contract=fast, nvcc's --fmad) has anything left to fuse: the host, a GPU and the
 * emulation give the same bits. */
#ifndef SAO_SAMPLER_STEP_H
#define SAO_SAMPLER_STEP_H
#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__) || defined(__device__)
#define SAO_HOSTDEV __host__ __device__
#else
#define SAO_HOSTDEV
#endif

/* kind: a sao_sampler_kind, or SAO_STEP_COPY (the last step of the DPM++ samplers: x = den). */
enum { SAO_STEP_COPY = -1 };
typedef struct {
    int kind, have;    /* have: history entries used (0, 1, 2) */
    int noise;         /* 1: the noise term is added (nz != 0) */
    double a, b;       /* x <- a x + b den (+ the history and noise terms); Euler: a = r, x + (x - den) r */
    double corr;       /* 2M: corr (den - den1) */
    double r0, r1, phi2, phi3;   /* 3M's history terms */
    double nz;         /* noise scale */
} sao_step_coefs;

/* The step sig -> sig_next (sampler.c; the arguments of sao_sample_step). Returns 0, or -1 with
 * a sao error naming `op` (an unknown kind, or a history without the buffers it reads). */
struct sao_ctx;
int sao_step_coefs_init(struct sao_ctx *ctx, const char *op, sao_step_coefs *c, int kind, int have, double sig,
                        double sig_next, double h1, double h2, double eta, int has_noise, const float *den1,
                        const float *den2);

/* den = c_skip x + c_out v */
SAO_HOSTDEV static inline float sao_vdenoise_elem(double c_skip, double c_out, float x, float v) {
    return (float)fma(c_skip, (double)x, c_out * (double)v);
}

/* The new x of one element; d1, d2 are read only when the coefficients use them. */
SAO_HOSTDEV static inline float sao_step_elem(const sao_step_coefs *c, float x, float den, float d1, float d2,
                                              float noise) {
    if (c->kind == SAO_STEP_COPY) return den;
    if (c->kind == 0) return (float)fma((double)x - (double)den, c->a, (double)x);   /* Euler */
    double v = fma(c->a, (double)x, c->b * (double)den);
    if (c->kind == 1) {                                                              /* DPM++ 2M SDE */
        if (c->have >= 1) v = fma(c->corr, (double)den - (double)d1, v);
    } else if (c->have >= 2) {                                                       /* DPM++ 3M SDE */
        double d10 = ((double)den - (double)d1) / c->r0, d11 = ((double)d1 - (double)d2) / c->r1;
        double q = (d10 - d11) * c->r0;
        double dd1 = d10 + q / (c->r0 + c->r1), dd2 = (d10 - d11) / (c->r0 + c->r1);
        v = fma(c->phi2, dd1, v);
        v = fma(-c->phi3, dd2, v);
    } else if (c->have == 1) {
        v = fma(c->phi2, ((double)den - (double)d1) / c->r0, v);
    }
    if (c->noise) v = fma((double)noise, c->nz, v);
    return (float)v;
}
#endif

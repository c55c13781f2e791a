/* fourier.c — the two Fourier feature maps of SAO, forward and backward, in double internally.
 *
 *   DiT timestep features (FourierFeatures, spec 5.2): t [B], w [F] ->
 *       y [B, 2F] = [cos(2 pi t w_i) for i<F, sin(2 pi t w_i) for i<F]     (cos FIRST)
 *   NumberEmbedder features (LearnedPositionalEmbedding, spec 4.2): u [B], w [F] ->
 *       y [B, 1+2F] = [u, sin(2 pi u w_i), cos(2 pi u w_i)]               (u, then sin)
 *
 * Tiny (B x F with F = 128); no threads. Gradients for w sum over the batch in order.
 */
#include "kcommon.h"
#include <math.h>

#define TWO_PI 6.28318530717958647692

/* The argument check of all eight feature kernels, CPU and CUDA (kcheck.h). */
int sao_features_check(sao_ctx *ctx, const char *op, int64_t B, int64_t f, const float *a,
                       const float *b, const float *c) {
    if (B < 0 || f < 1) return sao_err(ctx, op, "bad shape B=%lld F=%lld", (long long)B, (long long)f);
    if (!a || !b || !c) return sao_err(ctx, op, "NULL input or output buffer");
    return 1;
}

int sao_fourier_features_forward(sao_ctx *ctx, const float *t, const float *w, int64_t B,
                                 int64_t f, float *y) {
    SAO_CHECK(sao_features_check(ctx, "fourier_features_forward", B, f, t, w, y));
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < f; i++) {
            double ph = TWO_PI * (double)t[b] * (double)w[i];
            y[b * 2 * f + i] = (float)cos(ph);
            y[b * 2 * f + f + i] = (float)sin(ph);
        }
    return 0;
}

int sao_fourier_features_backward(sao_ctx *ctx, const float *dy, const float *t, const float *w,
                                  int64_t B, int64_t f, float *dw, float *dt) {
    SAO_CHECK(sao_features_check(ctx, "fourier_features_backward", B, f, dy, t, w));
    for (int64_t i = 0; i < f; i++) {
        double acc = 0.0;
        for (int64_t b = 0; b < B; b++) {
            double ph = TWO_PI * (double)t[b] * (double)w[i];
            /* d/dph [cos, sin] = [-sin, cos] */
            double g = -sin(ph) * dy[b * 2 * f + i] + cos(ph) * dy[b * 2 * f + f + i];
            acc += g * TWO_PI * (double)t[b];
        }
        if (dw) dw[i] += (float)acc;
    }
    if (dt)
        for (int64_t b = 0; b < B; b++) {
            double acc = 0.0;
            for (int64_t i = 0; i < f; i++) {
                double ph = TWO_PI * (double)t[b] * (double)w[i];
                double g = -sin(ph) * dy[b * 2 * f + i] + cos(ph) * dy[b * 2 * f + f + i];
                acc += g * TWO_PI * (double)w[i];
            }
            dt[b] += (float)acc;
        }
    return 0;
}

int sao_number_features_forward(sao_ctx *ctx, const float *u, const float *w, int64_t B,
                                int64_t f, float *y) {
    SAO_CHECK(sao_features_check(ctx, "number_features_forward", B, f, u, w, y));
    for (int64_t b = 0; b < B; b++) {
        float *yr = y + b * (1 + 2 * f);
        yr[0] = u[b];
        for (int64_t i = 0; i < f; i++) {
            double ph = TWO_PI * (double)u[b] * (double)w[i];
            yr[1 + i] = (float)sin(ph);
            yr[1 + f + i] = (float)cos(ph);
        }
    }
    return 0;
}

int sao_number_features_backward(sao_ctx *ctx, const float *dy, const float *u, const float *w,
                                 int64_t B, int64_t f, float *dw, float *du) {
    SAO_CHECK(sao_features_check(ctx, "number_features_backward", B, f, dy, u, w));
    for (int64_t i = 0; i < f; i++) {
        double acc = 0.0;
        for (int64_t b = 0; b < B; b++) {
            const float *d = dy + b * (1 + 2 * f);
            double ph = TWO_PI * (double)u[b] * (double)w[i];
            /* d/dph [sin, cos] = [cos, -sin] */
            double g = cos(ph) * d[1 + i] - sin(ph) * d[1 + f + i];
            acc += g * TWO_PI * (double)u[b];
        }
        if (dw) dw[i] += (float)acc;
    }
    if (du)
        for (int64_t b = 0; b < B; b++) {
            const float *d = dy + b * (1 + 2 * f);
            double acc = d[0];
            for (int64_t i = 0; i < f; i++) {
                double ph = TWO_PI * (double)u[b] * (double)w[i];
                double g = cos(ph) * d[1 + i] - sin(ph) * d[1 + f + i];
                acc += g * TWO_PI * (double)w[i];
            }
            du[b] += (float)acc;
        }
    return 0;
}

/* snake.c — SnakeBeta activation of the Oobleck VAE (spec 3.1), per channel, log-scale parameters:
 *   y = x + 1/(exp(beta_c) + 1e-9) * sin(exp(alpha_c) * x)^2
 *
 * Shapes: x, y, dy, dx [B, C, T] (channel-first); alpha, beta, dalpha, dbeta [C].
 * sin/cos come from the vectorised sao_vsincosf (absolute error < 1e-7). Work is split over
 * channel rows; the parameter gradients of channel c are summed over (b, t) in order, in double,
 * by one thread, so results do not depend on the thread count.
 */
#include "kcommon.h"
#include <math.h>

/* ---- argument checks (kcheck.h: the CUDA twins in kernels/cuda/elementwise.cu call them too) ---- */
static int check_shape(sao_ctx *ctx, const char *op, int64_t B, int64_t C, int64_t T) {
    if (B < 0 || C < 1 || T < 0)
        return sao_err(ctx, op, "bad shape B=%lld C=%lld T=%lld", (long long)B, (long long)C, (long long)T);
    return 0;
}

/* what both passes read */
static int check_inputs(sao_ctx *ctx, const char *op, const float *x, const float *alpha,
                        const float *beta) {
    SAO_NEED(ctx, op, x);
    SAO_NEED(ctx, op, alpha);
    SAO_NEED(ctx, op, beta);
    return 0;
}

int sao_snake_forward_check(sao_ctx *ctx, const char *op, const float *x, const float *alpha,
                            const float *beta, int64_t B, int64_t C, int64_t T, const float *y) {
    if (check_shape(ctx, op, B, C, T) || check_inputs(ctx, op, x, alpha, beta)) return -1;
    SAO_NEED(ctx, op, y);
    return 1;
}

int sao_snake_backward_check(sao_ctx *ctx, const char *op, const float *dy, const float *x,
                             const float *alpha, const float *beta, int64_t B, int64_t C, int64_t T) {
    if (check_shape(ctx, op, B, C, T)) return -1;
    SAO_NEED(ctx, op, dy);
    if (check_inputs(ctx, op, x, alpha, beta)) return -1;
    return 1;
}

/* ---- kernels ---------------------------------------------------------------------------------- */
int sao_snake_forward(sao_ctx *ctx, const float *x, const float *alpha, const float *beta,
                      int64_t B, int64_t C, int64_t T, float *y) {
    SAO_CHECK(sao_snake_forward_check(ctx, "snake_forward", x, alpha, beta, B, C, T, y));
    sao_threads_apply(ctx);
    #pragma omp parallel for schedule(static) if (B * C * T >= SAO_PAR_MIN)
    for (int64_t r = 0; r < B * C; r++) {
        int64_t c = r % C;
        float a = expf(alpha[c]);
        float inv = 1.0f / (expf(beta[c]) + 1e-9f);
        const float *xr = x + r * T;
        float *yr = y + r * T;
        #pragma omp simd
        for (int64_t t = 0; t < T; t++) {
            float s, co;
            sao_vsincosf(a * xr[t], &s, &co);
            yr[t] = xr[t] + inv * (s * s);
        }
    }
    return 0;
}

int sao_snake_backward(sao_ctx *ctx, const float *dy, const float *x, const float *alpha,
                       const float *beta, int64_t B, int64_t C, int64_t T,
                       float *dx, float *dalpha, float *dbeta) {
    SAO_CHECK(sao_snake_backward_check(ctx, "snake_backward", dy, x, alpha, beta, B, C, T));
    sao_threads_apply(ctx);
    /* one channel per iteration: the parameter sums stay in one thread */
    #pragma omp parallel for schedule(static) if (B * C * T >= SAO_PAR_MIN)
    for (int64_t c = 0; c < C; c++) {
        float a = expf(alpha[c]);
        float e = expf(beta[c]);
        float inv = 1.0f / (e + 1e-9f);
        double sa = 0.0, sb = 0.0;   /* sum dy * d/d(log alpha), sum dy * sin^2 */
        for (int64_t b = 0; b < B; b++) {
            const float *xr = x + (b * C + c) * T, *dyr = dy + (b * C + c) * T;
            float *dxr = dx ? dx + (b * C + c) * T : NULL;
            if (dxr) {
                #pragma omp simd
                for (int64_t t = 0; t < T; t++) {
                    float s, co;
                    sao_vsincosf(a * xr[t], &s, &co);
                    dxr[t] += dyr[t] * (1.0f + inv * a * (2.0f * s * co));
                }
            }
            if (dalpha || dbeta) {
                #pragma omp simd reduction(+:sa, sb)
                for (int64_t t = 0; t < T; t++) {
                    float s, co;
                    sao_vsincosf(a * xr[t], &s, &co);
                    sa += (double)(dyr[t] * (2.0f * s * co) * xr[t]);
                    sb += (double)(dyr[t] * (s * s));
                }
            }
        }
        /* d/d(log alpha) = inv * 2 sin cos * x * a ; d/d(log beta) = sin^2 * -e/(e+1e-9)^2 */
        if (dalpha) dalpha[c] += (float)(sa * (double)inv * (double)a);
        if (dbeta) dbeta[c] += (float)(sb * -(double)e * (double)inv * (double)inv);
    }
    return 0;
}

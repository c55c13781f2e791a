/* activations.c — elementwise activations and their backward passes: SiLU, GELU (erf and tanh
 * forms), ReLU, softplus, and SAO's SwiGLU (value half first, gate half second).
 *
 * All take n contiguous elements; forward outputs may alias their inputs; backward passes
 * accumulate dx += dy * f'(x) from the forward's input x. SiLU and SwiGLU use the vectorised
 * exp of kcommon.h (relative error < 1e-7); GELU and softplus use libm (they are not on hot paths).
 */
#include "kcommon.h"
#include <math.h>

/* ---- argument checks (kcheck.h: the CUDA twins in kernels/cuda/elementwise.cu call them too) ---- */
int sao_activation_check(sao_ctx *ctx, const char *op, const float *x, int64_t n, const float *y) {
    if (n < 0) return sao_err(ctx, op, "negative element count %lld", (long long)n);
    if (n > 0 && (!x || !y)) return sao_err(ctx, op, "NULL buffer for %lld elements", (long long)n);
    return 1;
}

int sao_activation_backward_check(sao_ctx *ctx, const char *op, const float *dy, const float *x,
                                  int64_t n, const float *dx) {
    if (sao_activation_check(ctx, op, dy, n, dx) < 0) return -1;
    return sao_activation_check(ctx, op, x, n, x);
}

int sao_swiglu_forward_check(sao_ctx *ctx, const char *op, const float *p, int64_t n, int64_t f,
                             const float *y) {
    if (n < 0 || f < 1) return sao_err(ctx, op, "bad shape n=%lld f=%lld", (long long)n, (long long)f);
    return sao_activation_check(ctx, op, p, n * f, y);
}

int sao_swiglu_backward_check(sao_ctx *ctx, const char *op, const float *dy, const float *p,
                              int64_t n, int64_t f, const float *dp) {
    if (n < 0 || f < 1) return sao_err(ctx, op, "bad shape n=%lld f=%lld", (long long)n, (long long)f);
    return sao_activation_backward_check(ctx, op, dy, p, n * f, dp);
}

/* ---- kernels ---------------------------------------------------------------------------------- */

int sao_silu_forward(sao_ctx *ctx, const float *x, int64_t n, float *y) {
    SAO_CHECK(sao_activation_check(ctx, "silu_forward", x, n, y));
    sao_threads_apply(ctx);
    #pragma omp parallel for simd schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * sao_vsigmoidf(x[i]);
    return 0;
}

int sao_silu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n, float *dx) {
    SAO_CHECK(sao_activation_backward_check(ctx, "silu_backward", dy, x, n, dx));
    sao_threads_apply(ctx);
    #pragma omp parallel for simd schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float s = sao_vsigmoidf(x[i]);
        dx[i] += dy[i] * (s * (1.0f + x[i] * (1.0f - s)));
    }
    return 0;
}

#define GELU_K0 0.79788456080286535588f   /* sqrt(2/pi) */
#define GELU_K1 0.044715f
#define INV_SQRT2 0.70710678118654752440f
#define INV_SQRT_2PI 0.39894228040143267794f

int sao_gelu_forward(sao_ctx *ctx, const float *x, int64_t n, int approximate, float *y) {
    SAO_CHECK(sao_activation_check(ctx, "gelu_forward", x, n, y));
    sao_threads_apply(ctx);
    if (approximate) {
        #pragma omp parallel for schedule(static) if (n >= SAO_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            y[i] = 0.5f * v * (1.0f + tanhf(GELU_K0 * (v + GELU_K1 * v * v * v)));
        }
    } else {
        #pragma omp parallel for schedule(static) if (n >= SAO_PAR_MIN)
        for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * INV_SQRT2));
    }
    return 0;
}

int sao_gelu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n, int approximate,
                      float *dx) {
    SAO_CHECK(sao_activation_backward_check(ctx, "gelu_backward", dy, x, n, dx));
    sao_threads_apply(ctx);
    if (approximate) {
        #pragma omp parallel for schedule(static) if (n >= SAO_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            float th = tanhf(GELU_K0 * (v + GELU_K1 * v * v * v));
            float du = GELU_K0 * (1.0f + 3.0f * GELU_K1 * v * v);   /* d(inner)/dx */
            float d = 0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * du;
            dx[i] += dy[i] * d;
        }
    } else {
        #pragma omp parallel for schedule(static) if (n >= SAO_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            float v = x[i];
            float d = 0.5f * (1.0f + erff(v * INV_SQRT2)) + v * INV_SQRT_2PI * expf(-0.5f * v * v);
            dx[i] += dy[i] * d;
        }
    }
    return 0;
}

int sao_relu_forward(sao_ctx *ctx, const float *x, int64_t n, float *y) {
    SAO_CHECK(sao_activation_check(ctx, "relu_forward", x, n, y));
    sao_threads_apply(ctx);
    #pragma omp parallel for simd schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return 0;
}

int sao_relu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n, float *dx) {
    SAO_CHECK(sao_activation_backward_check(ctx, "relu_backward", dy, x, n, dx));
    sao_threads_apply(ctx);
    #pragma omp parallel for simd schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] += x[i] > 0.0f ? dy[i] : 0.0f;
    return 0;
}

/* torch.nn.functional.softplus with beta 1, threshold 20 */
int sao_softplus_forward(sao_ctx *ctx, const float *x, int64_t n, float *y) {
    SAO_CHECK(sao_activation_check(ctx, "softplus_forward", x, n, y));
    sao_threads_apply(ctx);
    #pragma omp parallel for schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 20.0f ? x[i] : log1pf(expf(x[i]));
    return 0;
}

int sao_softplus_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n, float *dx) {
    SAO_CHECK(sao_activation_backward_check(ctx, "softplus_backward", dy, x, n, dx));
    sao_threads_apply(ctx);
    #pragma omp parallel for schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        dx[i] += x[i] > 20.0f ? dy[i] : dy[i] / (1.0f + expf(-x[i]));
    return 0;
}

/* p [N, 2F] = [a | gate] -> y [N, F] = a * silu(gate) */
int sao_swiglu_forward(sao_ctx *ctx, const float *p, int64_t n, int64_t f, float *y) {
    SAO_CHECK(sao_swiglu_forward_check(ctx, "swiglu_forward", p, n, f, y));
    sao_threads_apply(ctx);
    #pragma omp parallel for schedule(static) if (n * f >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *a = p + i * 2 * f, *g = a + f;
        float *yr = y + i * f;
        #pragma omp simd
        for (int64_t j = 0; j < f; j++) yr[j] = a[j] * (g[j] * sao_vsigmoidf(g[j]));
    }
    return 0;
}

int sao_swiglu_backward(sao_ctx *ctx, const float *dy, const float *p, int64_t n, int64_t f,
                        float *dp) {
    SAO_CHECK(sao_swiglu_backward_check(ctx, "swiglu_backward", dy, p, n, f, dp));
    sao_threads_apply(ctx);
    #pragma omp parallel for schedule(static) if (n * f >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *a = p + i * 2 * f, *g = a + f, *d = dy + i * f;
        float *da = dp + i * 2 * f, *dg = da + f;
        #pragma omp simd
        for (int64_t j = 0; j < f; j++) {
            float s = sao_vsigmoidf(g[j]);
            da[j] += d[j] * (g[j] * s);
            dg[j] += d[j] * a[j] * (s * (1.0f + g[j] * (1.0f - s)));
        }
    }
    return 0;
}

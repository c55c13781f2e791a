/* activations.c — elementwise activations and their backward passes: SiLU, GELU (erf and tanh
 * forms), ReLU, softplus, and SAO's SwiGLU (value half first, gate half second).
 *
 * All take n contiguous elements; forward outputs may alias their inputs; backward passes
 * accumulate dx += dy * f'(x) from the forward's input x. SiLU and SwiGLU use the vectorised
 * exp of kcommon.h (relative error < 1e-7); GELU and softplus use libm (they are not on hot paths).
 */
#include "kcommon.h"
#include <math.h>

static int check_n(sao_ctx *ctx, const char *op, int64_t n, const void *a, const void *b) {
    if (n < 0) return sao_err(ctx, op, "negative element count %lld", (long long)n);
    if (n > 0 && (!a || !b)) return sao_err(ctx, op, "NULL buffer for %lld elements", (long long)n);
    sao_threads_apply(ctx);
    return 0;
}

int sao_silu_forward(sao_ctx *ctx, const float *x, int64_t n, float *y) {
    if (check_n(ctx, "silu_forward", n, x, y)) return -1;
    #pragma omp parallel for simd schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * sao_vsigmoidf(x[i]);
    return 0;
}

int sao_silu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n, float *dx) {
    if (check_n(ctx, "silu_backward", n, dy, dx) || check_n(ctx, "silu_backward", n, x, x)) return -1;
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
    if (check_n(ctx, "gelu_forward", n, x, y)) return -1;
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
    if (check_n(ctx, "gelu_backward", n, dy, dx) || check_n(ctx, "gelu_backward", n, x, x)) return -1;
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
    if (check_n(ctx, "relu_forward", n, x, y)) return -1;
    #pragma omp parallel for simd schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return 0;
}

int sao_relu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n, float *dx) {
    if (check_n(ctx, "relu_backward", n, dy, dx) || check_n(ctx, "relu_backward", n, x, x)) return -1;
    #pragma omp parallel for simd schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] += x[i] > 0.0f ? dy[i] : 0.0f;
    return 0;
}

/* torch.nn.functional.softplus with beta 1, threshold 20 */
int sao_softplus_forward(sao_ctx *ctx, const float *x, int64_t n, float *y) {
    if (check_n(ctx, "softplus_forward", n, x, y)) return -1;
    #pragma omp parallel for schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 20.0f ? x[i] : log1pf(expf(x[i]));
    return 0;
}

int sao_softplus_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n, float *dx) {
    if (check_n(ctx, "softplus_backward", n, dy, dx) || check_n(ctx, "softplus_backward", n, x, x))
        return -1;
    #pragma omp parallel for schedule(static) if (n >= SAO_PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        dx[i] += x[i] > 20.0f ? dy[i] : dy[i] / (1.0f + expf(-x[i]));
    return 0;
}

/* p [N, 2F] = [a | gate] -> y [N, F] = a * silu(gate) */
int sao_swiglu_forward(sao_ctx *ctx, const float *p, int64_t n, int64_t f, float *y) {
    const char *op = "swiglu_forward";
    if (n < 0 || f < 1) return sao_err(ctx, op, "bad shape n=%lld f=%lld", (long long)n, (long long)f);
    if (check_n(ctx, op, n * f, p, y)) return -1;
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
    const char *op = "swiglu_backward";
    if (n < 0 || f < 1) return sao_err(ctx, op, "bad shape n=%lld f=%lld", (long long)n, (long long)f);
    if (check_n(ctx, op, n * f, dy, dp) || check_n(ctx, op, n * f, p, p)) return -1;
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

// elementwise.cu — CUDA twins of the pointwise and layout kernels: RoPE (kernels/cpu/rope.c),
// GELU, ReLU, softplus and SwiGLU (activations.c), SnakeBeta (snake.c), the Fourier and
// NumberEmbedder features (fourier.c) and the [B,R,C] -> [B,C,R] transpose (reduce.c).
//
// Each kernel evaluates the CPU twin's expressions in the same precision (fp32 where the CPU is
// fp32, double where it is double); the device's libm (expf, erff, tanhf, sincosf, sin/cos) is
// within a few ulp of glibc's and of kcommon.h's vectorised approximations. Element-wise work is
// a grid-stride loop of 256-thread blocks. Parameter gradients that are sums (snake's dalpha and
// dbeta over (b, t), the features' dw over b and dt/du over f) take one block per output element
// with a fixed-order tree in double: no atomics, the same result on every run. Arguments are
// checked by the CPU twins' own checks (kernels/cpu/kcheck.h), then every device pointer
// (sao_cuda_check_ptr).
#include "cuda_internal.h"
extern "C" {
#include "sao_cuda_ops.h"
#include "../cpu/kcheck.h"
}
#include <math.h>

// ---- RoPE -----------------------------------------------------------------------------------------
// Rows r = (b, h, t) of D elements at b*sb + h*sh + t*st. Work item (r, j): j < half rotates the
// pair (j, j + half) by theta = (float)(pos_offset + t) * inv_freq[j] (fp32 product, cos/sin in
// double rounded to fp32, sin times sign = -1 for the backward); half <= j < half + pass copies
// dim rot_dim + j - half (pass = 0 in place). One thread owns both elements of its pair, so y may
// be x.
__global__ static void rope_kernel(const float *x, long long H, long long T, long long sb,
                                   long long sh, long long st, long long rows, long long half,
                                   long long pass, long long rot_dim, long long pos_offset,
                                   const float *inv_freq, double base, float sign, float *y) {
    long long w = half + pass;
    SAO_GRID_STRIDE(k, rows * w) {
        long long r = k / w, j = k % w;
        long long b = r / (H * T), h = (r / T) % H, t = r % T;
        long long o = b * sb + h * sh + t * st;
        if (j < half) {
            float f = inv_freq ? inv_freq[j] : (float)pow(base, -2.0 * (double)j / (double)rot_dim);
            float th = (float)(pos_offset + t) * f;
            double s, c;
            sincos((double)th, &s, &c);
            float cs = (float)c, sn = sign * (float)s;
            float x1 = x[o + j], x2 = x[o + j + half];
            y[o + j] = x1 * cs - x2 * sn;
            y[o + j + half] = x2 * cs + x1 * sn;
        } else {
            long long d = rot_dim + (j - half);
            y[o + d] = x[o + d];
        }
    }
}

static int rope_apply(sao_ctx *ctx, const char *op, const float *x, int64_t B, int64_t H, int64_t T,
                      int64_t D, const int64_t *strides, int64_t rot_dim, int64_t pos_offset,
                      const float *inv_freq, double base, float sign, float *y) {
    int64_t s[3];
    int rc = sao_rope_check(ctx, op, x, B, H, T, D, strides, rot_dim, inv_freq, base, y, s);
    if (rc < 0 || SAO_CUDA_PTR(x) || SAO_CUDA_PTR(y) || SAO_CUDA_PTR(inv_freq)) return -1;
    if (rc == 0) return 0;
    long long rows = (long long)(B * H * T), half = rot_dim / 2, pass = x == y ? 0 : D - rot_dim;
    if (half + pass == 0) return 0;
    rope_kernel<<<sao_cuda_stride_blocks(rows * (half + pass)), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(
        x, (long long)H, (long long)T, (long long)s[0], (long long)s[1], (long long)s[2], rows, half,
        pass, (long long)rot_dim, (long long)pos_offset, inv_freq, base, sign, y);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

extern "C" int sao_cuda_rope_forward(sao_ctx *ctx, const float *x, int64_t B, int64_t H, int64_t T,
                                     int64_t D, const int64_t *strides, int64_t rot_dim,
                                     int64_t pos_offset, const float *inv_freq, double base,
                                     float *y) {
    return rope_apply(ctx, "cuda_rope_forward", x, B, H, T, D, strides, rot_dim, pos_offset,
                      inv_freq, base, 1.0f, y);
}

extern "C" int sao_cuda_rope_backward(sao_ctx *ctx, const float *dy, int64_t B, int64_t H, int64_t T,
                                      int64_t D, const int64_t *strides, int64_t rot_dim,
                                      int64_t pos_offset, const float *inv_freq, double base,
                                      float *dx) {
    return rope_apply(ctx, "cuda_rope_backward", dy, B, H, T, D, strides, rot_dim, pos_offset,
                      inv_freq, base, -1.0f, dx);
}

// ---- activations ----------------------------------------------------------------------------------
#define GELU_K0 0.79788456080286535588f   /* sqrt(2/pi) */
#define GELU_K1 0.044715f
#define INV_SQRT2 0.70710678118654752440f
#define INV_SQRT_2PI 0.39894228040143267794f

__global__ static void gelu_fwd(const float *x, long long n, int approximate, float *y) {
    SAO_GRID_STRIDE(i, n) {
        float v = x[i];
        y[i] = approximate ? 0.5f * v * (1.0f + tanhf(GELU_K0 * (v + GELU_K1 * v * v * v)))
                           : 0.5f * v * (1.0f + erff(v * INV_SQRT2));
    }
}

__global__ static void gelu_bwd(const float *dy, const float *x, long long n, int approximate,
                                float *dx) {
    SAO_GRID_STRIDE(i, n) {
        float v = x[i], d;
        if (approximate) {
            float th = tanhf(GELU_K0 * (v + GELU_K1 * v * v * v));
            float du = GELU_K0 * (1.0f + 3.0f * GELU_K1 * v * v);
            d = 0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * du;
        } else {
            d = 0.5f * (1.0f + erff(v * INV_SQRT2)) + v * INV_SQRT_2PI * expf(-0.5f * v * v);
        }
        dx[i] += dy[i] * d;
    }
}

__global__ static void relu_fwd(const float *x, long long n, float *y) {
    SAO_GRID_STRIDE(i, n) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

__global__ static void relu_bwd(const float *dy, const float *x, long long n, float *dx) {
    SAO_GRID_STRIDE(i, n) dx[i] += x[i] > 0.0f ? dy[i] : 0.0f;
}

// torch softplus, beta 1, threshold 20
__global__ static void softplus_fwd(const float *x, long long n, float *y) {
    SAO_GRID_STRIDE(i, n) y[i] = x[i] > 20.0f ? x[i] : log1pf(expf(x[i]));
}

__global__ static void softplus_bwd(const float *dy, const float *x, long long n, float *dx) {
    SAO_GRID_STRIDE(i, n) dx[i] += x[i] > 20.0f ? dy[i] : dy[i] / (1.0f + expf(-x[i]));
}

// p [N, 2F] = [a | gate], y [N, F] = a * silu(gate)
__global__ static void swiglu_fwd(const float *p, long long n, long long f, float *y) {
    SAO_GRID_STRIDE(k, n * f) {
        long long i = k / f, j = k % f;
        float a = p[i * 2 * f + j], g = p[i * 2 * f + f + j];
        float s = 1.0f / (1.0f + expf(-g));
        y[k] = a * (g * s);
    }
}

__global__ static void swiglu_bwd(const float *dy, const float *p, long long n, long long f,
                                  float *dp) {
    SAO_GRID_STRIDE(k, n * f) {
        long long i = k / f, j = k % f;
        float a = p[i * 2 * f + j], g = p[i * 2 * f + f + j], d = dy[k];
        float s = 1.0f / (1.0f + expf(-g));
        dp[i * 2 * f + j] += d * (g * s);
        dp[i * 2 * f + f + j] += d * a * (s * (1.0f + g * (1.0f - s)));
    }
}

#define LAUNCH_EW(ctx, op, n, kernel, ...)                                                         \
    do {                                                                                           \
        if ((n) > 0) {                                                                             \
            kernel<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(__VA_ARGS__);                 \
            CUDA_LAUNCHED(ctx, op);                                                                \
        }                                                                                          \
        return 0;                                                                                  \
    } while (0)

extern "C" int sao_cuda_gelu_forward(sao_ctx *ctx, const float *x, int64_t n, int approximate,
                                     float *y) {
    const char *op = "cuda_gelu_forward";
    SAO_CHECK(sao_activation_check(ctx, op, x, n, y));
    if (SAO_CUDA_PTR(x) || SAO_CUDA_PTR(y)) return -1;
    LAUNCH_EW(ctx, op, n, gelu_fwd, x, (long long)n, approximate, y);
}

extern "C" int sao_cuda_gelu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n,
                                      int approximate, float *dx) {
    const char *op = "cuda_gelu_backward";
    SAO_CHECK(sao_activation_backward_check(ctx, op, dy, x, n, dx));
    if (SAO_CUDA_PTR(dy) || SAO_CUDA_PTR(x) || SAO_CUDA_PTR(dx)) return -1;
    LAUNCH_EW(ctx, op, n, gelu_bwd, dy, x, (long long)n, approximate, dx);
}

extern "C" int sao_cuda_relu_forward(sao_ctx *ctx, const float *x, int64_t n, float *y) {
    const char *op = "cuda_relu_forward";
    SAO_CHECK(sao_activation_check(ctx, op, x, n, y));
    if (SAO_CUDA_PTR(x) || SAO_CUDA_PTR(y)) return -1;
    LAUNCH_EW(ctx, op, n, relu_fwd, x, (long long)n, y);
}

extern "C" int sao_cuda_relu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n,
                                      float *dx) {
    const char *op = "cuda_relu_backward";
    SAO_CHECK(sao_activation_backward_check(ctx, op, dy, x, n, dx));
    if (SAO_CUDA_PTR(dy) || SAO_CUDA_PTR(x) || SAO_CUDA_PTR(dx)) return -1;
    LAUNCH_EW(ctx, op, n, relu_bwd, dy, x, (long long)n, dx);
}

extern "C" int sao_cuda_softplus_forward(sao_ctx *ctx, const float *x, int64_t n, float *y) {
    const char *op = "cuda_softplus_forward";
    SAO_CHECK(sao_activation_check(ctx, op, x, n, y));
    if (SAO_CUDA_PTR(x) || SAO_CUDA_PTR(y)) return -1;
    LAUNCH_EW(ctx, op, n, softplus_fwd, x, (long long)n, y);
}

extern "C" int sao_cuda_softplus_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n,
                                          float *dx) {
    const char *op = "cuda_softplus_backward";
    SAO_CHECK(sao_activation_backward_check(ctx, op, dy, x, n, dx));
    if (SAO_CUDA_PTR(dy) || SAO_CUDA_PTR(x) || SAO_CUDA_PTR(dx)) return -1;
    LAUNCH_EW(ctx, op, n, softplus_bwd, dy, x, (long long)n, dx);
}

extern "C" int sao_cuda_swiglu_forward(sao_ctx *ctx, const float *p, int64_t n, int64_t f, float *y) {
    const char *op = "cuda_swiglu_forward";
    SAO_CHECK(sao_swiglu_forward_check(ctx, op, p, n, f, y));
    if (SAO_CUDA_PTR(p) || SAO_CUDA_PTR(y)) return -1;
    LAUNCH_EW(ctx, op, n * f, swiglu_fwd, p, (long long)n, (long long)f, y);
}

extern "C" int sao_cuda_swiglu_backward(sao_ctx *ctx, const float *dy, const float *p, int64_t n,
                                        int64_t f, float *dp) {
    const char *op = "cuda_swiglu_backward";
    SAO_CHECK(sao_swiglu_backward_check(ctx, op, dy, p, n, f, dp));
    if (SAO_CUDA_PTR(dy) || SAO_CUDA_PTR(p) || SAO_CUDA_PTR(dp)) return -1;
    LAUNCH_EW(ctx, op, n * f, swiglu_bwd, dy, p, (long long)n, (long long)f, dp);
}

// ---- SnakeBeta, log-scale parameters ------------------------------------------------------------
// x, y [B, C, T]; a = exp(alpha_c), inv = 1/(exp(beta_c) + 1e-9): y = x + inv * sin(a x)^2.
__global__ static void snake_fwd(const float *x, const float *alpha, const float *beta, long long C,
                                 long long T, long long n, float *y) {
    SAO_GRID_STRIDE(k, n) {
        long long c = (k / T) % C;
        float a = expf(alpha[c]);
        float inv = 1.0f / (expf(beta[c]) + 1e-9f);
        float s, co;
        sincosf(a * x[k], &s, &co);
        y[k] = x[k] + inv * (s * s);
    }
}

// dx += dy * (1 + inv * a * 2 sin cos)
__global__ static void snake_bwd_dx(const float *dy, const float *x, const float *alpha,
                                    const float *beta, long long C, long long T, long long n,
                                    float *dx) {
    SAO_GRID_STRIDE(k, n) {
        long long c = (k / T) % C;
        float a = expf(alpha[c]);
        float inv = 1.0f / (expf(beta[c]) + 1e-9f);
        float s, co;
        sincosf(a * x[k], &s, &co);
        dx[k] += dy[k] * (1.0f + inv * a * (2.0f * s * co));
    }
}

// One block per channel c: sa = sum dy * 2 sin cos * x, sb = sum dy * sin^2 over (b, t), in double;
// dalpha += sa * inv * a (d/d log alpha), dbeta += sb * -e * inv^2 (d/d log beta), e = exp(beta_c).
__global__ static void snake_bwd_params(const float *dy, const float *x, const float *alpha,
                                        const float *beta, long long B, long long C, long long T,
                                        float *dalpha, float *dbeta) {
    __shared__ double sh[33];
    for (long long c = blockIdx.x; c < C; c += gridDim.x) {
        float a = expf(alpha[c]);
        float e = expf(beta[c]);
        float inv = 1.0f / (e + 1e-9f);
        double sa = 0.0, sb = 0.0;
        for (long long k = threadIdx.x; k < B * T; k += blockDim.x) {
            long long i = (k / T * C + c) * T + k % T;
            float s, co;
            sincosf(a * x[i], &s, &co);
            sa += (double)(dy[i] * (2.0f * s * co) * x[i]);
            sb += (double)(dy[i] * (s * s));
        }
        sa = sao_block_sum(sa, sh);
        sb = sao_block_sum(sb, sh);
        if (threadIdx.x == 0) {
            if (dalpha) dalpha[c] += (float)(sa * (double)inv * (double)a);
            if (dbeta) dbeta[c] += (float)(sb * -(double)e * (double)inv * (double)inv);
        }
    }
}

extern "C" int sao_cuda_snake_forward(sao_ctx *ctx, const float *x, const float *alpha,
                                      const float *beta, int64_t B, int64_t C, int64_t T, float *y) {
    const char *op = "cuda_snake_forward";
    SAO_CHECK(sao_snake_forward_check(ctx, op, x, alpha, beta, B, C, T, y));
    if (SAO_CUDA_PTR(x) || SAO_CUDA_PTR(alpha) || SAO_CUDA_PTR(beta) || SAO_CUDA_PTR(y)) return -1;
    long long n = (long long)(B * C * T);
    LAUNCH_EW(ctx, op, n, snake_fwd, x, alpha, beta, (long long)C, (long long)T, n, y);
}

extern "C" int sao_cuda_snake_backward(sao_ctx *ctx, const float *dy, const float *x,
                                       const float *alpha, const float *beta, int64_t B, int64_t C,
                                       int64_t T, float *dx, float *dalpha, float *dbeta) {
    const char *op = "cuda_snake_backward";
    SAO_CHECK(sao_snake_backward_check(ctx, op, dy, x, alpha, beta, B, C, T));
    if (SAO_CUDA_PTR(dy) || SAO_CUDA_PTR(x) || SAO_CUDA_PTR(alpha) || SAO_CUDA_PTR(beta) || SAO_CUDA_PTR(dx) || SAO_CUDA_PTR(dalpha) || SAO_CUDA_PTR(dbeta)) return -1;
    long long n = (long long)(B * C * T);
    if (n == 0) return 0;   // the CPU adds zeros to dalpha/dbeta: nothing to do
    if (dx) {
        snake_bwd_dx<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(dy, x, alpha, beta, (long long)C,
                                                                       (long long)T, n, dx);
        CUDA_LAUNCHED(ctx, op);
    }
    if (dalpha || dbeta) {
        unsigned g = (unsigned)(C < SAO_CUDA_MAX_BLOCKS ? C : SAO_CUDA_MAX_BLOCKS);
        snake_bwd_params<<<g, SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(dy, x, alpha, beta, (long long)B,
                                                               (long long)C, (long long)T, dalpha, dbeta);
        CUDA_LAUNCHED(ctx, op);
    }
    return 0;
}

// ---- Fourier and NumberEmbedder features --------------------------------------------------------
// Both write rows of width `ld` holding cos(2 pi t w_i) at oc + i and sin(2 pi t w_i) at os + i
// (i < F), phases in double:
//   Fourier: ld = 2F, oc = 0, os = F          [cos | sin]
//   Number:  ld = 1+2F, os = 1, oc = 1 + F    [t | sin | cos], column 0 = t (copy_t)
#define TWO_PI 6.28318530717958647692

__global__ static void features_fwd(const float *t, const float *w, long long B, long long f,
                                    long long ld, long long oc, long long os, int copy_t, float *y) {
    SAO_GRID_STRIDE(k, B * f) {
        long long b = k / f, i = k % f;
        double ph = TWO_PI * (double)t[b] * (double)w[i];
        double s, c;
        sincos(ph, &s, &c);
        y[b * ld + oc + i] = (float)c;
        y[b * ld + os + i] = (float)s;
        if (copy_t && i == 0) y[b * ld] = t[b];
    }
}

// d out / d phase for one (b, i): dy_sin * cos(ph) - dy_cos * sin(ph)
__device__ static double features_dph(const float *dy, const float *t, const float *w, long long b,
                                      long long i, long long ld, long long oc, long long os) {
    double ph = TWO_PI * (double)t[b] * (double)w[i];
    double s, c;
    sincos(ph, &s, &c);
    return c * dy[b * ld + os + i] - s * dy[b * ld + oc + i];
}

// One block per feature i: dw[i] += sum_b dph * 2 pi t_b.
__global__ static void features_bwd_w(const float *dy, const float *t, const float *w, long long B,
                                      long long f, long long ld, long long oc, long long os,
                                      float *dw) {
    __shared__ double sh[33];
    for (long long i = blockIdx.x; i < f; i += gridDim.x) {
        double acc = 0.0;
        for (long long b = threadIdx.x; b < B; b += blockDim.x)
            acc += features_dph(dy, t, w, b, i, ld, oc, os) * TWO_PI * (double)t[b];
        acc = sao_block_sum(acc, sh);
        if (threadIdx.x == 0) dw[i] += (float)acc;
    }
}

// One block per row b: dt[b] += (copy_t ? dy[b, 0] : 0) + sum_i dph * 2 pi w_i.
__global__ static void features_bwd_t(const float *dy, const float *t, const float *w, long long B,
                                      long long f, long long ld, long long oc, long long os,
                                      int copy_t, float *dt) {
    __shared__ double sh[33];
    for (long long b = blockIdx.x; b < B; b += gridDim.x) {
        double acc = 0.0;
        for (long long i = threadIdx.x; i < f; i += blockDim.x)
            acc += features_dph(dy, t, w, b, i, ld, oc, os) * TWO_PI * (double)w[i];
        acc = sao_block_sum(acc, sh);
        if (threadIdx.x == 0) dt[b] += (float)((copy_t ? (double)dy[b * ld] : 0.0) + acc);
    }
}

static int features_forward(sao_ctx *ctx, const char *op, const float *t, const float *w, int64_t B,
                            int64_t f, int number, float *y) {
    SAO_CHECK(sao_features_check(ctx, op, B, f, t, w, y));
    if (SAO_CUDA_PTR(t) || SAO_CUDA_PTR(w) || SAO_CUDA_PTR(y)) return -1;
    long long ld = number ? 1 + 2 * f : 2 * f, oc = number ? 1 + f : 0, os = number ? 1 : f;
    LAUNCH_EW(ctx, op, (long long)(B * f), features_fwd, t, w, (long long)B, (long long)f, ld, oc, os,
              number, y);
}

static int features_backward(sao_ctx *ctx, const char *op, const float *dy, const float *t,
                             const float *w, int64_t B, int64_t f, int number, float *dw, float *dt) {
    SAO_CHECK(sao_features_check(ctx, op, B, f, dy, t, w));
    if (SAO_CUDA_PTR(dy) || SAO_CUDA_PTR(t) || SAO_CUDA_PTR(w) || SAO_CUDA_PTR(dw) || SAO_CUDA_PTR(dt))
        return -1;
    long long ld = number ? 1 + 2 * f : 2 * f, oc = number ? 1 + f : 0, os = number ? 1 : f;
    if (B == 0) return 0;   // the CPU adds zeros to dw
    if (dw) {
        unsigned g = (unsigned)(f < SAO_CUDA_MAX_BLOCKS ? f : SAO_CUDA_MAX_BLOCKS);
        features_bwd_w<<<g, SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(dy, t, w, (long long)B, (long long)f, ld,
                                                             oc, os, dw);
        CUDA_LAUNCHED(ctx, op);
    }
    if (dt) {
        unsigned g = (unsigned)(B < SAO_CUDA_MAX_BLOCKS ? B : SAO_CUDA_MAX_BLOCKS);
        features_bwd_t<<<g, SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(dy, t, w, (long long)B, (long long)f, ld,
                                                             oc, os, number, dt);
        CUDA_LAUNCHED(ctx, op);
    }
    return 0;
}

extern "C" int sao_cuda_fourier_features_forward(sao_ctx *ctx, const float *t, const float *w,
                                                 int64_t B, int64_t f, float *y) {
    return features_forward(ctx, "cuda_fourier_features_forward", t, w, B, f, 0, y);
}

extern "C" int sao_cuda_fourier_features_backward(sao_ctx *ctx, const float *dy, const float *t,
                                                  const float *w, int64_t B, int64_t f, float *dw,
                                                  float *dt) {
    return features_backward(ctx, "cuda_fourier_features_backward", dy, t, w, B, f, 0, dw, dt);
}

extern "C" int sao_cuda_number_features_forward(sao_ctx *ctx, const float *u, const float *w,
                                                int64_t B, int64_t f, float *y) {
    return features_forward(ctx, "cuda_number_features_forward", u, w, B, f, 1, y);
}

extern "C" int sao_cuda_number_features_backward(sao_ctx *ctx, const float *dy, const float *u,
                                                 const float *w, int64_t B, int64_t f, float *dw,
                                                 float *du) {
    return features_backward(ctx, "cuda_number_features_backward", dy, u, w, B, f, 1, dw, du);
}

// ---- transpose [B, R, C] -> [B, C, R] ---------------------------------------------------------------
// Block (32, 8) per 32 x 32 tile (grid-stride over B x tiles): coalesced reads of x rows into
// shared memory (padded against bank conflicts), coalesced writes of y rows.
__global__ static void transpose_kernel(const float *x, long long B, long long R, long long C,
                                        int accumulate, float *y) {
    __shared__ float tile[32][33];
    long long tr = (R + 31) / 32, tc = (C + 31) / 32;
    for (long long job = blockIdx.x; job < B * tr * tc; job += gridDim.x) {
        long long b = job / (tr * tc), r0 = (job / tc) % tr * 32, c0 = job % tc * 32;
        const float *xb = x + b * R * C;
        float *yb = y + b * R * C;
        for (int k = threadIdx.y; k < 32; k += 8) {
            long long r = r0 + k, c = c0 + threadIdx.x;
            if (r < R && c < C) tile[k][threadIdx.x] = xb[r * C + c];
        }
        __syncthreads();
        for (int k = threadIdx.y; k < 32; k += 8) {
            long long c = c0 + k, r = r0 + threadIdx.x;
            if (r < R && c < C) {
                float v = tile[threadIdx.x][k];
                if (accumulate) yb[c * R + r] += v;
                else yb[c * R + r] = v;
            }
        }
        __syncthreads();
    }
}

extern "C" int sao_cuda_transpose_forward(sao_ctx *ctx, const float *x, int64_t B, int64_t R,
                                          int64_t C, int accumulate, float *y) {
    const char *op = "cuda_transpose_forward";
    SAO_CHECK(sao_transpose_check(ctx, op, x, B, R, C, y));
    if (SAO_CUDA_PTR(x) || SAO_CUDA_PTR(y)) return -1;
    long long tiles = (long long)(B * ((R + 31) / 32) * ((C + 31) / 32));
    transpose_kernel<<<(unsigned)(tiles < SAO_CUDA_MAX_BLOCKS ? tiles : SAO_CUDA_MAX_BLOCKS), dim3(32, 8), 0,
                       sao_cuda_stream()>>>(x, (long long)B, (long long)R, (long long)C, accumulate, y);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

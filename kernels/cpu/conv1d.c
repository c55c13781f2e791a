/* conv1d.c — 1-D convolution and transposed convolution with PyTorch semantics (stride, zero
 * padding, dilation, groups, optional bias; output_padding for the transposed form), forward and
 * backward, as im2col + OpenBLAS sgemm.
 *
 * One relation underlies everything: for a conv from X [Cx, Tx] to Y [Cy, Ty] with weight
 * W [Cy, Cx/groups, K],
 *   Y[co, t] = sum_{ci in co's group, k} W[co, ci, k] * X[ci, t*stride + k*dilation - padding]
 * and three cores evaluate it: forward (Y from X), backward-data (dX from dY: col = W^T dY, then
 * col2im), backward-weight (dW from X and dY). ConvTranspose1d(C_in -> C_out) with weight
 * [C_in, C_out/g, K] is exactly the adjoint of a conv from C_out to C_in with the same weight
 * tensor, so its forward is backward-data, and its backward is forward (for dx) and
 * backward-weight with the roles of x and dy swapped.
 *
 * Memory: im2col works on chunks of output columns so its buffer stays near 8 MB whatever T is
 * (the Oobleck decoder runs 128 channels x 2M samples). A 1x1 conv with stride 1 and no padding
 * (the DiT's residual convs) needs no buffer: it is one sgemm per batch item and group.
 * Threads: OpenBLAS inside the sgemms, OpenMP over channels in the im2col/col2im copies (each
 * channel's rows are written by one thread, so results do not depend on the thread count beyond
 * OpenBLAS's own summation order).
 */
#include "kcommon.h"
#include <cblas.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define COL_BUDGET (1 << 21)   /* floats in the im2col chunk (8 MB) */

/* c: the conv from X [B, cx, tx] to Y [B, cy, ty] (kcheck.h's sao_conv_geo, filled by the checks) */
static int direct(const sao_conv_geo *c) {
    return c->K == 1 && c->s == 1 && c->p == 0 && c->tx == c->ty;
}

static int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

/* im2col chunk width (output columns) */
static int64_t chunk_cols(const sao_conv_geo *c) {
    int64_t nc = imax(COL_BUDGET / c->rows, 128);
    return nc < c->ty ? nc : c->ty;
}

/* ---- argument checks (kcheck.h: the CUDA twins in kernels/cuda/conv1d.cu call them too) -------- */
static int make_geo(sao_ctx *ctx, const char *op, sao_kcheck_dev dev, sao_conv_geo *c, int64_t B,
                    int64_t cx, int64_t tx, int64_t cy, int64_t ty, int64_t K, int stride,
                    int padding, int dilation, int groups) {
    if (B < 0 || cx < 1 || cy < 1 || tx < 0 || K < 1 || stride < 1 || padding < 0 || dilation < 1 ||
        groups < 1)
        return sao_err(ctx, op, "bad geometry B=%lld channels %lld->%lld T=%lld K=%lld stride=%d "
                       "padding=%d dilation=%d groups=%d", (long long)B, (long long)cx, (long long)cy,
                       (long long)tx, (long long)K, stride, padding, dilation, groups);
    if (cx % groups || cy % groups)
        return sao_err(ctx, op, "channels %lld and %lld must both be multiples of groups=%d",
                       (long long)cx, (long long)cy, groups);
    if (ty < 1)
        return sao_err(ctx, op, "output length %lld < 1 (input %lld too short for K=%lld, "
                       "dilation=%d, padding=%d)", (long long)ty, (long long)tx, (long long)K,
                       dilation, padding);
    c->B = B; c->cx = cx; c->tx = tx; c->cy = cy; c->ty = ty; c->K = K;
    c->s = stride; c->p = padding; c->d = dilation; c->g = groups;
    c->cxg = cx / groups; c->cyg = cy / groups; c->rows = c->cxg * K;
    /* OpenBLAS takes int sizes (the CUDA kernels index in 64 bits) */
    if (dev == SAO_KCHECK_CPU && (c->rows > INT_MAX || cy > INT_MAX || tx > INT_MAX || ty > INT_MAX))
        return sao_err(ctx, op, "sizes exceed the 32-bit BLAS interface");
    return 0;
}

/* Conv1d x [B, C_in, T_in] -> y [B, C_out, T_out] is the conv with X = x, Y = y. */
static int conv_geo(sao_ctx *ctx, const char *op, sao_kcheck_dev dev, sao_conv_geo *c, int64_t B,
                    int64_t c_in, int64_t t_in, int64_t c_out, int64_t k, int stride, int padding,
                    int dilation, int groups) {
    return make_geo(ctx, op, dev, c, B, c_in, t_in, c_out,
                    sao_conv1d_out_len(t_in, k, stride, padding, dilation), k, stride, padding,
                    dilation, groups);
}

/* The transposed conv x [B, C_in, T_in] -> y [B, C_out, T_out] is the adjoint of the conv
 * Y-side = x (cy = C_in, ty = T_in) from X-side = y (cx = C_out, tx = T_out). */
static int tconv_geo(sao_ctx *ctx, const char *op, sao_kcheck_dev dev, sao_conv_geo *c, int64_t B,
                     int64_t c_in, int64_t t_in, int64_t c_out, int64_t k, int stride, int padding,
                     int output_padding, int dilation, int groups) {
    if (t_in < 1) return sao_err(ctx, op, "input length %lld < 1", (long long)t_in);
    if (output_padding < 0 || (output_padding >= stride && output_padding >= dilation))
        return sao_err(ctx, op, "output_padding %d must be smaller than stride (%d) or dilation (%d)",
                       output_padding, stride, dilation);
    int64_t t_out = sao_conv_transpose1d_out_len(t_in, k, stride, padding, output_padding, dilation);
    if (t_out < 1)
        return sao_err(ctx, op, "output length %lld < 1 (padding %d too large)", (long long)t_out, padding);
    return make_geo(ctx, op, dev, c, B, c_out, t_out, c_in, t_in, k, stride, padding, dilation, groups);
}

/* a forward's buffers; 0 when the batch is empty */
static int forward_bufs(sao_ctx *ctx, const char *op, const float *x, const float *w, const float *y,
                        int64_t B) {
    SAO_NEED(ctx, op, x);
    SAO_NEED(ctx, op, w);
    SAO_NEED(ctx, op, y);
    if (y == x) return sao_err(ctx, op, "y and x are the same buffer (not in place)");
    return B == 0 ? 0 : 1;
}

/* a backward's buffers (w only for dx, x only for dw); 0 when the batch is empty */
static int backward_bufs(sao_ctx *ctx, const char *op, const float *dy, const float *x,
                         const float *w, const float *dx, const float *dw, int64_t B) {
    SAO_NEED(ctx, op, dy);
    if (dx) SAO_NEED(ctx, op, w);
    if (dw) SAO_NEED(ctx, op, x);
    return B == 0 ? 0 : 1;
}

int sao_conv1d_forward_check(sao_ctx *ctx, const char *op, sao_kcheck_dev dev, const float *x,
                             const float *w, int64_t B, int64_t c_in, int64_t t_in, int64_t c_out,
                             int64_t k, int stride, int padding, int dilation, int groups,
                             const float *y, sao_conv_geo *c) {
    if (conv_geo(ctx, op, dev, c, B, c_in, t_in, c_out, k, stride, padding, dilation, groups))
        return -1;
    return forward_bufs(ctx, op, x, w, y, B);
}

int sao_conv1d_backward_check(sao_ctx *ctx, const char *op, sao_kcheck_dev dev, const float *dy,
                              const float *x, const float *w, int64_t B, int64_t c_in, int64_t t_in,
                              int64_t c_out, int64_t k, int stride, int padding, int dilation,
                              int groups, const float *dx, const float *dw, sao_conv_geo *c) {
    if (conv_geo(ctx, op, dev, c, B, c_in, t_in, c_out, k, stride, padding, dilation, groups))
        return -1;
    return backward_bufs(ctx, op, dy, x, w, dx, dw, B);
}

int sao_conv_transpose1d_forward_check(sao_ctx *ctx, const char *op, sao_kcheck_dev dev,
                                       const float *x, const float *w, int64_t B, int64_t c_in,
                                       int64_t t_in, int64_t c_out, int64_t k, int stride,
                                       int padding, int output_padding, int dilation, int groups,
                                       const float *y, sao_conv_geo *c) {
    if (tconv_geo(ctx, op, dev, c, B, c_in, t_in, c_out, k, stride, padding, output_padding,
                  dilation, groups))
        return -1;
    return forward_bufs(ctx, op, x, w, y, B);
}

int sao_conv_transpose1d_backward_check(sao_ctx *ctx, const char *op, sao_kcheck_dev dev,
                                        const float *dy, const float *x, const float *w, int64_t B,
                                        int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                                        int stride, int padding, int output_padding, int dilation,
                                        int groups, const float *dx, const float *dw,
                                        sao_conv_geo *c) {
    if (tconv_geo(ctx, op, dev, c, B, c_in, t_in, c_out, k, stride, padding, output_padding,
                  dilation, groups))
        return -1;
    return backward_bufs(ctx, op, dy, x, w, dx, dw, B);
}

/* ---- the three cores ---------------------------------------------------------------------------- */

/* col[r * nc + (t - t0)], r = ci*K + k, for t in [t0, t0+nc): X[ci, t*s + k*d - p] or 0 */
static void im2col(const sao_conv_geo *c, const float *xg, int64_t t0, int64_t nc, float *col) {
    #pragma omp parallel for schedule(static) if (c->rows * nc >= SAO_PAR_MIN)
    for (int64_t ci = 0; ci < c->cxg; ci++) {
        const float *xr = xg + ci * c->tx;
        for (int64_t k = 0; k < c->K; k++) {
            float *cr = col + (ci * c->K + k) * nc;
            int64_t off = k * c->d - c->p;
            if (c->s == 1) {
                /* contiguous source [t0 + off, t0 + off + nc), zero outside [0, tx) */
                int64_t lo = t0 + off, hi = lo + nc;
                int64_t a = lo < 0 ? 0 : lo, e = hi > c->tx ? c->tx : hi;
                if (e <= a) {
                    memset(cr, 0, sizeof(float) * (size_t)nc);
                    continue;
                }
                if (a > lo) memset(cr, 0, sizeof(float) * (size_t)(a - lo));
                memcpy(cr + (a - lo), xr + a, sizeof(float) * (size_t)(e - a));
                if (hi > e) memset(cr + (e - lo), 0, sizeof(float) * (size_t)(hi - e));
            } else {
                for (int64_t j = 0; j < nc; j++) {
                    int64_t src = (t0 + j) * c->s + off;
                    cr[j] = (src >= 0 && src < c->tx) ? xr[src] : 0.0f;
                }
            }
        }
    }
}

/* dX[ci, t*s + k*d - p] += col[r * nc + (t - t0)] */
static void col2im(const sao_conv_geo *c, const float *col, int64_t t0, int64_t nc, float *dxg) {
    #pragma omp parallel for schedule(static) if (c->rows * nc >= SAO_PAR_MIN)
    for (int64_t ci = 0; ci < c->cxg; ci++) {
        float *xr = dxg + ci * c->tx;
        for (int64_t k = 0; k < c->K; k++) {
            const float *cr = col + (ci * c->K + k) * nc;
            int64_t off = k * c->d - c->p;
            if (c->s == 1) {
                int64_t lo = t0 + off, hi = lo + nc;
                int64_t a = lo < 0 ? 0 : lo, e = hi > c->tx ? c->tx : hi;
                const float *src = cr + (a - lo);
                float *dst = xr + a;
                #pragma omp simd
                for (int64_t j = 0; j < e - a; j++) dst[j] += src[j];
            } else {
                for (int64_t j = 0; j < nc; j++) {
                    int64_t dst = (t0 + j) * c->s + off;
                    if (dst >= 0 && dst < c->tx) xr[dst] += cr[j];
                }
            }
        }
    }
}

/* Y = conv(X) (beta 0) or Y += conv(X) (beta 1) */
static int core_forward(sao_ctx *ctx, const char *op, const sao_conv_geo *c, const float *x,
                        const float *w, float beta, float *y) {
    const int64_t gw = c->cyg * c->rows;   /* weight elements per group */
    if (direct(c)) {
        for (int64_t b = 0; b < c->B; b++)
            for (int64_t gi = 0; gi < c->g; gi++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)c->cyg, (int)c->ty,
                            (int)c->cxg, 1.0f, w + gi * gw, (int)c->cxg,
                            x + (b * c->cx + gi * c->cxg) * c->tx, (int)c->tx, beta,
                            y + (b * c->cy + gi * c->cyg) * c->ty, (int)c->ty);
        return 0;
    }
    const int64_t ncmax = chunk_cols(c);
    float *col = malloc(sizeof(float) * (size_t)(c->rows * ncmax));
    if (!col) return sao_err(ctx, op, "out of memory for a %lld x %lld im2col chunk",
                             (long long)c->rows, (long long)ncmax);
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t t0 = 0; t0 < c->ty; t0 += ncmax) {
            int64_t nc = c->ty - t0 < ncmax ? c->ty - t0 : ncmax;
            for (int64_t gi = 0; gi < c->g; gi++) {
                im2col(c, x + (b * c->cx + gi * c->cxg) * c->tx, t0, nc, col);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)c->cyg, (int)nc,
                            (int)c->rows, 1.0f, w + gi * gw, (int)c->rows, col, (int)nc, beta,
                            y + (b * c->cy + gi * c->cyg) * c->ty + t0, (int)c->ty);
            }
        }
    free(col);
    return 0;
}

/* dX += conv^T(dY) */
static int core_backward_data(sao_ctx *ctx, const char *op, const sao_conv_geo *c, const float *dy,
                              const float *w, float *dx) {
    const int64_t gw = c->cyg * c->rows;
    if (direct(c)) {
        for (int64_t b = 0; b < c->B; b++)
            for (int64_t gi = 0; gi < c->g; gi++)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)c->cxg, (int)c->tx,
                            (int)c->cyg, 1.0f, w + gi * gw, (int)c->cxg,
                            dy + (b * c->cy + gi * c->cyg) * c->ty, (int)c->ty, 1.0f,
                            dx + (b * c->cx + gi * c->cxg) * c->tx, (int)c->tx);
        return 0;
    }
    const int64_t ncmax = chunk_cols(c);
    float *col = malloc(sizeof(float) * (size_t)(c->rows * ncmax));
    if (!col) return sao_err(ctx, op, "out of memory for a %lld x %lld col2im chunk",
                             (long long)c->rows, (long long)ncmax);
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t t0 = 0; t0 < c->ty; t0 += ncmax) {
            int64_t nc = c->ty - t0 < ncmax ? c->ty - t0 : ncmax;
            for (int64_t gi = 0; gi < c->g; gi++) {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)c->rows, (int)nc,
                            (int)c->cyg, 1.0f, w + gi * gw, (int)c->rows,
                            dy + (b * c->cy + gi * c->cyg) * c->ty + t0, (int)c->ty, 0.0f, col,
                            (int)nc);
                col2im(c, col, t0, nc, dx + (b * c->cx + gi * c->cxg) * c->tx);
            }
        }
    free(col);
    return 0;
}

/* dW += dY X^T (over the im2col of X) */
static int core_backward_weight(sao_ctx *ctx, const char *op, const sao_conv_geo *c, const float *x,
                                const float *dy, float *dw) {
    const int64_t gw = c->cyg * c->rows;
    if (direct(c)) {
        for (int64_t b = 0; b < c->B; b++)
            for (int64_t gi = 0; gi < c->g; gi++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->cyg, (int)c->cxg,
                            (int)c->ty, 1.0f, dy + (b * c->cy + gi * c->cyg) * c->ty, (int)c->ty,
                            x + (b * c->cx + gi * c->cxg) * c->tx, (int)c->tx, 1.0f, dw + gi * gw,
                            (int)c->cxg);
        return 0;
    }
    const int64_t ncmax = chunk_cols(c);
    float *col = malloc(sizeof(float) * (size_t)(c->rows * ncmax));
    if (!col) return sao_err(ctx, op, "out of memory for a %lld x %lld im2col chunk",
                             (long long)c->rows, (long long)ncmax);
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t t0 = 0; t0 < c->ty; t0 += ncmax) {
            int64_t nc = c->ty - t0 < ncmax ? c->ty - t0 : ncmax;
            for (int64_t gi = 0; gi < c->g; gi++) {
                im2col(c, x + (b * c->cx + gi * c->cxg) * c->tx, t0, nc, col);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->cyg, (int)c->rows,
                            (int)nc, 1.0f, dy + (b * c->cy + gi * c->cyg) * c->ty + t0, (int)c->ty,
                            col, (int)nc, 1.0f, dw + gi * gw, (int)c->rows);
            }
        }
    free(col);
    return 0;
}

/* y[b, c, :] = bias[c] */
static void fill_bias(const float *bias, int64_t B, int64_t C, int64_t T, float *y) {
    #pragma omp parallel for schedule(static) if (B * C * T >= SAO_PAR_MIN)
    for (int64_t r = 0; r < B * C; r++) {
        float bv = bias[r % C];
        float *yr = y + r * T;
        for (int64_t t = 0; t < T; t++) yr[t] = bv;
    }
}

/* dbias[c] += sum_{b,t} dy[b, c, t] (per channel, in order) */
static void sum_bias(const float *dy, int64_t B, int64_t C, int64_t T, float *dbias) {
    #pragma omp parallel for schedule(static) if (B * C * T >= SAO_PAR_MIN)
    for (int64_t c = 0; c < C; c++) {
        double s = 0.0;
        for (int64_t b = 0; b < B; b++) {
            const float *r = dy + (b * C + c) * T;
            #pragma omp simd reduction(+:s)
            for (int64_t t = 0; t < T; t++) s += r[t];
        }
        dbias[c] += (float)s;
    }
}

int64_t sao_conv1d_out_len(int64_t t_in, int64_t k, int stride, int padding, int dilation) {
    if (stride < 1) return -1;
    int64_t span = t_in + 2 * (int64_t)padding - (int64_t)dilation * (k - 1) - 1;
    return span < 0 ? 0 : span / stride + 1;
}

int64_t sao_conv_transpose1d_out_len(int64_t t_in, int64_t k, int stride, int padding,
                                     int output_padding, int dilation) {
    return (t_in - 1) * stride - 2 * (int64_t)padding + (int64_t)dilation * (k - 1) + output_padding + 1;
}

int sao_conv1d_forward(sao_ctx *ctx, const float *x, const float *w, const float *bias,
                       int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                       int stride, int padding, int dilation, int groups, float *y) {
    const char *op = "conv1d_forward";
    sao_conv_geo c;
    SAO_CHECK(sao_conv1d_forward_check(ctx, op, SAO_KCHECK_CPU, x, w, B, c_in, t_in, c_out, k, stride,
                                       padding, dilation, groups, y, &c));
    sao_threads_apply(ctx);
    if (bias) fill_bias(bias, B, c_out, c.ty, y);
    return core_forward(ctx, op, &c, x, w, bias ? 1.0f : 0.0f, y);
}

int sao_conv1d_backward(sao_ctx *ctx, const float *dy, const float *x, const float *w,
                        int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                        int stride, int padding, int dilation, int groups,
                        float *dx, float *dw, float *dbias) {
    const char *op = "conv1d_backward";
    sao_conv_geo c;
    SAO_CHECK(sao_conv1d_backward_check(ctx, op, SAO_KCHECK_CPU, dy, x, w, B, c_in, t_in, c_out, k,
                                        stride, padding, dilation, groups, dx, dw, &c));
    sao_threads_apply(ctx);
    if (dbias) sum_bias(dy, B, c_out, c.ty, dbias);
    if (dx && core_backward_data(ctx, op, &c, dy, w, dx)) return -1;
    if (dw && core_backward_weight(ctx, op, &c, x, dy, dw)) return -1;
    return 0;
}

int sao_conv_transpose1d_forward(sao_ctx *ctx, const float *x, const float *w, const float *bias,
                                 int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                                 int stride, int padding, int output_padding, int dilation,
                                 int groups, float *y) {
    const char *op = "conv_transpose1d_forward";
    sao_conv_geo c;
    SAO_CHECK(sao_conv_transpose1d_forward_check(ctx, op, SAO_KCHECK_CPU, x, w, B, c_in, t_in, c_out,
                                                 k, stride, padding, output_padding, dilation,
                                                 groups, y, &c));
    sao_threads_apply(ctx);
    if (bias) fill_bias(bias, B, c_out, c.tx, y);
    else memset(y, 0, sizeof(float) * (size_t)(B * c_out * c.tx));
    return core_backward_data(ctx, op, &c, x, w, y);
}

int sao_conv_transpose1d_backward(sao_ctx *ctx, const float *dy, const float *x, const float *w,
                                  int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                                  int stride, int padding, int output_padding, int dilation,
                                  int groups, float *dx, float *dw, float *dbias) {
    const char *op = "conv_transpose1d_backward";
    sao_conv_geo c;
    SAO_CHECK(sao_conv_transpose1d_backward_check(ctx, op, SAO_KCHECK_CPU, dy, x, w, B, c_in, t_in,
                                                  c_out, k, stride, padding, output_padding,
                                                  dilation, groups, dx, dw, &c));
    sao_threads_apply(ctx);
    if (dbias) sum_bias(dy, B, c_out, c.tx, dbias);
    if (dx && core_forward(ctx, op, &c, dy, w, 1.0f, dx)) return -1;
    if (dw && core_backward_weight(ctx, op, &c, dy, x, dw)) return -1;
    return 0;
}

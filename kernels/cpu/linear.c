/* linear.c — fully connected layer y = x W^T + b over N rows, on OpenBLAS sgemm.
 *
 * Shapes: x [N, in], W [out, in] (PyTorch Linear layout), b [out], y [N, out].
 * Forward is one sgemm (bias pre-filled into y, then beta = 1); backward is two sgemms (dx, dW)
 * plus a column sum for db, split over columns so its order does not depend on the thread count.
 */
#include "kcommon.h"
#include <cblas.h>
#include <limits.h>
#include <string.h>

static int check_dims(sao_ctx *ctx, const char *op, int64_t n, int64_t in, int64_t out) {
    if (n < 0 || in < 1 || out < 1)
        return sao_err(ctx, op, "bad shape n=%lld in=%lld out=%lld (need n >= 0, in, out >= 1)",
                       (long long)n, (long long)in, (long long)out);
    if (n > INT_MAX || in > INT_MAX || out > INT_MAX)
        return sao_err(ctx, op, "shape n=%lld in=%lld out=%lld exceeds the 32-bit BLAS interface "
                       "(split the rows into several calls)", (long long)n, (long long)in, (long long)out);
    return 0;
}

int sao_linear_forward(sao_ctx *ctx, const float *x, const float *w, const float *b,
                       int64_t n, int64_t in, int64_t out, int accumulate, float *y) {
    const char *op = "linear_forward";
    if (check_dims(ctx, op, n, in, out)) return -1;
    SAO_NEED(ctx, op, x);
    SAO_NEED(ctx, op, w);
    SAO_NEED(ctx, op, y);
    if ((const float *)y == x) return sao_err(ctx, op, "y and x are the same buffer (not in place)");
    if (n == 0) return 0;
    sao_threads_apply(ctx);
    float beta = accumulate ? 1.0f : 0.0f;
    if (b) {
        /* y = b (or y += b), then y += x W^T */
        #pragma omp parallel for schedule(static) if (n * out >= SAO_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            float *yr = y + i * out;
            if (accumulate) {
                for (int64_t j = 0; j < out; j++) yr[j] += b[j];
            } else {
                memcpy(yr, b, (size_t)out * sizeof(float));
            }
        }
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)out, (int)in,
                1.0f, x, (int)in, w, (int)in, beta, y, (int)out);
    return 0;
}

int sao_linear_backward(sao_ctx *ctx, const float *dy, const float *x, const float *w,
                        int64_t n, int64_t in, int64_t out, float *dx, float *dw, float *db) {
    const char *op = "linear_backward";
    if (check_dims(ctx, op, n, in, out)) return -1;
    SAO_NEED(ctx, op, dy);
    if (dx) SAO_NEED(ctx, op, w);
    if (dw) SAO_NEED(ctx, op, x);
    if (n == 0) return 0;
    sao_threads_apply(ctx);
    if (dx)  /* dx [N, in] += dy [N, out] W [out, in] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)in, (int)out,
                    1.0f, dy, (int)out, w, (int)in, 1.0f, dx, (int)in);
    if (dw)  /* dW [out, in] += dy^T [out, N] x [N, in] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)in, (int)n,
                    1.0f, dy, (int)out, x, (int)in, 1.0f, dw, (int)in);
    if (db) {
        /* column sums in blocks of 64 columns; each block is summed over all rows in order */
        int64_t nblk = (out + 63) / 64;
        #pragma omp parallel for schedule(static) if (n * out >= SAO_PAR_MIN)
        for (int64_t blk = 0; blk < nblk; blk++) {
            int64_t j0 = blk * 64, j1 = j0 + 64 < out ? j0 + 64 : out;
            float acc[64] = {0};
            for (int64_t i = 0; i < n; i++) {
                const float *r = dy + i * out;
                #pragma omp simd
                for (int64_t j = j0; j < j1; j++) acc[j - j0] += r[j];
            }
            for (int64_t j = j0; j < j1; j++) db[j] += acc[j - j0];
        }
    }
    return 0;
}

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

/* ---- argument checks (kcheck.h: the CUDA twins in kernels/cuda/linear.cu call them too) -------- */
/* Both twins' GEMMs take 32-bit sizes; they name the interface, and the buffers they need, in
 * their own words (OpenBLAS and host buffers here, cuBLAS and device buffers on the GPU). */
static int check_dims(sao_ctx *ctx, const char *op, sao_kcheck_dev dev, int64_t n, int64_t in,
                      int64_t out) {
    if (n < 0 || in < 1 || out < 1)
        return sao_err(ctx, op, "bad shape n=%lld in=%lld out=%lld (need n >= 0, in, out >= 1)",
                       (long long)n, (long long)in, (long long)out);
    if (n > INT_MAX || in > INT_MAX || out > INT_MAX)
        return sao_err(ctx, op, "shape n=%lld in=%lld out=%lld exceeds %s (split the rows into several "
                       "calls)", (long long)n, (long long)in, (long long)out,
                       dev == SAO_KCHECK_CUDA ? "cuBLAS's 32-bit sizes" : "the 32-bit BLAS interface");
    return 0;
}

/* SAO_NEED in the twin's words (needs ctx, op and dev in scope) */
#define NEED_BUF(p)                                                                                \
    do {                                                                                           \
        if (!(p))                                                                                  \
            return sao_err(ctx, op, "%s is NULL (pass a %sbuffer of the documented shape)", #p,     \
                           dev == SAO_KCHECK_CUDA ? "device " : "");                              \
    } while (0)

int sao_linear_forward_check(sao_ctx *ctx, const char *op, sao_kcheck_dev dev, const void *x,
                             const void *w, int64_t n, int64_t in, int64_t out, const float *y) {
    if (check_dims(ctx, op, dev, n, in, out)) return -1;
    NEED_BUF(x);
    NEED_BUF(w);
    NEED_BUF(y);
    if ((const void *)y == x) return sao_err(ctx, op, "y and x are the same buffer (not in place)");
    return n == 0 ? 0 : 1;
}

int sao_linear_backward_check(sao_ctx *ctx, const char *op, sao_kcheck_dev dev, const float *dy,
                              const float *x, const float *w, int64_t n, int64_t in, int64_t out,
                              const float *dx, const float *dw) {
    if (check_dims(ctx, op, dev, n, in, out)) return -1;
    NEED_BUF(dy);
    if (dx) NEED_BUF(w);
    if (dw) NEED_BUF(x);
    return n == 0 ? 0 : 1;
}

/* ---- kernels ---------------------------------------------------------------------------------- */
int sao_linear_forward(sao_ctx *ctx, const float *x, const float *w, const float *b,
                       int64_t n, int64_t in, int64_t out, int accumulate, float *y) {
    SAO_CHECK(sao_linear_forward_check(ctx, "linear_forward", SAO_KCHECK_CPU, x, w, n, in, out, y));
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
    SAO_CHECK(sao_linear_backward_check(ctx, "linear_backward", SAO_KCHECK_CPU, dy, x, w, n, in, out,
                                        dx, dw));
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

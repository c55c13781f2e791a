// norms.cu — CUDA twins of kernels/cpu/layernorm.c and kernels/cpu/rmsnorm.c: LayerNorm (the
// DiT's pre-norms) and T5's RMSNorm over the last dimension, forward and backward.
//
// Shapes: x, y, dy, dx [N, C]; gamma, beta, dgamma, dbeta [C]; mean, rstd [N].
// Forward and dx: one block of 256 threads per row; the row sums are accumulated in double, as on
// the CPU, with a fixed tree (per-thread strided sums, a shuffle tree per warp, then over the
// warps), and the per-element arithmetic is the CPU's fp32 expressions with mean/rstd rounded to
// fp32 first. dgamma/dbeta: column sums in two passes and no atomics — pass 1 sums chunks of 256
// rows per 32-column tile into a scratch [chunks, C] (double, from the caching allocator), pass 2
// adds the chunks in order — so the result is the same on every run and every GPU.
// Arguments are checked by the CPU twins' own checks (kernels/cpu/kcheck.h), then every device
// pointer (sao_cuda_check_ptr).
#include "cuda_internal.h"
extern "C" {
#include "sao_cuda.h"
#include "sao_cuda_ops.h"
#include "../cpu/kcheck.h"
}
#include <math.h>

#define ROW_THREADS 256     // threads per row block (a multiple of 32)
#define CHUNK_ROWS 256      // rows per pass-1 partial of the column sums
#define MAX_ROW_BLOCKS 1048576LL
#define MAX_COLS (65535LL * 32)   // column tiles of the dgamma pass run along grid.y

static unsigned row_blocks(int64_t n) { return (unsigned)(n < MAX_ROW_BLOCKS ? n : MAX_ROW_BLOCKS); }

// ---- forward ------------------------------------------------------------------------------------
// One block per row i: mu, var over the row in double (two passes, as the CPU), then
// y = (x - mu) * rstd * gamma (+ beta).
__global__ static void layernorm_fwd(const float *x, const float *gamma, const float *beta,
                                     long long n, long long c, float eps, float *y, float *mean,
                                     float *rstd) {
    __shared__ double sh[33];
    for (long long i = blockIdx.x; i < n; i += gridDim.x) {
        const float *xr = x + i * c;
        float *yr = y + i * c;
        double s = 0.0;
        for (long long j = threadIdx.x; j < c; j += blockDim.x) s += xr[j];
        double mu = sao_block_sum(s, sh) / (double)c;
        double v = 0.0;
        for (long long j = threadIdx.x; j < c; j += blockDim.x) { double d = xr[j] - mu; v += d * d; }
        double rs = 1.0 / sqrt(sao_block_sum(v, sh) / (double)c + (double)eps);
        float muf = (float)mu, rsf = (float)rs;
        for (long long j = threadIdx.x; j < c; j += blockDim.x)
            yr[j] = beta ? (xr[j] - muf) * rsf * gamma[j] + beta[j] : (xr[j] - muf) * rsf * gamma[j];
        if (threadIdx.x == 0) {
            if (mean) mean[i] = muf;
            if (rstd) rstd[i] = rsf;
        }
    }
}

// y = gamma * (x * rstd), rstd = 1/sqrt(mean(x^2) + eps) in double.
__global__ static void rmsnorm_fwd(const float *x, const float *gamma, long long n, long long c,
                                   float eps, float *y, float *rstd) {
    __shared__ double sh[33];
    for (long long i = blockIdx.x; i < n; i += gridDim.x) {
        const float *xr = x + i * c;
        float *yr = y + i * c;
        double ss = 0.0;
        for (long long j = threadIdx.x; j < c; j += blockDim.x) ss += (double)xr[j] * xr[j];
        float rs = (float)(1.0 / sqrt(sao_block_sum(ss, sh) / (double)c + (double)eps));
        for (long long j = threadIdx.x; j < c; j += blockDim.x) yr[j] = gamma[j] * (xr[j] * rs);
        if (threadIdx.x == 0 && rstd) rstd[i] = rs;
    }
}

// ---- backward: dx ---------------------------------------------------------------------------------
// LayerNorm: g = dy*gamma, xhat = (x - mu)*rstd; dx += rstd * (g - mean(g) - xhat * mean(g*xhat)).
__global__ static void layernorm_bwd_dx(const float *dy, const float *x, const float *gamma,
                                        const float *mean, const float *rstd, long long n,
                                        long long c, float *dx) {
    __shared__ double sh[33];
    for (long long i = blockIdx.x; i < n; i += gridDim.x) {
        const float *xr = x + i * c, *dyr = dy + i * c;
        float *dxr = dx + i * c;
        float mu = mean[i], rs = rstd[i];
        double sg = 0.0, sgx = 0.0;
        for (long long j = threadIdx.x; j < c; j += blockDim.x) {
            float g = dyr[j] * gamma[j];
            float xh = (xr[j] - mu) * rs;
            sg += g;
            sgx += (double)g * xh;
        }
        float a = (float)(sao_block_sum(sg, sh) / (double)c);
        float b = (float)(sao_block_sum(sgx, sh) / (double)c);
        for (long long j = threadIdx.x; j < c; j += blockDim.x) {
            float xh = (xr[j] - mu) * rs;
            dxr[j] += rs * (dyr[j] * gamma[j] - a - xh * b);
        }
    }
}

// RMSNorm: dx += rstd * (g - xhat * mean(g*xhat)), xhat = x*rstd.
__global__ static void rmsnorm_bwd_dx(const float *dy, const float *x, const float *gamma,
                                      const float *rstd, long long n, long long c, float *dx) {
    __shared__ double sh[33];
    for (long long i = blockIdx.x; i < n; i += gridDim.x) {
        const float *xr = x + i * c, *dyr = dy + i * c;
        float *dxr = dx + i * c;
        float rs = rstd[i];
        double sgx = 0.0;
        for (long long j = threadIdx.x; j < c; j += blockDim.x)
            sgx += (double)(dyr[j] * gamma[j]) * (xr[j] * rs);
        float b = (float)(sao_block_sum(sgx, sh) / (double)c);
        for (long long j = threadIdx.x; j < c; j += blockDim.x)
            dxr[j] += rs * (dyr[j] * gamma[j] - (xr[j] * rs) * b);
    }
}

// ---- backward: dgamma, dbeta (both norms) --------------------------------------------------------
// Pass 1: block (32, 8) per (chunk of CHUNK_ROWS rows, 32 columns); xhat = (x - mu) * rstd with
// mu = 0 for RMSNorm (mean NULL), exactly the CPU's x * rstd. pg, pb [chunks, C] (pb may be NULL).
__global__ static void norm_colsum_partial(const float *dy, const float *x, const float *mean,
                                           const float *rstd, long long n, long long c,
                                           double *pg, double *pb) {
    __shared__ double sg[8][32], sb[8][32];
    long long chunk = blockIdx.x, j = (long long)blockIdx.y * 32 + threadIdx.x;
    long long r0 = chunk * CHUNK_ROWS, r1 = r0 + CHUNK_ROWS < n ? r0 + CHUNK_ROWS : n;
    double ag = 0.0, ab = 0.0;
    if (j < c)
        for (long long i = r0 + threadIdx.y; i < r1; i += 8) {
            float mu = mean ? mean[i] : 0.0f, rs = rstd[i];
            float d = dy[i * c + j];
            ag += (double)(d * ((x[i * c + j] - mu) * rs));
            ab += (double)d;
        }
    sg[threadIdx.y][threadIdx.x] = ag;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && j < c) {
        for (int k = 1; k < 8; k++) { ag += sg[k][threadIdx.x]; ab += sb[k][threadIdx.x]; }
        pg[chunk * c + j] = ag;
        if (pb) pb[chunk * c + j] = ab;
    }
}

// Pass 2: one thread per column adds the chunk partials in order.
__global__ static void norm_colsum_final(const double *pg, const double *pb, long long chunks,
                                         long long c, float *dgamma, float *dbeta) {
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < c;
         j += (long long)gridDim.x * blockDim.x) {
        double ag = 0.0, ab = 0.0;
        for (long long k = 0; k < chunks; k++) {
            ag += pg[k * c + j];
            if (pb) ab += pb[k * c + j];
        }
        if (dgamma) dgamma[j] += (float)ag;
        if (dbeta) dbeta[j] += (float)ab;
    }
}

// dgamma [C] += sum_i dy * xhat, dbeta [C] += sum_i dy (either may be NULL; n >= 1). The partials
// come from the caching allocator and go back to it at once: every launch is on one stream, so the
// block is only reused by work queued after these kernels.
static int norm_param_grads(sao_ctx *ctx, const char *op, const float *dy, const float *x,
                            const float *mean, const float *rstd, int64_t n, int64_t c,
                            float *dgamma, float *dbeta) {
    cudaStream_t st = sao_cuda_stream();
    long long chunks = (n + CHUNK_ROWS - 1) / CHUNK_ROWS;
    size_t each = (size_t)(chunks * c) * sizeof(double);
    void *part = NULL;   // pg, then pb
    if (sao_cuda_malloc(ctx, 2 * each, &part)) return -1;
    double *pg = (double *)part, *pb = dbeta ? pg + chunks * c : NULL;
    dim3 grid((unsigned)chunks, (unsigned)((c + 31) / 32)), block(32, 8);
    norm_colsum_partial<<<grid, block, 0, st>>>(dy, x, mean, rstd, (long long)n, (long long)c, pg, pb);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) {
        norm_colsum_final<<<sao_cuda_blocks(c, 256), 256, 0, st>>>(pg, pb, chunks, (long long)c,
                                                                   dgamma, dbeta);
        e = cudaGetLastError();
    }
    sao_cuda_free(part);
    if (e != cudaSuccess)
        return sao_err(ctx, op, "%s:%d: kernel launch: %s (is a GPU visible? check nvidia-smi)",
                       __FILE__, __LINE__, cudaGetErrorString(e));
    return 0;
}

// ---- entry points -------------------------------------------------------------------------------
extern "C" int sao_cuda_layernorm_forward(sao_ctx *ctx, const float *x, const float *gamma,
                                          const float *beta, int64_t n, int64_t c, float eps,
                                          float *y, float *mean, float *rstd) {
    const char *op = "cuda_layernorm_forward";
    SAO_CHECK(sao_norm_forward_check(ctx, op, x, gamma, n, c, y));
    if (SAO_CUDA_PTR(x) || SAO_CUDA_PTR(gamma) || SAO_CUDA_PTR(beta) || SAO_CUDA_PTR(y) || SAO_CUDA_PTR(mean) || SAO_CUDA_PTR(rstd)) return -1;
    if (n == 0) return 0;
    layernorm_fwd<<<row_blocks(n), ROW_THREADS, 0, sao_cuda_stream()>>>(x, gamma, beta, (long long)n,
                                                                        (long long)c, eps, y, mean, rstd);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

extern "C" int sao_cuda_layernorm_backward(sao_ctx *ctx, const float *dy, const float *x,
                                           const float *gamma, const float *mean, const float *rstd,
                                           int64_t n, int64_t c, float *dx, float *dgamma,
                                           float *dbeta) {
    const char *op = "cuda_layernorm_backward";
    SAO_CHECK(sao_layernorm_backward_check(ctx, op, dy, x, gamma, mean, rstd, n, c, dx));
    if ((dgamma || dbeta) && c > MAX_COLS)
        return sao_err(ctx, op, "c=%lld: dgamma/dbeta support c <= %lld", (long long)c, MAX_COLS);
    if (SAO_CUDA_PTR(dy) || SAO_CUDA_PTR(x) || (dx && SAO_CUDA_PTR(gamma)) || SAO_CUDA_PTR(mean) || SAO_CUDA_PTR(rstd) || SAO_CUDA_PTR(dx) || SAO_CUDA_PTR(dgamma) ||
        SAO_CUDA_PTR(dbeta))
        return -1;
    if (n == 0) return 0;
    if (dx) {
        layernorm_bwd_dx<<<row_blocks(n), ROW_THREADS, 0, sao_cuda_stream()>>>(
            dy, x, gamma, mean, rstd, (long long)n, (long long)c, dx);
        CUDA_LAUNCHED(ctx, op);
    }
    if (dgamma || dbeta) return norm_param_grads(ctx, op, dy, x, mean, rstd, n, c, dgamma, dbeta);
    return 0;
}

extern "C" int sao_cuda_rmsnorm_forward(sao_ctx *ctx, const float *x, const float *gamma, int64_t n,
                                        int64_t c, float eps, float *y, float *rstd) {
    const char *op = "cuda_rmsnorm_forward";
    SAO_CHECK(sao_norm_forward_check(ctx, op, x, gamma, n, c, y));
    if (SAO_CUDA_PTR(x) || SAO_CUDA_PTR(gamma) || SAO_CUDA_PTR(y) || SAO_CUDA_PTR(rstd)) return -1;
    if (n == 0) return 0;
    rmsnorm_fwd<<<row_blocks(n), ROW_THREADS, 0, sao_cuda_stream()>>>(x, gamma, (long long)n,
                                                                      (long long)c, eps, y, rstd);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

extern "C" int sao_cuda_rmsnorm_backward(sao_ctx *ctx, const float *dy, const float *x,
                                         const float *gamma, const float *rstd, int64_t n, int64_t c,
                                         float *dx, float *dgamma) {
    const char *op = "cuda_rmsnorm_backward";
    SAO_CHECK(sao_rmsnorm_backward_check(ctx, op, dy, x, gamma, rstd, n, c, dx));
    if (dgamma && c > MAX_COLS)
        return sao_err(ctx, op, "c=%lld: dgamma supports c <= %lld", (long long)c, MAX_COLS);
    if (SAO_CUDA_PTR(dy) || SAO_CUDA_PTR(x) || (dx && SAO_CUDA_PTR(gamma)) || SAO_CUDA_PTR(rstd) || SAO_CUDA_PTR(dx) || SAO_CUDA_PTR(dgamma)) return -1;
    if (n == 0) return 0;
    if (dx) {
        rmsnorm_bwd_dx<<<row_blocks(n), ROW_THREADS, 0, sao_cuda_stream()>>>(
            dy, x, gamma, rstd, (long long)n, (long long)c, dx);
        CUDA_LAUNCHED(ctx, op);
    }
    if (dgamma) return norm_param_grads(ctx, op, dy, x, NULL, rstd, n, c, dgamma, NULL);
    return 0;
}

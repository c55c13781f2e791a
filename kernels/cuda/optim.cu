// optim.cu — CUDA twins of the training-step kernels: the MSE loss (kernels/cpu/loss.c), AdamW
// and the weight EMA (adamw.c), and the sum of squares behind the global grad norm (reduce.c).
//
// AdamW and EMA are per element in double with one rounding to fp32 per stored value, the CPU's
// arithmetic; the step-size scalars are computed on the host with the same expressions. The two
// reductions (mse_forward, sumsq) sum in double in two passes as the CPU does: one block per
// fixed 4096-element chunk (a fixed tree within it), then one block adding the chunk sums in a
// fixed order; the chunking does not depend on the GPU, so the result is the same on every run
// (the tree order differs from the CPU's sequential one: the sums agree to double rounding). The
// chunk sums live in scratch from the caching allocator (alloc.cu); the scalar is copied to `out`
// (host or device memory, cudaMemcpyDefault) before the call returns. Arguments are checked by the
// CPU twins' own checks (kernels/cpu/kcheck.h), then every device pointer (sao_cuda_check_ptr).
#include "cuda_internal.h"
extern "C" {
#include "sao_cuda.h"
#include "sao_cuda_ops.h"
#include "../cpu/kcheck.h"
}
#include <math.h>

#define BLK 4096               // elements per chunk of the reductions (the CPU's block)
#define FINAL_THREADS 1024     // threads of the block that adds the chunk sums

// ---- reductions -----------------------------------------------------------------------------------
// Pass 1: part[k] = sum over chunk k of (a - b)^2 (b NULL: a^2), in double.
__global__ static void sq_chunks(const float *a, const float *b, long long n, double *part) {
    __shared__ double sh[33];
    long long nb = (n + BLK - 1) / BLK;
    for (long long k = blockIdx.x; k < nb; k += gridDim.x) {
        long long i1 = (k + 1) * BLK < n ? (k + 1) * BLK : n;
        double s = 0.0;
        for (long long i = k * BLK + threadIdx.x; i < i1; i += blockDim.x) {
            double d = b ? (double)a[i] - (double)b[i] : (double)a[i];
            s += d * d;
        }
        s = sao_block_sum(s, sh);
        if (threadIdx.x == 0) part[k] = s;
    }
}

// Pass 2 (one block): part[nb] = (sum of part[0..nb)) / div.
__global__ static void sum_chunks(double *part, long long nb, double div) {
    __shared__ double sh[33];
    double s = 0.0;
    for (long long k = threadIdx.x; k < nb; k += blockDim.x) s += part[k];
    s = sao_block_sum(s, sh);
    if (threadIdx.x == 0) part[nb] = s / div;
}

// *out = sum((a - b)^2) / div over n >= 1 elements (b may be NULL). The chunk sums come from the
// caching allocator and go back to it once the result is copied out.
static int sq_sum(sao_ctx *ctx, const char *op, const float *a, const float *b, int64_t n, double div,
                  double *out) {
    cudaStream_t st = sao_cuda_stream();
    long long nb = (n + BLK - 1) / BLK;
    void *mem = NULL;
    if (sao_cuda_malloc(ctx, (size_t)(nb + 1) * sizeof(double), &mem)) return -1;
    double *part = (double *)mem;
    sq_chunks<<<(unsigned)(nb < SAO_CUDA_MAX_BLOCKS ? nb : SAO_CUDA_MAX_BLOCKS), SAO_CUDA_THREADS, 0, st>>>(a, b, (long long)n, part);
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) {
        sum_chunks<<<1, FINAL_THREADS, 0, st>>>(part, nb, div);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpyAsync(out, part + nb, sizeof(double), cudaMemcpyDefault, st);
    if (e == cudaSuccess) e = cudaStreamSynchronize(st);
    sao_cuda_free(mem);
    if (e != cudaSuccess)
        return sao_err(ctx, op, "%s:%d: %s (is a GPU visible? check nvidia-smi)", __FILE__, __LINE__,
                       cudaGetErrorString(e));
    return 0;
}

extern "C" int sao_cuda_sumsq(sao_ctx *ctx, const float *x, int64_t n, double *out) {
    const char *op = "cuda_sumsq";
    int rc = sao_sumsq_check(ctx, op, x, n, out);
    if (rc < 0) return -1;
    if (rc == 0) {
        const double zero = 0.0;
        CUDA_TRY(ctx, op, cudaMemcpy(out, &zero, sizeof(double), cudaMemcpyDefault));
        return 0;
    }
    if (SAO_CUDA_PTR(x)) return -1;
    return sq_sum(ctx, op, x, NULL, n, 1.0, out);
}

extern "C" int sao_cuda_mse_forward(sao_ctx *ctx, const float *pred, const float *target, int64_t n,
                                    double *loss) {
    const char *op = "cuda_mse_forward";
    SAO_CHECK(sao_mse_forward_check(ctx, op, pred, target, n, loss));
    if (SAO_CUDA_PTR(pred) || SAO_CUDA_PTR(target)) return -1;
    return sq_sum(ctx, op, pred, target, n, (double)n, loss);
}

// ---- MSE backward -----------------------------------------------------------------------------------
__global__ static void mse_bwd(const float *pred, const float *target, long long n, float k,
                               float *dpred) {
    SAO_GRID_STRIDE(i, n) dpred[i] += k * (pred[i] - target[i]);
}

extern "C" int sao_cuda_mse_backward(sao_ctx *ctx, const float *pred, const float *target, int64_t n,
                                     double dloss, float *dpred) {
    const char *op = "cuda_mse_backward";
    SAO_CHECK(sao_mse_backward_check(ctx, op, pred, target, n, dpred));
    if (SAO_CUDA_PTR(pred) || SAO_CUDA_PTR(target) || SAO_CUDA_PTR(dpred)) return -1;
    float k = (float)(2.0 * dloss / (double)n);
    mse_bwd<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(pred, target, (long long)n, k, dpred);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

// ---- AdamW --------------------------------------------------------------------------------------------
// g = grad*grad_scale; m, v moments; p = p*decay - step_size * m / (sqrt(v)/bc2_sqrt + eps).
__global__ static void adamw_kernel(float *param, const float *grad, float *m, float *v, long long n,
                                    double beta1, double beta2, double eps, double decay,
                                    double step_size, double bc2_sqrt, double grad_scale) {
    SAO_GRID_STRIDE(i, n) {
        double g = (double)grad[i] * grad_scale;
        double mi = beta1 * (double)m[i] + (1.0 - beta1) * g;
        double vi = beta2 * (double)v[i] + (1.0 - beta2) * g * g;
        double p = (double)param[i] * decay;
        p -= step_size * mi / (sqrt(vi) / bc2_sqrt + eps);
        m[i] = (float)mi;
        v[i] = (float)vi;
        param[i] = (float)p;
    }
}

extern "C" int sao_cuda_adamw_step(sao_ctx *ctx, float *param, const float *grad, float *m, float *v,
                                   int64_t n, double lr, double beta1, double beta2, double eps,
                                   double weight_decay, int64_t step, double grad_scale) {
    const char *op = "cuda_adamw_step";
    SAO_CHECK(sao_adamw_check(ctx, op, param, grad, m, v, n, beta1, beta2, step));
    if (SAO_CUDA_PTR(param) || SAO_CUDA_PTR(grad) || SAO_CUDA_PTR(m) || SAO_CUDA_PTR(v)) return -1;
    double decay = 1.0 - lr * weight_decay;
    double step_size = lr / (1.0 - pow(beta1, (double)step));
    double bc2_sqrt = sqrt(1.0 - pow(beta2, (double)step));
    adamw_kernel<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(
        param, grad, m, v, (long long)n, beta1, beta2, eps, decay, step_size, bc2_sqrt, grad_scale);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

// ---- EMA ------------------------------------------------------------------------------------------
// ema += w * (param - ema), w = 1 - decay, in double (torch lerp, as ema_pytorch).
__global__ static void ema_kernel(float *ema, const float *param, long long n, double w) {
    SAO_GRID_STRIDE(i, n) {
        double e = (double)ema[i];
        ema[i] = (float)(e + w * ((double)param[i] - e));
    }
}

extern "C" int sao_cuda_ema_update(sao_ctx *ctx, float *ema, const float *param, int64_t n,
                                   double decay) {
    const char *op = "cuda_ema_update";
    SAO_CHECK(sao_ema_check(ctx, op, ema, param, n, decay));
    if (SAO_CUDA_PTR(ema) || SAO_CUDA_PTR(param)) return -1;
    ema_kernel<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(ema, param, (long long)n, 1.0 - decay);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

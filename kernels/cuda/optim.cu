// optim.cu — CUDA twins of the training-step kernels: the MSE loss (kernels/cpu/loss.c), AdamW
// and the weight EMA (adamw.c; also fused: AdamW + EMA + bf16 copies of many tensors in one launch),
// and the sum of squares behind the global grad norm (reduce.c).
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
#include "sao_kernels.h"
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

// ---- the v objective's x_t and v: the twin of loss.c's sao_v_target (the same fmaf forms, same bits) --
__global__ static void v_target_kernel(long long n, long long per, const float *x0, const float *noise, const float *a,
                                       const float *s, float *xt, float *v) {
    SAO_GRID_STRIDE(i, n) {
        float ab = a[i / per], sb = s[i / per];
        xt[i] = fmaf(x0[i], ab, __fmul_rn(noise[i], sb));
        v[i] = fmaf(noise[i], ab, -__fmul_rn(x0[i], sb));
    }
}

extern "C" int sao_cuda_v_target(sao_ctx *ctx, int64_t B, int64_t per, const float *x0, const float *noise,
                                 const float *a, const float *s, float *xt, float *v) {
    const char *op = "cuda_v_target";
    SAO_CHECK(sao_v_target_check(ctx, op, B, per, x0, noise, a, s, xt, v));
    if (SAO_CUDA_PTR(x0) || SAO_CUDA_PTR(noise) || SAO_CUDA_PTR(a) || SAO_CUDA_PTR(s) || SAO_CUDA_PTR(xt) ||
        SAO_CUDA_PTR(v))
        return -1;
    long long n = (long long)(B * per);
    v_target_kernel<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(n, (long long)per, x0, noise,
                                                                                           a, s, xt, v);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

// ---- AdamW (fused with the EMA and the bf16 copies) ------------------------------------------------
// One launch updates up to MT_MAX tensors, passed by value in the kernel's parameters (about 3.6 KB,
// under the 4 KB every GPU takes): tensor k owns the chunks [chunk0[k], chunk0[k + 1]) of MT_CHUNK
// elements; a block walks chunks grid-stride and finds its tensor among the <= 48 starts.
#define MT_MAX 48
#define MT_CHUNK 4096
struct MultiArgs {
    float *param[MT_MAX];
    const float *grad[MT_MAX];
    float *m[MT_MAX], *v[MT_MAX], *ema[MT_MAX];
    unsigned short *bf[MT_MAX];
    unsigned long long sr_off[MT_MAX];
    long long n[MT_MAX];
    long long chunk0[MT_MAX + 1];
    int count;
};
struct MultiScalars {   // worked out on the host, with the CPU twin's expressions
    double beta1, beta2, eps, decay, step_size, bc2_sqrt, grad_scale, ema_w;
    int ema, ema_copy, stochastic;
    unsigned long long sr_seed, sr_step;   // sr_step = step << 40, the stream's counter offset
};

// bf16 bits of f: nearest even, or stochastic with the 16 random bits r (adamw.c's twin; NaN stays a
// quiet NaN, +-inf stays).
__device__ static inline unsigned short bf16_bits(float f, int stochastic, unsigned int r) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40);
    if (!stochastic) return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    if ((u & 0x7fffffffu) == 0x7f800000u) return (unsigned short)(u >> 16);
    return (unsigned short)((u + (r & 0xffffu)) >> 16);
}

__global__ static void adamw_multi_kernel(MultiArgs a, MultiScalars s) {
    long long chunks = a.chunk0[a.count];
    for (long long c = blockIdx.x; c < chunks; c += gridDim.x) {
        int k = 0;
        while (a.chunk0[k + 1] <= c) k++;
        float *param = a.param[k], *m = a.m[k], *v = a.v[k];
        const float *grad = a.grad[k];
        float *ema = s.ema ? a.ema[k] : NULL;
        unsigned short *bf = a.bf[k];
        long long i0 = (c - a.chunk0[k]) * MT_CHUNK;
        long long i1 = i0 + MT_CHUNK < a.n[k] ? i0 + MT_CHUNK : a.n[k];
        for (long long i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
            double g = (double)grad[i] * s.grad_scale;
            double mi = s.beta1 * (double)m[i] + (1.0 - s.beta1) * g;
            double vi = s.beta2 * (double)v[i] + (1.0 - s.beta2) * g * g;
            double p = (double)param[i] * s.decay;
            p -= s.step_size * mi / (sqrt(vi) / s.bc2_sqrt + s.eps);
            float pf = (float)p;
            m[i] = (float)mi;
            v[i] = (float)vi;
            param[i] = pf;
            if (ema) {
                double e = (double)ema[i];
                ema[i] = s.ema_copy ? pf : (float)(e + s.ema_w * ((double)pf - e));
            }
            if (bf) {
                unsigned int r = 0;
                if (s.stochastic) {
                    unsigned long long j = a.sr_off[k] + (unsigned long long)i;
                    unsigned int b[4];
                    sao_philox(j / 4 + s.sr_step, s.sr_seed, b);
                    r = b[j % 4];
                }
                bf[i] = bf16_bits(pf, s.stochastic, r);
            }
        }
    }
}

extern "C" int sao_cuda_adamw_multi(sao_ctx *ctx, const sao_optim_tensor *t, int count, const sao_optim_hyper *h) {
    const char *op = "cuda_adamw_multi";
    SAO_CHECK(sao_adamw_multi_check(ctx, op, t, count, h));
    MultiScalars s;
    s.beta1 = h->beta1;
    s.beta2 = h->beta2;
    s.eps = h->eps;
    s.decay = 1.0 - h->lr * h->weight_decay;
    s.step_size = h->lr / (1.0 - pow(h->beta1, (double)h->step));
    s.bc2_sqrt = sqrt(1.0 - pow(h->beta2, (double)h->step));
    s.grad_scale = h->grad_scale;
    s.ema = h->ema_decay >= 0.0;
    s.ema_copy = h->ema_decay == 0.0;
    s.ema_w = 1.0 - h->ema_decay;
    s.stochastic = h->stochastic;
    s.sr_seed = h->sr_seed;
    s.sr_step = (unsigned long long)h->step << 40;
    MultiArgs a;
    a.count = 0;
    a.chunk0[0] = 0;
    for (int i = 0; i <= count; i++) {
        // a full table, or the last one: launch it
        if (a.count == MT_MAX || (i == count && a.count > 0)) {
            long long chunks = a.chunk0[a.count];
            unsigned blocks = (unsigned)(chunks < SAO_CUDA_MAX_BLOCKS ? chunks : SAO_CUDA_MAX_BLOCKS);
            adamw_multi_kernel<<<blocks, SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(a, s);
            CUDA_LAUNCHED(ctx, op);
            a.count = 0;
        }
        if (i == count) break;
        const sao_optim_tensor *x = &t[i];
        if (x->n == 0) continue;
        if (SAO_CUDA_PTR(x->param) || SAO_CUDA_PTR(x->grad) || SAO_CUDA_PTR(x->m) || SAO_CUDA_PTR(x->v) ||
            (s.ema && SAO_CUDA_PTR(x->ema)) || SAO_CUDA_PTR(x->param_bf16))
            return -1;
        int k = a.count++;
        a.param[k] = x->param;
        a.grad[k] = x->grad;
        a.m[k] = x->m;
        a.v[k] = x->v;
        a.ema[k] = x->ema;
        // a weight inside a registered bf16 mirror (linear.cu) keeps its copy current
        a.bf[k] = (unsigned short *)(x->param_bf16 ? x->param_bf16 : sao_cuda_bf16_mirror_find(x->param, x->n));
        a.sr_off[k] = x->sr_offset;
        a.n[k] = x->n;
        a.chunk0[k + 1] = a.chunk0[k] + (x->n + MT_CHUNK - 1) / MT_CHUNK;
    }
    return 0;
}

// The single-tensor step: the fused kernel with one entry (so a mirrored weight's copy follows too).
extern "C" int sao_cuda_adamw_step(sao_ctx *ctx, float *param, const float *grad, float *m, float *v,
                                   int64_t n, double lr, double beta1, double beta2, double eps,
                                   double weight_decay, int64_t step, double grad_scale) {
    const char *op = "cuda_adamw_step";
    SAO_CHECK(sao_adamw_check(ctx, op, param, grad, m, v, n, beta1, beta2, step));
    sao_optim_tensor t = {param, grad, m, v, NULL, NULL, n, 0};
    sao_optim_hyper h = {lr, beta1, beta2, eps, weight_decay, step, grad_scale, -1.0, 0, 0};
    return sao_cuda_adamw_multi(ctx, &t, 1, &h);
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

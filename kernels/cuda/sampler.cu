// sampler.cu — the sampler's per-step math on device pointers, the twin of runtime/sampler.c: the
// v-to-denoised conversion, one DPM++ / Euler step (with the history shift), and the loop's two
// scalings (the start x = noise sigma_max (+ init) and the model input x c_in). With these the
// sampling loop (lua/sao/sampler.lua) keeps its state on the GPU: nothing crosses to the host
// between steps and nothing waits.
//
// The per-element formulas are sampler_step.h's, shared with the CPU loop (explicit fma, nothing
// for a compiler to contract), and the step's scalars come from the same host function, so the
// results are the CPU's bits. The scalings are one fp32 rounding each, as the tensor ops of the
// CPU loop (a scalar stored as f32, then an fp32 product or sum).
#include "cuda_internal.h"
extern "C" {
#include "sao_cuda_ops.h"
#include "sao_model.h"
#include "sampler_step.h"
}

__global__ static void vdenoise_kernel(const float *x, const float *v, long long n, double c_skip, double c_out,
                                       float *den) {
    SAO_GRID_STRIDE(i, n) den[i] = sao_vdenoise_elem(c_skip, c_out, x[i], v[i]);
}

// One step; the history shift (den2 <- den1 <- den) in the same pass: each element reads its own
// den1 / den2 before writing them.
__global__ static void step_kernel(sao_step_coefs c, long long n, float *x, const float *den, float *den1,
                                   float *den2, const float *noise, int shift) {
    SAO_GRID_STRIDE(i, n) {
        float d1 = den1 ? den1[i] : 0.0f, d2 = den2 ? den2[i] : 0.0f;
        x[i] = sao_step_elem(&c, x[i], den[i], d1, d2, c.noise ? noise[i] : 0.0f);
        if (shift) {
            if (den2 && den1) den2[i] = d1;
            if (den1) den1[i] = den[i];
        }
    }
}

__global__ static void scale_into_kernel(const float *x, long long n, float s, const float *add, float *y) {
    SAO_GRID_STRIDE(i, n) {
        float v = __fmul_rn(x[i], s);
        y[i] = add ? __fadd_rn(v, add[i]) : v;
    }
}

extern "C" int sao_cuda_vdenoise(sao_ctx *ctx, int64_t n, const float *x, const float *v, double sigma, float *den) {
    const char *op = "cuda_vdenoise";
    if (n < 0) return sao_err(ctx, op, "bad size %lld", (long long)n);
    if (n == 0) return 0;
    if (SAO_CUDA_PTR(x) || SAO_CUDA_PTR(v) || SAO_CUDA_PTR(den)) return -1;
    double c_skip = 1.0 / (sigma * sigma + 1.0), c_out = -sigma / sqrt(sigma * sigma + 1.0);
    vdenoise_kernel<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(x, v, (long long)n, c_skip,
                                                                                            c_out, den);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

extern "C" int sao_cuda_sample_step(sao_ctx *ctx, int kind, int64_t n, float *x, const float *den, float *den1,
                                    float *den2, int have, double sig, double sig_next, double h1, double h2,
                                    double eta, const float *noise) {
    const char *op = "cuda_sample_step";
    sao_step_coefs c;
    if (sao_step_coefs_init(ctx, op, &c, kind, have, sig, sig_next, h1, h2, eta, noise != NULL, den1, den2)) return -1;
    if (n < 0) return sao_err(ctx, op, "bad size %lld", (long long)n);
    if (n == 0) return 0;
    if (SAO_CUDA_PTR(x) || SAO_CUDA_PTR(den) || SAO_CUDA_PTR(den1) || SAO_CUDA_PTR(den2) ||
        (c.noise && SAO_CUDA_PTR(noise)))
        return -1;
    step_kernel<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(
        c, (long long)n, x, den, den1, den2, noise, kind != SAO_SAMPLER_EULER);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

extern "C" int sao_cuda_sample_scale(sao_ctx *ctx, int64_t n, const float *x, double s, const float *add, float *y) {
    const char *op = "cuda_sample_scale";
    if (n < 0) return sao_err(ctx, op, "bad size %lld", (long long)n);
    if (n == 0) return 0;
    if (SAO_CUDA_PTR(x) || SAO_CUDA_PTR(add) || SAO_CUDA_PTR(y)) return -1;
    scale_into_kernel<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(x, (long long)n, (float)s,
                                                                                             add, y);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

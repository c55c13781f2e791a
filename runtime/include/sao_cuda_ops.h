/* sao_cuda_ops.h — CUDA twins of the pointwise, normalisation, loss and optimiser kernels of
 * sao_kernels.h (kernels/cuda/norms.cu, elementwise.cu, optim.cu). Each sao_cuda_<op> takes the
 * arguments of its CPU twin sao_<op>, with DEVICE pointers for every tensor (memory of the
 * current device; each is checked, a host pointer is refused with a message), and keeps its
 * contract: same shapes and layouts, same argument checks and messages (the op is named
 * "cuda_<op>"), backward gradients ACCUMULATE into d-buffers, a NULL d-buffer skips that
 * gradient. spec/cuda_ops_spec.lua (tag gpu) compares every twin with its CPU kernel.
 *
 * Exceptions, all host-side values rather than tensors:
 *   - sao_cuda_rope_*: `strides` is a host array of 3 (like sao_attn_desc); inv_freq is device data.
 *   - sao_cuda_mse_forward's `loss` and sao_cuda_sumsq's `out` may point to host or device memory
 *     (the copy is cudaMemcpyDefault); the call returns once the value is written.
 *
 * Execution: kernels are queued on sao's stream and return without waiting (except the two
 * scalar reductions above); launch and argument errors come back through ctx, errors of the
 * kernel itself surface at the next synchronising call. Reductions run in a fixed order that
 * does not depend on the GPU, so results are reproducible run to run (they are not bit-equal
 * to the CPU's, whose summation order differs). A CPU-only build answers each with a "built
 * without CUDA" error (runtime/cuda_load.c).
 *
 * Read by LuaJIT's ffi.cdef with the '#' lines and the __cplusplus blocks dropped.
 */
#ifndef SAO_CUDA_OPS_H
#define SAO_CUDA_OPS_H
#include "sao.h"
#ifdef __cplusplus
extern "C" {
#endif

/* ---- norms.cu: LayerNorm and RMSNorm, x, y [N, C] ------------------------------------------- */
int sao_cuda_layernorm_forward(sao_ctx *ctx, const float *x, const float *gamma, const float *beta,
                               int64_t n, int64_t c, float eps, float *y /* out */,
                               float *mean /* out, may be NULL */, float *rstd /* out, may be NULL */);
int sao_cuda_layernorm_backward(sao_ctx *ctx, const float *dy, const float *x, const float *gamma,
                                const float *mean, const float *rstd, int64_t n, int64_t c,
                                float *dx /* out, accumulated */, float *dgamma /* out, accumulated */,
                                float *dbeta /* out, accumulated */);
int sao_cuda_rmsnorm_forward(sao_ctx *ctx, const float *x, const float *gamma, int64_t n, int64_t c,
                             float eps, float *y /* out */, float *rstd /* out, may be NULL */);
int sao_cuda_rmsnorm_backward(sao_ctx *ctx, const float *dy, const float *x, const float *gamma,
                              const float *rstd, int64_t n, int64_t c,
                              float *dx /* out, accumulated */, float *dgamma /* out, accumulated */);

/* ---- elementwise.cu: RoPE, activations, SnakeBeta, Fourier features, transpose --------------- */
int sao_cuda_rope_forward(sao_ctx *ctx, const float *x, int64_t B, int64_t H, int64_t T, int64_t D,
                          const int64_t *strides /* host */, int64_t rot_dim, int64_t pos_offset,
                          const float *inv_freq, double base, float *y /* out, may alias x */);
int sao_cuda_rope_backward(sao_ctx *ctx, const float *dy, int64_t B, int64_t H, int64_t T, int64_t D,
                           const int64_t *strides /* host */, int64_t rot_dim, int64_t pos_offset,
                           const float *inv_freq, double base, float *dx /* out, may alias dy */);
int sao_cuda_gelu_forward(sao_ctx *ctx, const float *x, int64_t n, int approximate, float *y /* out */);
int sao_cuda_gelu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n, int approximate,
                           float *dx /* out, accumulated */);
int sao_cuda_relu_forward(sao_ctx *ctx, const float *x, int64_t n, float *y /* out */);
int sao_cuda_relu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n,
                           float *dx /* out, accumulated */);
int sao_cuda_softplus_forward(sao_ctx *ctx, const float *x, int64_t n, float *y /* out */);
int sao_cuda_softplus_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n,
                               float *dx /* out, accumulated */);
int sao_cuda_swiglu_forward(sao_ctx *ctx, const float *p, int64_t n, int64_t f, float *y /* out */);
int sao_cuda_swiglu_backward(sao_ctx *ctx, const float *dy, const float *p, int64_t n, int64_t f,
                             float *dp /* out, accumulated */);
int sao_cuda_snake_forward(sao_ctx *ctx, const float *x, const float *alpha, const float *beta,
                           int64_t B, int64_t C, int64_t T, float *y /* out */);
int sao_cuda_snake_backward(sao_ctx *ctx, const float *dy, const float *x, const float *alpha,
                            const float *beta, int64_t B, int64_t C, int64_t T,
                            float *dx /* out, accumulated */, float *dalpha /* out, accumulated */,
                            float *dbeta /* out, accumulated */);
int sao_cuda_fourier_features_forward(sao_ctx *ctx, const float *t, const float *w, int64_t B,
                                      int64_t f, float *y /* out */);
int sao_cuda_fourier_features_backward(sao_ctx *ctx, const float *dy, const float *t, const float *w,
                                       int64_t B, int64_t f, float *dw /* out, accumulated */,
                                       float *dt /* out, accumulated */);
int sao_cuda_number_features_forward(sao_ctx *ctx, const float *u, const float *w, int64_t B,
                                     int64_t f, float *y /* out */);
int sao_cuda_number_features_backward(sao_ctx *ctx, const float *dy, const float *u, const float *w,
                                      int64_t B, int64_t f, float *dw /* out, accumulated */,
                                      float *du /* out, accumulated */);
int sao_cuda_transpose_forward(sao_ctx *ctx, const float *x, int64_t B, int64_t R, int64_t C,
                               int accumulate, float *y /* out */);

/* ---- optim.cu: MSE loss, AdamW, EMA, sum of squares -------------------------------------------- */
int sao_cuda_mse_forward(sao_ctx *ctx, const float *pred, const float *target, int64_t n,
                         double *loss /* out, host or device */);
int sao_cuda_mse_backward(sao_ctx *ctx, const float *pred, const float *target, int64_t n, double dloss,
                          float *dpred /* out, accumulated */);
int sao_cuda_adamw_step(sao_ctx *ctx, float *param, const float *grad, float *m, float *v, int64_t n,
                        double lr, double beta1, double beta2, double eps, double weight_decay,
                        int64_t step, double grad_scale);
int sao_cuda_ema_update(sao_ctx *ctx, float *ema, const float *param, int64_t n, double decay);
/* The fused step of sao_adamw_multi (same bits). Besides the given bf16 copies, a tensor whose
 * param_bf16 is NULL but whose weights lie in a registered bf16 mirror (a model's weight block in
 * the bf16 GEMM mode, linear.cu) gets that mirror's range rewritten, so the bf16 products see the
 * new weights; sao_cuda_adamw_step does the same (rounding to nearest). */
struct sao_optim_tensor;   /* sao_kernels.h */
struct sao_optim_hyper;
int sao_cuda_adamw_multi(sao_ctx *ctx, const struct sao_optim_tensor *t, int count,
                         const struct sao_optim_hyper *h);
int sao_cuda_sumsq(sao_ctx *ctx, const float *x, int64_t n, double *out /* out, host or device */);
int sao_cuda_v_target(sao_ctx *ctx, int64_t B, int64_t per, const float *x0, const float *noise,
                      const float *a, const float *s, float *xt /* out */, float *v /* out */);

/* ---- sampler.cu: the sampler's per-step math (sao_model.h's sampler section) -------------------- */
/* Twins of sao_vdenoise and sao_sample_step (the same bits: sampler_step.h's formulas); noise may
 * be NULL (no noise term), den1/den2 as the CPU's. */
int sao_cuda_vdenoise(sao_ctx *ctx, int64_t n, const float *x, const float *v, double sigma, float *den /* out */);
int sao_cuda_sample_step(sao_ctx *ctx, int kind, int64_t n, float *x /* in/out */, const float *den,
                         float *den1, float *den2, int have, double sig, double sig_next, double h1,
                         double h2, double eta, const float *noise);
/* y = x * (float)s, then + add when add is not NULL (two fp32 roundings, as the CPU loop's tensor
 * ops: the start x = noise sigma_max + init, and each step's model input x c_in). y may be x. */
int sao_cuda_sample_scale(sao_ctx *ctx, int64_t n, const float *x, double s, const float *add /* may be NULL */,
                          float *y /* out */);

#ifdef __cplusplus
}
#endif
#endif

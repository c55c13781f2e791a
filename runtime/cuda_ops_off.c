/* cuda_ops_off.c — the kernel twins of sao_cuda_ops.h in a CPU-only build: each answers with a
 * clear "built without CUDA" error, so Lua code can probe and fall back to the CPU kernels.
 * Compiled only when the CUDA backend is not (see the Makefile); kernels/cuda/ replace it. */
#include "internal.h"
#include "sao_cuda_ops.h"

#ifndef SAO_WITH_CUDA
/* Every stub ignores all but ctx. */
#pragma GCC diagnostic ignored "-Wunused-parameter"

static const char *why = "sao was built without CUDA (no nvcc found, or CUDA=0): rebuild with the "
                         "CUDA toolkit, or call the CPU kernel sao_<op> on host buffers";

int sao_cuda_layernorm_forward(sao_ctx *ctx, const float *x, const float *gamma, const float *beta,
                               int64_t n, int64_t c, float eps, float *y, float *mean,
                               float *rstd) {
    return sao_err(ctx, "cuda_layernorm_forward", "%s", why);
}

int sao_cuda_layernorm_backward(sao_ctx *ctx, const float *dy, const float *x, const float *gamma,
                                const float *mean, const float *rstd, int64_t n, int64_t c,
                                float *dx, float *dgamma, float *dbeta) {
    return sao_err(ctx, "cuda_layernorm_backward", "%s", why);
}

int sao_cuda_rmsnorm_forward(sao_ctx *ctx, const float *x, const float *gamma, int64_t n, int64_t c,
                             float eps, float *y, float *rstd) {
    return sao_err(ctx, "cuda_rmsnorm_forward", "%s", why);
}

int sao_cuda_rmsnorm_backward(sao_ctx *ctx, const float *dy, const float *x, const float *gamma,
                              const float *rstd, int64_t n, int64_t c, float *dx, float *dgamma) {
    return sao_err(ctx, "cuda_rmsnorm_backward", "%s", why);
}

int sao_cuda_rope_forward(sao_ctx *ctx, const float *x, int64_t B, int64_t H, int64_t T, int64_t D,
                          const int64_t *strides, int64_t rot_dim, int64_t pos_offset,
                          const float *inv_freq, double base, float *y) {
    return sao_err(ctx, "cuda_rope_forward", "%s", why);
}

int sao_cuda_rope_backward(sao_ctx *ctx, const float *dy, int64_t B, int64_t H, int64_t T,
                           int64_t D, const int64_t *strides, int64_t rot_dim, int64_t pos_offset,
                           const float *inv_freq, double base, float *dx) {
    return sao_err(ctx, "cuda_rope_backward", "%s", why);
}

int sao_cuda_gelu_forward(sao_ctx *ctx, const float *x, int64_t n, int approximate, float *y) {
    return sao_err(ctx, "cuda_gelu_forward", "%s", why);
}

int sao_cuda_gelu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n,
                           int approximate, float *dx) {
    return sao_err(ctx, "cuda_gelu_backward", "%s", why);
}

int sao_cuda_relu_forward(sao_ctx *ctx, const float *x, int64_t n, float *y) {
    return sao_err(ctx, "cuda_relu_forward", "%s", why);
}

int sao_cuda_relu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n, float *dx) {
    return sao_err(ctx, "cuda_relu_backward", "%s", why);
}

int sao_cuda_softplus_forward(sao_ctx *ctx, const float *x, int64_t n, float *y) {
    return sao_err(ctx, "cuda_softplus_forward", "%s", why);
}

int sao_cuda_softplus_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n,
                               float *dx) {
    return sao_err(ctx, "cuda_softplus_backward", "%s", why);
}

int sao_cuda_swiglu_forward(sao_ctx *ctx, const float *p, int64_t n, int64_t f, float *y) {
    return sao_err(ctx, "cuda_swiglu_forward", "%s", why);
}

int sao_cuda_swiglu_backward(sao_ctx *ctx, const float *dy, const float *p, int64_t n, int64_t f,
                             float *dp) {
    return sao_err(ctx, "cuda_swiglu_backward", "%s", why);
}

int sao_cuda_snake_forward(sao_ctx *ctx, const float *x, const float *alpha, const float *beta,
                           int64_t B, int64_t C, int64_t T, float *y) {
    return sao_err(ctx, "cuda_snake_forward", "%s", why);
}

int sao_cuda_snake_backward(sao_ctx *ctx, const float *dy, const float *x, const float *alpha,
                            const float *beta, int64_t B, int64_t C, int64_t T, float *dx,
                            float *dalpha, float *dbeta) {
    return sao_err(ctx, "cuda_snake_backward", "%s", why);
}

int sao_cuda_fourier_features_forward(sao_ctx *ctx, const float *t, const float *w, int64_t B,
                                      int64_t f, float *y) {
    return sao_err(ctx, "cuda_fourier_features_forward", "%s", why);
}

int sao_cuda_fourier_features_backward(sao_ctx *ctx, const float *dy, const float *t,
                                       const float *w, int64_t B, int64_t f, float *dw, float *dt) {
    return sao_err(ctx, "cuda_fourier_features_backward", "%s", why);
}

int sao_cuda_number_features_forward(sao_ctx *ctx, const float *u, const float *w, int64_t B,
                                     int64_t f, float *y) {
    return sao_err(ctx, "cuda_number_features_forward", "%s", why);
}

int sao_cuda_number_features_backward(sao_ctx *ctx, const float *dy, const float *u, const float *w,
                                      int64_t B, int64_t f, float *dw, float *du) {
    return sao_err(ctx, "cuda_number_features_backward", "%s", why);
}

int sao_cuda_transpose_forward(sao_ctx *ctx, const float *x, int64_t B, int64_t R, int64_t C,
                               int accumulate, float *y) {
    return sao_err(ctx, "cuda_transpose_forward", "%s", why);
}

int sao_cuda_mse_forward(sao_ctx *ctx, const float *pred, const float *target, int64_t n,
                         double *loss) {
    return sao_err(ctx, "cuda_mse_forward", "%s", why);
}

int sao_cuda_mse_backward(sao_ctx *ctx, const float *pred, const float *target, int64_t n,
                          double dloss, float *dpred) {
    return sao_err(ctx, "cuda_mse_backward", "%s", why);
}

int sao_cuda_adamw_step(sao_ctx *ctx, float *param, const float *grad, float *m, float *v,
                        int64_t n, double lr, double beta1, double beta2, double eps,
                        double weight_decay, int64_t step, double grad_scale) {
    return sao_err(ctx, "cuda_adamw_step", "%s", why);
}

int sao_cuda_ema_update(sao_ctx *ctx, float *ema, const float *param, int64_t n, double decay) {
    return sao_err(ctx, "cuda_ema_update", "%s", why);
}

int sao_cuda_sumsq(sao_ctx *ctx, const float *x, int64_t n, double *out) {
    return sao_err(ctx, "cuda_sumsq", "%s", why);
}
#endif

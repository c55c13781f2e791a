/* cuda_backend.h — the contract between libsao.so and the CUDA backend, libsao_cuda.so.
 *
 * The CUDA code (the .cu files of kernels/cuda/) is built as its own library, linked against cudart, cuBLAS
 * and cuBLASLt (cuDNN it dlopens itself when a convolution first wants it, kernels/cuda/cudnn.cu), and
 * loaded with dlopen on the first call that needs a GPU
 * (runtime/cuda_load.c). A process that never touches CUDA never maps those libraries (about 0.2 s
 * and 150 MB of start-up saved). Every entry point below is defined twice under its public name:
 * in libsao.so as a forwarder (load the backend once, then call through the table) and in
 * libsao_cuda.so as the implementation; the backend exports only sao_cuda_backend_v1, so its own
 * calls between entry points bind inside it.
 *
 * SAO_CUDA_ENTRY_POINTS(ERR, PTR, OWN) lists them, each once:
 *   ERR(name, params, args)        returns int, ctx first: without a backend, a sao error naming
 *                                  the op and why there is none
 *   PTR(type, name, params, args)  returns a pointer, ctx first: the same error, NULL
 *   OWN(name)                      a forwarder written by hand in cuda_load.c (no ctx, or a
 *                                  useful answer without a backend)
 * Adding an entry point: declare it in its header, implement it in kernels/cuda/, add it here. */
#ifndef SAO_CUDA_BACKEND_H
#define SAO_CUDA_BACKEND_H
#include "sao_cuda.h"
#include "sao_cuda_ops.h"
#include "sao_cuda_attn.h"
#include "sao_nccl.h"
#include "cuda_glue.h"
#include "dit_internal.h"

#define SAO_CUDA_ENTRY_POINTS(ERR, PTR, OWN)                                                                 \
    /* sao_cuda.h: devices, tensors, allocator, linear */                                                   \
    OWN(sao_cuda_device_count)                                                                             \
    ERR(sao_cuda_device_props, (sao_ctx *ctx, int dev, char *name, int name_len, int64_t *total_bytes,      \
                                int *major, int *minor), (ctx, dev, name, name_len, total_bytes, major, minor)) \
    PTR(sao_tensor *, sao_tensor_to_cuda, (sao_ctx *ctx, const sao_tensor *t, int dev), (ctx, t, dev))     \
    ERR(sao_cuda_mem_info, (sao_ctx *ctx, int dev, int64_t *free_bytes, int64_t *total_bytes),               \
        (ctx, dev, free_bytes, total_bytes))                                                               \
    OWN(sao_tensor_to_cpu)                                                                                 \
    ERR(sao_cuda_rand_fill, (sao_ctx *ctx, sao_tensor *t, uint64_t seed, uint64_t offset, int normal),       \
        (ctx, t, seed, offset, normal))                                                                    \
    PTR(sao_tensor *, sao_tensor_empty_cuda, (sao_ctx *ctx, int dtype, int ndim, const int64_t *shape,      \
                                              int dev), (ctx, dtype, ndim, shape, dev))                    \
    ERR(sao_cuda_fill, (sao_ctx *ctx, sao_tensor *t, double value), (ctx, t, value))                       \
    ERR(sao_cuda_tensor_device, (sao_ctx *ctx, const sao_tensor *t), (ctx, t))                             \
    ERR(sao_cuda_fence, (sao_ctx *ctx, int slot), (ctx, slot))                                             \
    ERR(sao_cuda_fence_wait, (sao_ctx *ctx, int slot), (ctx, slot))                                        \
    ERR(sao_cuda_silu_forward, (sao_ctx *ctx, const float *x, int64_t n, float *y), (ctx, x, n, y))        \
    ERR(sao_cuda_silu_backward, (sao_ctx *ctx, const float *dy, const float *x, int64_t n, float *dx),      \
        (ctx, dy, x, n, dx))                                                                               \
    ERR(sao_cuda_malloc, (sao_ctx *ctx, size_t bytes, void **out), (ctx, bytes, out))                       \
    OWN(sao_cuda_free)                                                                                     \
    OWN(sao_cuda_empty_cache)                                                                              \
    OWN(sao_cuda_memory_stats)                                                                             \
    OWN(sao_cuda_reset_peak)                                                                               \
    ERR(sao_cuda_linear_forward, (sao_ctx *ctx, const float *x, const float *w, const float *b, int64_t n,  \
                                  int64_t in, int64_t out, int accumulate, float *y),                      \
        (ctx, x, w, b, n, in, out, accumulate, y))                                                         \
    ERR(sao_cuda_linear_backward, (sao_ctx *ctx, const float *dy, const float *x, const float *w, int64_t n, \
                                   int64_t in, int64_t out, float *dx, float *dw, float *db),               \
        (ctx, dy, x, w, n, in, out, dx, dw, db))                                                           \
    ERR(sao_cuda_linear_forward_bf16, (sao_ctx *ctx, const uint16_t *x, const uint16_t *w, const float *b,  \
                                       int64_t n, int64_t in, int64_t out, int accumulate, float *y),       \
        (ctx, x, w, b, n, in, out, accumulate, y))                                                         \
    OWN(sao_cuda_gemm_use_lt)                                                                              \
    OWN(sao_cuda_gemm_workspace_bytes)                                                                     \
    OWN(sao_cuda_gemm_precision)                                                                           \
    /* sao_cuda_ops.h: norms, pointwise, features, loss, optimiser */                                      \
    ERR(sao_cuda_layernorm_forward, (sao_ctx *ctx, const float *x, const float *gamma, const float *beta,   \
                                     int64_t n, int64_t c, float eps, float *y, float *mean, float *rstd),  \
        (ctx, x, gamma, beta, n, c, eps, y, mean, rstd))                                                   \
    ERR(sao_cuda_layernorm_backward, (sao_ctx *ctx, const float *dy, const float *x, const float *gamma,    \
                                      const float *mean, const float *rstd, int64_t n, int64_t c, float *dx, \
                                      float *dgamma, float *dbeta),                                        \
        (ctx, dy, x, gamma, mean, rstd, n, c, dx, dgamma, dbeta))                                          \
    ERR(sao_cuda_rmsnorm_forward, (sao_ctx *ctx, const float *x, const float *gamma, int64_t n, int64_t c,  \
                                   float eps, float *y, float *rstd), (ctx, x, gamma, n, c, eps, y, rstd)) \
    ERR(sao_cuda_rmsnorm_backward, (sao_ctx *ctx, const float *dy, const float *x, const float *gamma,      \
                                    const float *rstd, int64_t n, int64_t c, float *dx, float *dgamma),    \
        (ctx, dy, x, gamma, rstd, n, c, dx, dgamma))                                                       \
    ERR(sao_cuda_rope_forward, (sao_ctx *ctx, const float *x, int64_t B, int64_t H, int64_t T, int64_t D,   \
                                const int64_t *strides, int64_t rot_dim, int64_t pos_offset,               \
                                const float *inv_freq, double base, float *y),                             \
        (ctx, x, B, H, T, D, strides, rot_dim, pos_offset, inv_freq, base, y))                             \
    ERR(sao_cuda_rope_backward, (sao_ctx *ctx, const float *dy, int64_t B, int64_t H, int64_t T, int64_t D, \
                                 const int64_t *strides, int64_t rot_dim, int64_t pos_offset,              \
                                 const float *inv_freq, double base, float *dx),                           \
        (ctx, dy, B, H, T, D, strides, rot_dim, pos_offset, inv_freq, base, dx))                           \
    ERR(sao_cuda_gelu_forward, (sao_ctx *ctx, const float *x, int64_t n, int approximate, float *y),       \
        (ctx, x, n, approximate, y))                                                                       \
    ERR(sao_cuda_gelu_backward, (sao_ctx *ctx, const float *dy, const float *x, int64_t n, int approximate, \
                                 float *dx), (ctx, dy, x, n, approximate, dx))                             \
    ERR(sao_cuda_relu_forward, (sao_ctx *ctx, const float *x, int64_t n, float *y), (ctx, x, n, y))        \
    ERR(sao_cuda_relu_backward, (sao_ctx *ctx, const float *dy, const float *x, int64_t n, float *dx),      \
        (ctx, dy, x, n, dx))                                                                               \
    ERR(sao_cuda_softplus_forward, (sao_ctx *ctx, const float *x, int64_t n, float *y), (ctx, x, n, y))    \
    ERR(sao_cuda_softplus_backward, (sao_ctx *ctx, const float *dy, const float *x, int64_t n, float *dx),  \
        (ctx, dy, x, n, dx))                                                                               \
    ERR(sao_cuda_swiglu_forward, (sao_ctx *ctx, const float *p, int64_t n, int64_t f, float *y),           \
        (ctx, p, n, f, y))                                                                                 \
    ERR(sao_cuda_swiglu_backward, (sao_ctx *ctx, const float *dy, const float *p, int64_t n, int64_t f,     \
                                   float *dp), (ctx, dy, p, n, f, dp))                                     \
    ERR(sao_cuda_snake_forward, (sao_ctx *ctx, const float *x, const float *alpha, const float *beta,       \
                                 int64_t B, int64_t C, int64_t T, float *y), (ctx, x, alpha, beta, B, C, T, y)) \
    ERR(sao_cuda_snake_backward, (sao_ctx *ctx, const float *dy, const float *x, const float *alpha,        \
                                  const float *beta, int64_t B, int64_t C, int64_t T, float *dx,           \
                                  float *dalpha, float *dbeta),                                            \
        (ctx, dy, x, alpha, beta, B, C, T, dx, dalpha, dbeta))                                             \
    ERR(sao_cuda_fourier_features_forward, (sao_ctx *ctx, const float *t, const float *w, int64_t B,        \
                                            int64_t f, float *y), (ctx, t, w, B, f, y))                    \
    ERR(sao_cuda_fourier_features_backward, (sao_ctx *ctx, const float *dy, const float *t, const float *w, \
                                             int64_t B, int64_t f, float *dw, float *dt),                  \
        (ctx, dy, t, w, B, f, dw, dt))                                                                     \
    ERR(sao_cuda_number_features_forward, (sao_ctx *ctx, const float *u, const float *w, int64_t B,         \
                                           int64_t f, float *y), (ctx, u, w, B, f, y))                     \
    ERR(sao_cuda_number_features_backward, (sao_ctx *ctx, const float *dy, const float *u, const float *w,  \
                                            int64_t B, int64_t f, float *dw, float *du),                   \
        (ctx, dy, u, w, B, f, dw, du))                                                                     \
    ERR(sao_cuda_transpose_forward, (sao_ctx *ctx, const float *x, int64_t B, int64_t R, int64_t C,         \
                                     int accumulate, float *y), (ctx, x, B, R, C, accumulate, y))          \
    ERR(sao_cuda_mse_forward, (sao_ctx *ctx, const float *pred, const float *target, int64_t n,            \
                               double *loss), (ctx, pred, target, n, loss))                                \
    ERR(sao_cuda_mse_backward, (sao_ctx *ctx, const float *pred, const float *target, int64_t n,           \
                                double dloss, float *dpred), (ctx, pred, target, n, dloss, dpred))         \
    ERR(sao_cuda_adamw_step, (sao_ctx *ctx, float *param, const float *grad, float *m, float *v, int64_t n, \
                              double lr, double beta1, double beta2, double eps, double weight_decay,      \
                              int64_t step, double grad_scale),                                            \
        (ctx, param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, step, grad_scale))                \
    ERR(sao_cuda_ema_update, (sao_ctx *ctx, float *ema, const float *param, int64_t n, double decay),      \
        (ctx, ema, param, n, decay))                                                                       \
    ERR(sao_cuda_adamw_multi, (sao_ctx *ctx, const struct sao_optim_tensor *t, int count,                 \
                               const struct sao_optim_hyper *h), (ctx, t, count, h))                       \
    ERR(sao_cuda_sumsq, (sao_ctx *ctx, const float *x, int64_t n, double *out), (ctx, x, n, out))          \
    /* sao_cuda_attn.h: attention and 1-D convolutions */                                                  \
    ERR(sao_cuda_attention_forward, (sao_ctx *ctx, const struct sao_attn_desc *a, const float *q,           \
                                     const float *k, const float *v, const float *bias,                    \
                                     const uint8_t *key_mask, float *out, float *lse),                     \
        (ctx, a, q, k, v, bias, key_mask, out, lse))                                                       \
    ERR(sao_cuda_attention_backward, (sao_ctx *ctx, const struct sao_attn_desc *a, const float *q,          \
                                      const float *k, const float *v, const float *bias,                   \
                                      const uint8_t *key_mask, const float *out, const float *lse,         \
                                      const float *dout, float *dq, float *dk, float *dv, float *dbias),   \
        (ctx, a, q, k, v, bias, key_mask, out, lse, dout, dq, dk, dv, dbias))                              \
    PTR(const char *, sao_cuda_attention_impl, (sao_ctx *ctx, const char *want), (ctx, want))              \
    ERR(sao_cuda_conv1d_forward, (sao_ctx *ctx, const float *x, const float *w, const float *bias,          \
                                  int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,          \
                                  int stride, int padding, int dilation, int groups, float *y),            \
        (ctx, x, w, bias, B, c_in, t_in, c_out, k, stride, padding, dilation, groups, y))                  \
    ERR(sao_cuda_conv1d_backward, (sao_ctx *ctx, const float *dy, const float *x, const float *w,           \
                                   int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,         \
                                   int stride, int padding, int dilation, int groups, float *dx,           \
                                   float *dw, float *dbias),                                               \
        (ctx, dy, x, w, B, c_in, t_in, c_out, k, stride, padding, dilation, groups, dx, dw, dbias))        \
    ERR(sao_cuda_conv_transpose1d_forward, (sao_ctx *ctx, const float *x, const float *w,                   \
                                            const float *bias, int64_t B, int64_t c_in, int64_t t_in,      \
                                            int64_t c_out, int64_t k, int stride, int padding,             \
                                            int output_padding, int dilation, int groups, float *y),       \
        (ctx, x, w, bias, B, c_in, t_in, c_out, k, stride, padding, output_padding, dilation, groups, y))  \
    ERR(sao_cuda_conv_transpose1d_backward, (sao_ctx *ctx, const float *dy, const float *x,                 \
                                             const float *w, int64_t B, int64_t c_in, int64_t t_in,        \
                                             int64_t c_out, int64_t k, int stride, int padding,            \
                                             int output_padding, int dilation, int groups, float *dx,      \
                                             float *dw, float *dbias),                                     \
        (ctx, dy, x, w, B, c_in, t_in, c_out, k, stride, padding, output_padding, dilation, groups, dx,    \
         dw, dbias))                                                                                       \
    ERR(sao_cuda_v_target, (sao_ctx *ctx, int64_t B, int64_t per, const float *x0, const float *noise,      \
                            const float *a, const float *s, float *xt, float *v),                          \
        (ctx, B, per, x0, noise, a, s, xt, v))                                                             \
    /* sao_cuda_ops.h: the sampler's steps (sampler.cu) */                                                 \
    ERR(sao_cuda_vdenoise, (sao_ctx *ctx, int64_t n, const float *x, const float *v, double sigma,          \
                            float *den), (ctx, n, x, v, sigma, den))                                       \
    ERR(sao_cuda_sample_step, (sao_ctx *ctx, int kind, int64_t n, float *x, const float *den, float *den1,  \
                               float *den2, int have, double sig, double sig_next, double h1, double h2,   \
                               double eta, const float *noise),                                            \
        (ctx, kind, n, x, den, den1, den2, have, sig, sig_next, h1, h2, eta, noise))                       \
    ERR(sao_cuda_sample_scale, (sao_ctx *ctx, int64_t n, const float *x, double s, const float *add,        \
                                float *y), (ctx, n, x, s, add, y))                                         \
    /* cuda_glue.h: device choice, copies, workspaces, T5's gather/bias/mask */                            \
    OWN(sao_cuda_use)                                                                                      \
    ERR(sao_cuda_copy_rows, (sao_ctx *ctx, float *dst, int64_t dst_pitch, const float *src,                 \
                             int64_t src_pitch, int64_t rows, int64_t cols),                               \
        (ctx, dst, dst_pitch, src, src_pitch, rows, cols))                                                 \
    ERR(sao_cuda_zero, (sao_ctx *ctx, float *dst, int64_t n), (ctx, dst, n))                               \
    ERR(sao_cuda_add, (sao_ctx *ctx, float *y, const float *x, int64_t n), (ctx, y, x, n))                 \
    ERR(sao_cuda_tanh, (sao_ctx *ctx, float *x, int64_t n), (ctx, x, n))                                   \
    ERR(sao_cuda_scale, (sao_ctx *ctx, float *x, int64_t n, float s), (ctx, x, n, s))                      \
    ERR(sao_cuda_put, (sao_ctx *ctx, float *dst, const float *host_src, int64_t n), (ctx, dst, host_src, n)) \
    ERR(sao_cuda_get, (sao_ctx *ctx, float *host_dst, const float *src, int64_t n), (ctx, host_dst, src, n)) \
    PTR(float *, sao_cuda_grow, (sao_ctx *ctx, float **buf, size_t *have, size_t need),                    \
        (ctx, buf, have, need))                                                                            \
    ERR(sao_cuda_put_bytes, (sao_ctx *ctx, void *dst, const void *host_src, size_t bytes),                 \
        (ctx, dst, host_src, bytes))                                                                       \
    ERR(sao_cuda_get_bytes, (sao_ctx *ctx, void *host_dst, const void *src, size_t bytes),                 \
        (ctx, host_dst, src, bytes))                                                                       \
    ERR(sao_cuda_memcpy, (sao_ctx *ctx, void *dst, const void *src, size_t bytes), (ctx, dst, src, bytes))  \
    ERR(sao_cuda_t5_embed, (sao_ctx *ctx, const float *table, const int64_t *ids, int64_t n, int64_t d,     \
                            float *h), (ctx, table, ids, n, d, h))                                         \
    ERR(sao_cuda_t5_bias, (sao_ctx *ctx, const float *rel, const int32_t *bk, int64_t H, int64_t L,        \
                           float *bias), (ctx, rel, bk, H, L, bias))                                       \
    ERR(sao_cuda_t5_mask_rows, (sao_ctx *ctx, float *x, const uint8_t *km, int64_t n, int64_t d),          \
        (ctx, x, km, n, d))                                                                                \
    /* the DiT on a device (dit_internal.h, sao_model.h) */                                                \
    OWN(sao_dit_to_device)                                                                                 \
    OWN(sao_dit_to_host)                                                                                   \
    OWN(sao_dit_sync_host)                                                                                 \
    PTR(sao_tensor *, sao_dit_device_tensor, (sao_ctx *ctx, sao_dit *m, const char *name), (ctx, m, name))  \
    ERR(sao_dit_keep_bf16, (sao_ctx *ctx, sao_dit *m, int on), (ctx, m, on))                                \
    ERR(dit_device_begin, (sao_ctx *ctx, sao_dit *m), (ctx, m))                                            \
    PTR(float *, dit_device_ws, (sao_ctx *ctx, sao_dit *m, size_t floats), (ctx, m, floats))               \
    OWN(dit_device_release)                                                                                \
    ERR(dit_graph_begin, (sao_ctx *ctx, sao_dit *m, const dit_graph_key *key), (ctx, m, key))             \
    ERR(dit_graph_end, (sao_ctx *ctx, sao_dit *m, int mode, int rc), (ctx, m, mode, rc))                \
    /* sao_cuda_attn.h: the convolutions' path (cuDNN, loaded at run time, or GEMMs) */                  \
    PTR(const char *, sao_cuda_conv_backend, (sao_ctx *ctx, const char *want), (ctx, want))                \
    OWN(sao_cuda_cudnn_status)                                                                             \
    OWN(sao_cuda_sdpa_status)                                                                              \
    /* sao_nccl.h: collectives over device tensors (NCCL, loaded at run time) */                           \
    ERR(sao_nccl_ready, (sao_ctx *ctx, int dev, int *version), (ctx, dev, version))                        \
    ERR(sao_nccl_unique_id, (sao_ctx *ctx, unsigned char id[128]), (ctx, id))                              \
    PTR(sao_nccl *, sao_nccl_init, (sao_ctx *ctx, const unsigned char id[128], int world, int rank, int dev), \
        (ctx, id, world, rank, dev))                                                                       \
    ERR(sao_nccl_allreduce_mean, (sao_ctx *ctx, sao_nccl *c, sao_tensor *const *ts, int n), (ctx, c, ts, n)) \
    ERR(sao_nccl_reduce_scatter_mean, (sao_ctx *ctx, sao_nccl *c, sao_tensor *const *ts, int n),            \
        (ctx, c, ts, n))                                                                                   \
    ERR(sao_nccl_allgather, (sao_ctx *ctx, sao_nccl *c, sao_tensor *const *ts, int n), (ctx, c, ts, n))    \
    ERR(sao_nccl_broadcast, (sao_ctx *ctx, sao_nccl *c, sao_tensor *const *ts, int n, int root),            \
        (ctx, c, ts, n, root))                                                                             \
    OWN(sao_nccl_close)                                                                                    \
    OWN(sao_nccl_abort)

/* The table libsao_cuda.so fills: one pointer per entry point, typed from its declaration. */
#define SAO_CUDA_FIELD_ERR(name, params, args) __typeof__(&name) fn_##name;
#define SAO_CUDA_FIELD_PTR(type, name, params, args) __typeof__(&name) fn_##name;
#define SAO_CUDA_FIELD_OWN(name) __typeof__(&name) fn_##name;
typedef struct sao_cuda_backend {
    SAO_CUDA_ENTRY_POINTS(SAO_CUDA_FIELD_ERR, SAO_CUDA_FIELD_PTR, SAO_CUDA_FIELD_OWN)
} sao_cuda_backend;

/* The one symbol libsao_cuda.so exports: fills *b (size is sizeof *b as the caller knows it, so a
 * library built from other sources is refused) and returns 0, or -1 on a size mismatch. */
#define SAO_CUDA_BACKEND_SYMBOL "sao_cuda_backend_v1"
#ifdef __cplusplus
extern "C"
#endif
int sao_cuda_backend_v1(sao_cuda_backend *b, size_t size);
#endif

/* kcheck.h — the argument checks a CPU kernel shares with its CUDA twin (kernels/cuda/<file>.cu):
 * one function per kernel (or per family of kernels with the same arguments), defined next to the
 * CPU kernel in kernels/cpu/<file>.c, so each rule and its message are written once. Internal: not
 * part of the FFI contract (the .cu files include this inside `extern "C" { }`).
 *
 * Every check takes the caller's op name ("conv1d_forward" on the CPU, "cuda_conv1d_forward" on
 * the GPU: the twins' messages differ only in it), then the kernel's own arguments in the
 * kernel's order (those the check reads), and returns
 *   -1  a bad argument; the message is in ctx (sao_err)
 *    0  valid, and the kernel has nothing to do: it returns 0 at once
 *    1  valid: go on
 * so a kernel opens with
 *     SAO_CHECK(sao_conv1d_forward_check(ctx, op, ...));
 * and a CUDA twin adds what only it needs after that (device pointers, its kernels' limits).
 * What a check works out from the arguments (output lengths, default strides, the logit scale)
 * comes back in an out argument, so neither twin computes it again.
 */
#ifndef SAO_KCHECK_H
#define SAO_KCHECK_H
#include "internal.h"
#include "sao_kernels.h"
#include <stdint.h>

/* Runs a check in a kernel and returns its -1 or 0 from the kernel. */
#define SAO_CHECK(call)                                                                             \
    do {                                                                                            \
        int rc_ = (call);                                                                           \
        if (rc_ <= 0) return rc_;                                                                   \
    } while (0)

/* Which twin asks, for the two checks whose rules or words differ: the CPU conv and linear
 * kernels call OpenBLAS's 32-bit interface (the CUDA conv has no such limit), and the CUDA linear
 * names cuBLAS's limit and asks for device buffers. */
typedef enum { SAO_KCHECK_CPU, SAO_KCHECK_CUDA } sao_kcheck_dev;

/* ---- activations.c: n elements (GELU, ReLU, softplus, SiLU, SwiGLU) ----------------------------- */
int sao_activation_check(sao_ctx *ctx, const char *op, const float *x, int64_t n, const float *y);
int sao_activation_backward_check(sao_ctx *ctx, const char *op, const float *dy, const float *x,
                                  int64_t n, const float *dx);
int sao_swiglu_forward_check(sao_ctx *ctx, const char *op, const float *p, int64_t n, int64_t f,
                             const float *y);
int sao_swiglu_backward_check(sao_ctx *ctx, const char *op, const float *dy, const float *p,
                              int64_t n, int64_t f, const float *dp);

/* ---- snake.c ------------------------------------------------------------------------------------ */
int sao_snake_forward_check(sao_ctx *ctx, const char *op, const float *x, const float *alpha,
                            const float *beta, int64_t B, int64_t C, int64_t T, const float *y);
int sao_snake_backward_check(sao_ctx *ctx, const char *op, const float *dy, const float *x,
                             const float *alpha, const float *beta, int64_t B, int64_t C, int64_t T);

/* ---- fourier.c: both feature maps, forward (a, b, c = t, w, y) and backward (dy, t, w) ---------- */
int sao_features_check(sao_ctx *ctx, const char *op, int64_t B, int64_t f, const float *a,
                       const float *b, const float *c);

/* ---- rope.c: forward and backward; s = the (batch, head, token) strides to use ----------------- */
int sao_rope_check(sao_ctx *ctx, const char *op, const float *x, int64_t B, int64_t H, int64_t T,
                   int64_t D, const int64_t *strides, int64_t rot_dim, const float *inv_freq,
                   double base, const float *y, int64_t s[3] /* out */);

/* ---- reduce.c ----------------------------------------------------------------------------------- */
int sao_sumsq_check(sao_ctx *ctx, const char *op, const float *x, int64_t n, const double *out);
int sao_transpose_check(sao_ctx *ctx, const char *op, const float *x, int64_t B, int64_t R,
                        int64_t C, const float *y);

/* ---- loss.c, adamw.c ---------------------------------------------------------------------------- */
int sao_v_target_check(sao_ctx *ctx, const char *op, int64_t B, int64_t per, const float *x0, const float *noise,
                       const float *a, const float *s, const float *xt, const float *v);
int sao_mse_forward_check(sao_ctx *ctx, const char *op, const float *pred, const float *target,
                          int64_t n, const double *loss);
int sao_mse_backward_check(sao_ctx *ctx, const char *op, const float *pred, const float *target,
                           int64_t n, const float *dpred);
int sao_adamw_check(sao_ctx *ctx, const char *op, const float *param, const float *grad,
                    const float *m, const float *v, int64_t n, double beta1, double beta2,
                    int64_t step);
int sao_ema_check(sao_ctx *ctx, const char *op, const float *ema, const float *param, int64_t n,
                  double decay);
struct sao_optim_tensor;
struct sao_optim_hyper;
int sao_adamw_multi_check(sao_ctx *ctx, const char *op, const struct sao_optim_tensor *t, int count,
                          const struct sao_optim_hyper *h);

/* ---- layernorm.c (the forward check serves RMSNorm's forward too), rmsnorm.c -------------------- */
int sao_norm_forward_check(sao_ctx *ctx, const char *op, const float *x, const float *gamma,
                           int64_t n, int64_t c, const float *y);
int sao_layernorm_backward_check(sao_ctx *ctx, const char *op, const float *dy, const float *x,
                                 const float *gamma, const float *mean, const float *rstd,
                                 int64_t n, int64_t c, const float *dx);
int sao_rmsnorm_backward_check(sao_ctx *ctx, const char *op, const float *dy, const float *x,
                               const float *gamma, const float *rstd, int64_t n, int64_t c,
                               const float *dx);

/* ---- linear.c: x, w are float (or bf16 on the GPU) ---------------------------------------------- */
int sao_linear_forward_check(sao_ctx *ctx, const char *op, sao_kcheck_dev dev, const void *x,
                             const void *w, int64_t n, int64_t in, int64_t out, const float *y);
int sao_linear_backward_check(sao_ctx *ctx, const char *op, sao_kcheck_dev dev, const float *dy,
                              const float *x, const float *w, int64_t n, int64_t in, int64_t out,
                              const float *dx, const float *dw);

/* ---- conv1d.c ------------------------------------------------------------------------------------
 * Both convolutions as the one relation conv1d.c evaluates: a conv from X [B, cx, tx] to
 * Y [B, cy, ty] with weight W [cy, cx/g, K]. Conv1d: X = x, Y = y. ConvTranspose1d is its adjoint:
 * X = y (cx = C_out, tx = T_out), Y = x (cy = C_in, ty = T_in). */
typedef struct {
    int64_t B, cx, tx, cy, ty, K;   /* X [B, cx, tx], Y [B, cy, ty] */
    int64_t s, p, d, g;             /* stride, padding, dilation, groups */
    int64_t cxg, cyg, rows;         /* channels per group; rows = cxg * K (weights per Y channel) */
} sao_conv_geo;

int sao_conv1d_forward_check(sao_ctx *ctx, const char *op, sao_kcheck_dev dev, const float *x,
                             const float *w, int64_t B, int64_t c_in, int64_t t_in, int64_t c_out,
                             int64_t k, int stride, int padding, int dilation, int groups,
                             const float *y, sao_conv_geo *c /* out */);
int sao_conv1d_backward_check(sao_ctx *ctx, const char *op, sao_kcheck_dev dev, const float *dy,
                              const float *x, const float *w, int64_t B, int64_t c_in, int64_t t_in,
                              int64_t c_out, int64_t k, int stride, int padding, int dilation,
                              int groups, const float *dx, const float *dw, sao_conv_geo *c /* out */);
int sao_conv_transpose1d_forward_check(sao_ctx *ctx, const char *op, sao_kcheck_dev dev,
                                       const float *x, const float *w, int64_t B, int64_t c_in,
                                       int64_t t_in, int64_t c_out, int64_t k, int stride,
                                       int padding, int output_padding, int dilation, int groups,
                                       const float *y, sao_conv_geo *c /* out */);
int sao_conv_transpose1d_backward_check(sao_ctx *ctx, const char *op, sao_kcheck_dev dev,
                                        const float *dy, const float *x, const float *w, int64_t B,
                                        int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                                        int stride, int padding, int output_padding, int dilation,
                                        int groups, const float *dx, const float *dw,
                                        sao_conv_geo *c /* out */);

/* ---- attention.c: the descriptor with its defaults filled in ------------------------------------ */
typedef struct {
    int64_t B, H, Hkv, T, M, D;
    int64_t G;                            /* query heads per K/V head, H / Hkv */
    float scale;                          /* the logit scale (1/sqrt(D) where the descriptor has 0) */
    int64_t sq[3], sk[3], sv[3], so[3];   /* (batch, head, token) element strides of q, k, v, out */
} sao_attn_geo;

int sao_attention_forward_check(sao_ctx *ctx, const char *op, const sao_attn_desc *a,
                                const float *q, const float *k, const float *v, const float *out,
                                sao_attn_geo *g /* out */);
int sao_attention_backward_check(sao_ctx *ctx, const char *op, const sao_attn_desc *a,
                                 const float *q, const float *k, const float *v, const float *bias,
                                 const float *out, const float *lse, const float *dout,
                                 const float *dq, const float *dk, const float *dv,
                                 const float *dbias, sao_attn_geo *g /* out */);
#endif

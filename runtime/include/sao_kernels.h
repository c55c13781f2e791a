/* sao_kernels.h — the compute kernels (the .c files of kernels/cpu): raw-pointer forward and
 * backward passes for the layers of Stable Audio Open (DiT, Oobleck VAE, T5, conditioners) and the
 * optimiser.
 *
 * Read by lua/sao/ffi.lua after sao.h, with the '#' lines dropped: plain C declarations only.
 *
 * Conventions (llm.c style):
 *   - ctx first; return 0, or -1 with the message in ctx (sao_ctx_error) for bad arguments.
 *   - fp32 data, row-major, contiguous unless strides are given. Sizes in elements.
 *   - Letters: B batch, T frames/tokens (queries), M key tokens, C channels, H heads, D head dim,
 *     L text tokens, S samples, N rows (= B*T for token-wise ops), F features.
 *   - Layouts: token sequences [B, T, C]; audio/latents/conv [B, C, T]; Linear weight [out, in];
 *     Conv1d weight [C_out, C_in/groups, K]; ConvTranspose1d weight [C_in, C_out/groups, K].
 *   - Outputs are marked out. Forward outputs are overwritten (unless an `accumulate` flag says
 *     otherwise). Backward gradients ACCUMULATE (+=) into d-buffers, so callers zero them once
 *     and residual branches compose; a NULL d-buffer skips that gradient. Exceptions are named.
 *   - Results do not depend on the thread count (fixed reduction order), except where OpenBLAS
 *     sgemm is used (linear, conv1d), whose summation order is OpenBLAS's.
 *   - Threads: ctx's thread count (OpenMP and OpenBLAS).
 */
#ifndef SAO_KERNELS_H
#define SAO_KERNELS_H
#include "sao.h"
#ifdef __cplusplus
extern "C" {
#endif

/* ---- linear.c: y = x W^T + b (OpenBLAS sgemm) ------------------------------------------------
 * x [N, in], w [out, in], b [out] or NULL, y [N, out].
 * accumulate 0: y = x W^T + b; 1: y += x W^T + b (a residual branch in one pass). */
int sao_linear_forward(sao_ctx *ctx, const float *x, const float *w, const float *b,
                       int64_t n, int64_t in, int64_t out, int accumulate, float *y /* out */);
/* dx [N, in] += dy W; dw [out, in] += dy^T x; db [out] += sum_n dy. Any of dx, dw, db may be NULL. */
int sao_linear_backward(sao_ctx *ctx, const float *dy, const float *x, const float *w,
                        int64_t n, int64_t in, int64_t out,
                        float *dx /* out, accumulated */, float *dw /* out, accumulated */,
                        float *db /* out, accumulated */);

/* ---- layernorm.c: LayerNorm over the last dim (DiT: gamma only, eps 1e-5) -----------------------
 * x, y [N, C]; gamma [C]; beta [C] or NULL (SAO's beta is a zero buffer: pass NULL or it).
 * mean, rstd [N] are saved for the backward (either may be NULL when not training). */
int sao_layernorm_forward(sao_ctx *ctx, const float *x, const float *gamma, const float *beta,
                          int64_t n, int64_t c, float eps, float *y /* out */,
                          float *mean /* out, may be NULL */, float *rstd /* out, may be NULL */);
/* dx [N, C] += ..., dgamma [C] += sum dy*xhat, dbeta [C] += sum dy. mean/rstd from the forward. */
int sao_layernorm_backward(sao_ctx *ctx, const float *dy, const float *x, const float *gamma,
                           const float *mean, const float *rstd, int64_t n, int64_t c,
                           float *dx /* out, accumulated */, float *dgamma /* out, accumulated */,
                           float *dbeta /* out, accumulated */);

/* ---- rmsnorm.c: T5 RMSNorm y = gamma * x / sqrt(mean(x^2) + eps) (T5: eps 1e-6, no mean) -------
 * x, y [N, C]; gamma [C]; rstd [N] saved (may be NULL). */
int sao_rmsnorm_forward(sao_ctx *ctx, const float *x, const float *gamma, int64_t n, int64_t c,
                        float eps, float *y /* out */, float *rstd /* out, may be NULL */);
int sao_rmsnorm_backward(sao_ctx *ctx, const float *dy, const float *x, const float *gamma,
                         const float *rstd, int64_t n, int64_t c,
                         float *dx /* out, accumulated */, float *dgamma /* out, accumulated */);

/* ---- attention.c: fused multi-head scaled-dot-product attention -------------------------------
 * out[b,h,t,:] = sum_m softmax_m(scale * q[b,h,t,:].k[b,g,m,:] + bias[h,t,m]) v[b,g,m,:]
 * with g = h / (H/Hkv) (grouped K/V: consecutive query heads share a K/V head, as
 * repeat_interleave). Tiled with an online softmax, never forming T x M: scratch is O(tile) per
 * thread plus padded copies of K and V (O(M*D), their own size) per call; the forward stores
 * lse[b,h,t] = logsumexp of the row's logits, and the backward recomputes the scores tile by tile
 * from it (flash-attention-2 style). Thread-count independent.
 * Strides: element strides over (batch, head, token) for each tensor; the D elements of one row
 * are contiguous. All-zero strides mean the contiguous layouts q/out [B,H,T,D] and k/v
 * [B,Hkv,M,D]. Example: q, k, v read straight from a fused qkv buffer [B, T, 3, H, D] have
 * strides {T*3*H*D, D, 3*H*D} and pointers qkv, qkv + H*D, qkv + 2*H*D; an out [B, T, H, D]
 * (ready for the output projection) has strides {T*H*D, D, H*D}. The gradients dq/dk/dv/dout use
 * the strides of q/k/v/out. */
typedef struct sao_attn_desc {
    int64_t B, H, Hkv, T, M, D;   /* batch, query heads, K/V heads (H % Hkv == 0), queries, keys, head dim */
    double scale;                 /* logit scale; 0 selects 1/sqrt(D) (T5 passes 1.0) */
    int64_t q_stride[3];          /* q, dq: (batch, head, token) */
    int64_t k_stride[3];          /* k, dk: (batch, kv head, key) */
    int64_t v_stride[3];          /* v, dv */
    int64_t o_stride[3];          /* out, dout */
} sao_attn_desc;
/* bias [H, T, M] additive (T5 relative position bias) or NULL; key_mask [B, M] (nonzero = attend)
 * or NULL. A query row whose keys are all masked gets out = 0 (and lse = -inf).
 * lse [B, H, T] out for the backward, may be NULL for inference. */
int sao_attention_forward(sao_ctx *ctx, const sao_attn_desc *a, const float *q, const float *k,
                          const float *v, const float *bias, const uint8_t *key_mask,
                          float *out /* out */, float *lse /* out, may be NULL */);
/* Needs out and lse from the forward. dq, dk, dv accumulated (may be NULL: skipped);
 * dbias [H, T, M] accumulated over the batch, may be NULL. */
int sao_attention_backward(sao_ctx *ctx, const sao_attn_desc *a, const float *q, const float *k,
                           const float *v, const float *bias, const uint8_t *key_mask,
                           const float *out, const float *lse, const float *dout,
                           float *dq /* out, accumulated */, float *dk /* out, accumulated */,
                           float *dv /* out, accumulated */, float *dbias /* out, accumulated */);

/* ---- rope.c: partial rotary position embedding, half-split (rotate_half, "NeoX") --------------
 * Rotates dims [0, rot_dim) of each head row, pairs (i, i + rot_dim/2), i < rot_dim/2, by
 * theta_i(p) = p * inv_freq[i] at position p = pos_offset + t; dims [rot_dim, D) are copied.
 * x, y: B x H x T rows of D with strides (batch, head, token) as in sao_attn_desc (NULL or all
 * zero: contiguous [B, H, T, D]); y may equal x (in place). inv_freq [rot_dim/2] (SAO stores it:
 * transformer.rotary_pos_emb.inv_freq) or NULL to use base^(-2i/rot_dim) (SAO: base 10000).
 * Angles are formed in fp32 (p * inv_freq), as upstream. */
int sao_rope_forward(sao_ctx *ctx, const float *x, int64_t B, int64_t H, int64_t T, int64_t D,
                     const int64_t *strides, int64_t rot_dim, int64_t pos_offset,
                     const float *inv_freq, double base, float *y /* out, may alias x */);
/* dx = R(-theta) dy: NOT accumulated (RoPE runs in place on the q/k slices); dx may alias dy. */
int sao_rope_backward(sao_ctx *ctx, const float *dy, int64_t B, int64_t H, int64_t T, int64_t D,
                      const int64_t *strides, int64_t rot_dim, int64_t pos_offset,
                      const float *inv_freq, double base, float *dx /* out, may alias dy */);

/* ---- activations.c: elementwise activations, n elements ----------------------------------------
 * Forward: y may alias x. Backward: dx += dy * f'(x), from the forward's input x. */
int sao_silu_forward(sao_ctx *ctx, const float *x, int64_t n, float *y /* out */);
int sao_silu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n,
                      float *dx /* out, accumulated */);
/* approximate 0: exact 0.5 x (1 + erf(x/sqrt2));
 * approximate 1: tanh form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
int sao_gelu_forward(sao_ctx *ctx, const float *x, int64_t n, int approximate, float *y /* out */);
int sao_gelu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n, int approximate,
                      float *dx /* out, accumulated */);
int sao_relu_forward(sao_ctx *ctx, const float *x, int64_t n, float *y /* out */);
int sao_relu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n,
                      float *dx /* out, accumulated */);
/* softplus(x) = log(1 + exp(x)), = x above 20 (torch's threshold, beta 1) */
int sao_softplus_forward(sao_ctx *ctx, const float *x, int64_t n, float *y /* out */);
int sao_softplus_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n,
                          float *dx /* out, accumulated */);
/* SwiGLU (SAO's GLU with SiLU, spec 5.3.4): p [N, 2F] = [a | gate] (value FIRST, gate second),
 * y [N, F] = a * silu(gate). Backward: dp [N, 2F] += [dy*silu(gate) | dy*a*silu'(gate)]. */
int sao_swiglu_forward(sao_ctx *ctx, const float *p, int64_t n, int64_t f, float *y /* out */);
int sao_swiglu_backward(sao_ctx *ctx, const float *dy, const float *p, int64_t n, int64_t f,
                        float *dp /* out, accumulated */);

/* ---- snake.c: SnakeBeta with log-scale parameters (Oobleck, spec 3.1) ---------------------------
 * x, y [B, C, T]; alpha, beta [C] are the stored log-scale parameters:
 * y = x + 1/(exp(beta_c) + 1e-9) * sin(exp(alpha_c) * x)^2. y may alias x. */
int sao_snake_forward(sao_ctx *ctx, const float *x, const float *alpha, const float *beta,
                      int64_t B, int64_t C, int64_t T, float *y /* out */);
/* dx [B,C,T] += dy*dy/dx; dalpha, dbeta [C] += gradients w.r.t. the log-scale parameters. */
int sao_snake_backward(sao_ctx *ctx, const float *dy, const float *x, const float *alpha,
                       const float *beta, int64_t B, int64_t C, int64_t T,
                       float *dx /* out, accumulated */, float *dalpha /* out, accumulated */,
                       float *dbeta /* out, accumulated */);

/* ---- conv1d.c: 1-D convolution and transposed convolution (PyTorch semantics) ------------------
 * conv1d: x [B, C_in, T_in], w [C_out, C_in/groups, K], bias [C_out] or NULL,
 *   y [B, C_out, T_out], T_out = (T_in + 2*padding - dilation*(K-1) - 1)/stride + 1 (zero padding). */
int64_t sao_conv1d_out_len(int64_t t_in, int64_t k, int stride, int padding, int dilation);
int sao_conv1d_forward(sao_ctx *ctx, const float *x, const float *w, const float *bias,
                       int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                       int stride, int padding, int dilation, int groups, float *y /* out */);
/* dx [B,C_in,T_in] += ..., dw [C_out,C_in/g,K] += ..., dbias [C_out] += ...; each may be NULL. */
int sao_conv1d_backward(sao_ctx *ctx, const float *dy, const float *x, const float *w,
                        int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                        int stride, int padding, int dilation, int groups,
                        float *dx /* out, accumulated */, float *dw /* out, accumulated */,
                        float *dbias /* out, accumulated */);
/* conv_transpose1d: x [B, C_in, T_in], w [C_in, C_out/groups, K], bias [C_out] or NULL,
 *   y [B, C_out, T_out], T_out = (T_in-1)*stride - 2*padding + dilation*(K-1) + output_padding + 1.
 * (Oobleck decoder: K = 2s, stride s, padding ceil(s/2), output_padding 0 -> T_out = s*T_in.) */
int64_t sao_conv_transpose1d_out_len(int64_t t_in, int64_t k, int stride, int padding,
                                 int output_padding, int dilation);
int sao_conv_transpose1d_forward(sao_ctx *ctx, const float *x, const float *w, const float *bias,
                                 int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                                 int stride, int padding, int output_padding, int dilation,
                                 int groups, float *y /* out */);
int sao_conv_transpose1d_backward(sao_ctx *ctx, const float *dy, const float *x, const float *w,
                                  int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                                  int stride, int padding, int output_padding, int dilation,
                                  int groups, float *dx /* out, accumulated */,
                                  float *dw /* out, accumulated */, float *dbias /* out, accumulated */);

/* ---- fourier.c: Fourier features --------------------------------------------------------------
 * DiT timestep features (FourierFeatures, spec 5.2): t [B], w [F] (timestep_features.weight
 * [F,1]), y [B, 2F] = [cos(2 pi t w), sin(2 pi t w)] (cos FIRST). */
int sao_fourier_features_forward(sao_ctx *ctx, const float *t, const float *w, int64_t B,
                                 int64_t f, float *y /* out */);
/* dw [F] += d/dw; dt [B] += d/dt; either may be NULL. */
int sao_fourier_features_backward(sao_ctx *ctx, const float *dy, const float *t, const float *w,
                                  int64_t B, int64_t f, float *dw /* out, accumulated */,
                                  float *dt /* out, accumulated */);
/* NumberEmbedder features (LearnedPositionalEmbedding, spec 4.2): u [B] (normalised value),
 * w [F] (embedding.0.weights), y [B, 1+2F] = [u, sin(2 pi u w), cos(2 pi u w)] (u, then sin). */
int sao_number_features_forward(sao_ctx *ctx, const float *u, const float *w, int64_t B,
                                int64_t f, float *y /* out */);
int sao_number_features_backward(sao_ctx *ctx, const float *dy, const float *u, const float *w,
                                 int64_t B, int64_t f, float *dw /* out, accumulated */,
                                 float *du /* out, accumulated */);

/* ---- loss.c: mean squared error ---------------------------------------------------------------
 * loss = mean((pred - target)^2) over n elements, summed in double. */
int sao_mse_forward(sao_ctx *ctx, const float *pred, const float *target, int64_t n,
                    double *loss /* out */);
/* dpred [n] += dloss * 2 (pred - target) / n */
int sao_mse_backward(sao_ctx *ctx, const float *pred, const float *target, int64_t n, double dloss,
                     float *dpred /* out, accumulated */);
/* The v objective's input and target (SAO_SPEC 7.1-7.2) for B items of `per` elements each:
 * xt = a[b] x0 + s[b] noise, v = a[b] noise - s[b] x0 (a, s: the item's cos and sin of pi t / 2, f32). */
int sao_v_target(sao_ctx *ctx, int64_t B, int64_t per, const float *x0, const float *noise, const float *a,
                 const float *s, float *xt /* out */, float *v /* out */);

/* ---- adamw.c: optimiser and EMA ---------------------------------------------------------------
 * One torch.optim.AdamW step (decoupled weight decay, bias correction, amsgrad off) on n
 * parameters, computed per element in double and stored in fp32:
 *   g = grad * grad_scale;  p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= lr/(1-b1^step) * m / (sqrt(v)/sqrt(1-b2^step) + eps)
 * step is the 1-based count including this one; grad_scale folds clipping or loss-scale undoing
 * (1 for none). m, v are updated in place. */
int sao_adamw_step(sao_ctx *ctx, float *param, const float *grad, float *m, float *v, int64_t n,
                   double lr, double beta1, double beta2, double eps, double weight_decay,
                   int64_t step, double grad_scale);
/* EMA update ema += (1 - decay) * (param - ema) (torch lerp, as ema_pytorch). */
int sao_ema_update(sao_ctx *ctx, float *ema, const float *param, int64_t n, double decay);

/* The fused step: AdamW as sao_adamw_step on every tensor of a list, then (ema_decay >= 0) the EMA
 * update of the new weights as sao_ema_update (decay 0 copies them), then the bf16 copies of the
 * new weights: the same bits as those calls in that order, in one pass over each tensor (on a GPU
 * one launch per 48 tensors instead of two per tensor).
 * bf16 copies (param_bf16 non-NULL): rounded to nearest even, or with stochastic = 1 stochastically:
 * the fp32 bit pattern plus a uniform 16-bit integer, truncated, so E[bf16] = the fp32 weight;
 * the integer of element i of a tensor is the low half of lane (sr_offset + i) % 4 of
 * Philox4x32-10 with key sr_seed and counter (sr_offset + i) / 4 + step * 2^40 (runtime/rng.c's
 * generator), a pure function of (seed, step, index). sr_offset: the tensor's place in the rounding
 * stream (its offset in a model's weight block gives every weight its own numbers). */
typedef struct sao_optim_tensor {
    float *param;          /* fp32 master weights [n], updated in place */
    const float *grad;     /* [n] */
    float *m, *v;          /* AdamW moments [n] */
    float *ema;            /* NULL, or the EMA copy [n] */
    uint16_t *param_bf16;  /* NULL, or a bf16 copy of param [n] (raw bits) kept current */
    int64_t n;
    uint64_t sr_offset;
} sao_optim_tensor;
typedef struct sao_optim_hyper {
    double lr, beta1, beta2, eps, weight_decay;
    int64_t step;          /* 1-based AdamW step count including this one */
    double grad_scale;
    double ema_decay;      /* < 0: no EMA update in this call */
    int stochastic;        /* bf16 copies: 0 nearest even, 1 stochastic */
    uint64_t sr_seed;
} sao_optim_hyper;
int sao_adamw_multi(sao_ctx *ctx, const sao_optim_tensor *t, int count, const sao_optim_hyper *h);

/* ---- reduce.c: reductions and layout helpers ----------------------------------------------------
 * sum of squares of n values in double (global grad norm = sqrt of the sum over tensors); also
 * the non-finite detector (the result is inf or NaN when any value is). */
int sao_sumsq(sao_ctx *ctx, const float *x, int64_t n, double *out /* out */);
/* y[b, c, r] = x[b, r, c] (or += when accumulate): [B, R, C] -> [B, C, R], e.g. latents
 * [B, C, T] <-> tokens [B, T, C]. The backward of a transpose is the transpose back. */
int sao_transpose_forward(sao_ctx *ctx, const float *x, int64_t B, int64_t R, int64_t C,
                          int accumulate, float *y /* out */);

#ifdef __cplusplus
}
#endif
#endif

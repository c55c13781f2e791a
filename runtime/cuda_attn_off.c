/* cuda_attn_off.c — the entry points of sao_cuda_attn.h (CUDA attention and conv1d twins) in a
 * CPU-only build: each says so clearly. Compiled only when the CUDA backend is not (see the
 * Makefile); kernels/cuda/attention.cu and kernels/cuda/conv1d.cu replace it. */
#include "internal.h"
#include "sao_cuda_attn.h"

#ifndef SAO_WITH_CUDA
static const char *why = "sao was built without CUDA (no nvcc found, or CUDA=0): rebuild with the "
                         "CUDA toolkit, or call the CPU kernel (same name without cuda_)";

int sao_cuda_attention_forward(sao_ctx *ctx, const struct sao_attn_desc *a, const float *q,
                               const float *k, const float *v, const float *bias,
                               const uint8_t *key_mask, float *out, float *lse) {
    SAO_UNUSED(a); SAO_UNUSED(q); SAO_UNUSED(k); SAO_UNUSED(v); SAO_UNUSED(bias);
    SAO_UNUSED(key_mask); SAO_UNUSED(out); SAO_UNUSED(lse);
    return sao_err(ctx, "cuda_attention_forward", "%s", why);
}

int sao_cuda_attention_backward(sao_ctx *ctx, const struct sao_attn_desc *a, const float *q,
                                const float *k, const float *v, const float *bias,
                                const uint8_t *key_mask, const float *out, const float *lse,
                                const float *dout, float *dq, float *dk, float *dv, float *dbias) {
    SAO_UNUSED(a); SAO_UNUSED(q); SAO_UNUSED(k); SAO_UNUSED(v); SAO_UNUSED(bias);
    SAO_UNUSED(key_mask); SAO_UNUSED(out); SAO_UNUSED(lse); SAO_UNUSED(dout); SAO_UNUSED(dq);
    SAO_UNUSED(dk); SAO_UNUSED(dv); SAO_UNUSED(dbias);
    return sao_err(ctx, "cuda_attention_backward", "%s", why);
}

int sao_cuda_conv1d_forward(sao_ctx *ctx, const float *x, const float *w, const float *bias,
                            int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                            int stride, int padding, int dilation, int groups, float *y) {
    SAO_UNUSED(x); SAO_UNUSED(w); SAO_UNUSED(bias); SAO_UNUSED(B); SAO_UNUSED(c_in);
    SAO_UNUSED(t_in); SAO_UNUSED(c_out); SAO_UNUSED(k); SAO_UNUSED(stride); SAO_UNUSED(padding);
    SAO_UNUSED(dilation); SAO_UNUSED(groups); SAO_UNUSED(y);
    return sao_err(ctx, "cuda_conv1d_forward", "%s", why);
}

int sao_cuda_conv1d_backward(sao_ctx *ctx, const float *dy, const float *x, const float *w,
                             int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                             int stride, int padding, int dilation, int groups,
                             float *dx, float *dw, float *dbias) {
    SAO_UNUSED(dy); SAO_UNUSED(x); SAO_UNUSED(w); SAO_UNUSED(B); SAO_UNUSED(c_in);
    SAO_UNUSED(t_in); SAO_UNUSED(c_out); SAO_UNUSED(k); SAO_UNUSED(stride); SAO_UNUSED(padding);
    SAO_UNUSED(dilation); SAO_UNUSED(groups); SAO_UNUSED(dx); SAO_UNUSED(dw); SAO_UNUSED(dbias);
    return sao_err(ctx, "cuda_conv1d_backward", "%s", why);
}

int sao_cuda_conv_transpose1d_forward(sao_ctx *ctx, const float *x, const float *w,
                                      const float *bias, int64_t B, int64_t c_in, int64_t t_in,
                                      int64_t c_out, int64_t k, int stride, int padding,
                                      int output_padding, int dilation, int groups, float *y) {
    SAO_UNUSED(x); SAO_UNUSED(w); SAO_UNUSED(bias); SAO_UNUSED(B); SAO_UNUSED(c_in);
    SAO_UNUSED(t_in); SAO_UNUSED(c_out); SAO_UNUSED(k); SAO_UNUSED(stride); SAO_UNUSED(padding);
    SAO_UNUSED(output_padding); SAO_UNUSED(dilation); SAO_UNUSED(groups); SAO_UNUSED(y);
    return sao_err(ctx, "cuda_conv_transpose1d_forward", "%s", why);
}

int sao_cuda_conv_transpose1d_backward(sao_ctx *ctx, const float *dy, const float *x,
                                       const float *w, int64_t B, int64_t c_in, int64_t t_in,
                                       int64_t c_out, int64_t k, int stride, int padding,
                                       int output_padding, int dilation, int groups,
                                       float *dx, float *dw, float *dbias) {
    SAO_UNUSED(dy); SAO_UNUSED(x); SAO_UNUSED(w); SAO_UNUSED(B); SAO_UNUSED(c_in);
    SAO_UNUSED(t_in); SAO_UNUSED(c_out); SAO_UNUSED(k); SAO_UNUSED(stride); SAO_UNUSED(padding);
    SAO_UNUSED(output_padding); SAO_UNUSED(dilation); SAO_UNUSED(groups); SAO_UNUSED(dx);
    SAO_UNUSED(dw); SAO_UNUSED(dbias);
    return sao_err(ctx, "cuda_conv_transpose1d_backward", "%s", why);
}
#endif

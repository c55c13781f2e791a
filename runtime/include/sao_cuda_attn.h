/* sao_cuda_attn.h — CUDA twins of the attention and 1-D convolution kernels of sao_kernels.h
 * (kernels/cuda/attention.cu, kernels/cuda/conv1d.cu). Each sao_cuda_<op> takes exactly the
 * arguments of its CPU twin sao_<op> with DEVICE pointers (float / uint8_t buffers from
 * sao_tensor_to_cuda + sao_tensor_data), validates them the same way and follows the same
 * conventions: forward outputs overwritten, backward gradients ACCUMULATED (+=), a NULL d-buffer
 * skips that gradient. Work is queued on sao's CUDA stream (asynchronous; a copy back to the host
 * waits for it); results are deterministic (no atomics) and match the CPU kernels to fp32
 * rounding (spec/cuda_attn_spec.lua, tag gpu).
 * CUDA-only limit: attention head dim D <= 256 (larger D gets an error; use the CPU kernel).
 * Without the CUDA backend every call answers with an error saying why (runtime/cuda_load.c).
 *
 * The descriptor is named `struct sao_attn_desc` (its typedef lives in sao_kernels.h, which the
 * FFI reads after this file). */
#ifndef SAO_CUDA_ATTN_H
#define SAO_CUDA_ATTN_H
#include "sao.h"
#include "sao_kernels.h"
#ifdef __cplusplus
extern "C" {
#endif

/* Twins of sao_attention_forward / sao_attention_backward (see sao_kernels.h: strides, GQA,
 * bias [H, T, M], key_mask [B, M], lse [B, H, T]). */
int sao_cuda_attention_forward(sao_ctx *ctx, const struct sao_attn_desc *a, const float *q,
                               const float *k, const float *v, const float *bias,
                               const uint8_t *key_mask, float *out /* out */,
                               float *lse /* out, may be NULL */);
int sao_cuda_attention_backward(sao_ctx *ctx, const struct sao_attn_desc *a, const float *q,
                                const float *k, const float *v, const float *bias,
                                const uint8_t *key_mask, const float *out, const float *lse,
                                const float *dout, float *dq /* out, accumulated */,
                                float *dk /* out, accumulated */, float *dv /* out, accumulated */,
                                float *dbias /* out, accumulated */);
/* Which kernels the attention runs, process-wide (kernels/cuda/attention.cu). want: "auto" (the
 * default: in the bf16 GEMM precision mode the forward runs on bf16 tensor cores without any
 * scratch, attention_mma.cu, for D a multiple of 16 up to 128, bias and key mask included),
 * "cublas" (not that kernel: in the tf32/bf16 modes cuBLAS GEMMs through a [B, H, T, M] scratch
 * where there is no bias or mask, else the fp32 flash kernel), "flash" (the fp32 flash kernels
 * in every mode, forward and backward), "cudnn" ("auto", but the bf16 mode's forwards without
 * bias or key mask run cuDNN's fused SDPA where cuDNN makes a plan for the shape,
 * attention_cudnn.cu), or NULL / "" to only ask. Returns the setting after the call; NULL with a
 * sao error for an unknown name. */
const char *sao_cuda_attention_impl(sao_ctx *ctx, const char *want);
/* How many attention forwards cuDNN's fused SDPA has run since start (*backwards, when not NULL:
 * how many backwards); why (why_size bytes, may be NULL) gets the last shape cuDNN was refused for
 * and the reason ("" when none was; without a CUDA backend, why there is none). */
int64_t sao_cuda_sdpa_status(int64_t *backwards /* out */, char *why /* out */, size_t why_size);

/* Twins of sao_conv1d_forward / sao_conv1d_backward: x [B, C_in, T_in], w [C_out, C_in/groups, K],
 * y [B, C_out, sao_conv1d_out_len(...)]. */
int sao_cuda_conv1d_forward(sao_ctx *ctx, const float *x, const float *w, const float *bias,
                            int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                            int stride, int padding, int dilation, int groups, float *y /* out */);
int sao_cuda_conv1d_backward(sao_ctx *ctx, const float *dy, const float *x, const float *w,
                             int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                             int stride, int padding, int dilation, int groups,
                             float *dx /* out, accumulated */, float *dw /* out, accumulated */,
                             float *dbias /* out, accumulated */);

/* Twins of sao_conv_transpose1d_forward / _backward: x [B, C_in, T_in],
 * w [C_in, C_out/groups, K], y [B, C_out, sao_conv_transpose1d_out_len(...)]. */
int sao_cuda_conv_transpose1d_forward(sao_ctx *ctx, const float *x, const float *w,
                                      const float *bias, int64_t B, int64_t c_in, int64_t t_in,
                                      int64_t c_out, int64_t k, int stride, int padding,
                                      int output_padding, int dilation, int groups,
                                      float *y /* out */);
int sao_cuda_conv_transpose1d_backward(sao_ctx *ctx, const float *dy, const float *x,
                                       const float *w, int64_t B, int64_t c_in, int64_t t_in,
                                       int64_t c_out, int64_t k, int stride, int padding,
                                       int output_padding, int dilation, int groups,
                                       float *dx /* out, accumulated */,
                                       float *dw /* out, accumulated */,
                                       float *dbias /* out, accumulated */);

/* Which path the GPU convolutions take, process-wide (kernels/cuda/conv_cudnn.cu): cuDNN's
 * convolutions, or im2col + cuBLASLt GEMMs. cuDNN is loaded at run time ($SAO_CUDNN_LIB, else
 * libcudnn.so.9), never linked; the plain 1x1 convs (stride 1, no padding) always take the GEMM
 * path. want: "cudnn" (an error, with the reason, when cuDNN cannot be used), "gemm", "auto"
 * (cuDNN when it loads: the default), or NULL / "" to only ask. Returns the path in use after the
 * call, "cudnn" or "gemm"; NULL with a sao error for an unknown name. */
const char *sao_cuda_conv_backend(sao_ctx *ctx, const char *want);
/* NULL when cuDNN is loaded and usable (the first call loads it), with its version in *version
 * (cudnnGetVersion: 91900 for 9.19.0; may be NULL); otherwise why not (library not found, a
 * function missing, another major version, no handle on a device, or no CUDA backend at all),
 * *version 0. */
const char *sao_cuda_cudnn_status(int64_t *version /* out */);

#ifdef __cplusplus
}
#endif
#endif

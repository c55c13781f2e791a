// attention_mma.h — what attention.cu calls in attention_mma.cu and attention_mma_bwd.cu (the bf16
// tensor-core forward and backward).
#ifndef SAO_ATTENTION_MMA_H
#define SAO_ATTENTION_MMA_H
extern "C" {
#include "../cpu/kcheck.h"
}

// The kernel's shapes: D a multiple of 16 up to 128.
bool sao_cuda_attn_mma_fits(const sao_attn_geo *g);
// The forward (out, lse as sao_cuda_attention_forward's) after its checks: B, T, M > 0, device
// pointers; queued on sao_cuda_stream(), allocates nothing.
int sao_cuda_attn_mma_forward(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q, const float *k,
                              const float *v, const float *bias, const uint8_t *mask, float *out, float *lse);
// The backward (dq, dk, dv accumulated, as sao_cuda_attention_backward's; no dbias) after its
// checks: device pointers; D as above. Queued on sao_cuda_stream(); its one scratch, delta
// [B, H, T], comes from the caching allocator (kernels/cuda/attention_mma_bwd.cu).
int sao_cuda_attn_mma_backward(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q, const float *k,
                               const float *v, const float *bias, const uint8_t *mask, const float *out,
                               const float *lse, const float *dout, float *dq, float *dk, float *dv);
#endif

/* sao_lora.h — LoRA adapters on the DiT's block linears (runtime/dit_lora.c).
 *
 * An adapted linear computes y = x W^T + b + scale * (x A^T) B^T with A [r, in], B [out, r] and
 * scale = strength * alpha / r. Targets are the block linears, by module name:
 *   "self_attn.to_qkv" "self_attn.to_out" "cross_attn.to_q" "cross_attn.to_kv" "cross_attn.to_out"
 *   "ff.ff.0.proj" "ff.ff.2"
 * Adapter tensors are named "transformer.layers.N.<module>.lora_A.weight" / ".lora_B.weight", live
 * in their own registry (saved and loaded separately from the base), and have their own
 * gradients, which the DiT training pass fills while the base stays frozen.
 *
 * Adapters live where the model's weights do: on a model moved to a GPU (sao_dit_to_device, before
 * or after sao_dit_lora_add) they and their gradients are device tensors, and dit:to("cpu") brings
 * them back; adapter tensors bound from the host (a loaded file) are moved by
 * sao_dit_lora_place, which every forward, training pass and the Lua views call first. */
#ifndef SAO_LORA_H
#define SAO_LORA_H
#include "sao_model.h"
#ifdef __cplusplus
extern "C" {
#endif

/* Adds zero-initialised adapters (B = 0, so the model is unchanged until trained; initialise A
 * from Lua) to the modules named in `targets` (comma-separated; NULL = all seven). */
int sao_dit_lora_add(sao_ctx *ctx, sao_dit *m, int rank, double alpha, const char *targets);
int sao_dit_lora_rank(const sao_dit *m);                 /* 0 when the model has no adapters */
sao_params *sao_dit_lora_params(sao_dit *m);             /* the adapters (writable) */
sao_params *sao_dit_lora_grads(sao_dit *m);              /* their gradients (accumulated) */
int sao_dit_lora_zero_grad(sao_ctx *ctx, sao_dit *m);
/* Moves every adapter and gradient tensor not in the model's memory there (host <-> its CUDA
 * device), rebinding it; 0 with nothing to do. Views taken before a move keep the old tensors. */
int sao_dit_lora_place(sao_ctx *ctx, sao_dit *m);
int sao_dit_lora_set_strength(sao_ctx *ctx, sao_dit *m, double strength);
/* Folds the adapters into the base weights (W += strength * alpha/r * B A) and removes them.
 * The base weights must be writable (own them first: the trainer does). Runs where the model is:
 * on a device the product is fp32 whatever the GEMM precision, and the merged weights reach the
 * host tensors with dit:to("cpu") / sao_dit_sync_host. */
int sao_dit_lora_merge(sao_ctx *ctx, sao_dit *m);
void sao_dit_lora_remove(sao_dit *m);

#ifdef __cplusplus
}
#endif
#endif

/* cuda_glue.h — the device memory helpers the model code (dit.c, vae.c, t5.c) puts in its kernel
 * tables beside the sao_cuda_ kernel twins: choosing a device, row copies, zero, y += x, tanh and
 * blocking host <-> device transfers. Internal to runtime/ (not part of the FFI contract).
 * kernels/cuda/glue.cu implements them (reached through runtime/cuda_load.c, which answers
 * "built without CUDA" in a CPU-only build). Every call is queued on sao's stream except put/get, which block: the host
 * buffer may be reused (put) or read (get) as soon as they return, and get is where the errors of
 * running kernels surface. */
#ifndef SAO_CUDA_GLUE_H
#define SAO_CUDA_GLUE_H
#include "internal.h"
#include <stdint.h>

/* Checks `device` against the visible devices and makes it current; `what` ends the hint
 * ("... or keep the <what> on the CPU"). */
int sao_cuda_use(sao_ctx *ctx, const char *op, int device, const char *what);
/* rows x cols floats, pitches in floats (rows 1: one contiguous copy), device to device. */
int sao_cuda_copy_rows(sao_ctx *ctx, float *dst, int64_t dst_pitch, const float *src, int64_t src_pitch,
                       int64_t rows, int64_t cols);
int sao_cuda_zero(sao_ctx *ctx, float *dst, int64_t n);
int sao_cuda_add(sao_ctx *ctx, float *y, const float *x, int64_t n);   /* y += x */
int sao_cuda_tanh(sao_ctx *ctx, float *x, int64_t n);                  /* in place */
int sao_cuda_scale(sao_ctx *ctx, float *x, int64_t n, float s);        /* x *= s, in place */
int sao_cuda_put(sao_ctx *ctx, float *dst, const float *host_src, int64_t n);
int sao_cuda_get(sao_ctx *ctx, float *host_dst, const float *src, int64_t n);
/* A device buffer of at least `need` floats: *buf (holding *have floats) when it is large enough,
 * else a new block of the caching allocator (the old one freed; stream-ordered, so queued kernels
 * may still use it) with *have set to the block's real size. The model workspaces. */
float *sao_cuda_grow(sao_ctx *ctx, float **buf, size_t *have, size_t need);
int sao_cuda_put_bytes(sao_ctx *ctx, void *dst, const void *host_src, size_t bytes);
int sao_cuda_get_bytes(sao_ctx *ctx, void *host_dst, const void *src, size_t bytes);
/* Any direction (host or device on either side, unified addressing), blocking. */
int sao_cuda_memcpy(sao_ctx *ctx, void *dst, const void *src, size_t bytes);

/* T5's own steps (kernels/cuda/t5_glue.cu), each writing exactly what t5.c's CPU loop writes:
 * h [n, d] = table[ids[i]]; bias [H, L, L] = rel[bk[j - i + L - 1] * H + h]; rows of x [n, d]
 * with km[i] == 0 set to 0. */
int sao_cuda_t5_embed(sao_ctx *ctx, const float *table, const int64_t *ids, int64_t n, int64_t d, float *h);
int sao_cuda_t5_bias(sao_ctx *ctx, const float *rel, const int32_t *bk, int64_t H, int64_t L, float *bias);
int sao_cuda_t5_mask_rows(sao_ctx *ctx, float *x, const uint8_t *km, int64_t n, int64_t d);
#endif

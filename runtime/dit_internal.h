/* dit_internal.h — the DiT's layout shared by the inference forward (dit.c) and training
 * (dit_train.c): the parameter pointers, the per-block activation record, and the pieces of the
 * forward both use. Internal to runtime/. */
#ifndef SAO_DIT_INTERNAL_H
#define SAO_DIT_INTERNAL_H
#include "internal.h"
#include "params.h"
#include "sao_kernels.h"

typedef struct {
    float *pre_g, *qkv, *attn_out, *ca_g, *ca_q, *ca_kv, *ca_out, *ff_g, *ff_w1, *ff_b1, *ff_w2, *ff_b2;
} dit_layer;

#define DIT_LORA_SLOTS 7   /* qkv, attn out, cross q, cross kv, cross out, ff in, ff out */
typedef struct dit_lora dit_lora;

struct sao_dit {
    sao_dit_config cfg;
    sao_params *params;
    float *t_feat_w, *t_w1, *t_b1, *t_w2, *t_b2, *c_w1, *c_w2, *g_w1, *g_w2, *pre_conv, *post_conv;
    float *proj_in, *proj_out, *inv_freq;
    dit_layer *layers;
    dit_lora *lora;     /* adapters (dit_lora.c), NULL when none */
    float *ws;          /* inference workspace */
    size_t ws_size;     /* in floats */
};

/* Sizes derived from the config and a (batch, frames, context) shape. */
typedef struct {
    int64_t B, T, L, N;          /* batch, latent frames, context tokens, tokens = 1 + T */
    int64_t io, E, H, D, Dc, Dg, Hkv, F, TF, rot;
} dit_dims;
void dit_dims_init(const sao_dit *m, int64_t B, int64_t T, int64_t L, dit_dims *d);

/* What one block keeps for its backward ([B*N, ...] rows unless said). */
typedef struct {
    float *ln1, *mean1, *rstd1;   /* pre_norm output and statistics */
    float *qkv;                   /* [B*N, 3E], q and k after RoPE */
    float *att1, *lse1;           /* self-attention output [B*N, E], lse [B, H, N] */
    float *h1;                    /* residual stream after self-attention */
    float *ln2, *mean2, *rstd2;
    float *q2, *kv, *att2, *lse2; /* cross: q [B*N, E], kv [B*L, 2Dc], out, lse */
    float *h2;                    /* after cross-attention */
    float *ln3, *mean3, *rstd3;
    float *p, *g;                 /* SwiGLU in [B*N, 2F] and out [B*N, F] */
} dit_acts;
/* Floats one dit_acts needs, and laying one out from a buffer of that size. */
size_t dit_acts_size(const dit_dims *d);
void dit_acts_layout(const dit_dims *d, float *buf, dit_acts *a);

/* Embedding stage records (token layout): inputs of every linear/activation of the stem. */
typedef struct {
    float *xt, *xt2;              /* x^T [B*T, io] and x^T + pre_conv [B*T, io] */
    float *tf, *t_pre, *t_act;    /* Fourier features [B, TF]; timestep MLP hidden pre/post SiLU [B, E] */
    float *g_pre, *g_act;         /* global MLP hidden [B, E] */
    float *c_pre, *c_act, *cc;    /* cond MLP hidden [B*L, Dc] and output [B*L, Dc] */
    float *tok;                   /* the prepended token [B, E] */
} dit_stem;
size_t dit_stem_size(const dit_dims *d);
void dit_stem_layout(const dit_dims *d, float *buf, dit_stem *s);

/* x [B, io, T], t [B], cross [B, L, Dc] (or NULL when L = 0), global [B, Dg] -> h [B, N, E]. */
int dit_stem_forward(sao_ctx *ctx, const sao_dit *m, const dit_dims *d, const float *x, const float *t,
                     const float *cross, const float *global, dit_stem *s, float *h);
/* One block on h [B, N, E] in place, recording into a. */
int dit_block_forward(sao_ctx *ctx, const sao_dit *m, int i, const dit_dims *d, const float *cc,
                      float *h, dit_acts *a);
/* project_out, drop the prepended token, post_conv residual: h -> o [B*N, io] -> y [B, T, io]
 * (token layout); ot [B*T, io] is the dropped-token copy (kept for the backward). */
int dit_head_forward(sao_ctx *ctx, const sao_dit *m, const dit_dims *d, const float *h, float *o,
                     float *ot, float *y);
/* A block linear (slot DIT_LORA_SLOTS order) with its LoRA adapter when there is one. */
int dit_lin_forward(sao_ctx *ctx, const sao_dit *m, int layer, int slot, const float *x, int64_t n, int64_t in,
                    int64_t out, const float *w, const float *b, int accumulate, float *y);
/* Its backward: dx accumulated; dw/db (base) only without an adapter, else the adapter's grads. */
int dit_lin_backward(sao_ctx *ctx, const sao_dit *m, int layer, int slot, const float *dy, const float *x,
                     int64_t n, int64_t in, int64_t out, const float *w, float *dx, float *dw, float *db);
#endif

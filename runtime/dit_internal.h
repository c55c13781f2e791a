/* dit_internal.h — the DiT's layout shared by the inference forward (dit.c), training
 * (dit_train.c), LoRA (dit_lora.c) and the device code (kernels/cuda/dit_device.cu, dit_glue.cu):
 * the parameter pointers, the kernel table, the per-block activation record, and the pieces of
 * the forward both use. Internal to runtime/ (and compiled as C++ by nvcc). */
#ifndef SAO_DIT_INTERNAL_H
#define SAO_DIT_INTERNAL_H
#include "internal.h"
#include "params.h"
#include "sao_kernels.h"

/* The kernels and memory helpers the DiT forward and its training pass call, one table per
 * device: the orchestration (stem, blocks, head, CFG; dit_train.c's backward) is written once
 * against this table. Every pointer argument is memory of the table's device, except put's source
 * and get's destination, which are host memory. The kernels have exactly the sao_kernels.h
 * signatures (the CPU table points at them; the CUDA table at their sao_cuda_ twins). */
typedef struct dit_ops {
    const char *device;   /* "cpu" or "cuda" */
    int (*linear)(sao_ctx *ctx, const float *x, const float *w, const float *b, int64_t n, int64_t in,
                  int64_t out, int accumulate, float *y);
    int (*silu)(sao_ctx *ctx, const float *x, int64_t n, float *y);
    int (*fourier)(sao_ctx *ctx, const float *t, const float *w, int64_t B, int64_t f, float *y);
    int (*transpose)(sao_ctx *ctx, const float *x, int64_t B, int64_t R, int64_t C, int accumulate, float *y);
    int (*layernorm)(sao_ctx *ctx, const float *x, const float *gamma, const float *beta, int64_t n, int64_t c,
                     float eps, float *y, float *mean, float *rstd);
    int (*rope)(sao_ctx *ctx, const float *x, int64_t B, int64_t H, int64_t T, int64_t D, const int64_t *strides,
                int64_t rot_dim, int64_t pos_offset, const float *inv_freq, double base, float *y);
    int (*attention)(sao_ctx *ctx, const sao_attn_desc *a, const float *q, const float *k, const float *v,
                     const float *bias, const uint8_t *key_mask, float *out, float *lse);
    int (*swiglu)(sao_ctx *ctx, const float *p, int64_t n, int64_t f, float *y);
    /* memory: `rows` rows of `cols` floats, pitches in floats (rows 1: a plain copy) */
    int (*copy)(sao_ctx *ctx, float *dst, int64_t dst_pitch, const float *src, int64_t src_pitch, int64_t rows,
                int64_t cols);
    int (*zero)(sao_ctx *ctx, float *dst, int64_t n);
    int (*add)(sao_ctx *ctx, float *y, const float *x, int64_t n);   /* y += x */
    int (*scale)(sao_ctx *ctx, float *x, int64_t n, float s);         /* x *= s (in place) */
    /* g = unc + scale (cond - unc) over rows x io (token layout); phi != 0 then rescales each row by
     * std(cond)/std(g) (unbiased, over io, double sums): g = phi g ratio + (1 - phi) g (SAO_SPEC 5.5) */
    int (*cfg)(sao_ctx *ctx, const float *cond, const float *unc, int64_t rows, int64_t io, double scale,
               double phi, float *g);
    int (*put)(sao_ctx *ctx, float *dst, const float *host_src, int64_t n);   /* host -> this device */
    int (*get)(sao_ctx *ctx, float *host_dst, const float *src, int64_t n);   /* this device -> host */
    /* training: the backward kernels (gradients accumulate), the sum of squares (into a host
     * double), and the device's memory (alloc: NULL and a sao error when it fails) */
    int (*linear_bwd)(sao_ctx *ctx, const float *dy, const float *x, const float *w, int64_t n, int64_t in,
                      int64_t out, float *dx, float *dw, float *db);
    int (*silu_bwd)(sao_ctx *ctx, const float *dy, const float *x, int64_t n, float *dx);
    int (*swiglu_bwd)(sao_ctx *ctx, const float *dy, const float *p, int64_t n, int64_t f, float *dp);
    int (*layernorm_bwd)(sao_ctx *ctx, const float *dy, const float *x, const float *gamma, const float *mean,
                         const float *rstd, int64_t n, int64_t c, float *dx, float *dgamma, float *dbeta);
    int (*rope_bwd)(sao_ctx *ctx, const float *dy, int64_t B, int64_t H, int64_t T, int64_t D,
                    const int64_t *strides, int64_t rot_dim, int64_t pos_offset, const float *inv_freq,
                    double base, float *dx);
    int (*attention_bwd)(sao_ctx *ctx, const sao_attn_desc *a, const float *q, const float *k, const float *v,
                         const float *bias, const uint8_t *key_mask, const float *out, const float *lse,
                         const float *dout, float *dq, float *dk, float *dv, float *dbias);
    int (*fourier_bwd)(sao_ctx *ctx, const float *dy, const float *t, const float *w, int64_t B, int64_t f,
                       float *dw, float *dt);
    int (*sumsq)(sao_ctx *ctx, const float *x, int64_t n, double *out);
    float *(*alloc)(sao_ctx *ctx, size_t floats);
    void (*release)(float *p);
} dit_ops;

/* n contiguous floats, on the table's device */
static inline int dit_copy(sao_ctx *ctx, const dit_ops *ops, float *dst, const float *src, int64_t n) {
    return ops->copy(ctx, dst, n, src, n, 1, n);
}
extern const dit_ops dit_ops_cpu;
extern const dit_ops dit_ops_cuda;      /* kernels/cuda/dit_glue.cu (in libsao_cuda.so only) */

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
    /* the device the forward runs on (sao_dit_to_device, kernels/cuda/dit_device.cu) */
    const dit_ops *ops; /* &dit_ops_cpu, or the CUDA table while the weights are on a device */
    int device;         /* -1: weights on the host; else the CUDA device holding them */
    int nslots;
    float ***slots;     /* [nslots]: per parameter (registry order), the field it is bound through;
                           NULL for buffers the forward never reads (the zero LayerNorm betas) */
    float *dparams;     /* device model: one block holding every parameter of a slot */
    int64_t *doff;      /* [nslots]: offset of parameter i in dparams (floats; -1: no slot) */
    float *dws;         /* device model: the inference workspace (caching allocator) */
    int64_t dparams_n;  /* floats in dparams */
    int mirrored;       /* a bf16 copy of dparams is registered (kernels/cuda/linear.cu): the bf16
                           mode's GEMMs read it instead of rounding the weights at every call */
    int dirty;          /* device weights handed out for writing (sao_dit_device_tensor: training):
                           they may be newer than the host tensors, so leaving the device, or
                           uploading again, first copies them back (sao_dit_sync_host) */
    int keep_bf16;      /* sao_dit_keep_bf16: the bf16 mirror stays while the weights are written,
                           its writer (the optimiser, sao_cuda_adamw_multi) keeping it current */
    int bf16_stale;     /* weights written by anything else (a device LoRA merge): re-round the
                           mirror before the next forward */
    size_t dws_size;    /* in floats */
    /* CUDA graphs of the device forward (sao_dit_graphs; kernels/cuda/dit_graph.cu) */
    int graphs;                  /* asked for */
    struct dit_graph *graph;     /* the capture state, NULL until first used */
    int64_t graph_captures, graph_replays;
    char graph_why[256];         /* why capture was given up on this model ("" while it was not) */
};

/* Device glue (kernels/cuda/dit_device.cu, reached through runtime/cuda_load.c).
 * begin: before a forward on a device model: makes its device current and re-uploads every
 * parameter rebound (loaded anew) since the upload. ws: the device workspace, grown as needed.
 * release: frees the device blocks (sao_dit_free). */
int dit_device_begin(sao_ctx *ctx, sao_dit *m);
/* Before any call on the model (dit.c): weights bound, and on a device model dit_device_begin. */
int dit_begin(sao_ctx *ctx, sao_dit *m, const char *op);
float *dit_device_ws(sao_ctx *ctx, sao_dit *m, size_t floats);
/* The device weight block's layout (dit.c): parameter i of a slot at doff[i] floats (when doff is
 * not NULL; -1 for no slot), each at a multiple of 64 floats (256 B); returns the total floats. */
int64_t dit_device_layout(const sao_dit *m, int64_t *doff);
void dit_device_release(sao_dit *m);

/* The device forward as a CUDA graph (kernels/cuda/dit_graph.cu). dit.c asks begin how to run the
 * device part of a forward: EAGER (run the kernels), CAPTURING (run them: they are recorded, not
 * executed) or REPLAYED (already launched: only fetch the output); then, for EAGER or CAPTURING,
 * tells end how the run went (rc). end returns 0, 1 when the capture failed and the work must be
 * run eagerly, or -1. dit_graph_release drops the state (dit_device_release calls it). The key's
 * precision, lt and attn fields are filled in by begin. */
enum { DIT_GRAPH_EAGER = 0, DIT_GRAPH_CAPTURING = 1, DIT_GRAPH_REPLAYED = 2 };
typedef struct {
    int64_t B, T, L, Bx;
    double scale, phi;
    const float *ws, *weights;
    int precision, lt;
    const char *attn;   /* sao_cuda_attention_impl's setting (its static name) */
} dit_graph_key;
int dit_graph_begin(sao_ctx *ctx, sao_dit *m, const dit_graph_key *key);
int dit_graph_end(sao_ctx *ctx, sao_dit *m, int mode, int rc);
void dit_graph_release(sao_dit *m);

/* Sizes derived from the config and a (batch, frames, context) shape. */
typedef struct {
    int64_t B, T, L, N;          /* batch, latent frames, context tokens, tokens = 1 + T */
    int64_t Bx;                  /* the first Bx items attend to the context (B but for the CFG
                                  * forward's skipped all-zero half, SAO_SPEC 5.5) */
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
/* Stem, blocks, head and dit_lin_forward run on m->ops: every buffer they get is memory of that
 * device. */
/* A block linear (slot DIT_LORA_SLOTS order) with its LoRA adapter when there is one. */
int dit_lin_forward(sao_ctx *ctx, const sao_dit *m, int layer, int slot, const float *x, int64_t n, int64_t in,
                    int64_t out, const float *w, const float *b, int accumulate, float *y);
/* Its backward: dx accumulated; dw/db (base) only without an adapter, else the adapter's grads. */
int dit_lin_backward(sao_ctx *ctx, const sao_dit *m, int layer, int slot, const float *dy, const float *x,
                     int64_t n, int64_t in, int64_t out, const float *w, float *dx, float *dw, float *db);
#endif

/* t5.c — the T5 encoder (HF T5EncoderModel, t5-base for SAO's prompt conditioner), forward in fp32.
 * SAO_SPEC §4.1 and §12.1.2; parameter names are the HF state_dict keys.
 *
 *   h   = shared.weight[ids]                                   [B, L, d]   (no scaling)
 *   bias[h, i, j] = relative_attention_bias[bucket(j - i), h]  [H, L, L]   (block 0's table, computed
 *                                                                           once, used by every block)
 *   per block n:
 *     x  = RMSNorm(h, layer.0.layer_norm)                      eps 1e-6, no mean, no bias
 *     q, k, v = x Wq^T, x Wk^T, x Wv^T                         [B, L, H, d_kv] (no biases)
 *     a  = softmax(q k^T + bias, masked keys excluded) v       NO 1/sqrt(d_kv) scaling
 *     h += a Wo^T
 *     h += relu(RMSNorm(h, layer.1.layer_norm) Wi^T) Wo'^T     DenseReluDense (not gated)
 *   out = RMSNorm(h, encoder.final_layer_norm)                 last_hidden_state [B, L, d]
 *   SAO post-processing (zero_padding): out *= mask[..., None]
 *
 * Relative buckets (bidirectional, num_buckets 32, max_distance 128): half the buckets per
 * direction (key after query adds 16); |j - i| < 8 is its own bucket, larger distances are
 * log-spaced: 8 + int(log(n / 8) / log(128 / 8) * 8), capped at 15. Computed in float32 like HF.
 * Masking: HF adds finfo(f32).min to masked keys' logits; the attention kernel drops them (-inf);
 * in fp32 both give exactly zero weight. Padded query positions are computed like any other.
 *
 * Precision: SAO runs t5-base in fp16 (HF's fp16 guards: fp32 variance in RMSNorm, clamping of
 * inf). This file computes in fp32, the reference every fixture uses. fp16 stores ~11 significant
 * bits (unit roundoff 4.9e-4), so an fp16 run differs from this one by a few 1e-4 to 1e-3 relative
 * per element after 12 layers (an estimate from the format, not measured against real t5-base
 * weights, which are not available offline); the DiT's conditioning MLP sees that as noise.
 *
 * Devices: the forward is written once against a kernel table, t5_ops: the CPU table points at the
 * kernels/cpu functions and at the loops this file used to run inline (bit-identical to before:
 * same kernels, same workspace layout of the float buffers); the CUDA table at their sao_cuda_
 * twins, the shared helpers of runtime/cuda_glue.h and kernels/cuda/t5_glue.cu (embedding gather,
 * relative-position bias, padding rows; "built without CUDA" from runtime/cuda_load.c in a CPU-only build). After sao_t5_to_device every
 * parameter lives in ONE block of the caching allocator (each at a multiple of 64 floats), the
 * forward still takes host ids/mask and fills a host output (ids, key mask and bucket list copied
 * in, the output copied out), and the activations live in a device workspace kept between calls. */
#include "cuda_glue.h"
#include "internal.h"
#include "params.h"
#include "sao_kernels.h"
#include "sao_cuda.h"
#include "sao_cuda_ops.h"
#include "sao_cuda_attn.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float *ln0, *q, *k, *v, *o, *ln1, *wi, *wo;
} t5_block;

/* The kernels and memory helpers the forward calls, one table per device. Every pointer is memory
 * of the table's device, except put's source and get's destination (host memory). The kernels
 * have the sao_kernels.h signatures (CPU) / their sao_cuda_ twins' (CUDA). */
typedef struct t5_ops {
    const char *device;   /* "cpu" or "cuda" */
    int (*linear)(sao_ctx *ctx, const float *x, const float *w, const float *b, int64_t n, int64_t in,
                  int64_t out, int accumulate, float *y);
    int (*rmsnorm)(sao_ctx *ctx, const float *x, const float *gamma, int64_t n, int64_t c, float eps, float *y,
                   float *rstd);
    int (*attention)(sao_ctx *ctx, const sao_attn_desc *a, const float *q, const float *k, const float *v,
                     const float *bias, const uint8_t *key_mask, float *out, float *lse);
    int (*relu)(sao_ctx *ctx, const float *x, int64_t n, float *y);
    /* h [n, d] = table[ids[i]] rows (ids already checked against the vocabulary) */
    int (*embed)(sao_ctx *ctx, const float *table, const int64_t *ids, int64_t n, int64_t d, float *h);
    /* bias [H, L, L]: bias[h, i, j] = rel[bk[j - i + L - 1] * H + h] (bk: the 2L-1 buckets of j - i) */
    int (*bias)(sao_ctx *ctx, const float *rel, const int32_t *bk, int64_t H, int64_t L, float *bias);
    /* rows i of x [n, d] with km[i] == 0 set to 0 */
    int (*mask_rows)(sao_ctx *ctx, float *x, const uint8_t *km, int64_t n, int64_t d);
    int (*put)(sao_ctx *ctx, void *dst, const void *host_src, size_t bytes);   /* host -> this device */
    int (*get)(sao_ctx *ctx, void *host_dst, const void *src, size_t bytes);   /* this device -> host */
} t5_ops;


struct sao_t5 {
    sao_t5_config cfg;
    sao_params *params;
    float *shared, *rel_bias, *final_ln;
    t5_block *blocks;
    float *ws;          /* workspace, grown to the largest B*L seen */
    size_t ws_size;     /* floats */
    void *hs;           /* host staging of the key mask and the bucket list */
    size_t hs_size;     /* bytes */
    /* the device (sao_t5_to_device) */
    const t5_ops *ops;  /* &t5_ops_cpu, or &t5_ops_cuda while the weights are on a device */
    int device;         /* -1: host; else the CUDA device holding them */
    int nslots;
    float ***slots;     /* [nslots]: per parameter (registry order), the field it is bound through */
    int64_t *doff;      /* [nslots]: offset of parameter i in dparams (floats) */
    float *dparams;     /* device model: one block holding every parameter */
    float *dws;         /* device model: the workspace (caching allocator) */
    size_t dws_size;    /* floats */
};

static const t5_ops t5_ops_cpu, t5_ops_cuda;   /* defined with the forward below */

sao_params *sao_t5_params(sao_t5 *m) { return m->params; }
const sao_t5_config *sao_t5_get_config(const sao_t5 *m) { return &m->cfg; }
int sao_t5_device(const sao_t5 *m) { return m->device; }

void sao_t5_free(sao_t5 *m) {
    if (!m) return;
    /* stream-ordered (alloc.cu): safe while queued kernels still read the blocks; NULL off a device */
    sao_cuda_free(m->dparams);
    sao_cuda_free(m->dws);
    sao_params_free(m->params);
    free(m->blocks);
    free(m->ws);
    free(m->hs);
    free(m->slots);
    free(m->doff);
    free(m);
}

/* parameters: shared, the relative bias table, 8 per block, the final norm */
#define T5_NPARAMS(c) (3 + 8 * (int)(c)->num_layers)

/* records the field parameter nslots is bound through (registry order) */
static int track(sao_t5 *m, float **slot) {
    if (m->nslots >= T5_NPARAMS(&m->cfg)) return -1;   /* cannot happen: the count below is exact */
    m->slots[m->nslots++] = slot;
    return 0;
}

#define SHAPE(...) (const int64_t[]){__VA_ARGS__}
#define ADD(slot, nd, shp, ...) \
    do { if (sao_params_add(m->params, slot, nd, shp, __VA_ARGS__) || track(m, slot)) goto oom; } while (0)

sao_t5 *sao_t5_new(sao_ctx *ctx, const sao_t5_config *cfg) {
    const char *op = "t5_new";
    if (!cfg) return sao_err_null(ctx, op, "config is NULL");
    if (cfg->vocab_size <= 0 || cfg->d_model <= 0 || cfg->d_kv <= 0 || cfg->num_heads <= 0 || cfg->d_ff <= 0 ||
        cfg->num_layers <= 0 || cfg->num_buckets < 2 || cfg->max_distance < 1)
        return sao_err_null(ctx, op, "config has a non-positive size (vocab %lld d_model %lld d_kv %lld heads %lld "
                            "d_ff %lld layers %lld buckets %lld max_distance %lld)",
                            (long long)cfg->vocab_size, (long long)cfg->d_model, (long long)cfg->d_kv,
                            (long long)cfg->num_heads, (long long)cfg->d_ff, (long long)cfg->num_layers,
                            (long long)cfg->num_buckets, (long long)cfg->max_distance);
    sao_t5 *m = calloc(1, sizeof *m);
    if (!m) return sao_err_null(ctx, op, "out of memory");
    m->cfg = *cfg;
    m->ops = &t5_ops_cpu;
    m->device = -1;
    if (!(m->cfg.eps > 0)) m->cfg.eps = 1e-6f;
    m->params = sao_params_new("t5");
    m->blocks = calloc((size_t)cfg->num_layers, sizeof *m->blocks);
    m->slots = calloc((size_t)T5_NPARAMS(cfg), sizeof *m->slots);
    if (!m->params || !m->blocks || !m->slots) goto oom;
    int64_t d = cfg->d_model, inner = cfg->num_heads * cfg->d_kv, ff = cfg->d_ff;
    ADD(&m->shared, 2, SHAPE(cfg->vocab_size, d), "shared.weight");
    for (int64_t n = 0; n < cfg->num_layers; n++) {
        t5_block *b = &m->blocks[n];
        ADD(&b->q, 2, SHAPE(inner, d), "encoder.block.%lld.layer.0.SelfAttention.q.weight", (long long)n);
        ADD(&b->k, 2, SHAPE(inner, d), "encoder.block.%lld.layer.0.SelfAttention.k.weight", (long long)n);
        ADD(&b->v, 2, SHAPE(inner, d), "encoder.block.%lld.layer.0.SelfAttention.v.weight", (long long)n);
        ADD(&b->o, 2, SHAPE(d, inner), "encoder.block.%lld.layer.0.SelfAttention.o.weight", (long long)n);
        if (n == 0)
            ADD(&m->rel_bias, 2, SHAPE(cfg->num_buckets, cfg->num_heads),
                "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
        ADD(&b->ln0, 1, SHAPE(d), "encoder.block.%lld.layer.0.layer_norm.weight", (long long)n);
        ADD(&b->wi, 2, SHAPE(ff, d), "encoder.block.%lld.layer.1.DenseReluDense.wi.weight", (long long)n);
        ADD(&b->wo, 2, SHAPE(d, ff), "encoder.block.%lld.layer.1.DenseReluDense.wo.weight", (long long)n);
        ADD(&b->ln1, 1, SHAPE(d), "encoder.block.%lld.layer.1.layer_norm.weight", (long long)n);
    }
    ADD(&m->final_ln, 1, SHAPE(d), "encoder.final_layer_norm.weight");
    return m;
oom:
    sao_t5_free(m);
    return sao_err_null(ctx, op, "out of memory");
}

/* HF T5Attention._relative_position_bucket(bidirectional=True) in float32. */
static int64_t bucket_of(int64_t rel, int64_t num_buckets, int64_t max_distance) {
    int64_t nb = num_buckets / 2, ret = rel > 0 ? nb : 0;
    int64_t n = rel < 0 ? -rel : rel;
    int64_t max_exact = nb / 2;
    if (n < max_exact) return ret + n;
    float ratio = logf((float)n / (float)max_exact) / (float)log((double)max_distance / (double)max_exact);
    int64_t large = max_exact + (int64_t)(ratio * (float)(nb - max_exact));
    if (large > nb - 1) large = nb - 1;
    return ret + large;
}

int sao_t5_relative_buckets(sao_ctx *ctx, int64_t T, int64_t num_buckets, int64_t max_distance, int64_t *out) {
    if (T < 0 || num_buckets < 4 || max_distance < 1 || !out)
        return sao_err(ctx, "t5_relative_buckets", "bad arguments T=%lld buckets=%lld max_distance=%lld",
                       (long long)T, (long long)num_buckets, (long long)max_distance);
    for (int64_t i = 0; i < T; i++)
        for (int64_t j = 0; j < T; j++) out[i * T + j] = bucket_of(j - i, num_buckets, max_distance);
    return 0;
}

/* ---- the workspace ----------------------------------------------------------------------------
 * floats: h, x [N,d]; q, k, v, a [N,inner]; f [N,ff]; bias [H,L,L]; then ids (int64 [N]), the key
 * mask (bytes [N]) and the bucket list (int32 [2L-1]). Each region starts at a multiple of `al`
 * floats: 1 on the CPU (the float regions where they always were), 64 on a device (cuBLASLt's
 * preferred 256-byte alignment). */
typedef struct {
    float *h, *x, *q, *k, *v, *a, *f, *bias;
    int64_t *ids;
    uint8_t *km;
    int32_t *bk;
} t5_bufs;

static size_t t5_layout(const sao_t5 *m, int64_t B, int64_t L, int64_t al, float *base, t5_bufs *w) {
    const sao_t5_config *c = &m->cfg;
    const int64_t N = B * L, d = c->d_model, inner = c->num_heads * c->d_kv, ff = c->d_ff, H = c->num_heads;
    int64_t off = 0;
#define T5_REGION(field, type, floats, align)                                  \
    do {                                                                       \
        int64_t a_ = (align);                                                  \
        off = (off + a_ - 1) / a_ * a_;                                        \
        w->field = base ? (type *)(base + off) : NULL;                         \
        off += (floats);                                                       \
    } while (0)
    T5_REGION(h, float, N * d, al);
    T5_REGION(x, float, N * d, al);
    T5_REGION(q, float, N * inner, al);
    T5_REGION(k, float, N * inner, al);
    T5_REGION(v, float, N * inner, al);
    T5_REGION(a, float, N * inner, al);
    T5_REGION(f, float, N * ff, al);
    T5_REGION(bias, float, H * L * L, al);
    T5_REGION(ids, int64_t, 2 * N, al > 2 ? al : 2);
    T5_REGION(km, uint8_t, (N + 3) / 4, al);
    T5_REGION(bk, int32_t, 2 * L - 1, al);
#undef T5_REGION
    return (size_t)off;
}

static float *ws_get(sao_ctx *ctx, sao_t5 *m, const char *op, size_t need, int64_t B, int64_t L) {
    if (need > m->ws_size) {
        float *w = realloc(m->ws, need * sizeof(float));
        if (!w) return sao_err_null(ctx, op, "out of memory for a %zu-float workspace (B=%lld L=%lld)", need,
                                    (long long)B, (long long)L);
        m->ws = w;
        m->ws_size = need;
    }
    return m->ws;
}

/* the device workspace of a device model: one block of the caching allocator, grown as needed */
static float *dws_get(sao_ctx *ctx, sao_t5 *m, size_t need) { return sao_cuda_grow(ctx, &m->dws, &m->dws_size, need); }

/* ---- the weights on a device ------------------------------------------------------------------
 * Every parameter goes into ONE block (each at a multiple of 64 floats, registry order) and the
 * model's fields are re-pointed into it; the host tensors stay in the registry. A parameter bound
 * anew after the upload shows up as a field that no longer points into the block: the next forward
 * uploads it. An in-place edit of a host tensor is seen only when sao_t5_to_device runs again. */
static int64_t param_numel(const sao_params *p, int i) {
    int64_t n = 1;
    const int64_t *s = sao_params_shape(p, i);
    for (int k = 0; k < sao_params_ndim(p, i); k++) n *= s[k];
    return n;
}

static int upload(sao_ctx *ctx, sao_t5 *m, int i, float *blk) {
    const sao_tensor *t = sao_params_tensor(m->params, i);
    return sao_cuda_put_bytes(ctx, blk + m->doff[i], sao_tensor_data(t), (size_t)param_numel(m->params, i) * sizeof(float));
}

int sao_t5_to_host(sao_ctx *ctx, sao_t5 *m) {
    SAO_UNUSED(ctx);
    if (!m || m->device < 0) return 0;
    for (int i = 0; i < m->nslots; i++) {
        const sao_tensor *t = sao_params_tensor(m->params, i);
        *m->slots[i] = t ? (float *)sao_tensor_data(t) : NULL;
    }
    /* freeing is stream-ordered (alloc.cu): queued kernels that still read the blocks finish first */
    sao_cuda_free(m->dparams);
    sao_cuda_free(m->dws);
    m->dparams = NULL;
    m->dws = NULL;
    m->dws_size = 0;
    m->ops = &t5_ops_cpu;
    m->device = -1;
    return 0;
}

int sao_t5_to_device(sao_ctx *ctx, sao_t5 *m, int device) {
    const char *op = "t5_to_device";
    if (!m) return sao_err(ctx, op, "NULL model");
    if (sao_cuda_use(ctx, op, device, "encoder")) return -1;
    if (m->nslots != sao_params_count(m->params))
        return sao_err(ctx, op, "internal: %d slots for %d parameters", m->nslots, sao_params_count(m->params));
    if (!m->shared) return sao_err(ctx, op, "the encoder has no weights bound (load a checkpoint first)");
    if (sao_params_check(ctx, m->params)) return -1;
    if (m->device >= 0 && m->device != device) {   /* another device: move */
        if (sao_t5_to_host(ctx, m) || sao_cuda_use(ctx, op, device, "encoder")) return -1;
    }
    if (!m->doff) {
        if (!(m->doff = malloc((size_t)m->nslots * sizeof *m->doff))) return sao_err(ctx, op, "out of memory");
        int64_t total = 0;
        for (int i = 0; i < m->nslots; i++) {
            m->doff[i] = total;
            total += (param_numel(m->params, i) + 63) / 64 * 64;
        }
    }
    float *blk = m->dparams;
    if (!blk) {
        int64_t total = 0;
        for (int i = 0; i < m->nslots; i++) total += (param_numel(m->params, i) + 63) / 64 * 64;
        void *p = NULL;
        if (sao_cuda_malloc(ctx, (size_t)total * sizeof(float), &p)) return -1;
        blk = (float *)p;
    }
    /* again on its own device: every weight anew, so in-place edits of the host tensors arrive */
    for (int i = 0; i < m->nslots; i++)
        if (upload(ctx, m, i, blk)) {
            if (blk != m->dparams) sao_cuda_free(blk);
            return -1;
        }
    for (int i = 0; i < m->nslots; i++) *m->slots[i] = blk + m->doff[i];
    m->dparams = blk;
    m->device = device;
    m->ops = &t5_ops_cuda;
    free(m->ws);   /* the host workspace is not used by a device model */
    m->ws = NULL;
    m->ws_size = 0;
    return 0;
}

/* before a forward on a device model: its device current, and every parameter rebound since the
 * upload (its field points at a host tensor again) uploaded into its place */
static int device_begin(sao_ctx *ctx, sao_t5 *m, const char *op) {
    if (sao_cuda_use(ctx, op, m->device, "encoder")) return -1;
    for (int i = 0; i < m->nslots; i++) {
        float *want = m->dparams + m->doff[i];
        if (*m->slots[i] == want) continue;
        if (upload(ctx, m, i, m->dparams)) return -1;
        *m->slots[i] = want;
    }
    return 0;
}

/* ---- the kernel tables ---------------------------------------------------------------------- */

static int cpu_embed(sao_ctx *ctx, const float *table, const int64_t *ids, int64_t n, int64_t d, float *h) {
    SAO_UNUSED(ctx);
    for (int64_t i = 0; i < n; i++) memcpy(h + i * d, table + ids[i] * d, (size_t)d * sizeof(float));
    return 0;
}

static int cpu_bias(sao_ctx *ctx, const float *rel, const int32_t *bk, int64_t H, int64_t L, float *bias) {
    SAO_UNUSED(ctx);
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++) {
            int64_t b = bk[j - i + L - 1];
            for (int64_t hh = 0; hh < H; hh++) bias[(hh * L + i) * L + j] = rel[b * H + hh];
        }
    return 0;
}

static int cpu_mask_rows(sao_ctx *ctx, float *x, const uint8_t *km, int64_t n, int64_t d) {
    SAO_UNUSED(ctx);
    for (int64_t i = 0; i < n; i++)
        if (!km[i]) memset(x + i * d, 0, (size_t)d * sizeof(float));
    return 0;
}

static int cpu_move(sao_ctx *ctx, void *dst, const void *src, size_t bytes) {
    SAO_UNUSED(ctx);
    if (bytes) memcpy(dst, src, bytes);
    return 0;
}

static const t5_ops t5_ops_cpu = {
    "cpu", sao_linear_forward, sao_rmsnorm_forward, sao_attention_forward, sao_relu_forward,
    cpu_embed, cpu_bias, cpu_mask_rows, cpu_move, cpu_move,
};

/* In a CPU-only build the sao_cuda_ twins and the glue (cuda_glue.h) are stubs that say so; this
 * table is never chosen there (sao_t5_to_device fails first). */
static const t5_ops t5_ops_cuda = {
    "cuda", sao_cuda_linear_forward, sao_cuda_rmsnorm_forward, sao_cuda_attention_forward, sao_cuda_relu_forward,
    sao_cuda_t5_embed, sao_cuda_t5_bias, sao_cuda_t5_mask_rows, sao_cuda_put_bytes, sao_cuda_get_bytes,
};

/* ---- the forward (on m->ops: every buffer is memory of m's device) ---------------------------- */

int sao_t5_forward(sao_ctx *ctx, sao_t5 *m, const int64_t *ids, const int64_t *mask, int64_t B, int64_t L,
                   int zero_padding, float *out) {
    const char *op = "t5_forward";
    if (!m || !ids || !out) return sao_err(ctx, op, "NULL model, ids or output");
    if (B < 1 || L < 1) return sao_err(ctx, op, "bad shape B=%lld L=%lld", (long long)B, (long long)L);
    if (sao_params_check(ctx, m->params)) return -1;
    const sao_t5_config *c = &m->cfg;
    const int64_t d = c->d_model, H = c->num_heads, D = c->d_kv, inner = H * D, ff = c->d_ff, N = B * L;
    for (int64_t i = 0; i < N; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return sao_err(ctx, op, "token id %lld at [%lld, %lld] is outside the vocabulary [0, %lld) "
                           "(tokenizer and weights from different models?)", (long long)ids[i],
                           (long long)(i / L), (long long)(i % L), (long long)c->vocab_size);
    const int dev = m->device >= 0;
    if (dev && device_begin(ctx, m, op)) return -1;
    const t5_ops *o = m->ops;
    const int64_t al = dev ? 64 : 1;
    t5_bufs w;
    size_t need = t5_layout(m, B, L, al, NULL, &w);
    float *base = dev ? dws_get(ctx, m, need) : ws_get(ctx, m, op, need, B, L);
    if (!base) return -1;
    t5_layout(m, B, L, al, base, &w);

    /* host staging: the key mask (bytes [N]) and the bucket of every j - i (int32 [2L-1]) */
    size_t km_bytes = (size_t)(N + 3) / 4 * 4, hneed = km_bytes + (size_t)(2 * L - 1) * sizeof(int32_t);
    if (hneed > m->hs_size) {
        void *p = realloc(m->hs, hneed);
        if (!p) return sao_err(ctx, op, "out of memory (B=%lld L=%lld)", (long long)B, (long long)L);
        m->hs = p;
        m->hs_size = hneed;
    }
    uint8_t *hkm = m->hs;
    int32_t *hbk = (int32_t *)((char *)m->hs + km_bytes);
    for (int64_t i = 0; i < N; i++) hkm[i] = mask ? mask[i] != 0 : 1;
    for (int64_t r = 0; r < 2 * L - 1; r++) hbk[r] = (int32_t)bucket_of(r - (L - 1), c->num_buckets, c->max_distance);

    if (o->put(ctx, w.ids, ids, (size_t)N * sizeof(int64_t)) || o->put(ctx, w.km, hkm, (size_t)N) ||
        o->put(ctx, w.bk, hbk, (size_t)(2 * L - 1) * sizeof(int32_t)) ||
        o->embed(ctx, m->shared, w.ids, N, d, w.h) || o->bias(ctx, m->rel_bias, w.bk, H, L, w.bias))
        return -1;
    /* q/k/v/a are [B, L, H, D]: strides (batch, head, token) = (L*H*D, D, H*D) */
    sao_attn_desc ad = { .B = B, .H = H, .Hkv = H, .T = L, .M = L, .D = D, .scale = 1.0,
                         .q_stride = { L * inner, D, inner }, .k_stride = { L * inner, D, inner },
                         .v_stride = { L * inner, D, inner }, .o_stride = { L * inner, D, inner } };
    const float eps = c->eps;
    float *h = w.h, *x = w.x, *f = w.f;
    for (int64_t n = 0; n < c->num_layers; n++) {
        const t5_block *b = &m->blocks[n];
        if (sao_interrupt_pending()) return sao_err(ctx, op, "interrupted");
        if (o->rmsnorm(ctx, h, b->ln0, N, d, eps, x, NULL) ||
            o->linear(ctx, x, b->q, NULL, N, d, inner, 0, w.q) ||
            o->linear(ctx, x, b->k, NULL, N, d, inner, 0, w.k) ||
            o->linear(ctx, x, b->v, NULL, N, d, inner, 0, w.v) ||
            o->attention(ctx, &ad, w.q, w.k, w.v, w.bias, w.km, w.a, NULL) ||
            o->linear(ctx, w.a, b->o, NULL, N, inner, d, 1, h) ||
            o->rmsnorm(ctx, h, b->ln1, N, d, eps, x, NULL) ||
            o->linear(ctx, x, b->wi, NULL, N, d, ff, 0, f) ||
            o->relu(ctx, f, N * ff, f) ||
            o->linear(ctx, f, b->wo, NULL, N, ff, d, 1, h))
            return -1;
    }
    /* the CPU writes the output in place; a device model into x, then copied out */
    float *y = dev ? x : out;
    if (o->rmsnorm(ctx, h, m->final_ln, N, d, eps, y, NULL)) return -1;
    if (zero_padding && o->mask_rows(ctx, y, w.km, N, d)) return -1;
    if (dev && o->get(ctx, out, y, (size_t)(N * d) * sizeof(float))) return -1;
    return 0;
}

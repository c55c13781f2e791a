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
 * weights, which are not available offline); the DiT's conditioning MLP sees that as noise. */
#include "internal.h"
#include "params.h"
#include "sao_kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float *ln0, *q, *k, *v, *o, *ln1, *wi, *wo;
} t5_block;

struct sao_t5 {
    sao_t5_config cfg;
    sao_params *params;
    float *shared, *rel_bias, *final_ln;
    t5_block *blocks;
    float *ws;          /* workspace, grown to the largest B*L seen */
    size_t ws_size;     /* floats */
};

sao_params *sao_t5_params(sao_t5 *m) { return m->params; }
const sao_t5_config *sao_t5_get_config(const sao_t5 *m) { return &m->cfg; }

void sao_t5_free(sao_t5 *m) {
    if (!m) return;
    sao_params_free(m->params);
    free(m->blocks);
    free(m->ws);
    free(m);
}

#define SHAPE(...) (const int64_t[]){__VA_ARGS__}
#define ADD(slot, nd, shp, ...) \
    do { if (sao_params_add(m->params, slot, nd, shp, __VA_ARGS__)) goto oom; } while (0)

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
    if (!(m->cfg.eps > 0)) m->cfg.eps = 1e-6f;
    m->params = sao_params_new("t5");
    m->blocks = calloc((size_t)cfg->num_layers, sizeof *m->blocks);
    if (!m->params || !m->blocks) goto oom;
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
    /* workspace: h, x [N,d]; q, k, v, a [N,inner]; f [N,ff]; bias [H,L,L]; key mask bytes */
    size_t need = (size_t)(2 * N * d + 4 * N * inner + N * ff + H * L * L) + (size_t)(N + 3) / 4;
    if (need > m->ws_size) {
        float *w = realloc(m->ws, need * sizeof(float));
        if (!w) return sao_err(ctx, op, "out of memory for a %zu-float workspace (B=%lld L=%lld)", need,
                               (long long)B, (long long)L);
        m->ws = w;
        m->ws_size = need;
    }
    float *h = m->ws, *x = h + N * d, *q = x + N * d, *k = q + N * inner, *v = k + N * inner;
    float *a = v + N * inner, *f = a + N * inner, *bias = f + N * ff;
    uint8_t *km = (uint8_t *)(bias + H * L * L);
    for (int64_t i = 0; i < N; i++) {
        km[i] = mask ? mask[i] != 0 : 1;
        memcpy(h + i * d, m->shared + ids[i] * d, (size_t)d * sizeof(float));
    }
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++) {
            int64_t bk = bucket_of(j - i, c->num_buckets, c->max_distance);
            for (int64_t hh = 0; hh < H; hh++) bias[(hh * L + i) * L + j] = m->rel_bias[bk * H + hh];
        }
    /* q/k/v/a are [B, L, H, D]: strides (batch, head, token) = (L*H*D, D, H*D) */
    sao_attn_desc ad = { .B = B, .H = H, .Hkv = H, .T = L, .M = L, .D = D, .scale = 1.0,
                         .q_stride = { L * inner, D, inner }, .k_stride = { L * inner, D, inner },
                         .v_stride = { L * inner, D, inner }, .o_stride = { L * inner, D, inner } };
    const float eps = c->eps;
    for (int64_t n = 0; n < c->num_layers; n++) {
        const t5_block *b = &m->blocks[n];
        if (sao_interrupt_pending()) return sao_err(ctx, op, "interrupted");
        if (sao_rmsnorm_forward(ctx, h, b->ln0, N, d, eps, x, NULL) ||
            sao_linear_forward(ctx, x, b->q, NULL, N, d, inner, 0, q) ||
            sao_linear_forward(ctx, x, b->k, NULL, N, d, inner, 0, k) ||
            sao_linear_forward(ctx, x, b->v, NULL, N, d, inner, 0, v) ||
            sao_attention_forward(ctx, &ad, q, k, v, bias, km, a, NULL) ||
            sao_linear_forward(ctx, a, b->o, NULL, N, inner, d, 1, h) ||
            sao_rmsnorm_forward(ctx, h, b->ln1, N, d, eps, x, NULL) ||
            sao_linear_forward(ctx, x, b->wi, NULL, N, d, ff, 0, f) ||
            sao_relu_forward(ctx, f, N * ff, f) ||
            sao_linear_forward(ctx, f, b->wo, NULL, N, ff, d, 1, h))
            return -1;
    }
    if (sao_rmsnorm_forward(ctx, h, m->final_ln, N, d, eps, out, NULL)) return -1;
    if (zero_padding)
        for (int64_t i = 0; i < N; i++)
            if (!km[i]) memset(out + i * d, 0, (size_t)d * sizeof(float));
    return 0;
}

/* dit.c — the SAO Diffusion Transformer forward pass (stable-audio-tools DiffusionTransformer,
 * continuous transformer, global conditioning prepended as one token). SAO_SPEC §5.
 *
 *   x [B, io, T] (noisy latent, already scaled by c_in), t [B], cross [B, L, Dc], global [B, Dg]
 *   c   = to_cond_embed(cross)              SiLU MLP, no biases            [B, L, Dc]
 *   tok = to_timestep_embed([cos, sin](2π t w)) + to_global_embed(global)  [B, E]
 *   h   = [tok ; project_in(x + pre_conv(x))^T]                            [B, 1+T, E]
 *   per block: h += SelfAttn(LN(h)) with partial RoPE; h += CrossAttn(LN(h), c) with grouped K/V;
 *              h += W2 (a * silu(gate)) where [a|gate] = W1 LN(h) + b1
 *   o   = project_out(h)[:, 1:]^T; out = o + post_conv(o)                  [B, io, T]
 * CFG (scale != 1): the batch is doubled; the second half gets the same global token and either
 * the negative context or none: a zero context gives K = V = 0 (no biases), so its cross-attention
 * adds exactly 0 and is skipped (SAO_SPEC 5.5; 5.7 % of the CFG forward's FLOPs at SAO's shape);
 * out = uncond + scale (cond - uncond), optionally rescaled (scale_phi).
 * All work buffers live in one workspace sized from (config, B, T, L) and reused across calls.
 *
 * Devices: the forward calls its kernels through m->ops (dit_internal.h), the CPU kernels here or
 * their CUDA twins once sao_dit_to_device has put the weights on a GPU (kernels/cuda/dit_device.cu).
 * The public entry points take host pointers either way: the inputs are put into the workspace
 * (host or device) and out/hidden fetched from it, so one orchestration serves both. */
#include "dit_internal.h"
#include "sao_lora.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

sao_params *sao_dit_params(sao_dit *m) { return m->params; }
const sao_dit_config *sao_dit_get_config(const sao_dit *m) { return &m->cfg; }

int sao_dit_device(const sao_dit *m) { return m->device; }
void sao_dit_weights_written(sao_dit *m) { m->bf16_stale = 1; }

int64_t dit_device_layout(const sao_dit *m, int64_t *doff) {
    const int64_t align = 64;   /* floats: 256 B, cuBLASLt's preferred alignment */
    int64_t total = 0;
    for (int i = 0; i < m->nslots; i++) {
        if (doff) doff[i] = m->slots[i] ? total : -1;
        if (!m->slots[i]) continue;
        int64_t n = 1;
        const int64_t *shp = sao_params_shape(m->params, i);
        for (int k = 0; k < sao_params_ndim(m->params, i); k++) n *= shp[k];
        total += (n + align - 1) / align * align;
    }
    return total;
}

int64_t sao_dit_device_block_bytes(const sao_dit *m) { return dit_device_layout(m, NULL) * (int64_t)sizeof(float); }

void sao_dit_free(sao_dit *m) {
    if (!m) return;
    dit_device_release(m);
    sao_dit_lora_remove(m);
    sao_params_free(m->params);
    free(m->layers);
    free(m->ws);
    free(m->slots);
    free(m->doff);
    free(m);
}

/* Records parameter i's field (registry order), so the device code can re-point it. */
static int add_slot(sao_dit *m, float **slot) {
    int n = m->nslots;
    if (n == 0 || (n >= 64 && (n & (n - 1)) == 0)) {   /* capacity 64, then doubled when full */
        float ***v = realloc(m->slots, (size_t)(n ? 2 * n : 64) * sizeof *v);
        if (!v) return -1;
        m->slots = v;
    }
    m->slots[m->nslots++] = slot;
    return 0;
}

#define SHAPE(...) (const int64_t[]){__VA_ARGS__}
#define ADD(slot, nd, shp, ...) \
    do { if (sao_params_add(m->params, slot, nd, shp, __VA_ARGS__) || add_slot(m, slot)) goto oom; } while (0)

sao_dit *sao_dit_new(sao_ctx *ctx, const sao_dit_config *cfg) {
    const char *op = "dit_new";
    int64_t io = cfg->io_channels, E = cfg->embed_dim, Dc = cfg->cond_token_dim, Dg = cfg->global_cond_dim;
    int64_t H = cfg->num_heads;
    if (io <= 0 || E <= 0 || cfg->depth <= 0 || H <= 0 || Dc <= 0 || Dg <= 0)
        return sao_err_null(ctx, op, "config has a non-positive size");
    if (E % H) return sao_err_null(ctx, op, "embed_dim %lld is not a multiple of num_heads %lld", (long long)E, (long long)H);
    int64_t D = E / H;
    if (Dc % D) return sao_err_null(ctx, op, "cond_token_dim %lld is not a multiple of the head dim %lld", (long long)Dc, (long long)D);
    int64_t Hkv = Dc / D;
    if (H % Hkv) return sao_err_null(ctx, op, "num_heads %lld is not a multiple of the %lld cross-attention K/V heads", (long long)H, (long long)Hkv);
    int64_t rot = D / 2 > 32 ? D / 2 : 32;
    if (rot > D) return sao_err_null(ctx, op, "rotary width %lld exceeds the head dim %lld (upstream needs head dim >= 32)", (long long)rot, (long long)D);
    int64_t F = cfg->ff_mult * E, TF = cfg->timestep_features_dim > 0 ? cfg->timestep_features_dim : 256;

    sao_dit *m = calloc(1, sizeof *m);
    if (!m) return sao_err_null(ctx, op, "out of memory");
    m->cfg = *cfg;
    m->cfg.timestep_features_dim = (int)TF;
    m->ops = &dit_ops_cpu;
    m->device = -1;
    m->params = sao_params_new("dit");
    m->layers = calloc((size_t)cfg->depth, sizeof *m->layers);
    if (!m->params || !m->layers) goto oom;

    ADD(&m->t_feat_w, 2, SHAPE(TF / 2, 1), "timestep_features.weight");
    ADD(&m->t_w1, 2, SHAPE(E, TF), "to_timestep_embed.0.weight");
    ADD(&m->t_b1, 1, SHAPE(E), "to_timestep_embed.0.bias");
    ADD(&m->t_w2, 2, SHAPE(E, E), "to_timestep_embed.2.weight");
    ADD(&m->t_b2, 1, SHAPE(E), "to_timestep_embed.2.bias");
    ADD(&m->c_w1, 2, SHAPE(Dc, Dc), "to_cond_embed.0.weight");
    ADD(&m->c_w2, 2, SHAPE(Dc, Dc), "to_cond_embed.2.weight");
    ADD(&m->g_w1, 2, SHAPE(E, Dg), "to_global_embed.0.weight");
    ADD(&m->g_w2, 2, SHAPE(E, E), "to_global_embed.2.weight");
    ADD(&m->pre_conv, 3, SHAPE(io, io, 1), "preprocess_conv.weight");
    ADD(&m->post_conv, 3, SHAPE(io, io, 1), "postprocess_conv.weight");
    ADD(&m->proj_in, 2, SHAPE(E, io), "transformer.project_in.weight");
    ADD(&m->proj_out, 2, SHAPE(io, E), "transformer.project_out.weight");
    ADD(&m->inv_freq, 1, SHAPE(rot / 2), "transformer.rotary_pos_emb.inv_freq");
    sao_params_optional(m->params);   /* a buffer: recomputed (base 10000) when absent */
    for (int i = 0; i < cfg->depth; i++) {
        dit_layer *l = &m->layers[i];
        const char *pfx = "transformer.layers";
        ADD(&l->pre_g, 1, SHAPE(E), "%s.%d.pre_norm.gamma", pfx, i);
        ADD(NULL, 1, SHAPE(E), "%s.%d.pre_norm.beta", pfx, i);
        sao_params_optional(m->params);
        ADD(&l->qkv, 2, SHAPE(3 * E, E), "%s.%d.self_attn.to_qkv.weight", pfx, i);
        ADD(&l->attn_out, 2, SHAPE(E, E), "%s.%d.self_attn.to_out.weight", pfx, i);
        ADD(&l->ca_g, 1, SHAPE(E), "%s.%d.cross_attend_norm.gamma", pfx, i);
        ADD(NULL, 1, SHAPE(E), "%s.%d.cross_attend_norm.beta", pfx, i);
        sao_params_optional(m->params);
        ADD(&l->ca_q, 2, SHAPE(E, E), "%s.%d.cross_attn.to_q.weight", pfx, i);
        ADD(&l->ca_kv, 2, SHAPE(2 * Dc, Dc), "%s.%d.cross_attn.to_kv.weight", pfx, i);
        ADD(&l->ca_out, 2, SHAPE(E, E), "%s.%d.cross_attn.to_out.weight", pfx, i);
        ADD(&l->ff_g, 1, SHAPE(E), "%s.%d.ff_norm.gamma", pfx, i);
        ADD(NULL, 1, SHAPE(E), "%s.%d.ff_norm.beta", pfx, i);
        sao_params_optional(m->params);
        ADD(&l->ff_w1, 2, SHAPE(2 * F, E), "%s.%d.ff.ff.0.proj.weight", pfx, i);
        ADD(&l->ff_b1, 1, SHAPE(2 * F), "%s.%d.ff.ff.0.proj.bias", pfx, i);
        ADD(&l->ff_w2, 2, SHAPE(E, F), "%s.%d.ff.ff.2.weight", pfx, i);
        ADD(&l->ff_b2, 1, SHAPE(E), "%s.%d.ff.ff.2.bias", pfx, i);
    }
    return m;
oom:
    sao_dit_free(m);
    return sao_err_null(ctx, op, "out of memory building the parameter registry");
}

void dit_dims_init(const sao_dit *m, int64_t B, int64_t T, int64_t L, dit_dims *d) {
    const sao_dit_config *c = &m->cfg;
    d->B = B; d->Bx = B; d->T = T; d->L = L; d->N = T + 1;
    d->io = c->io_channels; d->E = c->embed_dim; d->H = c->num_heads; d->D = d->E / d->H;
    d->Dc = c->cond_token_dim; d->Dg = c->global_cond_dim; d->Hkv = d->Dc / d->D;
    d->F = (int64_t)c->ff_mult * d->E; d->TF = c->timestep_features_dim;
    d->rot = d->D / 2 > 32 ? d->D / 2 : 32;
}

/* Lays out consecutive arrays from buf: each (float **ptr, count) pair in order. */
static float *carve(float *buf, float **p, size_t n) { *p = buf; return buf + n; }

size_t dit_acts_size(const dit_dims *d) {
    size_t BN = (size_t)(d->B * d->N), E = (size_t)d->E, BL = (size_t)(d->B * (d->L > 0 ? d->L : 1));
    size_t lse = (size_t)(d->B * d->H * d->N);
    return BN * E * 3 + BN * 6 + BN * 3 * E + (BN * E + lse) * 2 + BN * E * 3 + BL * 2 * (size_t)d->Dc +
           BN * (size_t)(2 * d->F + d->F);
}

void dit_acts_layout(const dit_dims *d, float *b, dit_acts *a) {
    size_t BN = (size_t)(d->B * d->N), E = (size_t)d->E, BL = (size_t)(d->B * (d->L > 0 ? d->L : 1));
    size_t lse = (size_t)(d->B * d->H * d->N);
    b = carve(b, &a->ln1, BN * E); b = carve(b, &a->mean1, BN); b = carve(b, &a->rstd1, BN);
    b = carve(b, &a->qkv, BN * 3 * E); b = carve(b, &a->att1, BN * E); b = carve(b, &a->lse1, lse);
    b = carve(b, &a->h1, BN * E);
    b = carve(b, &a->ln2, BN * E); b = carve(b, &a->mean2, BN); b = carve(b, &a->rstd2, BN);
    b = carve(b, &a->q2, BN * E); b = carve(b, &a->kv, BL * 2 * (size_t)d->Dc);
    b = carve(b, &a->att2, BN * E); b = carve(b, &a->lse2, lse);
    b = carve(b, &a->h2, BN * E);
    b = carve(b, &a->ln3, BN * E); b = carve(b, &a->mean3, BN); b = carve(b, &a->rstd3, BN);
    b = carve(b, &a->p, BN * (size_t)(2 * d->F)); carve(b, &a->g, BN * (size_t)d->F);
}

size_t dit_stem_size(const dit_dims *d) {
    size_t BT = (size_t)(d->B * d->T), BL = (size_t)(d->B * (d->L > 0 ? d->L : 1));
    return BT * (size_t)d->io * 2 + (size_t)(d->B * d->TF) + (size_t)(d->B * d->E) * 5 + BL * (size_t)d->Dc * 3;
}

void dit_stem_layout(const dit_dims *d, float *b, dit_stem *s) {
    size_t BT = (size_t)(d->B * d->T), BL = (size_t)(d->B * (d->L > 0 ? d->L : 1)), BE = (size_t)(d->B * d->E);
    b = carve(b, &s->xt, BT * (size_t)d->io); b = carve(b, &s->xt2, BT * (size_t)d->io);
    b = carve(b, &s->tf, (size_t)(d->B * d->TF)); b = carve(b, &s->t_pre, BE); b = carve(b, &s->t_act, BE);
    b = carve(b, &s->g_pre, BE); b = carve(b, &s->g_act, BE);
    b = carve(b, &s->c_pre, BL * (size_t)d->Dc); b = carve(b, &s->c_act, BL * (size_t)d->Dc);
    b = carve(b, &s->cc, BL * (size_t)d->Dc); carve(b, &s->tok, BE);
}

/* ---- the CPU table: the kernels of sao_kernels.h, and the loops the forward used to run inline ---- */
static int cpu_copy(sao_ctx *ctx, float *dst, int64_t dst_pitch, const float *src, int64_t src_pitch, int64_t rows,
                    int64_t cols) {
    SAO_UNUSED(ctx);
    for (int64_t r = 0; r < rows; r++) memcpy(dst + r * dst_pitch, src + r * src_pitch, (size_t)cols * sizeof(float));
    return 0;
}

static int cpu_zero(sao_ctx *ctx, float *dst, int64_t n) {
    SAO_UNUSED(ctx);
    memset(dst, 0, (size_t)n * sizeof(float));
    return 0;
}

static int cpu_add(sao_ctx *ctx, float *y, const float *x, int64_t n) {
    SAO_UNUSED(ctx);
    for (int64_t k = 0; k < n; k++) y[k] += x[k];
    return 0;
}

static int cpu_scale(sao_ctx *ctx, float *x, int64_t n, float s) {
    SAO_UNUSED(ctx);
    for (int64_t i = 0; i < n; i++) x[i] *= s;
    return 0;
}

static int cpu_memcpy(sao_ctx *ctx, float *dst, const float *src, int64_t n) {
    SAO_UNUSED(ctx);
    if (n > 0) memcpy(dst, src, (size_t)n * sizeof(float));
    return 0;
}

static float *cpu_alloc(sao_ctx *ctx, size_t floats) {
    float *p = malloc((floats ? floats : 1) * sizeof(float));
    return p ? p : sao_err_null(ctx, "dit_alloc", "out of memory for %zu MB", floats * 4 >> 20);
}

static void cpu_release(float *p) { free(p); }

/* CFG combine and rescale; kernels/cuda/dit_glue.cu's cfg_kernel is its twin (same order, double sums). */
static int cpu_cfg(sao_ctx *ctx, const float *cond, const float *unc, int64_t rows, int64_t io, double scale,
                   double phi, float *g) {
    SAO_UNUSED(ctx);
    int64_t n = rows * io;
    for (int64_t k = 0; k < n; k++) g[k] = unc[k] + (float)scale * (cond[k] - unc[k]);
    if (phi == 0.0) return 0;
    /* std over the io channels (unbiased) per (batch, time), of cond and of the CFG output */
    for (int64_t r = 0; r < rows; r++) {
        double sc = 0, sc2 = 0, sg = 0, sg2 = 0;
        for (int64_t ch = 0; ch < io; ch++) {
            double a_ = cond[r * io + ch], g_ = g[r * io + ch];
            sc += a_; sc2 += a_ * a_; sg += g_; sg2 += g_ * g_;
        }
        double vc = (sc2 - sc * sc / io) / (io - 1), vg = (sg2 - sg * sg / io) / (io - 1);
        double ratio = sqrt(vc > 0 ? vc : 0) / sqrt(vg > 0 ? vg : 1e-30);
        for (int64_t ch = 0; ch < io; ch++) {
            double g_ = g[r * io + ch];
            g[r * io + ch] = (float)(phi * g_ * ratio + (1 - phi) * g_);
        }
    }
    return 0;
}

const dit_ops dit_ops_cpu = {
    .device = "cpu",
    .linear = sao_linear_forward,
    .silu = sao_silu_forward,
    .fourier = sao_fourier_features_forward,
    .transpose = sao_transpose_forward,
    .layernorm = sao_layernorm_forward,
    .rope = sao_rope_forward,
    .attention = sao_attention_forward,
    .swiglu = sao_swiglu_forward,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .add = cpu_add,
    .scale = cpu_scale,
    .cfg = cpu_cfg,
    .put = cpu_memcpy,
    .get = cpu_memcpy,
    .linear_bwd = sao_linear_backward,
    .silu_bwd = sao_silu_backward,
    .swiglu_bwd = sao_swiglu_backward,
    .layernorm_bwd = sao_layernorm_backward,
    .rope_bwd = sao_rope_backward,
    .attention_bwd = sao_attention_backward,
    .fourier_bwd = sao_fourier_features_backward,
    .sumsq = sao_sumsq,
    .alloc = cpu_alloc,
    .release = cpu_release,
};

/* ---- the forward, on m->ops ------------------------------------------------------------------ */
/* y = W2 silu(W1 x + b1) + b2 keeping the hidden layer before (pre) and after (act) the SiLU. */
static int mlp2(sao_ctx *ctx, const dit_ops *ops, const float *x, int64_t n, int64_t in, int64_t hid, int64_t out,
                const float *w1, const float *b1, const float *w2, const float *b2, float *pre, float *act,
                float *y) {
    if (ops->linear(ctx, x, w1, b1, n, in, hid, 0, pre)) return -1;
    if (ops->silu(ctx, pre, n * hid, act)) return -1;
    return ops->linear(ctx, act, w2, b2, n, hid, out, 0, y);
}

int dit_stem_forward(sao_ctx *ctx, const sao_dit *m, const dit_dims *d, const float *x, const float *t,
                     const float *cross, const float *global, dit_stem *s, float *h) {
    const dit_ops *ops = m->ops;
    int64_t B = d->B, T = d->T, N = d->N, E = d->E, io = d->io;
    /* context: to_cond_embed (SiLU MLP without biases), shared by every block */
    if (d->L > 0 && mlp2(ctx, ops, cross, d->Bx * d->L, d->Dc, d->Dc, d->Dc, m->c_w1, NULL, m->c_w2, NULL, s->c_pre,
                         s->c_act, s->cc)) return -1;
    /* the prepended token: timestep embedding ([cos, sin] Fourier features) + global embedding */
    if (ops->fourier(ctx, t, m->t_feat_w, B, d->TF / 2, s->tf)) return -1;
    if (mlp2(ctx, ops, s->tf, B, d->TF, E, E, m->t_w1, m->t_b1, m->t_w2, m->t_b2, s->t_pre, s->t_act, s->tok)) return -1;
    if (mlp2(ctx, ops, global, B, d->Dg, E, E, m->g_w1, NULL, m->g_w2, NULL, s->g_pre, s->g_act, h)) return -1;
    if (ops->add(ctx, s->tok, h, B * E)) return -1;
    /* x + pre_conv(x) in token layout, project_in into rows 1..T; the token into row 0 */
    if (ops->transpose(ctx, x, B, io, T, 0, s->xt)) return -1;
    if (dit_copy(ctx, ops, s->xt2, s->xt, B * T * io)) return -1;
    if (ops->linear(ctx, s->xt, m->pre_conv, NULL, B * T, io, io, 1, s->xt2)) return -1;
    if (ops->copy(ctx, h, N * E, s->tok, E, B, E)) return -1;
    for (int64_t b = 0; b < B; b++)
        if (ops->linear(ctx, s->xt2 + b * T * io, m->proj_in, NULL, T, io, E, 0, h + (b * N + 1) * E)) return -1;
    return 0;
}

int dit_block_forward(sao_ctx *ctx, const sao_dit *m, int i, const dit_dims *d, const float *cc,
                      float *h, dit_acts *a) {
    const dit_ops *ops = m->ops;
    const dit_layer *l = &m->layers[i];
    int64_t B = d->B, N = d->N, E = d->E, D = d->D, H = d->H, L = d->L, Dc = d->Dc, F = d->F;
    /* self-attention, partial RoPE on q and k, read in place from the fused qkv rows */
    if (ops->layernorm(ctx, h, l->pre_g, NULL, B * N, E, 1e-5f, a->ln1, a->mean1, a->rstd1)) return -1;
    if (dit_lin_forward(ctx, m, i, 0, a->ln1, B * N, E, 3 * E, l->qkv, NULL, 0, a->qkv)) return -1;
    int64_t qs[3] = {N * 3 * E, D, 3 * E};
    if (ops->rope(ctx, a->qkv, B, H, N, D, qs, d->rot, 0, m->inv_freq, 10000.0, a->qkv)) return -1;
    if (ops->rope(ctx, a->qkv + E, B, H, N, D, qs, d->rot, 0, m->inv_freq, 10000.0, a->qkv + E)) return -1;
    sao_attn_desc sa = {.B = B, .H = H, .Hkv = H, .T = N, .M = N, .D = D, .scale = 0,
                        .q_stride = {N * 3 * E, D, 3 * E}, .k_stride = {N * 3 * E, D, 3 * E},
                        .v_stride = {N * 3 * E, D, 3 * E}, .o_stride = {N * E, D, E}};
    if (ops->attention(ctx, &sa, a->qkv, a->qkv + E, a->qkv + 2 * E, NULL, NULL, a->att1, a->lse1)) return -1;
    if (dit_lin_forward(ctx, m, i, 1, a->att1, B * N, E, E, l->attn_out, NULL, 1, h)) return -1;
    if (dit_copy(ctx, ops, a->h1, h, B * N * E)) return -1;
    /* cross-attention on the 768-d context, K/V heads shared by consecutive query heads; items
     * past Bx have an all-zero context, so K = V = 0 and their residual would add exactly 0 */
    int64_t Bx = d->Bx;
    if (L > 0 && Bx > 0) {
        if (ops->layernorm(ctx, h, l->ca_g, NULL, Bx * N, E, 1e-5f, a->ln2, a->mean2, a->rstd2)) return -1;
        if (dit_lin_forward(ctx, m, i, 2, a->ln2, Bx * N, E, E, l->ca_q, NULL, 0, a->q2)) return -1;
        if (dit_lin_forward(ctx, m, i, 3, cc, Bx * L, Dc, 2 * Dc, l->ca_kv, NULL, 0, a->kv)) return -1;
        sao_attn_desc ca = {.B = Bx, .H = H, .Hkv = d->Hkv, .T = N, .M = L, .D = D, .scale = 0,
                            .q_stride = {N * E, D, E}, .k_stride = {L * 2 * Dc, D, 2 * Dc},
                            .v_stride = {L * 2 * Dc, D, 2 * Dc}, .o_stride = {N * E, D, E}};
        if (ops->attention(ctx, &ca, a->q2, a->kv, a->kv + Dc, NULL, NULL, a->att2, a->lse2)) return -1;
        if (dit_lin_forward(ctx, m, i, 4, a->att2, Bx * N, E, E, l->ca_out, NULL, 1, h)) return -1;
    }
    if (dit_copy(ctx, ops, a->h2, h, B * N * E)) return -1;
    /* feed-forward: SwiGLU */
    if (ops->layernorm(ctx, h, l->ff_g, NULL, B * N, E, 1e-5f, a->ln3, a->mean3, a->rstd3)) return -1;
    if (dit_lin_forward(ctx, m, i, 5, a->ln3, B * N, E, 2 * F, l->ff_w1, l->ff_b1, 0, a->p)) return -1;
    if (ops->swiglu(ctx, a->p, B * N, F, a->g)) return -1;
    return dit_lin_forward(ctx, m, i, 6, a->g, B * N, F, E, l->ff_w2, l->ff_b2, 1, h);
}

int dit_head_forward(sao_ctx *ctx, const sao_dit *m, const dit_dims *d, const float *h, float *o,
                     float *ot, float *y) {
    const dit_ops *ops = m->ops;
    int64_t B = d->B, T = d->T, N = d->N, io = d->io;
    if (ops->linear(ctx, h, m->proj_out, NULL, B * N, d->E, io, 0, o)) return -1;
    if (ops->copy(ctx, ot, T * io, o + io, N * io, B, T * io)) return -1;   /* rows 1..T of each item */
    if (dit_copy(ctx, ops, y, ot, B * T * io)) return -1;
    return ops->linear(ctx, ot, m->post_conv, NULL, B * T, io, io, 1, y);
}

/* The workspace in the model's memory: host, or the device (kernels/cuda/dit_device.cu). */
static float *ws_get(sao_ctx *ctx, sao_dit *m, size_t need) {
    if (m->device >= 0) return dit_device_ws(ctx, m, need);
    if (need > m->ws_size) {
        float *w = realloc(m->ws, need * sizeof(float));
        if (!w) return sao_err_null(ctx, "dit_forward", "out of memory for a %zu MB workspace", need * 4 >> 20);
        m->ws = w;
        m->ws_size = need;
    }
    return m->ws;
}

/* Before a call: weights bound; on a device model, its device current and its weights up to date. */
int dit_begin(sao_ctx *ctx, sao_dit *m, const char *op) {
    if (!m->t_w1) return sao_err(ctx, op, "the model has no weights bound (load a checkpoint first)");
    if (m->lora && sao_dit_lora_place(ctx, m)) return -1;
    return m->device >= 0 ? dit_device_begin(ctx, m) : 0;
}

int sao_dit_token(sao_ctx *ctx, sao_dit *m, const float *t, const float *global, int64_t B, float *temb,
                  float *gemb) {
    if (dit_begin(ctx, m, "dit_token")) return -1;
    if (B <= 0) return sao_err(ctx, "dit_token", "bad batch size %lld", (long long)B);
    const dit_ops *ops = m->ops;
    dit_dims d;
    dit_dims_init(m, B, 1, 0, &d);
    float *w = ws_get(ctx, m, (size_t)(B + B * d.Dg + B * d.TF + 4 * B * d.E));
    if (!w) return -1;
    float *ti = w, *gi = ti + B, *tf = gi + B * d.Dg, *pre = tf + B * d.TF, *act = pre + B * d.E;
    float *te = act + B * d.E, *ge = te + B * d.E;
    if (ops->put(ctx, ti, t, B) || ops->put(ctx, gi, global, B * d.Dg)) return -1;
    if (ops->fourier(ctx, ti, m->t_feat_w, B, d.TF / 2, tf) ||
        mlp2(ctx, ops, tf, B, d.TF, d.E, d.E, m->t_w1, m->t_b1, m->t_w2, m->t_b2, pre, act, te) ||
        mlp2(ctx, ops, gi, B, d.Dg, d.E, d.E, m->g_w1, NULL, m->g_w2, NULL, pre, act, ge)) return -1;
    return ops->get(ctx, temb, te, B * d.E) || ops->get(ctx, gemb, ge, B * d.E) ? -1 : 0;
}

/* The forward's buffers in the workspace (host or device). */
typedef struct {
    float *xi, *ti, *ci, *gi, *sbuf, *abuf, *h, *o, *ot, *y;
} dit_fwd_bufs;

/* The device-side work of a forward: inputs in the workspace -> o [B, io, T] (the CFG-combined v
 * when cfg_on). hidden (host, may be NULL) gets the first B items' state after every block. */
static int forward_work(sao_ctx *ctx, const sao_dit *m, const dit_dims *d, const dit_fwd_bufs *b, int64_t B,
                        int cfg_on, double cfg_scale, double scale_phi, float *hidden) {
    const dit_ops *ops = m->ops;
    int64_t T = d->T, io = d->io, N = d->N, E = d->E;
    dit_stem s;
    dit_acts a;
    dit_stem_layout(d, b->sbuf, &s);
    dit_acts_layout(d, b->abuf, &a);
    if (dit_stem_forward(ctx, m, d, b->xi, b->ti, d->L > 0 ? b->ci : NULL, b->gi, &s, b->h)) return -1;
    for (int i = 0; i < m->cfg.depth; i++) {
        if (dit_block_forward(ctx, m, i, d, s.cc, b->h, &a)) return -1;
        if (hidden && ops->get(ctx, hidden + (size_t)i * B * N * E, b->h, B * N * E)) return -1;
        if (sao_interrupt_pending()) return sao_err(ctx, "dit_forward", "interrupted");
    }
    if (dit_head_forward(ctx, m, d, b->h, b->o, b->ot, b->y)) return -1;
    /* y is [BB, T, io]: combine the CFG halves in token layout (into ot), then transpose into o
     * (free after the head) */
    const float *res = b->y;
    if (cfg_on) {
        if (ops->cfg(ctx, b->y, b->y + B * T * io, B * T, io, cfg_scale, scale_phi, b->ot)) return -1;
        res = b->ot;
    }
    return ops->transpose(ctx, res, B, T, io, 0, b->o);
}

int sao_dit_graphs(sao_dit *m, int on) {
    int was = m->graphs;
    if (on >= 0) {
        m->graphs = on != 0;
        if (on) m->graph_why[0] = 0;   /* asked again: try capturing again */
    }
    return was;
}

void sao_dit_graph_stats(const sao_dit *m, int64_t *captures, int64_t *replays, const char **why) {
    if (captures) *captures = m->graph_captures;
    if (replays) *replays = m->graph_replays;
    if (why) *why = m->graph_why;
}

/* An input into the workspace: from the host (a blocking copy), or from the model's device (queued). */
static int put_in(sao_ctx *ctx, const dit_ops *ops, int dev_io, float *dst, const float *src, int64_t n) {
    return dev_io ? dit_copy(ctx, ops, dst, src, n) : ops->put(ctx, dst, src, n);
}

int sao_dit_forward(sao_ctx *ctx, sao_dit *m, const float *x, const float *t, const float *cross,
                    const float *uncond, const float *global, int64_t B, int64_t T, int64_t L,
                    double cfg_scale, double scale_phi, float *out, float *hidden, int flags) {
    const char *op = "dit_forward";
    if (dit_begin(ctx, m, op)) return -1;
    if (B <= 0 || T <= 0 || L < 0) return sao_err(ctx, op, "bad sizes B=%lld T=%lld L=%lld", (long long)B, (long long)T, (long long)L);
    int dev_io = (flags & SAO_DIT_DEVICE_IO) != 0;
    if (dev_io && m->device < 0)
        return sao_err(ctx, op, "device inputs and output given to a model on the CPU (dit:to(\"cuda\") first)");
    if (dev_io && hidden) return sao_err(ctx, op, "hidden states are fetched to the host: not with device inputs");
    const dit_ops *ops = m->ops;
    int cfg_on = cfg_scale != 1.0 && L > 0;
    int64_t BB = cfg_on ? 2 * B : B;               /* batch through the transformer */
    dit_dims d;
    dit_dims_init(m, BB, T, L, &d);
    if (cfg_on && !uncond) d.Bx = B;               /* the all-zero half skips cross-attention */
    int64_t io = d.io, E = d.E, N = d.N, Dc = d.Dc, Dg = d.Dg;
    size_t n_in = (size_t)(BB * io * T + BB + BB * (L > 0 ? L : 1) * Dc + BB * Dg);
    size_t n_h = (size_t)(BB * N * E), n_o = (size_t)(BB * N * io), n_y = (size_t)(BB * T * io);
    size_t total = n_in + dit_stem_size(&d) + dit_acts_size(&d) + n_h + n_o + 2 * n_y;
    float *w = ws_get(ctx, m, total);
    if (!w) return -1;
    dit_fwd_bufs b;
    b.xi = w; b.ti = b.xi + BB * io * T; b.ci = b.ti + BB; b.gi = b.ci + BB * (L > 0 ? L : 1) * Dc;
    b.sbuf = b.gi + BB * Dg; b.abuf = b.sbuf + dit_stem_size(&d); b.h = b.abuf + dit_acts_size(&d);
    b.o = b.h + n_h; b.ot = b.o + n_o; b.y = b.ot + n_y;
    /* inputs of the doubled batch: [x; x], [t; t], [cross; uncond], [global; global]; without
     * uncond the second half's context is zero and only the first B items attend to it */
    if (put_in(ctx, ops, dev_io, b.xi, x, B * io * T) || put_in(ctx, ops, dev_io, b.ti, t, B) ||
        put_in(ctx, ops, dev_io, b.gi, global, B * Dg)) return -1;
    if (L > 0 && put_in(ctx, ops, dev_io, b.ci, cross, B * L * Dc)) return -1;
    if (cfg_on && (dit_copy(ctx, ops, b.xi + B * io * T, b.xi, B * io * T) || dit_copy(ctx, ops, b.ti + B, b.ti, B) ||
                   dit_copy(ctx, ops, b.gi + B * Dg, b.gi, B * Dg))) return -1;
    if (cfg_on && uncond && put_in(ctx, ops, dev_io, b.ci + B * L * Dc, uncond, B * L * Dc)) return -1;
    /* the work itself, on a device model possibly as a CUDA graph (kernels/cuda/dit_graph.cu):
     * not with hidden (fetched between blocks) nor with adapters (their state is not in the key) */
    int graph = m->device >= 0 && m->graphs && !hidden && !m->lora;
    int mode = DIT_GRAPH_EAGER;
    if (graph) {
        dit_graph_key k = {.B = BB, .T = T, .L = L, .Bx = d.Bx, .scale = cfg_on ? cfg_scale : 1.0,
                           .phi = cfg_on ? scale_phi : 0.0, .ws = w, .weights = m->dparams};
        if ((mode = dit_graph_begin(ctx, m, &k)) < 0) return -1;
    }
    if (mode != DIT_GRAPH_REPLAYED) {
        int rc = forward_work(ctx, m, &d, &b, B, cfg_on, cfg_scale, scale_phi, hidden);
        if (graph) {
            int e = dit_graph_end(ctx, m, mode, rc);
            if (e < 0) return -1;
            if (e == 1) {   /* the capture failed (and gave up, saying why): run the work eagerly */
                rc = forward_work(ctx, m, &d, &b, B, cfg_on, cfg_scale, scale_phi, hidden);
                if (rc) m->graph_why[0] = 0;   /* failing eagerly too: the forward's error, not the capture's */
            }
        }
        if (rc) return -1;
    }
    return dev_io ? dit_copy(ctx, ops, out, b.o, B * io * T) : ops->get(ctx, out, b.o, B * io * T);
}

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
 * CFG (scale != 1): the batch is doubled; the second half gets a zero cross context and the same
 * global token; out = uncond + scale (cond - uncond), optionally rescaled (scale_phi).
 * All work buffers live in one workspace sized from (config, B, T, L) and reused across calls. */
#include "internal.h"
#include "params.h"
#include "sao_kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float *pre_g, *qkv, *attn_out, *ca_g, *ca_q, *ca_kv, *ca_out, *ff_g, *ff_w1, *ff_b1, *ff_w2, *ff_b2;
} dit_layer;

struct sao_dit {
    sao_dit_config cfg;
    sao_params *params;
    float *t_feat_w, *t_w1, *t_b1, *t_w2, *t_b2, *c_w1, *c_w2, *g_w1, *g_w2, *pre_conv, *post_conv;
    float *proj_in, *proj_out, *inv_freq;
    dit_layer *layers;
    float *ws;          /* workspace */
    size_t ws_size;     /* in floats */
};

sao_params *sao_dit_params(sao_dit *m) { return m->params; }
const sao_dit_config *sao_dit_get_config(const sao_dit *m) { return &m->cfg; }

void sao_dit_free(sao_dit *m) {
    if (!m) return;
    sao_params_free(m->params);
    free(m->layers);
    free(m->ws);
    free(m);
}

#define SHAPE(...) (const int64_t[]){__VA_ARGS__}
#define ADD(slot, nd, shp, ...) \
    do { if (sao_params_add(m->params, slot, nd, shp, __VA_ARGS__)) goto oom; } while (0)

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

static float *ws_get(sao_ctx *ctx, sao_dit *m, size_t need) {
    if (need > m->ws_size) {
        float *w = realloc(m->ws, need * sizeof(float));
        if (!w) return sao_err_null(ctx, "dit_forward", "out of memory for a %zu MB workspace", need * 4 >> 20);
        m->ws = w;
        m->ws_size = need;
    }
    return m->ws;
}

/* In place SiLU MLP helper: y = W2 silu(W1 x + b1) + b2, x [n, in] -> y [n, out]; tmp [n, hid]. */
static int mlp2(sao_ctx *ctx, const float *x, int64_t n, int64_t in, int64_t hid, int64_t out,
                const float *w1, const float *b1, const float *w2, const float *b2, float *tmp, float *y) {
    if (sao_linear_forward(ctx, x, w1, b1, n, in, hid, 0, tmp)) return -1;
    if (sao_silu_forward(ctx, tmp, n * hid, tmp)) return -1;
    return sao_linear_forward(ctx, tmp, w2, b2, n, hid, out, 0, y);
}

int sao_dit_forward(sao_ctx *ctx, sao_dit *m, const float *x, const float *t, const float *cross,
                    const float *global, int64_t B, int64_t T, int64_t L, double cfg_scale,
                    double scale_phi, float *out, float *hidden) {
    const char *op = "dit_forward";
    const sao_dit_config *c = &m->cfg;
    if (!m->t_w1) return sao_err(ctx, op, "the model has no weights bound (load a checkpoint first)");
    if (B <= 0 || T <= 0 || L < 0) return sao_err(ctx, op, "bad sizes B=%lld T=%lld L=%lld", (long long)B, (long long)T, (long long)L);
    int cfg_on = cfg_scale != 1.0 && L > 0;
    int64_t BB = cfg_on ? 2 * B : B;               /* batch through the transformer */
    int64_t io = c->io_channels, E = c->embed_dim, H = c->num_heads, D = E / H, Dc = c->cond_token_dim;
    int64_t Dg = c->global_cond_dim, Hkv = Dc / D, F = c->ff_mult * E, TF = c->timestep_features_dim;
    int64_t N = T + 1, rot = D / 2 > 32 ? D / 2 : 32;
    int64_t Lk = L > 0 ? L : 1;

    /* workspace layout (floats) */
    size_t n_h = (size_t)(BB * N * E), n_ln = n_h, n_big = (size_t)(BB * N * (2 * F > 3 * E ? 2 * F : 3 * E));
    size_t n_att = n_h, n_ff = (size_t)(BB * N * F), n_c = (size_t)(BB * Lk * Dc), n_kv = (size_t)(BB * Lk * 2 * Dc);
    size_t n_tok = (size_t)(BB * (E + TF + E + E)), n_x = (size_t)(BB * T * io) * 2, n_o = (size_t)(BB * N * io);
    size_t total = n_h + n_ln + n_big + n_att + n_ff + n_c * 2 + n_kv + n_tok + n_x + n_o;
    float *w = ws_get(ctx, m, total);
    if (!w) return -1;
    float *h = w, *ln = h + n_h, *big = ln + n_ln, *att = big + n_big, *ff = att + n_att;
    float *cc = ff + n_ff, *ctmp = cc + n_c, *kv = ctmp + n_c, *tok = kv + n_kv, *xt = tok + n_tok;
    float *o = xt + n_x;
    float *tf = tok + BB * E, *tmpE = tf + BB * TF, *gE = tmpE + BB * E;
    float *xt2 = xt + BB * T * io;

    /* cross context: cond rows then zero rows for the CFG half; to_cond_embed (no biases) */
    if (L > 0) {
        memcpy(ctmp, cross, (size_t)(B * L * Dc) * sizeof(float));
        if (cfg_on) memset(ctmp + B * L * Dc, 0, (size_t)(B * L * Dc) * sizeof(float));
        if (mlp2(ctx, ctmp, BB * L, Dc, Dc, Dc, m->c_w1, NULL, m->c_w2, NULL, kv, cc)) return -1;
    }
    /* the prepended token: timestep embedding + global embedding; the CFG half repeats both */
    float tt[2 * B > 0 ? 2 * B : 1];
    for (int64_t b = 0; b < BB; b++) tt[b] = t[b % B];
    if (sao_fourier_features_forward(ctx, tt, m->t_feat_w, BB, TF / 2, tf)) return -1;
    if (mlp2(ctx, tf, BB, TF, E, E, m->t_w1, m->t_b1, m->t_w2, m->t_b2, tmpE, tok)) return -1;
    for (int64_t b = 0; b < BB; b++) {
        if (mlp2(ctx, global + (b % B) * Dg, 1, Dg, E, E, m->g_w1, NULL, m->g_w2, NULL, tmpE, gE + b * E)) return -1;
        for (int64_t e = 0; e < E; e++) tok[b * E + e] += gE[b * E + e];
    }
    /* x + pre_conv(x) in token layout, then project_in into rows 1..T of h */
    for (int64_t b = 0; b < BB; b++) {
        if (sao_transpose_forward(ctx, x + (b % B) * io * T, 1, io, T, 0, xt + b * T * io)) return -1;
    }
    memcpy(xt2, xt, (size_t)(BB * T * io) * sizeof(float));
    if (sao_linear_forward(ctx, xt, m->pre_conv, NULL, BB * T, io, io, 1, xt2)) return -1;
    for (int64_t b = 0; b < BB; b++) {
        memcpy(h + b * N * E, tok + b * E, (size_t)E * sizeof(float));
        if (sao_linear_forward(ctx, xt2 + b * T * io, m->proj_in, NULL, T, io, E, 0, h + (b * N + 1) * E)) return -1;
    }

    for (int i = 0; i < c->depth; i++) {
        const dit_layer *l = &m->layers[i];
        /* self-attention with partial RoPE, q/k/v read in place from the fused qkv rows */
        if (sao_layernorm_forward(ctx, h, l->pre_g, NULL, BB * N, E, 1e-5f, ln, NULL, NULL)) return -1;
        if (sao_linear_forward(ctx, ln, l->qkv, NULL, BB * N, E, 3 * E, 0, big)) return -1;
        int64_t qs[3] = {N * 3 * E, D, 3 * E};
        if (sao_rope_forward(ctx, big, BB, H, N, D, qs, rot, 0, m->inv_freq, 10000.0, big)) return -1;
        if (sao_rope_forward(ctx, big + E, BB, H, N, D, qs, rot, 0, m->inv_freq, 10000.0, big + E)) return -1;
        sao_attn_desc a = {.B = BB, .H = H, .Hkv = H, .T = N, .M = N, .D = D, .scale = 0,
                           .q_stride = {N * 3 * E, D, 3 * E}, .k_stride = {N * 3 * E, D, 3 * E},
                           .v_stride = {N * 3 * E, D, 3 * E}, .o_stride = {N * E, D, E}};
        if (sao_attention_forward(ctx, &a, big, big + E, big + 2 * E, NULL, NULL, att, NULL)) return -1;
        if (sao_linear_forward(ctx, att, l->attn_out, NULL, BB * N, E, E, 1, h)) return -1;
        /* cross-attention: 768-d context through to_kv, K/V heads shared by consecutive query heads */
        if (L > 0) {
            if (sao_layernorm_forward(ctx, h, l->ca_g, NULL, BB * N, E, 1e-5f, ln, NULL, NULL)) return -1;
            if (sao_linear_forward(ctx, ln, l->ca_q, NULL, BB * N, E, E, 0, big)) return -1;
            if (sao_linear_forward(ctx, cc, l->ca_kv, NULL, BB * L, Dc, 2 * Dc, 0, kv)) return -1;
            sao_attn_desc ca = {.B = BB, .H = H, .Hkv = Hkv, .T = N, .M = L, .D = D, .scale = 0,
                                .q_stride = {N * E, D, E}, .k_stride = {L * 2 * Dc, D, 2 * Dc},
                                .v_stride = {L * 2 * Dc, D, 2 * Dc}, .o_stride = {N * E, D, E}};
            if (sao_attention_forward(ctx, &ca, big, kv, kv + Dc, NULL, NULL, att, NULL)) return -1;
            if (sao_linear_forward(ctx, att, l->ca_out, NULL, BB * N, E, E, 1, h)) return -1;
        }
        /* feed-forward: SwiGLU */
        if (sao_layernorm_forward(ctx, h, l->ff_g, NULL, BB * N, E, 1e-5f, ln, NULL, NULL)) return -1;
        if (sao_linear_forward(ctx, ln, l->ff_w1, l->ff_b1, BB * N, E, 2 * F, 0, big)) return -1;
        if (sao_swiglu_forward(ctx, big, BB * N, F, ff)) return -1;
        if (sao_linear_forward(ctx, ff, l->ff_w2, l->ff_b2, BB * N, F, E, 1, h)) return -1;
        if (hidden) memcpy(hidden + (size_t)i * B * N * E, h, (size_t)(B * N * E) * sizeof(float));
        if (sao_interrupt_pending()) return sao_err(ctx, op, "interrupted");
    }

    /* project_out, drop the prepended token, post_conv residual, back to [B, io, T] */
    if (sao_linear_forward(ctx, h, m->proj_out, NULL, BB * N, E, io, 0, o)) return -1;
    for (int64_t b = 0; b < BB; b++)
        memcpy(xt + b * T * io, o + (b * N + 1) * io, (size_t)(T * io) * sizeof(float));
    memcpy(xt2, xt, (size_t)(BB * T * io) * sizeof(float));
    if (sao_linear_forward(ctx, xt, m->post_conv, NULL, BB * T, io, io, 1, xt2)) return -1;
    /* xt2 is [BB, T, io]: combine the CFG halves in token layout, then transpose into out */
    if (cfg_on) {
        int64_t n = B * T * io;
        float *cond = xt2, *unc = xt2 + n;
        for (int64_t k = 0; k < n; k++) xt[k] = unc[k] + (float)cfg_scale * (cond[k] - unc[k]);
        if (scale_phi != 0.0) {
            /* std over the io channels (unbiased) per (batch, time), of cond and of the CFG output */
            for (int64_t r = 0; r < B * T; r++) {
                double sc = 0, sc2 = 0, sg = 0, sg2 = 0;
                for (int64_t ch = 0; ch < io; ch++) {
                    double a = cond[r * io + ch], g = xt[r * io + ch];
                    sc += a; sc2 += a * a; sg += g; sg2 += g * g;
                }
                double vc = (sc2 - sc * sc / io) / (io - 1), vg = (sg2 - sg * sg / io) / (io - 1);
                double ratio = sqrt(vc > 0 ? vc : 0) / sqrt(vg > 0 ? vg : 1e-30);
                for (int64_t ch = 0; ch < io; ch++) {
                    double g = xt[r * io + ch];
                    xt[r * io + ch] = (float)(scale_phi * g * ratio + (1 - scale_phi) * g);
                }
            }
        }
        return sao_transpose_forward(ctx, xt, B, T, io, 0, out);
    }
    return sao_transpose_forward(ctx, xt2, B, T, io, 0, out);
}

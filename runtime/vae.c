/* vae.c — the Oobleck autoencoder of Stable Audio Open (stable-audio-tools OobleckEncoder,
 * OobleckDecoder, VAEBottleneck), forward only, fp32. SAO_SPEC §3.
 *
 * Building blocks (C = channels, T = samples at that stage):
 *   Snake(x)       = x + 1/(exp(beta)+1e-9) * sin(exp(alpha) x)^2             per channel
 *   RU_d(x)        = x + Conv1x1(Snake(Conv_k7,dil d,pad 3d(Snake(x))))       d = 1, 3, 9
 *   EncoderBlock   = RU_1, RU_3, RU_9 at C_in, Snake, Conv(k 2s, stride s, pad ceil(s/2)) -> C_out
 *   DecoderBlock   = Snake, ConvT(k 2s, stride s, pad ceil(s/2)) -> C_out, RU_1, RU_3, RU_9
 *   Encoder        = Conv k7 (io -> ch*m0), blocks up the widths, Snake, Conv k3 -> 2*latent
 *   Decoder        = Conv k7 (latent -> ch*m_last), blocks down the widths (strides reversed),
 *                    Snake, Conv k7 (no bias) -> io, tanh only when final_tanh
 *   Bottleneck     = mean, scale = split(raw); std = softplus(scale) + 1e-4; z = mean + std*eps
 * Every conv is weight-normed upstream (weight_g, weight_v); sao_vae_prepare folds
 * W = g * v / ||v|| once (norm over all dims but 0: per output channel for Conv1d, per INPUT
 * channel for ConvTranspose1d, whose v is [C_in, C_out, K]).
 *
 * Memory: a batch runs one item at a time (upstream iterate_batch). One item needs three
 * activation buffers of the largest stage, max over stages of C*T floats (SAO decoder: 128 x
 * 2048 L, i.e. 1 MiB per latent frame each), kept in a workspace that grows to the largest call
 * and is reused; the conv kernel adds its own <= 8 MB im2col chunk. The chunked decode runs the
 * same code on chunk-sized windows, so its workspace depends on the chunk, not on L: see
 * sao_vae_workspace_bytes and the table in sao_model.h. Not thread-safe per handle (the
 * workspace is shared): use one handle per thread.
 *
 * Devices: the graph (encode_item, decode_item, the chunk windows) is written once against a
 * kernel table, vae_ops: the CPU table points at the kernels/cpu functions and at the loops this
 * file used to run inline (bit-identical to before); the CUDA table at their sao_cuda_ twins and
 * at the glue of runtime/cuda_glue.h (kernels/cuda/glue.cu; runtime/cuda_load.c answers for them in a CPU-only build). After
 * sao_vae_to_device the folded weights, biases and Snake parameters live in ONE block of the
 * caching allocator, the public calls still take host pointers (copied in per item, copied out),
 * and the activations live in a device workspace kept between calls. The weight-norm fold and
 * the bottleneck stay on the host (the folded weights are uploaded; raw comes back first).
 */
#include "cuda_glue.h"
#include "internal.h"
#include "params.h"
#include "sao_kernels.h"
#include "sao_cuda.h"
#include "sao_cuda_ops.h"
#include "sao_cuda_attn.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {            /* a weight-normed conv; g, v, b are bound parameter slots */
    float *g, *v, *b;
    float *w;               /* folded weight (in m->wfold), same layout as v */
    float *dw, *db;         /* device copies of w and b (in m->dparams) while on a device */
    const float *up_b;      /* the b uploaded (detects a rebind) */
    const float *folded_v;  /* the v that w was folded from (detects a rebind) */
    int64_t c_in, c_out, k; /* v is [c_out, c_in, k] for a conv, [c_in, c_out, k] transposed */
    int stride, pad, dil, transposed;
} wnconv;

typedef struct {
    float *alpha, *beta; int64_t c;
    float *dalpha, *dbeta;              /* device copies while on a device */
    const float *up_alpha, *up_beta;    /* the host arrays uploaded (detects a rebind) */
} snake;

typedef struct { snake s1; wnconv c7; snake s2; wnconv c1; } resunit;

typedef struct {
    resunit ru[3];
    snake act;
    wnconv conv;            /* strided conv (encoder) or transposed conv (decoder) */
} block;

typedef struct {
    int n;                  /* blocks */
    wnconv in;
    block blk[SAO_VAE_MAX_BLOCKS];
    snake act;
    wnconv out;
} coder;

/* The kernels and memory helpers the graph calls, one table per device. Every pointer is memory
 * of the table's device, except put's source and get's destination (host memory). The kernels
 * have the sao_kernels.h signatures (CPU) / their sao_cuda_ twins' (CUDA). */
typedef struct vae_ops {
    const char *device;   /* "cpu" or "cuda" */
    int (*conv1d)(sao_ctx *ctx, const float *x, const float *w, const float *bias, int64_t B, int64_t c_in,
                  int64_t t_in, int64_t c_out, int64_t k, int stride, int padding, int dilation, int groups,
                  float *y);
    int (*conv_transpose1d)(sao_ctx *ctx, const float *x, const float *w, const float *bias, int64_t B,
                            int64_t c_in, int64_t t_in, int64_t c_out, int64_t k, int stride, int padding,
                            int output_padding, int dilation, int groups, float *y);
    int (*snake)(sao_ctx *ctx, const float *x, const float *alpha, const float *beta, int64_t B, int64_t C,
                 int64_t T, float *y);
    int (*add)(sao_ctx *ctx, float *y, const float *x, int64_t n);   /* y += x */
    int (*tanh)(sao_ctx *ctx, float *x, int64_t n);                  /* x = tanh(x) in place */
    /* `rows` rows of `cols` floats, pitches in floats */
    int (*copy)(sao_ctx *ctx, float *dst, int64_t dst_pitch, const float *src, int64_t src_pitch, int64_t rows,
                int64_t cols);
    int (*zero)(sao_ctx *ctx, float *dst, int64_t n);
    int (*put)(sao_ctx *ctx, float *dst, const float *host_src, int64_t n);   /* host -> this device */
    int (*get)(sao_ctx *ctx, float *host_dst, const float *src, int64_t n);   /* this device -> host */
} vae_ops;

struct sao_vae {
    sao_vae_config cfg;
    sao_params *params;
    int parts;              /* SAO_VAE_ENCODER | SAO_VAE_DECODER */
    coder enc, dec;
    float *wfold;           /* folded weights of every conv of the enabled parts */
    size_t wfold_n;
    int prepared;
    float *ws;              /* activation workspace (floats) */
    size_t ws_n;
    unsigned fold_gen;      /* bumped by every fold (sao_vae_prepare) */
    /* the device (sao_vae_to_device) */
    const vae_ops *ops;     /* &vae_ops_cpu, or &vae_ops_cuda while the weights are on a device */
    int device;             /* -1: host; else the CUDA device holding them */
    float *dparams;         /* one block: folded weights, biases, Snake parameters */
    unsigned up_gen;        /* fold_gen of the folded weights in dparams */
    float *dws;             /* the device workspace (floats) */
    size_t dws_n;
};

static const vae_ops vae_ops_cpu, vae_ops_cuda;   /* defined with the graph below */

static const int DILATIONS[3] = { 1, 3, 9 };

sao_params *sao_vae_params(sao_vae *m) { return m->params; }
const sao_vae_config *sao_vae_get_config(const sao_vae *m) { return &m->cfg; }

int64_t sao_vae_downsampling_ratio(const sao_vae *m) {
    int64_t r = 1;
    for (int i = 0; i < m->cfg.n_blocks; i++) r *= m->cfg.strides[i];
    return r;
}

void sao_vae_free(sao_vae *m) {
    if (!m) return;
    sao_cuda_free(m->dparams);   /* NULL unless on a device */
    sao_cuda_free(m->dws);
    sao_params_free(m->params);
    free(m->wfold);
    free(m->ws);
    free(m);
}

/* ---- the parameter registry ------------------------------------------------------------------ */

#define SHAPE(...) (const int64_t[]){__VA_ARGS__}

static int add_conv(sao_params *p, wnconv *c, int64_t c_in, int64_t c_out, int64_t k, int stride,
                    int pad, int dil, int transposed, int bias, const char *name) {
    c->c_in = c_in; c->c_out = c_out; c->k = k;
    c->stride = stride; c->pad = pad; c->dil = dil; c->transposed = transposed;
    int64_t rows = transposed ? c_in : c_out, cols = transposed ? c_out : c_in;
    if (bias && sao_params_add(p, &c->b, 1, SHAPE(c_out), "%s.bias", name)) return -1;
    if (sao_params_add(p, &c->g, 3, SHAPE(rows, 1, 1), "%s.weight_g", name)) return -1;
    if (sao_params_add(p, &c->v, 3, SHAPE(rows, cols, k), "%s.weight_v", name)) return -1;
    return 0;
}

static int add_snake(sao_params *p, snake *s, int64_t c, const char *name) {
    s->c = c;
    if (sao_params_add(p, &s->alpha, 1, SHAPE(c), "%s.alpha", name)) return -1;
    if (sao_params_add(p, &s->beta, 1, SHAPE(c), "%s.beta", name)) return -1;
    return 0;
}

static int add_resunit(sao_params *p, resunit *r, int64_t c, int dil, const char *name) {
    char n[160];
    snprintf(n, sizeof n, "%s.layers.0", name);
    if (add_snake(p, &r->s1, c, n)) return -1;
    snprintf(n, sizeof n, "%s.layers.1", name);
    if (add_conv(p, &r->c7, c, c, 7, 1, 3 * dil, dil, 0, 1, n)) return -1;
    snprintf(n, sizeof n, "%s.layers.2", name);
    if (add_snake(p, &r->s2, c, n)) return -1;
    snprintf(n, sizeof n, "%s.layers.3", name);
    if (add_conv(p, &r->c1, c, c, 1, 1, 0, 1, 0, 1, n)) return -1;
    return 0;
}

/* widths: w[0] = ch (the extra leading 1 upstream prepends to c_mults), w[i+1] = ch*c_mults[i] */
static void widths(const sao_vae_config *c, int64_t *w) {
    w[0] = c->channels;
    for (int i = 0; i < c->n_blocks; i++) w[i + 1] = (int64_t)c->channels * c->c_mults[i];
}

static int build_encoder(sao_params *p, coder *e, const sao_vae_config *c) {
    int64_t w[SAO_VAE_MAX_BLOCKS + 1];
    widths(c, w);
    int n = c->n_blocks;
    char name[160];
    e->n = n;
    if (add_conv(p, &e->in, c->in_channels, w[0], 7, 1, 3, 1, 0, 1, "encoder.layers.0")) return -1;
    for (int i = 0; i < n; i++) {
        block *b = &e->blk[i];
        int s = c->strides[i];
        for (int r = 0; r < 3; r++) {
            snprintf(name, sizeof name, "encoder.layers.%d.layers.%d", i + 1, r);
            if (add_resunit(p, &b->ru[r], w[i], DILATIONS[r], name)) return -1;
        }
        snprintf(name, sizeof name, "encoder.layers.%d.layers.3", i + 1);
        if (add_snake(p, &b->act, w[i], name)) return -1;
        snprintf(name, sizeof name, "encoder.layers.%d.layers.4", i + 1);
        if (add_conv(p, &b->conv, w[i], w[i + 1], 2 * s, s, (s + 1) / 2, 1, 0, 1, name)) return -1;
    }
    snprintf(name, sizeof name, "encoder.layers.%d", n + 1);
    if (add_snake(p, &e->act, w[n], name)) return -1;
    snprintf(name, sizeof name, "encoder.layers.%d", n + 2);
    return add_conv(p, &e->out, w[n], 2 * (int64_t)c->latent_dim, 3, 1, 1, 1, 0, 1, name);
}

static int build_decoder(sao_params *p, coder *d, const sao_vae_config *c) {
    int64_t w[SAO_VAE_MAX_BLOCKS + 1];
    widths(c, w);
    int n = c->n_blocks;
    char name[160];
    d->n = n;
    if (add_conv(p, &d->in, c->latent_dim, w[n], 7, 1, 3, 1, 0, 1, "decoder.layers.0")) return -1;
    for (int j = 0; j < n; j++) {            /* decoder block j+1 mirrors encoder block n-1-j */
        int i = n - 1 - j;
        block *b = &d->blk[j];
        int s = c->strides[i];
        snprintf(name, sizeof name, "decoder.layers.%d.layers.0", j + 1);
        if (add_snake(p, &b->act, w[i + 1], name)) return -1;
        snprintf(name, sizeof name, "decoder.layers.%d.layers.1", j + 1);
        if (add_conv(p, &b->conv, w[i + 1], w[i], 2 * s, s, (s + 1) / 2, 1, 1, 1, name)) return -1;
        for (int r = 0; r < 3; r++) {
            snprintf(name, sizeof name, "decoder.layers.%d.layers.%d", j + 1, r + 2);
            if (add_resunit(p, &b->ru[r], w[i], DILATIONS[r], name)) return -1;
        }
    }
    snprintf(name, sizeof name, "decoder.layers.%d", n + 1);
    if (add_snake(p, &d->act, w[0], name)) return -1;
    snprintf(name, sizeof name, "decoder.layers.%d", n + 2);
    return add_conv(p, &d->out, w[0], c->out_channels, 7, 1, 3, 1, 0, 0, name);
}

sao_vae *sao_vae_new(sao_ctx *ctx, const sao_vae_config *cfg) {
    const char *op = "vae_new";
    if (!cfg) return sao_err_null(ctx, op, "config is NULL");
    if (cfg->n_blocks < 1 || cfg->n_blocks > SAO_VAE_MAX_BLOCKS)
        return sao_err_null(ctx, op, "n_blocks %d out of range 1..%d (the length of c_mults and strides)",
                            cfg->n_blocks, SAO_VAE_MAX_BLOCKS);
    if (cfg->in_channels < 1 || cfg->out_channels < 1 || cfg->channels < 1 || cfg->latent_dim < 1)
        return sao_err_null(ctx, op, "config has a non-positive size (in_channels %d, out_channels %d, "
                            "channels %d, latent_dim %d)", cfg->in_channels, cfg->out_channels,
                            cfg->channels, cfg->latent_dim);
    for (int i = 0; i < cfg->n_blocks; i++) {
        if (cfg->c_mults[i] < 1) return sao_err_null(ctx, op, "c_mults[%d] = %d must be >= 1", i, cfg->c_mults[i]);
        if (cfg->strides[i] < 1) return sao_err_null(ctx, op, "strides[%d] = %d must be >= 1", i, cfg->strides[i]);
    }
    int parts = cfg->parts ? cfg->parts : (SAO_VAE_ENCODER | SAO_VAE_DECODER);
    if (parts & ~(SAO_VAE_ENCODER | SAO_VAE_DECODER))
        return sao_err_null(ctx, op, "parts = %d: use SAO_VAE_ENCODER (1), SAO_VAE_DECODER (2) or both (3; 0 = both)",
                            cfg->parts);
    sao_vae *m = calloc(1, sizeof *m);
    if (!m) return sao_err_null(ctx, op, "out of memory");
    m->cfg = *cfg;
    m->cfg.parts = parts;
    m->parts = parts;
    m->ops = &vae_ops_cpu;
    m->device = -1;
    m->params = sao_params_new("vae");
    if (!m->params) goto oom;
    if ((parts & SAO_VAE_ENCODER) && build_encoder(m->params, &m->enc, cfg)) goto oom;
    if ((parts & SAO_VAE_DECODER) && build_decoder(m->params, &m->dec, cfg)) goto oom;
    return m;
oom:
    sao_vae_free(m);
    return sao_err_null(ctx, op, "out of memory building the parameter registry");
}

/* ---- weight-norm folding --------------------------------------------------------------------- */

/* calls f(m, conv) for every conv of the enabled parts */
#define FOR_EACH_CONV(m, body)                                                               \
    do {                                                                                     \
        coder *cs_[2] = { ((m)->parts & SAO_VAE_ENCODER) ? &(m)->enc : NULL,                 \
                          ((m)->parts & SAO_VAE_DECODER) ? &(m)->dec : NULL };               \
        for (int ci_ = 0; ci_ < 2; ci_++) {                                                  \
            coder *cd_ = cs_[ci_];                                                           \
            if (!cd_) continue;                                                              \
            wnconv *cv;                                                                      \
            cv = &cd_->in; body;                                                             \
            for (int bi_ = 0; bi_ < cd_->n; bi_++) {                                         \
                for (int ri_ = 0; ri_ < 3; ri_++) {                                          \
                    cv = &cd_->blk[bi_].ru[ri_].c7; body;                                    \
                    cv = &cd_->blk[bi_].ru[ri_].c1; body;                                    \
                }                                                                            \
                cv = &cd_->blk[bi_].conv; body;                                              \
            }                                                                                \
            cv = &cd_->out; body;                                                            \
        }                                                                                    \
    } while (0)

static int64_t conv_numel(const wnconv *c) { return c->c_in * c->c_out * c->k; }

/* W[r, :] = g[r] * V[r, :] / ||V[r, :]|| for the rows r of dim 0 (norm accumulated in double) */
static int fold(sao_ctx *ctx, const char *op, wnconv *c, const char *name) {
    int64_t rows = c->transposed ? c->c_in : c->c_out;
    int64_t len = conv_numel(c) / rows;
    int bad = -1;
    #pragma omp parallel for schedule(static) if (conv_numel(c) >= 65536)
    for (int64_t r = 0; r < rows; r++) {
        const float *v = c->v + r * len;
        double ss = 0.0;
        for (int64_t i = 0; i < len; i++) ss += (double)v[i] * (double)v[i];
        if (!(ss > 0.0) || !isfinite(ss)) {
            #pragma omp atomic write
            bad = (int)r;
            continue;
        }
        double s = (double)c->g[r] / sqrt(ss);
        float *w = c->w + r * len;
        for (int64_t i = 0; i < len; i++) w[i] = (float)((double)v[i] * s);
    }
    if (bad >= 0)
        return sao_err(ctx, op, "%s.weight_v: row %d has a zero or non-finite norm, weight norm is undefined",
                       name, bad);
    c->folded_v = c->v;
    return 0;
}

/* the upstream name of a conv, for messages (the registry index of its weight_v) */
static const char *conv_name(const sao_vae *m, const wnconv *c, char *buf, size_t n) {
    for (int i = 0; i < sao_params_count(m->params); i++) {
        const char *nm = sao_params_name(m->params, i);
        sao_tensor *t = sao_params_tensor(m->params, i);
        if (t && sao_tensor_data(t) == (void *)c->v) {
            size_t l = strlen(nm);
            if (l > 9 && strcmp(nm + l - 9, ".weight_v") == 0) l -= 9;
            snprintf(buf, n, "%.*s", (int)l, nm);
            return buf;
        }
    }
    snprintf(buf, n, "conv");
    return buf;
}

int sao_vae_prepare(sao_ctx *ctx, sao_vae *m) {
    const char *op = "vae_prepare";
    if (sao_params_check(ctx, m->params)) return -1;
    if (!m->wfold) {
        size_t n = 0;
        FOR_EACH_CONV(m, n += (size_t)conv_numel(cv));
        m->wfold = malloc(n * sizeof(float));
        if (!m->wfold) return sao_err(ctx, op, "out of memory for %zu MB of folded conv weights", n * 4 >> 20);
        m->wfold_n = n;
        size_t off = 0;
        FOR_EACH_CONV(m, (cv->w = m->wfold + off, off += (size_t)conv_numel(cv)));
    }
    sao_threads_apply(ctx);
    int rc = 0;
    char name[160];
    m->prepared = 0;
    FOR_EACH_CONV(m, if (!rc) rc = fold(ctx, op, cv, conv_name(m, cv, name, sizeof name)));
    m->fold_gen++;
    if (rc) return -1;
    m->prepared = 1;
    return 0;
}

/* 0 when the folded weights are current; folds (again) when never prepared or rebound */
static int ensure_prepared(sao_ctx *ctx, sao_vae *m, int part) {
    if (!(m->parts & part))
        return sao_err(ctx, part == SAO_VAE_ENCODER ? "vae_encode" : "vae_decode",
                       "this VAE was built without its %s (config parts = %d)",
                       part == SAO_VAE_ENCODER ? "encoder" : "decoder", m->parts);
    int stale = !m->prepared;
    if (!stale) FOR_EACH_CONV(m, stale |= (cv->v != cv->folded_v));
    return stale ? sao_vae_prepare(ctx, m) : 0;
}

static int ensure_folded(sao_ctx *ctx, sao_vae *m) {
    int stale = !m->prepared;
    if (!stale) FOR_EACH_CONV(m, stale |= (cv->v != cv->folded_v));
    return stale ? sao_vae_prepare(ctx, m) : 0;
}

/* ---- lengths and workspace sizes ------------------------------------------------------------- */

int64_t sao_vae_encoded_len(const sao_vae *m, int64_t S) {
    int64_t t = S;
    for (int i = 0; i < m->cfg.n_blocks; i++) {
        int s = m->cfg.strides[i];
        t = sao_conv1d_out_len(t, 2 * s, s, (s + 1) / 2, 1);
    }
    return t;
}

int64_t sao_vae_decoded_len(const sao_vae *m, int64_t L) {
    int64_t t = L;
    for (int j = 0; j < m->cfg.n_blocks; j++) {
        int s = m->cfg.strides[m->cfg.n_blocks - 1 - j];
        t = sao_conv_transpose1d_out_len(t, 2 * s, s, (s + 1) / 2, 0, 1);
    }
    return t;
}

/* the largest C*T of any activation of one item */
static int64_t enc_max_act(const sao_vae *m, int64_t S) {
    int64_t w[SAO_VAE_MAX_BLOCKS + 1], t = S, mx = 0;
    widths(&m->cfg, w);
    for (int i = 0; i < m->cfg.n_blocks; i++) {
        if (w[i] * t > mx) mx = w[i] * t;
        int s = m->cfg.strides[i];
        t = sao_conv1d_out_len(t, 2 * s, s, (s + 1) / 2, 1);
    }
    int n = m->cfg.n_blocks;
    if (w[n] * t > mx) mx = w[n] * t;
    return mx;
}

static int64_t dec_max_act(const sao_vae *m, int64_t L) {
    int64_t w[SAO_VAE_MAX_BLOCKS + 1], t = L, n = m->cfg.n_blocks;
    widths(&m->cfg, w);
    int64_t mx = w[n] * t;
    for (int j = 0; j < n; j++) {
        int i = (int)n - 1 - j, s = m->cfg.strides[i];
        t = sao_conv_transpose1d_out_len(t, 2 * s, s, (s + 1) / 2, 0, 1);
        if (w[i] * t > mx) mx = w[i] * t;
    }
    return mx;
}

/* workspace floats for one call (see the layout comments in encode_item/decode_item) */
static size_t enc_ws(const sao_vae *m, int64_t S, int64_t chunk_samples) {
    int64_t span = chunk_samples > 0 && chunk_samples < S ? chunk_samples : S;
    size_t n = 3 * (size_t)enc_max_act(m, span);
    if (chunk_samples > 0 && chunk_samples < S)   /* audio window + its raw encoding */
        n += (size_t)(m->cfg.in_channels * span + 2 * (int64_t)m->cfg.latent_dim * sao_vae_encoded_len(m, span));
    return n;
}

static size_t dec_ws(const sao_vae *m, int64_t L, int64_t chunk) {
    int64_t span = chunk > 0 && chunk < L ? chunk : L;
    size_t n = 3 * (size_t)dec_max_act(m, span);
    if (chunk > 0 && chunk < L)                   /* latent window + its decoded audio */
        n += (size_t)(m->cfg.latent_dim * span + m->cfg.out_channels * sao_vae_decoded_len(m, span));
    return n;
}

int64_t sao_vae_workspace_bytes(const sao_vae *m, int decode, int64_t length, int64_t chunk) {
    if (length < 1) return 0;
    if (decode) return (int64_t)(dec_ws(m, length, chunk) * sizeof(float));
    int64_t r = sao_vae_downsampling_ratio(m);
    return (int64_t)(enc_ws(m, length, chunk > 0 ? chunk * r : 0) * sizeof(float));
}

static float *ws_get(sao_ctx *ctx, sao_vae *m, const char *op, size_t need) {
    if (need > m->ws_n) {
        free(m->ws);
        m->ws = malloc(need * sizeof(float));
        m->ws_n = m->ws ? need : 0;
        if (!m->ws)
            return sao_err_null(ctx, op, "out of memory for a %zu MB activation workspace "
                                "(decode in chunks, or a shorter input)", need * 4 >> 20);
    }
    return m->ws;
}

/* the device workspace of a device model: one block of the caching allocator, grown as needed */
static float *dws_get(sao_ctx *ctx, sao_vae *m, size_t need) { return sao_cuda_grow(ctx, &m->dws, &m->dws_n, need); }

static float *work(sao_ctx *ctx, sao_vae *m, const char *op, size_t need) {
    return m->device >= 0 ? dws_get(ctx, m, need) : ws_get(ctx, m, op, need);
}

void sao_vae_release_workspace(sao_vae *m) {
    free(m->ws);
    m->ws = NULL;
    m->ws_n = 0;
    sao_cuda_free(m->dws);
    m->dws = NULL;
    m->dws_n = 0;
}

/* ---- the weights on a device ------------------------------------------------------------------
 * The block holds, each at a multiple of 64 floats, every conv's folded weight and bias and every
 * Snake's alpha and beta, in FOR_EACH_CONV then FOR_EACH_SNAKE order. Folded weights are uploaded
 * again when the host folded anew (fold_gen); a bias or Snake parameter when it was rebound. */

#define FOR_EACH_SNAKE(m, body)                                                              \
    do {                                                                                     \
        coder *cs_[2] = { ((m)->parts & SAO_VAE_ENCODER) ? &(m)->enc : NULL,                 \
                          ((m)->parts & SAO_VAE_DECODER) ? &(m)->dec : NULL };               \
        for (int ci_ = 0; ci_ < 2; ci_++) {                                                  \
            coder *cd_ = cs_[ci_];                                                           \
            if (!cd_) continue;                                                              \
            snake *sn;                                                                       \
            for (int bi_ = 0; bi_ < cd_->n; bi_++) {                                         \
                for (int ri_ = 0; ri_ < 3; ri_++) {                                          \
                    sn = &cd_->blk[bi_].ru[ri_].s1; body;                                    \
                    sn = &cd_->blk[bi_].ru[ri_].s2; body;                                    \
                }                                                                            \
                sn = &cd_->blk[bi_].act; body;                                               \
            }                                                                                \
            sn = &cd_->act; body;                                                            \
        }                                                                                    \
    } while (0)

static int64_t al64(int64_t n) { return (n + 63) / 64 * 64; }

/* floats of the block */
static int64_t dparams_size(sao_vae *m) {
    int64_t n = 0;
    FOR_EACH_CONV(m, n += al64(conv_numel(cv)) + (cv->b ? al64(cv->c_out) : 0));
    FOR_EACH_SNAKE(m, n += 2 * al64(sn->c));
    return n;
}

/* one array into the block: when `all`, or stale (src differs from *up, or fold_gen moved on) */
static int put_one(sao_ctx *ctx, float **dev, float *blk, int64_t *off, const float *src, const float **up,
                   int64_t n, int stale) {
    float *d = blk + *off;
    *off += al64(n);
    if (stale || (up && *up != src)) {
        if (sao_cuda_put(ctx, d, src, n)) return -1;
        if (up) *up = src;
    }
    *dev = d;
    return 0;
}

/* uploads what is stale (everything when all) into blk and points the device fields at it */
static int upload(sao_ctx *ctx, sao_vae *m, float *blk, int all) {
    int64_t off = 0;
    int rc = 0, wstale = all || m->up_gen != m->fold_gen;
    FOR_EACH_CONV(m, {
        if (!rc) rc = put_one(ctx, &cv->dw, blk, &off, cv->w, NULL, conv_numel(cv), wstale);
        if (!rc && cv->b) rc = put_one(ctx, &cv->db, blk, &off, cv->b, &cv->up_b, cv->c_out, all);
    });
    FOR_EACH_SNAKE(m, {
        if (!rc) rc = put_one(ctx, &sn->dalpha, blk, &off, sn->alpha, &sn->up_alpha, sn->c, all);
        if (!rc) rc = put_one(ctx, &sn->dbeta, blk, &off, sn->beta, &sn->up_beta, sn->c, all);
    });
    if (rc) return -1;
    m->up_gen = m->fold_gen;
    return 0;
}

int sao_vae_device(const sao_vae *m) { return m->device; }

int sao_vae_to_host(sao_ctx *ctx, sao_vae *m) {
    SAO_UNUSED(ctx);
    if (m->device < 0) return 0;
    /* freeing is stream-ordered (alloc.cu): queued kernels that still read the blocks finish first */
    sao_cuda_free(m->dparams);
    sao_cuda_free(m->dws);
    m->dparams = NULL;
    m->dws = NULL;
    m->dws_n = 0;
    m->ops = &vae_ops_cpu;
    m->device = -1;
    return 0;
}

int sao_vae_to_device(sao_ctx *ctx, sao_vae *m, int device) {
    const char *op = "vae_to_device";
    if (sao_cuda_use(ctx, op, device, "VAE")) return -1;
    if (ensure_folded(ctx, m)) return -1;
    if (m->device >= 0 && m->device != device) {   /* another device: move */
        if (sao_vae_to_host(ctx, m) || sao_cuda_use(ctx, op, device, "VAE")) return -1;
    }
    float *blk = m->dparams;
    if (!blk) {
        void *p = NULL;
        if (sao_cuda_malloc(ctx, (size_t)dparams_size(m) * sizeof(float), &p)) return -1;
        blk = (float *)p;
    }
    /* again on its own device: every array anew, so in-place edits of the host tensors arrive */
    if (upload(ctx, m, blk, 1)) {
        if (blk != m->dparams) sao_cuda_free(blk);
        return -1;
    }
    m->dparams = blk;
    m->device = device;
    m->ops = &vae_ops_cuda;
    free(m->ws);   /* the host workspace is not used by a device model */
    m->ws = NULL;
    m->ws_n = 0;
    return 0;
}

/* before a call on a device model: its device current, and what was refolded or rebound uploaded */
static int device_begin(sao_ctx *ctx, sao_vae *m, const char *op) {
    if (sao_cuda_use(ctx, op, m->device, "VAE")) return -1;
    return upload(ctx, m, m->dparams, 0);
}

/* ---- the kernel tables ---------------------------------------------------------------------- */

static int cpu_add(sao_ctx *ctx, float *x, const float *a, int64_t n) {
    sao_threads_apply(ctx);
    #pragma omp parallel for simd schedule(static) if (n >= 32768)
    for (int64_t i = 0; i < n; i++) x[i] += a[i];
    return 0;
}

static int cpu_tanh(sao_ctx *ctx, float *x, int64_t n) {
    SAO_UNUSED(ctx);
    for (int64_t i = 0; i < n; i++) x[i] = tanhf(x[i]);
    return 0;
}

static int cpu_copy(sao_ctx *ctx, float *dst, int64_t dst_pitch, const float *src, int64_t src_pitch,
                    int64_t rows, int64_t cols) {
    SAO_UNUSED(ctx);
    if (cols <= 0) return 0;
    for (int64_t r = 0; r < rows; r++)
        memcpy(dst + r * dst_pitch, src + r * src_pitch, (size_t)cols * sizeof(float));
    return 0;
}

static int cpu_zero(sao_ctx *ctx, float *dst, int64_t n) {
    SAO_UNUSED(ctx);
    if (n > 0) memset(dst, 0, (size_t)n * sizeof(float));
    return 0;
}

static int cpu_move(sao_ctx *ctx, float *dst, const float *src, int64_t n) {
    SAO_UNUSED(ctx);
    if (n > 0) memcpy(dst, src, (size_t)n * sizeof(float));
    return 0;
}

static const vae_ops vae_ops_cpu = {
    "cpu", sao_conv1d_forward, sao_conv_transpose1d_forward, sao_snake_forward,
    cpu_add, cpu_tanh, cpu_copy, cpu_zero, cpu_move, cpu_move,
};

/* In a CPU-only build the sao_cuda_ twins and the glue (cuda_glue.h) are stubs that say so; this
 * table is never chosen there (sao_vae_to_device fails first). */
static const vae_ops vae_ops_cuda = {
    "cuda", sao_cuda_conv1d_forward, sao_cuda_conv_transpose1d_forward, sao_cuda_snake_forward,
    sao_cuda_add, sao_cuda_tanh, sao_cuda_copy_rows, sao_cuda_zero, sao_cuda_put, sao_cuda_get,
};

/* ---- the graph (on m->ops: every buffer is memory of m's device) ------------------------------ */

static int conv_run(sao_ctx *ctx, const sao_vae *m, const wnconv *c, const float *x, int64_t t_in, float *y) {
    int dev = m->device >= 0;
    const float *w = dev ? c->dw : c->w, *b = dev ? c->db : c->b;
    if (c->transposed)
        return m->ops->conv_transpose1d(ctx, x, w, b, 1, c->c_in, t_in, c->c_out, c->k,
                                        c->stride, c->pad, 0, c->dil, 1, y);
    return m->ops->conv1d(ctx, x, w, b, 1, c->c_in, t_in, c->c_out, c->k, c->stride,
                          c->pad, c->dil, 1, y);
}

static int snake_run(sao_ctx *ctx, const sao_vae *m, const snake *s, const float *x, int64_t t, float *y) {
    int dev = m->device >= 0;
    return m->ops->snake(ctx, x, dev ? s->dalpha : s->alpha, dev ? s->dbeta : s->beta, 1, s->c, t, y);
}

/* x [C, T] <- RU(x), using a and b ([C, T] each) as scratch */
static int resunit_run(sao_ctx *ctx, const sao_vae *m, const resunit *r, float *x, int64_t t, float *a, float *b) {
    if (snake_run(ctx, m, &r->s1, x, t, a)) return -1;
    if (conv_run(ctx, m, &r->c7, a, t, b)) return -1;
    if (snake_run(ctx, m, &r->s2, b, t, b)) return -1;
    if (conv_run(ctx, m, &r->c1, b, t, a)) return -1;
    return m->ops->add(ctx, x, a, r->c1.c_out * t);
}

static int interrupted(sao_ctx *ctx, const char *op) {
    return sao_interrupt_pending() ? sao_err(ctx, op, "interrupted") : 0;
}

/* audio [io, S] -> raw [2*latent, encoded_len(S)]; ws: three buffers of enc_max_act(S) */
static int encode_item(sao_ctx *ctx, sao_vae *m, const char *op, const float *audio, int64_t S,
                       float *raw, float *ws) {
    const coder *e = &m->enc;
    size_t act = (size_t)enc_max_act(m, S);
    float *x = ws, *a = ws + act, *b = ws + 2 * act;
    int64_t t = S;
    if (conv_run(ctx, m, &e->in, audio, t, x)) return -1;
    for (int i = 0; i < e->n; i++) {
        const block *bl = &e->blk[i];
        for (int r = 0; r < 3; r++)
            if (resunit_run(ctx, m, &bl->ru[r], x, t, a, b)) return -1;
        if (snake_run(ctx, m, &bl->act, x, t, x)) return -1;
        if (conv_run(ctx, m, &bl->conv, x, t, a)) return -1;
        t = sao_conv1d_out_len(t, bl->conv.k, bl->conv.stride, bl->conv.pad, 1);
        float *s = x; x = a; a = s;
        if (interrupted(ctx, op)) return -1;
    }
    if (snake_run(ctx, m, &e->act, x, t, x)) return -1;
    return conv_run(ctx, m, &e->out, x, t, raw);
}

/* latent [latent, L] -> audio [io, decoded_len(L)]; ws: three buffers of dec_max_act(L) */
static int decode_item(sao_ctx *ctx, sao_vae *m, const char *op, const float *latent, int64_t L,
                       float *audio, float *ws) {
    const coder *d = &m->dec;
    size_t act = (size_t)dec_max_act(m, L);
    float *x = ws, *a = ws + act, *b = ws + 2 * act;
    int64_t t = L;
    if (conv_run(ctx, m, &d->in, latent, t, x)) return -1;
    for (int j = 0; j < d->n; j++) {
        const block *bl = &d->blk[j];
        if (snake_run(ctx, m, &bl->act, x, t, x)) return -1;
        if (conv_run(ctx, m, &bl->conv, x, t, a)) return -1;
        t = sao_conv_transpose1d_out_len(t, bl->conv.k, bl->conv.stride, bl->conv.pad, 0, 1);
        float *s = x; x = a; a = s;
        for (int r = 0; r < 3; r++)
            if (resunit_run(ctx, m, &bl->ru[r], x, t, a, b)) return -1;
        if (interrupted(ctx, op)) return -1;
    }
    if (snake_run(ctx, m, &d->act, x, t, x)) return -1;
    if (conv_run(ctx, m, &d->out, x, t, audio)) return -1;
    if (m->cfg.final_tanh && m->ops->tanh(ctx, audio, d->out.c_out * t)) return -1;
    return 0;
}

/* ---- the chunk plan (upstream AudioAutoencoder.encode_audio / decode_audio) ----------------------
 * In latent frames: windows of `chunk` start at 0, hop, 2 hop, ... (hop = chunk - overlap) while
 * they fit, plus a final window flush with the end when the last one is not; window k is pasted
 * over [start_k, start_k + chunk) minus overlap/2 frames on each side that touches another window
 * (the first window keeps its start, the last its end). Windows are pasted in order, so where the
 * final window overlaps its neighbour by more than the overlap, the final window wins, as
 * upstream's in-order assignments do. */
typedef struct { int64_t start, from, to; } window;   /* pastes frames [from, to) of the total */

static int64_t plan_windows(int64_t n, int64_t chunk, int64_t overlap, window *w /* or NULL */) {
    int64_t hop = chunk - overlap, k = 0, last = 0;
    for (int64_t s = 0; s + chunk <= n; s += hop, k++) {
        if (w) w[k].start = s;
        last = s;
    }
    if (last + chunk != n) {
        if (w) w[k].start = n - chunk;
        k++;
    }
    if (w) {
        int64_t ol = overlap / 2;
        for (int64_t i = 0; i < k; i++) {
            w[i].from = w[i].start + (i > 0 ? ol : 0);
            w[i].to = w[i].start + chunk - (i < k - 1 ? ol : 0);
        }
    }
    return k;
}

static int check_chunking(sao_ctx *ctx, const char *op, int64_t chunk, int64_t overlap) {
    if (chunk < 1 || overlap < 0 || overlap >= chunk)
        return sao_err(ctx, op, "chunk %lld / overlap %lld: need chunk >= 1 and 0 <= overlap < chunk "
                       "(SAO: chunk 128, overlap 32)", (long long)chunk, (long long)overlap);
    return 0;
}

/* ---- public entry points --------------------------------------------------------------------- */

int sao_vae_bottleneck(sao_ctx *ctx, const sao_vae *m, const float *raw, int64_t B, int64_t L,
                       int mode, const float *eps, float *z, float *mean, float *std, double *kl) {
    const char *op = "vae_bottleneck";
    if (!raw) return sao_err(ctx, op, "raw is NULL");
    if (mode != SAO_VAE_SAMPLE && mode != SAO_VAE_MEAN)
        return sao_err(ctx, op, "mode %d: use SAO_VAE_SAMPLE (0, needs eps) or SAO_VAE_MEAN (1)", mode);
    if (mode == SAO_VAE_SAMPLE && z && !eps)
        return sao_err(ctx, op, "sampling needs eps [B, latent_dim, L] (N(0,1) noise), or use SAO_VAE_MEAN");
    int64_t D = m->cfg.latent_dim;
    double klsum = 0.0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < D; c++) {
            const float *mu = raw + (b * 2 * D + c) * L, *sc = raw + (b * 2 * D + D + c) * L;
            int64_t o = (b * D + c) * L;
            for (int64_t t = 0; t < L; t++) {
                /* softplus as torch (beta 1, threshold 20), in float */
                float sp = sc[t] > 20.0f ? sc[t] : log1pf(expf(sc[t]));
                float sd = sp + 1e-4f;
                if (std) std[o + t] = sd;
                if (mean) mean[o + t] = mu[t];
                if (z) z[o + t] = mode == SAO_VAE_MEAN ? mu[t] : mu[t] + sd * eps[o + t];
                if (kl) {
                    double var = (double)sd * (double)sd;
                    klsum += (double)mu[t] * mu[t] + var - log(var) - 1.0;
                }
            }
        }
    if (kl) *kl = B * L > 0 ? klsum / (double)(B * L) : 0.0;
    return 0;
}

/* On a device model each item's audio is put into the device workspace (after the activations),
 * the raw encoding is computed there and got back into raw (raw_out, or a host buffer when only
 * the latents are wanted); the bottleneck then runs on the host, as on the CPU. */
static int encode_common(sao_ctx *ctx, sao_vae *m, const float *audio, int64_t B, int64_t S,
                         int mode, const float *eps, float *latents, float *raw_out,
                         int64_t chunk, int64_t overlap) {
    const char *op = chunk > 0 ? "vae_encode_chunked" : "vae_encode";
    if (!audio || (!latents && !raw_out)) return sao_err(ctx, op, "audio, or both latents and raw, is NULL");
    if (B < 0) return sao_err(ctx, op, "batch %lld < 0", (long long)B);
    if (chunk > 0 && check_chunking(ctx, op, chunk, overlap)) return -1;
    if (ensure_prepared(ctx, m, SAO_VAE_ENCODER)) return -1;
    int64_t r = sao_vae_downsampling_ratio(m), L = sao_vae_encoded_len(m, S);
    if (S < 1 || L < 1)
        return sao_err(ctx, op, "%lld samples is too short (at least %lld)", (long long)S, (long long)r);
    if (chunk > 0 && S % r)
        return sao_err(ctx, op, "chunked encoding needs a multiple of %lld samples, got %lld (pad the audio)",
                       (long long)r, (long long)S);
    int dev = m->device >= 0;
    if (dev && device_begin(ctx, m, op)) return -1;
    const vae_ops *o = m->ops;
    int chunked = chunk > 0 && chunk < L;
    int64_t io = m->cfg.in_channels, D2 = 2 * (int64_t)m->cfg.latent_dim;
    size_t base = enc_ws(m, S, chunked ? chunk * r : 0), need = base;
    if (dev) need += (size_t)(io * S + D2 * L);          /* one item's audio and raw */
    else if (!raw_out) need += (size_t)(B * D2 * L);
    float *ws = work(ctx, m, op, need);
    if (!ws) return -1;
    float *raw = raw_out, *hraw = NULL;
    if (!raw_out) {
        if (dev) {
            raw = hraw = malloc((size_t)(B * D2 * L) * sizeof(float) + 1);
            if (!hraw) return sao_err(ctx, op, "out of memory");
        } else {
            raw = ws + (need - (size_t)(B * D2 * L));
        }
    }
    int rc = 0;
    window *w = NULL;
    int64_t nw = 0;
    if (chunked) {
        nw = plan_windows(L, chunk, overlap, NULL);
        w = malloc((size_t)nw * sizeof *w);
        if (!w) { free(hraw); return sao_err(ctx, op, "out of memory"); }
        plan_windows(L, chunk, overlap, w);
    }
    for (int64_t b = 0; b < B && !rc; b++) {
        const float *xb = audio + b * io * S;
        float *rb = raw + b * D2 * L;
        if (dev) {   /* the item on the device */
            float *dx = ws + base;
            if ((rc = o->put(ctx, dx, xb, io * S))) break;
            xb = dx;
            rb = dx + io * S;
        }
        if (!chunked) {
            rc = encode_item(ctx, m, op, xb, S, rb, ws);
        } else {
            int64_t span = chunk * r, lc = sao_vae_encoded_len(m, span);
            size_t act3 = 3 * (size_t)enc_max_act(m, span);
            float *xw = ws + act3, *rw = xw + io * span;
            for (int64_t k = 0; k < nw && !rc; k++) {
                rc = o->copy(ctx, xw, span, xb + w[k].start * r, S, io, span);
                if (!rc) rc = encode_item(ctx, m, op, xw, span, rw, ws);
                if (!rc) rc = o->copy(ctx, rb + w[k].from, L, rw + (w[k].from - w[k].start), lc, D2,
                                      w[k].to - w[k].from);
            }
        }
        if (!rc && dev) rc = o->get(ctx, raw + b * D2 * L, rb, D2 * L);
    }
    free(w);
    if (!rc && latents) rc = sao_vae_bottleneck(ctx, m, raw, B, L, mode, eps, latents, NULL, NULL, NULL);
    free(hraw);
    return rc ? -1 : 0;
}

int sao_vae_encode(sao_ctx *ctx, sao_vae *m, const float *audio, int64_t B, int64_t S, int mode,
                   const float *eps, float *latents, float *raw) {
    return encode_common(ctx, m, audio, B, S, mode, eps, latents, raw, 0, 0);
}

int sao_vae_encode_chunked(sao_ctx *ctx, sao_vae *m, const float *audio, int64_t B, int64_t S,
                           int mode, const float *eps, int64_t chunk, int64_t overlap,
                           float *latents, float *raw) {
    if (chunk < 1) return check_chunking(ctx, "vae_encode_chunked", chunk, overlap);
    return encode_common(ctx, m, audio, B, S, mode, eps, latents, raw, chunk, overlap);
}

/* On a device model each item's latents are put into the device workspace (after the
 * activations), decoded (windows pasted) there, and the item's audio got back. */
static int decode_common(sao_ctx *ctx, sao_vae *m, const float *latents, int64_t B, int64_t L,
                         int64_t chunk, int64_t overlap, float *audio) {
    const char *op = chunk > 0 ? "vae_decode_chunked" : "vae_decode";
    if (!latents || !audio) return sao_err(ctx, op, "latents or audio is NULL");
    if (B < 0 || L < 1) return sao_err(ctx, op, "bad shape B=%lld L=%lld", (long long)B, (long long)L);
    if (chunk > 0 && check_chunking(ctx, op, chunk, overlap)) return -1;
    if (ensure_prepared(ctx, m, SAO_VAE_DECODER)) return -1;
    int chunked = chunk > 0 && chunk < L;
    int64_t r = sao_vae_downsampling_ratio(m), S = sao_vae_decoded_len(m, L);
    int64_t D = m->cfg.latent_dim, io = m->cfg.out_channels;
    if (chunked && (S != L * r || sao_vae_decoded_len(m, chunk) != chunk * r))
        return sao_err(ctx, op, "chunked decoding needs even strides (decoded length = frames x %lld)", (long long)r);
    int dev = m->device >= 0;
    if (dev && device_begin(ctx, m, op)) return -1;
    const vae_ops *o = m->ops;
    size_t base = dec_ws(m, L, chunked ? chunk : 0), need = base;
    if (dev) need += (size_t)(D * L + io * S);          /* one item's latents and audio */
    float *ws = work(ctx, m, op, need);
    if (!ws) return -1;
    int rc = 0;
    window *w = NULL;
    int64_t nw = 0;
    if (chunked) {
        nw = plan_windows(L, chunk, overlap, NULL);
        w = malloc((size_t)nw * sizeof *w);
        if (!w) return sao_err(ctx, op, "out of memory");
        plan_windows(L, chunk, overlap, w);
    }
    for (int64_t b = 0; b < B && !rc; b++) {
        const float *zb = latents + b * D * L;
        float *yb = audio + b * io * S;
        if (dev) {   /* the item on the device */
            float *dz = ws + base;
            if ((rc = o->put(ctx, dz, zb, D * L))) break;
            zb = dz;
            yb = dz + D * L;
        }
        if (!chunked) {
            rc = decode_item(ctx, m, op, zb, L, yb, ws);
        } else {
            int64_t span = chunk * r;
            size_t act3 = 3 * (size_t)dec_max_act(m, chunk);
            float *zw = ws + act3, *yw = zw + D * chunk;
            for (int64_t k = 0; k < nw && !rc; k++) {
                rc = o->copy(ctx, zw, chunk, zb + w[k].start, L, D, chunk);
                if (!rc) rc = decode_item(ctx, m, op, zw, chunk, yw, ws);
                if (!rc) rc = o->copy(ctx, yb + w[k].from * r, S, yw + (w[k].from - w[k].start) * r, span, io,
                                      (w[k].to - w[k].from) * r);
            }
        }
        if (!rc && dev) rc = o->get(ctx, audio + b * io * S, yb, io * S);
    }
    free(w);
    return rc ? -1 : 0;
}

int sao_vae_decode(sao_ctx *ctx, sao_vae *m, const float *latents, int64_t B, int64_t L, float *audio) {
    return decode_common(ctx, m, latents, B, L, 0, 0, audio);
}

int sao_vae_decode_chunked(sao_ctx *ctx, sao_vae *m, const float *latents, int64_t B, int64_t L,
                           int64_t chunk, int64_t overlap, float *audio) {
    if (chunk < 1) return check_chunking(ctx, "vae_decode_chunked", chunk, overlap);
    return decode_common(ctx, m, latents, B, L, chunk, overlap, audio);
}

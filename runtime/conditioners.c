/* conditioners.c — SAO's NumberConditioner (seconds_start, seconds_total), forward and backward.
 * SAO_SPEC §4.2; keys as upstream under conditioner.conditioners.<id>.
 *
 *   v    = clamp(float32(value), min_val, max_val)
 *   u    = (v - min_val) / (max_val - min_val)                 float32 arithmetic, as upstream
 *   feat = [u, sin(2 pi u w), cos(2 pi u w)]                   w = embedder.embedding.0.weights [F]
 *   e    = feat W^T + b                                        embedding.1.weight [dim, 1+2F], .bias [dim]
 * Output e [B, dim] (upstream returns it as [B, 1, dim] with a mask of ones).
 * The assembly of the SAO conditioning (T5 tokens ; seconds_start ; seconds_total) lives in
 * lua/sao/conditioning.lua: it is two concatenations.
 *
 * Trainable in SAO (they get gradients with the DiT, no EMA): the backward accumulates into the
 * caller's gradient buffers (NULL skips one). */
#include "internal.h"
#include "params.h"
#include "sao_kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sao_number_cond {
    int64_t dim, nfreq;
    double min_val, max_val;
    sao_params *params;
    float *w, *lin_w, *lin_b;
};

sao_params *sao_number_cond_params(sao_number_cond *m) { return m->params; }

void sao_number_cond_free(sao_number_cond *m) {
    if (!m) return;
    sao_params_free(m->params);
    free(m);
}

sao_number_cond *sao_number_cond_new(sao_ctx *ctx, int64_t output_dim, int64_t features, double min_val,
                                     double max_val) {
    const char *op = "number_cond_new";
    if (output_dim < 1) return sao_err_null(ctx, op, "output_dim %lld < 1", (long long)output_dim);
    if (features < 2 || features % 2)
        return sao_err_null(ctx, op, "features %lld must be even and >= 2 (SAO: 256)", (long long)features);
    if (!(max_val > min_val))
        return sao_err_null(ctx, op, "max_val %g must be greater than min_val %g", max_val, min_val);
    sao_number_cond *m = calloc(1, sizeof *m);
    if (!m) return sao_err_null(ctx, op, "out of memory");
    m->dim = output_dim;
    m->nfreq = features / 2;
    m->min_val = min_val;
    m->max_val = max_val;
    m->params = sao_params_new("number_cond");
    if (!m->params ||
        sao_params_add(m->params, &m->w, 1, (const int64_t[]){ m->nfreq }, "embedder.embedding.0.weights") ||
        sao_params_add(m->params, &m->lin_w, 2, (const int64_t[]){ output_dim, 1 + features },
                       "embedder.embedding.1.weight") ||
        sao_params_add(m->params, &m->lin_b, 1, (const int64_t[]){ output_dim }, "embedder.embedding.1.bias")) {
        sao_number_cond_free(m);
        return sao_err_null(ctx, op, "out of memory");
    }
    return m;
}

/* u = (clamp(v) - min) / (max - min), each step rounded to float32 like the upstream tensor ops. */
static float normalize(const sao_number_cond *m, double value) {
    float v = (float)value, lo = (float)m->min_val, hi = (float)m->max_val;
    if (v != v) return v;   /* NaN stays NaN, as torch.clamp */
    v = v < lo ? lo : (v > hi ? hi : v);
    float num = v - lo;
    return num / (float)(m->max_val - m->min_val);
}

int sao_number_cond_forward(sao_ctx *ctx, sao_number_cond *m, const double *values, int64_t B, float *u,
                            float *emb) {
    const char *op = "number_cond_forward";
    if (!m || !values || !emb) return sao_err(ctx, op, "NULL model, values or output");
    if (B < 1) return sao_err(ctx, op, "batch %lld < 1", (long long)B);
    if (sao_params_check(ctx, m->params)) return -1;
    int64_t nf = 1 + 2 * m->nfreq;
    float *buf = malloc(sizeof(float) * (size_t)(B * (nf + 1)));
    if (!buf) return sao_err(ctx, op, "out of memory");
    float *uu = buf, *feat = buf + B;
    for (int64_t b = 0; b < B; b++) uu[b] = normalize(m, values[b]);
    int rc = sao_number_features_forward(ctx, uu, m->w, B, m->nfreq, feat) ||
             sao_linear_forward(ctx, feat, m->lin_w, m->lin_b, B, nf, m->dim, 0, emb);
    if (!rc && u) memcpy(u, uu, sizeof(float) * (size_t)B);
    free(buf);
    return rc ? -1 : 0;
}

int sao_number_cond_backward(sao_ctx *ctx, sao_number_cond *m, const double *values, int64_t B,
                             const float *demb, float *dw, float *dlin_w, float *dlin_b) {
    const char *op = "number_cond_backward";
    if (!m || !values || !demb) return sao_err(ctx, op, "NULL model, values or gradient");
    if (B < 1) return sao_err(ctx, op, "batch %lld < 1", (long long)B);
    if (sao_params_check(ctx, m->params)) return -1;
    int64_t nf = 1 + 2 * m->nfreq;
    float *buf = calloc((size_t)(B * (2 * nf + 1)), sizeof(float));
    if (!buf) return sao_err(ctx, op, "out of memory");
    float *uu = buf, *feat = buf + B, *dfeat = feat + B * nf;
    for (int64_t b = 0; b < B; b++) uu[b] = normalize(m, values[b]);
    int rc = sao_number_features_forward(ctx, uu, m->w, B, m->nfreq, feat) ||
             sao_linear_backward(ctx, demb, feat, m->lin_w, B, nf, m->dim, dw ? dfeat : NULL, dlin_w, dlin_b) ||
             (dw && sao_number_features_backward(ctx, dfeat, uu, m->w, B, m->nfreq, dw, NULL));
    free(buf);
    return rc ? -1 : 0;
}

/* dit_lora.c — LoRA adapters on the DiT's block linears: forward, backward and merge. See
 * sao_lora.h. The block code calls dit_lin_forward / dit_lin_backward for every adaptable linear;
 * without adapters they are the plain kernels (of the model's table, m->ops). With adapters every
 * kernel and memory operation also goes through m->ops, and the adapter tensors, their gradients
 * and the [n, r] scratch live in the model's memory: sao_dit_lora_place moves what is elsewhere
 * (after sao_dit_to_device / _to_host, and tensors bound from a file). Merging runs on the CPU. */
#include "dit_internal.h"
#include "sao_lora.h"
#include "sao_cuda.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *slot_names[DIT_LORA_SLOTS] = {
    "self_attn.to_qkv", "self_attn.to_out", "cross_attn.to_q", "cross_attn.to_kv", "cross_attn.to_out",
    "ff.ff.0.proj", "ff.ff.2"};

struct dit_lora {
    int rank;
    double alpha, strength;
    int on[DIT_LORA_SLOTS];
    sao_params *params, *grads;
    float **A, **B, **gA, **gB;      /* [depth * SLOTS] */
    float *u, *du;                   /* scratch [n, r], from sops (the table of the model when made) */
    size_t scratch_n;
    const dit_ops *sops;
};

static void slot_dims(const sao_dit *m, int slot, int64_t *in, int64_t *out) {
    int64_t E = m->cfg.embed_dim, Dc = m->cfg.cond_token_dim, F = (int64_t)m->cfg.ff_mult * E;
    switch (slot) {
    case 0: *in = E; *out = 3 * E; break;
    case 3: *in = Dc; *out = 2 * Dc; break;
    case 5: *in = E; *out = 2 * F; break;
    case 6: *in = F; *out = E; break;
    default: *in = E; *out = E; break;
    }
}

void sao_dit_lora_remove(sao_dit *m) {
    dit_lora *l = m->lora;
    if (!l) return;
    sao_params_free(l->params);
    sao_params_free(l->grads);
    free(l->A); free(l->B); free(l->gA); free(l->gB);
    if (l->sops) { l->sops->release(l->u); l->sops->release(l->du); }
    free(l);
    m->lora = NULL;
}

int sao_dit_lora_rank(const sao_dit *m) { return m->lora ? m->lora->rank : 0; }
sao_params *sao_dit_lora_params(sao_dit *m) { return m->lora ? m->lora->params : NULL; }
sao_params *sao_dit_lora_grads(sao_dit *m) { return m->lora ? m->lora->grads : NULL; }

static int bind_zero(sao_ctx *ctx, sao_params *p) {
    for (int i = 0; i < sao_params_count(p); i++) {
        sao_tensor *t = sao_tensor_new(ctx, SAO_F32, sao_params_ndim(p, i), sao_params_shape(p, i));
        if (!t) return -1;
        int rc = sao_params_bind(ctx, p, sao_params_name(p, i), t);
        sao_tensor_free(t);
        if (rc) return -1;
    }
    return 0;
}

/* t in the model's memory: on its device, or on the host. */
static int placed(const sao_dit *m, const sao_tensor *t) {
    return m->device >= 0 ? t->storage->device == SAO_CUDA : t->storage->device == SAO_CPU;
}

static int place_registry(sao_ctx *ctx, sao_dit *m, sao_params *p) {
    for (int i = 0; i < sao_params_count(p); i++) {
        const sao_tensor *t = sao_params_tensor(p, i);
        if (!t || placed(m, t)) continue;
        sao_tensor *moved = m->device >= 0 ? sao_tensor_to_cuda(ctx, t, m->device) : sao_tensor_to_cpu(ctx, t);
        if (!moved) return -1;
        int rc = sao_params_bind(ctx, p, sao_params_name(p, i), moved);
        sao_tensor_free(moved);
        if (rc) return -1;
    }
    return 0;
}

int sao_dit_lora_place(sao_ctx *ctx, sao_dit *m) {
    dit_lora *l = m->lora;
    if (!l) return 0;
    if (l->sops && l->sops != m->ops) {   /* the scratch belongs to the old device: made anew on use */
        l->sops->release(l->u);
        l->sops->release(l->du);
        l->u = l->du = NULL;
        l->scratch_n = 0;
        l->sops = NULL;
    }
    return place_registry(ctx, m, l->params) || place_registry(ctx, m, l->grads) ? -1 : 0;
}

int sao_dit_lora_add(sao_ctx *ctx, sao_dit *m, int rank, double alpha, const char *targets) {
    const char *op = "lora_add";
    if (rank < 1) return sao_err(ctx, op, "rank %d: must be at least 1", rank);
    if (m->lora) return sao_err(ctx, op, "the model already has adapters (merge or remove them first)");
    dit_lora *l = calloc(1, sizeof *l);
    if (!l) return sao_err(ctx, op, "out of memory");
    l->rank = rank;
    l->alpha = alpha > 0 ? alpha : rank;
    l->strength = 1.0;
    int any = 0;
    for (int s = 0; s < DIT_LORA_SLOTS; s++) {
        if (!targets || !*targets) { l->on[s] = 1; any = 1; continue; }
        const char *p = targets;
        size_t n = strlen(slot_names[s]);
        while ((p = strstr(p, slot_names[s])) != NULL) {
            int starts = p == targets || p[-1] == ',' || p[-1] == ' ';
            int ends = p[n] == 0 || p[n] == ',' || p[n] == ' ';
            if (starts && ends) { l->on[s] = 1; any = 1; break; }
            p += n;
        }
    }
    /* every name in targets must be known */
    if (targets && *targets) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", targets);
        for (char *tok = strtok(buf, ", "); tok; tok = strtok(NULL, ", ")) {
            int known = 0;
            for (int s = 0; s < DIT_LORA_SLOTS; s++) known |= strcmp(tok, slot_names[s]) == 0;
            if (!known) {
                free(l);
                return sao_err(ctx, op, "unknown target module '%s' (one of self_attn.to_qkv, self_attn.to_out, "
                               "cross_attn.to_q, cross_attn.to_kv, cross_attn.to_out, ff.ff.0.proj, ff.ff.2)", tok);
            }
        }
    }
    if (!any) { free(l); return sao_err(ctx, op, "no target modules selected"); }
    int depth = m->cfg.depth;
    size_t n = (size_t)depth * DIT_LORA_SLOTS;
    l->A = calloc(n, sizeof(float *)); l->B = calloc(n, sizeof(float *));
    l->gA = calloc(n, sizeof(float *)); l->gB = calloc(n, sizeof(float *));
    l->params = sao_params_new("lora");
    l->grads = sao_params_new("lora-grads");
    m->lora = l;
    if (!l->A || !l->B || !l->gA || !l->gB || !l->params || !l->grads) goto oom;
    for (int i = 0; i < depth; i++) {
        for (int s = 0; s < DIT_LORA_SLOTS; s++) {
            if (!l->on[s]) continue;
            int64_t in, out;
            slot_dims(m, s, &in, &out);
            int64_t sa[2] = {rank, in}, sb[2] = {out, rank};
            size_t k = (size_t)i * DIT_LORA_SLOTS + (size_t)s;
            const char *fmtA = "transformer.layers.%d.%s.lora_A.weight", *fmtB = "transformer.layers.%d.%s.lora_B.weight";
            if (sao_params_add(l->params, &l->A[k], 2, sa, fmtA, i, slot_names[s]) ||
                sao_params_add(l->params, &l->B[k], 2, sb, fmtB, i, slot_names[s]) ||
                sao_params_add(l->grads, &l->gA[k], 2, sa, fmtA, i, slot_names[s]) ||
                sao_params_add(l->grads, &l->gB[k], 2, sb, fmtB, i, slot_names[s])) goto oom;
        }
    }
    if (bind_zero(ctx, l->params) || bind_zero(ctx, l->grads) || sao_dit_lora_place(ctx, m)) {
        sao_dit_lora_remove(m);
        return -1;
    }
    return 0;
oom:
    sao_dit_lora_remove(m);
    return sao_err(ctx, op, "out of memory");
}

int sao_dit_lora_set_strength(sao_ctx *ctx, sao_dit *m, double strength) {
    if (!m->lora) return sao_err(ctx, "lora_strength", "the model has no adapters");
    m->lora->strength = strength;
    return 0;
}

int sao_dit_lora_zero_grad(sao_ctx *ctx, sao_dit *m) {
    dit_lora *l = m->lora;
    if (!l) return 0;
    if (sao_dit_lora_place(ctx, m)) return -1;
    for (int i = 0; i < sao_params_count(l->grads); i++) {
        sao_tensor *t = sao_params_tensor(l->grads, i);
        if (m->ops->zero(ctx, sao_tensor_data(t), sao_tensor_numel(t))) return -1;
    }
    return 0;
}

/* The [n, r] scratch u and du in the model's memory (the old contents are not kept). */
static int scratch(sao_ctx *ctx, const sao_dit *m, dit_lora *l, int64_t n) {
    size_t need = (size_t)n * (size_t)l->rank;
    if (need <= l->scratch_n && l->sops == m->ops) return 0;
    if (l->sops) { l->sops->release(l->u); l->sops->release(l->du); }
    l->u = l->du = NULL;
    l->scratch_n = 0;
    l->sops = m->ops;
    l->u = m->ops->alloc(ctx, need);
    l->du = l->u ? m->ops->alloc(ctx, need) : NULL;
    if (!l->u || !l->du) return sao_err(ctx, "lora", "out of memory for a [%lld, %d] scratch (%s)", (long long)n, l->rank,
                                        sao_ctx_error(ctx));
    l->scratch_n = need;
    return 0;
}

static double lora_scale(const dit_lora *l) { return l->strength * l->alpha / l->rank; }

/* u = scale * x A^T  [n, r] */
static int lora_u(sao_ctx *ctx, const sao_dit *m, dit_lora *l, size_t k, const float *x, int64_t n, int64_t in) {
    if (scratch(ctx, m, l, n) || m->ops->linear(ctx, x, l->A[k], NULL, n, in, l->rank, 0, l->u)) return -1;
    return m->ops->scale(ctx, l->u, n * l->rank, (float)lora_scale(l));
}

int dit_lin_forward(sao_ctx *ctx, const sao_dit *m, int layer, int slot, const float *x, int64_t n, int64_t in,
                    int64_t out, const float *w, const float *b, int accumulate, float *y) {
    if (m->ops->linear(ctx, x, w, b, n, in, out, accumulate, y)) return -1;
    dit_lora *l = m->lora;
    if (!l || !l->on[slot] || l->strength == 0.0) return 0;
    size_t k = (size_t)layer * DIT_LORA_SLOTS + (size_t)slot;
    if (lora_u(ctx, m, l, k, x, n, in)) return -1;
    return m->ops->linear(ctx, l->u, l->B[k], NULL, n, l->rank, out, 1, y);
}

int dit_lin_backward(sao_ctx *ctx, const sao_dit *m, int layer, int slot, const float *dy, const float *x,
                     int64_t n, int64_t in, int64_t out, const float *w, float *dx, float *dw, float *db) {
    dit_lora *l = m->lora;
    int adapted = l && l->on[slot] && l->strength != 0.0;
    /* with adapters the base is frozen: skip its weight gradient */
    if (m->ops->linear_bwd(ctx, dy, x, w, n, in, out, dx, adapted ? NULL : dw, adapted ? NULL : db)) return -1;
    if (!adapted) return 0;
    size_t k = (size_t)layer * DIT_LORA_SLOTS + (size_t)slot;
    if (lora_u(ctx, m, l, k, x, n, in)) return -1;
    /* y += u B^T: dB += dy^T u; du = dy B, then d(x A^T) = scale du: dA += (scale du)^T x, dx += (scale du) A */
    const dit_ops *ops = m->ops;
    if (ops->zero(ctx, l->du, n * l->rank)) return -1;
    if (ops->linear_bwd(ctx, dy, l->u, l->B[k], n, l->rank, out, l->du, l->gB[k], NULL)) return -1;
    if (ops->scale(ctx, l->du, n * l->rank, (float)lora_scale(l))) return -1;
    return ops->linear_bwd(ctx, l->du, x, l->A[k], n, in, l->rank, dx, l->gA[k], NULL);
}

/* W += s B A for every adapted linear, on the model's kernel table (host or device): A^T [in, r] and
 * s B [out, r] into a scratch, then W [out, in] += (s B) (A^T)^T as one accumulating linear. On a
 * device the product runs in fp32 whatever the GEMM precision (merged weights are kept), and the
 * block's weights are marked newer than the host tensors (copied back by dit:to("cpu")). */
int sao_dit_lora_merge(sao_ctx *ctx, sao_dit *m) {
    const char *op = "lora_merge";
    dit_lora *l = m->lora;
    if (!l) return sao_err(ctx, op, "the model has no adapters");
    if (dit_begin(ctx, m, op)) return -1;   /* device current, weights and adapters in place */
    const dit_ops *ops = m->ops;
    int64_t r = l->rank, most = 0;
    for (int sl = 0; sl < DIT_LORA_SLOTS; sl++) {
        int64_t in, out;
        slot_dims(m, sl, &in, &out);
        if (l->on[sl] && (in + out) * r > most) most = (in + out) * r;
    }
    float *scratch = ops->alloc(ctx, (size_t)most);
    if (!scratch) return -1;
    int prec = m->device >= 0 ? sao_cuda_gemm_precision(SAO_GEMM_FP32) : 0;
    float s = (float)lora_scale(l);
    int rc = 0;
    for (int i = 0; i < m->cfg.depth && !rc; i++) {
        dit_layer *L = &m->layers[i];
        float *W[DIT_LORA_SLOTS] = {L->qkv, L->attn_out, L->ca_q, L->ca_kv, L->ca_out, L->ff_w1, L->ff_w2};
        for (int sl = 0; sl < DIT_LORA_SLOTS && !rc; sl++) {
            if (!l->on[sl]) continue;
            int64_t in, out;
            slot_dims(m, sl, &in, &out);
            size_t k = (size_t)i * DIT_LORA_SLOTS + (size_t)sl;
            float *At = scratch, *sB = scratch + in * r;
            rc = ops->transpose(ctx, l->A[k], 1, r, in, 0, At) || dit_copy(ctx, ops, sB, l->B[k], out * r) ||
                 ops->scale(ctx, sB, out * r, s) || ops->linear(ctx, sB, At, NULL, out, r, in, 1, W[sl]);
        }
    }
    if (m->device >= 0) {
        sao_cuda_gemm_precision(prec);
        m->dirty = 1;   /* the block holds the merged weights; the host tensors get them on the way back */
        m->bf16_stale = 1;   /* and a bf16 mirror of them is out of date */
    }
    ops->release(scratch);
    if (rc) return -1;
    sao_dit_lora_remove(m);
    return 0;
}

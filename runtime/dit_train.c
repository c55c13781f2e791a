/* dit_train.c — the DiT's training forward (recording activations) and its hand-written backward,
 * layer by layer in reverse (llm.c style). SAO_SPEC §5 and §7.
 *
 * Memory is planned once from (config, B, T, L, recompute) and allocated in one arena:
 *   stem record + head buffers + every block's input + per-block records (recompute 0) or one
 *   block record (recompute 1: the backward re-runs each block's forward from its saved input)
 *   + backward scratch. Nothing is allocated inside a step.
 * Gradients live in a second DiT instance whose parameter pointers are bound to one zeroed arena
 * (sao_dit_train_grads gives its registry), so a parameter's gradient has its upstream name.
 * Backward accumulates into the gradients (call sao_dit_train_zero_grad between steps); it also
 * returns d(loss)/d(x), d/d(cross) and d/d(global) when asked (the number conditioners train too).
 *
 * One code path for every device: each kernel and memory operation goes through the model's
 * kernel table (m->ops, dit_internal.h), and both arenas live in that device's memory (ops->alloc).
 * The entry points take HOST buffers (inputs, output, d(output), the input gradients): they are
 * copied into the arena (ops->put) and the results copied out (ops->get), plain memcpys on the
 * CPU, so a host model computes exactly what it did when the trainer borrowed the caller's buffers.
 * A device model (sao_dit_to_device) trains on its GPU with its gradients in device memory; the
 * trainer belongs to the device the model was on when it was made. LoRA adapters run on the CPU only. */
#include "dit_internal.h"
#include "sao_lora.h"
#include "sao_cuda.h"
#include <stdlib.h>
#include <string.h>

struct sao_dit_train {
    sao_dit *m;
    const dit_ops *ops;       /* the model's table when the trainer was made: its memory holds the arenas */
    int device;               /* the model's device then (-1: host) */
    sao_dit *g;               /* gradients: same layout, pointers into garena */
    float *garena;
    int64_t gnumel;
    dit_dims d;
    int recompute;
    float *arena;
    size_t arena_floats;
    dit_stem stem;
    dit_acts *acts;           /* depth records (recompute 0) or 1 */
    float *hin;               /* [depth, B*N*E] block inputs */
    float *h, *o, *ot, *y;    /* final stream, project_out, dropped-token copy, output (token layout) */
    /* backward scratch */
    float *dh, *dln, *dqkv, *datt, *dp, *dg, *dkv, *dcc, *dy, *dot, *dxt2, *dxt;
    float *dtok, *dhid, *dpre, *dtf, *dcact, *dcpre;
    /* the last forward's inputs, copied in; the output / d(output) and the input gradients staged */
    float *x, *t, *cross, *global, *outb, *dxb, *dcrossb, *dglobalb;
    int ready, has_cross;
};

sao_params *sao_dit_train_grads(sao_dit_train *tr) { return tr->g->params; }
int64_t sao_dit_train_bytes(const sao_dit_train *tr) {
    return (int64_t)(tr->arena_floats * sizeof(float)) + tr->gnumel * (int64_t)sizeof(float);
}

int64_t sao_dit_train_device_bytes(const sao_dit_train *tr) {
    if (tr->device < 0) return sao_dit_train_bytes(tr);
    return (int64_t)(sao_cuda_size_class(tr->arena_floats * sizeof(float)) +
                     sao_cuda_size_class((size_t)tr->gnumel * sizeof(float)));
}

int sao_dit_train_grad_sumsq(sao_ctx *ctx, sao_dit_train *tr, double *out) {
    return tr->ops->sumsq(ctx, tr->garena, tr->gnumel, out);
}

void sao_dit_train_free(sao_dit_train *tr) {
    if (!tr) return;
    sao_dit_free(tr->g);
    if (tr->ops) {
        tr->ops->release(tr->garena);
        tr->ops->release(tr->arena);
    }
    free(tr->acts);
    free(tr);
}

static void release_nothing(sao_storage *s) { SAO_UNUSED(s); }
static const sao_allocator borrowed = {"arena", release_nothing};

/* The model must still be where it was when the trainer was made (its arenas are there); on a
 * device, its device current and its weights up to date (dit_begin). */
static int same_place(sao_ctx *ctx, const char *op, sao_dit_train *tr) {
    if (tr->m->device != tr->device)
        return sao_err(ctx, op, "the model moved (from %s %d to %s %d) since this trainer was made: make a new "
                       "trainer", tr->device < 0 ? "host" : "CUDA device", tr->device,
                       tr->m->device < 0 ? "host" : "CUDA device", tr->m->device);
    return dit_begin(ctx, tr->m, op);
}

sao_dit_train *sao_dit_train_new(sao_ctx *ctx, sao_dit *m, int64_t B, int64_t T, int64_t L, int recompute) {
    const char *op = "dit_train_new";
    if (B <= 0 || T <= 0 || L < 0) return sao_err_null(ctx, op, "bad sizes B=%lld T=%lld L=%lld", (long long)B, (long long)T, (long long)L);
    sao_dit_train *tr = calloc(1, sizeof *tr);
    if (!tr) return sao_err_null(ctx, op, "out of memory");
    tr->m = m;
    tr->ops = m->ops;
    tr->device = m->device;
    tr->recompute = recompute ? 1 : 0;
    dit_dims_init(m, B, T, L, &tr->d);
    const dit_dims *d = &tr->d;
    int depth = m->cfg.depth;
    /* gradients: a twin model bound to one arena */
    tr->g = sao_dit_new(ctx, &m->cfg);
    if (!tr->g) { free(tr); return NULL; }
    tr->gnumel = sao_params_numel(tr->g->params);
    tr->garena = tr->ops->alloc(ctx, (size_t)tr->gnumel);
    if (!tr->garena || tr->ops->zero(ctx, tr->garena, tr->gnumel)) { sao_dit_train_free(tr); return NULL; }
    int64_t off = 0;
    for (int i = 0; i < sao_params_count(tr->g->params); i++) {
        int nd = sao_params_ndim(tr->g->params, i);
        const int64_t *shp = sao_params_shape(tr->g->params, i);
        int64_t n = 1;
        for (int k = 0; k < nd; k++) n *= shp[k];
        sao_tensor *w = sao_tensor_wrap(ctx, tr->garena + off, (size_t)n * sizeof(float), SAO_F32, nd, shp, &borrowed, NULL);
        if (w) w->storage->device = m->device >= 0 ? SAO_CUDA : SAO_CPU;   /* Lua sees where the gradients are */
        if (!w || sao_params_bind(ctx, tr->g->params, sao_params_name(tr->g->params, i), w)) {
            sao_tensor_free(w);
            sao_dit_train_free(tr);
            return NULL;
        }
        sao_tensor_free(w);
        off += n;
    }
    /* activation + scratch plan */
    size_t BN = (size_t)(d->B * d->N), E = (size_t)d->E, BL = (size_t)(d->B * (L > 0 ? L : 1));
    size_t BT = (size_t)(d->B * d->T), io = (size_t)d->io, BE = (size_t)(d->B * d->E);
    size_t nacts = tr->recompute ? 1 : (size_t)depth;
    size_t need = dit_stem_size(d) + nacts * dit_acts_size(d) + (size_t)depth * BN * E +
                  BN * E + BN * io + BT * io * 2 +                          /* h, o, ot, y */
                  BN * E * 3 + BN * 3 * E + BN * (size_t)(2 * d->F + d->F) + /* dh, dln, datt, dqkv, dp, dg */
                  BL * 2 * (size_t)d->Dc + BL * (size_t)d->Dc +               /* dkv, dcc */
                  BT * io * 4 + BN * io +                                     /* dy, dot, dxt2, dxt, (do) */
                  BE * 3 + (size_t)(d->B * d->TF) + BL * (size_t)d->Dc * 2 + /* dtok, dhid, dpre, dtf, dcact, dcpre */
                  BT * io * 3 + (size_t)d->B + BL * (size_t)d->Dc * 2 +       /* x, out, dx; t; cross, dcross */
                  (size_t)(d->B * d->Dg) * 2;                                 /* global, dglobal */
    tr->arena_floats = need;
    tr->acts = calloc(nacts, sizeof *tr->acts);
    if (!tr->acts) {
        sao_dit_train_free(tr);
        return sao_err_null(ctx, op, "out of memory");
    }
    tr->arena = tr->ops->alloc(ctx, need);
    if (!tr->arena) {
        sao_dit_train_free(tr);
        return sao_err_null(ctx, op, "out of %s memory for the %zu MB activation plan (%s)",
                            m->device >= 0 ? "device" : "host", need * 4 >> 20, sao_ctx_error(ctx));
    }
    float *b = tr->arena;
    dit_stem_layout(d, b, &tr->stem); b += dit_stem_size(d);
    for (size_t i = 0; i < nacts; i++) { dit_acts_layout(d, b, &tr->acts[i]); b += dit_acts_size(d); }
    tr->hin = b; b += (size_t)depth * BN * E;
    tr->h = b; b += BN * E;
    tr->o = b; b += BN * io;
    tr->ot = b; b += BT * io;
    tr->y = b; b += BT * io;
    tr->dh = b; b += BN * E;
    tr->dln = b; b += BN * E;
    tr->datt = b; b += BN * E;
    tr->dqkv = b; b += BN * 3 * E;
    tr->dp = b; b += BN * (size_t)(2 * d->F);
    tr->dg = b; b += BN * (size_t)d->F;
    tr->dkv = b; b += BL * 2 * (size_t)d->Dc;
    tr->dcc = b; b += BL * (size_t)d->Dc;
    tr->dy = b; b += BT * io;
    tr->dot = b; b += BN * io;      /* d(o), all tokens */
    tr->dxt2 = b; b += BT * io;
    tr->dxt = b; b += BT * io * 2;
    tr->dtok = b; b += BE;
    tr->dhid = b; b += BE;
    tr->dpre = b; b += BE;
    tr->dtf = b; b += (size_t)(d->B * d->TF);
    tr->dcact = b; b += BL * (size_t)d->Dc;
    tr->dcpre = b; b += BL * (size_t)d->Dc;
    tr->x = b; b += BT * io;
    tr->outb = b; b += BT * io;
    tr->dxb = b; b += BT * io;
    tr->t = b; b += (size_t)d->B;
    tr->cross = b; b += BL * (size_t)d->Dc;
    tr->dcrossb = b; b += BL * (size_t)d->Dc;
    tr->global = b; b += (size_t)(d->B * d->Dg);
    tr->dglobalb = b; b += (size_t)(d->B * d->Dg);
    return tr;
}

int sao_dit_train_zero_grad(sao_ctx *ctx, sao_dit_train *tr) {
    if (tr->ops->zero(ctx, tr->garena, tr->gnumel)) return -1;
    return sao_dit_lora_zero_grad(ctx, tr->m);
}

/* flags: SAO_DIT_DEVICE_IO (the caller's buffers are on the trainer's device: queued device copies,
 * nothing waits), else host buffers (blocking transfers on a device trainer). */
static int device_io(sao_ctx *ctx, const char *op, const sao_dit_train *tr, int flags) {
    if (!(flags & SAO_DIT_DEVICE_IO)) return 0;
    if (tr->m->device < 0) return sao_err(ctx, op, "device buffers given to a trainer on the CPU");
    return 1;
}

static int take(sao_ctx *ctx, const dit_ops *ops, int dev, float *dst, const float *src, int64_t n) {
    return dev ? dit_copy(ctx, ops, dst, src, n) : ops->put(ctx, dst, src, n);
}

int sao_dit_train_forward(sao_ctx *ctx, sao_dit_train *tr, const float *x, const float *t, const float *cross,
                          const float *global, float *out, int flags) {
    const dit_dims *d = &tr->d;
    sao_dit *m = tr->m;
    const dit_ops *ops = tr->ops;
    if (same_place(ctx, "dit_train_forward", tr)) return -1;
    int dev = device_io(ctx, "dit_train_forward", tr, flags);
    if (dev < 0) return -1;
    int64_t B = d->B, BTio = d->B * d->T * d->io;
    size_t BNE = (size_t)(d->B * d->N * d->E);
    tr->ready = 0;
    tr->has_cross = d->L > 0 && cross;
    if (take(ctx, ops, dev, tr->x, x, BTio) || take(ctx, ops, dev, tr->t, t, B) ||
        take(ctx, ops, dev, tr->global, global, B * d->Dg) ||
        (tr->has_cross && take(ctx, ops, dev, tr->cross, cross, B * d->L * d->Dc))) return -1;
    if (dit_stem_forward(ctx, m, d, tr->x, tr->t, tr->has_cross ? tr->cross : NULL, tr->global, &tr->stem, tr->h))
        return -1;
    for (int i = 0; i < m->cfg.depth; i++) {
        if (dit_copy(ctx, ops, tr->hin + (size_t)i * BNE, tr->h, (int64_t)BNE)) return -1;
        if (dit_block_forward(ctx, m, i, d, tr->stem.cc, tr->h, &tr->acts[tr->recompute ? 0 : i])) return -1;
    }
    if (dit_head_forward(ctx, m, d, tr->h, tr->o, tr->ot, tr->y)) return -1;
    if (ops->transpose(ctx, tr->y, d->B, d->T, d->io, 0, dev ? out : tr->outb) ||
        (!dev && ops->get(ctx, out, tr->outb, BTio))) return -1;
    tr->ready = 1;
    return 0;
}

/* Backward of y = W2 silu(W1 x + b1) + b2 given dy; accumulates dW*, db*, and dx when not NULL. */
static int mlp2_backward(sao_ctx *ctx, const dit_ops *ops, const float *dy, const float *x, const float *pre,
                         const float *act, int64_t n, int64_t in, int64_t hid, int64_t out, const float *w1,
                         const float *w2, float *dw1, float *db1, float *dw2, float *db2, float *dact, float *dpre,
                         float *dx) {
    if (ops->zero(ctx, dact, n * hid)) return -1;
    if (ops->linear_bwd(ctx, dy, act, w2, n, hid, out, dact, dw2, db2)) return -1;
    if (ops->zero(ctx, dpre, n * hid)) return -1;
    if (ops->silu_bwd(ctx, dact, pre, n * hid, dpre)) return -1;
    return ops->linear_bwd(ctx, dpre, x, w1, n, in, hid, dx, dw1, db1);
}

/* One block backward: dh [B*N, E] is d(loss)/d(block output) on entry and d/d(block input) on exit. */
static int block_backward(sao_ctx *ctx, sao_dit_train *tr, int i, const float *hin, const dit_acts *a) {
    const dit_dims *d = &tr->d;
    const dit_layer *l = &tr->m->layers[i], *gl = &tr->g->layers[i];
    const dit_ops *ops = tr->ops;
    int64_t B = d->B, N = d->N, E = d->E, D = d->D, H = d->H, L = d->L, Dc = d->Dc, F = d->F, BN = B * N;
    float *dh = tr->dh;
    /* h = h2 + W2 swiglu(W1 LN3(h2) + b1) + b2 */
    if (ops->zero(ctx, tr->dg, BN * F)) return -1;
    if (dit_lin_backward(ctx, tr->m, i, 6, dh, a->g, BN, F, E, l->ff_w2, tr->dg, gl->ff_w2, gl->ff_b2)) return -1;
    if (ops->zero(ctx, tr->dp, BN * 2 * F)) return -1;
    if (ops->swiglu_bwd(ctx, tr->dg, a->p, BN, F, tr->dp)) return -1;
    if (ops->zero(ctx, tr->dln, BN * E)) return -1;
    if (dit_lin_backward(ctx, tr->m, i, 5, tr->dp, a->ln3, BN, E, 2 * F, l->ff_w1, tr->dln, gl->ff_w1, gl->ff_b1)) return -1;
    if (ops->layernorm_bwd(ctx, tr->dln, a->h2, l->ff_g, a->mean3, a->rstd3, BN, E, dh, gl->ff_g, NULL)) return -1;
    /* h2 = h1 + W_o CrossAttn(W_q LN2(h1), W_kv c) */
    if (L > 0) {
        if (ops->zero(ctx, tr->datt, BN * E)) return -1;
        if (dit_lin_backward(ctx, tr->m, i, 4, dh, a->att2, BN, E, E, l->ca_out, tr->datt, gl->ca_out, NULL)) return -1;
        sao_attn_desc ca = {.B = B, .H = H, .Hkv = d->Hkv, .T = N, .M = L, .D = D, .scale = 0,
                            .q_stride = {N * E, D, E}, .k_stride = {L * 2 * Dc, D, 2 * Dc},
                            .v_stride = {L * 2 * Dc, D, 2 * Dc}, .o_stride = {N * E, D, E}};
        float *dq = tr->dqkv;   /* [BN, E] of the qkv scratch */
        if (ops->zero(ctx, dq, BN * E)) return -1;
        if (ops->zero(ctx, tr->dkv, B * L * 2 * Dc)) return -1;
        if (ops->attention_bwd(ctx, &ca, a->q2, a->kv, a->kv + Dc, NULL, NULL, a->att2, a->lse2, tr->datt,
                                   dq, tr->dkv, tr->dkv + Dc, NULL)) return -1;
        if (dit_lin_backward(ctx, tr->m, i, 3, tr->dkv, tr->stem.cc, B * L, Dc, 2 * Dc, l->ca_kv, tr->dcc, gl->ca_kv, NULL)) return -1;
        if (ops->zero(ctx, tr->dln, BN * E)) return -1;
        if (dit_lin_backward(ctx, tr->m, i, 2, dq, a->ln2, BN, E, E, l->ca_q, tr->dln, gl->ca_q, NULL)) return -1;
        if (ops->layernorm_bwd(ctx, tr->dln, a->h1, l->ca_g, a->mean2, a->rstd2, BN, E, dh, gl->ca_g, NULL)) return -1;
    }
    /* h1 = hin + W_o SelfAttn(RoPE(q), RoPE(k), v) with [q|k|v] = W_qkv LN1(hin) */
    if (ops->zero(ctx, tr->datt, BN * E)) return -1;
    if (dit_lin_backward(ctx, tr->m, i, 1, dh, a->att1, BN, E, E, l->attn_out, tr->datt, gl->attn_out, NULL)) return -1;
    sao_attn_desc sa = {.B = B, .H = H, .Hkv = H, .T = N, .M = N, .D = D, .scale = 0,
                        .q_stride = {N * 3 * E, D, 3 * E}, .k_stride = {N * 3 * E, D, 3 * E},
                        .v_stride = {N * 3 * E, D, 3 * E}, .o_stride = {N * E, D, E}};
    if (ops->zero(ctx, tr->dqkv, BN * 3 * E)) return -1;
    if (ops->attention_bwd(ctx, &sa, a->qkv, a->qkv + E, a->qkv + 2 * E, NULL, NULL, a->att1, a->lse1, tr->datt,
                               tr->dqkv, tr->dqkv + E, tr->dqkv + 2 * E, NULL)) return -1;
    int64_t qs[3] = {N * 3 * E, D, 3 * E};
    if (ops->rope_bwd(ctx, tr->dqkv, B, H, N, D, qs, d->rot, 0, tr->m->inv_freq, 10000.0, tr->dqkv)) return -1;
    if (ops->rope_bwd(ctx, tr->dqkv + E, B, H, N, D, qs, d->rot, 0, tr->m->inv_freq, 10000.0, tr->dqkv + E)) return -1;
    if (ops->zero(ctx, tr->dln, BN * E)) return -1;
    if (dit_lin_backward(ctx, tr->m, i, 0, tr->dqkv, a->ln1, BN, E, 3 * E, l->qkv, tr->dln, gl->qkv, NULL)) return -1;
    return ops->layernorm_bwd(ctx, tr->dln, hin, l->pre_g, a->mean1, a->rstd1, BN, E, dh, gl->pre_g, NULL);
}

int sao_dit_train_backward(sao_ctx *ctx, sao_dit_train *tr, const float *dout, float *dx, float *dcross,
                           float *dglobal, int flags) {
    const char *op = "dit_train_backward";
    if (!tr->ready) return sao_err(ctx, op, "no recorded forward (call sao_dit_train_forward first)");
    if (same_place(ctx, op, tr)) return -1;
    int dev = device_io(ctx, op, tr, flags);
    if (dev < 0) return -1;
    if (dev && (dx || dcross || dglobal)) return sao_err(ctx, op, "input gradients are host buffers: not with a device dout");
    const dit_ops *ops = tr->ops;
    const dit_dims *d = &tr->d;
    sao_dit *m = tr->m, *g = tr->g;
    int64_t B = d->B, T = d->T, N = d->N, E = d->E, io = d->io, L = d->L, Dc = d->Dc, BN = B * N;
    int64_t BTio = B * T * io;
    size_t BNE = (size_t)(BN * E);
    /* head: y = ot + ot W_post^T (token layout), ot = o[:, 1:], o = h W_out^T */
    if (take(ctx, ops, dev, tr->outb, dout, BTio) || ops->transpose(ctx, tr->outb, B, io, T, 0, tr->dy)) return -1;
    if (dit_copy(ctx, ops, tr->dxt2, tr->dy, BTio)) return -1;                        /* d(ot) */
    if (ops->linear_bwd(ctx, tr->dy, tr->ot, m->post_conv, B * T, io, io, tr->dxt2, g->post_conv, NULL)) return -1;
    /* d(o): zero on the prepended token's rows, d(ot) on the others */
    if (ops->zero(ctx, tr->dot, BN * io) || ops->copy(ctx, tr->dot + io, N * io, tr->dxt2, T * io, B, T * io))
        return -1;
    if (ops->zero(ctx, tr->dh, (int64_t)BNE)) return -1;
    if (ops->linear_bwd(ctx, tr->dot, tr->h, m->proj_out, BN, E, io, tr->dh, g->proj_out, NULL)) return -1;
    /* blocks in reverse; with recompute, re-run block i from its saved input to rebuild its record */
    if (L > 0 && ops->zero(ctx, tr->dcc, B * L * Dc)) return -1;
    for (int i = m->cfg.depth - 1; i >= 0; i--) {
        const float *hin = tr->hin + (size_t)i * BNE;
        const dit_acts *a = &tr->acts[tr->recompute ? 0 : i];
        if (tr->recompute) {
            if (dit_copy(ctx, ops, tr->h, hin, (int64_t)BNE)) return -1;
            if (dit_block_forward(ctx, m, i, d, tr->stem.cc, tr->h, &tr->acts[0])) return -1;
        }
        if (block_backward(ctx, tr, i, hin, a)) return -1;
        if (sao_interrupt_pending()) return sao_err(ctx, op, "interrupted");
    }
    /* stem: h rows 1..T = xt2 W_in^T, row 0 = tok = tE + gE */
    if (ops->zero(ctx, tr->dxt2, BTio)) return -1;
    if (ops->copy(ctx, tr->dtok, E, tr->dh, N * E, B, E)) return -1;
    for (int64_t b = 0; b < B; b++)
        if (ops->linear_bwd(ctx, tr->dh + (b * N + 1) * E, tr->stem.xt2 + b * T * io, m->proj_in, T, io, E,
                            tr->dxt2 + b * T * io, g->proj_in, NULL)) return -1;
    /* xt2 = xt + xt W_pre^T */
    if (dit_copy(ctx, ops, tr->dxt, tr->dxt2, BTio)) return -1;
    if (ops->linear_bwd(ctx, tr->dxt2, tr->stem.xt, m->pre_conv, B * T, io, io, tr->dxt, g->pre_conv, NULL)) return -1;
    /* the input gradients accumulate into the caller's buffers: staged in, added to, staged out */
    if (dx && (ops->put(ctx, tr->dxb, dx, BTio) || ops->transpose(ctx, tr->dxt, B, T, io, 1, tr->dxb) ||
               ops->get(ctx, dx, tr->dxb, BTio))) return -1;
    /* timestep MLP and Fourier features (t itself gets no gradient) */
    if (ops->zero(ctx, tr->dtf, B * d->TF)) return -1;
    if (mlp2_backward(ctx, ops, tr->dtok, tr->stem.tf, tr->stem.t_pre, tr->stem.t_act, B, d->TF, E, E, m->t_w1,
                      m->t_w2, g->t_w1, g->t_b1, g->t_w2, g->t_b2, tr->dhid, tr->dpre, tr->dtf)) return -1;
    if (ops->fourier_bwd(ctx, tr->dtf, tr->t, m->t_feat_w, B, d->TF / 2, g->t_feat_w, NULL)) return -1;
    /* global MLP */
    float *dgl = dglobal ? tr->dglobalb : NULL;
    if (dgl && ops->put(ctx, dgl, dglobal, B * d->Dg)) return -1;
    if (mlp2_backward(ctx, ops, tr->dtok, tr->global, tr->stem.g_pre, tr->stem.g_act, B, d->Dg, E, E, m->g_w1,
                      m->g_w2, g->g_w1, NULL, g->g_w2, NULL, tr->dhid, tr->dpre, dgl)) return -1;
    if (dgl && ops->get(ctx, dglobal, dgl, B * d->Dg)) return -1;
    /* context MLP (its input gradient feeds the trainable number conditioners' tokens) */
    if (L > 0 && tr->has_cross) {
        float *dcr = dcross ? tr->dcrossb : NULL;
        if (dcr && ops->put(ctx, dcr, dcross, B * L * Dc)) return -1;
        if (mlp2_backward(ctx, ops, tr->dcc, tr->cross, tr->stem.c_pre, tr->stem.c_act, B * L, Dc, Dc, Dc, m->c_w1,
                          m->c_w2, g->c_w1, NULL, g->c_w2, NULL, tr->dcact, tr->dcpre, dcr)) return -1;
        if (dcr && ops->get(ctx, dcross, dcr, B * L * Dc)) return -1;
    }
    return 0;
}

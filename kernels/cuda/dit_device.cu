// dit_device.cu — the DiT's weights on a GPU (sao_model.h: sao_dit_to_device / sao_dit_to_host).
//
// Every parameter the forward reads goes into ONE device block from the caching allocator
// (alloc.cu), each at a multiple of 64 floats (256 B, cuBLASLt's preferred alignment; the layout
// is dit.c's dit_device_layout, which sao_dit_device_block_bytes also reports); the model's
// pointer fields (the registry's slots, recorded per parameter by dit.c) are re-pointed into it and
// its kernel table becomes the CUDA one (dit_glue.cu). The host tensors stay in the registry, so
// moving back only re-points the fields. A parameter bound anew after the upload shows up as a slot
// that no longer points into the block: dit_device_begin (before every forward) uploads it again.
// An in-place edit of a host tensor cannot be seen that way: sao_dit_to_device on the model's own
// device uploads every parameter again.
// The inference workspace of a device model is a second block, grown as needed.
#include "cuda_internal.h"
extern "C" {
#include "cuda_glue.h"
#include "dit_internal.h"
#include "sao_cuda.h"
#include "sao_lora.h"
}
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t param_numel(const sao_params *p, int i) {
    int64_t n = 1;
    const int64_t *s = sao_params_shape(p, i);
    for (int k = 0; k < sao_params_ndim(p, i); k++) n *= s[k];
    return n;
}

// The bf16 mirror of the weight block: wanted in the bf16 mode on a model whose device weights
// nobody writes, or whose writer keeps it current (keep_bf16: a training run whose optimiser
// rewrites the mirrored copies as it updates the weights, optim.cu); dropped otherwise, after any
// upload, and when something else wrote the block (bf16_stale).
static void drop_mirror(sao_dit *m) {
    if (m->mirrored) sao_cuda_bf16_mirror(NULL, m->dparams, 0, 0);
    m->mirrored = 0;
}

static int keep_mirror(sao_ctx *ctx, sao_dit *m) {
    int want = sao_cuda_gemm_precision(-1) == SAO_GEMM_BF16 && (!m->dirty || m->keep_bf16);
    if (!want || m->bf16_stale) drop_mirror(m);
    m->bf16_stale = 0;
    if (!want) return 0;
    if (m->mirrored) return 0;
    if (sao_cuda_bf16_mirror(ctx, m->dparams, m->dparams_n, 1)) return -1;
    m->mirrored = 1;
    return 0;
}

// A copy of parameter i between its host tensor and its place in the block (put: to the device),
// through the pinned staging of glue.cu; the error names the parameter.
static int param_copy(sao_ctx *ctx, const char *op, sao_dit *m, int i, float *blk, int put) {
    const sao_tensor *t = sao_params_tensor(m->params, i);
    size_t bytes = (size_t)param_numel(m->params, i) * sizeof(float);
    float *d = blk + m->doff[i];
    if (put ? sao_cuda_put_bytes(ctx, d, sao_tensor_data(t), bytes) : sao_cuda_get_bytes(ctx, sao_tensor_data(t), d, bytes)) {
        char why[512];
        snprintf(why, sizeof why, "%s", sao_ctx_error(ctx));
        return sao_err(ctx, op, "copying '%s' (%zu bytes) %s device %d: %s", sao_params_name(m->params, i), bytes,
                       put ? "to" : "back from", m->device, why);
    }
    return 0;
}

static int upload(sao_ctx *ctx, const char *op, sao_dit *m, int i, float *blk) { return param_copy(ctx, op, m, i, blk, 1); }
static int download(sao_ctx *ctx, const char *op, sao_dit *m, int i) { return param_copy(ctx, op, m, i, m->dparams, 0); }

extern "C" int sao_dit_sync_host(sao_ctx *ctx, sao_dit *m) {
    const char *op = "dit_sync_host";
    if (m->device < 0 || !m->dirty) return 0;   // never handed out for writing: the host tensors are current
    CUDA_TRY(ctx, op, cudaSetDevice(m->device));
    for (int i = 0; i < m->nslots; i++) {
        if (m->doff[i] < 0 || !sao_params_tensor(m->params, i)) continue;
        if (*m->slots[i] != m->dparams + m->doff[i]) continue;   // bound anew since: the host tensor is newer
        if (download(ctx, op, m, i)) return -1;
    }
    return 0;
}

static void release_nothing(sao_storage *s) { SAO_UNUSED(s); }
static const sao_allocator device_view = {"cuda-view", release_nothing};

extern "C" sao_tensor *sao_dit_device_tensor(sao_ctx *ctx, sao_dit *m, const char *name) {
    const char *op = "dit_device_tensor";
    if (m->device < 0)
        return (sao_tensor *)sao_err_null(ctx, op, "the model is on the host (dit:to(\"cuda\") first)");
    int n = sao_params_count(m->params);
    for (int i = 0; i < n; i++) {
        if (strcmp(sao_params_name(m->params, i), name) != 0) continue;
        if (m->doff[i] < 0 || !sao_params_tensor(m->params, i))
            return (sao_tensor *)sao_err_null(ctx, op, "'%s' is not on the device (a buffer the forward never "
                                              "reads, or not bound)", name);
        // a parameter bound anew since the upload goes up first, so the view shows the current weights
        if (dit_device_begin(ctx, m)) return NULL;
        int64_t numel = param_numel(m->params, i);
        sao_tensor *t = sao_tensor_wrap(ctx, m->dparams + m->doff[i], (size_t)numel * sizeof(float), SAO_F32,
                                        sao_params_ndim(m->params, i), sao_params_shape(m->params, i),
                                        &device_view, NULL);
        if (!t) return NULL;
        t->storage->device = SAO_CUDA;
        m->dirty = 1;
        // these weights will change: the bf16 GEMMs round them as they go, unless their writer
        // keeps the mirror current (sao_dit_keep_bf16)
        if (!m->keep_bf16) drop_mirror(m);
        return t;
    }
    return (sao_tensor *)sao_err_null(ctx, op, "no parameter named '%s'", name);
}

extern "C" int sao_dit_keep_bf16(sao_ctx *ctx, sao_dit *m, int on) {
    SAO_UNUSED(ctx);
    int was = m->keep_bf16;
    if (on >= 0) {
        m->keep_bf16 = on != 0;
        if (!m->keep_bf16 && m->dirty) drop_mirror(m);   // nobody keeps it current any more
    }
    return was;
}

static void release_blocks(sao_dit *m) {
    dit_graph_release(m);   // it bakes in the blocks' addresses
    drop_mirror(m);
    sao_cuda_free(m->dparams);
    sao_cuda_free(m->dws);
    m->dparams = NULL;
    m->dws = NULL;
    m->dws_size = 0;
}

extern "C" int sao_dit_to_host(sao_ctx *ctx, sao_dit *m) {
    if (m->device < 0) return 0;
    if (sao_dit_sync_host(ctx, m)) return -1;   // trained on the device: keep what it learnt
    m->dirty = 0;
    for (int i = 0; i < m->nslots; i++) {
        if (!m->slots[i]) continue;
        const sao_tensor *t = sao_params_tensor(m->params, i);
        *m->slots[i] = t ? (float *)sao_tensor_data(t) : NULL;
    }
    // freeing is stream-ordered (alloc.cu): queued kernels that still read the blocks finish first
    release_blocks(m);
    m->ops = &dit_ops_cpu;
    m->device = -1;
    return sao_dit_lora_place(ctx, m);   // adapters come back too
}

extern "C" int sao_dit_to_device(sao_ctx *ctx, sao_dit *m, int device) {
    const char *op = "dit_to_device";
    if (sao_cuda_use(ctx, op, device, "model")) return -1;
    if (m->nslots != sao_params_count(m->params))
        return sao_err(ctx, op, "internal: %d slots for %d parameters", m->nslots, sao_params_count(m->params));
    if (!m->t_w1) return sao_err(ctx, op, "the model has no weights bound (load a checkpoint first)");
    if (sao_params_check(ctx, m->params)) return -1;
    if (m->device == device) {   // again: every weight anew, so in-place edits of the host tensors arrive
        if (sao_dit_sync_host(ctx, m)) return -1;   // unless the device copy is the newer one
        drop_mirror(m);
        for (int i = 0; i < m->nslots; i++) {
            if (m->doff[i] < 0 || !sao_params_tensor(m->params, i)) continue;
            if (upload(ctx, op, m, i, m->dparams)) return -1;
            *m->slots[i] = m->dparams + m->doff[i];
        }
        return sao_dit_lora_place(ctx, m);
    }
    if (m->device >= 0 && sao_dit_to_host(ctx, m)) return -1;    // another device: move

    // the plan (dit.c): every parameter with a slot, bound or not (an optional buffer bound later has its place)
    if (!m->doff && !(m->doff = (int64_t *)malloc((size_t)m->nslots * sizeof(int64_t))))
        return sao_err(ctx, op, "out of memory");
    int64_t total = dit_device_layout(m, m->doff);
    void *p = NULL;
    if (sao_cuda_malloc(ctx, (size_t)total * sizeof(float), &p)) return -1;
    float *blk = (float *)p;
    m->device = device;   // for the messages of upload(); reset below on failure
    for (int i = 0; i < m->nslots; i++) {
        if (m->doff[i] < 0 || !sao_params_tensor(m->params, i)) continue;
        if (upload(ctx, op, m, i, blk)) {
            m->device = -1;
            sao_cuda_free(blk);
            return -1;
        }
    }
    // every copy made: switch the fields, the table and the workspace
    for (int i = 0; i < m->nslots; i++)
        if (m->doff[i] >= 0) *m->slots[i] = sao_params_tensor(m->params, i) ? blk + m->doff[i] : NULL;
    m->dparams = blk;
    m->dparams_n = total;
    m->ops = &dit_ops_cuda;
    free(m->ws);
    m->ws = NULL;
    m->ws_size = 0;
    return sao_dit_lora_place(ctx, m);   // adapters follow the weights
}

extern "C" int dit_device_begin(sao_ctx *ctx, sao_dit *m) {
    const char *op = "dit_forward";
    CUDA_TRY(ctx, op, cudaSetDevice(m->device));
    for (int i = 0; i < m->nslots; i++) {
        if (m->doff[i] < 0) continue;
        float *want = m->dparams + m->doff[i], *now = *m->slots[i];
        if (now == want || now == NULL) continue;   // uploaded, or an optional buffer never bound
        // bound anew since the upload: its host tensor replaces the device copy
        drop_mirror(m);   // stale now: rounded again below
        if (upload(ctx, op, m, i, m->dparams)) return -1;
        *m->slots[i] = want;
    }
    return keep_mirror(ctx, m);
}

extern "C" float *dit_device_ws(sao_ctx *ctx, sao_dit *m, size_t floats) {
    return sao_cuda_grow(ctx, &m->dws, &m->dws_size, floats);
}

extern "C" void dit_device_release(sao_dit *m) { release_blocks(m); }

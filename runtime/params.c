/* params.c — parameter registries: upstream names, expected shapes, bound f32 tensors. */
#include "internal.h"
#include "params.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *name;
    int ndim;
    int64_t shape[8];
    float **slot;
    sao_tensor *t;
    int optional;
} param;

struct sao_params {
    char *model;
    param *v;
    int n, cap;
};

sao_params *sao_params_new(const char *model_name) {
    sao_params *p = calloc(1, sizeof *p);
    if (p) p->model = strdup(model_name ? model_name : "model");
    return p;
}

void sao_params_free(sao_params *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) {
        free(p->v[i].name);
        sao_tensor_free(p->v[i].t);
    }
    free(p->v);
    free(p->model);
    free(p);
}

int sao_params_add(sao_params *p, float **slot, int ndim, const int64_t *shape, const char *fmt, ...) {
    if (p->n == p->cap) {
        int c = p->cap ? p->cap * 2 : 64;
        param *nv = realloc(p->v, (size_t)c * sizeof *nv);
        if (!nv) return -1;
        p->v = nv;
        p->cap = c;
    }
    param *q = &p->v[p->n];
    memset(q, 0, sizeof *q);
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    q->name = strdup(buf);
    if (!q->name) return -1;
    q->ndim = ndim;
    for (int i = 0; i < ndim; i++) q->shape[i] = shape[i];
    q->slot = slot;
    if (slot) *slot = NULL;
    p->n++;
    return 0;
}

void sao_params_optional(sao_params *p) { if (p->n > 0) p->v[p->n - 1].optional = 1; }

int sao_params_count(const sao_params *p) { return p->n; }
const char *sao_params_name(const sao_params *p, int i) { return (i >= 0 && i < p->n) ? p->v[i].name : NULL; }
int sao_params_ndim(const sao_params *p, int i) { return (i >= 0 && i < p->n) ? p->v[i].ndim : -1; }
const int64_t *sao_params_shape(const sao_params *p, int i) { return (i >= 0 && i < p->n) ? p->v[i].shape : NULL; }
sao_tensor *sao_params_tensor(const sao_params *p, int i) { return (i >= 0 && i < p->n) ? p->v[i].t : NULL; }

int sao_params_find(const sao_params *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->v[i].name, name) == 0) return i;
    return -1;
}

static void fmt_shape(char *buf, size_t n, int ndim, const int64_t *s) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)s[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

int sao_params_bind(sao_ctx *ctx, sao_params *p, const char *name, const sao_tensor *t) {
    int i = sao_params_find(p, name);
    if (i < 0) return sao_err(ctx, "load", "%s: unexpected parameter '%s' (not part of this model's config)", p->model, name);
    param *q = &p->v[i];
    int same = t->ndim == q->ndim;
    for (int d = 0; same && d < q->ndim; d++) same = t->shape[d] == q->shape[d];
    if (!same) {
        char want[96], got[96];
        fmt_shape(want, sizeof want, q->ndim, q->shape);
        fmt_shape(got, sizeof got, t->ndim, t->shape);
        return sao_err(ctx, "load", "%s: parameter '%s' has shape %s, the config expects %s", p->model, name, got, want);
    }
    sao_tensor *f;
    if (t->dtype == SAO_F32 && sao_tensor_is_contiguous(t)) f = sao_tensor_view_of(ctx, t);
    else f = sao_tensor_to_dtype(ctx, t, SAO_F32);
    if (!f) return -1;
    sao_tensor_free(q->t);
    q->t = f;
    if (q->slot) *q->slot = sao_tensor_data(f);
    return 0;
}

int sao_params_check(sao_ctx *ctx, const sao_params *p) {
    int missing = 0;
    char list[512] = "";
    size_t k = 0;
    for (int i = 0; i < p->n; i++) {
        if (p->v[i].t || p->v[i].optional) continue;
        if (missing < 4 && k < sizeof list)
            k += (size_t)snprintf(list + k, sizeof list - k, "%s'%s'", missing ? ", " : "", p->v[i].name);
        missing++;
    }
    if (!missing) return 0;
    return sao_err(ctx, "load", "%s: %d parameter(s) missing from the checkpoint: %s%s", p->model, missing, list,
                   missing > 4 ? ", ..." : "");
}

int64_t sao_params_numel(const sao_params *p) {
    int64_t n = 0;
    for (int i = 0; i < p->n; i++) {
        int64_t e = 1;
        for (int d = 0; d < p->v[i].ndim; d++) e *= p->v[i].shape[d];
        n += e;
    }
    return n;
}

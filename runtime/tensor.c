/* tensor.c — storage and tensor handles: allocation, refcounting, views, copies and
 * element access.
 *
 * A tensor handle (sao_tensor*) is (storage, offset, dtype, ndim, shape, strides). Views make a
 * new handle on the same storage and bump its refcount; freeing a handle drops one reference and
 * the storage's allocator releases the memory with the last one. Strides are in elements.
 * Elementwise math and reductions live in tensor_ops.c; this file only moves data. */
#include "internal.h"
#include "tensor_iter.h"
#include "sao_cuda.h"
#include "cuda_glue.h"
#include <stdlib.h>
#include <string.h>

/* ---- storage ---------------------------------------------------------------------------- */
static void heap_release(sao_storage *s) { free(s->data); }
static const sao_allocator heap_allocator = {"heap", heap_release};

static sao_storage *storage_new(sao_ctx *ctx, size_t nbytes, int zero) {
    sao_storage *s = calloc(1, sizeof *s);
    if (!s) return sao_err_null(ctx, "tensor", "out of memory allocating a storage header");
    size_t alloc = (nbytes + 63) & ~(size_t)63;
    if (alloc == 0) alloc = 64;
    s->data = aligned_alloc(64, alloc);
    if (!s->data) {
        free(s);
        return sao_err_null(ctx, "tensor", "out of memory allocating %zu bytes", nbytes);
    }
    if (zero) memset(s->data, 0, alloc);
    s->nbytes = nbytes;
    s->refcount = 1;
    s->device = SAO_CPU;
    s->allocator = &heap_allocator;
    return s;
}

static void storage_release(sao_storage *s) {
    if (!s) return;
    if (__atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
    if (s->allocator && s->allocator->release) s->allocator->release(s);
    free(s);
}

/* ---- shapes ----------------------------------------------------------------------------- */
static int check_shape(sao_ctx *ctx, const char *op, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > 8) return sao_err(ctx, op, "%d dimensions: at most 8 are supported", ndim);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) return sao_err(ctx, op, "dimension %d has negative size %lld", i, (long long)shape[i]);
    return 0;
}

static int64_t shape_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

static void set_contiguous_strides(sao_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->stride[i] = s;
        s *= t->shape[i];
    }
}

static sao_tensor *handle_new(sao_ctx *ctx, sao_storage *s, int dtype, int ndim, const int64_t *shape) {
    sao_tensor *t = calloc(1, sizeof *t);
    if (!t) return sao_err_null(ctx, "tensor", "out of memory allocating a tensor handle");
    t->storage = s;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    set_contiguous_strides(t);
    return t;
}

static sao_tensor *tensor_alloc(sao_ctx *ctx, int dtype, int ndim, const int64_t *shape, int zero) {
    if (dtype < 0 || dtype >= SAO_DTYPE_COUNT) return sao_err_null(ctx, "tensor", "unknown dtype %d", dtype);
    if (check_shape(ctx, "tensor", ndim, shape)) return NULL;
    int64_t n = shape_numel(ndim, shape);
    sao_storage *s = storage_new(ctx, (size_t)n * sao_dtype_size(dtype), zero);
    if (!s) return NULL;
    sao_tensor *t = handle_new(ctx, s, dtype, ndim, shape);
    if (!t) storage_release(s);
    return t;
}

sao_tensor *sao_tensor_new(sao_ctx *ctx, int dtype, int ndim, const int64_t *shape) {
    return tensor_alloc(ctx, dtype, ndim, shape, 1);
}

sao_tensor *sao_tensor_empty(sao_ctx *ctx, int dtype, int ndim, const int64_t *shape) {
    return tensor_alloc(ctx, dtype, ndim, shape, 0);
}

sao_tensor *sao_tensor_wrap(sao_ctx *ctx, void *data, size_t nbytes, int dtype, int ndim,
                            const int64_t *shape, const sao_allocator *release, void *handle) {
    if (dtype < 0 || dtype >= SAO_DTYPE_COUNT) return sao_err_null(ctx, "tensor_wrap", "unknown dtype %d", dtype);
    if (check_shape(ctx, "tensor_wrap", ndim, shape)) return NULL;
    size_t need = (size_t)shape_numel(ndim, shape) * sao_dtype_size(dtype);
    if (need > nbytes)
        return sao_err_null(ctx, "tensor_wrap", "shape needs %zu bytes but the buffer has %zu", need, nbytes);
    sao_storage *s = calloc(1, sizeof *s);
    if (!s) return sao_err_null(ctx, "tensor_wrap", "out of memory");
    s->data = data;
    s->nbytes = nbytes;
    s->refcount = 1;
    s->device = SAO_CPU;
    s->allocator = release;
    s->handle = handle;
    sao_tensor *t = handle_new(ctx, s, dtype, ndim, shape);
    if (!t) free(s);
    return t;
}

void sao_tensor_free(sao_tensor *t) {
    if (!t) return;
    storage_release(t->storage);
    free(t);
}

sao_tensor *sao_tensor_view_of(sao_ctx *ctx, const sao_tensor *t) {
    sao_tensor *v = malloc(sizeof *v);
    if (!v) return sao_err_null(ctx, "view", "out of memory");
    *v = *t;
    __atomic_add_fetch(&t->storage->refcount, 1, __ATOMIC_ACQ_REL);
    return v;
}

int64_t sao_tensor_numel(const sao_tensor *t) { return shape_numel(t->ndim, t->shape); }

int sao_tensor_is_contiguous(const sao_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return 0;
        s *= t->shape[i];
    }
    return 1;
}

void *sao_tensor_data(const sao_tensor *t) {
    return (char *)t->storage->data + (size_t)t->offset * sao_dtype_size(t->dtype);
}

/* ---- views ------------------------------------------------------------------------------ */
sao_tensor *sao_tensor_view(sao_ctx *ctx, const sao_tensor *t, int ndim, const int64_t *shape) {
    if (check_shape(ctx, "view", ndim, shape)) return NULL;
    int64_t n = sao_tensor_numel(t);
    if (shape_numel(ndim, shape) != n)
        return sao_err_null(ctx, "view", "cannot view %lld elements as a shape of %lld elements",
                            (long long)n, (long long)shape_numel(ndim, shape));
    if (!sao_tensor_is_contiguous(t))
        return sao_err_null(ctx, "view", "tensor is not contiguous (call :contiguous() or :reshape())");
    sao_tensor *v = sao_tensor_view_of(ctx, t);
    if (!v) return NULL;
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) v->shape[i] = shape[i];
    set_contiguous_strides(v);
    return v;
}

sao_tensor *sao_tensor_permute(sao_ctx *ctx, const sao_tensor *t, const int *dims) {
    int seen[8] = {0};
    for (int i = 0; i < t->ndim; i++) {
        if (dims[i] < 0 || dims[i] >= t->ndim || seen[dims[i]])
            return sao_err_null(ctx, "permute", "dims are not a permutation of 0..%d", t->ndim - 1);
        seen[dims[i]] = 1;
    }
    sao_tensor *v = sao_tensor_view_of(ctx, t);
    if (!v) return NULL;
    for (int i = 0; i < t->ndim; i++) {
        v->shape[i] = t->shape[dims[i]];
        v->stride[i] = t->stride[dims[i]];
    }
    return v;
}

sao_tensor *sao_tensor_narrow(sao_ctx *ctx, const sao_tensor *t, int dim, int64_t start, int64_t len) {
    if (dim < 0 || dim >= t->ndim)
        return sao_err_null(ctx, "narrow", "dim %d out of range for a %d-d tensor", dim, t->ndim);
    if (start < 0 || len < 0 || start + len > t->shape[dim])
        return sao_err_null(ctx, "narrow", "range [%lld, %lld) outside dimension %d of size %lld",
                            (long long)start, (long long)(start + len), dim, (long long)t->shape[dim]);
    sao_tensor *v = sao_tensor_view_of(ctx, t);
    if (!v) return NULL;
    v->offset += start * t->stride[dim];
    v->shape[dim] = len;
    return v;
}

sao_tensor *sao_tensor_select(sao_ctx *ctx, const sao_tensor *t, int dim, int64_t index) {
    if (dim < 0 || dim >= t->ndim)
        return sao_err_null(ctx, "select", "dim %d out of range for a %d-d tensor", dim, t->ndim);
    if (index < 0 || index >= t->shape[dim])
        return sao_err_null(ctx, "select", "index %lld outside dimension %d of size %lld",
                            (long long)index, dim, (long long)t->shape[dim]);
    sao_tensor *v = sao_tensor_view_of(ctx, t);
    if (!v) return NULL;
    v->offset += index * t->stride[dim];
    for (int i = dim; i < t->ndim - 1; i++) {
        v->shape[i] = t->shape[i + 1];
        v->stride[i] = t->stride[i + 1];
    }
    v->ndim--;
    return v;
}

int sao_broadcast_strides(const sao_tensor *t, int ndim, const int64_t *shape, int64_t *strides) {
    if (t->ndim > ndim) return -1;
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        if (i < lead) { strides[i] = 0; continue; }
        int64_t d = t->shape[i - lead];
        if (d == shape[i]) strides[i] = t->stride[i - lead];
        else if (d == 1) strides[i] = 0;
        else return -1;
    }
    return 0;
}

sao_tensor *sao_tensor_expand(sao_ctx *ctx, const sao_tensor *t, int ndim, const int64_t *shape) {
    if (check_shape(ctx, "expand", ndim, shape)) return NULL;
    int64_t st[8];
    if (sao_broadcast_strides(t, ndim, shape, st))
        return sao_err_null(ctx, "expand", "a %d-d tensor cannot be expanded to the given %d-d shape "
                            "(sizes must match or be 1)", t->ndim, ndim);
    sao_tensor *v = sao_tensor_view_of(ctx, t);
    if (!v) return NULL;
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) { v->shape[i] = shape[i]; v->stride[i] = st[i]; }
    return v;
}

/* ---- element access --------------------------------------------------------------------- */
double sao_load(int dtype, const void *p) {
    switch (dtype) {
    case SAO_F32: return *(const float *)p;
    case SAO_F64: return *(const double *)p;
    case SAO_BF16: return sao_bf16_to_f32(*(const uint16_t *)p);
    case SAO_F16: return sao_f16_to_f32(*(const uint16_t *)p);
    case SAO_I32: return *(const int32_t *)p;
    case SAO_I64: return (double)*(const int64_t *)p;
    case SAO_U8: return *(const uint8_t *)p;
    }
    return 0;
}

static int64_t clamp_int(double v, double lo, double hi) {
    if (v != v) return 0;
    if (v < lo) return (int64_t)lo;
    if (v > hi) return (int64_t)hi;
    return (int64_t)v;  /* truncation toward zero, as C and PyTorch casts */
}

void sao_store(int dtype, void *p, double v) {
    switch (dtype) {
    case SAO_F32: *(float *)p = (float)v; break;
    case SAO_F64: *(double *)p = v; break;
    case SAO_BF16: *(uint16_t *)p = sao_f32_to_bf16((float)v); break;
    case SAO_F16: *(uint16_t *)p = sao_f32_to_f16((float)v); break;
    case SAO_I32: *(int32_t *)p = (int32_t)clamp_int(v, -2147483648.0, 2147483647.0); break;
    case SAO_I64: *(int64_t *)p = clamp_int(v, -9223372036854775808.0, 9223372036854774784.0); break;
    case SAO_U8: *(uint8_t *)p = (uint8_t)clamp_int(v, 0, 255); break;
    }
}

static size_t elem_offset(const sao_tensor *t, const int64_t *index) {
    int64_t off = t->offset;
    for (int i = 0; i < t->ndim; i++) off += index[i] * t->stride[i];
    return (size_t)off * sao_dtype_size(t->dtype);
}

double sao_tensor_get(const sao_tensor *t, const int64_t *index) {
    return sao_load(t->dtype, (const char *)t->storage->data + elem_offset(t, index));
}

void sao_tensor_set(sao_tensor *t, const int64_t *index, double value) {
    sao_store(t->dtype, (char *)t->storage->data + elem_offset(t, index), value);
}

/* ---- copies ----------------------------------------------------------------------------- */
int sao_tensor_copy_(sao_ctx *ctx, sao_tensor *dst, const sao_tensor *src) {
    int64_t sst[8];
    if (dst->storage->device != SAO_CPU || src->storage->device != SAO_CPU) {
        /* a device on either side: whole contiguous tensors of one dtype and size, any direction */
        if (dst->dtype != src->dtype || !sao_tensor_is_contiguous(dst) || !sao_tensor_is_contiguous(src) ||
            sao_tensor_numel(dst) != sao_tensor_numel(src))
            return sao_err(ctx, "copy_", "with a device tensor, both must be contiguous with the same dtype and "
                           "number of elements (convert or reshape on the host first)");
        return sao_cuda_memcpy(ctx, sao_tensor_data(dst), sao_tensor_data(src),
                               (size_t)sao_tensor_numel(dst) * sao_dtype_size(dst->dtype));
    }
    if (sao_broadcast_strides(src, dst->ndim, dst->shape, sst))
        return sao_err(ctx, "copy_", "source shape does not broadcast to the destination's %d-d shape", dst->ndim);
    int64_t n = sao_tensor_numel(dst);
    if (n == 0) return 0;
    size_t es = sao_dtype_size(dst->dtype);
    /* fast path: same dtype, both contiguous, same shape */
    if (dst->dtype == src->dtype && sao_tensor_is_contiguous(dst) && sao_tensor_is_contiguous(src) &&
        sao_tensor_numel(src) == n) {
        memmove(sao_tensor_data(dst), sao_tensor_data(src), (size_t)n * es);
        return 0;
    }
    sao_iter it;
    const int64_t *strides[2] = {dst->stride, sst};
    int64_t offs[2] = {dst->offset, src->offset};
    sao_iter_init(&it, dst->ndim, dst->shape, 2, strides, offs);
    char *d = dst->storage->data;
    const char *s = src->storage->data;
    size_t ss = sao_dtype_size(src->dtype);
    int same = dst->dtype == src->dtype;
    do {
        int64_t od = it.off[0], os = it.off[1];
        for (int64_t i = 0; i < it.inner; i++, od += it.istride[0], os += it.istride[1]) {
            if (same) memcpy(d + od * (int64_t)es, s + os * (int64_t)ss, es);
            else sao_store(dst->dtype, d + od * (int64_t)es, sao_load(src->dtype, s + os * (int64_t)ss));
        }
    } while (sao_iter_next(&it));
    return 0;
}

sao_tensor *sao_tensor_contiguous(sao_ctx *ctx, const sao_tensor *t) {
    if (sao_tensor_is_contiguous(t)) return sao_tensor_view_of(ctx, t);
    return sao_tensor_clone(ctx, t);
}

sao_tensor *sao_tensor_clone(sao_ctx *ctx, const sao_tensor *t) {
    return sao_tensor_to_dtype(ctx, t, t->dtype);
}

sao_tensor *sao_tensor_to_dtype(sao_ctx *ctx, const sao_tensor *t, int dtype) {
    SAO_HOST_ONLY_NULL(ctx, "to_dtype", t);
    sao_tensor *r = sao_tensor_empty(ctx, dtype, t->ndim, t->shape);
    if (!r) return NULL;
    if (sao_tensor_copy_(ctx, r, t)) { sao_tensor_free(r); return NULL; }
    return r;
}

int sao_tensor_fill_(sao_ctx *ctx, sao_tensor *t, double value) {
    if (t->storage->device != SAO_CPU) return sao_cuda_fill(ctx, t, value);
    if (sao_tensor_numel(t) == 0) return 0;
    unsigned char one[8];
    size_t es = sao_dtype_size(t->dtype);
    sao_store(t->dtype, one, value);
    sao_iter it;
    const int64_t *strides[1] = {t->stride};
    int64_t offs[1] = {t->offset};
    sao_iter_init(&it, t->ndim, t->shape, 1, strides, offs);
    char *d = t->storage->data;
    do {
        int64_t o = it.off[0];
        for (int64_t i = 0; i < it.inner; i++, o += it.istride[0]) memcpy(d + o * (int64_t)es, one, es);
    } while (sao_iter_next(&it));
    return 0;
}

int sao_tensor_to_doubles(sao_ctx *ctx, const sao_tensor *t, double *out) {
    SAO_HOST_ONLY(ctx, "to_doubles", t);
    if (sao_tensor_numel(t) == 0) return 0;
    sao_iter it;
    const int64_t *strides[1] = {t->stride};
    int64_t offs[1] = {t->offset};
    sao_iter_init(&it, t->ndim, t->shape, 1, strides, offs);
    const char *d = t->storage->data;
    size_t es = sao_dtype_size(t->dtype);
    int64_t k = 0;
    do {
        int64_t o = it.off[0];
        for (int64_t i = 0; i < it.inner; i++, o += it.istride[0]) out[k++] = sao_load(t->dtype, d + o * (int64_t)es);
    } while (sao_iter_next(&it));
    return 0;
}

int sao_tensor_summary(sao_ctx *ctx, const sao_tensor *t, double *out4) {
    SAO_HOST_ONLY(ctx, "summary", t);
    double mn = 0, mx = 0, sum = 0, nans = 0;
    int64_t n = sao_tensor_numel(t), cnt = 0;
    if (n > 0) {
        sao_iter it;
        const int64_t *strides[1] = {t->stride};
        int64_t offs[1] = {t->offset};
        sao_iter_init(&it, t->ndim, t->shape, 1, strides, offs);
        const char *d = t->storage->data;
        size_t es = sao_dtype_size(t->dtype);
        do {
            int64_t o = it.off[0];
            for (int64_t i = 0; i < it.inner; i++, o += it.istride[0]) {
                double v = sao_load(t->dtype, d + o * (int64_t)es);
                if (v != v) { nans++; continue; }
                if (cnt == 0 || v < mn) mn = v;
                if (cnt == 0 || v > mx) mx = v;
                sum += v;
                cnt++;
            }
        } while (sao_iter_next(&it));
    }
    out4[0] = mn;
    out4[1] = mx;
    out4[2] = cnt ? sum / (double)cnt : 0;
    out4[3] = nans;
    return 0;
}

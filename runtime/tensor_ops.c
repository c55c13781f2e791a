/* tensor_ops.c — general tensor math for scripts: broadcasting elementwise ops, reductions,
 * matmul (OpenBLAS) and concatenation.
 *
 * These are the convenient, any-dtype, any-stride operations the Lua API exposes. Model code
 * does not use them on its hot paths; it calls the fused kernels in kernels/. Contiguous f32 is
 * the fast path (a plain loop, OpenMP over large arrays); everything else goes through the
 * strided iterator computing in double. */
#include "internal.h"
#include "tensor_iter.h"
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int is_float(int d) { return d == SAO_F32 || d == SAO_F64 || d == SAO_BF16 || d == SAO_F16; }

/* Result dtype of a binary op: f64 > f32 (half types compute and return f32) > i64 > i32 > u8. */
static int promote(int a, int b) {
    if (a == SAO_F64 || b == SAO_F64) return SAO_F64;
    if (is_float(a) || is_float(b)) return SAO_F32;
    if (a == SAO_I64 || b == SAO_I64) return SAO_I64;
    if (a == SAO_I32 || b == SAO_I32) return SAO_I32;
    return SAO_U8;
}

static double apply_bin(int op, double x, double y) {
    switch (op) {
    case SAO_OP_ADD: return x + y;
    case SAO_OP_SUB: return x - y;
    case SAO_OP_MUL: return x * y;
    case SAO_OP_DIV: return x / y;
    case SAO_OP_POW: return pow(x, y);
    case SAO_OP_MAX: return (x != x || x > y) ? x : y;
    case SAO_OP_MIN: return (x != x || x < y) ? x : y;
    case SAO_OP_EQ: return x == y;
    case SAO_OP_LT: return x < y;
    case SAO_OP_LE: return x <= y;
    case SAO_OP_GT: return x > y;
    case SAO_OP_GE: return x >= y;
    }
    return 0;
}

static float apply_bin_f(int op, float x, float y) {
    switch (op) {
    case SAO_OP_ADD: return x + y;
    case SAO_OP_SUB: return x - y;
    case SAO_OP_MUL: return x * y;
    case SAO_OP_DIV: return x / y;
    default: return (float)apply_bin(op, x, y);
    }
}

static int result_dtype(int op, int a, int b) {
    if (op >= SAO_OP_EQ) return SAO_U8;
    int r = promote(a, b);
    if (op == SAO_OP_DIV && !is_float(r)) r = SAO_F32;   /* true division, as PyTorch */
    if (op == SAO_OP_POW && !is_float(r)) r = SAO_F32;
    return r;
}

static int broadcast_shape(sao_ctx *ctx, const char *op, const sao_tensor *a, const sao_tensor *b,
                           int *ndim, int64_t *shape) {
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < n; i++) {
        int ia = i - (n - a->ndim), ib = i - (n - b->ndim);
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return sao_err(ctx, op, "shapes do not broadcast: size %lld vs %lld at dimension %d",
                           (long long)da, (long long)db, i);
        shape[i] = da == 1 ? db : da;
    }
    *ndim = n;
    return 0;
}

static const char *binop_name(int op) {
    static const char *n[] = {"add", "sub", "mul", "div", "pow", "max", "min", "eq", "lt", "le", "gt", "ge"};
    return (op >= 0 && op <= SAO_OP_GE) ? n[op] : "binary";
}

sao_tensor *sao_binary(sao_ctx *ctx, int op, const sao_tensor *a, const sao_tensor *b) {
    if (op < 0 || op > SAO_OP_GE) return sao_err_null(ctx, "binary", "unknown op %d", op);
    SAO_HOST_ONLY_NULL(ctx, "binary", a);
    SAO_HOST_ONLY_NULL(ctx, "binary", b);
    int ndim = 0;
    int64_t shape[8];
    if (broadcast_shape(ctx, binop_name(op), a, b, &ndim, shape)) return NULL;
    int rd = result_dtype(op, a->dtype, b->dtype);
    sao_tensor *r = sao_tensor_empty(ctx, rd, ndim, shape);
    if (!r) return NULL;
    int64_t n = sao_tensor_numel(r);
    if (n == 0) return r;
    /* fast path: f32 contiguous, same shape */
    if (rd == SAO_F32 && a->dtype == SAO_F32 && b->dtype == SAO_F32 && sao_tensor_is_contiguous(a) &&
        sao_tensor_is_contiguous(b) && sao_tensor_numel(a) == n && sao_tensor_numel(b) == n) {
        const float *x = sao_tensor_data(a), *y = sao_tensor_data(b);
        float *z = sao_tensor_data(r);
        sao_threads_apply(ctx);
#pragma omp parallel for if (n > 65536) schedule(static)
        for (int64_t i = 0; i < n; i++) z[i] = apply_bin_f(op, x[i], y[i]);
        return r;
    }
    int64_t sa[8], sb[8];
    sao_broadcast_strides(a, ndim, shape, sa);
    sao_broadcast_strides(b, ndim, shape, sb);
    sao_iter it;
    const int64_t *strides[3] = {r->stride, sa, sb};
    int64_t offs[3] = {0, a->offset, b->offset};
    sao_iter_init(&it, ndim, shape, 3, strides, offs);
    char *pr = r->storage->data;
    const char *pa = a->storage->data, *pb = b->storage->data;
    int64_t er = (int64_t)sao_dtype_size(rd), ea = (int64_t)sao_dtype_size(a->dtype),
            eb = (int64_t)sao_dtype_size(b->dtype);
    do {
        int64_t o0 = it.off[0], o1 = it.off[1], o2 = it.off[2];
        for (int64_t i = 0; i < it.inner; i++) {
            double v = apply_bin(op, sao_load(a->dtype, pa + o1 * ea), sao_load(b->dtype, pb + o2 * eb));
            sao_store(rd, pr + o0 * er, v);
            o0 += it.istride[0]; o1 += it.istride[1]; o2 += it.istride[2];
        }
    } while (sao_iter_next(&it));
    return r;
}

sao_tensor *sao_binary_scalar(sao_ctx *ctx, int op, const sao_tensor *a, double b, int scalar_left) {
    SAO_HOST_ONLY_NULL(ctx, "binary", a);
    /* A 0-d tensor of the scalar keeps the general broadcasting path; the scalar adopts the
     * tensor's dtype class (a float scalar with an int tensor promotes to f32). */
    int sd = a->dtype;
    if (!is_float(sd) && b != floor(b)) sd = SAO_F32;
    if (sd == SAO_BF16 || sd == SAO_F16) sd = SAO_F32;
    sao_tensor *s = sao_tensor_empty(ctx, sd, 0, NULL);
    if (!s) return NULL;
    sao_store(sd, sao_tensor_data(s), b);
    sao_tensor *r = scalar_left ? sao_binary(ctx, op, s, a) : sao_binary(ctx, op, a, s);
    sao_tensor_free(s);
    return r;
}

static double apply_un(int op, double x) {
    switch (op) {
    case SAO_OP_NEG: return -x;
    case SAO_OP_ABS: return fabs(x);
    case SAO_OP_EXP: return exp(x);
    case SAO_OP_LOG: return log(x);
    case SAO_OP_SQRT: return sqrt(x);
    case SAO_OP_TANH: return tanh(x);
    case SAO_OP_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case SAO_OP_SILU: return x / (1.0 + exp(-x));
    case SAO_OP_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case SAO_OP_SIN: return sin(x);
    case SAO_OP_COS: return cos(x);
    case SAO_OP_RELU: return x > 0 ? x : 0;
    case SAO_OP_SOFTPLUS: return x > 20 ? x : log1p(exp(x));   /* torch threshold 20 */
    case SAO_OP_SQUARE: return x * x;
    case SAO_OP_RSQRT: return 1.0 / sqrt(x);
    }
    return 0;
}

sao_tensor *sao_unary(sao_ctx *ctx, int op, const sao_tensor *a) {
    if (op < 0 || op > SAO_OP_RSQRT) return sao_err_null(ctx, "unary", "unknown op %d", op);
    SAO_HOST_ONLY_NULL(ctx, "unary", a);
    int rd = a->dtype;
    if (op != SAO_OP_NEG && op != SAO_OP_ABS && op != SAO_OP_RELU && op != SAO_OP_SQUARE) {
        if (!is_float(rd) || rd == SAO_BF16 || rd == SAO_F16) rd = SAO_F32;
    }
    sao_tensor *r = sao_tensor_empty(ctx, rd, a->ndim, a->shape);
    if (!r) return NULL;
    int64_t n = sao_tensor_numel(r);
    if (n == 0) return r;
    if (rd == SAO_F32 && a->dtype == SAO_F32 && sao_tensor_is_contiguous(a)) {
        const float *x = sao_tensor_data(a);
        float *z = sao_tensor_data(r);
        sao_threads_apply(ctx);
#pragma omp parallel for if (n > 16384) schedule(static)
        for (int64_t i = 0; i < n; i++) z[i] = (float)apply_un(op, x[i]);
        return r;
    }
    sao_iter it;
    const int64_t *strides[2] = {r->stride, a->stride};
    int64_t offs[2] = {0, a->offset};
    sao_iter_init(&it, a->ndim, a->shape, 2, strides, offs);
    char *pr = r->storage->data;
    const char *pa = a->storage->data;
    int64_t er = (int64_t)sao_dtype_size(rd), ea = (int64_t)sao_dtype_size(a->dtype);
    do {
        int64_t o0 = it.off[0], o1 = it.off[1];
        for (int64_t i = 0; i < it.inner; i++, o0 += it.istride[0], o1 += it.istride[1])
            sao_store(rd, pr + o0 * er, apply_un(op, sao_load(a->dtype, pa + o1 * ea)));
    } while (sao_iter_next(&it));
    return r;
}

/* ---- reductions ------------------------------------------------------------------------- */
sao_tensor *sao_reduce(sao_ctx *ctx, int op, const sao_tensor *a, int dim, int keepdim) {
    static const char *names[] = {"sum", "mean", "max", "min", "argmax", "argmin"};
    if (op < 0 || op > SAO_RED_ARGMIN) return sao_err_null(ctx, "reduce", "unknown op %d", op);
    SAO_HOST_ONLY_NULL(ctx, "reduce", a);
    const char *nm = names[op];
    int64_t n_all = sao_tensor_numel(a);
    if (dim >= a->ndim) return sao_err_null(ctx, nm, "dim %d out of range for a %d-d tensor", dim, a->ndim);
    int64_t red = dim < 0 ? n_all : a->shape[dim];
    if (red == 0 && op != SAO_RED_SUM && op != SAO_RED_MEAN)
        return sao_err_null(ctx, nm, "cannot reduce an empty dimension");

    /* Move the reduced dim last (or flatten all) and reduce rows of length `red`. */
    sao_tensor *src;
    int outnd = 0;
    int64_t outshape[8];
    if (dim < 0) {
        sao_tensor *c = sao_tensor_contiguous(ctx, a);
        if (!c) return NULL;
        int64_t flat[1] = {n_all};
        src = sao_tensor_view(ctx, c, 1, flat);
        sao_tensor_free(c);
        if (!src) return NULL;
        if (keepdim) { outnd = a->ndim; for (int i = 0; i < a->ndim; i++) outshape[i] = 1; }
    } else {
        int perm[8], k = 0;
        for (int i = 0; i < a->ndim; i++) if (i != dim) perm[k++] = i;
        perm[k] = dim;
        src = sao_tensor_permute(ctx, a, perm);
        if (!src) return NULL;
        for (int i = 0; i < a->ndim; i++) {
            if (i == dim) { if (keepdim) outshape[outnd++] = 1; }
            else outshape[outnd++] = a->shape[i];
        }
    }
    int rd = (op == SAO_RED_ARGMAX || op == SAO_RED_ARGMIN) ? SAO_I64
           : (op == SAO_RED_MEAN && !is_float(a->dtype)) ? SAO_F32
           : (a->dtype == SAO_BF16 || a->dtype == SAO_F16) ? SAO_F32
           : (op == SAO_RED_SUM && (a->dtype == SAO_U8 || a->dtype == SAO_I32)) ? SAO_I64 : a->dtype;
    sao_tensor *r = sao_tensor_empty(ctx, rd, outnd, outshape);
    if (!r) { sao_tensor_free(src); return NULL; }
    int64_t rows = red ? n_all / red : sao_tensor_numel(r);
    char *pr = r->storage->data;
    int64_t er = (int64_t)sao_dtype_size(rd), es = (int64_t)sao_dtype_size(src->dtype);
    const char *ps = src->storage->data;
    /* outer rows iterate over src's first ndim-1 dims in row-major order, matching r's layout */
    sao_iter it;
    const int64_t *strides[1] = {src->stride};
    int64_t offs[1] = {src->offset};
    sao_iter_init(&it, src->ndim, src->shape, 1, strides, offs);
    for (int64_t row = 0; row < rows; row++) {
        double acc = 0, best = 0;
        int64_t bi = 0;
        int64_t o = it.off[0];
        for (int64_t i = 0; i < red; i++, o += it.istride[0]) {
            double v = sao_load(src->dtype, ps + o * es);
            if (op == SAO_RED_SUM || op == SAO_RED_MEAN) acc += v;
            else if (i == 0) { best = v; bi = 0; }
            else if (best == best &&   /* NaN propagates, as PyTorch: once seen it stays */
                     (v != v || ((op == SAO_RED_MAX || op == SAO_RED_ARGMAX) ? v > best : v < best))) {
                best = v; bi = i;
            }
        }
        double out = op == SAO_RED_SUM ? acc : op == SAO_RED_MEAN ? (red ? acc / (double)red : NAN)
                   : (op == SAO_RED_ARGMAX || op == SAO_RED_ARGMIN) ? (double)bi : best;
        sao_store(rd, pr + row * er, out);
        if (red > 0) sao_iter_next(&it);
    }
    sao_tensor_free(src);
    return r;
}

/* ---- matmul ----------------------------------------------------------------------------- */
sao_tensor *sao_matmul(sao_ctx *ctx, const sao_tensor *a, const sao_tensor *b) {
    if (a->ndim < 1 || b->ndim < 1) return sao_err_null(ctx, "matmul", "operands must have at least 1 dimension");
    SAO_HOST_ONLY_NULL(ctx, "matmul", a);
    SAO_HOST_ONLY_NULL(ctx, "matmul", b);
    /* vectors: [K] is [1,K] on the left and [K,1] on the right; the added dim is dropped after */
    int64_t ash[8], bsh[8];
    int and_ = a->ndim, bnd = b->ndim;
    memcpy(ash, a->shape, sizeof ash);
    memcpy(bsh, b->shape, sizeof bsh);
    if (and_ == 1) { ash[1] = ash[0]; ash[0] = 1; and_ = 2; }
    if (bnd == 1) { bsh[1] = 1; bnd = 2; }
    int64_t M = ash[and_ - 2], K = ash[and_ - 1], K2 = bsh[bnd - 2], N = bsh[bnd - 1];
    if (K != K2)
        return sao_err_null(ctx, "matmul", "inner dimensions differ: [.., %lld, %lld] x [.., %lld, %lld]",
                            (long long)M, (long long)K, (long long)K2, (long long)N);
    /* broadcast batch dims */
    int nb = (and_ > bnd ? and_ : bnd) - 2;
    int64_t bshape[8];
    for (int i = 0; i < nb; i++) {
        int ia = i - (nb - (and_ - 2)), ib = i - (nb - (bnd - 2));
        int64_t da = ia >= 0 ? ash[ia] : 1, db = ib >= 0 ? bsh[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return sao_err_null(ctx, "matmul", "batch dimensions do not broadcast (%lld vs %lld)",
                                (long long)da, (long long)db);
        bshape[i] = da == 1 ? db : da;
    }
    int rd = (a->dtype == SAO_F64 || b->dtype == SAO_F64) ? SAO_F64 : SAO_F32;
    /* contiguous copies of the operands in the compute dtype, expanded to full batch */
    int64_t fa[8], fb[8];
    for (int i = 0; i < nb; i++) fa[i] = fb[i] = bshape[i];
    fa[nb] = M; fa[nb + 1] = K; fb[nb] = K; fb[nb + 1] = N;
    int64_t nbatch = 1;
    for (int i = 0; i < nb; i++) nbatch *= bshape[i];
    sao_tensor *A = sao_tensor_empty(ctx, rd, nb + 2, fa);
    sao_tensor *B = sao_tensor_empty(ctx, rd, nb + 2, fb);
    int64_t outshape[8];
    for (int i = 0; i < nb; i++) outshape[i] = bshape[i];
    outshape[nb] = M; outshape[nb + 1] = N;
    sao_tensor *R = sao_tensor_new(ctx, rd, nb + 2, outshape);
    sao_tensor *av = NULL, *bv = NULL;
    if (!A || !B || !R) goto fail;
    av = sao_tensor_view_of(ctx, a);
    bv = sao_tensor_view_of(ctx, b);
    if (!av || !bv) goto fail;
    if (a->ndim == 1) { av->ndim = 2; av->shape[1] = av->shape[0]; av->stride[1] = av->stride[0]; av->shape[0] = 1; av->stride[0] = 0; }
    if (b->ndim == 1) { bv->ndim = 2; bv->shape[1] = 1; bv->stride[1] = 0; }
    if (sao_tensor_copy_(ctx, A, av) || sao_tensor_copy_(ctx, B, bv)) goto fail;
    sao_threads_apply(ctx);
    for (int64_t i = 0; i < nbatch; i++) {
        if (M == 0 || N == 0 || K == 0) break;
        if (rd == SAO_F32) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f,
                        (float *)A->storage->data + i * M * K, (int)K,
                        (float *)B->storage->data + i * K * N, (int)N, 0.0f,
                        (float *)R->storage->data + i * M * N, (int)N);
        } else {
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0,
                        (double *)A->storage->data + i * M * K, (int)K,
                        (double *)B->storage->data + i * K * N, (int)N, 0.0,
                        (double *)R->storage->data + i * M * N, (int)N);
        }
    }
    sao_tensor_free(A); sao_tensor_free(B); sao_tensor_free(av); sao_tensor_free(bv);
    /* drop the dims added for vector operands */
    if (a->ndim == 1 || b->ndim == 1) {
        int k = 0;
        int64_t s[8];
        for (int i = 0; i < nb; i++) s[k++] = bshape[i];
        if (a->ndim != 1) s[k++] = M;
        if (b->ndim != 1) s[k++] = N;
        sao_tensor *v = sao_tensor_view(ctx, R, k, s);
        sao_tensor_free(R);
        return v;
    }
    return R;
fail:
    sao_tensor_free(A); sao_tensor_free(B); sao_tensor_free(R); sao_tensor_free(av); sao_tensor_free(bv);
    return NULL;
}

sao_tensor *sao_cat(sao_ctx *ctx, sao_tensor *const *ts, int n, int dim) {
    if (n < 1) return sao_err_null(ctx, "cat", "needs at least one tensor");
    for (int k = 0; k < n; k++) SAO_HOST_ONLY_NULL(ctx, "cat", ts[k]);
    const sao_tensor *t0 = ts[0];
    if (dim < 0 || dim >= t0->ndim) return sao_err_null(ctx, "cat", "dim %d out of range for a %d-d tensor", dim, t0->ndim);
    int64_t shape[8];
    memcpy(shape, t0->shape, sizeof shape);
    shape[dim] = 0;
    int rd = t0->dtype;
    for (int k = 0; k < n; k++) {
        if (ts[k]->ndim != t0->ndim) return sao_err_null(ctx, "cat", "tensor %d has %d dims, tensor 1 has %d", k + 1, ts[k]->ndim, t0->ndim);
        for (int i = 0; i < t0->ndim; i++)
            if (i != dim && ts[k]->shape[i] != t0->shape[i])
                return sao_err_null(ctx, "cat", "tensor %d differs in size at dimension %d (%lld vs %lld)",
                                    k + 1, i, (long long)ts[k]->shape[i], (long long)t0->shape[i]);
        shape[dim] += ts[k]->shape[dim];
        rd = promote(rd, ts[k]->dtype) == SAO_F64 ? SAO_F64 : (rd == ts[k]->dtype ? rd : promote(rd, ts[k]->dtype));
    }
    sao_tensor *r = sao_tensor_empty(ctx, rd, t0->ndim, shape);
    if (!r) return NULL;
    int64_t at = 0;
    for (int k = 0; k < n; k++) {
        sao_tensor *v = sao_tensor_narrow(ctx, r, dim, at, ts[k]->shape[dim]);
        if (!v || sao_tensor_copy_(ctx, v, ts[k])) { sao_tensor_free(v); sao_tensor_free(r); return NULL; }
        sao_tensor_free(v);
        at += ts[k]->shape[dim];
    }
    return r;
}

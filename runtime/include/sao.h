/* sao.h — the core of the FFI contract: context, errors, dtypes, storage, tensors,
 * tensor operations, random numbers and safetensors.
 *
 * Every header under runtime/include/ is read verbatim by lua/sao/ffi.lua, which drops the
 * preprocessor lines (those starting with '#') and hands the rest to ffi.cdef. So: plain C
 * declarations only, no macros inside declarations, no inline functions.
 *
 * Conventions (see docs/architecture.md):
 *   - every entry point takes a sao_ctx* first and returns int status: 0 ok, -1 error;
 *     the message ("op: object: cause (hint)") is read with sao_ctx_error(ctx).
 *   - functions that return a pointer return NULL on error, with the message in ctx.
 *   - shapes and strides are in elements, row-major; up to SAO_MAX_DIMS (8) dimensions.
 *   - tensors are handles (sao_tensor*) owned by the caller; views share refcounted storage.
 */
#ifndef SAO_H
#define SAO_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/* ---- context --------------------------------------------------------------------------- */
typedef struct sao_ctx sao_ctx;

sao_ctx *sao_ctx_new(void);                     /* CPU context; threads from SAO_THREADS or cores */
void sao_ctx_free(sao_ctx *ctx);
const char *sao_ctx_error(const sao_ctx *ctx);  /* last error message, "" when none */
void sao_ctx_clear_error(sao_ctx *ctx);
int sao_ctx_threads(const sao_ctx *ctx);
int sao_ctx_set_threads(sao_ctx *ctx, int n);   /* n >= 1 */
const char *sao_version(void);
/* 1 when the CUDA backend is usable: built (nvcc found) and libsao_cuda.so loads, with the CUDA
 * libraries it needs (runtime/cuda_load.c loads it on this first call). A GPU may still be absent:
 * sao_cuda_device_count tells. sao_cuda_unavailable: NULL then, else why not. */
int sao_has_cuda(void);
const char *sao_cuda_unavailable(void);

/* Modification time of a file in seconds (with sub-second part), or -1 when it cannot be read. */
double sao_file_mtime(const char *path);

/* Cooperative interruption (Ctrl-C in the REPL): long loops poll this flag. */
void sao_interrupt_set(int on);
int sao_interrupt_pending(void);
/* A graceful stop: while a long job has asked for it (sao_stop_graceful(1): the train stage), the
 * sao binary turns SIGTERM and a first Ctrl-C into this flag instead of ending the process or
 * raising an error mid-step; the job polls sao_stop_requested() at a safe point (between training
 * steps), saves its state and stops. Outside such a job SIGTERM keeps its default action.
 * sao_stop_graceful(-1) only asks; each returns the previous setting. */
int sao_stop_graceful(int on);
int sao_stop_requested(void);
void sao_stop_set(int on);

/* ---- dtypes, devices ------------------------------------------------------------------- */
typedef enum {
    SAO_F32 = 0, SAO_F64 = 1, SAO_BF16 = 2, SAO_F16 = 3,
    SAO_I32 = 4, SAO_I64 = 5, SAO_U8 = 6, SAO_DTYPE_COUNT = 7
} sao_dtype;
typedef enum { SAO_CPU = 0, SAO_CUDA = 1 } sao_device;

size_t sao_dtype_size(int dtype);
const char *sao_dtype_name(int dtype);          /* "f32", "bf16", ... */
int sao_dtype_from_name(const char *name);      /* -1 when unknown */

/* ---- storage --------------------------------------------------------------------------- */
typedef struct sao_storage sao_storage;
typedef struct sao_allocator {
    const char *name;                           /* "heap", "mmap", "cuda" */
    void (*release)(sao_storage *s);            /* frees s->data (and s->handle) */
} sao_allocator;
struct sao_storage {
    void *data;
    size_t nbytes;
    int64_t refcount;
    int device;
    const sao_allocator *allocator;
    void *handle;                               /* allocator-private (mmap base, ...) */
    size_t handle_size;
};

/* ---- tensors --------------------------------------------------------------------------- */
typedef struct sao_tensor {
    sao_storage *storage;
    int64_t offset;                             /* in elements */
    int dtype;
    int ndim;
    int64_t shape[8];
    int64_t stride[8];
} sao_tensor;

sao_tensor *sao_tensor_new(sao_ctx *ctx, int dtype, int ndim, const int64_t *shape);  /* zeroed */
sao_tensor *sao_tensor_empty(sao_ctx *ctx, int dtype, int ndim, const int64_t *shape); /* uninit */
/* Wraps external memory; `release` (may be NULL) is called with `handle` when the last view goes. */
sao_tensor *sao_tensor_wrap(sao_ctx *ctx, void *data, size_t nbytes, int dtype, int ndim,
                            const int64_t *shape, const sao_allocator *release, void *handle);
void sao_tensor_free(sao_tensor *t);            /* drops this handle (storage when last) */
sao_tensor *sao_tensor_view_of(sao_ctx *ctx, const sao_tensor *t);  /* new handle, same view */
int64_t sao_tensor_numel(const sao_tensor *t);
int sao_tensor_is_contiguous(const sao_tensor *t);
void *sao_tensor_data(const sao_tensor *t);     /* address of element 0 of the view */

/* views (no copy) */
sao_tensor *sao_tensor_view(sao_ctx *ctx, const sao_tensor *t, int ndim, const int64_t *shape);
sao_tensor *sao_tensor_permute(sao_ctx *ctx, const sao_tensor *t, const int *dims);
sao_tensor *sao_tensor_narrow(sao_ctx *ctx, const sao_tensor *t, int dim, int64_t start, int64_t len);
sao_tensor *sao_tensor_expand(sao_ctx *ctx, const sao_tensor *t, int ndim, const int64_t *shape);
sao_tensor *sao_tensor_select(sao_ctx *ctx, const sao_tensor *t, int dim, int64_t index);
/* copies */
sao_tensor *sao_tensor_contiguous(sao_ctx *ctx, const sao_tensor *t);  /* new handle; copies if needed */
sao_tensor *sao_tensor_clone(sao_ctx *ctx, const sao_tensor *t);
sao_tensor *sao_tensor_to_dtype(sao_ctx *ctx, const sao_tensor *t, int dtype);
int sao_tensor_copy_(sao_ctx *ctx, sao_tensor *dst, const sao_tensor *src);  /* broadcast + convert */
int sao_tensor_fill_(sao_ctx *ctx, sao_tensor *t, double value);
double sao_tensor_get(const sao_tensor *t, const int64_t *index);   /* 0-based index */
void sao_tensor_set(sao_tensor *t, const int64_t *index, double value);
int sao_tensor_to_doubles(sao_ctx *ctx, const sao_tensor *t, double *out);  /* row-major */
int sao_tensor_summary(sao_ctx *ctx, const sao_tensor *t, double *out4);    /* min,max,mean,nan count */

/* elementwise with broadcasting; the result dtype is the promoted one */
typedef enum {
    SAO_OP_ADD = 0, SAO_OP_SUB, SAO_OP_MUL, SAO_OP_DIV, SAO_OP_POW, SAO_OP_MAX, SAO_OP_MIN,
    SAO_OP_EQ, SAO_OP_LT, SAO_OP_LE, SAO_OP_GT, SAO_OP_GE
} sao_binop;
typedef enum {
    SAO_OP_NEG = 0, SAO_OP_ABS, SAO_OP_EXP, SAO_OP_LOG, SAO_OP_SQRT, SAO_OP_TANH,
    SAO_OP_SIGMOID, SAO_OP_SILU, SAO_OP_GELU, SAO_OP_SIN, SAO_OP_COS, SAO_OP_RELU,
    SAO_OP_SOFTPLUS, SAO_OP_SQUARE, SAO_OP_RSQRT
} sao_unop;
sao_tensor *sao_binary(sao_ctx *ctx, int op, const sao_tensor *a, const sao_tensor *b);
sao_tensor *sao_binary_scalar(sao_ctx *ctx, int op, const sao_tensor *a, double b, int scalar_left);
sao_tensor *sao_unary(sao_ctx *ctx, int op, const sao_tensor *a);

/* reductions: dim = -1 over all elements (result has 0 dims), else over `dim` (kept when keepdim) */
typedef enum { SAO_RED_SUM = 0, SAO_RED_MEAN, SAO_RED_MAX, SAO_RED_MIN, SAO_RED_ARGMAX, SAO_RED_ARGMIN } sao_redop;
sao_tensor *sao_reduce(sao_ctx *ctx, int op, const sao_tensor *a, int dim, int keepdim);

/* matmul: [..., M, K] x [..., K, N] -> [..., M, N], batch dims broadcast; f32/f64 via OpenBLAS */
sao_tensor *sao_matmul(sao_ctx *ctx, const sao_tensor *a, const sao_tensor *b);
sao_tensor *sao_cat(sao_ctx *ctx, sao_tensor *const *ts, int n, int dim);

/* ---- random numbers: Philox4x32-10, counter based --------------------------------------
 * Element i (row-major) of a fill with (seed, offset) is lane i%4 of the Philox block with
 * counter (i/4 + offset, 0) and key (seed lo, seed hi). Uniform = (u32 >> 8) * 2^-24 in [0,1);
 * normal: Box-Muller on lanes (0,1) and (2,3) of the block. The same on every device and
 * every thread count. */
void sao_philox4x32(uint64_t counter, uint64_t key, uint32_t *out4);
int sao_rand_fill(sao_ctx *ctx, sao_tensor *t, uint64_t seed, uint64_t offset, int normal);

/* ---- safetensors ----------------------------------------------------------------------- */
typedef struct sao_st_file {
    int n;                                      /* number of tensors */
    char **names;
    sao_tensor **tensors;                       /* views into the mapping (or copies) */
    char *metadata_json;                        /* the "__metadata__" object as JSON, or NULL */
} sao_st_file;
sao_st_file *sao_st_load(sao_ctx *ctx, const char *path);
void sao_st_free(sao_st_file *f);               /* frees the handles it still owns */
sao_tensor *sao_st_take(sao_st_file *f, int i);  /* transfers ownership of tensor i */
int sao_st_save(sao_ctx *ctx, const char *path, int n, const char *const *names,
                sao_tensor *const *tensors, const char *metadata_json);

#ifdef __cplusplus
}
#endif
#endif

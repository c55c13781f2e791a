/* internal.h — what runtime/ and kernels/ files share but Lua never sees: the context's
 * layout, error reporting, and small helpers. Not part of the FFI contract. */
#ifndef SAO_INTERNAL_H
#define SAO_INTERNAL_H
#include "sao.h"
#include <stdarg.h>

struct sao_ctx {
    char err[1024];        /* last error: "op: object: cause (hint)" */
    int threads;           /* worker threads for kernels (OpenMP) */
    int device;            /* SAO_CPU for now */
};

/* Records an error in ctx (if non-NULL) and returns -1, so callers can `return sao_err(...)`.
 * Format: op names the operation, then the object, the cause and, when useful, a hint. */
int sao_err(sao_ctx *ctx, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Same for functions returning pointers: records and returns NULL. */
void *sao_err_null(sao_ctx *ctx, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Applies ctx->threads to OpenMP and OpenBLAS before a parallel section. */
void sao_threads_apply(const sao_ctx *ctx);

/* Writes `n` bytes to `path` atomically (path.tmp.PID then rename). */
int sao_write_file_atomic(sao_ctx *ctx, const char *op, const char *path, const void *data, size_t n);

/* IEEE half/bfloat16 conversions (round to nearest even). */
float sao_bf16_to_f32(uint16_t h);
uint16_t sao_f32_to_bf16(float f);
float sao_f16_to_f32(uint16_t h);
uint16_t sao_f32_to_f16(float f);

#define SAO_UNUSED(x) ((void)(x))

/* The tensor functions that read or write elements on the host refuse a device tensor with what
 * to do, instead of dereferencing device memory. */
#define SAO_ON_DEVICE_HINT "the tensor is on the GPU: copy it to the host first (t:to(\"cpu\"))"
#define SAO_HOST_ONLY(ctx, op, t) \
    do { if ((t)->storage->device != SAO_CPU) return sao_err(ctx, op, SAO_ON_DEVICE_HINT); } while (0)
#define SAO_HOST_ONLY_NULL(ctx, op, t) \
    do { if ((t)->storage->device != SAO_CPU) return sao_err_null(ctx, op, SAO_ON_DEVICE_HINT); } while (0)
#endif

/* cuda_load.c — every CUDA entry point of libsao.so: a forwarder that loads the CUDA backend
 * (libsao_cuda.so, kernels/cuda/) on the first call that needs it and calls through its table
 * (runtime/cuda_backend.h).
 *
 * Where the backend comes from: $SAO_CUDA_LIB when set, else libsao_cuda.so in the directory
 * libsao.so was loaded from (build/ in the tree, PREFIX/lib installed). A CPU-only build
 * (CUDA=0, or no nvcc) never looks for it. Without a backend every entry point still answers: the
 * ops with a sao error saying why ("sao was built without CUDA ..." or the loader's message), the
 * device count 0, the allocator's statistics zero, freeing NULL and moving a host model to the host
 * are no-ops. Calls that only report (memory statistics, freeing, emptying the cache) never load it. */
#include "cuda_backend.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sao_cuda_backend tbl;
static int loaded;              /* tbl is filled */
static char why[6144];          /* when not: the reason */
static pthread_once_t once = PTHREAD_ONCE_INIT;

#ifdef SAO_WITH_CUDA
static void load(void) {
    char path[4096];
    const char *env = getenv("SAO_CUDA_LIB");
    if (env && *env) {
        snprintf(path, sizeof path, "%s", env);
    } else {
        Dl_info info;
        const char *self = dladdr((void *)&sao_cuda_unavailable, &info) && info.dli_fname ? info.dli_fname : "";
        const char *slash = strrchr(self, '/');
        int dir = slash ? (int)(slash - self) : 0;
        snprintf(path, sizeof path, "%.*s%slibsao_cuda.so", dir, self, slash ? "/" : "");
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(why, sizeof why, "the CUDA backend could not be loaded: %s (build it with `make`, or set "
                 "SAO_CUDA_LIB to libsao_cuda.so)", dlerror());
        return;
    }
    int (*fill)(sao_cuda_backend *, size_t) = (int (*)(sao_cuda_backend *, size_t))dlsym(h, SAO_CUDA_BACKEND_SYMBOL);
    if (!fill || fill(&tbl, sizeof tbl) != 0) {
        snprintf(why, sizeof why, "%s: not a CUDA backend of this libsao.so (%s): rebuild both with `make`",
                 path, fill ? "its entry points differ" : "no " SAO_CUDA_BACKEND_SYMBOL);
        memset(&tbl, 0, sizeof tbl);
        dlclose(h);
        return;
    }
    loaded = 1;   /* never closed: device memory and handles live until the process ends */
}
#else
static void load(void) {
    snprintf(why, sizeof why, "sao was built without CUDA (no nvcc found, or CUDA=0): rebuild with the CUDA toolkit");
}
#endif

const char *sao_cuda_unavailable(void) {
    pthread_once(&once, load);
    return loaded ? NULL : why;
}

int sao_has_cuda(void) { return sao_cuda_unavailable() == NULL; }

/* ---- the generated forwarders ---- */
#define FORWARD_ERR(name, params, args)                                                          \
    int name params {                                                                            \
        const char *no = sao_cuda_unavailable();                                                 \
        if (no) return sao_err(ctx, #name + 4, "%s", no);                                        \
        return tbl.fn_##name args;                                                                 \
    }
#define FORWARD_PTR(type, name, params, args)                                                    \
    type name params {                                                                           \
        const char *no = sao_cuda_unavailable();                                                 \
        if (no) return sao_err_null(ctx, #name + 4, "%s", no);                                   \
        return tbl.fn_##name args;                                                                 \
    }
#define FORWARD_OWN(name)
SAO_CUDA_ENTRY_POINTS(FORWARD_ERR, FORWARD_PTR, FORWARD_OWN)

/* ---- the ones written out: no ctx, or a useful answer without a backend ---- */
int sao_cuda_device_count(void) { return sao_cuda_unavailable() ? 0 : tbl.fn_sao_cuda_device_count(); }

sao_tensor *sao_tensor_to_cpu(sao_ctx *ctx, const sao_tensor *t) {
    if (t->storage->device == SAO_CPU) return sao_tensor_contiguous(ctx, t);
    const char *no = sao_cuda_unavailable();
    if (no) return sao_err_null(ctx, "to_cpu", "%s", no);
    return tbl.fn_sao_tensor_to_cpu(ctx, t);
}

/* Nothing was allocated before the backend was loaded, so none of these loads it. */
int sao_cuda_free(void *ptr) {
    if (!ptr) return 0;
    return loaded ? tbl.fn_sao_cuda_free(ptr) : -1;
}

int64_t sao_cuda_empty_cache(void) { return loaded ? tbl.fn_sao_cuda_empty_cache() : 0; }

void sao_cuda_reset_peak(void) {
    if (loaded) tbl.fn_sao_cuda_reset_peak();
}

void sao_cuda_memory_stats(int64_t *allocated, int64_t *cached, int64_t *peak, int64_t *n_cudamalloc) {
    if (loaded) {
        tbl.fn_sao_cuda_memory_stats(allocated, cached, peak, n_cudamalloc);
        return;
    }
    if (allocated) *allocated = 0;
    if (cached) *cached = 0;
    if (peak) *peak = 0;
    if (n_cudamalloc) *n_cudamalloc = 0;
}

int sao_cuda_gemm_use_lt(int on) { return sao_cuda_unavailable() ? 0 : tbl.fn_sao_cuda_gemm_use_lt(on); }
int sao_cuda_gemm_precision(int mode) { return sao_cuda_unavailable() ? 0 : tbl.fn_sao_cuda_gemm_precision(mode); }
int64_t sao_cuda_gemm_workspace_bytes(int device) { return loaded ? tbl.fn_sao_cuda_gemm_workspace_bytes(device) : 0; }

int sao_cuda_use(sao_ctx *ctx, const char *op, int device, const char *what) {
    const char *no = sao_cuda_unavailable();
    if (no) return sao_err(ctx, op, "device %d: %s, or keep the %s on the CPU", device, no, what);
    return tbl.fn_sao_cuda_use(ctx, op, device, what);
}

int sao_dit_to_device(sao_ctx *ctx, sao_dit *m, int device) {
    const char *no = sao_cuda_unavailable();
    if (no) return sao_err(ctx, "dit_to_device", "device %d: %s, or keep the model on the CPU", device, no);
    return tbl.fn_sao_dit_to_device(ctx, m, device);
}

/* A model is on a device only through the backend: without one it is already on the host. */
int sao_dit_to_host(sao_ctx *ctx, sao_dit *m) { return loaded ? tbl.fn_sao_dit_to_host(ctx, m) : 0; }
int sao_dit_sync_host(sao_ctx *ctx, sao_dit *m) { return loaded ? tbl.fn_sao_dit_sync_host(ctx, m) : 0; }

void dit_device_release(sao_dit *m) {
    if (loaded) tbl.fn_dit_device_release(m);
}

/* Without a backend there is no cuDNN either, for the backend's reason. */
const char *sao_cuda_cudnn_status(int64_t *version) {
    const char *no = sao_cuda_unavailable();
    if (no) {
        if (version) *version = 0;
        return no;
    }
    return tbl.fn_sao_cuda_cudnn_status(version);
}

/* Without a backend cuDNN's SDPA never ran, for the backend's reason. */
int64_t sao_cuda_sdpa_status(int64_t *backwards, char *why, size_t why_size) {
    const char *no = sao_cuda_unavailable();
    if (no) {
        if (backwards) *backwards = 0;
        if (why && why_size) snprintf(why, why_size, "%s", no);
        return 0;
    }
    return tbl.fn_sao_cuda_sdpa_status(backwards, why, why_size);
}

/* A communicator exists only through the backend: without one there is nothing to free. */
void sao_nccl_close(sao_nccl *c) {
    if (c && loaded) tbl.fn_sao_nccl_close(c);
}
void sao_nccl_abort(sao_nccl *c) {
    if (c && loaded) tbl.fn_sao_nccl_abort(c);
}

/* The allocator's rounding (both libraries use this one): 512 B steps up to 1 MiB, then four
 * classes per power of two. */
size_t sao_cuda_size_class(size_t n) {
    if (n == 0) n = 1;
    if (n <= ((size_t)1 << 20)) return (n + 511) & ~(size_t)511;
    int p = 63 - __builtin_clzll((unsigned long long)(n - 1));
    size_t step = (size_t)1 << (p - 2);
    return (n + step - 1) & ~(step - 1);
}

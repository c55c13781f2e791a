// glue.cu — the device memory helpers of runtime/cuda_glue.h, shared by the model code's CUDA kernel
// tables (dit_glue.cu, vae.c, t5.c): choosing a device, row copies, zero, y += x, tanh and blocking
// host <-> device copies.
//
// Pinned staging: a copy between pageable host memory and the device of at least STAGE_MIN bytes
// goes through two pinned host buffers of STAGE_CHUNK bytes (cudaHostAlloc, made on first use),
// chunk by chunk, the host memcpy of one chunk overlapping the DMA of the other; the call still
// returns when the copy is complete (put: the device data are in place, in stream order; get: the
// host buffer holds them). Without pinned memory (cudaHostAlloc refused) plain cudaMemcpy runs.
#include "cuda_internal.h"
extern "C" {
#include "cuda_glue.h"
#include "sao_cuda.h"
}
#include <math.h>
#include <pthread.h>
#include <string.h>

extern "C" int sao_cuda_use(sao_ctx *ctx, const char *op, int device, const char *what) {
    int n = sao_cuda_device_count();
    if (n == 0)
        return sao_err(ctx, op, "device %d: no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES), "
                       "or keep the %s on the CPU", device, what);
    if (device < 0 || device >= n)
        return sao_err(ctx, op, "device %d: there are %d CUDA device(s), numbered 0 to %d", device, n, n - 1);
    CUDA_TRY(ctx, op, cudaSetDevice(device));
    return 0;
}

extern "C" int sao_cuda_copy_rows(sao_ctx *ctx, float *dst, int64_t dst_pitch, const float *src, int64_t src_pitch,
                                  int64_t rows, int64_t cols) {
    const char *op = "cuda_copy";
    if (rows <= 0 || cols <= 0) return 0;
    size_t w = (size_t)cols * sizeof(float);
    if (rows == 1) {
        CUDA_TRY(ctx, op, cudaMemcpyAsync(dst, src, w, cudaMemcpyDeviceToDevice, sao_cuda_stream()));
    } else {
        CUDA_TRY(ctx, op, cudaMemcpy2DAsync(dst, (size_t)dst_pitch * sizeof(float), src, (size_t)src_pitch * sizeof(float),
                                            w, (size_t)rows, cudaMemcpyDeviceToDevice, sao_cuda_stream()));
    }
    return 0;
}

extern "C" int sao_cuda_zero(sao_ctx *ctx, float *dst, int64_t n) {
    if (n <= 0) return 0;
    CUDA_TRY(ctx, "cuda_zero", cudaMemsetAsync(dst, 0, (size_t)n * sizeof(float), sao_cuda_stream()));
    return 0;
}

__global__ static void add_kernel(float *y, const float *x, long long n) {
    SAO_GRID_STRIDE(i, n) y[i] += x[i];
}

extern "C" int sao_cuda_add(sao_ctx *ctx, float *y, const float *x, int64_t n) {
    if (n <= 0) return 0;
    add_kernel<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(y, x, (long long)n);
    CUDA_LAUNCHED(ctx, "cuda_add");
    return 0;
}

__global__ static void tanh_kernel(float *x, long long n) {
    SAO_GRID_STRIDE(i, n) x[i] = tanhf(x[i]);
}

extern "C" int sao_cuda_tanh(sao_ctx *ctx, float *x, int64_t n) {
    if (n <= 0) return 0;
    tanh_kernel<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(x, (long long)n);
    CUDA_LAUNCHED(ctx, "cuda_tanh");
    return 0;
}

__global__ static void scale_kernel(float *x, long long n, float s) {
    SAO_GRID_STRIDE(i, n) x[i] = __fmul_rn(x[i], s);   // one rounding, as the CPU loop (no fusion to undo)
}

extern "C" int sao_cuda_scale(sao_ctx *ctx, float *x, int64_t n, float s) {
    if (n <= 0) return 0;
    scale_kernel<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(x, (long long)n, s);
    CUDA_LAUNCHED(ctx, "cuda_scale");
    return 0;
}

static pthread_mutex_t scratch_lock = PTHREAD_MUTEX_INITIALIZER;

float *sao_cuda_device_scratch(sao_ctx *ctx, const char *op, const char *what, float **bufs, size_t *sizes,
                               size_t floats) {
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return (float *)sao_err_null(ctx, op, "cudaGetDevice: %s", cudaGetErrorString(e));
    if (dev < 0 || dev >= SAO_CUDA_SCRATCH_DEVICES)
        return (float *)sao_err_null(ctx, op, "device %d: the %s covers devices 0..%d", dev, what,
                                     SAO_CUDA_SCRATCH_DEVICES - 1);
    pthread_mutex_lock(&scratch_lock);
    float *p = sao_cuda_grow(ctx, &bufs[dev], &sizes[dev], floats);
    pthread_mutex_unlock(&scratch_lock);
    return p;
}

extern "C" float *sao_cuda_grow(sao_ctx *ctx, float **buf, size_t *have, size_t need) {
    if (need <= *have) return *buf;
    sao_cuda_free(*buf);   // stream-ordered: safe while queued kernels still use it
    *buf = NULL;
    *have = 0;
    void *p = NULL;
    size_t bytes = need * sizeof(float);
    if (sao_cuda_malloc(ctx, bytes, &p)) return NULL;
    *buf = (float *)p;
    *have = sao_cuda_size_class(bytes) / sizeof(float);   // the block's real size
    return *buf;
}

static const size_t STAGE_MIN = (size_t)1 << 20, STAGE_CHUNK = (size_t)8 << 20;
static pthread_mutex_t stage_lock = PTHREAD_MUTEX_INITIALIZER;   // one staged copy at a time
static void *stage_buf[2];
static cudaEvent_t stage_ev[2];
static int stage_state;   // 0: not tried, 1: ready, -1: unavailable (plain copies)

// Makes the pinned buffers and their events once; 0 when they are usable. Caller holds stage_lock.
static int stage_ready(void) {
    if (stage_state) return stage_state > 0;
    stage_state = -1;
    for (int i = 0; i < 2; i++) {
        if (cudaHostAlloc(&stage_buf[i], STAGE_CHUNK, cudaHostAllocDefault) != cudaSuccess ||
            cudaEventCreateWithFlags(&stage_ev[i], cudaEventDisableTiming) != cudaSuccess) {
            cudaGetLastError();
            return 0;
        }
    }
    stage_state = 1;
    return 1;
}

#define STAGE_TRY(call)                                                                           \
    do {                                                                                          \
        cudaError_t e_ = (call);                                                                  \
        if (e_ != cudaSuccess) {                                                                  \
            pthread_mutex_unlock(&stage_lock);                                                    \
            return sao_err(ctx, op, "%s:%d: %s: %s (%zu bytes)", __FILE__, __LINE__, #call,        \
                           cudaGetErrorString(e_), bytes);                                        \
        }                                                                                         \
    } while (0)

// host -> device through the pinned buffers: chunk k is copied into buffer k % 2 once that
// buffer's previous DMA is done, then sent asynchronously on sao's stream.
static int staged_put(sao_ctx *ctx, const char *op, char *dst, const char *src, size_t bytes) {
    cudaStream_t st = sao_cuda_stream();
    size_t k = 0;
    for (size_t off = 0; off < bytes; off += STAGE_CHUNK, k++) {
        size_t len = bytes - off < STAGE_CHUNK ? bytes - off : STAGE_CHUNK;
        int b = (int)(k & 1);
        if (k >= 2) STAGE_TRY(cudaEventSynchronize(stage_ev[b]));
        memcpy(stage_buf[b], src + off, len);
        STAGE_TRY(cudaMemcpyAsync(dst + off, stage_buf[b], len, cudaMemcpyHostToDevice, st));
        STAGE_TRY(cudaEventRecord(stage_ev[b], st));
    }
    STAGE_TRY(cudaEventSynchronize(stage_ev[(k - 1) & 1]));   // the last chunk (and so every one) is in
    return 0;
}

// device -> host: chunk k+1's DMA into the other buffer is queued before chunk k is copied out.
static int staged_get(sao_ctx *ctx, const char *op, char *dst, const char *src, size_t bytes) {
    cudaStream_t st = sao_cuda_stream();
    size_t n = (bytes + STAGE_CHUNK - 1) / STAGE_CHUNK;
    for (size_t k = 0; k <= n; k++) {
        if (k < n) {   // queue chunk k
            size_t off = k * STAGE_CHUNK, len = bytes - off < STAGE_CHUNK ? bytes - off : STAGE_CHUNK;
            STAGE_TRY(cudaMemcpyAsync(stage_buf[k & 1], src + off, len, cudaMemcpyDeviceToHost, st));
            STAGE_TRY(cudaEventRecord(stage_ev[k & 1], st));
        }
        if (k > 0) {   // chunk k-1 has landed: copy it out
            size_t j = k - 1, off = j * STAGE_CHUNK, len = bytes - off < STAGE_CHUNK ? bytes - off : STAGE_CHUNK;
            STAGE_TRY(cudaEventSynchronize(stage_ev[j & 1]));
            memcpy(dst + off, stage_buf[j & 1], len);
        }
    }
    return 0;
}

// A copy of `bytes` to (put) or from the device; pageable host memory of STAGE_MIN bytes or more
// goes through the pinned buffers.
static int host_copy(sao_ctx *ctx, const char *op, void *dst, const void *src, size_t bytes, bool put) {
    if (!bytes) return 0;
    if (bytes >= STAGE_MIN) {
        cudaPointerAttributes a;
        const void *host = put ? src : dst;
        bool pageable = cudaPointerGetAttributes(&a, host) == cudaSuccess && a.type == cudaMemoryTypeUnregistered;
        cudaGetLastError();
        if (pageable) {
            pthread_mutex_lock(&stage_lock);
            if (stage_ready()) {
                int rc = put ? staged_put(ctx, op, (char *)dst, (const char *)src, bytes)
                             : staged_get(ctx, op, (char *)dst, (const char *)src, bytes);
                if (rc == 0) pthread_mutex_unlock(&stage_lock);   // STAGE_TRY unlocked on failure
                return rc;
            }
            pthread_mutex_unlock(&stage_lock);
        }
    }
    CUDA_TRY(ctx, op, cudaMemcpy(dst, src, bytes, put ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost));
    return 0;
}

extern "C" int sao_cuda_put_bytes(sao_ctx *ctx, void *dst, const void *host_src, size_t bytes) {
    return host_copy(ctx, "cuda_put", dst, host_src, bytes, true);
}

extern "C" int sao_cuda_get_bytes(sao_ctx *ctx, void *host_dst, const void *src, size_t bytes) {
    return host_copy(ctx, "cuda_get", host_dst, src, bytes, false);
}

extern "C" int sao_cuda_memcpy(sao_ctx *ctx, void *dst, const void *src, size_t bytes) {
    if (!bytes) return 0;
    CUDA_TRY(ctx, "cuda_memcpy", cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
    return 0;
}

extern "C" int sao_cuda_put(sao_ctx *ctx, float *dst, const float *host_src, int64_t n) {
    return n <= 0 ? 0 : sao_cuda_put_bytes(ctx, dst, host_src, (size_t)n * sizeof(float));
}

extern "C" int sao_cuda_get(sao_ctx *ctx, float *host_dst, const float *src, int64_t n) {
    return n <= 0 ? 0 : sao_cuda_get_bytes(ctx, host_dst, src, (size_t)n * sizeof(float));
}

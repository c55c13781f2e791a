// device.cu — the CUDA device runtime: device query, device storage (from the caching allocator,
// alloc.cu) and transfers, and the first device kernels (Philox fill, SiLU), each the twin of a
// CPU function it is tested against (spec/cuda_spec.lua, tagged gpu). Errors come back as
// Lua-visible messages naming the CUDA call, its error string and a hint; nothing aborts.
#include "cuda_internal.h"
extern "C" {
#include "cuda_glue.h"
#include "sao_cuda.h"
#include "sao_kernels.h"
}
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

thread_local cudaStream_t sao_cuda_cur_stream = 0;   // cuda_internal.h
thread_local bool sao_cuda_capturing = false;

extern "C" int sao_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();   // clear the sticky "no driver" error
        return 0;
    }
    return n;
}

extern "C" int sao_cuda_device_props(sao_ctx *ctx, int dev, char *name, int name_len, int64_t *total_bytes,
                                     int *major, int *minor) {
    cudaDeviceProp p;
    CUDA_TRY(ctx, "cuda_device_props", cudaGetDeviceProperties(&p, dev));
    if (name && name_len > 0) snprintf(name, (size_t)name_len, "%s", p.name);
    if (total_bytes) *total_bytes = (int64_t)p.totalGlobalMem;
    if (major) *major = p.major;
    if (minor) *minor = p.minor;
    return 0;
}

extern "C" int sao_cuda_mem_info(sao_ctx *ctx, int dev, int64_t *free_bytes, int64_t *total_bytes) {
    const char *op = "cuda_mem_info";
    int cur = 0;
    CUDA_TRY(ctx, op, cudaGetDevice(&cur));
    CUDA_TRY(ctx, op, cudaSetDevice(dev));
    size_t f = 0, t = 0;
    cudaError_t e = cudaMemGetInfo(&f, &t);
    cudaSetDevice(cur);
    if (e != cudaSuccess) return sao_err(ctx, op, "device %d: cudaMemGetInfo: %s", dev, cudaGetErrorString(e));
    if (free_bytes) *free_bytes = (int64_t)f;
    if (total_bytes) *total_bytes = (int64_t)t;
    return 0;
}

// Device storage comes from the caching allocator (alloc.cu); the last view's release hands the
// block back to its bin, where the next tensor of that size class finds it.
static void cuda_release(sao_storage *s) { sao_cuda_free(s->data); }
static const sao_allocator cuda_allocator = {"cuda", cuda_release};

extern "C" sao_tensor *sao_tensor_to_cuda(sao_ctx *ctx, const sao_tensor *t, int dev) {
    const char *op = "to_cuda";
    if (t->storage->device != SAO_CPU) return (sao_tensor *)sao_err_null(ctx, op, "tensor is already on a device");
    cudaError_t e = cudaSetDevice(dev);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return (sao_tensor *)sao_err_null(ctx, op, "%s:%d: cudaSetDevice(%d): %s (is a GPU visible? check nvidia-smi)",
                                          __FILE__, __LINE__, dev, cudaGetErrorString(e));
    }
    sao_tensor *c = sao_tensor_contiguous(ctx, t);
    if (!c) return NULL;
    size_t bytes = (size_t)sao_tensor_numel(c) * sao_dtype_size(c->dtype);
    void *d = NULL;
    if (sao_cuda_malloc(ctx, bytes, &d)) {   // the message names the size and what to do
        sao_tensor_free(c);
        return NULL;
    }
    int rc = sao_cuda_put_bytes(ctx, d, sao_tensor_data(c), bytes);   // large copies: pinned staging (glue.cu)
    sao_tensor_free(c);
    if (rc) {   // the message names the copy
        sao_cuda_free(d);
        return NULL;
    }
    sao_tensor *r = sao_tensor_wrap(ctx, d, bytes, t->dtype, t->ndim, t->shape, &cuda_allocator, NULL);
    if (!r) { sao_cuda_free(d); return NULL; }
    r->storage->device = SAO_CUDA;
    return r;
}

extern "C" sao_tensor *sao_tensor_empty_cuda(sao_ctx *ctx, int dtype, int ndim, const int64_t *shape, int dev) {
    const char *op = "cuda_empty";
    cudaError_t e = cudaSetDevice(dev);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return (sao_tensor *)sao_err_null(ctx, op, "%s:%d: cudaSetDevice(%d): %s (is a GPU visible? check nvidia-smi)",
                                          __FILE__, __LINE__, dev, cudaGetErrorString(e));
    }
    sao_tensor *shape_of = sao_tensor_wrap(ctx, NULL, SIZE_MAX, dtype, ndim, shape, NULL, NULL);   // checks dtype, shape
    if (!shape_of) return NULL;
    size_t bytes = (size_t)sao_tensor_numel(shape_of) * sao_dtype_size(dtype);
    sao_tensor_free(shape_of);
    void *d = NULL;
    if (sao_cuda_malloc(ctx, bytes, &d)) return NULL;
    sao_tensor *r = sao_tensor_wrap(ctx, d, bytes, dtype, ndim, shape, &cuda_allocator, NULL);
    if (!r) { sao_cuda_free(d); return NULL; }
    r->storage->device = SAO_CUDA;
    return r;
}

extern "C" int sao_cuda_tensor_device(sao_ctx *ctx, const sao_tensor *t) {
    const char *op = "cuda_tensor_device";
    if (t->storage->device != SAO_CUDA) return sao_err(ctx, op, "the tensor is not in device memory");
    cudaPointerAttributes a;
    CUDA_TRY(ctx, op, cudaPointerGetAttributes(&a, t->storage->data));
    if (a.type != cudaMemoryTypeDevice) return sao_err(ctx, op, "the tensor's storage is not device memory");
    return a.device;
}

extern "C" sao_tensor *sao_tensor_to_cpu(sao_ctx *ctx, const sao_tensor *t) {
    if (t->storage->device == SAO_CPU) return sao_tensor_contiguous(ctx, t);
    if (!sao_tensor_is_contiguous(t)) return (sao_tensor *)sao_err_null(ctx, "to_cpu", "device tensor is not contiguous");
    sao_tensor *r = sao_tensor_empty(ctx, t->dtype, t->ndim, t->shape);
    if (!r) return NULL;
    size_t bytes = (size_t)sao_tensor_numel(t) * sao_dtype_size(t->dtype);
    if (sao_cuda_get_bytes(ctx, sao_tensor_data(r), sao_tensor_data(t), bytes)) {
        sao_tensor_free(r);
        return NULL;
    }
    return r;
}

__global__ static void rand_kernel(float *out, long long n, unsigned long long seed, unsigned long long offset, int normal) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    unsigned int b[4];
    sao_philox((unsigned long long)(i / 4) + offset, seed, b);
    int lane = (int)(i % 4);
    double v;
    if (!normal) {
        v = (double)(b[lane] >> 8) * (1.0 / 16777216.0);
    } else {
        int pair = lane / 2;
        double ua = (double)(b[2 * pair] >> 8) * (1.0 / 16777216.0);
        double ub = (double)(b[2 * pair + 1] >> 8) * (1.0 / 16777216.0);
        double r = sqrt(-2.0 * log(1.0 - ua)), th = 2.0 * M_PI * ub;
        v = (lane % 2 == 0) ? r * cos(th) : r * sin(th);
    }
    out[i] = (float)v;
}

extern "C" int sao_cuda_rand_fill(sao_ctx *ctx, sao_tensor *t, uint64_t seed, uint64_t offset, int normal) {
    const char *op = normal ? "cuda_randn" : "cuda_rand";
    if (t->storage->device != SAO_CUDA || t->dtype != SAO_F32 || !sao_tensor_is_contiguous(t))
        return sao_err(ctx, op, "needs a contiguous f32 device tensor");
    long long n = (long long)sao_tensor_numel(t);
    if (n == 0) return 0;
    rand_kernel<<<(unsigned)((n + 255) / 256), 256, 0, sao_cuda_stream()>>>((float *)sao_tensor_data(t), n, seed, offset, normal);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

// ---- fill, the twin of sao_tensor_fill_ for a contiguous f32 device tensor ---------------------------
__global__ static void fill_kernel(float *x, long long n, float v) {
    SAO_GRID_STRIDE(i, n) x[i] = v;
}

extern "C" int sao_cuda_fill(sao_ctx *ctx, sao_tensor *t, double value) {
    const char *op = "cuda_fill";
    if (t->storage->device != SAO_CUDA || t->dtype != SAO_F32 || !sao_tensor_is_contiguous(t))
        return sao_err(ctx, op, "needs a contiguous f32 device tensor");
    long long n = (long long)sao_tensor_numel(t);
    if (n == 0) return 0;
    fill_kernel<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>((float *)sao_tensor_data(t), n,
                                                                                        (float)value);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

// ---- fences: events on sao's stream that the host can wait for ------------------------------------------
// Slot k's event is recorded by sao_cuda_fence (created on first use, on the current device, without
// timing) and waited for by sao_cuda_fence_wait; a slot never recorded is done.
#define FENCES 8
static cudaEvent_t fence_ev[FENCES];
static int fence_dev[FENCES];
static bool fence_set[FENCES];

extern "C" int sao_cuda_fence(sao_ctx *ctx, int slot) {
    const char *op = "cuda_fence";
    if (slot < 0 || slot >= FENCES) return sao_err(ctx, op, "slot %d is not in 0..%d", slot, FENCES - 1);
    int dev = 0;
    CUDA_TRY(ctx, op, cudaGetDevice(&dev));
    if (fence_ev[slot] && fence_dev[slot] != dev) {   // events belong to a device: make one for this one
        cudaEventDestroy(fence_ev[slot]);
        fence_ev[slot] = NULL;
    }
    if (!fence_ev[slot]) {
        CUDA_TRY(ctx, op, cudaEventCreateWithFlags(&fence_ev[slot], cudaEventDisableTiming));
        fence_dev[slot] = dev;
    }
    CUDA_TRY(ctx, op, cudaEventRecord(fence_ev[slot], sao_cuda_stream()));
    fence_set[slot] = true;
    return 0;
}

extern "C" int sao_cuda_fence_wait(sao_ctx *ctx, int slot) {
    const char *op = "cuda_fence_wait";
    if (slot < 0 || slot >= FENCES) return sao_err(ctx, op, "slot %d is not in 0..%d", slot, FENCES - 1);
    if (!fence_set[slot]) return 0;
    CUDA_TRY(ctx, op, cudaEventSynchronize(fence_ev[slot]));
    return 0;
}

// ---- SiLU, the twin of kernels/cpu/activations.c ------------------------------------------------
__global__ static void silu_fwd(const float *x, long long n, float *y) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { float v = x[i]; y[i] = v / (1.0f + expf(-v)); }
}

__global__ static void silu_bwd(const float *dy, const float *x, long long n, float *dx) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float s = 1.0f / (1.0f + expf(-x[i]));
        dx[i] += dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
}

extern "C" int sao_cuda_silu_forward(sao_ctx *ctx, const float *x, int64_t n, float *y) {
    if (n <= 0) return 0;
    silu_fwd<<<(unsigned)((n + 255) / 256), 256, 0, sao_cuda_stream()>>>(x, (long long)n, y);
    CUDA_TRY(ctx, "cuda_silu_forward", cudaGetLastError());
    return 0;
}

extern "C" int sao_cuda_silu_backward(sao_ctx *ctx, const float *dy, const float *x, int64_t n, float *dx) {
    if (n <= 0) return 0;
    silu_bwd<<<(unsigned)((n + 255) / 256), 256, 0, sao_cuda_stream()>>>(dy, x, (long long)n, dx);
    CUDA_TRY(ctx, "cuda_silu_backward", cudaGetLastError());
    return 0;
}

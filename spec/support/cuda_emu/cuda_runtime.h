// Fake CUDA runtime (spec/support/cuda_emu): kernels/cuda/*.cu compiled as
// C++ and run on the CPU. Device memory is a separate mmap arena, PROT_NONE outside emulated device
// work. Launches run synchronously (every CUDA thread a fiber). Streams, events and CUDA graph
// capture are modelled: while a stream captures, work queued on it is recorded (arguments taken at
// the call) and replayed by cudaGraphLaunch; work on another stream, or an unsafe call, from the
// capturing thread invalidates the capture as CUDA's thread-local mode does.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <functional>
#include <tuple>
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2, cudaErrorInvalidConfiguration = 9,
       cudaErrorInvalidDevice = 101,
       cudaErrorStreamCaptureUnsupported = 900, cudaErrorStreamCaptureInvalidated = 901,
       cudaErrorStreamCaptureImplicit = 906 };
typedef struct emu_stream *cudaStream_t;
typedef struct emu_event *cudaEvent_t;
typedef struct emu_graph *cudaGraph_t;
typedef struct emu_graph *cudaGraphExec_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                      cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
enum cudaMemoryType { cudaMemoryTypeUnregistered, cudaMemoryTypeHost, cudaMemoryTypeDevice, cudaMemoryTypeManaged };
struct cudaPointerAttributes { cudaMemoryType type; int device; void *devicePointer, *hostPointer; };
struct cudaDeviceProp { char name[256]; size_t totalGlobalMem; int major, minor; };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin };
enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16BF = 14 };
typedef cudaDataType_t cudaDataType;
enum cudaStreamCaptureMode { cudaStreamCaptureModeGlobal = 0, cudaStreamCaptureModeThreadLocal = 1,
                             cudaStreamCaptureModeRelaxed = 2 };
#define cudaStreamDefault 0u
#define cudaStreamNonBlocking 1u
#define cudaEventDisableTiming 2u
#define cudaHostAllocDefault 0u

cudaError_t cudaGetLastError();
const char *cudaGetErrorString(cudaError_t);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b);
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind k);
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st = 0);
cudaError_t cudaMemcpy2DAsync(void *d, size_t dp, const void *s, size_t sp, size_t w, size_t h, cudaMemcpyKind k, cudaStream_t st = 0);
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t st = 0);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr, int);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamSynchronize(cudaStream_t);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p);
// a kernel's dynamic shared memory limit (cudaFuncAttributeMaxDynamicSharedMemorySize): 48 KB until
// raised, at most the device's opt-in maximum; a launch asking for more fails as on a GPU
cudaError_t emu_func_attr(const void *kernel, cudaFuncAttribute a, int value);
template <class T> cudaError_t cudaFuncSetAttribute(T *k, cudaFuncAttribute a, int v) {
    return emu_func_attr(reinterpret_cast<const void *>(k), a, v);
}

bool emu_is_device(const void *p);
struct emu_dev_access { emu_dev_access(); ~emu_dev_access(); };   // arena readable while alive

// ---- kernels ----
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
struct emu_uint3 { unsigned x, y, z; };
extern emu_uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
void __syncthreads();
void __syncwarp(unsigned mask = 0xffffffffu);
double emu_shfl(double v, int mode, int arg);   // mode 0: src lane, 1: xor, 2: down
template <class T> T __shfl_sync(unsigned, T v, int src) { return (T)emu_shfl((double)v, 0, src); }
template <class T> T __shfl_xor_sync(unsigned, T v, int m) { return (T)emu_shfl((double)v, 1, m); }
template <class T> T __shfl_down_sync(unsigned, T v, int o) { return (T)emu_shfl((double)v, 2, o); }
void *emu_dyn_smem();
// the block's region for the static __shared__ array declared at `site` (rewrite.lua numbers them):
// allocated NaN-filled on the block's first request, the same for every thread of the block
void *emu_static_smem(const char *site, size_t bytes);
struct emu_cfg { dim3 g, b; size_t smem; cudaStream_t st; };
inline emu_cfg emu_config(dim3 g, dim3 b, size_t smem = 0, cudaStream_t st = 0) { return {g, b, smem, st}; }
// queues (or, while its stream captures, records) one launch; the closure holds the arguments as
// evaluated at the launch, as CUDA copies kernel parameters then
void emu_submit(const emu_cfg &c, const void *kernel, std::function<void()> body);
template <class F, class... A> void emu_launch_t(F f, emu_cfg c, A... a) {
    auto args = std::make_tuple(a...);
    emu_submit(c, reinterpret_cast<const void *>(f), [f, args]() { std::apply(f, args); });
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }

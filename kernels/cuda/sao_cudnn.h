// sao_cudnn.h — cuDNN inside the CUDA backend, shared by cudnn.cu (loading the library, one handle
// per device) and conv_cudnn.cu (the convolutions through it).
//
// cuDNN is not a link-time dependency of libsao_cuda.so: cudnn.cu dlopens $SAO_CUDNN_LIB or
// "libcudnn.so.9" on first use and takes the functions below from it, so a machine without cuDNN
// (or with a library that does not load) still runs every kernel, the convolutions on their
// im2col + cuBLASLt path. <cudnn.h> is read for its types and prototypes only (decltype below);
// nothing here names a cuDNN symbol the linker would have to find. The emulated backend
// (spec/support/cuda_emu) builds with SAO_CUDNN_LINKED: its fake cuDNN is linked in and looked up
// by name through stand-ins of dlopen/dlsym, so the same loading code runs there.
#ifndef SAO_CUDNN_H
#define SAO_CUDNN_H
#include "cuda_internal.h"
extern "C" {
#include "../cpu/kcheck.h"
}
#include <cudnn.h>

// The functions sao calls, each once (the legacy convolution API, and the backend API that
// attention_cudnn.cu builds its SDPA graph with); the table's fields are named as the functions.
#define SAO_CUDNN_FUNCS(X)                                                                         \
    X(cudnnGetVersion) X(cudnnGetErrorString) X(cudnnCreate) X(cudnnSetStream)                     \
    X(cudnnCreateTensorDescriptor) X(cudnnSetTensor4dDescriptor) X(cudnnDestroyTensorDescriptor)   \
    X(cudnnCreateFilterDescriptor) X(cudnnSetFilter4dDescriptor) X(cudnnDestroyFilterDescriptor)   \
    X(cudnnCreateConvolutionDescriptor) X(cudnnSetConvolution2dDescriptor)                         \
    X(cudnnSetConvolutionGroupCount) X(cudnnSetConvolutionMathType)                               \
    X(cudnnDestroyConvolutionDescriptor)                                                           \
    X(cudnnGetConvolutionForwardAlgorithm_v7) X(cudnnGetConvolutionBackwardDataAlgorithm_v7)       \
    X(cudnnGetConvolutionBackwardFilterAlgorithm_v7)                                               \
    X(cudnnGetConvolutionForwardWorkspaceSize) X(cudnnGetConvolutionBackwardDataWorkspaceSize)     \
    X(cudnnGetConvolutionBackwardFilterWorkspaceSize)                                              \
    X(cudnnConvolutionForward) X(cudnnConvolutionBackwardData) X(cudnnConvolutionBackwardFilter)   \
    X(cudnnBackendCreateDescriptor) X(cudnnBackendDestroyDescriptor) X(cudnnBackendSetAttribute)   \
    X(cudnnBackendGetAttribute) X(cudnnBackendFinalize) X(cudnnBackendExecute)

struct sao_cudnn_api {
#define SAO_CUDNN_FIELD(name) decltype(&::name) name;
    SAO_CUDNN_FUNCS(SAO_CUDNN_FIELD)
#undef SAO_CUDNN_FIELD
};

// cudnn.cu: the loaded API (the first call loads it, once per process), or NULL with *why (when
// why is not NULL) saying why not: the library not found, a function missing, another major
// version, or no handle could be made on a device. Never fails the caller: without cuDNN the
// convolutions keep their GEMM path.
const sao_cudnn_api *sao_cudnn(const char **why);

// cudnn.cu: the current device's handle, made on first use under a lock and bound to
// sao_cuda_stream() on every call. 0 with *out set; 1 when cuDNN is unusable (sao_cudnn(why)
// then says why: it covers a handle that cannot be made, e.g. a sub-library missing); -1 with a
// sao error for a CUDA error.
int sao_cudnn_handle(sao_ctx *ctx, const char *op, cudnnHandle_t *out);

// A cuDNN call's status as a sao error (file:line, the call, cuDNN's own words, a hint).
#define CUDNN_TRY(ctx, op, api, call)                                                              \
    do {                                                                                           \
        cudnnStatus_t st_ = (api)->call;                                                           \
        if (st_ != CUDNN_STATUS_SUCCESS)                                                           \
            return sao_err(ctx, op, "%s:%d: %s: %s (status %d; sao.cuda.conv_backend(\"gemm\") "  \
                           "runs the convolutions without cuDNN)", __FILE__, __LINE__, #call,      \
                           (api)->cudnnGetErrorString(st_), (int)st_);                             \
    } while (0)

// conv_cudnn.cu: the three evaluations of kcheck.h's conv relation (X [B, cx, tx] -> Y [B, cy, ty],
// W [cy, cx/g, K]) that cuDNN runs, as a 2-D NCHW convolution with H = 1:
//   SAO_CUDNN_FORWARD   out = Y, a = X, b = W   (cudnnConvolutionForward)
//   SAO_CUDNN_DATA      out = X, a = Y, b = W   (cudnnConvolutionBackwardData)
//   SAO_CUDNN_FILTER    out = W, a = X, b = Y   (cudnnConvolutionBackwardFilter)
enum sao_cudnn_rel { SAO_CUDNN_FORWARD = 0, SAO_CUDNN_DATA = 1, SAO_CUDNN_FILTER = 2 };
struct sao_cudnn_plan;   // descriptors, the algorithm and its workspace for one shape (cached)

// The plan for relation rel of conv c in the current GEMM precision mode, made on first use and
// cached per (device, shape, mode). 0 with *plan NULL when the GEMM path is to run: the conv
// backend is "gemm", cuDNN is unusable, the conv is a plain 1x1 (stride 1, no padding: the DiT's,
// kept on the path its CUDA graphs capture), or cuDNN has no deterministic algorithm for the
// shape. -1 with a sao error for any other cuDNN status.
int sao_cudnn_conv_plan(sao_ctx *ctx, const char *op, int rel, const sao_conv_geo *c,
                        const sao_cudnn_plan **plan);

// out = beta out + rel(a, b) with the plan (beta 0: out is not read). The workspace comes from
// the per-device scratch (bufs, sizes: see sao_cuda_device_scratch), grown on first use only.
int sao_cudnn_conv_run(sao_ctx *ctx, const char *op, const sao_cudnn_plan *plan, const float *a,
                       const float *b, float beta, float *out, float **bufs, size_t *sizes);

// attention_cudnn.cu: the attention forward (out, lse as sao_cuda_attention_forward's; lse may be
// NULL) through cuDNN's fused SDPA, after the caller's checks (device pointers, no bias or key
// mask). 0 when it ran; 1 when cuDNN does not take it (no cuDNN, a head dim it does not take, no
// plan for the shape: the reason is kept for sao_cuda_sdpa_status) and the caller's kernels are
// to run; -1 with a sao error.
int sao_cuda_sdpa_forward(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q, const float *k,
                          const float *v, float *out, float *lse);
// attention_cudnn.cu: the backward (dq, dk, dv accumulated as sao_cuda_attention_backward's, each
// may be NULL; no dbias) through cuDNN's fused SDPA backward, from the forward's out and lse, after
// the caller's checks; 0, 1 or -1 as sao_cuda_sdpa_forward.
int sao_cuda_sdpa_backward(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q, const float *k,
                           const float *v, const float *out, const float *lse, const float *dout, float *dq,
                           float *dk, float *dv);
#endif

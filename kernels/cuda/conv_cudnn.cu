// conv_cudnn.cu — the 1-D convolutions through cuDNN (sao_cudnn.h), and the choice between cuDNN
// and the im2col + cuBLASLt path (sao_cuda_conv_backend, sao.cuda.conv_backend).
//
// conv1d.cu evaluates kcheck.h's one relation, a conv from X [B, cx, tx] to Y [B, cy, ty] with
// W [cy, cx/g, K], three ways; each is one cuDNN call on a 2-D NCHW convolution with H = 1:
//   X: tensor (B, cx, 1, tx)   Y: tensor (B, cy, 1, ty)   W: filter (cy, cx/g, 1, K)
//   convolution: padding (0, p), stride (1, s), dilation (1, d), cross-correlation (PyTorch's
//   conv), fp32 data and compute, group count g
//   forward (Y from X)         cudnnConvolutionForward
//   backward data (X from Y)   cudnnConvolutionBackwardData: ConvTranspose1d's forward, Conv1d's dx
//   backward filter (W)        cudnnConvolutionBackwardFilter: both weight gradients
// cuDNN works out Y's length from X's; ConvTranspose1d's output length (X = its output) carries
// output_padding on top, and its floor division gives back ty exactly when output_padding <
// stride. An output_padding that only dilation allows (stride <= output_padding < dilation) does
// not describe a cuDNN convolution: that shape keeps the GEMM path.
//
// Algorithms: chosen once per (device, relation, shape, precision mode) from cuDNN's _v7
// heuristics (no timing, so the same choice every run), the first one that succeeds, is
// deterministic (the result's determinism field; and never BWD_DATA_ALGO_0, BWD_FILTER_ALGO_0 or
// _3, which add with atomics), needs at most WORKSPACE_CAP, and in the fp32 precision mode uses
// plain FMA math (CUDNN_FMA_MATH: no TF32, results within fp32 rounding of the CPU's). In the tf32
// and bf16 modes the descriptor says CUDNN_DEFAULT_MATH, which lets cuDNN use TF32 tensor cores,
// as the GEMM path does. When the heuristics offer none, the relation's implicit-GEMM algorithm
// (forward IMPLICIT_GEMM, backward ALGO_1, deterministic) is asked directly; a shape cuDNN does not
// support at all (CUDNN_STATUS_NOT_SUPPORTED*) keeps the GEMM path. The plans (descriptors,
// algorithm, workspace size) live until the process ends, one per shape used.
//
// SAO_CUDNN_LOG=1 prints each plan's choice (algorithm, math type, workspace) to stderr once.
//
// Workspace: the per-device conv scratch that conv1d.cu's GEMM path also uses (the two never run
// at once: one stream), grown on a shape's first call only, so nothing allocates in steady state.
// Bit-reproducible run to run: deterministic algorithms, chosen without timing, on one stream.
#include "sao_cudnn.h"
extern "C" {
#include "sao_cuda.h"
#include "sao_cuda_attn.h"
}
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <array>
#include <atomic>
#include <climits>
#include <map>

struct sao_cudnn_plan {
    bool usable;                        // false: cuDNN cannot run the shape; the GEMM path does
    int rel;                            // sao_cudnn_rel
    cudnnTensorDescriptor_t x, y;       // X (B, cx, 1, tx), Y (B, cy, 1, ty)
    cudnnFilterDescriptor_t w;          // W (cy, cx/g, 1, K)
    cudnnConvolutionDescriptor_t conv;
    int algo;                           // the relation's algorithm enum
    size_t ws_bytes;
};

namespace {

const size_t WORKSPACE_CAP = (size_t)256 << 20;   // the most workspace an algorithm may have
std::atomic<bool> force_gemm;                     // sao_cuda_conv_backend("gemm")

// (device, relation, fp32 mode, B, cx, tx, cy, ty, K, s, p, d, g)
typedef std::array<int64_t, 13> Key;
std::map<Key, sao_cudnn_plan *> *plans;
pthread_mutex_t plan_lock = PTHREAD_MUTEX_INITIALIZER;   // guards plans; held while one is made

// A status that means "cuDNN cannot do this shape" rather than an error: the NOT_SUPPORTED family
// (3000..3999), or a sub-library (its engines) that is not there.
bool unsupported(cudnnStatus_t st) {
    return (st >= CUDNN_STATUS_NOT_SUPPORTED && st < 4000) || st == CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED;
}

// Deterministic by cuDNN's documentation; the heuristics' determinism field says the same.
bool deterministic(int rel, int algo) {
    if (rel == SAO_CUDNN_DATA) return algo != CUDNN_CONVOLUTION_BWD_DATA_ALGO_0;
    if (rel == SAO_CUDNN_FILTER)
        return algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 && algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
    return true;   // every forward algorithm
}

// The heuristics' list for the plan's relation as (algo, status, memory, determinism, math type).
struct Candidate {
    int algo;
    cudnnStatus_t status;
    size_t memory;
    cudnnDeterminism_t det;
    cudnnMathType_t math;
};
template <class Perf> int to_candidates(const Perf *perf, int n, Candidate *out) {
    for (int i = 0; i < n; i++) out[i] = {(int)perf[i].algo, perf[i].status, perf[i].memory, perf[i].determinism, perf[i].mathType};
    return n;
}
cudnnStatus_t heuristics(const sao_cudnn_api *a, cudnnHandle_t h, const sao_cudnn_plan *p, Candidate *out, int *n) {
    const int MAX = 16;
    *n = 0;
    cudnnStatus_t st;
    if (p->rel == SAO_CUDNN_FORWARD) {
        cudnnConvolutionFwdAlgoPerf_t perf[MAX];
        st = a->cudnnGetConvolutionForwardAlgorithm_v7(h, p->x, p->w, p->conv, p->y, MAX, n, perf);
        if (st == CUDNN_STATUS_SUCCESS) to_candidates(perf, *n, out);
    } else if (p->rel == SAO_CUDNN_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[MAX];
        st = a->cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p->w, p->y, p->conv, p->x, MAX, n, perf);
        if (st == CUDNN_STATUS_SUCCESS) to_candidates(perf, *n, out);
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[MAX];
        st = a->cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p->x, p->y, p->conv, p->w, MAX, n, perf);
        if (st == CUDNN_STATUS_SUCCESS) to_candidates(perf, *n, out);
    }
    if (*n > MAX) *n = MAX;
    return st;
}

cudnnStatus_t workspace_size(const sao_cudnn_api *a, cudnnHandle_t h, const sao_cudnn_plan *p, int algo, size_t *bytes) {
    if (p->rel == SAO_CUDNN_FORWARD)
        return a->cudnnGetConvolutionForwardWorkspaceSize(h, p->x, p->w, p->conv, p->y,
                                                          (cudnnConvolutionFwdAlgo_t)algo, bytes);
    if (p->rel == SAO_CUDNN_DATA)
        return a->cudnnGetConvolutionBackwardDataWorkspaceSize(h, p->w, p->y, p->conv, p->x,
                                                               (cudnnConvolutionBwdDataAlgo_t)algo, bytes);
    return a->cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p->x, p->y, p->conv, p->w,
                                                             (cudnnConvolutionBwdFilterAlgo_t)algo, bytes);
}

// Fills p (descriptors made, algorithm chosen) for conv c: 0 with p->usable saying whether cuDNN
// runs it, -1 with a sao error.
int describe_and_choose(sao_ctx *ctx, const char *op, const sao_cudnn_api *a, cudnnHandle_t h, const sao_conv_geo *c,
              bool fp32, sao_cudnn_plan *p) {
    // cuDNN's legacy API takes int dimensions and tensors of fewer than 2^31 elements
    const int64_t dims[] = {c->B, c->cx, c->tx, c->cy, c->ty, c->K, c->s, c->d, c->g, c->B * c->cx * c->tx,
                            c->B * c->cy * c->ty, c->cy * c->rows};
    for (int64_t v : dims)   // (an empty tensor: the GEMM path's early returns handle it)
        if (v <= 0 || v > INT_MAX) return 0;
    if (c->p > INT_MAX) return 0;
    int64_t span = c->tx + 2 * c->p - c->d * (c->K - 1) - 1;   // cuDNN's own output length must be ty
    if (span < 0 || span / c->s + 1 != c->ty) return 0;
    CUDNN_TRY(ctx, op, a, cudnnCreateTensorDescriptor(&p->x));
    CUDNN_TRY(ctx, op, a, cudnnCreateTensorDescriptor(&p->y));
    CUDNN_TRY(ctx, op, a, cudnnCreateFilterDescriptor(&p->w));
    CUDNN_TRY(ctx, op, a, cudnnCreateConvolutionDescriptor(&p->conv));
    CUDNN_TRY(ctx, op, a, cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)c->B, (int)c->cx, 1, (int)c->tx));
    CUDNN_TRY(ctx, op, a, cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)c->B, (int)c->cy, 1, (int)c->ty));
    CUDNN_TRY(ctx, op, a, cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, (int)c->cy, (int)c->cxg, 1, (int)c->K));
    CUDNN_TRY(ctx, op, a, cudnnSetConvolution2dDescriptor(p->conv, 0, (int)c->p, 1, (int)c->s, 1, (int)c->d,
                                                          CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_TRY(ctx, op, a, cudnnSetConvolutionGroupCount(p->conv, (int)c->g));
    cudnnMathType_t want = fp32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
    CUDNN_TRY(ctx, op, a, cudnnSetConvolutionMathType(p->conv, want));

    Candidate cand[16];
    int n = 0;
    cudnnStatus_t st = heuristics(a, h, p, cand, &n);
    if (st != CUDNN_STATUS_SUCCESS && !unsupported(st))
        return sao_err(ctx, op, "%s:%d: cuDNN's algorithm heuristics (relation %d): %s (status %d)", __FILE__, __LINE__,
                       p->rel, a->cudnnGetErrorString(st), (int)st);
    int algo = -1, rank = -1;
    cudnnMathType_t math = want;
    for (int i = 0; i < n && algo < 0; i++) {
        const Candidate &k = cand[i];
        if (k.status == CUDNN_STATUS_SUCCESS && k.det == CUDNN_DETERMINISTIC && deterministic(p->rel, k.algo) &&
            k.memory <= WORKSPACE_CAP && (!fp32 || k.math == CUDNN_FMA_MATH)) {
            algo = k.algo;
            math = k.math;
            rank = i;
        }
    }
    if (algo < 0)   // the implicit-GEMM algorithm of each relation: deterministic, little workspace
        algo = p->rel == SAO_CUDNN_FORWARD ? (int)CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM
             : p->rel == SAO_CUDNN_DATA    ? (int)CUDNN_CONVOLUTION_BWD_DATA_ALGO_1
                                           : (int)CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
    CUDNN_TRY(ctx, op, a, cudnnSetConvolutionMathType(p->conv, math));
    st = workspace_size(a, h, p, algo, &p->ws_bytes);
    if (st != CUDNN_STATUS_SUCCESS && !unsupported(st))
        return sao_err(ctx, op, "%s:%d: cuDNN's workspace size (relation %d, algorithm %d): %s (status %d)", __FILE__,
                       __LINE__, p->rel, algo, a->cudnnGetErrorString(st), (int)st);
    const char *log = getenv("SAO_CUDNN_LOG");   // what the first GPU runs want to see
    if (log && *log && *log != '0')
        fprintf(stderr, "sao cudnn: relation %d B=%lld X=%lldx%lld Y=%lldx%lld K=%lld s=%lld p=%lld d=%lld g=%lld: "
                "algorithm %d (%s), math %d, workspace %zu bytes, status %d\n", p->rel, (long long)c->B,
                (long long)c->cx, (long long)c->tx, (long long)c->cy, (long long)c->ty, (long long)c->K,
                (long long)c->s, (long long)c->p, (long long)c->d, (long long)c->g, algo,
                rank >= 0 ? "heuristics" : "fixed: no heuristic choice fit", (int)math, p->ws_bytes, (int)st);
    if (st != CUDNN_STATUS_SUCCESS || p->ws_bytes > WORKSPACE_CAP) return 0;
    p->algo = algo;
    p->usable = true;
    return 0;
}

// describe_and_choose, the descriptors destroyed again unless cuDNN runs the shape.
int make_plan(sao_ctx *ctx, const char *op, const sao_cudnn_api *a, cudnnHandle_t h, const sao_conv_geo *c,
              bool fp32, sao_cudnn_plan *p) {
    int rc = describe_and_choose(ctx, op, a, h, c, fp32, p);
    if (rc || !p->usable) {
        if (p->conv) a->cudnnDestroyConvolutionDescriptor(p->conv);
        if (p->w) a->cudnnDestroyFilterDescriptor(p->w);
        if (p->y) a->cudnnDestroyTensorDescriptor(p->y);
        if (p->x) a->cudnnDestroyTensorDescriptor(p->x);
        p->conv = NULL, p->w = NULL, p->y = NULL, p->x = NULL;
    }
    return rc;
}

}  // namespace

int sao_cudnn_conv_plan(sao_ctx *ctx, const char *op, int rel, const sao_conv_geo *c, const sao_cudnn_plan **plan) {
    *plan = NULL;
    if (c->K == 1 && c->s == 1 && c->p == 0 && c->tx == c->ty) return 0;   // plain 1x1: X is its own im2col
    if (force_gemm.load(std::memory_order_relaxed)) return 0;
    cudnnHandle_t h;
    int r = sao_cudnn_handle(ctx, op, &h);
    if (r) return r < 0 ? -1 : 0;
    const sao_cudnn_api *a = sao_cudnn(NULL);
    int dev = 0;
    CUDA_TRY(ctx, op, cudaGetDevice(&dev));
    bool fp32 = sao_cuda_gemm_precision(-1) == SAO_GEMM_FP32;
    Key key = {dev, rel, fp32, c->B, c->cx, c->tx, c->cy, c->ty, c->K, c->s, c->p, c->d, c->g};
    pthread_mutex_lock(&plan_lock);
    if (!plans) plans = new std::map<Key, sao_cudnn_plan *>;
    auto it = plans->find(key);
    sao_cudnn_plan *p = it != plans->end() ? it->second : NULL;
    if (!p) {
        p = new sao_cudnn_plan();
        p->rel = rel;
        if (make_plan(ctx, op, a, h, c, fp32, p)) {   // not cached: the error comes again next time
            delete p;
            pthread_mutex_unlock(&plan_lock);
            return -1;
        }
        (*plans)[key] = p;
    }
    pthread_mutex_unlock(&plan_lock);
    *plan = p->usable ? p : NULL;
    return 0;
}

int sao_cudnn_conv_run(sao_ctx *ctx, const char *op, const sao_cudnn_plan *p, const float *a_, const float *b_,
                       float beta, float *out, float **bufs, size_t *sizes) {
    const sao_cudnn_api *a = sao_cudnn(NULL);
    cudnnHandle_t h;
    int r = a ? sao_cudnn_handle(ctx, op, &h) : 1;
    if (r) return r < 0 ? -1 : sao_err(ctx, op, "cuDNN became unusable after a plan was made");
    void *ws = NULL;
    if (p->ws_bytes) {
        ws = sao_cuda_device_scratch(ctx, op, "conv scratch", bufs, sizes, (p->ws_bytes + sizeof(float) - 1) / sizeof(float));
        if (!ws) return -1;
    }
    const float alpha = 1.0f;
    if (p->rel == SAO_CUDNN_FORWARD)
        CUDNN_TRY(ctx, op, a, cudnnConvolutionForward(h, &alpha, p->x, a_, p->w, b_, p->conv, (cudnnConvolutionFwdAlgo_t)p->algo,
                                                      ws, p->ws_bytes, &beta, p->y, out));
    else if (p->rel == SAO_CUDNN_DATA)
        CUDNN_TRY(ctx, op, a, cudnnConvolutionBackwardData(h, &alpha, p->w, b_, p->y, a_, p->conv,
                                                           (cudnnConvolutionBwdDataAlgo_t)p->algo, ws, p->ws_bytes, &beta,
                                                           p->x, out));
    else
        CUDNN_TRY(ctx, op, a, cudnnConvolutionBackwardFilter(h, &alpha, p->x, a_, p->y, b_, p->conv,
                                                             (cudnnConvolutionBwdFilterAlgo_t)p->algo, ws, p->ws_bytes,
                                                             &beta, p->w, out));
    return 0;
}

// sao_cuda_attn.h: which path the convolutions take, process-wide
extern "C" const char *sao_cuda_conv_backend(sao_ctx *ctx, const char *want) {
    const char *op = "cuda_conv_backend";
    bool gemm = want && !strcmp(want, "gemm");
    if (want && *want && !gemm && strcmp(want, "cudnn") && strcmp(want, "auto"))
        return (const char *)sao_err_null(ctx, op, "'%s': expected \"cudnn\", \"gemm\" or \"auto\"", want);
    // usable: loaded, and (with a device) the current device's handle made
    const char *why = NULL;
    bool usable = sao_cudnn(&why) != NULL;
    if (usable && sao_cuda_device_count() > 0) {
        cudnnHandle_t h;
        int r = sao_cudnn_handle(ctx, op, &h);
        if (r < 0) return NULL;
        usable = r == 0;
        if (!usable) sao_cudnn(&why);
    }
    if (want && !strcmp(want, "cudnn") && !usable)
        return (const char *)sao_err_null(ctx, op, "cuDNN is not available: %s", why);
    if (want && *want) force_gemm.store(gemm);
    return usable && !force_gemm.load() ? "cudnn" : "gemm";
}

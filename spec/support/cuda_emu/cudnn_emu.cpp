// cudnn_emu.cpp — the fake cuDNN of the CPU emulation (cudnn.h here; README.md): the legacy
// convolution API kernels/cuda uses, as direct loops over the emulated device memory, with the
// checks that make the usual mistakes fail here as they would on a GPU:
//   - descriptors: set before use, 4-D NCHW float, x channels = filter channels x groups, filter
//     count a multiple of groups, y channels = filter count, batch equal, and y's H and W exactly
//     the convolution's output size from x, pads, strides and dilations (else BAD_PARAM, as cuDNN);
//     only H = 1 problems (pad_h 0, stride_h 1, dilation_h 1, filter H 1) are emulated;
//   - the heuristics list what a caller must filter out first: an algorithm needing 1 TiB of
//     workspace, a non-deterministic one (backward), one in tensor-op math (forward); running a
//     non-deterministic algorithm is an error;
//   - workspace: each algorithm needs some, the call must pass at least that much of device
//     memory, and it is filled with NaN before use (a workspace overlapping the data shows);
//   - math: FMA math computes in fp32; default / tensor-op math rounds the inputs to TF32
//     (10 mantissa bits), as Ampere+ tensor cores do (so the fp32 mode picking FMA is checked);
//   - beta = 0 never reads the output (it may hold NaN), beta != 0 reads it;
//   - the work runs on the handle's stream (cudnnSetStream), recorded by a capture like a launch;
//     cudnnCreate while capturing is refused as an allocation.
// The backend (graph) API is cudnn_graph_emu.cpp; both are found by name through emu_cudnn_sym here.
#include "cudnn.h"
#include "cudnn_emu_internal.h"
#include "emu_internal.h"
#include <stdarg.h>
#include <unistd.h>
#include <vector>

struct emu_cudnn_tensor { bool set; int n, c, h, w; };
struct emu_cudnn_filter { bool set; int k, c, h, w; };
struct emu_cudnn_conv { bool set; int ph, pw, u, v, dh, dw, mode, groups, math; };

cudnnStatus_t emu_cudnn_fail(cudnnStatus_t st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "emu: cuDNN: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return st;
}
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat-security"
static cudnnStatus_t bad(const char *fmt, const char *what) { return emu_cudnn_fail(CUDNN_STATUS_BAD_PARAM, fmt, what); }
#pragma GCC diagnostic pop

size_t cudnnGetVersion(void) { return 91900; }
const char *cudnnGetErrorString(cudnnStatus_t s) {
    switch (s) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED: return "CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER: return "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER";
    case CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED: return "CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    default: return "CUDNN_STATUS_(emu: other)";
    }
}
cudnnStatus_t cudnnCreate(cudnnHandle_t *h) {
    if (emu_unsafe()) return CUDNN_STATUS_INTERNAL_ERROR;   // allocates: not while capturing
    *h = new emu_cudnn_handle{EMU_CUDNN_HANDLE_MAGIC, 0};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
    if (!emu_cudnn_handle_ok(h)) return bad("%s: not a handle from cudnnCreate", "cudnnSetStream");
    h->st = s;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) { *d = new emu_cudnn_tensor{}; return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) { delete d; return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t f, cudnnDataType_t t, int n, int c, int h, int w) {
    if (f != CUDNN_TENSOR_NCHW || t != CUDNN_DATA_FLOAT) return bad("%s: only NCHW float tensors are emulated", "cudnnSetTensor4dDescriptor");
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0) return bad("%s: a dimension <= 0", "cudnnSetTensor4dDescriptor");
    *d = {true, n, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) { *d = new emu_cudnn_filter{}; return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) { delete d; return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t t, cudnnTensorFormat_t f, int k, int c, int h, int w) {
    if (f != CUDNN_TENSOR_NCHW || t != CUDNN_DATA_FLOAT) return bad("%s: only NCHW float filters are emulated", "cudnnSetFilter4dDescriptor");
    if (k <= 0 || c <= 0 || h <= 0 || w <= 0) return bad("%s: a dimension <= 0", "cudnnSetFilter4dDescriptor");
    *d = {true, k, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) {
    *d = new emu_cudnn_conv{false, 0, 0, 1, 1, 1, 1, 0, 1, CUDNN_DEFAULT_MATH};
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) { delete d; return CUDNN_STATUS_SUCCESS; }
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int ph, int pw, int u, int v, int dh, int dw,
                                              cudnnConvolutionMode_t m, cudnnDataType_t t) {
    if (ph < 0 || pw < 0 || u <= 0 || v <= 0 || dh <= 0 || dw <= 0) return bad("%s: bad pad/stride/dilation", "cudnnSetConvolution2dDescriptor");
    if (t != CUDNN_DATA_FLOAT) return bad("%s: only float compute is emulated", "cudnnSetConvolution2dDescriptor");
    d->set = true; d->ph = ph; d->pw = pw; d->u = u; d->v = v; d->dh = dh; d->dw = dw; d->mode = m;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t d, int g) {
    if (g <= 0) return bad("%s: group count <= 0", "cudnnSetConvolutionGroupCount");
    d->groups = g;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) { d->math = m; return CUDNN_STATUS_SUCCESS; }

// ---- the problem: x (n, c, 1, tx), w (k, c/g, 1, K), y (n, k, 1, ty) ----
struct Prob { int B, cx, tx, cy, ty, K, cg, kg, s, p, d, g, math; };
static cudnnStatus_t problem(cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w, cudnnConvolutionDescriptor_t c,
                             cudnnTensorDescriptor_t y, const char *who, Prob *pr) {
    if (!x->set || !w->set || !c->set || !y->set) return bad("%s: a descriptor was never set", who);
    if (c->mode != CUDNN_CROSS_CORRELATION) return bad("%s: sao's convs are cross-correlations", who);
    if (x->h != 1 || y->h != 1 || w->h != 1 || c->ph != 0 || c->u != 1 || c->dh != 1)
        return bad("%s: only H = 1 problems are emulated", who);
    if (x->c != w->c * c->groups) return bad("%s: x channels != filter channels x group count", who);
    if (w->k % c->groups) return bad("%s: filter count not a multiple of the group count", who);
    if (y->c != w->k || y->n != x->n) return bad("%s: y's batch or channels do not match x and the filter", who);
    long span = (long)x->w + 2L * c->pw - (long)c->dw * (w->w - 1) - 1;
    if (span < 0 || span / c->v + 1 != y->w) return bad("%s: y's width is not the convolution's output width", who);
    *pr = {x->n, x->c, x->w, y->c, y->w, w->w, w->c, w->k / c->groups, c->v, c->pw, c->dw, c->groups, c->math};
    return CUDNN_STATUS_SUCCESS;
}
static size_t xbytes(const Prob &p) { return 4 * (size_t)p.B * p.cx * p.tx; }
static size_t ybytes(const Prob &p) { return 4 * (size_t)p.B * p.cy * p.ty; }
static size_t wbytes(const Prob &p) { return 4 * (size_t)p.cy * p.cg * p.K; }

// Workspace each algorithm needs (made up, but never zero for the ones sao should pick, so the
// workspace path is exercised).
static size_t fwd_ws(const Prob &p, int algo) {
    return algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM ? 0
         : algo == CUDNN_CONVOLUTION_FWD_ALGO_FFT ? (size_t)1 << 40 : 256 + 4 * (size_t)p.cg * p.K;
}
static size_t data_ws(const Prob &p, int algo) { return algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1 ? 1024 + wbytes(p) : 0; }
static size_t filter_ws(const Prob &p, int algo) { return algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ? 512 + wbytes(p) : 0; }

template <class Perf, class Algo> static void perf(Perf *r, int *n, int req, Algo a, size_t mem, cudnnDeterminism_t det, int math) {
    if (*n >= req) return;
    r[*n] = Perf{a, CUDNN_STATUS_SUCCESS, 0.1f * (float)(*n + 1), mem, det, (cudnnMathType_t)math, {0, 0, 0}};
    ++*n;
}
cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
        cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t y, int req, int *n, cudnnConvolutionFwdAlgoPerf_t *r) {
    Prob p;
    cudnnStatus_t st = problem(x, w, c, y, "cudnnGetConvolutionForwardAlgorithm_v7", &p);
    if (st) return st;
    *n = 0;   // fastest first: too much workspace, tensor-op math, then what sao may take
    perf(r, n, req, CUDNN_CONVOLUTION_FWD_ALGO_FFT, fwd_ws(p, CUDNN_CONVOLUTION_FWD_ALGO_FFT), CUDNN_DETERMINISTIC, p.math);
    perf(r, n, req, CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED, 4096, CUDNN_DETERMINISTIC, CUDNN_TENSOR_OP_MATH);
    perf(r, n, req, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, fwd_ws(p, 1), CUDNN_DETERMINISTIC, p.math);
    perf(r, n, req, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, 0, CUDNN_DETERMINISTIC, p.math);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t, cudnnFilterDescriptor_t w, cudnnTensorDescriptor_t dy,
        cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t dx, int req, int *n, cudnnConvolutionBwdDataAlgoPerf_t *r) {
    Prob p;
    cudnnStatus_t st = problem(dx, w, c, dy, "cudnnGetConvolutionBackwardDataAlgorithm_v7", &p);
    if (st) return st;
    *n = 0;
    perf(r, n, req, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, 0, CUDNN_NON_DETERMINISTIC, p.math);
    perf(r, n, req, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, data_ws(p, 1), CUDNN_DETERMINISTIC, p.math);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
        cudnnConvolutionDescriptor_t c, cudnnFilterDescriptor_t dw, int req, int *n, cudnnConvolutionBwdFilterAlgoPerf_t *r) {
    Prob p;
    cudnnStatus_t st = problem(x, dw, c, dy, "cudnnGetConvolutionBackwardFilterAlgorithm_v7", &p);
    if (st) return st;
    *n = 0;
    perf(r, n, req, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, 0, CUDNN_NON_DETERMINISTIC, p.math);
    perf(r, n, req, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, 64, CUDNN_NON_DETERMINISTIC, p.math);
    perf(r, n, req, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, filter_ws(p, 1), CUDNN_DETERMINISTIC, p.math);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
        cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t y, cudnnConvolutionFwdAlgo_t a, size_t *n) {
    Prob p;
    cudnnStatus_t st = problem(x, w, c, y, "cudnnGetConvolutionForwardWorkspaceSize", &p);
    if (!st) *n = fwd_ws(p, a);
    return st;
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t, cudnnFilterDescriptor_t w, cudnnTensorDescriptor_t dy,
        cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t dx, cudnnConvolutionBwdDataAlgo_t a, size_t *n) {
    Prob p;
    cudnnStatus_t st = problem(dx, w, c, dy, "cudnnGetConvolutionBackwardDataWorkspaceSize", &p);
    if (!st) *n = data_ws(p, a);
    return st;
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t, cudnnTensorDescriptor_t x, cudnnTensorDescriptor_t dy,
        cudnnConvolutionDescriptor_t c, cudnnFilterDescriptor_t dw, cudnnConvolutionBwdFilterAlgo_t a, size_t *n) {
    Prob p;
    cudnnStatus_t st = problem(x, dw, c, dy, "cudnnGetConvolutionBackwardFilterWorkspaceSize", &p);
    if (!st) *n = filter_ws(p, a);
    return st;
}

// ---- execution ----
// An input as the math type computes with it: TF32 (round to nearest even, 10 mantissa bits)
// unless FMA math.
static float in(float v, int math) {
    if (math == CUDNN_FMA_MATH || !std::isfinite(v)) return v;
    uint32_t u;
    memcpy(&u, &v, 4);
    u = (u + 0x0FFFu + ((u >> 13) & 1u)) & ~0x1FFFu;
    memcpy(&v, &u, 4);
    return v;
}
// Checks shared by the three calls, then queues body on the handle's stream with the workspace
// NaN-filled first and out = alpha acc + beta out (out not read when beta is 0).
static cudnnStatus_t run(cudnnHandle_t h, const char *who, const Prob &p, const void *a, size_t an, const void *b, size_t bn,
                         void *out, size_t on, void *ws, size_t ws_n, size_t need, const void *alpha, const void *beta,
                         std::function<void(std::vector<float> &)> body) {
    if (!emu_dev_range(a, an) || !emu_dev_range(b, bn) || !emu_dev_range(out, on))
        return bad("%s: an operand is not device memory of the described size", who);
    if (ws_n < need) return bad("%s: the workspace is smaller than the algorithm needs", who);
    if (ws_n && !emu_dev_range(ws, ws_n)) return bad("%s: the workspace is not device memory", who);
    float al = *(const float *)alpha, be = *(const float *)beta;
    size_t n = on / 4;
    (void)p;
    cudaError_t e = emu_enqueue(h->st, [=]() {
        emu_dev_access acc;
        if (need) memset(ws, 0xff, need);
        std::vector<float> r(n, 0.0f);
        body(r);
        float *o = (float *)out;
        for (size_t i = 0; i < n; i++) o[i] = be != 0.0f ? al * r[i] + be * o[i] : al * r[i];
    });
    return e ? CUDNN_STATUS_EXECUTION_FAILED : CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha, cudnnTensorDescriptor_t xd, const void *x,
        cudnnFilterDescriptor_t wd, const void *w, cudnnConvolutionDescriptor_t cd, cudnnConvolutionFwdAlgo_t algo, void *ws,
        size_t ws_n, const void *beta, cudnnTensorDescriptor_t yd, void *y) {
    Prob p;
    cudnnStatus_t st = problem(xd, wd, cd, yd, "cudnnConvolutionForward", &p);
    if (st) return st;
    const float *X = (const float *)x, *W = (const float *)w;
    return run(h, "cudnnConvolutionForward", p, x, xbytes(p), w, wbytes(p), y, ybytes(p), ws, ws_n, fwd_ws(p, algo), alpha, beta,
               [=](std::vector<float> &Y) {
        for (int b = 0; b < p.B; b++)
            for (int co = 0; co < p.cy; co++)
                for (int t = 0; t < p.ty; t++) {
                    int g = co / p.kg;
                    float s = 0.0f;
                    for (int ci = 0; ci < p.cg; ci++)
                        for (int k = 0; k < p.K; k++) {
                            long u = (long)t * p.s + (long)k * p.d - p.p;
                            if (u < 0 || u >= p.tx) continue;
                            s += in(W[((size_t)co * p.cg + ci) * p.K + k], p.math) *
                                 in(X[((size_t)b * p.cx + g * p.cg + ci) * p.tx + u], p.math);
                        }
                    Y[((size_t)b * p.cy + co) * p.ty + t] = s;
                }
    });
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha, cudnnFilterDescriptor_t wd, const void *w,
        cudnnTensorDescriptor_t dyd, const void *dy, cudnnConvolutionDescriptor_t cd, cudnnConvolutionBwdDataAlgo_t algo, void *ws,
        size_t ws_n, const void *beta, cudnnTensorDescriptor_t dxd, void *dx) {
    Prob p;
    cudnnStatus_t st = problem(dxd, wd, cd, dyd, "cudnnConvolutionBackwardData", &p);
    if (st) return st;
    if (algo == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0) return bad("%s: BWD_DATA_ALGO_0 is not deterministic", "cudnnConvolutionBackwardData");
    const float *W = (const float *)w, *DY = (const float *)dy;
    return run(h, "cudnnConvolutionBackwardData", p, dy, ybytes(p), w, wbytes(p), dx, xbytes(p), ws, ws_n, data_ws(p, algo), alpha,
               beta, [=](std::vector<float> &DX) {
        for (int b = 0; b < p.B; b++)
            for (int cx = 0; cx < p.cx; cx++)
                for (int u = 0; u < p.tx; u++) {
                    int g = cx / p.cg, ci = cx % p.cg;
                    float s = 0.0f;
                    for (int co = g * p.kg; co < (g + 1) * p.kg; co++)
                        for (int k = 0; k < p.K; k++) {
                            long num = (long)u + p.p - (long)k * p.d;   // = t s
                            if (num < 0 || num % p.s) continue;
                            long t = num / p.s;
                            if (t >= p.ty) continue;
                            s += in(W[((size_t)co * p.cg + ci) * p.K + k], p.math) *
                                 in(DY[((size_t)b * p.cy + co) * p.ty + t], p.math);
                        }
                    DX[((size_t)b * p.cx + cx) * p.tx + u] = s;
                }
    });
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha, cudnnTensorDescriptor_t xd, const void *x,
        cudnnTensorDescriptor_t dyd, const void *dy, cudnnConvolutionDescriptor_t cd, cudnnConvolutionBwdFilterAlgo_t algo, void *ws,
        size_t ws_n, const void *beta, cudnnFilterDescriptor_t dwd, void *dw) {
    Prob p;
    cudnnStatus_t st = problem(xd, dwd, cd, dyd, "cudnnConvolutionBackwardFilter", &p);
    if (st) return st;
    if (algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 || algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3)
        return bad("%s: BWD_FILTER_ALGO_0 and _3 are not deterministic", "cudnnConvolutionBackwardFilter");
    const float *X = (const float *)x, *DY = (const float *)dy;
    return run(h, "cudnnConvolutionBackwardFilter", p, x, xbytes(p), dy, ybytes(p), dw, wbytes(p), ws, ws_n, filter_ws(p, algo),
               alpha, beta, [=](std::vector<float> &DW) {
        for (int co = 0; co < p.cy; co++)
            for (int ci = 0; ci < p.cg; ci++)
                for (int k = 0; k < p.K; k++) {
                    int g = co / p.kg;
                    float s = 0.0f;
                    for (int b = 0; b < p.B; b++)
                        for (int t = 0; t < p.ty; t++) {
                            long u = (long)t * p.s + (long)k * p.d - p.p;
                            if (u < 0 || u >= p.tx) continue;
                            s += in(DY[((size_t)b * p.cy + co) * p.ty + t], p.math) *
                                 in(X[((size_t)b * p.cx + g * p.cg + ci) * p.tx + u], p.math);
                        }
                    DW[((size_t)co * p.cg + ci) * p.K + k] = s;
                }
    });
}

// ---- the stand-ins of dlopen / dlsym / dlerror ----
static char open_error[512];
static int lib_token;
void *emu_cudnn_open(const char *path) {
    const char *no = getenv("EMU_NO_CUDNN");
    if (no && *no && *no != '0') {
        snprintf(open_error, sizeof open_error, "%s: cannot open shared object file: No such file or directory (EMU_NO_CUDNN=1)", path);
        return NULL;
    }
    if (strchr(path, '/') && access(path, R_OK) != 0) {
        snprintf(open_error, sizeof open_error, "%s: cannot open shared object file: No such file or directory", path);
        return NULL;
    }
    return &lib_token;
}
const char *emu_cudnn_error(void) { return open_error; }
void *emu_cudnn_sym(void *lib, const char *name) {
#define EMU_SYM(f) {#f, (void *)&f},
    static const struct { const char *name; void *fn; } table[] = {
        EMU_SYM(cudnnGetVersion) EMU_SYM(cudnnGetErrorString) EMU_SYM(cudnnCreate) EMU_SYM(cudnnSetStream)
        EMU_SYM(cudnnCreateTensorDescriptor) EMU_SYM(cudnnSetTensor4dDescriptor) EMU_SYM(cudnnDestroyTensorDescriptor)
        EMU_SYM(cudnnCreateFilterDescriptor) EMU_SYM(cudnnSetFilter4dDescriptor) EMU_SYM(cudnnDestroyFilterDescriptor)
        EMU_SYM(cudnnCreateConvolutionDescriptor) EMU_SYM(cudnnSetConvolution2dDescriptor)
        EMU_SYM(cudnnSetConvolutionGroupCount) EMU_SYM(cudnnSetConvolutionMathType) EMU_SYM(cudnnDestroyConvolutionDescriptor)
        EMU_SYM(cudnnGetConvolutionForwardAlgorithm_v7) EMU_SYM(cudnnGetConvolutionBackwardDataAlgorithm_v7)
        EMU_SYM(cudnnGetConvolutionBackwardFilterAlgorithm_v7) EMU_SYM(cudnnGetConvolutionForwardWorkspaceSize)
        EMU_SYM(cudnnGetConvolutionBackwardDataWorkspaceSize) EMU_SYM(cudnnGetConvolutionBackwardFilterWorkspaceSize)
        EMU_SYM(cudnnConvolutionForward) EMU_SYM(cudnnConvolutionBackwardData) EMU_SYM(cudnnConvolutionBackwardFilter)
        EMU_SYM(cudnnBackendCreateDescriptor) EMU_SYM(cudnnBackendDestroyDescriptor) EMU_SYM(cudnnBackendFinalize)
        EMU_SYM(cudnnBackendSetAttribute) EMU_SYM(cudnnBackendGetAttribute) EMU_SYM(cudnnBackendExecute)
    };
#undef EMU_SYM
    if (lib != &lib_token) return NULL;
    for (const auto &e : table)
        if (!strcmp(e.name, name)) return e.fn;
    return NULL;
}

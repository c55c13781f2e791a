// linear.cu — the fully connected layer on the GPU, twin of kernels/cpu/linear.c (spec/cuda_spec.lua
// compares them): y = x W^T + b over N rows.
//
// Shapes (row-major, as on the CPU): x [N, in], W [out, in], b [out], y [N, out].
// cuBLAS is column-major, where a row-major [R, C] matrix is the same bytes as a column-major
// [C, R] one, so each product below is written for cuBLAS as the transpose of the row-major one:
//   forward   y^T  [out, N]  = W^T' x^T     (A = w, op T; B = x)       bias: the GEMM epilogue
//   dx        dx^T [in, N]  += W' dy^T      (A = w; B = dy)
//   dW        dW^T [in, out] += x^T' dy     (A = x; B = dy, op T)
//   db        [out]          += column sums of dy, a deterministic kernel (bias_grad below)
// (X' = the column-major view of row-major X.)
//
// GEMMs go through cuBLASLt with fp32 compute (CUBLAS_COMPUTE_32F: no TF32, so results stay
// within fp32 rounding of the CPU's) and a 32 MiB workspace, unless sao_cuda_gemm_precision asks
// for TF32 (fp32 data, TF32 tensor-core products) or bf16: then the fp32 entry points round their
// inputs (x, W, dy) to bf16 into a per-device scratch buffer and multiply those on the tensor
// cores, accumulating and writing fp32 (autocast style: weights, activations, gradients and their
// accumulation stay fp32, only the products' inputs are rounded). The handle and workspace are made
// once per device on first use, and the algorithm cuBLASLt's heuristic picks is remembered per
// (shape, types, pointer alignments). Where cuBLASLt has no algorithm for a problem (or
// sao_cuda_gemm_use_lt(0) asks), plain cuBLAS (cublasSgemm / cublasGemmEx) runs it instead, with
// the bias written by a small kernel.
#include "cuda_internal.h"
extern "C" {
#include "sao_cuda.h"
#include "cuda_glue.h"
#include "../cpu/kcheck.h"
}
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <pthread.h>
#include <stdint.h>
#include <array>
#include <map>
#include <new>

#define CUBLAS_TRY(ctx, op, call)                                                                 \
    do {                                                                                          \
        cublasStatus_t s_ = (call);                                                               \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                          \
            return sao_err(ctx, op, "%s:%d: %s: %s (check the shapes, and that every buffer is "  \
                           "device memory of the documented size)", __FILE__, __LINE__, #call,    \
                           cublasGetStatusString(s_));                                            \
    } while (0)

namespace {

const int MAX_DEVICES = 16;
const size_t WORKSPACE_BYTES = (size_t)32 << 20;   // what llm.c gives cuBLASLt on Hopper

// Per-device GEMM state, made on first use and kept for the life of the process.
struct GemmState {
    bool ready;
    cublasLtHandle_t lt;
    cublasHandle_t blas;   // the fallback; made the first time it is needed
    void *workspace;       // WORKSPACE_BYTES from the caching allocator
    float *scratch;        // bf16 mode: the rounded inputs (grown as needed; one stream, so reusable)
    size_t scratch_n;      // in floats
};
GemmState states[MAX_DEVICES];
bool use_lt = true;   // sao_cuda_gemm_use_lt
int precision = SAO_GEMM_FP32;   // sao_cuda_gemm_precision

// The heuristic's answer per problem: an algorithm, or none (then plain cuBLAS runs it).
typedef std::array<int64_t, 16> Problem;
struct Choice {
    bool found;
    cublasLtMatmulAlgo_t algo;
};
std::map<Problem, Choice> *choices;

pthread_mutex_t gemm_lock = PTHREAD_MUTEX_INITIALIZER;   // guards states, use_lt and choices
struct Locked {
    Locked() { pthread_mutex_lock(&gemm_lock); }
    ~Locked() { pthread_mutex_unlock(&gemm_lock); }
};

int gemm_state(sao_ctx *ctx, const char *op, int *dev_out, GemmState **out) {
    int dev = 0;
    CUDA_TRY(ctx, op, cudaGetDevice(&dev));
    if (dev < 0 || dev >= MAX_DEVICES)
        return sao_err(ctx, op, "device %d: sao handles devices 0..%d (raise MAX_DEVICES in %s)",
                       dev, MAX_DEVICES - 1, __FILE__);
    Locked guard;
    GemmState *g = &states[dev];
    if (!g->ready) {
        CUBLAS_TRY(ctx, op, cublasLtCreate(&g->lt));
        if (sao_cuda_malloc(ctx, WORKSPACE_BYTES, &g->workspace)) {
            cublasLtDestroy(g->lt);
            return -1;
        }
        g->ready = true;
    }
    *dev_out = dev;
    *out = g;
    return 0;
}

// The plain cuBLAS handle of g (made on first use, with the GEMM workspace as its workspace so it
// never allocates one itself, e.g. inside a graph capture), bound to the current sao stream.
int blas_handle(sao_ctx *ctx, const char *op, GemmState *g, cublasHandle_t *out) {
    Locked guard;
    if (!g->blas) {
        CUBLAS_TRY(ctx, op, cublasCreate(&g->blas));
        CUBLAS_TRY(ctx, op, cublasSetWorkspace(g->blas, g->workspace, WORKSPACE_BYTES));
    }
    CUBLAS_TRY(ctx, op, cublasSetStream(g->blas, sao_cuda_stream()));
    *out = g->blas;
    return 0;
}

// The largest power of two (at most 256) that divides the address: what cuBLASLt needs to know
// to rule out algorithms that assume more alignment than a view into a buffer has.
uint32_t alignment_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a & (al - 1))) al >>= 1;
    return al;
}

// Destroys whatever cuBLASLt descriptors were made, on every return path.
struct LtDescs {
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t a = NULL, b = NULL, c = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    ~LtDescs() {
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
        if (c) cublasLtMatrixLayoutDestroy(c);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (op) cublasLtMatmulDescDestroy(op);
    }
};

// y[i, j] = b[j] (fill) or y[i, j] += b[j], for y [N, out] row-major.
__global__ void bias_rows(float *y, const float *b, long long n, long long out, int fill) {
    long long total = n * out;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        float v = b[i % out];
        y[i] = fill ? v : y[i] + v;
    }
}

int launch_bias_rows(sao_ctx *ctx, const char *op, float *y, const float *b, int64_t n, int64_t out, int fill) {
    long long total = (long long)n * out;
    unsigned blocks = sao_cuda_blocks(total, 256);
    if (blocks > (1u << 20)) blocks = 1u << 20;   // grid-stride beyond this
    bias_rows<<<blocks, 256, 0, sao_cuda_stream()>>>(y, b, (long long)n, (long long)out, fill);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

// db[j] += sum_i dy[i, j] for dy [N, out]. Block (32, 16) covers 32 columns: thread (tx, ty) sums
// rows ty, ty + 16, ... of column tx in order, then thread (tx, 0) adds the 16 partial sums in ty
// order. The order is fixed by the shape alone, so every run gives the same bits.
const int BG_COLS = 32, BG_ROWS = 16;
__global__ void bias_grad(const float *dy, long long n, long long out, float *db) {
    __shared__ float part[BG_ROWS][BG_COLS + 1];
    int tx = threadIdx.x, ty = threadIdx.y;
    long long j = (long long)blockIdx.x * BG_COLS + tx;
    float acc = 0.0f;
    if (j < out)
        for (long long i = ty; i < n; i += BG_ROWS) acc += dy[i * out + j];
    part[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && j < out) {
        float s = 0.0f;
        for (int r = 0; r < BG_ROWS; r++) s += part[r][tx];
        db[j] += s;
    }
}

// C [m, n] (column-major, ldc) = op(A) op(B) + beta C, plus bias[m] on every column when bias is
// given (beta must then be 0). A, B of type ab (CUDA_R_32F or CUDA_R_16BF), C f32; beta 0 or 1.
int gemm(sao_ctx *ctx, const char *op, bool ta, bool tb, int m, int n, int k,
         const void *A, int lda, const void *B, int ldb, cudaDataType_t ab, float beta,
         float *Cm, int ldc, const float *bias, bool tf32 = false) {
    int dev = 0;
    GemmState *g = NULL;
    if (gemm_state(ctx, op, &dev, &g)) return -1;
    cudaStream_t stream = sao_cuda_stream();
    const float one = 1.0f;
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;

    bool lt_on;
    int prec;
    {
        Locked guard;
        lt_on = use_lt;
        prec = precision;
    }
    // fp32 inputs multiply in TF32 only when asked; bf16 inputs always accumulate in fp32
    cublasComputeType_t compute = ab == CUDA_R_32F && (prec == SAO_GEMM_TF32 || tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                                     : CUBLAS_COMPUTE_32F;
    if (lt_on) {
        LtDescs d;
        CUBLAS_TRY(ctx, op, cublasLtMatmulDescCreate(&d.op, compute, CUDA_R_32F));
        CUBLAS_TRY(ctx, op, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
        CUBLAS_TRY(ctx, op, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
        if (bias) {
            cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
            int32_t bias_type = CUDA_R_32F;
            CUBLAS_TRY(ctx, op, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
            CUBLAS_TRY(ctx, op, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
            CUBLAS_TRY(ctx, op, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
        }
        // stored shapes: op(A) is m x k, op(B) is k x n
        CUBLAS_TRY(ctx, op, cublasLtMatrixLayoutCreate(&d.a, ab, ta ? k : m, ta ? m : k, lda));
        CUBLAS_TRY(ctx, op, cublasLtMatrixLayoutCreate(&d.b, ab, tb ? n : k, tb ? k : n, ldb));
        CUBLAS_TRY(ctx, op, cublasLtMatrixLayoutCreate(&d.c, CUDA_R_32F, m, n, ldc));

        uint32_t al_a = alignment_of(A), al_b = alignment_of(B), al_c = alignment_of(Cm);
        Problem key = {dev, ta, tb, m, n, k, lda, ldb, ldc, (int64_t)ab, bias != NULL,
                       al_a, al_b, al_c, bias ? (int64_t)alignment_of(bias) : 0, (int64_t)compute};
        Choice choice;
        bool known = false;
        {
            Locked guard;
            if (choices) {
                auto it = choices->find(key);
                if (it != choices->end()) { choice = it->second; known = true; }
            }
        }
        if (!known) {
            CUBLAS_TRY(ctx, op, cublasLtMatmulPreferenceCreate(&d.pref));
            uint64_t ws = WORKSPACE_BYTES;
            CUBLAS_TRY(ctx, op, cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
            CUBLAS_TRY(ctx, op, cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
            CUBLAS_TRY(ctx, op, cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
            CUBLAS_TRY(ctx, op, cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c));
            CUBLAS_TRY(ctx, op, cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));
            cublasLtMatmulHeuristicResult_t res;
            int count = 0;
            cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(g->lt, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &res, &count);
            choice.found = s == CUBLAS_STATUS_SUCCESS && count > 0 && res.state == CUBLAS_STATUS_SUCCESS;
            if (choice.found) choice.algo = res.algo;
            Locked guard;
            try {
                if (!choices) choices = new std::map<Problem, Choice>();
                (*choices)[key] = choice;
            } catch (const std::bad_alloc &) {
                // not remembered: the heuristic simply runs again next time
            }
        }
        if (choice.found) {
            CUBLAS_TRY(ctx, op, cublasLtMatmul(g->lt, d.op, &one, A, d.a, B, d.b, &beta, Cm, d.c, Cm, d.c,
                                               &choice.algo, g->workspace, WORKSPACE_BYTES, stream));
            return 0;
        }
    }

    // Plain cuBLAS: the bias first (written into C, then C accumulates the product).
    if (bias) {
        // C is [m, n] column-major with ldc == m here: row-major [n, m], bias per row entry
        if (launch_bias_rows(ctx, op, Cm, bias, n, m, beta == 0.0f)) return -1;
        beta = 1.0f;
    }
    cublasHandle_t blas;
    if (blas_handle(ctx, op, g, &blas)) return -1;
    if (ab == CUDA_R_32F && compute == CUBLAS_COMPUTE_32F)
        CUBLAS_TRY(ctx, op, cublasSgemm(blas, opa, opb, m, n, k, &one, (const float *)A, lda,
                                        (const float *)B, ldb, &beta, Cm, ldc));
    else
        CUBLAS_TRY(ctx, op, cublasGemmEx(blas, opa, opb, m, n, k, &one, A, ab, lda, B, ab, ldb, &beta,
                                         Cm, CUDA_R_32F, ldc, compute, CUBLAS_GEMM_DEFAULT));
    return 0;
}

// ---- bf16 mode: the inputs rounded into the device's scratch ----------------------------------
__global__ void round_bf16(const float *x, long long n, __nv_bfloat16 *y) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

int current_precision() {
    Locked guard;
    return precision;
}

// Rounds up to 128 elements (256 bytes), cuBLASLt's preferred alignment for each part.
int64_t padded(int64_t n) { return (n + 127) / 128 * 128; }

// bf16 copies of up to three fp32 arrays (NULL: skipped) in the current device's scratch; out[i]
// is the copy of src[i] (NULL for a NULL source).
int to_bf16(sao_ctx *ctx, const char *op, const float *const src[3], const int64_t n[3], const __nv_bfloat16 *out[3]) {
    int dev = 0;
    GemmState *g = NULL;
    if (gemm_state(ctx, op, &dev, &g)) return -1;
    int64_t total = 0;
    for (int i = 0; i < 3; i++) total += src[i] ? padded(n[i]) : 0;
    // bf16 elements in floats (two per float); the lock covers the grow, the launches are queued
    float *base;
    {
        Locked guard;
        base = sao_cuda_grow(ctx, &g->scratch, &g->scratch_n, (size_t)(total + 1) / 2);
    }
    if (!base) return -1;
    __nv_bfloat16 *at = (__nv_bfloat16 *)base;
    for (int i = 0; i < 3; i++) {
        out[i] = NULL;
        if (!src[i]) continue;
        if (n[i] > 0) {
            unsigned blocks = sao_cuda_blocks(n[i], 256);
            if (blocks > (1u << 20)) blocks = 1u << 20;
            round_bf16<<<blocks, 256, 0, sao_cuda_stream()>>>(src[i], (long long)n[i], at);
            CUDA_LAUNCHED(ctx, op);
        }
        out[i] = at;
        at += padded(n[i]);
    }
    return 0;
}

// Both forwards: x, w of type `ab`.
int forward(sao_ctx *ctx, const char *op, const void *x, const void *w, cudaDataType_t ab, const float *b,
            int64_t n, int64_t in, int64_t out, int accumulate, float *y) {
    SAO_CHECK(sao_linear_forward_check(ctx, op, SAO_KCHECK_CUDA, x, w, n, in, out, y));
    if (sao_cuda_check_ptr(ctx, op, "x", x) || sao_cuda_check_ptr(ctx, op, "w", w) ||
        sao_cuda_check_ptr(ctx, op, "b", b) || sao_cuda_check_ptr(ctx, op, "y", y))
        return -1;
    if (b && accumulate) {   // y += b, then y += x W^T (the CPU kernel's order)
        if (launch_bias_rows(ctx, op, y, b, n, out, 0)) return -1;
        b = NULL;
    }
    // y^T [out, N] = (w as [in, out])^T (x as [in, N]) (+ b on every column)
    return gemm(ctx, op, true, false, (int)out, (int)n, (int)in, w, (int)in, x, (int)in, ab,
                accumulate ? 1.0f : 0.0f, y, (int)out, b);
}

// ---- bf16 mirrors: read-only fp32 weight blocks kept rounded, so the bf16 mode does not round
// the same weights again at every GEMM (a model used only for inference registers its block) ----
struct Mirror {
    const float *base;    // the fp32 range [base, base + n)
    int64_t n;
    __nv_bfloat16 *bf;    // its bf16 copy (caching allocator)
};
const int MAX_MIRRORS = 32;
Mirror mirrors[MAX_MIRRORS];   // guarded by gemm_lock

// The bf16 copy of w[0 .. count) when a mirror holds the whole range, else NULL.
const __nv_bfloat16 *mirror_of(const float *w, int64_t count) {
    Locked guard;
    for (int i = 0; i < MAX_MIRRORS; i++) {
        const Mirror &m = mirrors[i];
        if (m.base && w >= m.base && w + count <= m.base + m.n) return m.bf + (w - m.base);
    }
    return NULL;
}

}  // namespace

uint16_t *sao_cuda_bf16_mirror_find(const float *w, int64_t n) {
    return (uint16_t *)mirror_of(w, n);
}

int sao_cuda_bf16_mirror(sao_ctx *ctx, const float *base, int64_t n, int on) {
    const char *op = "cuda_bf16_mirror";
    __nv_bfloat16 *bf = NULL;
    {
        Locked guard;
        for (int i = 0; i < MAX_MIRRORS; i++)
            if (mirrors[i].base == base) {
                bf = mirrors[i].bf;
                if (!on || mirrors[i].n != n) {   // dropped, or a new size: made anew below
                    sao_cuda_free(bf);
                    bf = NULL;
                    mirrors[i].base = NULL;
                }
                break;
            }
    }
    if (!on || n <= 0) return 0;
    if (!bf) {
        void *p = NULL;
        if (sao_cuda_malloc(ctx, (size_t)n * sizeof(__nv_bfloat16), &p)) return -1;
        bf = (__nv_bfloat16 *)p;
        Locked guard;
        int slot = -1;
        for (int i = 0; i < MAX_MIRRORS && slot < 0; i++) if (!mirrors[i].base) slot = i;
        if (slot < 0) {
            sao_cuda_free(p);
            return sao_err(ctx, op, "more than %d bf16 weight mirrors (one per model on a device)", MAX_MIRRORS);
        }
        mirrors[slot].base = base;
        mirrors[slot].n = n;
        mirrors[slot].bf = bf;
    }
    // (re)round the whole range: the weights may have been uploaded anew
    unsigned blocks = sao_cuda_blocks(n, 256);
    if (blocks > (1u << 20)) blocks = 1u << 20;
    round_bf16<<<blocks, 256, 0, sao_cuda_stream()>>>(base, (long long)n, bf);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

extern "C" int sao_cuda_linear_forward(sao_ctx *ctx, const float *x, const float *w, const float *b,
                                       int64_t n, int64_t in, int64_t out, int accumulate, float *y) {
    const char *op = "cuda_linear_forward";
    if (current_precision() != SAO_GEMM_BF16) return forward(ctx, op, x, w, CUDA_R_32F, b, n, in, out, accumulate, y);
    SAO_CHECK(sao_linear_forward_check(ctx, op, SAO_KCHECK_CUDA, x, w, n, in, out, y));
    if (sao_cuda_check_ptr(ctx, op, "x", x) || sao_cuda_check_ptr(ctx, op, "w", w)) return -1;
    const __nv_bfloat16 *wm = mirror_of(w, out * in);   // a mirrored weight is rounded already
    const float *src[3] = {x, wm ? NULL : w, NULL};
    const int64_t cnt[3] = {n * in, out * in, 0};
    const __nv_bfloat16 *h[3];
    if (to_bf16(ctx, op, src, cnt, h)) return -1;
    return forward(ctx, op, h[0], wm ? wm : h[1], CUDA_R_16BF, b, n, in, out, accumulate, y);
}

// C [m, n] (column-major, ldc) = op(A) op(B) + beta C for fp32 A, B: fp32 products in the fp32
// mode, TF32 tensor cores in the tf32 and bf16 modes (cuda_internal.h).
int sao_cuda_gemm_f32(sao_ctx *ctx, const char *op, bool ta, bool tb, int m, int n, int k, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc) {
    if (m <= 0 || n <= 0) return 0;
    return gemm(ctx, op, ta, tb, m, n, k, A, lda, B, ldb, CUDA_R_32F, beta, C, ldc, NULL,
                current_precision() != SAO_GEMM_FP32);
}

extern "C" int sao_cuda_linear_forward_bf16(sao_ctx *ctx, const uint16_t *x, const uint16_t *w, const float *b,
                                            int64_t n, int64_t in, int64_t out, int accumulate, float *y) {
    return forward(ctx, "cuda_linear_forward_bf16", x, w, CUDA_R_16BF, b, n, in, out, accumulate, y);
}

extern "C" int sao_cuda_linear_backward(sao_ctx *ctx, const float *dy, const float *x, const float *w,
                                        int64_t n, int64_t in, int64_t out, float *dx, float *dw, float *db) {
    const char *op = "cuda_linear_backward";
    SAO_CHECK(sao_linear_backward_check(ctx, op, SAO_KCHECK_CUDA, dy, x, w, n, in, out, dx, dw));
    if (sao_cuda_check_ptr(ctx, op, "dy", dy) || sao_cuda_check_ptr(ctx, op, "x", dw ? x : NULL) ||
        sao_cuda_check_ptr(ctx, op, "w", dx ? w : NULL) || sao_cuda_check_ptr(ctx, op, "dx", dx) ||
        sao_cuda_check_ptr(ctx, op, "dw", dw) || sao_cuda_check_ptr(ctx, op, "db", db))
        return -1;
    // bf16 mode: the products' inputs rounded (dy once for both), the bias gradient from fp32 dy
    const void *dy_m = dy, *x_m = x, *w_m = w;
    cudaDataType_t ab = CUDA_R_32F;
    if ((dx || dw) && current_precision() == SAO_GEMM_BF16) {
        const __nv_bfloat16 *wm = dx ? mirror_of(w, out * in) : NULL;   // a mirrored weight is rounded already
        const float *src[3] = {dy, dw ? x : NULL, dx && !wm ? w : NULL};
        const int64_t cnt[3] = {n * out, n * in, out * in};
        const __nv_bfloat16 *h[3];
        if (to_bf16(ctx, op, src, cnt, h)) return -1;
        dy_m = h[0]; x_m = h[1]; w_m = wm ? wm : h[2];
        ab = CUDA_R_16BF;
    }
    // dx^T [in, N] += (w as [in, out]) (dy as [out, N])
    if (dx && gemm(ctx, op, false, false, (int)in, (int)n, (int)out, w_m, (int)in, dy_m, (int)out, ab,
                   1.0f, dx, (int)in, NULL))
        return -1;
    // dW^T [in, out] += (x as [in, N]) (dy as [out, N])^T
    if (dw && gemm(ctx, op, false, true, (int)in, (int)out, (int)n, x_m, (int)in, dy_m, (int)out, ab,
                   1.0f, dw, (int)in, NULL))
        return -1;
    if (db) {
        dim3 block(BG_COLS, BG_ROWS);
        bias_grad<<<sao_cuda_blocks(out, BG_COLS), block, 0, sao_cuda_stream()>>>(dy, (long long)n, (long long)out, db);
        CUDA_LAUNCHED(ctx, op);
    }
    return 0;
}

extern "C" int sao_cuda_gemm_use_lt(int on) {
    Locked guard;
    int was = use_lt ? 1 : 0;
    if (on >= 0) use_lt = on != 0;
    return was;
}

extern "C" int64_t sao_cuda_gemm_workspace_bytes(int device) {
    if (device < 0 || device >= MAX_DEVICES) return 0;
    Locked guard;
    return states[device].ready ? (int64_t)sao_cuda_size_class(WORKSPACE_BYTES) : 0;
}

extern "C" int sao_cuda_gemm_precision(int mode) {
    Locked guard;
    int was = precision;
    if (mode == SAO_GEMM_FP32 || mode == SAO_GEMM_TF32 || mode == SAO_GEMM_BF16) precision = mode;
    return was;
}

// Strided batched fp32 GEMM through plain cuBLAS (column-major): C_i = alpha op(A_i) op(B_i) +
// beta C_i for i < batch, the i-th matrices at A + i sA, B + i sB, C + i sC. In the tf32 and bf16
// modes the products run on TF32 tensor cores (fp32 data), else in fp32. attention.cu's
// tensor-core path.
int sao_cuda_gemm_batched(sao_ctx *ctx, const char *op, bool ta, bool tb, int m, int n, int k, float alpha,
                          const float *A, int lda, long long sA, const float *B, int ldb, long long sB, float beta,
                          float *C, int ldc, long long sC, int batch) {
    int dev = 0;
    GemmState *g = NULL;
    if (gemm_state(ctx, op, &dev, &g)) return -1;
    cublasComputeType_t compute = current_precision() == SAO_GEMM_FP32 ? CUBLAS_COMPUTE_32F
                                                                       : CUBLAS_COMPUTE_32F_FAST_TF32;
    cublasHandle_t blas;
    if (blas_handle(ctx, op, g, &blas)) return -1;
    CUBLAS_TRY(ctx, op, cublasGemmStridedBatchedEx(blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                   m, n, k, &alpha, A, CUDA_R_32F, lda, sA, B, CUDA_R_32F, ldb, sB,
                                                   &beta, C, CUDA_R_32F, ldc, sC, batch, compute, CUBLAS_GEMM_DEFAULT));
    return 0;
}

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
// within fp32 rounding of the CPU's) and a 32 MiB workspace; the handle and workspace are made
// once per device on first use, and the algorithm cuBLASLt's heuristic picks is remembered per
// (shape, types, pointer alignments). Where cuBLASLt has no algorithm for a problem (or
// sao_cuda_gemm_use_lt(0) asks), plain cuBLAS (cublasSgemm / cublasGemmEx) runs it instead, with
// the bias written by a small kernel.
#include "cuda_internal.h"
extern "C" {
#include "sao_cuda.h"
#include "../cpu/kcheck.h"
}
#include <cublasLt.h>
#include <cublas_v2.h>
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
};
GemmState states[MAX_DEVICES];
bool use_lt = true;   // sao_cuda_gemm_use_lt

// The heuristic's answer per problem: an algorithm, or none (then plain cuBLAS runs it).
typedef std::array<int64_t, 15> Problem;
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
         float *Cm, int ldc, const float *bias) {
    int dev = 0;
    GemmState *g = NULL;
    if (gemm_state(ctx, op, &dev, &g)) return -1;
    cudaStream_t stream = sao_cuda_stream();
    const float one = 1.0f;
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;

    bool lt_on;
    {
        Locked guard;
        lt_on = use_lt;
    }
    if (lt_on) {
        LtDescs d;
        CUBLAS_TRY(ctx, op, cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
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
                       al_a, al_b, al_c, bias ? (int64_t)alignment_of(bias) : 0};
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
    {
        Locked guard;
        if (!g->blas) {
            CUBLAS_TRY(ctx, op, cublasCreate(&g->blas));
            CUBLAS_TRY(ctx, op, cublasSetStream(g->blas, stream));
        }
    }
    if (ab == CUDA_R_32F)
        CUBLAS_TRY(ctx, op, cublasSgemm(g->blas, opa, opb, m, n, k, &one, (const float *)A, lda,
                                        (const float *)B, ldb, &beta, Cm, ldc));
    else
        CUBLAS_TRY(ctx, op, cublasGemmEx(g->blas, opa, opb, m, n, k, &one, A, ab, lda, B, ab, ldb, &beta,
                                         Cm, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
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

}  // namespace

extern "C" int sao_cuda_linear_forward(sao_ctx *ctx, const float *x, const float *w, const float *b,
                                       int64_t n, int64_t in, int64_t out, int accumulate, float *y) {
    return forward(ctx, "cuda_linear_forward", x, w, CUDA_R_32F, b, n, in, out, accumulate, y);
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
    // dx^T [in, N] += (w as [in, out]) (dy as [out, N])
    if (dx && gemm(ctx, op, false, false, (int)in, (int)n, (int)out, w, (int)in, dy, (int)out, CUDA_R_32F,
                   1.0f, dx, (int)in, NULL))
        return -1;
    // dW^T [in, out] += (x as [in, N]) (dy as [out, N])^T
    if (dw && gemm(ctx, op, false, true, (int)in, (int)out, (int)n, x, (int)in, dy, (int)out, CUDA_R_32F,
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

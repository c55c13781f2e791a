// attention_cudnn.cu — the attention forward and backward through cuDNN's fused scaled-dot-product
// attention (sao.cuda.attention_impl("cudnn")): one operation of cuDNN 9's backend (graph) API each
// way, the unified SDPA forward (CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR, cuDNN >= 9.13.1) and
// its backward twin (CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR), each built once per shape into
// an execution plan that is cached for the life of the process.
//
// forward:   Q [B, H, T, D], K [B, Hkv, M, D], V [B, Hkv, M, D] (bf16), scale (fp32, by value)
//            -> O [B, H, T, D] (bf16) and, when the caller wants lse, Stats [B, H, T, 1] (fp32,
//            the row's logsumexp: written straight into lse, whose layout it is)
// backward:  Q, K, V, O, dO [B, H, T, D] (bf16), Stats (the forward's lse, read in place), scale
//            -> dQ, dK, dV (bf16, of Q's, K's, V's shapes; cuDNN's outputs, overwritten)
// sao's tensors are fp32 with any (batch, head, token) strides, so a call packs its operands into
// contiguous bf16 copies (the rounding the bf16 tensor-core kernels also apply), runs the plan, and
// widens the outputs back through sao's strides: out written, dq, dk, dv accumulated (each may be
// absent). The copies and cuDNN's workspace share one per-device scratch, grown on a shape's first
// call only (nothing allocates in steady state; a CUDA graph capture of the DiT step records the
// launches and cuDNN's work on sao's stream).
//
// Taken only in the bf16 GEMM precision mode, for attentions without bias, key mask or dbias (the
// DiT's self- and cross-attention) with D a multiple of 8 up to 256 and an lse on a 16-byte boundary
// (returns 1 otherwise, and the caller runs its usual kernels). Any refusal while a plan is built
// (no cuDNN, a cuDNN without the unified operations, no engine for the shape, a plan that does not
// finalize) is remembered for the shape and direction with its reason (sao_cuda_sdpa_status,
// SAO_CUDNN_LOG=1), and that direction keeps the bf16 tensor-core flash kernels (attention_mma.cu,
// attention_mma_bwd.cu: the latter takes cuDNN's lse, the same natural-log logsumexp of the
// scaled logits): a machine whose cuDNN cannot do it loses nothing. A failure while running a
// built plan is an error. Only engines whose numerical notes do not say nondeterministic are taken
// (flash backward engines may add dQ with atomics), so results stay bit-reproducible run to run;
// SAO_CUDNN_NONDETERMINISTIC=1 lets a shape with no other engine use one. cuDNN's own frontend
// builds the backward from matmul, pointwise and reduction nodes rather than this unified
// operation, so a real cuDNN may well refuse it.
#include "sao_cudnn.h"
extern "C" {
#include "sao_cuda.h"
}
#include <cuda_bf16.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <array>
#include <atomic>
#include <map>
#include <vector>

namespace {

// the graphs' tensors, by unique id
enum { UID_Q = 1, UID_K, UID_V, UID_O, UID_STATS, UID_SCALE, UID_DO, UID_DQ, UID_DK, UID_DV };
// the two graphs: the forward, the backward
enum { FWD = 0, BWD = 1 };
const char *const DIR_NAMES[] = {"SDPA", "SDPA backward"};

struct Plan {
    bool usable;
    char why[512];                                // when not: the refusal, for the log and status
    cudnnBackendDescriptor_t plan;                // the execution plan
    std::vector<cudnnBackendDescriptor_t> keep;   // every descriptor it was built from (kept)
    int64_t ws_bytes;
};

// (direction, device, B, H, Hkv, T, M, D, with stats)
typedef std::array<int64_t, 9> Key;
std::map<Key, Plan *> *plans;
pthread_mutex_t plan_lock = PTHREAD_MUTEX_INITIALIZER;   // guards plans; held while one is built

std::atomic<long long> runs[2];                  // plans executed since start, per direction
pthread_mutex_t why_lock = PTHREAD_MUTEX_INITIALIZER;
char last_why[512];                              // the last refusal (empty: none yet)

float *scratch[SAO_CUDA_SCRATCH_DEVICES];
size_t scratch_n[SAO_CUDA_SCRATCH_DEVICES];

bool logging() {
    const char *log = getenv("SAO_CUDNN_LOG");
    return log && *log && *log != '0';
}

// Builds descriptors, remembering the first failing call (the rest are skipped once one failed).
struct Builder {
    const sao_cudnn_api *a;
    Plan *p;
    cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
    const char *call = NULL;

    bool fail(cudnnStatus_t s, const char *what) {
        if (s == CUDNN_STATUS_SUCCESS || st != CUDNN_STATUS_SUCCESS) return s != CUDNN_STATUS_SUCCESS;
        st = s;
        call = what;
        return true;
    }
    cudnnBackendDescriptor_t make(cudnnBackendDescriptorType_t type, const char *what) {
        cudnnBackendDescriptor_t d = NULL;
        if (st != CUDNN_STATUS_SUCCESS) return NULL;
        if (fail(a->cudnnBackendCreateDescriptor(type, &d), what)) return NULL;
        p->keep.push_back(d);
        return d;
    }
    void set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
             int64_t n, const void *v, const char *what) {
        if (st == CUDNN_STATUS_SUCCESS) fail(a->cudnnBackendSetAttribute(d, name, type, n, v), what);
    }
    void finalize(cudnnBackendDescriptor_t d, const char *what) {
        if (st == CUDNN_STATUS_SUCCESS) fail(a->cudnnBackendFinalize(d), what);
    }
    // a finalized tensor descriptor: dims and strides of 4, 16-byte aligned
    cudnnBackendDescriptor_t tensor(int64_t uid, cudnnDataType_t type, const int64_t dims[4], const int64_t strides[4],
                                    bool by_value, const char *what) {
        cudnnBackendDescriptor_t t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR, what);
        int64_t align = by_value ? 4 : 16;
        set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, what);
        set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims, what);
        set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides, what);
        set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, what);
        set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align, what);
        if (by_value) {
            bool yes = true;
            set(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes, what);
        }
        finalize(t, what);
        return t;
    }
};

void contiguous(const int64_t dims[4], int64_t strides[4]) {
    strides[3] = 1;
    for (int i = 2; i >= 0; i--) strides[i] = strides[i + 1] * dims[i + 1];
}

// The operation (forward, or backward: its Stats are the forward's, its gradients outputs of the
// inputs' shapes), its graph, the heuristics' engine configurations and the first plan that
// finalizes. Leaves p->usable false with p->why on any refusal.
void build(const sao_cudnn_api *a, cudnnHandle_t h, const sao_attn_geo *g, int dir, bool stats, Plan *p) {
    Builder b{a, p};
    const int64_t dq[4] = {g->B, g->H, g->T, g->D}, dk[4] = {g->B, g->Hkv, g->M, g->D};
    const int64_t ds[4] = {g->B, g->H, g->T, 1}, d1[4] = {1, 1, 1, 1};
    int64_t sq[4], sk[4], ss[4];
    contiguous(dq, sq);
    contiguous(dk, sk);
    contiguous(ds, ss);
    cudnnBackendDescriptor_t Q = b.tensor(UID_Q, CUDNN_DATA_BFLOAT16, dq, sq, false, "Q tensor");
    cudnnBackendDescriptor_t K = b.tensor(UID_K, CUDNN_DATA_BFLOAT16, dk, sk, false, "K tensor");
    cudnnBackendDescriptor_t V = b.tensor(UID_V, CUDNN_DATA_BFLOAT16, dk, sk, false, "V tensor");
    cudnnBackendDescriptor_t O = b.tensor(UID_O, CUDNN_DATA_BFLOAT16, dq, sq, false, "O tensor");
    cudnnBackendDescriptor_t S = stats ? b.tensor(UID_STATS, CUDNN_DATA_FLOAT, ds, ss, false, "Stats tensor") : NULL;
    cudnnBackendDescriptor_t C = b.tensor(UID_SCALE, CUDNN_DATA_FLOAT, d1, d1, true, "scale tensor");
    struct { cudnnBackendAttributeName_t attr; cudnnBackendDescriptor_t t; } in[10];
    int n = 0;
    const char *w;
    cudnnBackendDescriptor_t op;
    if (dir == FWD) {
        w = "SDPA forward operation";
        op = b.make(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR, w);
        in[n++] = {CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, Q};
        in[n++] = {CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, K};
        in[n++] = {CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, V};
        in[n++] = {CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, O};
        if (stats) in[n++] = {CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC, S};
        in[n++] = {CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, C};
    } else {
        cudnnBackendDescriptor_t dO = b.tensor(UID_DO, CUDNN_DATA_BFLOAT16, dq, sq, false, "dO tensor");
        cudnnBackendDescriptor_t dQ = b.tensor(UID_DQ, CUDNN_DATA_BFLOAT16, dq, sq, false, "dQ tensor");
        cudnnBackendDescriptor_t dK = b.tensor(UID_DK, CUDNN_DATA_BFLOAT16, dk, sk, false, "dK tensor");
        cudnnBackendDescriptor_t dV = b.tensor(UID_DV, CUDNN_DATA_BFLOAT16, dk, sk, false, "dV tensor");
        w = "SDPA backward operation";
        op = b.make(CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR, w);
        in[n++] = {CUDNN_ATTR_OPERATION_SDPA_BWD_QDESC, Q};
        in[n++] = {CUDNN_ATTR_OPERATION_SDPA_BWD_KDESC, K};
        in[n++] = {CUDNN_ATTR_OPERATION_SDPA_BWD_VDESC, V};
        in[n++] = {CUDNN_ATTR_OPERATION_SDPA_BWD_ODESC, O};
        in[n++] = {CUDNN_ATTR_OPERATION_SDPA_BWD_STATSDESC, S};
        in[n++] = {CUDNN_ATTR_OPERATION_SDPA_BWD_SCALEDESC, C};
        in[n++] = {CUDNN_ATTR_OPERATION_SDPA_BWD_DODDESC, dO};
        in[n++] = {CUDNN_ATTR_OPERATION_SDPA_BWD_DQDESC, dQ};
        in[n++] = {CUDNN_ATTR_OPERATION_SDPA_BWD_DKDESC, dK};
        in[n++] = {CUDNN_ATTR_OPERATION_SDPA_BWD_DVDESC, dV};
    }
    for (int i = 0; i < n; i++) b.set(op, in[i].attr, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &in[i].t, w);
    b.finalize(op, w);

    w = "operation graph";
    cudnnBackendDescriptor_t graph = b.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, w);
    b.set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &op, w);
    b.set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h, w);
    b.finalize(graph, w);

    // the heuristics' list (mode A), or the fallback mode's when A has none
    w = "engine heuristics";
    cudnnBackendDescriptor_t heur = NULL;
    int64_t count = 0;
    const cudnnBackendHeurMode_t modes[2] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
    for (int m = 0; m < 2 && count == 0 && b.st == CUDNN_STATUS_SUCCESS; m++) {
        heur = b.make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, w);
        b.set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph, w);
        b.set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &modes[m], w);
        b.finalize(heur, w);
        if (b.st == CUDNN_STATUS_SUCCESS)
            b.fail(a->cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                                               &count, NULL), "engine heuristics (count)");
    }
    if (count > 16) count = 16;
    std::vector<cudnnBackendDescriptor_t> cfgs;
    for (int64_t i = 0; i < count && b.st == CUDNN_STATUS_SUCCESS; i++)
        cfgs.push_back(b.make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine configuration"));
    int64_t got = 0;
    if (b.st == CUDNN_STATUS_SUCCESS && count > 0)
        b.fail(a->cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                           &got, cfgs.data()), "engine heuristics (results)");
    if (got > count) got = count;
    if (b.st == CUDNN_STATUS_SUCCESS && got <= 0)
        snprintf(p->why, sizeof p->why, "cuDNN %zu's heuristics (modes A and fallback) offer no engine for this %s "
                 "graph", a->cudnnGetVersion(), DIR_NAMES[dir]);

    // each configuration's engine and whether its numerical notes say nondeterministic (atomics)
    std::vector<bool> nondet;
    for (int64_t i = 0; i < got && b.st == CUDNN_STATUS_SUCCESS; i++) {
        cudnnBackendDescriptor_t e = b.make(CUDNN_BACKEND_ENGINE_DESCRIPTOR, "engine");
        int64_t n = 0;
        if (b.st == CUDNN_STATUS_SUCCESS)
            b.fail(a->cudnnBackendGetAttribute(cfgs[i], CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n,
                                               &e), "engine configuration's engine");
        cudnnBackendNumericalNote_t notes[32];
        n = 0;
        if (b.st == CUDNN_STATUS_SUCCESS)
            b.fail(a->cudnnBackendGetAttribute(e, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE, 32, &n,
                                               notes), "engine's numerical notes");
        bool nd = false;
        for (int64_t k = 0; k < n && k < 32; k++) nd = nd || notes[k] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC;
        nondet.push_back(nd);
    }

    // The first deterministic configuration whose plan finalizes (sao's results are bit-reproducible
    // run to run, a resumed training run's too); a nondeterministic one only when no deterministic
    // one finalizes and SAO_CUDNN_NONDETERMINISTIC=1. The others' refusals are only logged.
    const char *env = getenv("SAO_CUDNN_NONDETERMINISTIC");
    bool allow_nondet = env && *env && *env != '0';
    cudnnStatus_t first_st = CUDNN_STATUS_SUCCESS;
    int64_t skipped = 0;   // nondeterministic configurations passed over
    for (int pass = 0; pass < 2 && !p->usable; pass++)
        for (int64_t i = 0; i < got && b.st == CUDNN_STATUS_SUCCESS && !p->usable; i++) {
            if (nondet[i] != (pass == 1)) continue;
            if (pass == 1 && !allow_nondet) {
                skipped++;
                continue;
            }
            cudnnBackendDescriptor_t plan = NULL;
            cudnnStatus_t st = a->cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan);
            if (st == CUDNN_STATUS_SUCCESS)
                st = a->cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h);
            if (st == CUDNN_STATUS_SUCCESS)
                st = a->cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                                 CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]);
            if (st == CUDNN_STATUS_SUCCESS) st = a->cudnnBackendFinalize(plan);
            int64_t ws = 0, n = 0;
            if (st == CUDNN_STATUS_SUCCESS)
                st = a->cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                                 &ws);
            if (st == CUDNN_STATUS_SUCCESS && ws >= 0) {
                p->plan = plan;
                p->keep.push_back(plan);
                p->ws_bytes = ws;
                p->usable = true;
                if (logging())
                    fprintf(stderr, "sao cudnn: %s B=%lld H=%lld Hkv=%lld T=%lld M=%lld D=%lld%s: engine configuration "
                            "%lld of %lld (%s), workspace %lld bytes\n", DIR_NAMES[dir], (long long)g->B,
                            (long long)g->H, (long long)g->Hkv, (long long)g->T, (long long)g->M, (long long)g->D,
                            stats ? " +stats" : "", (long long)i, (long long)got,
                            nondet[i] ? "nondeterministic: SAO_CUDNN_NONDETERMINISTIC=1" : "deterministic",
                            (long long)ws);
                break;
            }
            if (first_st == CUDNN_STATUS_SUCCESS) first_st = st;
            if (logging())
                fprintf(stderr, "sao cudnn: %s engine configuration %lld of %lld refused: %s (status %d)\n",
                        DIR_NAMES[dir], (long long)i, (long long)got, a->cudnnGetErrorString(st), (int)st);
            if (plan) a->cudnnBackendDestroyDescriptor(plan);
        }
    if (p->usable) return;
    if (b.st != CUDNN_STATUS_SUCCESS)
        snprintf(p->why, sizeof p->why, "cuDNN %zu: %s: %s (status %d)", a->cudnnGetVersion(), b.call,
                 a->cudnnGetErrorString(b.st), (int)b.st);
    else if (skipped > 0 && first_st == CUDNN_STATUS_SUCCESS)
        snprintf(p->why, sizeof p->why, "cuDNN %zu: the %lld engine configuration(s) for this %s graph are "
                 "nondeterministic (SAO_CUDNN_NONDETERMINISTIC=1 takes them, giving up bit-reproducible results)",
                 a->cudnnGetVersion(), (long long)skipped, DIR_NAMES[dir]);
    else if (got > 0)
        snprintf(p->why, sizeof p->why, "cuDNN %zu: none of the %lld engine configurations makes a plan for this %s "
                 "graph (the first refusal: %s, status %d%s)", a->cudnnGetVersion(), (long long)got, DIR_NAMES[dir],
                 a->cudnnGetErrorString(first_st), (int)first_st,
                 skipped ? "; nondeterministic ones passed over: SAO_CUDNN_NONDETERMINISTIC=1 tries them" : "");
}

void refuse(int dir, const sao_attn_geo *g, const char *why) {
    pthread_mutex_lock(&why_lock);
    snprintf(last_why, sizeof last_why, "%s B=%lld H=%lld Hkv=%lld T=%lld M=%lld D=%lld: %s; the bf16 flash kernels "
             "run it", DIR_NAMES[dir], (long long)g->B, (long long)g->H, (long long)g->Hkv, (long long)g->T,
             (long long)g->M, (long long)g->D, why);
    pthread_mutex_unlock(&why_lock);
}

// The plan for g on the current device (built on first use), or NULL: not usable (refuse() said why).
int plan_for(sao_ctx *ctx, const char *op, const sao_cudnn_api *a, cudnnHandle_t h, const sao_attn_geo *g, int dir,
             bool stats, const Plan **out) {
    int dev = 0;
    CUDA_TRY(ctx, op, cudaGetDevice(&dev));
    Key key = {dir, dev, g->B, g->H, g->Hkv, g->T, g->M, g->D, stats};
    pthread_mutex_lock(&plan_lock);
    if (!plans) plans = new std::map<Key, Plan *>;
    auto it = plans->find(key);
    Plan *p = it != plans->end() ? it->second : NULL;
    bool fresh = !p;
    if (!p) {
        p = new Plan();
        build(a, h, g, dir, stats, p);
        if (!p->usable) {   // nothing of a refused graph is kept
            for (cudnnBackendDescriptor_t d : p->keep) a->cudnnBackendDestroyDescriptor(d);
            p->keep.clear();
        }
        (*plans)[key] = p;
    }
    pthread_mutex_unlock(&plan_lock);
    if (!p->usable && fresh) {
        refuse(dir, g, p->why);
        if (logging()) fprintf(stderr, "sao cudnn: %s refused: %s\n", DIR_NAMES[dir], p->why);
    }
    *out = p->usable ? p : NULL;
    return 0;
}

// What both directions check before a plan: the shape cuDNN takes, lse's alignment, cuDNN loaded
// and the device's handle. 0 with *api and *h set; 1 refused (the reason kept); -1 a sao error.
int usable(sao_ctx *ctx, const char *op, int dir, const sao_attn_geo *g, const float *lse, const sao_cudnn_api **api,
           cudnnHandle_t *h) {
    if (g->B <= 0 || g->T <= 0 || g->M <= 0) return 1;
    if (g->D % 8 || g->D > 256) {
        refuse(dir, g, "cuDNN's SDPA takes head dims that are a multiple of 8 up to 256");
        return 1;
    }
    if ((uintptr_t)lse % 16) {   // Stats is declared 16-byte aligned, as cuDNN's vectorised accesses want
        refuse(dir, g, "lse is not 16-byte aligned (cuDNN uses it in place)");
        return 1;
    }
    const char *no = NULL;
    *api = sao_cudnn(&no);
    if (!*api) {
        refuse(dir, g, no);
        return 1;
    }
    int r = sao_cudnn_handle(ctx, op, h);
    if (r > 0) sao_cudnn(&no), refuse(dir, g, no);
    return r;
}

size_t up256(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

// The per-device scratch carved into 256-byte aligned parts of the given byte sizes (the last
// one cuDNN's workspace); -1 with a sao error.
int carve(sao_ctx *ctx, const char *op, const size_t *bytes, int n, char **parts) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += up256(bytes[i]);
    char *base = (char *)sao_cuda_device_scratch(ctx, op, "cuDNN SDPA scratch", scratch, scratch_n, (total + 3) / 4);
    if (!base) return -1;
    for (int i = 0; i < n; i++) parts[i] = bytes[i] ? base : NULL, base += up256(bytes[i]);
    return 0;
}

// x [B, heads, n, D] fp32 through strides s (batch, head, token) -> y contiguous bf16
__global__ void pack_bf16(const float *x, long long heads, long long n, long long D, long long s0, long long s1,
                          long long s2, long long total, __nv_bfloat16 *y) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        long long d = i % D, t = (i / D) % n, h = (i / (D * n)) % heads, b = i / (D * n * heads);
        y[i] = __float2bfloat16_rn(x[b * s0 + h * s1 + t * s2 + d]);
    }
}

// y contiguous bf16 [B, heads, n, D] -> x fp32 through x's strides: written (add 0) or added to (add 1)
__global__ void unpack_bf16(const unsigned short *y, long long heads, long long n, long long D, long long s0,
                            long long s1, long long s2, long long total, int add, float *x) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        long long d = i % D, t = (i / D) % n, h = (i / (D * n)) % heads, b = i / (D * n * heads);
        float v = __uint_as_float((unsigned)y[i] << 16);
        float *o = x + b * s0 + h * s1 + t * s2 + d;
        *o = add ? *o + v : v;
    }
}

unsigned grid(long long n) {
    unsigned blocks = sao_cuda_blocks(n, 256);
    return blocks > (1u << 16) ? 1u << 16 : blocks;
}

// sao's (batch, head, token) strides of one operand, and its head count and length
struct Operand {
    long long heads, n;
    const int64_t *s;
};

void pack(const sao_attn_geo *g, Operand o, const float *x, void *y, cudaStream_t st) {
    long long total = g->B * o.heads * o.n * g->D;
    pack_bf16<<<grid(total), 256, 0, st>>>(x, o.heads, o.n, g->D, o.s[0], o.s[1], o.s[2], total, (__nv_bfloat16 *)y);
}

void unpack(const sao_attn_geo *g, Operand o, const void *y, int add, float *x, cudaStream_t st) {
    long long total = g->B * o.heads * o.n * g->D;
    unpack_bf16<<<grid(total), 256, 0, st>>>((const unsigned short *)y, o.heads, o.n, g->D, o.s[0], o.s[1], o.s[2],
                                             total, add, x);
}

// One execution of a plan: the variant pack of uids and pointers (n of them), the workspace.
int execute(sao_ctx *ctx, const char *op, const sao_cudnn_api *a, cudnnHandle_t h, int dir, const Plan *p,
            const int64_t *uids, void *const *ptrs, int64_t n, void *ws) {
    cudnnBackendDescriptor_t pack = NULL;
    CUDNN_TRY(ctx, op, a, cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack));
    cudnnStatus_t s = a->cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids);
    if (s == CUDNN_STATUS_SUCCESS)
        s = a->cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs);
    if (s == CUDNN_STATUS_SUCCESS)
        s = a->cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    if (s == CUDNN_STATUS_SUCCESS) s = a->cudnnBackendFinalize(pack);
    if (s == CUDNN_STATUS_SUCCESS) s = a->cudnnBackendExecute(h, p->plan, pack);
    a->cudnnBackendDestroyDescriptor(pack);
    if (s != CUDNN_STATUS_SUCCESS)
        return sao_err(ctx, op, "%s:%d: cuDNN's %s: %s (status %d; sao.cuda.attention_impl(\"auto\") runs the attention "
                       "without cuDNN)", __FILE__, __LINE__, DIR_NAMES[dir], a->cudnnGetErrorString(s), (int)s);
    runs[dir].fetch_add(1, std::memory_order_relaxed);
    return 0;
}

}  // namespace

int sao_cuda_sdpa_forward(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q, const float *k,
                          const float *v, float *out, float *lse) {
    const sao_cudnn_api *a = NULL;
    cudnnHandle_t h = NULL;
    int r = usable(ctx, op, FWD, g, lse, &a, &h);
    if (r) return r;
    const Plan *p = NULL;
    if (plan_for(ctx, op, a, h, g, FWD, lse != NULL, &p)) return -1;
    if (!p) return 1;

    const Operand Q = {g->H, g->T, g->sq}, K = {g->Hkv, g->M, g->sk}, V = {g->Hkv, g->M, g->sv}, O = {g->H, g->T, g->so};
    size_t nq = (size_t)(g->B * g->H * g->T * g->D) * 2, nk = (size_t)(g->B * g->Hkv * g->M * g->D) * 2;
    const size_t bytes[5] = {nq, nk, nk, nq, (size_t)p->ws_bytes};
    char *part[5];
    if (carve(ctx, op, bytes, 5, part)) return -1;
    cudaStream_t st = sao_cuda_stream();
    pack(g, Q, q, part[0], st);
    pack(g, K, k, part[1], st);
    pack(g, V, v, part[2], st);
    CUDA_LAUNCHED(ctx, op);
    float scale = g->scale;   // by value: read by cudnnBackendExecute
    const int64_t uids[6] = {UID_Q, UID_K, UID_V, UID_O, UID_SCALE, UID_STATS};
    void *const ptrs[6] = {part[0], part[1], part[2], part[3], &scale, lse};
    if (execute(ctx, op, a, h, FWD, p, uids, ptrs, lse ? 6 : 5, part[4])) return -1;
    unpack(g, O, part[3], 0, out, st);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

int sao_cuda_sdpa_backward(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q, const float *k,
                           const float *v, const float *out, const float *lse, const float *dout, float *dq,
                           float *dk, float *dv) {
    const sao_cudnn_api *a = NULL;
    cudnnHandle_t h = NULL;
    if (!lse) return 1;
    int r = usable(ctx, op, BWD, g, lse, &a, &h);
    if (r) return r;
    const Plan *p = NULL;
    if (plan_for(ctx, op, a, h, g, BWD, true, &p)) return -1;
    if (!p) return 1;

    const Operand Q = {g->H, g->T, g->sq}, K = {g->Hkv, g->M, g->sk}, V = {g->Hkv, g->M, g->sv}, O = {g->H, g->T, g->so};
    size_t nq = (size_t)(g->B * g->H * g->T * g->D) * 2, nk = (size_t)(g->B * g->Hkv * g->M * g->D) * 2;
    // q k v out dout, then the gradients dq dk dv, then cuDNN's workspace
    const size_t bytes[9] = {nq, nk, nk, nq, nq, nq, nk, nk, (size_t)p->ws_bytes};
    char *part[9];
    if (carve(ctx, op, bytes, 9, part)) return -1;
    cudaStream_t st = sao_cuda_stream();
    pack(g, Q, q, part[0], st);
    pack(g, K, k, part[1], st);
    pack(g, V, v, part[2], st);
    pack(g, O, out, part[3], st);
    pack(g, O, dout, part[4], st);
    CUDA_LAUNCHED(ctx, op);
    float scale = g->scale;
    const int64_t uids[10] = {UID_Q, UID_K, UID_V, UID_O, UID_DO, UID_SCALE, UID_STATS, UID_DQ, UID_DK, UID_DV};
    void *const ptrs[10] = {part[0], part[1], part[2], part[3], part[4], &scale, (void *)lse, part[5], part[6], part[7]};
    if (execute(ctx, op, a, h, BWD, p, uids, ptrs, 10, part[8])) return -1;
    // the gradients are cuDNN's outputs; sao's are accumulated (dq, dk, dv: q's, k's, v's strides)
    if (dq) unpack(g, Q, part[5], 1, dq, st);
    if (dk) unpack(g, K, part[6], 1, dk, st);
    if (dv) unpack(g, V, part[7], 1, dv, st);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

// sao_cuda_attn.h: how many forwards and backwards cuDNN's SDPA ran, and the last refusal
extern "C" int64_t sao_cuda_sdpa_status(int64_t *backwards, char *why, size_t why_size) {
    pthread_mutex_lock(&why_lock);
    if (why && why_size) snprintf(why, why_size, "%s", last_why);
    pthread_mutex_unlock(&why_lock);
    if (backwards) *backwards = runs[BWD].load(std::memory_order_relaxed);
    return runs[FWD].load(std::memory_order_relaxed);
}

// cudnn_graph_emu.cpp — the fake cuDNN's backend (graph) API (cudnn.h here; README.md): two graph
// kinds, each a single unified SDPA operation: the forward (CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR,
// cuDNN >= 9.13.1) or the backward (CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR, in the 9.19 headers),
// built as tensors -> operation -> operation graph -> heuristics -> engine config -> execution plan,
// run with a variant pack by cudnnBackendExecute as loops over the emulated device memory; an engine
// config's engine (CUDNN_ATTR_ENGINECFG_ENGINE) tells its index and numerical notes. Both kinds
// share every path below (a Kind table says which operands each takes). Every refusal prints
// "emu: cuDNN: ..." on stderr and returns a non-success status. Checked:
//   - descriptors: a live one of the right type for each call and attribute (a stray or destroyed
//     pointer, or a descriptor of another type, is BAD_PARAM); attributes only before Finalize, with
//     the attribute type and element count cuDNN takes (else BAD_PARAM); Finalize once, with every
//     required attribute set; a descriptor-valued attribute must be finalized (BAD_PARAM_NOT_FINALIZED);
//     GetAttribute only on a finalized descriptor (BAD_PARAM_NOT_FINALIZED); a descriptor type or
//     attribute not emulated here is NOT_SUPPORTED with its number (the backward's SEQ_LEN_Q / _KV);
//   - tensors: data type, dimensions, strides (as many), unique id and byte alignment (a power of 2)
//     set, dimensions and strides > 0, not both virtual and by-value;
//   - the SDPA (operation Finalize): Q [B,H,T,D], K [B,Hk,M,D], V [B,Hk,M,Dv], O [B,H,T,Dv] and, for
//     the backward, dO [B,H,T,Dv], dQ [B,H,T,D], dK [B,Hk,M,D], dV [B,Hk,M,Dv], all required, of one
//     data type, bf16 or fp16, not by-value, last stride 1; H a multiple of Hk; Stats [B,H,T,1] float,
//     not by-value (optional output of the forward, required input of the backward); Scale
//     (optional, else 1) a by-value float [1,1,1,1]; unique ids distinct. The graph (one operation,
//     a handle) refuses virtual tensors: nothing in it produces or consumes them;
//   - heuristics: engine configs 0 and 1 for a forward graph, 0, 1 and 2 for a backward one
//     (EMU_CUDNN_NO_SDPA=1: none; EMU_CUDNN_NO_SDPA_BWD=1: none for a backward graph, as a cuDNN with
//     a forward engine but no backward one; EMU_CUDNN_SDPA_BWD_NONDET_ONLY=1: the backward's 0 and 1);
//     the plan refuses config 0 (as some real engines refuse a graph) and, for every config, D or Dv
//     not a multiple of 8 or > 256 (NOT_SUPPORTED, at plan Finalize as real cuDNN may only say then);
//   - engines: CUDNN_ATTR_ENGINECFG_ENGINE of a config from the heuristics fills a created
//     CUDNN_BACKEND_ENGINE_DESCRIPTOR (1 element; it becomes finalized); an engine tells
//     CUDNN_ATTR_ENGINE_GLOBAL_INDEX (its config's index) and CUDNN_ATTR_ENGINE_NUMERICAL_NOTE (up to
//     the requested notes, elementCount: how many it has): none for the forward's engines, for the
//     backward's TENSOR_CORE and, engine 1 only, NONDETERMINISTIC (as flash attention's backward
//     engines that add dQ up with atomics); the backward's refused engine 0 is marked deterministic,
//     so a caller preferring deterministic engines meets a refusal first. Every engine that runs
//     computes alike (deterministically, in fact). An engine or engine config made by hand is not
//     emulated (no attribute can be set, Finalize is NOT_SUPPORTED); a plan is not built
//     while the thread captures a CUDA graph (it compiles and allocates: the capture is invalidated);
//     the workspace is 64 bytes per (b, h), plus, for the backward, a fp32 dQ accumulator of
//     4 B H T D bytes (as flash attention's backward keeps);
//   - this fake keeps references, not copies: the plan's engine config, graph, operation and tensors
//     must stay alive while the plan is finalized and executed (as cudnn-frontend keeps them);
//   - execution: the variant pack holds each of the graph's uids exactly once and no other; a device
//     pointer covering each tensor's extent (from dimensions and strides) and aligned to its byte
//     alignment; a host pointer (never device memory) to the float of the by-value Scale, read at
//     the call; a device workspace of at least the plan's size, NaN-filled before the work (and
//     written during it, so one overlapping the data shows);
//   - the work runs on the handle's stream (recorded by a capture like a launch). Forward: fp32
//     scores s = scale (q . k) from bf16/fp16 inputs, row max m, l = sum exp(s - m), p = exp(s - m) / l
//     rounded to the storage type, O = sum p v in fp32 rounded to nearest even, Stats = m + log l.
//     Backward (flash attention's, fp32 from the stored values): p = exp(s - Stats), delta = dO . O,
//     dS = p (dO . v - delta); p and dS rounded to the storage type before their products;
//     dV = sum p dO, dK = scale sum dS q (over the K/V head's query heads and all t), dQ = scale
//     sum dS k (accumulated in the workspace); dQ, dK, dV overwritten once, rounded to nearest even.
#include "cudnn.h"
#include "cudnn_emu_internal.h"
#include "emu_internal.h"
#include "cuda_bf16.h"
#include <algorithm>
#include <array>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

#define FAIL(st, ...) emu_cudnn_fail(st, __VA_ARGS__)
#define BAD(...) emu_cudnn_fail(CUDNN_STATUS_BAD_PARAM, __VA_ARGS__)

const char *type_name(int t) {
    switch (t) {
    case CUDNN_BACKEND_ENGINE_DESCRIPTOR: return "CUDNN_BACKEND_ENGINE_DESCRIPTOR";
    case CUDNN_BACKEND_ENGINECFG_DESCRIPTOR: return "CUDNN_BACKEND_ENGINECFG_DESCRIPTOR";
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR: return "CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR";
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR: return "CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR";
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR: return "CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR";
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR: return "CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR";
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR: return "CUDNN_BACKEND_TENSOR_DESCRIPTOR";
    case CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR: return "CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR";
    case CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR: return "CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR";
    default: return "CUDNN_BACKEND_?";
    }
}
const char *attr_name(int a) {
    switch (a) {
#define N(x) case x: return #x;
    N(CUDNN_ATTR_ENGINEHEUR_MODE) N(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH) N(CUDNN_ATTR_ENGINEHEUR_RESULTS)
    N(CUDNN_ATTR_ENGINECFG_ENGINE) N(CUDNN_ATTR_ENGINECFG_KNOB_CHOICES)
    N(CUDNN_ATTR_EXECUTION_PLAN_HANDLE) N(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG) N(CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE)
    N(CUDNN_ATTR_OPERATIONGRAPH_HANDLE) N(CUDNN_ATTR_OPERATIONGRAPH_OPS)
    N(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT) N(CUDNN_ATTR_TENSOR_DATA_TYPE) N(CUDNN_ATTR_TENSOR_DIMENSIONS)
    N(CUDNN_ATTR_TENSOR_STRIDES) N(CUDNN_ATTR_TENSOR_UNIQUE_ID) N(CUDNN_ATTR_TENSOR_IS_VIRTUAL) N(CUDNN_ATTR_TENSOR_IS_BY_VALUE)
    N(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS) N(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS) N(CUDNN_ATTR_VARIANT_PACK_WORKSPACE)
    N(CUDNN_ATTR_ENGINE_GLOBAL_INDEX) N(CUDNN_ATTR_ENGINE_NUMERICAL_NOTE)
    N(CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC) N(CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC) N(CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC)
    N(CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC) N(CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC) N(CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC)
    N(CUDNN_ATTR_OPERATION_SDPA_BWD_QDESC) N(CUDNN_ATTR_OPERATION_SDPA_BWD_KDESC) N(CUDNN_ATTR_OPERATION_SDPA_BWD_VDESC)
    N(CUDNN_ATTR_OPERATION_SDPA_BWD_ODESC) N(CUDNN_ATTR_OPERATION_SDPA_BWD_STATSDESC) N(CUDNN_ATTR_OPERATION_SDPA_BWD_SCALEDESC)
    N(CUDNN_ATTR_OPERATION_SDPA_BWD_SEQ_LEN_QDESC) N(CUDNN_ATTR_OPERATION_SDPA_BWD_SEQ_LEN_KVDESC)
    N(CUDNN_ATTR_OPERATION_SDPA_BWD_DQDESC) N(CUDNN_ATTR_OPERATION_SDPA_BWD_DKDESC) N(CUDNN_ATTR_OPERATION_SDPA_BWD_DVDESC)
    N(CUDNN_ATTR_OPERATION_SDPA_BWD_DODDESC)
#undef N
    default: return "CUDNN_ATTR_?";
    }
}
const char *attr_type_name(int t) {
    switch (t) {
    case CUDNN_TYPE_HANDLE: return "CUDNN_TYPE_HANDLE";
    case CUDNN_TYPE_DATA_TYPE: return "CUDNN_TYPE_DATA_TYPE";
    case CUDNN_TYPE_BOOLEAN: return "CUDNN_TYPE_BOOLEAN";
    case CUDNN_TYPE_INT64: return "CUDNN_TYPE_INT64";
    case CUDNN_TYPE_FLOAT: return "CUDNN_TYPE_FLOAT";
    case CUDNN_TYPE_DOUBLE: return "CUDNN_TYPE_DOUBLE";
    case CUDNN_TYPE_VOID_PTR: return "CUDNN_TYPE_VOID_PTR";
    case CUDNN_TYPE_HEUR_MODE: return "CUDNN_TYPE_HEUR_MODE";
    case CUDNN_TYPE_NUMERICAL_NOTE: return "CUDNN_TYPE_NUMERICAL_NOTE";
    case CUDNN_TYPE_BACKEND_DESCRIPTOR: return "CUDNN_TYPE_BACKEND_DESCRIPTOR";
    default: return "CUDNN_TYPE_?";
    }
}
// bytes of one element; 0 for a data type not known here
int64_t elem_size(int t) {
    switch (t) {
    case CUDNN_DATA_FLOAT: case CUDNN_DATA_INT32: return 4;
    case CUDNN_DATA_DOUBLE: case CUDNN_DATA_INT64: return 8;
    case CUDNN_DATA_HALF: case CUDNN_DATA_BFLOAT16: return 2;
    case CUDNN_DATA_INT8: case CUDNN_DATA_UINT8: case CUDNN_DATA_BOOLEAN: return 1;
    default: return 0;
    }
}

// ---- descriptors: one struct for every type, known by a registry of live ones ----
struct Desc;
struct Ref { Desc *p = nullptr; uint64_t serial = 0; };   // a descriptor another one names

struct Tensor {
    bool has_type = false, has_dims = false, has_strides = false, has_uid = false, has_align = false;
    int type = -1;
    std::vector<int64_t> dims, strides;
    int64_t uid = 0, align = 0;
    bool is_virtual = false, by_value = false;
};
// a tensor as the SDPA uses it (copied at the operation's Finalize)
struct Geo {
    int type;
    int64_t d[4], s[4], uid, align, bytes;   // bytes: the extent, (max offset + 1) x element size
    bool is_virtual, by_value;
};
// the SDPAs' operands, forward and backward together (each kind takes some of them)
enum Slot { SQ, SK, SV, SO, SSTATS, SSCALE, SDO, SDQ, SDK, SDV, NSLOT };
const char *const slot_name[NSLOT] = {"Q", "K", "V", "O", "Stats", "Scale", "dO", "dQ", "dK", "dV"};
const char *const slot_shape[NSLOT] = {"[B, H, T, D]", "[B, Hk, M, D]", "[B, Hk, M, Dv]", "[B, H, T, Dv]", "[B, H, T, 1]",
                                       "[1, 1, 1, 1]", "[B, H, T, Dv]", "[B, H, T, D]", "[B, Hk, M, D]", "[B, Hk, M, Dv]"};
bool is_data(int s) { return s != SSTATS && s != SSCALE; }   // the bf16 / fp16 tensors
// an SDPA operation kind: its descriptor type and, per slot, the attribute that sets it (0: not an
// operand of this kind), whether Finalize wants it and whether the operation writes it
struct Kind {
    int type;
    const char *name, *data, *no_engine_env;   // data: its bf16 / fp16 tensors, for messages
    int attr[NSLOT];
    bool required[NSLOT], output[NSLOT];
};
enum { FWD, BWD, NKIND };
const Kind kinds[NKIND] = {
    {CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR, "SDPA forward", "Q, K, V and O", nullptr,
     {CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC,
      CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC},
     {true, true, true, true}, {false, false, false, true, true}},
    {CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR, "SDPA backward", "Q, K, V, O, dO, dQ, dK and dV", "EMU_CUDNN_NO_SDPA_BWD",
     {CUDNN_ATTR_OPERATION_SDPA_BWD_QDESC, CUDNN_ATTR_OPERATION_SDPA_BWD_KDESC, CUDNN_ATTR_OPERATION_SDPA_BWD_VDESC,
      CUDNN_ATTR_OPERATION_SDPA_BWD_ODESC, CUDNN_ATTR_OPERATION_SDPA_BWD_STATSDESC, CUDNN_ATTR_OPERATION_SDPA_BWD_SCALEDESC,
      CUDNN_ATTR_OPERATION_SDPA_BWD_DODDESC, CUDNN_ATTR_OPERATION_SDPA_BWD_DQDESC, CUDNN_ATTR_OPERATION_SDPA_BWD_DKDESC,
      CUDNN_ATTR_OPERATION_SDPA_BWD_DVDESC},
     {true, true, true, true, true, false, true, true, true, true},
     {false, false, false, false, false, false, false, true, true, true}},
};
const Kind *kind_of(int type) {   // NULL: not an SDPA operation
    for (const Kind &k : kinds)
        if (k.type == type) return &k;
    return nullptr;
}
// the engines the heuristics offer, in their order (a config's engine is its index): for either kind
// engine 0 refuses every graph at plan Finalize; the forward's engine 1 runs and has no numerical
// notes; the backward's engine 1 runs and is marked NONDETERMINISTIC (as flash attention's backward
// engines that add dQ up with atomics are), its engine 2 runs and is deterministic; engine 0 of the
// backward is marked deterministic too, so a caller preferring deterministic engines meets a refusal
// first. EMU_CUDNN_SDPA_BWD_NONDET_ONLY=1 drops the backward's engine 2. Every engine that runs
// computes the same way (the fake is deterministic in fact: only the notes differ).
struct Engine { int nnotes; cudnnBackendNumericalNote_t notes[2]; };
const Engine fwd_engines[] = {{0, {}}, {0, {}}};
const Engine bwd_engines[] = {{1, {CUDNN_NUMERICAL_NOTE_TENSOR_CORE}},
                              {2, {CUDNN_NUMERICAL_NOTE_TENSOR_CORE, CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC}},
                              {1, {CUDNN_NUMERICAL_NOTE_TENSOR_CORE}}};
const Engine &engine_of(int kind, int engine) { return kind == BWD ? bwd_engines[engine] : fwd_engines[engine]; }

struct Prob {
    int kind;   // FWD, BWD
    int64_t B, H, Hk, T, M, D, Dv;
    int type;
    bool has[NSLOT];
    Geo g[NSLOT];
};

struct Desc {
    uint64_t serial;
    int type;
    bool finalized = false;
    Tensor t;                                   // TENSOR
    Ref slot[NSLOT]; Prob prob{};               // OPERATION_SDPA_FWD, OPERATION_SDPA_BWD
    Ref op; cudnnHandle_t handle = nullptr;     // OPERATIONGRAPH (handle: also EXECUTION_PLAN)
    Ref graph; int mode = -1; int nconfigs = 0; // ENGINEHEUR (graph: also ENGINECFG)
    int kind = -1, engine = -1;                 // ENGINEHEUR (kind), ENGINECFG, ENGINE: FWD / BWD, engine index
    Ref cfg; int64_t ws = 0;                    // EXECUTION_PLAN
    bool has_uids = false, has_ptrs = false, has_ws = false;   // VARIANT_PACK
    std::vector<int64_t> uids; std::vector<void *> ptrs; void *ws_ptr = nullptr;
};

std::mutex reg_mu;
std::unordered_map<const void *, uint64_t> live;   // descriptor -> its serial
uint64_t next_serial = 1;

Desc *lookup(const void *d) {
    std::lock_guard<std::mutex> g(reg_mu);
    return d && live.count(d) ? (Desc *)d : nullptr;
}
Desc *resolve(const Ref &r) {   // NULL when never set or destroyed since
    std::lock_guard<std::mutex> g(reg_mu);
    auto it = live.find(r.p);
    return r.p && it != live.end() && it->second == r.serial ? r.p : nullptr;
}
Ref ref(Desc *d) { return Ref{d, d->serial}; }

cudnnStatus_t not_live(const char *who, const void *d) {
    return BAD("%s: %p is not a live backend descriptor (never created, or destroyed)", who, d);
}
cudnnStatus_t gone(const char *who, const char *what) {
    return BAD("%s: the %s it was built from has been destroyed (this fake keeps references, not copies, as "
               "cudnn-frontend keeps them alive: destroy a plan before what it is built from)", who, what);
}

// ---- attribute values ----
struct Args {
    const char *who;
    Desc *d;
    int attr, type;
    int64_t n;
    const void *arr;
};
// the attribute takes `type` with lo to hi elements (hi < 0: no upper bound)
cudnnStatus_t want(const Args &a, int type, int64_t lo, int64_t hi) {
    if (a.type != type)
        return BAD("%s: %s (%d) of a %s takes %s (%d), not %s (%d)", a.who, attr_name(a.attr), a.attr, type_name(a.d->type),
                   attr_type_name(type), type, attr_type_name(a.type), a.type);
    if (a.n < lo || (hi >= 0 && a.n > hi)) {
        if (lo == hi)
            return BAD("%s: %s (%d) takes %lld element(s), not %lld", a.who, attr_name(a.attr), a.attr, (long long)lo, (long long)a.n);
        if (hi < 0)
            return BAD("%s: %s (%d) takes at least %lld element(s), not %lld", a.who, attr_name(a.attr), a.attr, (long long)lo, (long long)a.n);
        return BAD("%s: %s (%d) takes %lld to %lld elements, not %lld", a.who, attr_name(a.attr), a.attr, (long long)lo,
                   (long long)hi, (long long)a.n);
    }
    if (a.n > 0 && !a.arr) return BAD("%s: %s (%d): arrayOfElements is NULL", a.who, attr_name(a.attr), a.attr);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t want(const Args &a, int type, int64_t n) { return want(a, type, n, n); }
// a descriptor-valued attribute: the live, finalized descriptor of type `type` (or `type2`) at element i
cudnnStatus_t desc_arg(const Args &a, int64_t i, int type, Desc **out, int type2 = -1) {
    const void *v = ((const cudnnBackendDescriptor_t *)a.arr)[i];
    Desc *d = lookup(v);
    if (!d) return BAD("%s: %s (%d): %p is not a live backend descriptor", a.who, attr_name(a.attr), a.attr, v);
    if (d->type != type && d->type != type2) {
        if (type2 >= 0)
            return BAD("%s: %s (%d) takes a %s or a %s, not a %s (%d)", a.who, attr_name(a.attr), a.attr, type_name(type),
                       type_name(type2), type_name(d->type), d->type);
        return BAD("%s: %s (%d) takes a %s, not a %s (%d)", a.who, attr_name(a.attr), a.attr, type_name(type),
                   type_name(d->type), d->type);
    }
    if (!d->finalized)
        return FAIL(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, "%s: %s (%d): the %s was not finalized", a.who, attr_name(a.attr),
                    a.attr, type_name(d->type));
    *out = d;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t handle_arg(const Args &a, cudnnHandle_t *out) {
    cudnnHandle_t h = *(const cudnnHandle_t *)a.arr;
    if (!emu_cudnn_handle_ok(h)) return BAD("%s: %s (%d): %p is not a handle from cudnnCreate", a.who, attr_name(a.attr), a.attr, (void *)h);
    *out = h;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t not_emulated(const Args &a) {
    return FAIL(CUDNN_STATUS_NOT_SUPPORTED, "%s: attribute %d (%s) of a %s (%d) is not emulated", a.who, a.attr,
                attr_name(a.attr), type_name(a.d->type), a.d->type);
}
#define TRY(x) do { cudnnStatus_t st_ = (x); if (st_ != CUDNN_STATUS_SUCCESS) return st_; } while (0)

cudnnStatus_t set_tensor(const Args &a) {
    Tensor &t = a.d->t;
    switch (a.attr) {
    case CUDNN_ATTR_TENSOR_DATA_TYPE:
        TRY(want(a, CUDNN_TYPE_DATA_TYPE, 1)); t.type = *(const cudnnDataType_t *)a.arr; t.has_type = true; return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_TENSOR_DIMENSIONS:
        TRY(want(a, CUDNN_TYPE_INT64, 1, 8));
        t.dims.assign((const int64_t *)a.arr, (const int64_t *)a.arr + a.n); t.has_dims = true; return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_TENSOR_STRIDES:
        TRY(want(a, CUDNN_TYPE_INT64, 1, 8));
        t.strides.assign((const int64_t *)a.arr, (const int64_t *)a.arr + a.n); t.has_strides = true; return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_TENSOR_UNIQUE_ID:
        TRY(want(a, CUDNN_TYPE_INT64, 1)); t.uid = *(const int64_t *)a.arr; t.has_uid = true; return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT:
        TRY(want(a, CUDNN_TYPE_INT64, 1)); t.align = *(const int64_t *)a.arr; t.has_align = true; return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_TENSOR_IS_VIRTUAL:
        TRY(want(a, CUDNN_TYPE_BOOLEAN, 1)); t.is_virtual = *(const bool *)a.arr; return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_TENSOR_IS_BY_VALUE:
        TRY(want(a, CUDNN_TYPE_BOOLEAN, 1)); t.by_value = *(const bool *)a.arr; return CUDNN_STATUS_SUCCESS;
    default: return not_emulated(a);
    }
}
cudnnStatus_t set_sdpa(const Args &a) {   // a forward's or a backward's operand
    const Kind &k = *kind_of(a.d->type);
    int s = 0;
    while (s < NSLOT && !(k.attr[s] && k.attr[s] == a.attr)) s++;
    if (s == NSLOT) return not_emulated(a);   // the backward's SEQ_LEN_Q / SEQ_LEN_KV among them
    Desc *t;
    TRY(want(a, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1));
    TRY(desc_arg(a, 0, CUDNN_BACKEND_TENSOR_DESCRIPTOR, &t));
    a.d->slot[s] = ref(t);
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t set_graph(const Args &a) {
    Desc *op;
    switch (a.attr) {
    case CUDNN_ATTR_OPERATIONGRAPH_OPS:
        TRY(want(a, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, -1));
        if (a.n != 1)
            return FAIL(CUDNN_STATUS_NOT_SUPPORTED, "%s: CUDNN_ATTR_OPERATIONGRAPH_OPS: graphs of %lld operations are not "
                        "emulated (only one SDPA forward or backward)", a.who, (long long)a.n);
        TRY(desc_arg(a, 0, CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR, &op, CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR));
        a.d->op = ref(op);
        return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_OPERATIONGRAPH_HANDLE:
        TRY(want(a, CUDNN_TYPE_HANDLE, 1));
        return handle_arg(a, &a.d->handle);
    default: return not_emulated(a);
    }
}
cudnnStatus_t set_heur(const Args &a) {
    Desc *g;
    switch (a.attr) {
    case CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH:
        TRY(want(a, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1));
        TRY(desc_arg(a, 0, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &g));
        a.d->graph = ref(g);
        return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_ENGINEHEUR_MODE: {
        TRY(want(a, CUDNN_TYPE_HEUR_MODE, 1));
        int m = *(const cudnnBackendHeurMode_t *)a.arr;
        if (m < CUDNN_HEUR_MODE_INSTANT || m > CUDNN_HEUR_MODE_A) return BAD("%s: CUDNN_ATTR_ENGINEHEUR_MODE: no heuristic mode %d", a.who, m);
        a.d->mode = m;
        return CUDNN_STATUS_SUCCESS;
    }
    default: return not_emulated(a);
    }
}
cudnnStatus_t set_plan(const Args &a) {
    Desc *c;
    switch (a.attr) {
    case CUDNN_ATTR_EXECUTION_PLAN_HANDLE:
        TRY(want(a, CUDNN_TYPE_HANDLE, 1));
        return handle_arg(a, &a.d->handle);
    case CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG:
        TRY(want(a, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1));
        TRY(desc_arg(a, 0, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &c));
        a.d->cfg = ref(c);
        return CUDNN_STATUS_SUCCESS;
    default: return not_emulated(a);
    }
}
cudnnStatus_t set_pack(const Args &a) {
    switch (a.attr) {
    case CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS:
        TRY(want(a, CUDNN_TYPE_INT64, 0, -1));
        a.d->uids.assign((const int64_t *)a.arr, (const int64_t *)a.arr + a.n); a.d->has_uids = true; return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS:
        TRY(want(a, CUDNN_TYPE_VOID_PTR, 0, -1));
        a.d->ptrs.assign((void *const *)a.arr, (void *const *)a.arr + a.n); a.d->has_ptrs = true; return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_VARIANT_PACK_WORKSPACE:
        TRY(want(a, CUDNN_TYPE_VOID_PTR, 1));
        a.d->ws_ptr = *(void *const *)a.arr; a.d->has_ws = true; return CUDNN_STATUS_SUCCESS;
    default: return not_emulated(a);
    }
}

// ---- Finalize ----
cudnnStatus_t fin_tensor(const char *who, Desc *d) {
    Tensor &t = d->t;
    const char *missing = !t.has_type ? "CUDNN_ATTR_TENSOR_DATA_TYPE" : !t.has_dims ? "CUDNN_ATTR_TENSOR_DIMENSIONS"
                        : !t.has_strides ? "CUDNN_ATTR_TENSOR_STRIDES" : !t.has_uid ? "CUDNN_ATTR_TENSOR_UNIQUE_ID"
                        : !t.has_align ? "CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT" : nullptr;
    if (missing) return BAD("%s: a tensor without %s", who, missing);
    if (!elem_size(t.type)) return FAIL(CUDNN_STATUS_NOT_SUPPORTED, "%s: tensor uid %lld: data type %d is not emulated", who, (long long)t.uid, t.type);
    if (t.dims.size() != t.strides.size())
        return BAD("%s: tensor uid %lld has %zu dimensions but %zu strides", who, (long long)t.uid, t.dims.size(), t.strides.size());
    for (size_t i = 0; i < t.dims.size(); i++) {
        if (t.dims[i] <= 0) return BAD("%s: tensor uid %lld: dimension %zu is %lld (must be > 0)", who, (long long)t.uid, i, (long long)t.dims[i]);
        if (t.strides[i] <= 0) return BAD("%s: tensor uid %lld: stride %zu is %lld (must be > 0)", who, (long long)t.uid, i, (long long)t.strides[i]);
    }
    if (t.align <= 0 || (t.align & (t.align - 1)))
        return BAD("%s: tensor uid %lld: byte alignment %lld is not a power of 2", who, (long long)t.uid, (long long)t.align);
    if (t.is_virtual && t.by_value) return BAD("%s: tensor uid %lld is both virtual and by-value", who, (long long)t.uid);
    return CUDNN_STATUS_SUCCESS;
}

Geo geo(const Tensor &t) {
    Geo g{};
    g.type = t.type;
    int64_t span = 0;
    for (int i = 0; i < 4; i++) { g.d[i] = t.dims[i]; g.s[i] = t.strides[i]; span += (t.dims[i] - 1) * t.strides[i]; }
    g.uid = t.uid; g.align = t.align; g.bytes = (span + 1) * elem_size(t.type);
    g.is_virtual = t.is_virtual; g.by_value = t.by_value;
    return g;
}
bool dims_are(const Geo &g, int64_t a, int64_t b, int64_t c, int64_t d) { return g.d[0] == a && g.d[1] == b && g.d[2] == c && g.d[3] == d; }
const char *dtype_name(int t) {
    return t == CUDNN_DATA_FLOAT ? "float" : t == CUDNN_DATA_HALF ? "fp16" : t == CUDNN_DATA_BFLOAT16 ? "bf16" : "another type";
}

// the dimensions slot s (not Scale) must have (slot_shape[s]), from the sizes Q, K and V give
void expected(const Prob &p, int s, int64_t e[4]) {
    const bool kv = s == SK || s == SV || s == SDK || s == SDV, dv = s == SV || s == SO || s == SDO || s == SDV;
    e[0] = p.B; e[1] = kv ? p.Hk : p.H; e[2] = kv ? p.M : p.T; e[3] = s == SSTATS ? 1 : dv ? p.Dv : p.D;
}

// an SDPA forward or backward: its operands' shapes, types and ids
cudnnStatus_t fin_sdpa(const char *who, Desc *d) {
    const Kind &k = *kind_of(d->type);
    Prob p{};
    p.kind = (int)(&k - kinds);
    for (int s = 0; s < NSLOT; s++) {
        if (!k.attr[s]) continue;   // not an operand of this kind
        if (!d->slot[s].p) {
            if (k.required[s]) return BAD("%s: an %s without %s", who, k.name, attr_name(k.attr[s]));
            continue;
        }
        Desc *t = resolve(d->slot[s]);
        if (!t) {
            char what[64];
            snprintf(what, sizeof what, "%s tensor descriptor", slot_name[s]);
            return gone(who, what);
        }
        if (t->t.dims.size() != 4)
            return BAD("%s: %s %s has %zu dimensions, it takes 4", who, k.name, slot_name[s], t->t.dims.size());
        p.g[s] = geo(t->t);
        p.has[s] = true;
    }
    p.B = p.g[SQ].d[0]; p.H = p.g[SQ].d[1]; p.T = p.g[SQ].d[2]; p.D = p.g[SQ].d[3];
    p.Hk = p.g[SK].d[1]; p.M = p.g[SK].d[2]; p.Dv = p.g[SV].d[3];
    p.type = p.g[SQ].type;
    for (int s = 0; s < NSLOT; s++) {
        if (!p.has[s] || !is_data(s)) continue;
        const Geo &g = p.g[s];
        if (g.type != p.type)
            return BAD("%s: %s %s is %s (%d) but Q is %s (%d): %s take one data type", who, k.name, slot_name[s],
                       dtype_name(g.type), g.type, dtype_name(p.type), p.type, k.data);
        if (g.by_value) return BAD("%s: %s %s is a by-value tensor", who, k.name, slot_name[s]);
        if (g.s[3] != 1)
            return BAD("%s: %s %s's last dimension has stride %lld (must be 1)", who, k.name, slot_name[s], (long long)g.s[3]);
    }
    if (p.type != CUDNN_DATA_BFLOAT16 && p.type != CUDNN_DATA_HALF)
        return BAD("%s: %s %s are %s (%d): the %s takes bf16 or fp16", who, k.name, k.data, dtype_name(p.type), p.type, k.name);
    for (int s = 0; s < NSLOT; s++) {
        if (!p.has[s] || s == SSCALE) continue;
        int64_t e[4];
        expected(p, s, e);
        const Geo &g = p.g[s];
        if (!dims_are(g, e[0], e[1], e[2], e[3]))
            return BAD("%s: %s %s is [%lld, %lld, %lld, %lld], must be %s = [%lld, %lld, %lld, %lld] (Q [B, H, T, D], "
                       "K [B, Hk, M, D], V [B, Hk, M, Dv])", who, k.name, slot_name[s], (long long)g.d[0], (long long)g.d[1],
                       (long long)g.d[2], (long long)g.d[3], slot_shape[s], (long long)e[0], (long long)e[1], (long long)e[2],
                       (long long)e[3]);
    }
    if (p.H % p.Hk)
        return BAD("%s: %s Q has %lld heads, K and V %lld: not a multiple", who, k.name, (long long)p.H, (long long)p.Hk);
    if (p.has[SSTATS]) {
        const Geo &g = p.g[SSTATS];
        if (g.type != CUDNN_DATA_FLOAT) return BAD("%s: %s Stats is %s (%d): it must be float", who, k.name, dtype_name(g.type), g.type);
        if (g.by_value) return BAD("%s: %s Stats is a by-value tensor", who, k.name);
    }
    if (p.has[SSCALE]) {
        const Geo &g = p.g[SSCALE];
        if (g.type != CUDNN_DATA_FLOAT) return BAD("%s: %s Scale is %s (%d): it must be float", who, k.name, dtype_name(g.type), g.type);
        if (!dims_are(g, 1, 1, 1, 1)) return BAD("%s: %s Scale must be [1, 1, 1, 1]", who, k.name);
        if (!g.by_value) return BAD("%s: %s Scale must be a by-value tensor (CUDNN_ATTR_TENSOR_IS_BY_VALUE)", who, k.name);
    }
    for (int i = 0; i < NSLOT; i++)
        for (int j = i + 1; j < NSLOT; j++)
            if (p.has[i] && p.has[j] && p.g[i].uid == p.g[j].uid)
                return BAD("%s: %s %s and %s share unique id %lld", who, k.name, slot_name[i], slot_name[j], (long long)p.g[i].uid);
    d->prob = p;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t fin_graph(const char *who, Desc *d) {
    if (!d->op.p) return BAD("%s: an operation graph without CUDNN_ATTR_OPERATIONGRAPH_OPS", who);
    if (!d->handle) return BAD("%s: an operation graph without CUDNN_ATTR_OPERATIONGRAPH_HANDLE", who);
    Desc *op = resolve(d->op);
    if (!op) return gone(who, "SDPA operation");
    const Prob &p = op->prob;
    const Kind &k = kinds[p.kind];
    for (int s = 0; s < NSLOT; s++)
        if (p.has[s] && p.g[s].is_virtual)
            return BAD("%s: %s %s (uid %lld) is virtual, but in a one-operation graph nothing %s it", who, k.name, slot_name[s],
                       (long long)p.g[s].uid, k.output[s] ? "consumes" : "produces");
    return CUDNN_STATUS_SUCCESS;
}

bool env_on(const char *name) { const char *s = getenv(name); return s && *s && *s != '0'; }

cudnnStatus_t fin_heur(const char *who, Desc *d) {
    if (!d->graph.p) return BAD("%s: heuristics without CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH", who);
    if (d->mode < 0) return BAD("%s: heuristics without CUDNN_ATTR_ENGINEHEUR_MODE", who);
    Desc *g = resolve(d->graph), *op;
    if (!g) return gone(who, "operation graph");
    if (!(op = resolve(g->op))) return gone(who, "SDPA operation");
    // EMU_CUDNN_NO_SDPA=1: no engine takes the graph; EMU_CUDNN_NO_SDPA_BWD=1: none takes a backward
    // (a cuDNN with a forward engine but no backward one for the shape)
    // (EMU_CUDNN_SDPA_BWD_NONDET_ONLY=1: the backward's engines 0 and 1, not the deterministic 2)
    const Kind &k = kinds[op->prob.kind];
    d->kind = op->prob.kind;
    if (env_on("EMU_CUDNN_NO_SDPA") || (k.no_engine_env && env_on(k.no_engine_env))) d->nconfigs = 0;
    else if (d->kind == BWD) d->nconfigs = env_on("EMU_CUDNN_SDPA_BWD_NONDET_ONLY") ? 2 : 3;
    else d->nconfigs = 2;
    return CUDNN_STATUS_SUCCESS;
}

// the plan's (or an execution's) engine config, graph and operation, all still alive
cudnnStatus_t chain(const char *who, const Desc *plan, Desc **cfg, Desc **op) {
    if (!(*cfg = resolve(plan->cfg))) return gone(who, "engine config");
    Desc *g = resolve((*cfg)->graph);
    if (!g) return gone(who, "operation graph");
    if (!(*op = resolve(g->op))) return gone(who, "SDPA operation");
    for (int s = 0; s < NSLOT; s++)
        if ((*op)->slot[s].p && !resolve((*op)->slot[s])) {
            char what[64];
            snprintf(what, sizeof what, "SDPA %s tensor descriptor", slot_name[s]);
            return gone(who, what);
        }
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t fin_plan(const char *who, Desc *d) {
    if (cudaError_t e = emu_unsafe())
        return FAIL(CUDNN_STATUS_INTERNAL_ERROR, "%s: an execution plan is built (compiled, its memory allocated) while "
                    "this thread captures a CUDA graph: CUDA error %d, the capture is invalidated", who, (int)e);
    if (!d->handle) return BAD("%s: an execution plan without CUDNN_ATTR_EXECUTION_PLAN_HANDLE", who);
    if (!d->cfg.p) return BAD("%s: an execution plan without CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG", who);
    Desc *cfg, *op;
    TRY(chain(who, d, &cfg, &op));
    if (cfg->engine == 0)
        return FAIL(CUDNN_STATUS_NOT_SUPPORTED, "%s: engine 0 does not take this %s graph (as some real engines refuse some)", who,
                    kinds[op->prob.kind].name);
    const Prob &p = op->prob;
    if (p.D % 8 || p.D > 256 || p.Dv % 8 || p.Dv > 256)
        return FAIL(CUDNN_STATUS_NOT_SUPPORTED, "%s: %s head sizes D = %lld, Dv = %lld: the engines take multiples of 8 "
                    "up to 256", who, kinds[p.kind].name, (long long)p.D, (long long)p.Dv);
    // 64 bytes per (b, h); the backward's fp32 dQ accumulator [B, H, T, D] before them
    d->ws = (p.kind == BWD ? 4 * p.B * p.H * p.T * p.D : 0) + 64 * p.B * p.H;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t fin_pack(const char *who, Desc *d) {
    if (!d->has_uids) return BAD("%s: a variant pack without CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS", who);
    if (!d->has_ptrs) return BAD("%s: a variant pack without CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS", who);
    if (d->uids.size() != d->ptrs.size())
        return BAD("%s: a variant pack with %zu unique ids but %zu data pointers", who, d->uids.size(), d->ptrs.size());
    return CUDNN_STATUS_SUCCESS;
}

// ---- the math ----
float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    if (e == 0) {   // zero or subnormal: m 2^-24
        float f = ldexpf((float)m, -24);
        return sign ? -f : f;
    }
    u = e == 31 ? sign | 0x7f800000u | (m << 13) : sign | ((e + 112) << 23) | (m << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
uint16_t float_to_half(float f) {   // round to nearest even
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return sign | 0x7e00u;                 // NaN
    if (u >= 0x477ff000u) return sign | 0x7c00u;                // >= 65520 rounds to infinity
    if (u < 0x38800000u) return sign | (uint16_t)nearbyintf(fabsf(f) * 16777216.0f);   // subnormal: units of 2^-24
    u += 0xfffu + ((u >> 13) & 1u);
    return sign | (uint16_t)((u >> 13) - (112u << 10));
}
float ld(const void *base, int type, int64_t i) {
    return type == CUDNN_DATA_BFLOAT16 ? emu_bf16_to_float(((const __nv_bfloat16 *)base)[i])
                                       : half_to_float(((const uint16_t *)base)[i]);
}
void st(void *base, int type, int64_t i, float v) {
    if (type == CUDNN_DATA_BFLOAT16) ((__nv_bfloat16 *)base)[i] = __float2bfloat16_rn(v);
    else ((uint16_t *)base)[i] = float_to_half(v);
}
float storage_round(int type, float v) {
    return type == CUDNN_DATA_BFLOAT16 ? emu_bf16_to_float(__float2bfloat16_rn(v)) : half_to_float(float_to_half(v));
}
int64_t off(const Geo &g, int64_t a, int64_t b, int64_t c, int64_t d) { return a * g.s[0] + b * g.s[1] + c * g.s[2] + d * g.s[3]; }

typedef std::array<void *, NSLOT> Ptrs;   // the variant pack's pointers, by slot (NULL: not in the graph)

// the forward: O (and Stats) from Q, K, V
void sdpa_fwd(const Prob &p, const Ptrs &ptr, float scale, char *ws) {
    const Geo &gq = p.g[SQ], &gk = p.g[SK], &gv = p.g[SV], &go = p.g[SO], &gs = p.g[SSTATS];
    const void *q = ptr[SQ], *k = ptr[SK], *v = ptr[SV];
    void *o = ptr[SO];
    float *stats = (float *)ptr[SSTATS];
    int64_t group = p.H / p.Hk;
    std::vector<float> s(p.M), pr(p.M);
    for (int64_t b = 0; b < p.B; b++)
        for (int64_t h = 0; h < p.H; h++) {
            int64_t hk = h / group;
            float *blk = (float *)(ws + 64 * (b * p.H + h));   // this (b, h)'s 16 floats of workspace
            for (int64_t t = 0; t < p.T; t++) {
                float m = -INFINITY;
                for (int64_t j = 0; j < p.M; j++) {
                    float acc = 0.0f;
                    for (int64_t d = 0; d < p.D; d++)
                        acc += ld(q, p.type, off(gq, b, h, t, d)) * ld(k, p.type, off(gk, b, hk, j, d));
                    s[j] = scale * acc;
                    m = std::max(m, s[j]);
                }
                float l = 0.0f;
                for (int64_t j = 0; j < p.M; j++) l += expf(s[j] - m);
                for (int64_t j = 0; j < p.M; j++) pr[j] = storage_round(p.type, expf(s[j] - m) / l);
                for (int64_t e = 0; e < p.Dv; e++) {
                    float acc = 0.0f;
                    for (int64_t j = 0; j < p.M; j++) acc += pr[j] * ld(v, p.type, off(gv, b, hk, j, e));
                    st(o, p.type, off(go, b, h, t, e), acc);
                }
                if (stats) stats[off(gs, b, h, t, 0)] = m + logf(l);
                if (ws && t < 16) blk[t] = m;   // the workspace is used: one overlapping the data shows
            }
        }
}

// the backward (flash attention's): dQ, dK, dV from Q, K, V, O, dO and the forward's Stats. fp32
// from the stored values: p = exp(scale q.k - stats), delta = dO.O, dS = p (dO.v - delta); p and dS
// rounded to the storage type before their products (as tensor cores take them); dV = sum p dO,
// dK = scale sum dS q (over the group's query heads and all t, in host fp32), dQ = scale sum dS k
// (in the workspace's fp32 accumulator, zeroed first); each output element stored once at the end.
void sdpa_bwd(const Prob &p, const Ptrs &ptr, float scale, char *ws) {
    const Geo &gq = p.g[SQ], &gk = p.g[SK], &gv = p.g[SV], &go = p.g[SO], &gs = p.g[SSTATS], &gdo = p.g[SDO];
    const void *q = ptr[SQ], *k = ptr[SK], *v = ptr[SV], *o = ptr[SO], *dout = ptr[SDO];
    const float *stats = (const float *)ptr[SSTATS];
    int64_t group = p.H / p.Hk, B = p.B, H = p.H, Hk = p.Hk, T = p.T, M = p.M, D = p.D, Dv = p.Dv;
    float *dq = (float *)ws;                             // [B, H, T, D], contiguous
    float *tail = (float *)(ws + 4 * B * H * T * D);     // 16 floats per (b, h)
    memset(dq, 0, (size_t)(4 * B * H * T * D));
    std::vector<float> dk((size_t)(B * Hk * M * D), 0.0f), dv((size_t)(B * Hk * M * Dv), 0.0f), qrow(D), dorow(Dv);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            int64_t hk = h / group;
            for (int64_t t = 0; t < T; t++) {
                for (int64_t d = 0; d < D; d++) qrow[d] = ld(q, p.type, off(gq, b, h, t, d));
                float delta = 0.0f;
                for (int64_t e = 0; e < Dv; e++) {
                    dorow[e] = ld(dout, p.type, off(gdo, b, h, t, e));
                    delta += dorow[e] * ld(o, p.type, off(go, b, h, t, e));
                }
                float lse = stats[off(gs, b, h, t, 0)];
                float *dqr = dq + ((b * H + h) * T + t) * D;
                for (int64_t j = 0; j < M; j++) {
                    float sc = 0.0f, dp = 0.0f;
                    for (int64_t d = 0; d < D; d++) sc += qrow[d] * ld(k, p.type, off(gk, b, hk, j, d));
                    float pj = expf(scale * sc - lse);
                    for (int64_t e = 0; e < Dv; e++) dp += dorow[e] * ld(v, p.type, off(gv, b, hk, j, e));
                    float pr = storage_round(p.type, pj), ds = storage_round(p.type, pj * (dp - delta));
                    float *dvr = &dv[(size_t)(((b * Hk + hk) * M + j) * Dv)], *dkr = &dk[(size_t)(((b * Hk + hk) * M + j) * D)];
                    for (int64_t e = 0; e < Dv; e++) dvr[e] += pr * dorow[e];
                    for (int64_t d = 0; d < D; d++) {
                        dkr[d] += ds * qrow[d];
                        dqr[d] += ds * ld(k, p.type, off(gk, b, hk, j, d));
                    }
                }
                if (t < 16) tail[(b * H + h) * 16 + t] = delta;   // used: a workspace overlapping the data shows
            }
        }
    for (int64_t b = 0; b < B; b++) {
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t d = 0; d < D; d++) st(ptr[SDQ], p.type, off(p.g[SDQ], b, h, t, d), scale * dq[((b * H + h) * T + t) * D + d]);
        for (int64_t hk = 0; hk < Hk; hk++)
            for (int64_t j = 0; j < M; j++) {
                for (int64_t d = 0; d < D; d++)
                    st(ptr[SDK], p.type, off(p.g[SDK], b, hk, j, d), scale * dk[(size_t)(((b * Hk + hk) * M + j) * D + d)]);
                for (int64_t e = 0; e < Dv; e++)
                    st(ptr[SDV], p.type, off(p.g[SDV], b, hk, j, e), dv[(size_t)(((b * Hk + hk) * M + j) * Dv + e)]);
            }
    }
}

cudnnStatus_t execute(cudnnHandle_t handle, Desc *plan, Desc *pack) {
    const char *who = "cudnnBackendExecute";
    Desc *cfg, *op;
    TRY(chain(who, plan, &cfg, &op));
    const Prob p = op->prob;
    const Kind &k = kinds[p.kind];
    Ptrs ptr{};
    bool found[NSLOT] = {};
    for (size_t i = 0; i < pack->uids.size(); i++) {
        int s = 0;
        while (s < NSLOT && !(p.has[s] && p.g[s].uid == pack->uids[i])) s++;
        if (s == NSLOT) return BAD("%s: the variant pack names uid %lld, which is no tensor of the graph", who, (long long)pack->uids[i]);
        if (found[s]) return BAD("%s: the variant pack names uid %lld twice", who, (long long)pack->uids[i]);
        found[s] = true;
        ptr[s] = pack->ptrs[i];
    }
    float scale = 1.0f;   // no Scale tensor: scores are not scaled
    for (int s = 0; s < NSLOT; s++) {
        if (!p.has[s]) continue;
        const Geo &g = p.g[s];
        if (!found[s])
            return BAD("%s: the variant pack lacks uid %lld (%s %s)", who, (long long)g.uid, k.name, slot_name[s]);
        if (g.by_value) {
            if (!ptr[s] || emu_is_device(ptr[s]))
                return BAD("%s: uid %lld (%s %s) is by-value: its pointer %p must be host memory holding the value", who,
                           (long long)g.uid, k.name, slot_name[s], ptr[s]);
            scale = *(const float *)ptr[s];
            ptr[s] = nullptr;   // read here, at the call
            continue;
        }
        if (!emu_dev_range(ptr[s], (size_t)g.bytes))
            return BAD("%s: uid %lld (%s %s): %p is not device memory of the tensor's %lld bytes", who, (long long)g.uid,
                       k.name, slot_name[s], ptr[s], (long long)g.bytes);
        if ((uintptr_t)ptr[s] % (uintptr_t)g.align)
            return FAIL(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER, "%s: uid %lld (%s %s): %p is not aligned to the "
                        "tensor's byte alignment %lld", who, (long long)g.uid, k.name, slot_name[s], ptr[s], (long long)g.align);
    }
    size_t ws_n = (size_t)plan->ws;
    void *ws = pack->has_ws ? pack->ws_ptr : nullptr;
    if (ws_n && !emu_dev_range(ws, ws_n))
        return BAD("%s: the plan needs %zu bytes of device workspace, the variant pack gives %p (not device memory of "
                   "that size)", who, ws_n, ws);
    cudaError_t e = emu_enqueue(handle->st, [=]() {
        emu_dev_access acc;
        if (ws_n) memset(ws, 0xff, ws_n);   // NaN: a workspace overlapping the inputs shows
        if (p.kind == BWD) sdpa_bwd(p, ptr, scale, (char *)ws);
        else sdpa_fwd(p, ptr, scale, (char *)ws);
    });
    if (e)
        return FAIL(CUDNN_STATUS_EXECUTION_FAILED, "%s: the handle's stream took no work (CUDA error %d: another stream "
                    "than the capturing one?)", who, (int)e);
    return CUDNN_STATUS_SUCCESS;
}

}  // namespace

// ---- the API ----
cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *out) {
    const char *who = "cudnnBackendCreateDescriptor";
    if (!out) return BAD("%s: descriptor is NULL", who);
    switch (type) {
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR: case CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR: case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR: case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR:
    case CUDNN_BACKEND_ENGINECFG_DESCRIPTOR: case CUDNN_BACKEND_ENGINE_DESCRIPTOR: case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR:
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR: break;
    default:
        *out = nullptr;
        return FAIL(CUDNN_STATUS_NOT_SUPPORTED, "%s: descriptor type %d (%s) is not emulated", who, (int)type, type_name(type));
    }
    Desc *d = new Desc;
    d->type = type;
    std::lock_guard<std::mutex> g(reg_mu);
    d->serial = next_serial++;
    live[d] = d->serial;
    *out = d;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t desc) {
    if (!desc) return CUDNN_STATUS_SUCCESS;
    {
        std::lock_guard<std::mutex> g(reg_mu);
        if (!live.erase(desc)) {
            fprintf(stderr, "emu: cuDNN: cudnnBackendDestroyDescriptor: %p is not a live backend descriptor (destroyed twice?)\n", desc);
            return CUDNN_STATUS_BAD_PARAM;
        }
    }
    delete (Desc *)desc;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t desc, cudnnBackendAttributeName_t attr,
                                       cudnnBackendAttributeType_t type, int64_t n, const void *arr) {
    const char *who = "cudnnBackendSetAttribute";
    Desc *d = lookup(desc);
    if (!d) return not_live(who, desc);
    if (d->finalized)
        return BAD("%s: %s (%d) on a finalized %s (attributes are set before cudnnBackendFinalize)", who, attr_name(attr),
                   (int)attr, type_name(d->type));
    if (n < 0) return BAD("%s: %s (%d): elementCount %lld", who, attr_name(attr), (int)attr, (long long)n);
    Args a{who, d, (int)attr, (int)type, n, arr};
    switch (d->type) {
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR: return set_tensor(a);
    case CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR: case CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR: return set_sdpa(a);
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR: return set_graph(a);
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR: return set_heur(a);
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR: return set_plan(a);
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR: return set_pack(a);
    default: return not_emulated(a);   // ENGINECFG, ENGINE: made by hand they are not emulated (they come from the heuristics)
    }
}

cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t desc) {
    const char *who = "cudnnBackendFinalize";
    Desc *d = lookup(desc);
    if (!d) return not_live(who, desc);
    if (d->finalized) return BAD("%s: the %s is already finalized", who, type_name(d->type));
    cudnnStatus_t st;
    switch (d->type) {
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR: st = fin_tensor(who, d); break;
    case CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR: case CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR: st = fin_sdpa(who, d); break;
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR: st = fin_graph(who, d); break;
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR: st = fin_heur(who, d); break;
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR: st = fin_plan(who, d); break;
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR: st = fin_pack(who, d); break;
    default:
        st = FAIL(CUDNN_STATUS_NOT_SUPPORTED, "%s: a %s made by hand is not emulated (engine configs come from "
                  "CUDNN_ATTR_ENGINEHEUR_RESULTS, engines from CUDNN_ATTR_ENGINECFG_ENGINE, already finalized)", who,
                  type_name(d->type));
    }
    if (st == CUDNN_STATUS_SUCCESS) d->finalized = true;
    return st;
}

cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const desc, cudnnBackendAttributeName_t attr,
                                       cudnnBackendAttributeType_t type, int64_t req, int64_t *count, void *arr) {
    const char *who = "cudnnBackendGetAttribute";
    Desc *d = lookup(desc);
    if (!d) return not_live(who, desc);
    Args a{who, d, (int)attr, (int)type, req, arr};
    bool known = (d->type == CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR && attr == CUDNN_ATTR_ENGINEHEUR_RESULTS) ||
                 (d->type == CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR && attr == CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE) ||
                 (d->type == CUDNN_BACKEND_ENGINECFG_DESCRIPTOR && attr == CUDNN_ATTR_ENGINECFG_ENGINE) ||
                 (d->type == CUDNN_BACKEND_ENGINE_DESCRIPTOR &&
                  (attr == CUDNN_ATTR_ENGINE_GLOBAL_INDEX || attr == CUDNN_ATTR_ENGINE_NUMERICAL_NOTE));
    if (!known) return not_emulated(a);
    if (!d->finalized)
        return FAIL(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, "%s: %s (%d) of a %s that is not finalized", who, attr_name(attr),
                    (int)attr, type_name(d->type));
    if (!count) return BAD("%s: %s (%d): elementCount is NULL", who, attr_name(attr), (int)attr);
    if (req < 0) return BAD("%s: %s (%d): requestedElementCount %lld", who, attr_name(attr), (int)attr, (long long)req);
    if (req > 0 && !arr) return BAD("%s: %s (%d): arrayOfElements is NULL", who, attr_name(attr), (int)attr);
    int want_type = attr == CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE || attr == CUDNN_ATTR_ENGINE_GLOBAL_INDEX ? CUDNN_TYPE_INT64
                  : attr == CUDNN_ATTR_ENGINE_NUMERICAL_NOTE ? CUDNN_TYPE_NUMERICAL_NOTE : CUDNN_TYPE_BACKEND_DESCRIPTOR;
    if (type != want_type)
        return BAD("%s: %s (%d) is %s (%d), not %s (%d)", who, attr_name(attr), (int)attr, attr_type_name(want_type), want_type,
                   attr_type_name(type), (int)type);
    switch (attr) {
    case CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE:
        if (req >= 1) *(int64_t *)arr = d->ws;
        *count = 1;
        return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_ENGINE_GLOBAL_INDEX:
        if (req >= 1) *(int64_t *)arr = d->engine;
        *count = 1;
        return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_ENGINE_NUMERICAL_NOTE: {   // up to req notes; count: how many the engine has
        const Engine &e = engine_of(d->kind, d->engine);
        for (int64_t i = 0; i < std::min<int64_t>(req, e.nnotes); i++) ((cudnnBackendNumericalNote_t *)arr)[i] = e.notes[i];
        *count = e.nnotes;
        return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_ATTR_ENGINECFG_ENGINE: {   // fills the caller's engine descriptor (created, finalized or not)
        if (req != 1) return BAD("%s: CUDNN_ATTR_ENGINECFG_ENGINE takes 1 element, not %lld", who, (long long)req);
        void *e = *(cudnnBackendDescriptor_t *)arr;
        Desc *ed = lookup(e);
        if (!ed) return BAD("%s: CUDNN_ATTR_ENGINECFG_ENGINE: %p is not a live backend descriptor (create a "
                            "CUDNN_BACKEND_ENGINE_DESCRIPTOR for it to fill)", who, e);
        if (ed->type != CUDNN_BACKEND_ENGINE_DESCRIPTOR)
            return BAD("%s: CUDNN_ATTR_ENGINECFG_ENGINE fills a CUDNN_BACKEND_ENGINE_DESCRIPTOR, not a %s (%d)", who,
                       type_name(ed->type), ed->type);
        if (!resolve(d->graph)) return gone(who, "operation graph");
        ed->kind = d->kind;
        ed->engine = d->engine;
        ed->finalized = true;
        *count = 1;
        return CUDNN_STATUS_SUCCESS;
    }
    default: break;
    }
    // the heuristics' results: fills the caller's engine-config descriptors
    if (req == 0) { *count = d->nconfigs; return CUDNN_STATUS_SUCCESS; }
    if (!resolve(d->graph)) return gone(who, "operation graph");
    int64_t n = std::min<int64_t>(req, d->nconfigs);
    for (int64_t i = 0; i < n; i++) {
        void *c = ((cudnnBackendDescriptor_t *)arr)[i];
        Desc *cd = lookup(c);
        if (!cd || cd->type != CUDNN_BACKEND_ENGINECFG_DESCRIPTOR)
            return BAD("%s: CUDNN_ATTR_ENGINEHEUR_RESULTS: element %lld (%p) is not a live CUDNN_BACKEND_ENGINECFG_DESCRIPTOR",
                       who, (long long)i, c);
    }
    for (int64_t i = 0; i < n; i++) {
        Desc *cd = (Desc *)((cudnnBackendDescriptor_t *)arr)[i];
        cd->graph = d->graph;
        cd->kind = d->kind;
        cd->engine = (int)i;   // its engine (engine_of): 0 refused by the plan, the others run
        cd->finalized = true;
    }
    *count = n;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendExecute(cudnnHandle_t handle, cudnnBackendDescriptor_t plan, cudnnBackendDescriptor_t pack) {
    const char *who = "cudnnBackendExecute";
    if (!emu_cudnn_handle_ok(handle)) return BAD("%s: %p is not a handle from cudnnCreate", who, (void *)handle);
    Desc *pl = lookup(plan), *pk = lookup(pack);
    if (!pl) return not_live(who, plan);
    if (!pk) return not_live(who, pack);
    if (pl->type != CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR)
        return BAD("%s: executionPlan is a %s (%d)", who, type_name(pl->type), pl->type);
    if (pk->type != CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)
        return BAD("%s: variantPack is a %s (%d)", who, type_name(pk->type), pk->type);
    if (!pl->finalized) return FAIL(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, "%s: the execution plan is not finalized", who);
    if (!pk->finalized) return FAIL(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, "%s: the variant pack is not finalized", who);
    return execute(handle, pl, pk);
}

// nccl.cu — loading NCCL at run time, and sao's collectives over lists of device tensors through
// it (sao_nccl.h): the GPU twin of runtime/comm.c.
//
// libsao_cuda.so is not linked against NCCL (a single-GPU machine may have none, and a missing
// library must never stop the backend from loading). The first call that wants it dlopens
// $SAO_NCCL_LIB, else "libnccl.so.2", takes the functions of SAO_NCCL_FUNCS with dlsym and checks
// that ncclGetVersion says 2.10 or newer (ncclAvg). A failure is remembered as a sentence that
// every later call reports. The library stays loaded for the life of the process.
//
// A collective over a list: the tensors are packed, in list order, into one staging buffer of the
// communicator (world * chunk floats, chunk = ceil(total / world): sao_comm_shard's shards at
// rank * chunk, so reduce-scatter and all-gather run in place with equal chunks; the tail past
// `total` is zeroed), ONE in-place NCCL collective runs over it, and the results are copied back.
// Copies and the collective are queued on sao_cuda_stream(), so they are ordered with every kernel
// around them and nothing here waits for the device.
#include "cuda_internal.h"
extern "C" {
#include "cuda_glue.h"
#include "sao_comm.h"
#include "sao_cuda.h"
#include "sao_nccl.h"
}
#include <nccl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <new>

#ifdef SAO_NCCL_LINKED
// The emulated backend (spec/support/cuda_emu): its fake NCCL is linked in; these stand-ins of
// dlopen / dlsym / dlerror (declared by the fake nccl.h) find its functions by name, and fail as
// dlopen does for a missing path or with EMU_NO_NCCL=1.
#define LIB_OPEN(path) emu_nccl_open(path)
#define LIB_SYM(lib, name) emu_nccl_sym(lib, name)
#define LIB_ERROR() emu_nccl_error()
#else
#include <dlfcn.h>
#define LIB_OPEN(path) dlopen(path, RTLD_NOW | RTLD_LOCAL)
#define LIB_SYM(lib, name) dlsym(lib, name)
#define LIB_ERROR() dlerror()
#endif

static_assert(sizeof(ncclUniqueId) == SAO_NCCL_ID_BYTES, "sao_nccl.h's ids are NCCL_UNIQUE_ID_BYTES long");

// The functions sao calls, each once; the table's fields are named as the functions.
#define SAO_NCCL_FUNCS(X)                                                                          \
    X(ncclGetVersion) X(ncclGetErrorString) X(ncclGetUniqueId) X(ncclCommInitRank)                 \
    X(ncclCommDestroy) X(ncclCommAbort) X(ncclAllReduce) X(ncclReduceScatter) X(ncclAllGather)     \
    X(ncclBroadcast)

namespace {

struct nccl_api {
#define SAO_NCCL_FIELD(name) decltype(&::name) name;
    SAO_NCCL_FUNCS(SAO_NCCL_FIELD)
#undef SAO_NCCL_FIELD
    const char *(*ncclGetLastError)(ncclComm_t);   // NCCL 2.13 and newer: NULL before
};

const int MIN_VERSION = 21000;   // 2.10.0: ncclAvg
nccl_api api;                    // filled once by load()
bool loaded;                     // api is complete and the version new enough
int version;                     // ncclGetVersion's code (22809 for 2.28.9)
char load_why[1024];             // when not loaded: why
pthread_once_t once = PTHREAD_ONCE_INIT;

void load() {
    const char *env = getenv("SAO_NCCL_LIB");
    const char *path = env && *env ? env : "libnccl.so.2";
    void *lib = LIB_OPEN(path);
    if (!lib) {
        const char *e = LIB_ERROR();
        snprintf(load_why, sizeof load_why, "NCCL: cannot load %s (%s): install NCCL (2.10 or newer) or set "
                 "SAO_NCCL_LIB to its libnccl.so.2", path, e ? e : "no reason given");
        return;
    }
#define SAO_NCCL_LOAD(name)                                                                        \
    api.name = (decltype(api.name))LIB_SYM(lib, #name);                                           \
    if (!api.name) {                                                                               \
        snprintf(load_why, sizeof load_why, "NCCL at %s has no %s (sao needs NCCL 2.10 or newer: "  \
                 "set SAO_NCCL_LIB to a newer libnccl.so.2)", path, #name);                        \
        return;                                                                                    \
    }
    SAO_NCCL_FUNCS(SAO_NCCL_LOAD)
#undef SAO_NCCL_LOAD
    api.ncclGetLastError = (const char *(*)(ncclComm_t))LIB_SYM(lib, "ncclGetLastError");
    int v = 0;
    if (api.ncclGetVersion(&v) != ncclSuccess || v < MIN_VERSION) {
        // codes before 2.9 were X*1000 + Y*100 + Z, since then X*10000 + Y*100 + Z
        int major = v >= 10000 ? v / 10000 : v / 1000, minor = v >= 10000 ? v / 100 % 100 : v / 100 % 10;
        snprintf(load_why, sizeof load_why, "NCCL at %s is version %d.%d.%d (code %d); sao needs 2.10 or newer "
                 "(for ncclAvg): set SAO_NCCL_LIB to a newer libnccl.so.2", path, major, minor, v % 100, v);
        return;
    }
    version = v;
    loaded = true;   // never dlclosed
}

// The loaded API, or NULL with a sao error saying why not.
const nccl_api *nccl(sao_ctx *ctx, const char *op) {
    pthread_once(&once, load);
    if (!loaded) return (const nccl_api *)sao_err_null(ctx, op, "%s", load_why);
    return &api;
}

// An NCCL status as a sao error: file:line, the call, NCCL's words (and its last message when it
// has ncclGetLastError), a hint by kind.
int nccl_fail(sao_ctx *ctx, const char *op, ncclComm_t comm, ncclResult_t st, const char *file, int line,
              const char *call) {
    const char *hint;
    switch (st) {
    case ncclUnhandledCudaError: hint = "a CUDA call inside NCCL failed: is the GPU healthy? check nvidia-smi"; break;
    case ncclSystemError: hint = "a system call or the network failed; NCCL_DEBUG=WARN prints NCCL's account"; break;
    case ncclRemoteError: hint = "another rank failed or went away: abort this communicator"; break;
    case ncclInvalidArgument:
    case ncclInvalidUsage:
        hint = "every rank must run the same collectives over the same shapes; NCCL_DEBUG=WARN says more"; break;
    default: hint = "NCCL_DEBUG=WARN prints NCCL's account"; break;
    }
    const char *last = api.ncclGetLastError ? api.ncclGetLastError(comm) : NULL;
    return sao_err(ctx, op, "%s:%d: %s: %s (status %d%s%s); %s", file, line, call, api.ncclGetErrorString(st),
                   (int)st, last && *last ? ": " : "", last && *last ? last : "", hint);
}

}  // namespace

#define NCCL_TRY(ctx, op, comm, call)                                                              \
    do {                                                                                           \
        ncclResult_t st_ = api.call;                                                               \
        if (st_ != ncclSuccess) return nccl_fail(ctx, op, comm, st_, __FILE__, __LINE__, #call);   \
    } while (0)

struct sao_nccl {
    ncclComm_t comm;
    int world, rank, dev;
    bool broken;           // a collective failed: every later one is refused
    float *stage;          // the staging buffer (caching allocator), stage_have floats
    size_t stage_have;
};

// What every rank needs before sao_nccl_init: the device (made current) and the library.
static int ready(sao_ctx *ctx, const char *op, int dev) {
    if (sao_cuda_use(ctx, op, dev, "collectives (sao.comm)")) return -1;
    return nccl(ctx, op) ? 0 : -1;
}

extern "C" int sao_nccl_ready(sao_ctx *ctx, int dev, int *ver) {
    if (ready(ctx, "nccl_ready", dev)) return -1;
    if (ver) *ver = version;
    return 0;
}

extern "C" int sao_nccl_unique_id(sao_ctx *ctx, unsigned char id[SAO_NCCL_ID_BYTES]) {
    const char *op = "nccl_unique_id";
    if (!nccl(ctx, op)) return -1;
    ncclUniqueId u;
    NCCL_TRY(ctx, op, NULL, ncclGetUniqueId(&u));
    memcpy(id, u.internal, SAO_NCCL_ID_BYTES);
    return 0;
}

extern "C" sao_nccl *sao_nccl_init(sao_ctx *ctx, const unsigned char id[SAO_NCCL_ID_BYTES], int world, int rank,
                                   int dev) {
    const char *op = "nccl_init";
    if (world < 1 || rank < 0 || rank >= world)
        return (sao_nccl *)sao_err_null(ctx, op, "rank %d of %d: a rank is 0..world-1 and world at least 1", rank, world);
    if (ready(ctx, op, dev)) return NULL;
    ncclUniqueId u;
    memcpy(u.internal, id, SAO_NCCL_ID_BYTES);
    ncclComm_t comm = NULL;
    ncclResult_t st = api.ncclCommInitRank(&comm, world, u, rank);
    if (st != ncclSuccess) {
        nccl_fail(ctx, op, NULL, st, __FILE__, __LINE__, "ncclCommInitRank(&comm, world, id, rank)");
        return NULL;
    }
    sao_nccl *c = new (std::nothrow) sao_nccl{comm, world, rank, dev, false, NULL, 0};
    if (!c) {
        api.ncclCommDestroy(comm);
        return (sao_nccl *)sao_err_null(ctx, op, "out of host memory");
    }
    return c;
}

// Destroys (or aborts) the communicator on its device, then hands the staging buffer back.
static void finish(sao_nccl *c, bool abort) {
    if (!c) return;
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess) cur = -1;
    if (cur != c->dev) cudaSetDevice(c->dev);
    if (abort) api.ncclCommAbort(c->comm); else api.ncclCommDestroy(c->comm);
    sao_cuda_free(c->stage);   // stream-ordered: the work queued before it is done with it first
    if (cur >= 0 && cur != c->dev) cudaSetDevice(cur);
    cudaGetLastError();
    delete c;
}

extern "C" void sao_nccl_close(sao_nccl *c) { finish(c, false); }
extern "C" void sao_nccl_abort(sao_nccl *c) { finish(c, true); }

// ---- the collectives ----

enum kind { ALLREDUCE, REDUCE_SCATTER, ALLGATHER, BROADCAST };

// The list checked (f32, contiguous, on c's device: made current) and its flat total in floats.
static int check_list(sao_ctx *ctx, const char *op, sao_nccl *c, sao_tensor *const *ts, int n, int64_t *total) {
    if (!c) return sao_err(ctx, op, "the communicator is closed");
    if (c->broken)
        return sao_err(ctx, op, "rank %d: the communicator is broken (a collective failed): abort it and make a "
                       "new one", c->rank);
    if (n < 0 || (n > 0 && !ts)) return sao_err(ctx, op, "%d tensors: the list is missing", n);
    int cur = 0;
    CUDA_TRY(ctx, op, cudaGetDevice(&cur));
    if (cur != c->dev) CUDA_TRY(ctx, op, cudaSetDevice(c->dev));
    int64_t sum = 0;
    for (int i = 0; i < n; i++) {
        const sao_tensor *t = ts[i];
        if (!t) return sao_err(ctx, op, "tensor %d is NULL", i + 1);
        if (t->dtype != SAO_F32) return sao_err(ctx, op, "tensor %d is %s, not f32", i + 1, sao_dtype_name(t->dtype));
        if (t->storage->device != SAO_CUDA)
            return sao_err(ctx, op, "tensor %d is on the host, not on the GPU (move it with t:to(\"cuda:%d\"), or use "
                           "sao.comm for host tensors)", i + 1, c->dev);
        if (!sao_tensor_is_contiguous(t)) return sao_err(ctx, op, "tensor %d is not contiguous", i + 1);
        if (!sao_cuda_capturing) {   // (a capture re-runs calls that ran checked: cuda_internal.h)
            cudaPointerAttributes a;
            cudaError_t e = cudaPointerGetAttributes(&a, sao_tensor_data(t));
            if (e != cudaSuccess) {
                cudaGetLastError();
                return sao_err(ctx, op, "tensor %d: cudaPointerGetAttributes: %s (is a GPU visible? check "
                               "nvidia-smi)", i + 1, cudaGetErrorString(e));
            }
            if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
                return sao_err(ctx, op, "tensor %d is not device memory", i + 1);
            if (a.device != c->dev)
                return sao_err(ctx, op, "tensor %d is on device %d, the communicator's is %d (copy it there "
                               "first)", i + 1, a.device, c->dev);
        }
        sum += sao_tensor_numel(t);
    }
    *total = sum;
    return 0;
}

// Copies the part of the flat range [lo, hi) that each tensor holds between the tensor and the same
// offsets of the staging buffer (into the buffer when `in`, else back), queued on sao's stream.
static int copy_range(sao_ctx *ctx, const char *op, sao_tensor *const *ts, int n, float *stage, int64_t lo,
                      int64_t hi, bool in) {
    int64_t off = 0;
    for (int i = 0; i < n && off < hi; i++) {
        int64_t len = sao_tensor_numel(ts[i]);
        int64_t a = lo > off ? lo : off, b = hi < off + len ? hi : off + len;
        if (a < b) {
            float *t = (float *)sao_tensor_data(ts[i]) + (a - off), *s = stage + a;
            float *dst = in ? s : t;
            const float *src = in ? t : s;
            CUDA_TRY(ctx, op, cudaMemcpyAsync(dst, src, (size_t)(b - a) * sizeof(float), cudaMemcpyDeviceToDevice,
                                              sao_cuda_stream()));
        }
        off += len;
    }
    return 0;
}

static int collective(sao_ctx *ctx, const char *op, sao_nccl *c, sao_tensor *const *ts, int n, kind k, int root) {
    int64_t total = 0;
    if (check_list(ctx, op, c, ts, n, &total)) return -1;
    if (k == BROADCAST && (root < 0 || root >= c->world))
        return sao_err(ctx, op, "root %d: ranks are 0..%d", root, c->world - 1);
    if (total == 0) return 0;   // the same on every rank: nothing to exchange
    const int64_t world = c->world, chunk = (total + world - 1) / world, padded = chunk * world;
    int64_t lo, hi;
    sao_comm_shard(total, c->world, c->rank, &lo, &hi);
    float *s = sao_cuda_grow(ctx, &c->stage, &c->stage_have, (size_t)padded);
    if (!s) return -1;
    cudaStream_t st = sao_cuda_stream();

    // in: what this rank contributes (all-gather: its shard; broadcast: root's list)
    int rc = 0;
    if (k == ALLGATHER) rc = copy_range(ctx, op, ts, n, s, lo, hi, true);
    else if (k != BROADCAST || c->rank == root) rc = copy_range(ctx, op, ts, n, s, 0, total, true);
    if (rc) return -1;
    if (padded > total && (k == REDUCE_SCATTER || k == ALLGATHER))   // the last chunks' tail: defined values
        CUDA_TRY(ctx, op, cudaMemsetAsync(s + total, 0, (size_t)(padded - total) * sizeof(float), st));

    ncclResult_t r = ncclSuccess;
    const char *call = "";
    switch (k) {
    case ALLREDUCE:
        r = api.ncclAllReduce(s, s, (size_t)total, ncclFloat32, ncclAvg, c->comm, st);
        call = "ncclAllReduce(stage, stage, total, ncclFloat32, ncclAvg, comm, stream)";
        break;
    case REDUCE_SCATTER:
        r = api.ncclReduceScatter(s, s + c->rank * chunk, (size_t)chunk, ncclFloat32, ncclAvg, c->comm, st);
        call = "ncclReduceScatter(stage, stage + rank * chunk, chunk, ncclFloat32, ncclAvg, comm, stream)";
        break;
    case ALLGATHER:
        r = api.ncclAllGather(s + c->rank * chunk, s, (size_t)chunk, ncclFloat32, c->comm, st);
        call = "ncclAllGather(stage + rank * chunk, stage, chunk, ncclFloat32, comm, stream)";
        break;
    case BROADCAST:
        r = api.ncclBroadcast(s, s, (size_t)total, ncclFloat32, root, c->comm, st);
        call = "ncclBroadcast(stage, stage, total, ncclFloat32, root, comm, stream)";
        break;
    }
    if (r != ncclSuccess) {
        c->broken = true;
        return nccl_fail(ctx, op, c->comm, r, __FILE__, __LINE__, call);
    }

    // out: what this rank receives (reduce-scatter: its shard; all-gather: the others' shards)
    switch (k) {
    case ALLREDUCE: return copy_range(ctx, op, ts, n, s, 0, total, false);
    case REDUCE_SCATTER: return copy_range(ctx, op, ts, n, s, lo, hi, false);
    case ALLGATHER:
        if (copy_range(ctx, op, ts, n, s, 0, lo, false)) return -1;
        return copy_range(ctx, op, ts, n, s, hi, total, false);
    case BROADCAST: return c->rank == root ? 0 : copy_range(ctx, op, ts, n, s, 0, total, false);
    }
    return 0;
}

extern "C" int sao_nccl_allreduce_mean(sao_ctx *ctx, sao_nccl *c, sao_tensor *const *ts, int n) {
    return collective(ctx, "nccl_allreduce_mean", c, ts, n, ALLREDUCE, 0);
}

extern "C" int sao_nccl_reduce_scatter_mean(sao_ctx *ctx, sao_nccl *c, sao_tensor *const *ts, int n) {
    return collective(ctx, "nccl_reduce_scatter_mean", c, ts, n, REDUCE_SCATTER, 0);
}

extern "C" int sao_nccl_allgather(sao_ctx *ctx, sao_nccl *c, sao_tensor *const *ts, int n) {
    return collective(ctx, "nccl_allgather", c, ts, n, ALLGATHER, 0);
}

extern "C" int sao_nccl_broadcast(sao_ctx *ctx, sao_nccl *c, sao_tensor *const *ts, int n, int root) {
    return collective(ctx, "nccl_broadcast", c, ts, n, BROADCAST, root);
}

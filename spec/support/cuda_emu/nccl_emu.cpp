// nccl_emu.cpp — the fake NCCL of the CPU emulation (nccl.h here; README.md): communicators between
// PROCESSES on one machine, each rank a process with its own emulated device, as on a GPU machine.
//
//   - The unique id names a shared file (/dev/shm, else /tmp) and a nonce. ncclCommInitRank: rank 0
//     creates the file (written under a temporary name, then renamed, so the others never see it
//     half made), the others wait for it and check its nonce and world; each records its process id
//     there and all meet at a barrier (init returns once every rank came, as NCCL's does); then rank
//     0 removes the name (the ranks keep it open: nothing is left behind, whatever happens later).
//   - The file: a header (the barrier, a broken flag, every rank's process id and the count of the
//     collective under way) and one slot per rank, grown (ftruncate under flock, then mremap) to what
//     the collective needs. A collective: every rank copies what it sends into its slot, a barrier,
//     every rank computes what it receives from the slots, a second barrier (nobody refills a slot
//     before everyone has read it). Sums run in rank order, from 0, in fp32, and ncclAvg multiplies
//     the sum by 1.0f / world, as runtime/comm.c does: every rank gets the same bits, and those of
//     the host twin. The counts are compared after the first barrier: ranks calling one collective
//     with different counts fail with ncclInvalidUsage (NCCL would hang or read garbage).
//   - The barrier: a generation counter with atomics (runtime/comm.c's). A wait longer than
//     EMU_NCCL_TIMEOUT seconds (60) fails with ncclSystemError; a rank whose process has gone (its
//     pid, checked every 0.2 s) or a communicator another rank aborted (ncclCommAbort sets the
//     flag) fails it with ncclRemoteError. Either marks the communicator broken for every rank.
//   - Streams: the work is queued with emu_enqueue on the given stream, so it runs in stream order
//     with the copies around it (at once, as everything here, or recorded by a capture and run at
//     the replay). Only ncclFloat32, ncclSum and ncclAvg are emulated; buffers must be emulated
//     device memory covering the collective's extent (checked at the call).
//   - Errors: every failure prints `emu: NCCL: ...` on stderr and is ncclGetLastError's text. A
//     failure inside a collective is sticky: that call (when it ran at once) and every later one on
//     the communicator return it, as NCCL's communicator stays in error.
//   - EMU_NO_NCCL=1 makes emu_nccl_open fail as dlopen of a missing library; EMU_NCCL_VERSION=N makes
//     ncclGetVersion report N (e.g. 20800, too old for ncclAvg).
#include "nccl.h"
#include "emu_internal.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

namespace {

const int MAX_RANKS = 256;
const size_t HEADER = 8192;   // the header's bytes in the file; the slots follow
const char MAGIC[8] = "saonccl";

struct shared_header {
    char magic[8];
    uint64_t nonce;
    int64_t world;
    uint64_t arrived, generation, broken;   // the barrier; broken: a rank failed or aborted
    int64_t pids[MAX_RANKS];                // each rank's process, recorded at init
    int64_t counts[MAX_RANKS];              // each rank's count in the collective under way
};
static_assert(sizeof(shared_header) <= HEADER, "the header fits its bytes");

struct id_layout {   // what a fake ncclUniqueId holds
    char magic[8];
    uint64_t nonce;
    char path[112];
};
static_assert(sizeof(id_layout) == NCCL_UNIQUE_ID_BYTES, "a fake id is an id");

char last_error[1024];   // ncclGetLastError

double now() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double timeout_s() {
    const char *s = getenv("EMU_NCCL_TIMEOUT");
    double t = s && *s ? atof(s) : 0;
    return t > 0 ? t : 60;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
__attribute__((format(printf, 2, 3))) ncclResult_t fail(ncclResult_t st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    fprintf(stderr, "emu: NCCL: %s\n", last_error);
    return st;
}
#pragma GCC diagnostic pop

}  // namespace

struct emu_nccl_comm {
    int fd;
    char *map;            // the file, mapped: the header, then the slots
    size_t mapped;
    int world, rank;
    double timeout;
    ncclResult_t error;   // the first failure of a collective: sticky
    char path[112];
};

static shared_header *H(emu_nccl_comm *c) { return (shared_header *)c->map; }

// The first rank other than this one whose process has gone, or -1.
static int dead_rank(emu_nccl_comm *c) {
    for (int r = 0; r < c->world; r++) {
        if (r == c->rank) continue;
        int64_t pid = __atomic_load_n(&H(c)->pids[r], __ATOMIC_ACQUIRE);
        if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH) return r;
    }
    return -1;
}

static void set_broken(emu_nccl_comm *c) { __atomic_store_n(&H(c)->broken, 1, __ATOMIC_RELEASE); }

// Waits until every rank has arrived; `what` names the call in errors.
static ncclResult_t barrier(emu_nccl_comm *c, const char *what) {
    shared_header *h = H(c);
    if (__atomic_load_n(&h->broken, __ATOMIC_ACQUIRE))
        return fail(ncclRemoteError, "%s: rank %d: the communicator is broken (another rank failed or aborted)", what,
                    c->rank);
    if (c->world == 1) return ncclSuccess;
    uint64_t gen = __atomic_load_n(&h->generation, __ATOMIC_ACQUIRE);
    uint64_t n = __atomic_add_fetch(&h->arrived, 1, __ATOMIC_ACQ_REL);
    if (n == (uint64_t)c->world) {
        __atomic_store_n(&h->arrived, 0, __ATOMIC_RELAXED);
        __atomic_add_fetch(&h->generation, 1, __ATOMIC_ACQ_REL);
        return ncclSuccess;
    }
    double t0 = now(), checked = t0;
    long sleep_ns = 1000;
    for (long spin = 0;; spin++) {
        if (__atomic_load_n(&h->generation, __ATOMIC_ACQUIRE) != gen) return ncclSuccess;
        if (spin < 2000) continue;
        if (__atomic_load_n(&h->broken, __ATOMIC_ACQUIRE))
            return fail(ncclRemoteError, "%s: rank %d: the communicator is broken (another rank failed or aborted)",
                        what, c->rank);
        double t = now();
        if (t - checked > 0.2) {
            checked = t;
            int r = dead_rank(c);
            if (r >= 0 && __atomic_load_n(&h->generation, __ATOMIC_ACQUIRE) == gen) {
                set_broken(c);
                return fail(ncclRemoteError, "%s: rank %d: rank %d (process %lld) has exited", what, c->rank, r,
                            (long long)h->pids[r]);
            }
        }
        if (t - t0 > c->timeout) {
            set_broken(c);
            return fail(ncclSystemError, "%s: rank %d waited %.0f s for %d of %d ranks (EMU_NCCL_TIMEOUT)", what,
                        c->rank, t - t0, c->world - (int)__atomic_load_n(&h->arrived, __ATOMIC_ACQUIRE), c->world);
        }
        struct timespec ts = {0, sleep_ns};
        nanosleep(&ts, NULL);
        if (sleep_ns < 1000000) sleep_ns *= 2;
    }
}

// The file and this rank's mapping grown to hold `per` floats per rank (never shrunk: ranks grow it
// under a lock, so a rank never cuts what another one already wrote).
static ncclResult_t ensure(emu_nccl_comm *c, const char *what, size_t per) {
    size_t need = HEADER + (size_t)c->world * per * sizeof(float);
    if (need <= c->mapped) return ncclSuccess;
    struct stat st;
    if (flock(c->fd, LOCK_EX) != 0 || fstat(c->fd, &st) != 0 ||
        ((size_t)st.st_size < need && ftruncate(c->fd, (off_t)need) != 0)) {
        int e = errno;
        flock(c->fd, LOCK_UN);
        return fail(ncclSystemError, "%s: rank %d: growing the shared file to %zu bytes: %s", what, c->rank, need,
                    strerror(e));
    }
    flock(c->fd, LOCK_UN);
    void *m = mremap(c->map, c->mapped, need, MREMAP_MAYMOVE);
    if (m == MAP_FAILED) return fail(ncclSystemError, "%s: rank %d: mremap: %s", what, c->rank, strerror(errno));
    c->map = (char *)m;
    c->mapped = need;
    return ncclSuccess;
}

static float *slot(emu_nccl_comm *c, int r, size_t per) { return (float *)(c->map + HEADER) + (size_t)r * per; }

// ---- the API ----

ncclResult_t ncclGetVersion(int *version) {
    if (!version) return fail(ncclInvalidArgument, "ncclGetVersion: version is NULL");
    const char *s = getenv("EMU_NCCL_VERSION");
    *version = s && *s ? atoi(s) : NCCL_VERSION_CODE;
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}

const char *ncclGetLastError(ncclComm_t) { return last_error; }

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    if (!id) return fail(ncclInvalidArgument, "ncclGetUniqueId: uniqueId is NULL");
    static unsigned counter;
    id_layout L;
    memset(&L, 0, sizeof L);
    memcpy(L.magic, MAGIC, sizeof L.magic);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    L.nonce = ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (++counter * 0x9E3779B97F4A7C15ull);
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(L.path, sizeof L.path, "%s/sao-emu-nccl-%d-%u-%llx", dir, (int)getpid(), counter,
             (unsigned long long)(L.nonce & 0xffffffull));
    memcpy(id->internal, &L, sizeof L);
    return ncclSuccess;
}

static void release(emu_nccl_comm *c) {
    if (c->map) munmap(c->map, c->mapped);
    if (c->fd >= 0) close(c->fd);
    delete c;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    const char *what = "ncclCommInitRank";
    if (!comm) return fail(ncclInvalidArgument, "%s: comm is NULL", what);
    *comm = NULL;
    id_layout L;
    memcpy(&L, id.internal, sizeof L);
    L.path[sizeof L.path - 1] = 0;
    if (memcmp(L.magic, MAGIC, sizeof L.magic) != 0)
        return fail(ncclInvalidArgument, "%s: the id does not come from ncclGetUniqueId", what);
    if (nranks < 1 || nranks > MAX_RANKS || rank < 0 || rank >= nranks)
        return fail(ncclInvalidArgument, "%s: rank %d of %d (the fake holds 1..%d ranks)", what, rank, nranks, MAX_RANKS);
    if (emu_unsafe()) return fail(ncclInvalidUsage, "%s: not while a stream captures (it allocates)", what);
    emu_nccl_comm *c = new emu_nccl_comm{-1, NULL, 0, nranks, rank, timeout_s(), ncclSuccess, {0}};
    memcpy(c->path, L.path, sizeof c->path);
    if (rank == 0) {
        char tmp[160];
        snprintf(tmp, sizeof tmp, "%s.tmp", L.path);
        c->fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC, 0600);
        if (c->fd < 0 || ftruncate(c->fd, (off_t)HEADER) != 0) {
            int e = errno;
            release(c);
            return fail(ncclSystemError, "%s: rank 0: cannot create %s: %s", what, tmp, strerror(e));
        }
        void *m = mmap(NULL, HEADER, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            unlink(tmp);
            release(c);
            return fail(ncclSystemError, "%s: rank 0: mmap: %s", what, strerror(e));
        }
        c->map = (char *)m;
        c->mapped = HEADER;
        memcpy(H(c)->magic, MAGIC, sizeof MAGIC);
        H(c)->nonce = L.nonce;
        H(c)->world = nranks;
        if (rename(tmp, L.path) != 0) {
            int e = errno;
            unlink(tmp);
            release(c);
            return fail(ncclSystemError, "%s: rank 0: cannot create %s: %s", what, L.path, strerror(e));
        }
    } else {
        double t0 = now();
        while ((c->fd = open(L.path, O_RDWR)) < 0) {
            if (now() - t0 > c->timeout) {
                release(c);
                return fail(ncclSystemError, "%s: rank %d waited %.0f s for rank 0 to create %s (EMU_NCCL_TIMEOUT)",
                            what, rank, c->timeout, L.path);
            }
            usleep(1000);
        }
        void *m = mmap(NULL, HEADER, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            release(c);
            return fail(ncclSystemError, "%s: rank %d: mmap: %s", what, rank, strerror(e));
        }
        c->map = (char *)m;
        c->mapped = HEADER;
        if (memcmp(H(c)->magic, MAGIC, sizeof MAGIC) != 0 || H(c)->nonce != L.nonce) {
            release(c);
            return fail(ncclInvalidUsage, "%s: rank %d: %s is not this id's communicator", what, rank, L.path);
        }
        if (H(c)->world != nranks) {
            int64_t w = H(c)->world;
            release(c);
            return fail(ncclInvalidUsage, "%s: rank %d says %d ranks, rank 0 said %lld", what, rank, nranks, (long long)w);
        }
    }
    __atomic_store_n(&H(c)->pids[rank], (int64_t)getpid(), __ATOMIC_RELEASE);
    ncclResult_t st = barrier(c, what);
    if (rank == 0) unlink(L.path);   // every rank has it open (or init failed): the name can go
    if (st != ncclSuccess) {
        release(c);
        return st;
    }
    *comm = c;
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t c) {
    if (!c) return fail(ncclInvalidArgument, "ncclCommDestroy: comm is NULL");
    release(c);
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t c) {
    if (!c) return ncclSuccess;
    set_broken(c);   // the other ranks' next wait fails at once
    release(c);
    return ncclSuccess;
}

enum emu_kind { ALLREDUCE, REDUCE_SCATTER, ALLGATHER, BROADCAST };

// One collective: checked at the call, run in stream order (emu_enqueue).
static ncclResult_t collective(const char *what, emu_kind k, const void *sendbuff, void *recvbuff, size_t count,
                               ncclDataType_t type, ncclRedOp_t op, int root, emu_nccl_comm *c, cudaStream_t stream) {
    if (!c) return fail(ncclInvalidArgument, "%s: comm is NULL", what);
    if (c->error) return c->error;
    if (type != ncclFloat32) return fail(ncclInvalidArgument, "%s: datatype %d: only ncclFloat32 is emulated", what, (int)type);
    if ((k == ALLREDUCE || k == REDUCE_SCATTER) && op != ncclSum && op != ncclAvg)
        return fail(ncclInvalidArgument, "%s: op %d: only ncclSum and ncclAvg are emulated", what, (int)op);
    if (k == BROADCAST && (root < 0 || root >= c->world))
        return fail(ncclInvalidArgument, "%s: root %d of %d ranks", what, root, c->world);
    const size_t W = (size_t)c->world, B = sizeof(float);
    size_t send_n = k == REDUCE_SCATTER ? W * count : count, recv_n = k == ALLGATHER ? W * count : count;
    bool reads_send = k != BROADCAST || c->rank == root;
    if (count == 0) return ncclSuccess;
    if (reads_send && !emu_dev_range(sendbuff, send_n * B))
        return fail(ncclInvalidArgument, "%s: sendbuff %p (%zu floats) is not device memory", what, sendbuff, send_n);
    if (!emu_dev_range(recvbuff, recv_n * B))
        return fail(ncclInvalidArgument, "%s: recvbuff %p (%zu floats) is not device memory", what, recvbuff, recv_n);
    cudaError_t e = emu_enqueue(stream, [=]() {
        if (c->error) return;   // the communicator failed before: nothing runs
        emu_dev_access acc;
        const float *in = (const float *)sendbuff;
        float *out = (float *)recvbuff;
        const int rank = c->rank;
        size_t per = send_n;   // a slot holds what a rank sends
        ncclResult_t st = ensure(c, what, per);
        if (st) { c->error = st; set_broken(c); return; }
        shared_header *h = H(c);
        h->counts[rank] = (int64_t)count;
        if (reads_send) memcpy(slot(c, rank, per), in, send_n * B);
        if ((st = barrier(c, what))) { c->error = st; return; }
        h = H(c);
        for (int r = 0; r < c->world; r++)
            if (h->counts[r] != (int64_t)count) {
                set_broken(c);
                c->error = fail(ncclInvalidUsage, "%s: rank %d has count %zu, rank %d has %lld", what, rank, count, r,
                                (long long)h->counts[r]);
                return;
            }
        const float inv = 1.0f / (float)c->world;
        switch (k) {
        case ALLREDUCE:
        case REDUCE_SCATTER: {
            size_t base = k == REDUCE_SCATTER ? (size_t)rank * count : 0;
            for (size_t j = 0; j < count; j++) {
                float s = 0;
                for (int r = 0; r < c->world; r++) s += slot(c, r, per)[base + j];
                out[j] = op == ncclAvg ? s * inv : s;
            }
            break;
        }
        case ALLGATHER:
            for (int r = 0; r < c->world; r++) memmove(out + (size_t)r * count, slot(c, r, per), count * B);
            break;
        case BROADCAST: memmove(out, slot(c, root, per), count * B); break;
        }
        if ((st = barrier(c, what))) c->error = st;
    });
    if (e) return fail(ncclUnhandledCudaError, "%s: the stream refused the work: %s", what, cudaGetErrorString(e));
    return c->error;   // the outcome when it ran at once; a recorded one shows at a later call
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
    return collective("ncclAllReduce", ALLREDUCE, sendbuff, recvbuff, count, datatype, op, 0, comm, stream);
}

ncclResult_t ncclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    return collective("ncclReduceScatter", REDUCE_SCATTER, sendbuff, recvbuff, recvcount, datatype, op, 0, comm, stream);
}

ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
    return collective("ncclAllGather", ALLGATHER, sendbuff, recvbuff, sendcount, datatype, ncclSum, 0, comm, stream);
}

ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
    return collective("ncclBroadcast", BROADCAST, sendbuff, recvbuff, count, datatype, ncclSum, root, comm, stream);
}

// ---- the stand-ins of dlopen / dlsym / dlerror ----
static char open_error[512];
static int lib_token;

void *emu_nccl_open(const char *path) {
    const char *no = getenv("EMU_NO_NCCL");
    if (no && *no && *no != '0') {
        snprintf(open_error, sizeof open_error, "%s: cannot open shared object file: No such file or directory (EMU_NO_NCCL=1)", path);
        return NULL;
    }
    if (strchr(path, '/') && access(path, R_OK) != 0) {
        snprintf(open_error, sizeof open_error, "%s: cannot open shared object file: No such file or directory", path);
        return NULL;
    }
    return &lib_token;
}

const char *emu_nccl_error(void) { return open_error; }

void *emu_nccl_sym(void *lib, const char *name) {
#define EMU_SYM(f) {#f, (void *)&f},
    static const struct { const char *name; void *fn; } table[] = {
        EMU_SYM(ncclGetVersion) EMU_SYM(ncclGetErrorString) EMU_SYM(ncclGetLastError) EMU_SYM(ncclGetUniqueId)
        EMU_SYM(ncclCommInitRank) EMU_SYM(ncclCommDestroy) EMU_SYM(ncclCommAbort) EMU_SYM(ncclAllReduce)
        EMU_SYM(ncclReduceScatter) EMU_SYM(ncclAllGather) EMU_SYM(ncclBroadcast)
    };
#undef EMU_SYM
    if (lib != &lib_token) return NULL;
    for (const auto &e : table)
        if (!strcmp(e.name, name)) return e.fn;
    return NULL;
}

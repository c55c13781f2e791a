/* comm.c — the data-parallel group (sao_comm.h has the contract): the tensor lists every transport
 * shares, and the file transport for the ranks of one machine (comm_tcp.c has the TCP one).
 *
 * File layout (mapped by every rank):
 *   header   magic, world, capacity, then three 64-bit counters used with atomic builtins:
 *            arrived (ranks at the current barrier), generation (barriers completed), broken
 *   pids     world process ids (0: not known yet); a waiting rank checks them about every 0.2 s,
 *            so a rank that died is reported at once instead of after the timeout
 *   slots    world x capacity floats, slot r written only by rank r
 * The barrier is a counting barrier with a generation number: the last rank to arrive resets
 * `arrived` and bumps `generation`; the others wait for the generation to change (spinning a
 * little, then sleeping in growing steps up to 1 ms). */
#include "comm_internal.h"
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define COMM_MAGIC 0x73616f636f6d6d31ULL   /* "saocomm1" */

typedef struct {
    uint64_t magic;
    int64_t world;
    int64_t capacity;
    uint64_t arrived;
    uint64_t generation;
    uint64_t broken;
    uint64_t pad[2];
} comm_header;

typedef struct {
    size_t size;
    comm_header *h;
    int64_t *pids;
    float *slots;
} file_group;

static const comm_ops file_ops;

double comm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static size_t file_size(int world, int64_t capacity) {
    return sizeof(comm_header) + (size_t)world * sizeof(int64_t) + (size_t)world * (size_t)capacity * sizeof(float);
}

sao_comm *comm_new(sao_ctx *ctx, const char *op, const comm_ops *ops, int rank, int world, int64_t capacity,
                   double timeout_s) {
    sao_comm *c = calloc(1, sizeof *c);
    if (!c) return sao_err_null(ctx, op, "out of memory");
    c->ops = ops;
    c->rank = rank;
    c->world = world;
    c->capacity = capacity;
    c->timeout_s = timeout_s > 0 ? timeout_s : 600;
    return c;
}

/* ---- the file transport -------------------------------------------------------------------------- */

#define FG(c) ((file_group *)(c)->t)

static sao_comm *map_group(sao_ctx *ctx, const char *op, const char *path, int fd, size_t size, int rank,
                           double timeout_s) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return sao_err_null(ctx, op, "%s: mmap of %zu bytes failed: %s", path, size, strerror(errno));
    file_group *g = calloc(1, sizeof *g);
    comm_header *h = p;
    sao_comm *c = g ? comm_new(ctx, op, &file_ops, rank, (int)h->world, h->capacity, timeout_s) : NULL;
    if (!c) {
        free(g);
        munmap(p, size);
        return g ? NULL : sao_err_null(ctx, op, "out of memory");
    }
    g->h = h;
    g->pids = (int64_t *)((char *)p + sizeof(comm_header));
    g->slots = (float *)(g->pids + c->world);
    g->size = size;
    c->t = g;
    __atomic_store_n(&g->pids[rank], (int64_t)getpid(), __ATOMIC_RELEASE);
    return c;
}

sao_comm *sao_comm_create(sao_ctx *ctx, const char *path, int world, int64_t capacity, double timeout_s) {
    const char *op = "comm.create";
    if (world < 1 || capacity < 0) return sao_err_null(ctx, op, "world %d / capacity %lld: out of range", world,
                                                       (long long)capacity);
    size_t size = file_size(world, capacity);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return sao_err_null(ctx, op, "%s: cannot create: %s", path, strerror(errno));
    if (ftruncate(fd, (off_t)size) != 0) {
        int e = errno;
        close(fd);
        return sao_err_null(ctx, op, "%s: cannot size to %zu bytes: %s (is there room in its file system?)", path,
                            size, strerror(e));
    }
    comm_header h = { .magic = 0, .world = world, .capacity = capacity };
    if (pwrite(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) {
        int e = errno;
        close(fd);
        return sao_err_null(ctx, op, "%s: cannot write the header: %s", path, strerror(e));
    }
    sao_comm *c = map_group(ctx, op, path, fd, size, 0, timeout_s);
    if (!c) return NULL;
    __atomic_store_n(&FG(c)->h->magic, COMM_MAGIC, __ATOMIC_RELEASE);   /* ready for the others */
    return c;
}

sao_comm *sao_comm_open(sao_ctx *ctx, const char *path, int rank, double timeout_s) {
    const char *op = "comm.open";
    int fd = open(path, O_RDWR);
    if (fd < 0) return sao_err_null(ctx, op, "%s: cannot open: %s (rank 0 creates it first)", path, strerror(errno));
    comm_header h;
    if (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h || h.magic != COMM_MAGIC) {
        close(fd);
        return sao_err_null(ctx, op, "%s: not a sao group file (or not ready yet)", path);
    }
    if (rank < 1 || rank >= h.world) {
        close(fd);
        return sao_err_null(ctx, op, "%s: rank %d outside 1..%lld", path, rank, (long long)h.world - 1);
    }
    struct stat st;
    size_t size = file_size((int)h.world, h.capacity);
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < size) {
        close(fd);
        return sao_err_null(ctx, op, "%s: the file is shorter than its header says (%zu bytes)", path, size);
    }
    return map_group(ctx, op, path, fd, size, rank, timeout_s);
}

int sao_comm_set_pid(sao_ctx *ctx, sao_comm *c, int rank, int64_t pid) {
    if (rank < 0 || rank >= c->world) return sao_err(ctx, "comm.set_pid", "rank %d outside 0..%d", rank, c->world - 1);
    if (c->ops != &file_ops) return 0;   /* tcp: a closed connection says a rank is gone */
    __atomic_store_n(&FG(c)->pids[rank], pid, __ATOMIC_RELEASE);
    return 0;
}

/* The first rank whose process is gone, or -1. */
static int dead_rank(const file_group *g, int world) {
    for (int r = 0; r < world; r++) {
        int64_t pid = __atomic_load_n(&g->pids[r], __ATOMIC_ACQUIRE);
        if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH) return r;
    }
    return -1;
}

static void file_abort(sao_comm *c) { __atomic_store_n(&FG(c)->h->broken, 1, __ATOMIC_RELEASE); }

static int file_barrier(sao_ctx *ctx, sao_comm *c) {
    const char *op = "comm.barrier";
    file_group *g = FG(c);
    comm_header *h = g->h;
    if (__atomic_load_n(&h->broken, __ATOMIC_ACQUIRE))
        return sao_err(ctx, op, "rank %d: the group is broken (another rank failed)", c->rank);
    if (c->world == 1) return 0;
    uint64_t gen = __atomic_load_n(&h->generation, __ATOMIC_ACQUIRE);
    uint64_t n = __atomic_add_fetch(&h->arrived, 1, __ATOMIC_ACQ_REL);
    if (n == (uint64_t)c->world) {
        __atomic_store_n(&h->arrived, 0, __ATOMIC_RELAXED);
        __atomic_add_fetch(&h->generation, 1, __ATOMIC_ACQ_REL);
        return 0;
    }
    double t0 = comm_now(), checked = t0;
    long sleep_ns = 1000;
    for (long spin = 0;; spin++) {
        if (__atomic_load_n(&h->generation, __ATOMIC_ACQUIRE) != gen) return 0;
        if (spin < 2000) continue;
        if (__atomic_load_n(&h->broken, __ATOMIC_ACQUIRE))
            return sao_err(ctx, op, "rank %d: the group is broken (another rank failed)", c->rank);
        if (sao_interrupt_pending()) {
            file_abort(c);
            return sao_err(ctx, op, "rank %d: interrupted", c->rank);
        }
        double now = comm_now(), waited = now - t0;
        if (now - checked > 0.2) {
            checked = now;
            int r = dead_rank(g, c->world);
            if (r >= 0 && __atomic_load_n(&h->generation, __ATOMIC_ACQUIRE) == gen) {
                file_abort(c);
                return sao_err(ctx, op, "rank %d: rank %d (process %lld) has exited", c->rank, r,
                               (long long)g->pids[r]);
            }
        }
        if (waited > c->timeout_s) {
            file_abort(c);
            return sao_err(ctx, op, "rank %d waited %.0f s for %d of %d ranks (did a process die?)", c->rank,
                           waited, c->world - (int)__atomic_load_n(&h->arrived, __ATOMIC_ACQUIRE), c->world);
        }
        struct timespec ts = { 0, sleep_ns };
        nanosleep(&ts, NULL);
        if (sleep_ns < 1000000) sleep_ns *= 2;
    }
}

static float *slot(const sao_comm *c, int r) { return FG(c)->slots + (int64_t)r * c->capacity; }

/* Calls fn(arg, p, off, k) for every piece of the vector's elements [lo, hi) that lies in one
 * tensor: k floats at p, which are elements off..off+k-1 of the vector. */
typedef void (*piece_fn)(const sao_comm *c, const void *arg, float *p, int64_t off, int64_t k);
static void each_piece(const sao_comm *c, const comm_vec *v, int64_t lo, int64_t hi, piece_fn fn, const void *arg) {
    int64_t start = 0;
    for (int i = 0; i < v->count && start < hi; i++) {
        int64_t a = lo > start ? lo : start, b = hi < start + v->n[i] ? hi : start + v->n[i];
        if (a < b) fn(c, arg, v->p[i] + (a - start), a, b - a);
        start += v->n[i];
    }
}

static void to_slot(const sao_comm *c, const void *arg, float *p, int64_t off, int64_t k) {
    (void)arg;
    memcpy(slot(c, c->rank) + off, p, (size_t)k * sizeof(float));
}

static void from_slot(const sao_comm *c, const void *arg, float *p, int64_t off, int64_t k) {
    memcpy(p, slot(c, *(const int *)arg) + off, (size_t)k * sizeof(float));
}

/* p[0..k) = the mean over the ranks' slots at off..off+k, summed in rank order (0, then + rank 0's,
 * + rank 1's, ...: the same additions whatever the blocking). Blocks of 4096 floats keep the
 * partial sums in cache; the threads of this process share the blocks. */
static void mean_of_slots(const sao_comm *c, const void *arg, float *p, int64_t off, int64_t k) {
    (void)arg;
    const float inv = 1.0f / (float)c->world;
    const int64_t B = 4096, nb = (k + B - 1) / B;
    #pragma omp parallel for schedule(static) if (k > 65536)
    for (int64_t b = 0; b < nb; b++) {
        int64_t a = b * B, e = a + B < k ? a + B : k;
        float *restrict y = p + a;
        for (int64_t j = 0; j < e - a; j++) y[j] = 0.0f;
        for (int r = 0; r < c->world; r++) {
            const float *restrict s = slot(c, r) + off + a;
            for (int64_t j = 0; j < e - a; j++) y[j] += s[j];
        }
        for (int64_t j = 0; j < e - a; j++) y[j] *= inv;
    }
}

/* The collectives on the tensors themselves. Reductions: every rank's vector into its slot, the
 * barrier, the mean of [lo, hi) (all of it, or this rank's shard) into the tensors, and a second
 * barrier: nobody refills a slot before every rank has read it. All-gather: this rank's shard into
 * its slot, the barrier, every other rank's shard out of its slot, the barrier. */
static int file_vec(sao_ctx *ctx, sao_comm *c, int kind, const comm_vec *v) {
    int64_t lo, hi, n = v->total;
    sao_comm_shard(n, c->world, c->rank, &lo, &hi);
    if (kind == COMM_ALLGATHER) {
        each_piece(c, v, lo, hi, to_slot, NULL);
        if (file_barrier(ctx, c) != 0) return -1;
        for (int r = 0; r < c->world; r++) {
            if (r == c->rank) continue;
            int64_t a, b;
            sao_comm_shard(n, c->world, r, &a, &b);
            each_piece(c, v, a, b, from_slot, &r);
        }
        return file_barrier(ctx, c);
    }
    if (kind == COMM_ALLREDUCE) lo = 0, hi = n;
    each_piece(c, v, 0, n, to_slot, NULL);
    if (file_barrier(ctx, c) != 0) return -1;
    each_piece(c, v, lo, hi, mean_of_slots, NULL);
    return file_barrier(ctx, c);
}

/* In pieces of the slot's size when the bytes do not fit it. */
static int file_broadcast(sao_ctx *ctx, sao_comm *c, void *buf, int64_t bytes, int root) {
    const int64_t piece = c->capacity * (int64_t)sizeof(float);
    if (bytes > 0 && piece == 0)
        return sao_err(ctx, "comm.broadcast", "the group was created with capacity 0 (no room to carry bytes)");
    for (int64_t off = 0; off < bytes; off += piece) {
        int64_t k = bytes - off < piece ? bytes - off : piece;
        if (c->rank == root) memcpy(slot(c, root), (char *)buf + off, (size_t)k);
        if (file_barrier(ctx, c) != 0) return -1;
        if (c->rank != root) memcpy((char *)buf + off, slot(c, root), (size_t)k);
        if (file_barrier(ctx, c) != 0) return -1;
    }
    return 0;
}

static void file_close(sao_comm *c) {
    file_group *g = FG(c);
    munmap(g->h, g->size);
    free(g);
}

static const comm_ops file_ops = {
    .name = "file", .vec = file_vec, .barrier = file_barrier, .broadcast = file_broadcast,
    .abort = file_abort, .close = file_close,
};

/* ---- the group, over any transport --------------------------------------------------------------- */

int sao_comm_rank(const sao_comm *c) { return c->rank; }
int sao_comm_world(const sao_comm *c) { return c->world; }
int64_t sao_comm_capacity(const sao_comm *c) { return c->capacity; }
const char *sao_comm_transport(const sao_comm *c) { return c->ops->name; }

void sao_comm_shard(int64_t total, int world, int rank, int64_t *lo, int64_t *hi) {
    int64_t chunk = world > 0 ? (total + world - 1) / world : total;
    int64_t a = (int64_t)rank * chunk, b = a + chunk;
    *lo = a < total ? a : total;
    *hi = b < total ? b : total;
}

void sao_comm_abort(sao_comm *c) {
    if (!c) return;
    c->broken = 1;
    c->ops->abort(c);
}

int sao_comm_barrier(sao_ctx *ctx, sao_comm *c) {
    if (c->broken) return sao_err(ctx, "comm.barrier", "rank %d: the group is broken (a collective failed)", c->rank);
    int rc = c->ops->barrier(ctx, c);
    if (rc != 0) c->broken = 1;
    return rc;
}

typedef int (*flat_op)(sao_ctx *ctx, sao_comm *c, float *x, int64_t n);

/* A collective that failed on this rank: the group is broken here and, through the transport, for
 * the others (they fail at their next wait instead of timing out). */
static int failed(sao_comm *c) {
    c->broken = 1;
    c->ops->abort(c);
    return -1;
}

/* Checks the list, then runs the collective: on the tensors themselves (the transport's vec op), or
 * on c->flat (a copy of them) with its flat op `fn` and copies back. */
static int run_flat(sao_ctx *ctx, sao_comm *c, const char *op, sao_tensor *const *ts, int n, int kind, flat_op fn) {
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const sao_tensor *t = ts[i];
        if (t->dtype != SAO_F32) return sao_err(ctx, op, "tensor %d is %s, not f32", i + 1, sao_dtype_name(t->dtype));
        if (!sao_tensor_is_contiguous(t)) return sao_err(ctx, op, "tensor %d is not contiguous", i + 1);
        SAO_HOST_ONLY(ctx, op, t);
        total += sao_tensor_numel(t);
    }
    if (c->capacity >= 0 && total > c->capacity)
        return sao_err(ctx, op, "%lld floats do not fit the group's %lld per rank (create it larger)",
                       (long long)total, (long long)c->capacity);
    if (c->broken) return sao_err(ctx, op, "rank %d: the group is broken (a collective failed)", c->rank);
    if (c->world == 1) return 0;
    if (c->ops->vec) {
        float **p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
        int64_t *k = malloc((size_t)(n > 0 ? n : 1) * sizeof *k);
        if (!p || !k) {
            free(p), free(k);
            return sao_err(ctx, op, "out of memory");
        }
        for (int i = 0; i < n; i++) p[i] = sao_tensor_data(ts[i]), k[i] = sao_tensor_numel(ts[i]);
        comm_vec v = { .p = p, .n = k, .count = n, .total = total };
        int rc = c->ops->vec(ctx, c, kind, &v);
        free(p), free(k);
        return rc != 0 ? failed(c) : 0;
    }
    if (total > c->flat_cap) {
        float *p = realloc(c->flat, (size_t)total * sizeof(float));
        if (!p) return sao_err(ctx, op, "out of memory for %lld floats", (long long)total);
        c->flat = p;
        c->flat_cap = total;
    }
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t k = sao_tensor_numel(ts[i]);
        memcpy(c->flat + off, sao_tensor_data(ts[i]), (size_t)k * sizeof(float));
        off += k;
    }
    if (fn(ctx, c, c->flat, total) != 0) return failed(c);
    off = 0;
    for (int i = 0; i < n; i++) {
        int64_t k = sao_tensor_numel(ts[i]);
        memcpy(sao_tensor_data(ts[i]), c->flat + off, (size_t)k * sizeof(float));
        off += k;
    }
    return 0;
}

int sao_comm_allreduce_mean(sao_ctx *ctx, sao_comm *c, sao_tensor *const *ts, int n) {
    return run_flat(ctx, c, "comm.allreduce", ts, n, COMM_ALLREDUCE, c->ops->allreduce_mean);
}

int sao_comm_reduce_scatter_mean(sao_ctx *ctx, sao_comm *c, sao_tensor *const *ts, int n) {
    return run_flat(ctx, c, "comm.reduce_scatter", ts, n, COMM_REDUCE_SCATTER, c->ops->reduce_scatter_mean);
}

int sao_comm_allgather(sao_ctx *ctx, sao_comm *c, sao_tensor *const *ts, int n) {
    return run_flat(ctx, c, "comm.allgather", ts, n, COMM_ALLGATHER, c->ops->allgather);
}

int sao_comm_broadcast(sao_ctx *ctx, sao_comm *c, void *buf, int64_t bytes, int root) {
    const char *op = "comm.broadcast";
    if (root < 0 || root >= c->world) return sao_err(ctx, op, "root %d outside 0..%d", root, c->world - 1);
    if (bytes < 0) return sao_err(ctx, op, "%lld bytes", (long long)bytes);
    if (c->broken) return sao_err(ctx, op, "rank %d: the group is broken (a collective failed)", c->rank);
    if (c->world == 1) return 0;
    return c->ops->broadcast(ctx, c, buf, bytes, root) != 0 ? failed(c) : 0;
}

void sao_comm_close(sao_comm *c) {
    if (!c) return;
    c->ops->close(c);
    free(c->flat);
    free(c);
}

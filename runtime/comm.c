/* comm.c — collectives over a shared file for data-parallel training on one machine
 * (sao_comm.h has the contract).
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
#include "internal.h"
#include "sao_comm.h"
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

struct sao_comm {
    int rank, world;
    int64_t capacity;
    double timeout_s;
    size_t size;
    comm_header *h;
    int64_t *pids;
    float *slots;
};

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static size_t file_size(int world, int64_t capacity) {
    return sizeof(comm_header) + (size_t)world * sizeof(int64_t) + (size_t)world * (size_t)capacity * sizeof(float);
}

static sao_comm *map_group(sao_ctx *ctx, const char *op, const char *path, int fd, size_t size, int rank,
                           double timeout_s) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return sao_err_null(ctx, op, "%s: mmap of %zu bytes failed: %s", path, size, strerror(errno));
    sao_comm *c = calloc(1, sizeof *c);
    if (!c) { munmap(p, size); return sao_err_null(ctx, op, "out of memory"); }
    c->h = p;
    c->rank = rank;
    c->world = (int)c->h->world;
    c->pids = (int64_t *)((char *)p + sizeof(comm_header));
    c->slots = (float *)(c->pids + c->world);
    __atomic_store_n(&c->pids[rank], (int64_t)getpid(), __ATOMIC_RELEASE);
    c->capacity = c->h->capacity;
    c->size = size;
    c->timeout_s = timeout_s > 0 ? timeout_s : 600;
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
    __atomic_store_n(&c->h->magic, COMM_MAGIC, __ATOMIC_RELEASE);   /* ready for the others */
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

int sao_comm_rank(const sao_comm *c) { return c->rank; }
int sao_comm_world(const sao_comm *c) { return c->world; }
int64_t sao_comm_capacity(const sao_comm *c) { return c->capacity; }

int sao_comm_set_pid(sao_ctx *ctx, sao_comm *c, int rank, int64_t pid) {
    if (rank < 0 || rank >= c->world) return sao_err(ctx, "comm.set_pid", "rank %d outside 0..%d", rank, c->world - 1);
    __atomic_store_n(&c->pids[rank], pid, __ATOMIC_RELEASE);
    return 0;
}

/* The first rank whose process is gone, or -1. */
static int dead_rank(const sao_comm *c) {
    for (int r = 0; r < c->world; r++) {
        int64_t pid = __atomic_load_n(&c->pids[r], __ATOMIC_ACQUIRE);
        if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH) return r;
    }
    return -1;
}

void sao_comm_abort(sao_comm *c) {
    if (c) __atomic_store_n(&c->h->broken, 1, __ATOMIC_RELEASE);
}

int sao_comm_barrier(sao_ctx *ctx, sao_comm *c) {
    const char *op = "comm.barrier";
    if (__atomic_load_n(&c->h->broken, __ATOMIC_ACQUIRE))
        return sao_err(ctx, op, "rank %d: the group is broken (another rank failed)", c->rank);
    if (c->world == 1) return 0;
    uint64_t gen = __atomic_load_n(&c->h->generation, __ATOMIC_ACQUIRE);
    uint64_t n = __atomic_add_fetch(&c->h->arrived, 1, __ATOMIC_ACQ_REL);
    if (n == (uint64_t)c->world) {
        __atomic_store_n(&c->h->arrived, 0, __ATOMIC_RELAXED);
        __atomic_add_fetch(&c->h->generation, 1, __ATOMIC_ACQ_REL);
        return 0;
    }
    double t0 = mono_now(), checked = t0;
    long sleep_ns = 1000;
    for (long spin = 0;; spin++) {
        if (__atomic_load_n(&c->h->generation, __ATOMIC_ACQUIRE) != gen) return 0;
        if (spin < 2000) continue;
        if (__atomic_load_n(&c->h->broken, __ATOMIC_ACQUIRE))
            return sao_err(ctx, op, "rank %d: the group is broken (another rank failed)", c->rank);
        if (sao_interrupt_pending()) {
            sao_comm_abort(c);
            return sao_err(ctx, op, "rank %d: interrupted", c->rank);
        }
        double now = mono_now(), waited = now - t0;
        if (now - checked > 0.2) {
            checked = now;
            int r = dead_rank(c);
            if (r >= 0 && __atomic_load_n(&c->h->generation, __ATOMIC_ACQUIRE) == gen) {
                sao_comm_abort(c);
                return sao_err(ctx, op, "rank %d: rank %d (process %lld) has exited", c->rank, r,
                               (long long)c->pids[r]);
            }
        }
        if (waited > c->timeout_s) {
            sao_comm_abort(c);
            return sao_err(ctx, op, "rank %d waited %.0f s for %d of %d ranks (did a process die?)", c->rank,
                           waited, c->world - (int)__atomic_load_n(&c->h->arrived, __ATOMIC_ACQUIRE), c->world);
        }
        struct timespec ts = { 0, sleep_ns };
        nanosleep(&ts, NULL);
        if (sleep_ns < 1000000) sleep_ns *= 2;
    }
}

int sao_comm_allreduce_mean(sao_ctx *ctx, sao_comm *c, sao_tensor *const *ts, int n) {
    const char *op = "comm.allreduce";
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const sao_tensor *t = ts[i];
        if (t->dtype != SAO_F32) return sao_err(ctx, op, "tensor %d is %s, not f32", i + 1, sao_dtype_name(t->dtype));
        if (!sao_tensor_is_contiguous(t)) return sao_err(ctx, op, "tensor %d is not contiguous", i + 1);
        SAO_HOST_ONLY(ctx, op, t);
        total += sao_tensor_numel(t);
    }
    if (total > c->capacity)
        return sao_err(ctx, op, "%lld floats do not fit the group's %lld per rank (create it larger)",
                       (long long)total, (long long)c->capacity);
    if (c->world == 1) return 0;
    float *mine = c->slots + (int64_t)c->rank * c->capacity;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t k = sao_tensor_numel(ts[i]);
        memcpy(mine + off, sao_tensor_data(ts[i]), (size_t)k * sizeof(float));
        off += k;
    }
    if (sao_comm_barrier(ctx, c) != 0) return -1;
    const float inv = 1.0f / (float)c->world;
    off = 0;
    for (int i = 0; i < n; i++) {
        int64_t k = sao_tensor_numel(ts[i]);
        float *dst = sao_tensor_data(ts[i]);
        for (int64_t j = 0; j < k; j++) {
            float s = 0;
            for (int r = 0; r < c->world; r++) s += c->slots[(int64_t)r * c->capacity + off + j];
            dst[j] = s * inv;
        }
        off += k;
    }
    return sao_comm_barrier(ctx, c);   /* nobody refills a slot before every rank has read it */
}

void sao_comm_close(sao_comm *c) {
    if (!c) return;
    munmap(c->h, c->size);
    free(c);
}

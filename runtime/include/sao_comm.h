/* sao_comm.h — collectives between the processes of a data-parallel training run
 * (runtime/comm.c: the group and the file transport; runtime/comm_tcp.c: the TCP transport).
 *
 * A group is `world` processes, each with a `rank` in 0..world-1. Two transports carry it:
 *   file  one machine: the ranks share one file (mapped with mmap: on /dev/shm it never touches a
 *         disk) holding a barrier and one slot of `capacity` floats per rank. Rank 0 creates it
 *         (sao_comm_create) before it starts the others, which open it (sao_comm_open).
 *   tcp   any number of machines: rank 0 listens at "host:port" and is the rendezvous; every rank
 *         connects to it (sao_comm_tcp), learns the others' addresses and joins a ring (each rank
 *         sends to rank + 1 and receives from rank - 1) that carries the data. No capacity limit.
 *
 * Every collective takes a list of f32 contiguous host tensors, the same shapes on every rank, and
 * views them as one flat vector of `total` floats (the tensors in list order). Results are
 * bit-identical on every rank (each element is summed once, in an order fixed by the transport,
 * and that sum is what every rank receives):
 *   all-reduce (mean)      every element becomes the mean over the ranks
 *   reduce-scatter (mean)  only this rank's shard of the flat vector becomes the mean (the rest is
 *                          left with unspecified values); the shards are sao_comm_shard's
 *   all-gather             every rank's shard is copied into every other rank's vector
 *   broadcast              root's bytes are copied to every rank
 * A rank whose wait sees that another rank is gone (its process exited, its connection closed), or
 * that waits longer than `timeout_s`, fails with a message naming the rank; the group is then
 * marked broken and every later call fails at once. The GPU twin (NCCL, device tensors) is
 * sao_nccl.h. */
#ifndef SAO_COMM_H
#define SAO_COMM_H
#include "sao.h"
#ifdef __cplusplus
extern "C" {
#endif

typedef struct sao_comm sao_comm;

/* Creates (or truncates) the group file at `path` for `world` ranks of `capacity` floats each
 * and opens it as rank 0. */
sao_comm *sao_comm_create(sao_ctx *ctx, const char *path, int world, int64_t capacity, double timeout_s);
/* Opens an existing group file as `rank` (1..world-1); world and capacity are read from it. */
sao_comm *sao_comm_open(sao_ctx *ctx, const char *path, int rank, double timeout_s);
int sao_comm_rank(const sao_comm *c);
int sao_comm_world(const sao_comm *c);
/* Floats per rank a collective may carry (file transport); -1: no limit (tcp). */
int64_t sao_comm_capacity(const sao_comm *c);
/* Records the process of `rank` (rank 0 does it for the processes it starts; each rank records
 * its own when it opens the group), so that a wait notices a rank that died. */
int sao_comm_set_pid(sao_ctx *ctx, sao_comm *c, int rank, int64_t pid);
/* Waits until every rank has arrived. */
int sao_comm_barrier(sao_ctx *ctx, sao_comm *c);
/* Joins a group over TCP as `rank` of `world`. addr: "host:port" of rank 0 (rank 0 listens on
 * that port on every interface; the others connect, retrying until timeout_s). */
sao_comm *sao_comm_tcp(sao_ctx *ctx, const char *addr, int rank, int world, double timeout_s);
/* The same, and while the group forms it fails at once (instead of at the timeout) when one of the
 * n processes `pids` exits: this machine's other ranks, started by this one, that will join too. */
sao_comm *sao_comm_tcp_watching(sao_ctx *ctx, const char *addr, int rank, int world, double timeout_s,
                                const int64_t *pids, int n);
/* The transport's name: "file" or "tcp". */
const char *sao_comm_transport(const sao_comm *c);
/* The shard of a flat vector of `total` floats that `rank` owns in reduce-scatter and all-gather:
 * [lo, hi) with chunks of ceil(total / world) floats (the last ones shorter or empty). */
void sao_comm_shard(int64_t total, int world, int rank, int64_t *lo, int64_t *hi);
/* The collectives above, over the n tensors (f32, contiguous, on the host; with the file
 * transport at most `capacity` floats in all). */
int sao_comm_allreduce_mean(sao_ctx *ctx, sao_comm *c, sao_tensor *const *ts, int n);
int sao_comm_reduce_scatter_mean(sao_ctx *ctx, sao_comm *c, sao_tensor *const *ts, int n);
int sao_comm_allgather(sao_ctx *ctx, sao_comm *c, sao_tensor *const *ts, int n);
int sao_comm_broadcast(sao_ctx *ctx, sao_comm *c, void *buf, int64_t bytes, int root);
/* Marks the group broken (the others fail at their next wait instead of timing out). */
void sao_comm_abort(sao_comm *c);
void sao_comm_close(sao_comm *c);

#ifdef __cplusplus
}
#endif
#endif

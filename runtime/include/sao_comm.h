/* sao_comm.h — collectives between the processes of a data-parallel training run
 * (runtime/comm.c).
 *
 * A group is `world` processes on one machine, each with a `rank` in 0..world-1, that share one
 * file (mapped with mmap: on /dev/shm it never touches a disk). The file holds a barrier and one
 * slot of `capacity` floats per rank. Rank 0 creates it (sao_comm_create) before it starts the
 * others, which open it (sao_comm_open).
 *
 * all-reduce (mean) of a list of f32 host tensors: every rank copies its tensors into its slot,
 * waits at the barrier, then sums the slots in rank order (the same additions on every rank, so
 * every rank ends with bit-identical values), divides by world, and waits again before a slot may
 * be reused. A rank whose wait sees that another rank's process is gone, or that waits longer
 * than `timeout_s`, fails with a message naming the rank; the group is then marked broken and
 * every later call fails at once. A GPU run would use NCCL for the same collective (not built yet). */
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
int64_t sao_comm_capacity(const sao_comm *c);
/* Records the process of `rank` (rank 0 does it for the processes it starts; each rank records
 * its own when it opens the group), so that a wait notices a rank that died. */
int sao_comm_set_pid(sao_ctx *ctx, sao_comm *c, int rank, int64_t pid);
/* Waits until every rank has arrived. */
int sao_comm_barrier(sao_ctx *ctx, sao_comm *c);
/* Replaces each of the n tensors (f32, contiguous, on the host, the same shapes on every rank, at
 * most `capacity` floats in all) by the mean over the ranks. */
int sao_comm_allreduce_mean(sao_ctx *ctx, sao_comm *c, sao_tensor *const *ts, int n);
/* Marks the group broken (the others fail at their next wait instead of timing out). */
void sao_comm_abort(sao_comm *c);
void sao_comm_close(sao_comm *c);

#ifdef __cplusplus
}
#endif
#endif

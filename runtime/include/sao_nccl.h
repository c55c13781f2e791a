/* sao_nccl.h — collectives between the processes of a data-parallel run over DEVICE tensors, through
 * NCCL (kernels/cuda/nccl.cu): the GPU twin of sao_comm.h, with the same semantics.
 *
 * A communicator is `world` processes, one GPU each, `rank` in 0..world-1. NCCL is not linked: the
 * first call that needs it dlopens $SAO_NCCL_LIB, else "libnccl.so.2" (NCCL 2.10 or newer, for
 * ncclAvg); a machine without it gets a sao error saying so. Making one takes three steps:
 *   1. every rank checks it can take part (sao_nccl_ready: a visible device, NCCL loads);
 *   2. rank 0 makes a unique id (sao_nccl_unique_id, 128 bytes) and hands it to the others over a
 *      host transport (sao.comm's broadcast_string: lua/sao/nccl.lua does both steps);
 *   3. every rank calls sao_nccl_init with that id (a collective: it returns once all ranks came).
 *
 * Every collective takes a list of f32 contiguous tensors on the communicator's device, the same
 * shapes on every rank, and views them as ONE flat vector of `total` floats (the tensors in list
 * order):
 *   all-reduce (mean)      every element becomes the mean over the ranks
 *   reduce-scatter (mean)  only this rank's shard [lo, hi) of the flat vector becomes the mean (the
 *                          rest is left with unspecified values); shards are sao_comm_shard's
 *                          (chunks of ceil(total / world) floats, the last ones shorter or empty)
 *   all-gather             every rank's shard is copied into every other rank's vector
 *   broadcast              root's values are copied to every rank
 * The list is packed into one device staging buffer the communicator keeps (world * ceil(total /
 * world) floats, grown when needed), one in-place NCCL collective runs on sao's stream, and the
 * results are copied back: all of it queued on the stream, like a kernel (a copy to the host waits
 * for it). NCCL reduces each element once and hands that value to every rank, so results are
 * bit-identical on every rank; with 2 (or any power-of-two number of) ranks the mean is bit-identical
 * to sao_comm's too (whether NCCL scales before or after summing, the scaling is exact).
 * Each call makes the communicator's device current. A failed collective marks the communicator
 * broken: later calls fail at once (abort it and make a new one). A peer that dies in the middle of
 * a collective is NCCL's to notice (on a GPU, the kernel may wait for it indefinitely).
 * One thread at a time per communicator. */
#ifndef SAO_NCCL_H
#define SAO_NCCL_H
#include "sao.h"
#ifdef __cplusplus
extern "C" {
#endif

/* NCCL_UNIQUE_ID_BYTES: the ids below are arrays of this many bytes. */
#define SAO_NCCL_ID_BYTES 128

typedef struct sao_nccl sao_nccl;

/* 0 when this process can join a communicator on device `dev`: the CUDA backend loads, `dev` is a
 * visible device (made current), NCCL loads and is 2.10 or newer; *version (may be NULL) is NCCL's
 * version code (22809 for 2.28.9). Otherwise a sao error saying which and what to do. */
int sao_nccl_ready(sao_ctx *ctx, int dev, int *version /* out */);
/* A fresh id for a new communicator (rank 0 makes it; every rank passes it to sao_nccl_init). */
int sao_nccl_unique_id(sao_ctx *ctx, unsigned char id[128] /* out */);
/* Joins the communicator of `id` as `rank` of `world` on device `dev` (made current); returns
 * once every rank has joined. */
sao_nccl *sao_nccl_init(sao_ctx *ctx, const unsigned char id[128], int world, int rank, int dev);
/* The collectives above over the n tensors (f32, contiguous, on the communicator's device). */
int sao_nccl_allreduce_mean(sao_ctx *ctx, sao_nccl *c, sao_tensor *const *ts, int n);
int sao_nccl_reduce_scatter_mean(sao_ctx *ctx, sao_nccl *c, sao_tensor *const *ts, int n);
int sao_nccl_allgather(sao_ctx *ctx, sao_nccl *c, sao_tensor *const *ts, int n);
int sao_nccl_broadcast(sao_ctx *ctx, sao_nccl *c, sao_tensor *const *ts, int n, int root);
/* Frees the communicator (ncclCommDestroy) and its staging buffer. NULL: nothing. */
void sao_nccl_close(sao_nccl *c);
/* The same after a failure (ncclCommAbort: does not wait for the other ranks). NULL: nothing. */
void sao_nccl_abort(sao_nccl *c);

#ifdef __cplusplus
}
#endif
#endif

/* comm_internal.h — what a transport of sao_comm provides (runtime/comm.c: the group, its tensor
 * lists and the file transport; runtime/comm_tcp.c: TCP).
 *
 * comm.c checks the tensor lists. A transport with a `vec` op works on the tensors themselves (the
 * file transport: they are copied into and out of its slots anyway); for the others comm.c copies
 * them into one flat float buffer (`flat`), calls the transport on it and copies the results back.
 * Either way n floats (n <= capacity when the transport has one), the same n on every rank. */
#ifndef SAO_COMM_INTERNAL_H
#define SAO_COMM_INTERNAL_H
#include "internal.h"
#include "sao_comm.h"

/* A list of tensors as one vector: piece i is n[i] floats at p[i], in order; total = the sum. */
typedef struct {
    float *const *p;
    const int64_t *n;
    int count;
    int64_t total;
} comm_vec;

enum { COMM_ALLREDUCE, COMM_REDUCE_SCATTER, COMM_ALLGATHER };

typedef struct comm_ops {
    const char *name;
    /* the collective `kind` straight on the tensors (no flat copy); a transport without it has the
     * three flat ops below instead (comm.c uses vec when it is set) */
    int (*vec)(sao_ctx *ctx, sao_comm *c, int kind, const comm_vec *v);
    int (*barrier)(sao_ctx *ctx, sao_comm *c);
    int (*allreduce_mean)(sao_ctx *ctx, sao_comm *c, float *x, int64_t n);
    int (*reduce_scatter_mean)(sao_ctx *ctx, sao_comm *c, float *x, int64_t n);  /* own shard valid */
    int (*allgather)(sao_ctx *ctx, sao_comm *c, float *x, int64_t n);            /* own shard in, all out */
    int (*broadcast)(sao_ctx *ctx, sao_comm *c, void *buf, int64_t bytes, int root);
    void (*abort)(sao_comm *c);          /* mark broken; the others fail at their next wait */
    void (*close)(sao_comm *c);          /* free the transport's state (not c itself) */
} comm_ops;

struct sao_comm {
    const comm_ops *ops;
    int rank, world;
    int64_t capacity;                    /* floats per collective; -1: no limit */
    double timeout_s;
    int broken;                          /* this rank saw the group fail */
    const int64_t *watch;                /* processes whose exit fails a wait (the TCP start-up's local */
    int nwatch;                          /* ranks), or NULL; valid while sao_comm_tcp_watching runs */
    double watch_checked;                /* when they were last looked at */
    float *flat;                         /* the tensor lists, flattened (comm_flat) */
    int64_t flat_cap;
    void *t;                             /* the transport's state */
};

/* Seconds on a monotonic clock. */
double comm_now(void);
/* A zeroed group with the given transport (ops, rank, world, capacity, timeout), or NULL + error. */
sao_comm *comm_new(sao_ctx *ctx, const char *op, const comm_ops *ops, int rank, int world, int64_t capacity,
                   double timeout_s);
#endif

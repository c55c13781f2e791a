/* comm_internal.h — what a transport of sao_comm provides (runtime/comm.c: the group, its tensor
 * lists and the file transport; runtime/comm_tcp.c: TCP).
 *
 * comm.c checks the tensor lists, copies them into one flat float buffer (the transport's `flat`,
 * grown by comm_flat), calls the transport on it and copies the results back. A transport works on
 * that buffer: n floats (n <= capacity when the transport has one), the same n on every rank. */
#ifndef SAO_COMM_INTERNAL_H
#define SAO_COMM_INTERNAL_H
#include "internal.h"
#include "sao_comm.h"

typedef struct comm_ops {
    const char *name;
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

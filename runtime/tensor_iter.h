/* tensor_iter.h — an N-d strided iterator shared by copies, elementwise ops and reductions.
 * It walks all dimensions but the last ("inner") one; callers loop the inner dimension with
 * it.istride[k] themselves, which keeps the per-element cost to an add. Internal to runtime/. */
#ifndef SAO_TENSOR_ITER_H
#define SAO_TENSOR_ITER_H
#include "sao.h"

#define SAO_ITER_MAX 4

typedef struct {
    int ndim;                      /* outer dims (ndim-1 of the shape, at least 0) */
    int nops;
    int64_t shape[8];
    int64_t idx[8];
    int64_t stride[SAO_ITER_MAX][8];
    int64_t off[SAO_ITER_MAX];     /* current element offset of each operand at inner index 0 */
    int64_t inner;                 /* length of the inner loop */
    int64_t istride[SAO_ITER_MAX];
} sao_iter;

static inline void sao_iter_init(sao_iter *it, int ndim, const int64_t *shape, int nops,
                                 const int64_t *const *strides, const int64_t *offsets) {
    it->nops = nops;
    it->ndim = ndim > 0 ? ndim - 1 : 0;
    it->inner = ndim > 0 ? shape[ndim - 1] : 1;
    for (int k = 0; k < nops; k++) {
        it->off[k] = offsets[k];
        it->istride[k] = ndim > 0 ? strides[k][ndim - 1] : 0;
        for (int i = 0; i < it->ndim; i++) it->stride[k][i] = strides[k][i];
    }
    for (int i = 0; i < it->ndim; i++) { it->shape[i] = shape[i]; it->idx[i] = 0; }
}

/* Advances to the next inner row; returns 0 when done. */
static inline int sao_iter_next(sao_iter *it) {
    for (int i = it->ndim - 1; i >= 0; i--) {
        if (++it->idx[i] < it->shape[i]) {
            for (int k = 0; k < it->nops; k++) it->off[k] += it->stride[k][i];
            return 1;
        }
        it->idx[i] = 0;
        for (int k = 0; k < it->nops; k++) it->off[k] -= it->stride[k][i] * (it->shape[i] - 1);
    }
    return 0;
}

/* Element load/store as double, any dtype (tensor.c). */
double sao_load(int dtype, const void *p);
void sao_store(int dtype, void *p, double v);
/* Strides of `t` broadcast to `shape` (0 on broadcast dims); -1 if it does not broadcast. */
int sao_broadcast_strides(const sao_tensor *t, int ndim, const int64_t *shape, int64_t *strides);

#endif

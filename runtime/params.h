/* params.h — building parameter registries (internal side of sao_model.h's sao_params). A model
 * declares each parameter once with its upstream name and expected shape, keeping a pointer to
 * the slot where the bound f32 data will be found. */
#ifndef SAO_PARAMS_H
#define SAO_PARAMS_H
#include "sao_model.h"

sao_params *sao_params_new(const char *model_name);
void sao_params_free(sao_params *p);
/* Declares a parameter; `fmt` is a printf format for the name (e.g. "transformer.layers.%d.ff_norm.gamma").
 * The bound data pointer is written to *slot on bind. Returns -1 on out of memory. */
int sao_params_add(sao_params *p, float **slot, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Marks the last added parameter optional (a buffer that may be absent, e.g. a zero LayerNorm beta). */
void sao_params_optional(sao_params *p);
#endif

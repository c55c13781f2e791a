/* dit_cuda_off.c — the DiT's device entry points in a CPU-only build: moving the weights to a GPU
 * says clearly that sao was built without CUDA; moving them back is a no-op (they never left).
 * Compiled only when the CUDA backend is not (kernels/cuda/dit_device.cu replaces it). */
#include "dit_internal.h"

#ifndef SAO_WITH_CUDA
static const char *why = "sao was built without CUDA (no nvcc found, or CUDA=0): rebuild with the CUDA toolkit, "
                         "or keep the model on the CPU";

int sao_dit_to_device(sao_ctx *ctx, sao_dit *m, int device) {
    SAO_UNUSED(m);
    return sao_err(ctx, "dit_to_device", "device %d: %s", device, why);
}

int sao_dit_to_host(sao_ctx *ctx, sao_dit *m) {
    SAO_UNUSED(ctx); SAO_UNUSED(m);
    return 0;
}

/* Unreachable here (no model is ever on a device), kept total all the same. */
int dit_device_begin(sao_ctx *ctx, sao_dit *m) {
    SAO_UNUSED(m);
    return sao_err(ctx, "dit_forward", "%s", why);
}

float *dit_device_ws(sao_ctx *ctx, sao_dit *m, size_t floats) {
    SAO_UNUSED(m); SAO_UNUSED(floats);
    return sao_err_null(ctx, "dit_forward", "%s", why);
}

void dit_device_release(sao_dit *m) { SAO_UNUSED(m); }
#endif

/* rng.c — counter-based random numbers (Philox4x32-10, Salmon et al. 2011).
 *
 * A fill is a pure function of (seed, offset, element index): element i takes lane i%4 of the
 * block with counter (i/4 + offset) and key seed. So results do not depend on the thread count,
 * on the order elements are produced, or (later) on the device: the CUDA twin computes the same
 * blocks. Uniforms use the top 24 bits: (u >> 8) * 2^-24 in [0, 1). Normals use Box-Muller on
 * lanes (0,1) and (2,3) of the block: r = sqrt(-2 ln(1 - u0)), z0 = r cos(2π u1), z1 = r sin(2π u1). */
#include "internal.h"
#include "tensor_iter.h"
#include "sao_cuda.h"
#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void sao_philox4x32(uint64_t counter, uint64_t key, uint32_t *out4) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out4[0] = c0; out4[1] = c1; out4[2] = c2; out4[3] = c3;
}

static double u01(uint32_t u) { return (double)(u >> 8) * (1.0 / 16777216.0); }

/* Value of element i of a fill. */
static double rand_at(uint64_t i, uint64_t seed, uint64_t offset, int normal) {
    uint32_t b[4];
    sao_philox4x32(i / 4 + offset, seed, b);
    int lane = (int)(i % 4);
    if (!normal) return u01(b[lane]);
    int pair = lane / 2;
    double ua = u01(b[2 * pair]), ub = u01(b[2 * pair + 1]);
    double r = sqrt(-2.0 * log(1.0 - ua));
    double th = 2.0 * M_PI * ub;
    return (lane % 2 == 0) ? r * cos(th) : r * sin(th);
}

int sao_rand_fill(sao_ctx *ctx, sao_tensor *t, uint64_t seed, uint64_t offset, int normal) {
    if (t->storage->device != SAO_CPU) return sao_cuda_rand_fill(ctx, t, seed, offset, normal);
    if (!sao_tensor_is_contiguous(t))
        return sao_err(ctx, normal ? "randn" : "rand", "target tensor must be contiguous");
    int64_t n = sao_tensor_numel(t);
    char *d = sao_tensor_data(t);
    size_t es = sao_dtype_size(t->dtype);
    sao_threads_apply(ctx);
#pragma omp parallel for if (n > 65536) schedule(static)
    for (int64_t i = 0; i < n; i++) sao_store(t->dtype, d + (size_t)i * es, rand_at((uint64_t)i, seed, offset, normal));
    return 0;
}

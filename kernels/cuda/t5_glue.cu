// t5_glue.cu — the T5 encoder's own device steps (declared in runtime/cuda_glue.h): the embedding
// gather, the relative-position bias built from the bucket list, and the zeroing of padded rows.
// runtime/t5.c builds its CUDA kernel table (t5_ops) from these, the sao_cuda_ kernel twins and
// the shared helpers of cuda_glue.h; runtime/cuda_load.c answers for them without the backend. Each
// kernel writes exactly the values of t5.c's CPU loop (plain copies), so the twins agree bit for bit.
#include "cuda_internal.h"
extern "C" {
#include "cuda_glue.h"
}
#include <stdint.h>

// h [n, d] = table[ids[i]]: one element per thread (ids checked against the vocabulary by t5.c)
__global__ static void t5_embed_kernel(const float *table, const int64_t *ids, long long n, long long d, float *h) {
    SAO_GRID_STRIDE(e, n * d) {
        long long i = e / d, c = e - i * d;
        h[e] = table[(long long)ids[i] * d + c];
    }
}

extern "C" int sao_cuda_t5_embed(sao_ctx *ctx, const float *table, const int64_t *ids, int64_t n, int64_t d, float *h) {
    if (n <= 0 || d <= 0) return 0;
    long long total = (long long)n * d;
    t5_embed_kernel<<<sao_cuda_stride_blocks(total), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(
        table, ids, (long long)n, (long long)d, h);
    CUDA_LAUNCHED(ctx, "t5_embed");
    return 0;
}

// bias [H, L, L]: bias[h, i, j] = rel[bk[j - i + L - 1] * H + h]
__global__ static void t5_bias_kernel(const float *rel, const int32_t *bk, long long H, long long L, float *bias) {
    SAO_GRID_STRIDE(e, H * L * L) {
        long long j = e % L, r = e / L, i = r % L, hh = r / L;
        bias[e] = rel[(long long)bk[j - i + L - 1] * H + hh];
    }
}

extern "C" int sao_cuda_t5_bias(sao_ctx *ctx, const float *rel, const int32_t *bk, int64_t H, int64_t L, float *bias) {
    if (H <= 0 || L <= 0) return 0;
    long long total = (long long)H * L * L;
    t5_bias_kernel<<<sao_cuda_stride_blocks(total), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(
        rel, bk, (long long)H, (long long)L, bias);
    CUDA_LAUNCHED(ctx, "t5_bias");
    return 0;
}

// rows i of x [n, d] with km[i] == 0 set to 0
__global__ static void t5_mask_rows_kernel(float *x, const uint8_t *km, long long n, long long d) {
    SAO_GRID_STRIDE(e, n * d) {
        if (!km[e / d]) x[e] = 0.0f;
    }
}

extern "C" int sao_cuda_t5_mask_rows(sao_ctx *ctx, float *x, const uint8_t *km, int64_t n, int64_t d) {
    if (n <= 0 || d <= 0) return 0;
    long long total = (long long)n * d;
    t5_mask_rows_kernel<<<sao_cuda_stride_blocks(total), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(
        x, km, (long long)n, (long long)d);
    CUDA_LAUNCHED(ctx, "t5_mask_rows");
    return 0;
}

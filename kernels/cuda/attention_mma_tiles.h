// attention_mma_tiles.h — the WMMA steps the bf16 flash-attention kernels share (attention_mma.cu's
// forward, attention_mma_bwd.cu's backward). A warp owns 16 rows; a tile holds NT chunks of 16 rows
// (64 rows: NT = 4) of a bf16 matrix D = 16 DC wide, row-major in shared memory with pitch BP.
// Only the first nc chunks hold rows (the last tile of a sequence); fragments are never read
// element by element (CUDA leaves their lane mapping unspecified): fp32 results go through shared
// memory. Loops are unrolled with a guard so fragment arrays stay in registers.
#ifndef SAO_ATTENTION_MMA_TILES_H
#define SAO_ATTENTION_MMA_TILES_H
#include <cuda_bf16.h>
#include <mma.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, bf16, nvcuda::wmma::row_major> frag_a;
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, bf16, nvcuda::wmma::col_major> frag_bt;   // X^T of row-major X
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, bf16, nvcuda::wmma::row_major> frag_b;
typedef nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> frag_c;

// Dynamic shared memory is only promised 16-byte alignment: a launch asks for MMA_SMEM_SLACK bytes
// more and the kernel starts its regions at mma_smem_base (128-byte aligned).
#define MMA_SMEM_SLACK 128
__device__ static inline char *mma_smem_base(float *sm) {
    return (char *)(((uintptr_t)sm + (MMA_SMEM_SLACK - 1)) & ~(uintptr_t)(MMA_SMEM_SLACK - 1));
}

// The block's work item: blockIdx.x counts (batch, head, tile) with the tile fastest, tiles of
// `rows` rows over n rows and `heads` heads per batch item. Returns the tile's first row.
__device__ static inline long long mma_block_tile(long long n, int rows, long long heads, long long *head,
                                                  long long *batch) {
    const long long tiles = (n + rows - 1) / rows, blk = (long long)blockIdx.x;
    *head = (blk / tiles) % heads;
    *batch = blk / (tiles * heads);
    return (blk % tiles) * rows;
}

// A query-tile block's coordinates (the forward's and the dQ kernel's: one block per (b, h, tile of
// `rows` queries), 16 rows per warp, two lanes per row): the tile's first query t0, head h, its K/V
// head kh, batch b; K and V of that head (kb, vb), the batch row's key mask (mb, NULL without one);
// this lane's row of the tile, its half of the keys, its query t and the bias row (NULL without a
// bias or past T).
struct mma_qtile {
    long long t0, h, kh, b, t;
    int lane, warp, row, half;
    const float *kb, *vb, *brow;
    const uint8_t *mb;
};
__device__ static inline mma_qtile mma_qtile_at(const sao_attn_geo &g, int rows, const float *k, const float *v,
                                                const float *bias, const uint8_t *mask) {
    mma_qtile q;
    q.t0 = mma_block_tile(g.T, rows, g.H, &q.h, &q.b);
    q.kh = q.h / g.G;
    q.lane = threadIdx.x & 31;
    q.warp = threadIdx.x >> 5;
    q.kb = k + q.b * g.sk[0] + q.kh * g.sk[1];
    q.vb = v + q.b * g.sv[0] + q.kh * g.sv[1];
    q.mb = mask ? mask + q.b * g.M : NULL;
    q.row = q.warp * 16 + (q.lane >> 1);
    q.half = q.lane & 1;
    q.t = q.t0 + q.row;
    q.brow = bias && q.t < g.T ? bias + (q.h * g.T + q.t) * g.M : NULL;
    return q;
}

// n rows [r0, r0 + n) of a strided fp32 block (row stride rs; rows past `rows` zero) rounded into
// bf16 rows of pitch D + 8, by the whole block, coalesced along each row.
__device__ static inline void mma_load_rows(bf16 *dst, const float *base, long long rs, long long r0, long long rows,
                                            int n, int D) {
    for (int i = threadIdx.x; i < n * D; i += blockDim.x) {
        int r = i / D, d = i - r * D;
        long long t = r0 + r;
        dst[r * (D + 8) + d] = __float2bfloat16_rn(t < rows ? base[t * rs + d] : 0.0f);
    }
}

// The opt-in above 48 KB of dynamic shared memory for `kernel` on the current device, once:
// done[dev] remembers it (one array per kernel instantiation, owned by the caller). The first
// call of a kernel runs eagerly (a CUDA graph captures only a repeated call), so a capture never
// makes it. `what` names the kernel in the error.
template <class K>
static int mma_smem_optin(sao_ctx *ctx, const char *op, const char *what, int D, K *kernel, size_t smem,
                          int done[SAO_CUDA_SCRATCH_DEVICES]) {
    int dev = 0;
    CUDA_TRY(ctx, op, cudaGetDevice(&dev));
    if (dev < 0 || dev >= SAO_CUDA_SCRATCH_DEVICES)
        return sao_err(ctx, op, "device %d: only devices below %d are supported", dev, SAO_CUDA_SCRATCH_DEVICES);
    if (done[dev]) return 0;
    int most = 0;
    CUDA_TRY(ctx, op, cudaDeviceGetAttribute(&most, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if ((size_t)most < smem)
        return sao_err(ctx, op, "the bf16 attention %s needs %zu bytes of shared memory per block at D=%d, the "
                       "device allows %d (sao.cuda.attention_impl(\"cublas\") avoids it)", what, smem, D, most);
    CUDA_TRY(ctx, op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    done[dev] = 1;
    return 0;
}

// S [16][ldS] (fp32, this warp's rows) = A X^T: A the warp's 16 rows as DC fragments (16 x D), X the
// tile's rows; column chunk n of S is X's row chunk n (chunks n >= nc are left alone).
template <int DC, int NT>
__device__ static inline void mma_tile_xt(float *S, int ldS, const frag_a *a, const bf16 *X, int BP, int nc) {
#pragma unroll
    for (int n = 0; n < NT; n++) {
        if (n >= nc) break;
        frag_c acc;
        nvcuda::wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int c = 0; c < DC; c++) {
            frag_bt x;
            nvcuda::wmma::load_matrix_sync(x, X + n * 16 * BP + c * 16, BP);
            nvcuda::wmma::mma_sync(acc, a[c], x, acc);
        }
        nvcuda::wmma::store_matrix_sync(S + n * 16, acc, ldS, nvcuda::wmma::mem_row_major);
    }
}

// p[n] = the 16 x 16 chunk n of P [16][ldP] (bf16, this warp's rows), for n < nc.
template <int NT>
__device__ static inline void mma_load_row_chunks(frag_a *p, const bf16 *P, int ldP, int nc) {
#pragma unroll
    for (int n = 0; n < NT; n++)
        if (n < nc) nvcuda::wmma::load_matrix_sync(p[n], P + n * 16, ldP);
}

// acc [16][FP] (fp32, this warp's rows) += P Y: P the warp's 16 rows as nc fragments (16 x 16 nc,
// mma_load_row_chunks), Y the tile's first 16 nc rows; per 16 of the D columns, the accumulator
// loaded from and stored back to shared memory.
template <int DC, int NT>
__device__ static inline void mma_tile_acc(float *acc, int FP, const frag_a *p, const bf16 *Y, int BP, int nc) {
#pragma unroll
    for (int c = 0; c < DC; c++) {
        frag_c o;
        nvcuda::wmma::load_matrix_sync(o, acc + c * 16, FP, nvcuda::wmma::mem_row_major);
#pragma unroll
        for (int n = 0; n < NT; n++) {
            if (n >= nc) break;
            frag_b y;
            nvcuda::wmma::load_matrix_sync(y, Y + n * 16 * BP + c * 16, BP);
            nvcuda::wmma::mma_sync(o, p[n], y, o);
        }
        nvcuda::wmma::store_matrix_sync(acc + c * 16, o, FP, nvcuda::wmma::mem_row_major);
    }
}
#endif

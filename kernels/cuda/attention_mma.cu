#include "cuda_internal.h"
// attention_mma.cu — the attention forward on bf16 tensor cores (WMMA), flash-attention-2's
// algorithm: no T x M matrix leaves the chip, nothing is allocated, no scratch in device memory.
// It replaces, in the bf16 GEMM precision mode (sao_cuda_gemm_precision), both forward paths of
// attention.cu for head dims D a multiple of 16 up to 128 (SAO and T5-base: 64): the cuBLAS one,
// which forms S = scale Q K^T in a [B, H, T, M] scratch (201 MB at SAO's CFG shape, read and
// written ~4 times per layer), and the fp32 flash kernel (bias or key mask: T5). Same arguments,
// strides, grouped K/V heads, bias [H, T, M], key mask [B, M] and conventions as the CPU kernel
// (kernels/cpu/attention.c): lse[b,h,t] = logsumexp of the row's logits, a fully masked row gives
// out 0 and lse -inf. The backward is attention_mma_bwd.cu's (it recomputes P from lse).
//
//   S = scale * Q K^T + bias (-inf where the key mask is 0),  P = softmax_rows(S),  O = P V
//
// One block per (b, h, 64-query tile), 4 warps, warp w owning query rows 16w .. 16w+15:
//   Q tile      read once (fp32, the q strides), rounded to bf16 into shared memory [64][D+8];
//               each warp keeps its D/16 A fragments in registers
//   key tiles   64 keys at a time: K and V rounded to bf16 into shared memory [64][D+8]
//               (zero past M); for the warp's 16 rows:
//     S         = Q K^T by WMMA (16x16x16, fp32 accumulators) into shared fp32 [16][68], only
//               the 16-key chunks that hold keys
//     softmax   two lanes per row, 32 keys each, fp32: s = scale * acc + bias (-inf: masked or
//               past M), running max m and sum l (of the fp32 p), the row's output rescaled by
//               exp(m_old - m) in shared memory, P = exp(s - m) rounded to bf16 into [16][72]
//     O        += P V by WMMA: the output accumulator lives in shared fp32 [64][D+4], loaded into
//               an accumulator fragment, multiplied onto and stored back per 16 dims (the
//               rescale is done elementwise on shared memory, never through a fragment's
//               elements, whose lane mapping CUDA leaves unspecified)
//   end         out = O / l (fp32, the out strides, written by the whole block row by row),
//               lse = m + log(l).
// Precision: Q, K, V and P are rounded to bf16 (8 significant bits); every sum, the softmax and
// the output are fp32. Against the CPU kernel on bf16-rounded inputs the only differences are
// the summation order and P's rounding (spec/cuda_flash_spec.lua).
// Shared memory: 3 * 64 (D+8) * 2 + 64*68*4 + 64*72*2 + 64 (D+4) * 4 + 256 bytes (70 KB at D=64,
// 110 KB at D=128: above the 48 KB default, so the kernel opts in once per device).
// Determinism: every value is computed by a fixed set of threads in a fixed order, no atomics:
// bit-reproducible run to run (the tensor cores' own accumulation order is fixed per GPU).
// CUDA graphs: launches on sao_cuda_stream(), allocates and synchronises nothing (the shared
// memory opt-in is made on the first, eager, call).
extern "C" {
#include "sao_cuda_attn.h"
#include "sao_cuda.h"
#include "../cpu/kcheck.h"
}
#include "attention_mma.h"
#include "attention_mma_tiles.h"
#include <math.h>
#include <stdint.h>

using namespace nvcuda;

#define MQ 64          // queries per block
#define MK 64          // keys per tile
#define MW 4           // warps per block, 16 query rows each
#define SPITCH (MK + 4)   // S rows (floats)
#define PPITCH (MK + 8)   // P rows (bf16)
#define MMA_MAX_D 128


// Row pitches: bf16 rows D + 8, fp32 rows D + 4. Both keep every 16-row, 16-column fragment
// 32-byte aligned and ldm a multiple of 8 (bf16) / 4 (float), as WMMA requires, and shift
// consecutive rows by 16 bytes (fewer bank conflicts).
__host__ __device__ static inline int bf_pitch(int D) { return D + 8; }
__host__ __device__ static inline int f_pitch(int D) { return D + 4; }

// The shared-memory regions, in bytes from a 128-byte aligned base (each a multiple of 32 bytes).
struct mma_smem {
    size_t q, k, v, s, p, o, inv, total;
};
__host__ __device__ static inline mma_smem smem_plan(int D) {
    mma_smem m;
    size_t tile = (size_t)MQ * bf_pitch(D) * sizeof(bf16);   // MQ == MK
    m.q = 0;
    m.k = m.q + tile;
    m.v = m.k + tile;
    m.s = m.v + tile;
    m.p = m.s + (size_t)MQ * SPITCH * sizeof(float);
    m.o = m.p + (size_t)MQ * PPITCH * sizeof(bf16);
    m.inv = m.o + (size_t)MQ * f_pitch(D) * sizeof(float);
    m.total = m.inv + MQ * sizeof(float);
    return m;
}
// Grid: B * H * ceil(T / MQ) blocks of MW warps. DC = D / 16.
template <int DC>
__global__ static void __launch_bounds__(MW * 32)
attn_fwd_mma(sao_attn_geo g, const float *q, const float *k, const float *v, const float *bias,
             const uint8_t *mask, float *out, float *lse) {
    extern __shared__ float sm[];
    constexpr int D = DC * 16, BP = D + 8, FP = D + 4;
    const mma_smem plan = smem_plan(D);
    char *base = mma_smem_base(sm);
    bf16 *Qs = (bf16 *)(base + plan.q), *Ks = (bf16 *)(base + plan.k), *Vs = (bf16 *)(base + plan.v);
    float *Ss = (float *)(base + plan.s), *Os = (float *)(base + plan.o), *inv = (float *)(base + plan.inv);
    bf16 *Ps = (bf16 *)(base + plan.p);

    // the block's tile; this lane's softmax row (two lanes per row), half of its keys / output dims
    const mma_qtile at = mma_qtile_at(g, MQ, k, v, bias, mask);
    const long long t0 = at.t0, h = at.h, b = at.b, t = at.t;
    const int lane = at.lane, warp = at.warp, row = at.row, half = at.half;
    const float *kb = at.kb, *vb = at.vb, *brow = at.brow;
    const uint8_t *mb = at.mb;
    float *orow = Os + row * FP;
    float *Sw = Ss + warp * 16 * SPITCH;
    bf16 *Pw = Ps + warp * 16 * PPITCH;
    float *Ow = Os + warp * 16 * FP;

    mma_load_rows(Qs, q + b * g.sq[0] + h * g.sq[1], g.sq[2], t0, g.T, MQ, D);
    for (int i = threadIdx.x; i < MQ * FP; i += blockDim.x) Os[i] = 0.0f;
    __syncthreads();
    frag_a qf[DC];
#pragma unroll
    for (int c = 0; c < DC; c++) wmma::load_matrix_sync(qf[c], Qs + warp * 16 * BP + c * 16, BP);

    float m_run = -INFINITY, l_run = 0.0f;
    for (long long j0 = 0; j0 < g.M; j0 += MK) {
        const int nk = g.M - j0 < MK ? (int)(g.M - j0) : MK, nkc = (nk + 15) / 16;
        __syncthreads();   // the previous tile's K and V are used up
        mma_load_rows(Ks, kb, g.sk[2], j0, g.M, MK, D);
        mma_load_rows(Vs, vb, g.sv[2], j0, g.M, MK, D);
        __syncthreads();

        // S = Q K^T for the warp's 16 rows, the key chunks that hold keys
        mma_tile_xt<DC, MK / 16>(Sw, SPITCH, qf, Ks, BP, nkc);
        __syncwarp();

        // online softmax of this lane's half row: keys j0 + half*32 + [0, 32)
        float s[32];
        float mx = -INFINITY;
        const float *srow = Sw + (lane >> 1) * SPITCH + half * 32;
#pragma unroll
        for (int i = 0; i < 32; i++) {
            const int jj = half * 32 + i;
            float x = -INFINITY;
            if (jj < nk && (!mb || mb[j0 + jj])) {
                x = srow[i] * g.scale;
                if (brow) x += brow[j0 + jj];
            }
            s[i] = x;
            mx = fmaxf(mx, x);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float m_new = fmaxf(m_run, mx);
        float corr = 1.0f, sum = 0.0f;
        if (m_new != -INFINITY) {   // -inf: every key of the row so far is masked, nothing to add
            corr = expf(m_run - m_new);
#pragma unroll
            for (int i = 0; i < 32; i++) {
                float p = expf(s[i] - m_new);
                s[i] = p;
                sum += p;
            }
        } else {
#pragma unroll
            for (int i = 0; i < 32; i++) s[i] = 0.0f;
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);   // both lanes of the row get the same bits
        l_run = l_run * corr + sum;
        m_run = m_new;
        bf16 *prow = Pw + (lane >> 1) * PPITCH + half * 32;
#pragma unroll
        for (int i = 0; i < 32; i++) prow[i] = __float2bfloat16_rn(s[i]);
        for (int d = half * (D / 2); d < (half + 1) * (D / 2); d++) orow[d] *= corr;
        __syncwarp();

        // O += P V for the warp's rows: P's fragments once, then per 16 output dims
        frag_a pf[MK / 16];
        mma_load_row_chunks<MK / 16>(pf, Pw, PPITCH, nkc);
        mma_tile_acc<DC, MK / 16>(Ow, FP, pf, Vs, BP, nkc);
        __syncwarp();   // the rescale of the next tile reads what other lanes stored
    }

    if (half == 0) {
        inv[row] = l_run > 0.0f ? 1.0f / l_run : 0.0f;
        if (lse && t < g.T) lse[(b * g.H + h) * g.T + t] = l_run > 0.0f ? m_run + logf(l_run) : -INFINITY;
    }
    __syncthreads();
    const long long nq = g.T - t0 < MQ ? g.T - t0 : MQ;
    float *ob = out + b * g.so[0] + h * g.so[1];
    for (int i = threadIdx.x; i < nq * D; i += blockDim.x) {
        int r = i / D, d = i - r * D;
        ob[(t0 + r) * g.so[2] + d] = Os[r * FP + d] * inv[r];
    }
}

// ---- host --------------------------------------------------------------------------------------
bool sao_cuda_attn_mma_fits(const sao_attn_geo *g) {
    return g->D % 16 == 0 && g->D <= MMA_MAX_D;
}

// Per head-dim class and device: the shared-memory opt-in made (mma_smem_optin).
static int optin_done[MMA_MAX_D / 16 + 1][SAO_CUDA_SCRATCH_DEVICES];

template <int DC>
static int launch(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q, const float *k,
                  const float *v, const float *bias, const uint8_t *mask, float *out, float *lse) {
    const size_t smem = smem_plan(DC * 16).total + MMA_SMEM_SLACK;
    if (mma_smem_optin(ctx, op, "kernel", DC * 16, attn_fwd_mma<DC>, smem, optin_done[DC])) return -1;
    long long blocks = g->B * g->H * ((g->T + MQ - 1) / MQ);
    if (blocks > 2147483647LL)
        return sao_err(ctx, op, "%lld blocks exceed the CUDA grid (split the batch)", blocks);
    attn_fwd_mma<DC><<<(unsigned)blocks, MW * 32, smem, sao_cuda_stream()>>>(*g, q, k, v, bias, mask, out, lse);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

// Called by sao_cuda_attention_forward after its checks (M > 0, T > 0, B > 0, device pointers).
int sao_cuda_attn_mma_forward(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q,
                                         const float *k, const float *v, const float *bias,
                                         const uint8_t *mask, float *out, float *lse) {
    if (!sao_cuda_attn_mma_fits(g))
        return sao_err(ctx, op, "head dim D=%lld: the bf16 attention kernel needs a multiple of 16 up to %d",
                       (long long)g->D, MMA_MAX_D);
    switch (g->D / 16) {
    case 1: return launch<1>(ctx, op, g, q, k, v, bias, mask, out, lse);
    case 2: return launch<2>(ctx, op, g, q, k, v, bias, mask, out, lse);
    case 3: return launch<3>(ctx, op, g, q, k, v, bias, mask, out, lse);
    case 4: return launch<4>(ctx, op, g, q, k, v, bias, mask, out, lse);
    case 5: return launch<5>(ctx, op, g, q, k, v, bias, mask, out, lse);
    case 6: return launch<6>(ctx, op, g, q, k, v, bias, mask, out, lse);
    case 7: return launch<7>(ctx, op, g, q, k, v, bias, mask, out, lse);
    default: return launch<8>(ctx, op, g, q, k, v, bias, mask, out, lse);
    }
}

#include "cuda_internal.h"
// attention_mma_bwd.cu — the attention backward on bf16 tensor cores (WMMA), flash-attention-2's
// algorithm, the twin of attention_mma.cu's forward: no T x M matrix leaves the chip, the only
// device scratch is delta [B, H, T] (from the caching allocator). It replaces, in the bf16 GEMM
// precision mode (sao_cuda_gemm_precision) with sao_cuda_attention_impl "auto", both backward paths
// of attention.cu for head dims D a multiple of 16 up to 128: the cuBLAS one, which recomputes
// P = exp(S - lse) into a [B, H, T, M] scratch and dS into a second one (2 x 1.6 GB per attention
// at SAO's training shape B=16, H=24, T=M=1025), and the fp32 flash kernels (bias or key mask:
// T5) when no dbias is asked for (a dbias keeps attention.cu's fp32 kernels: its sum over the
// batch would need the dQ kernel to walk every b, as attention.cu's does). Same arguments,
// strides, grouped K/V heads, bias [H, T, M], key mask [B, M] and conventions as the CPU kernel
// (kernels/cpu/attention.c): P is recomputed from the forward's lse (-inf: a fully masked row,
// which contributes nothing), and dq, dk, dv are ACCUMULATED into (+=).
//
//   P = exp(scale * Q K^T + bias - lse),  dP = dO V^T,  dS = P (dP - delta),  delta = rowsum(dO * O)
//   dV += P^T dO,  dK += scale dS^T Q,  dQ += scale dS K
//
// Three launches on sao_cuda_stream():
//   delta   one warp per row (b, h, t): rowsum(dO * O) in fp32 through the out strides, into the
//           scratch [B, H, T]
//   dK/dV   one block per (b, kv head, 64-key tile), 4 warps, warp w owning keys 16w .. 16w+15:
//           its K and V rows rounded to bf16 and kept as A fragments in registers (staged once
//           through shared memory). For each of the G query heads of the kv head in order, and
//           each 64-query tile in order: Q and dO rounded to bf16 into shared [64][D+8], lse and
//           delta of the tile's rows into shared; per warp, on its 16 keys:
//             S^T  = K Q^T and dP^T = V dO^T by WMMA into shared fp32 [16][68] (per warp)
//             P^T  = exp(scale S^T + bias - lse), dS^T = P^T (dP^T - delta), fp32, two lanes per
//                    key, 32 queries each; both rounded to bf16 IN PLACE over their fp32 tiles
//                    (every lane reads its values before any lane writes: a __syncwarp between)
//             dV  += P^T dO and dK += dS^T Q by WMMA onto fp32 accumulators in shared [64][D+4],
//                    loaded into a fragment, multiplied onto and stored back per 16 dims
//           end: dk += scale dK, dv += dV (fp32, the k / v strides, by the whole block).
//   dQ      one block per (b, h, 64-query tile), 4 warps, warp w owning query rows 16w .. 16w+15:
//           its Q and dO rows as bf16 A fragments in registers (staged once through shared
//           memory); per 64-key tile in order: K and V rounded to bf16 into shared [64][D+8];
//           per warp: S = Q K^T, dP = dO V^T by WMMA, P and dS in fp32 as above (dS rounded to
//           bf16 in place), dQ += dS K by WMMA onto a shared fp32 accumulator; end: dq += scale dQ.
//           S, P and dS are recomputed here rather than shared with the dK/dV kernel: dQ's sum runs
//           over keys, dK/dV's over queries, and splitting the work this way needs no atomics.
// Precision: Q, K, V, dO, P and dS are rounded to bf16 (8 significant bits) as WMMA operands;
// P, dS, lse, delta, every sum and every accumulator are fp32. Against the CPU kernel's backward on
// bf16-rounded inputs (dO included) the differences are the summation order and the roundings of
// P (in dV) and dS (in dK, dQ) (spec/cuda_flash_spec.lua).
// Shared memory (bytes, from a 128-byte aligned base): dK/dV 2*64(D+8)*2 + 2*64*68*4 +
// 2*64(D+4)*4 + 512 (104 KB at D=64, 135 KB at D=128); dQ 2*64(D+8)*2 + 2*64*68*4 + 64(D+4)*4 +
// 512 (87 KB at D=64, 102 KB at D=128): above the 48 KB default, so each kernel opts in once per
// device; within an A100's 163 KB.
// Determinism: every value is computed by a fixed set of threads in a fixed order (GQA's sum over
// the query heads of a kv head is the dK/dV block's loop over them), no atomics: bit-reproducible
// run to run (the tensor cores' own accumulation order is fixed per GPU).
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

#define BT 64             // rows (queries or keys) per tile; MW warps of 16
#define MW 4              // warps per block
#define SPITCH (BT + 4)   // fp32 S / dP rows (floats)
#define PPITCH (BT + 8)   // bf16 P / dS rows, written in place over the fp32 ones (bf16 elements)
#define MMA_MAX_D 128


// Row pitches as attention_mma.cu's: bf16 rows D + 8, fp32 rows D + 4 (every fragment 32-byte
// aligned, ldm a multiple of 8 / 4 elements, consecutive rows 16 bytes apart in the banks).
// The bf16 P / dS rows (pitch PPITCH) of a warp's 16 rows take 16 * 144 bytes of the 16 * 272 of
// its fp32 rows, starting at the same (32-byte aligned) address.

// The shared-memory regions, in bytes from a 128-byte aligned base (each a multiple of 32 bytes):
// two bf16 tiles a, b; the fp32 S and dP [64][SPITCH]; `nacc` fp32 accumulators [64][D+4]; the
// rows' lse and delta [64] each.
struct bwd_smem {
    size_t a, b, s, dp, acc, ls, dr, total;
};
__host__ __device__ static inline bwd_smem smem_plan(int D, int nacc) {
    bwd_smem m;
    size_t tile = (size_t)BT * (D + 8) * sizeof(bf16);
    m.a = 0;
    m.b = m.a + tile;
    m.s = m.b + tile;
    m.dp = m.s + (size_t)BT * SPITCH * sizeof(float);
    m.acc = m.dp + (size_t)BT * SPITCH * sizeof(float);
    m.ls = m.acc + (size_t)nacc * BT * (D + 4) * sizeof(float);
    m.dr = m.ls + BT * sizeof(float);
    m.total = m.dr + BT * sizeof(float);
    return m;
}
// delta[b,h,t] = sum_d dO * O (fp32, d in order), one warp per row: lane-strided, then a butterfly.
__global__ static void attn_mma_delta(sao_attn_geo g, const float *out, const float *dout, float *delta) {
    long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (row >= g.B * g.H * g.T) return;   // the whole warp: one row per warp
    long long t = row % g.T, h = (row / g.T) % g.H, b = row / (g.T * g.H);
    long long ro = b * g.so[0] + h * g.so[1] + t * g.so[2];
    float s = 0.0f;
    for (long long d = lane; d < g.D; d += 32) s += out[ro + d] * dout[ro + d];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) delta[row] = s;
}

// dK and dV. Grid: B * Hkv * ceil(M / BT) blocks of MW warps. DC = D / 16.
// Regions: a = Q tile (K staging), b = dO tile (V staging), acc = dK then dV accumulators.
template <int DC>
__global__ static void __launch_bounds__(MW * 32)
attn_bwd_mma_dkdv(sao_attn_geo g, const float *q, const float *k, const float *v, const float *bias,
                  const uint8_t *mask, const float *lse, const float *delta, const float *dout, float *dk,
                  float *dv) {
    extern __shared__ float sm[];
    constexpr int D = DC * 16, BP = D + 8, FP = D + 4;
    const bwd_smem plan = smem_plan(D, 2);
    char *base = mma_smem_base(sm);
    bf16 *Qs = (bf16 *)(base + plan.a), *dOs = (bf16 *)(base + plan.b);
    float *Ss = (float *)(base + plan.s), *dPs = (float *)(base + plan.dp);
    float *dKs = (float *)(base + plan.acc), *dVs = dKs + BT * FP;
    float *Ls = (float *)(base + plan.ls), *Drs = (float *)(base + plan.dr);

    long long kh, b;
    const long long j0 = mma_block_tile(g.M, BT, g.Hkv, &kh, &b);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float *kb = k + b * g.sk[0] + kh * g.sk[1], *vb = v + b * g.sv[0] + kh * g.sv[1];

    // this lane's key (two lanes per key) and half of the query tile
    const int kr = warp * 16 + (lane >> 1), half = lane & 1;
    const long long j = j0 + kr;
    const bool live = j < g.M && (!mask || mask[b * g.M + j]);
    float *Sw = Ss + warp * 16 * SPITCH, *dPw = dPs + warp * 16 * SPITCH;
    bf16 *Pw = (bf16 *)Sw, *dSw = (bf16 *)dPw;   // in place (see the pitches)
    float *dKw = dKs + warp * 16 * FP, *dVw = dVs + warp * 16 * FP;

    // the key tile's K and V through the Q / dO tiles into the warps' fragments; accumulators zero
    mma_load_rows(Qs, kb, g.sk[2], j0, g.M, BT, D);
    mma_load_rows(dOs, vb, g.sv[2], j0, g.M, BT, D);
    for (int i = threadIdx.x; i < 2 * BT * FP; i += blockDim.x) dKs[i] = 0.0f;
    __syncthreads();
    frag_a kf[DC], vf[DC];
#pragma unroll
    for (int c = 0; c < DC; c++) {
        wmma::load_matrix_sync(kf[c], Qs + warp * 16 * BP + c * 16, BP);
        wmma::load_matrix_sync(vf[c], dOs + warp * 16 * BP + c * 16, BP);
    }

    for (long long hh = 0; hh < g.G; hh++) {   // GQA: the kv head's query heads, in order
        const long long h = kh * g.G + hh;
        const float *qb = q + b * g.sq[0] + h * g.sq[1], *db = dout + b * g.so[0] + h * g.so[1];
        const float *brow = bias && live ? bias + h * g.T * g.M + j : NULL;   // column j of bias[h]
        for (long long t0 = 0; t0 < g.T; t0 += BT) {
            const int nq = g.T - t0 < BT ? (int)(g.T - t0) : BT, nqc = (nq + 15) / 16;
            __syncthreads();   // the previous tile is used up (the staged K and V, on the first)
            mma_load_rows(Qs, qb, g.sq[2], t0, g.T, BT, D);
            mma_load_rows(dOs, db, g.so[2], t0, g.T, BT, D);
            if (threadIdx.x < BT) {
                long long t = t0 + threadIdx.x, r = (b * g.H + h) * g.T + t;
                Ls[threadIdx.x] = t < g.T ? lse[r] : -INFINITY;
                Drs[threadIdx.x] = t < g.T ? delta[r] : 0.0f;
            }
            __syncthreads();

            // S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys, the query chunks that hold rows
            mma_tile_xt<DC, BT / 16>(Sw, SPITCH, kf, Qs, BP, nqc);
            mma_tile_xt<DC, BT / 16>(dPw, SPITCH, vf, dOs, BP, nqc);
            __syncwarp();

            // P^T and dS^T of this lane's key, queries t0 + half*32 + [0, 32); a dead key, a query
            // past T or a row with lse -inf gives 0 (its S and dP are not read)
            float p[32], ds[32];
            const float *srow = Sw + (lane >> 1) * SPITCH + half * 32, *dprow = dPw + (lane >> 1) * SPITCH + half * 32;
#pragma unroll
            for (int i = 0; i < 32; i++) {
                const int ii = half * 32 + i;
                p[i] = ds[i] = 0.0f;
                if (live && ii < nq && Ls[ii] != -INFINITY) {
                    float x = srow[i] * g.scale;
                    if (brow) x += brow[(t0 + ii) * g.M];
                    p[i] = expf(x - Ls[ii]);
                    ds[i] = p[i] * (dprow[i] - Drs[ii]);
                }
            }
            __syncwarp();   // every lane has read its S and dP: the bf16 rows may overwrite them
            bf16 *prow = Pw + (lane >> 1) * PPITCH + half * 32, *dsrow = dSw + (lane >> 1) * PPITCH + half * 32;
#pragma unroll
            for (int i = 0; i < 32; i++) {
                prow[i] = __float2bfloat16_rn(p[i]);
                dsrow[i] = __float2bfloat16_rn(ds[i]);
            }
            __syncwarp();

            // dV += P^T dO, dK += dS^T Q for the warp's keys, per 16 dims
            frag_a pf[BT / 16], sf[BT / 16];
            mma_load_row_chunks<BT / 16>(pf, Pw, PPITCH, nqc);
            mma_load_row_chunks<BT / 16>(sf, dSw, PPITCH, nqc);
            mma_tile_acc<DC, BT / 16>(dVw, FP, pf, dOs, BP, nqc);
            mma_tile_acc<DC, BT / 16>(dKw, FP, sf, Qs, BP, nqc);
        }
    }

    __syncthreads();
    const long long nk = g.M - j0 < BT ? g.M - j0 : BT;
    for (int i = threadIdx.x; i < nk * D; i += blockDim.x) {
        int r = i / D, d = i - r * D;
        if (dk) dk[b * g.sk[0] + kh * g.sk[1] + (j0 + r) * g.sk[2] + d] += g.scale * dKs[r * FP + d];
        if (dv) dv[b * g.sv[0] + kh * g.sv[1] + (j0 + r) * g.sv[2] + d] += dVs[r * FP + d];
    }
}

// dQ. Grid: B * H * ceil(T / BT) blocks of MW warps. Regions: a = K tile (Q staging), b = V tile
// (dO staging), acc = the dQ accumulator.
template <int DC>
__global__ static void __launch_bounds__(MW * 32)
attn_bwd_mma_dq(sao_attn_geo g, const float *q, const float *k, const float *v, const float *bias,
                const uint8_t *mask, const float *lse, const float *delta, const float *dout, float *dq) {
    extern __shared__ float sm[];
    constexpr int D = DC * 16, BP = D + 8, FP = D + 4;
    const bwd_smem plan = smem_plan(D, 1);
    char *base = mma_smem_base(sm);
    bf16 *Ks = (bf16 *)(base + plan.a), *Vs = (bf16 *)(base + plan.b);
    float *Ss = (float *)(base + plan.s), *dPs = (float *)(base + plan.dp), *dQs = (float *)(base + plan.acc);
    float *Ls = (float *)(base + plan.ls), *Drs = (float *)(base + plan.dr);

    // the block's tile; this lane's query row (two lanes per row) and half of the key tile
    const mma_qtile at = mma_qtile_at(g, BT, k, v, bias, mask);
    const long long t0 = at.t0, h = at.h, b = at.b;
    const int lane = at.lane, warp = at.warp, row = at.row, half = at.half;
    const float *kb = at.kb, *vb = at.vb, *brow = at.brow;
    const uint8_t *mb = at.mb;
    float *Sw = Ss + warp * 16 * SPITCH, *dPw = dPs + warp * 16 * SPITCH, *dQw = dQs + warp * 16 * FP;
    bf16 *dSw = (bf16 *)dPw;   // in place

    // the query tile's Q and dO through the K / V tiles into the warps' fragments; lse, delta
    mma_load_rows(Ks, q + b * g.sq[0] + h * g.sq[1], g.sq[2], t0, g.T, BT, D);
    mma_load_rows(Vs, dout + b * g.so[0] + h * g.so[1], g.so[2], t0, g.T, BT, D);
    for (int i = threadIdx.x; i < BT * FP; i += blockDim.x) dQs[i] = 0.0f;
    if (threadIdx.x < BT) {
        long long tt = t0 + threadIdx.x, r = (b * g.H + h) * g.T + tt;
        Ls[threadIdx.x] = tt < g.T ? lse[r] : -INFINITY;
        Drs[threadIdx.x] = tt < g.T ? delta[r] : 0.0f;
    }
    __syncthreads();
    frag_a qf[DC], of[DC];
#pragma unroll
    for (int c = 0; c < DC; c++) {
        wmma::load_matrix_sync(qf[c], Ks + warp * 16 * BP + c * 16, BP);
        wmma::load_matrix_sync(of[c], Vs + warp * 16 * BP + c * 16, BP);
    }
    const float L = Ls[row], Dr = Drs[row];   // -inf past T: the row adds nothing

    for (long long j0 = 0; j0 < g.M; j0 += BT) {
        const int nk = g.M - j0 < BT ? (int)(g.M - j0) : BT, nkc = (nk + 15) / 16;
        __syncthreads();   // the previous tile is used up (the staged Q and dO, on the first)
        mma_load_rows(Ks, kb, g.sk[2], j0, g.M, BT, D);
        mma_load_rows(Vs, vb, g.sv[2], j0, g.M, BT, D);
        __syncthreads();

        // S = Q K^T and dP = dO V^T for the warp's 16 rows, the key chunks that hold keys
        mma_tile_xt<DC, BT / 16>(Sw, SPITCH, qf, Ks, BP, nkc);
        mma_tile_xt<DC, BT / 16>(dPw, SPITCH, of, Vs, BP, nkc);
        __syncwarp();

        // dS of this lane's row, keys j0 + half*32 + [0, 32): 0 for a dead key or row
        float ds[32];
        const float *srow = Sw + (lane >> 1) * SPITCH + half * 32, *dprow = dPw + (lane >> 1) * SPITCH + half * 32;
#pragma unroll
        for (int i = 0; i < 32; i++) {
            const int jj = half * 32 + i;
            ds[i] = 0.0f;
            if (jj < nk && L != -INFINITY && (!mb || mb[j0 + jj])) {
                float x = srow[i] * g.scale;
                if (brow) x += brow[j0 + jj];
                float p = expf(x - L);
                ds[i] = p * (dprow[i] - Dr);
            }
        }
        __syncwarp();   // every lane has read its dP: the bf16 dS rows may overwrite them
        bf16 *dsrow = dSw + (lane >> 1) * PPITCH + half * 32;
#pragma unroll
        for (int i = 0; i < 32; i++) dsrow[i] = __float2bfloat16_rn(ds[i]);
        __syncwarp();

        // dQ += dS K for the warp's rows: dS's fragments once, then per 16 dims
        frag_a sf[BT / 16];
        mma_load_row_chunks<BT / 16>(sf, dSw, PPITCH, nkc);
        mma_tile_acc<DC, BT / 16>(dQw, FP, sf, Ks, BP, nkc);
    }

    __syncthreads();
    const long long nq = g.T - t0 < BT ? g.T - t0 : BT;
    float *qd = dq + b * g.sq[0] + h * g.sq[1];
    for (int i = threadIdx.x; i < nq * D; i += blockDim.x) {
        int r = i / D, d = i - r * D;
        qd[(t0 + r) * g.sq[2] + d] += g.scale * dQs[r * FP + d];
    }
}

// ---- host --------------------------------------------------------------------------------------
// Per kernel (dK/dV, dQ), head-dim class and device: the shared-memory opt-in made (mma_smem_optin).
static int optin_done[2][MMA_MAX_D / 16 + 1][SAO_CUDA_SCRATCH_DEVICES];

template <int DC>
static int launch(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q, const float *k,
                  const float *v, const float *bias, const uint8_t *mask, const float *lse, const float *delta,
                  const float *dout, float *dq, float *dk, float *dv) {
    if (dk || dv) {
        const size_t smem = smem_plan(DC * 16, 2).total + MMA_SMEM_SLACK;
        if (mma_smem_optin(ctx, op, "backward", DC * 16, attn_bwd_mma_dkdv<DC>, smem, optin_done[0][DC])) return -1;
        long long blocks = g->B * g->Hkv * ((g->M + BT - 1) / BT);
        if (blocks > 2147483647LL)
            return sao_err(ctx, op, "%lld blocks exceed the CUDA grid (split the batch)", blocks);
        attn_bwd_mma_dkdv<DC><<<(unsigned)blocks, MW * 32, smem, sao_cuda_stream()>>>(
            *g, q, k, v, bias, mask, lse, delta, dout, dk, dv);
        CUDA_LAUNCHED(ctx, op);
    }
    if (dq) {
        const size_t smem = smem_plan(DC * 16, 1).total + MMA_SMEM_SLACK;
        if (mma_smem_optin(ctx, op, "backward", DC * 16, attn_bwd_mma_dq<DC>, smem, optin_done[1][DC])) return -1;
        long long blocks = g->B * g->H * ((g->T + BT - 1) / BT);
        if (blocks > 2147483647LL)
            return sao_err(ctx, op, "%lld blocks exceed the CUDA grid (split the batch)", blocks);
        attn_bwd_mma_dq<DC><<<(unsigned)blocks, MW * 32, smem, sao_cuda_stream()>>>(
            *g, q, k, v, bias, mask, lse, delta, dout, dq);
        CUDA_LAUNCHED(ctx, op);
    }
    return 0;
}

// delta, then the dK/dV and dQ kernels.
static int run(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q, const float *k,
               const float *v, const float *bias, const uint8_t *mask, const float *out, const float *lse,
               const float *dout, float *dq, float *dk, float *dv, float *delta) {
    attn_mma_delta<<<sao_cuda_blocks(g->B * g->H * g->T, 8), 256, 0, sao_cuda_stream()>>>(*g, out, dout, delta);
    CUDA_LAUNCHED(ctx, op);
    switch (g->D / 16) {
    case 1: return launch<1>(ctx, op, g, q, k, v, bias, mask, lse, delta, dout, dq, dk, dv);
    case 2: return launch<2>(ctx, op, g, q, k, v, bias, mask, lse, delta, dout, dq, dk, dv);
    case 3: return launch<3>(ctx, op, g, q, k, v, bias, mask, lse, delta, dout, dq, dk, dv);
    case 4: return launch<4>(ctx, op, g, q, k, v, bias, mask, lse, delta, dout, dq, dk, dv);
    case 5: return launch<5>(ctx, op, g, q, k, v, bias, mask, lse, delta, dout, dq, dk, dv);
    case 6: return launch<6>(ctx, op, g, q, k, v, bias, mask, lse, delta, dout, dq, dk, dv);
    case 7: return launch<7>(ctx, op, g, q, k, v, bias, mask, lse, delta, dout, dq, dk, dv);
    default: return launch<8>(ctx, op, g, q, k, v, bias, mask, lse, delta, dout, dq, dk, dv);
    }
}

// Called by sao_cuda_attention_backward after its checks (device pointers, no dbias).
int sao_cuda_attn_mma_backward(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q,
                               const float *k, const float *v, const float *bias, const uint8_t *mask,
                               const float *out, const float *lse, const float *dout, float *dq, float *dk,
                               float *dv) {
    if (!sao_cuda_attn_mma_fits(g))
        return sao_err(ctx, op, "head dim D=%lld: the bf16 attention kernel needs a multiple of 16 up to %d",
                       (long long)g->D, MMA_MAX_D);
    if (g->B == 0 || g->H == 0 || g->T == 0 || g->M == 0 || (!dq && !dk && !dv)) return 0;   // nothing to add
    float *delta = NULL;   // [B, H, T]
    if (sao_cuda_malloc(ctx, (size_t)(g->B * g->H * g->T) * sizeof(float), (void **)&delta)) return -1;
    int rc = run(ctx, op, g, q, k, v, bias, mask, out, lse, dout, dq, dk, dv, delta);
    // the legacy stream orders every launch: the block may go to the next caller at once
    sao_cuda_free(delta);
    return rc;
}

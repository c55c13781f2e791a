#include "cuda_internal.h"
// attention.cu — CUDA twins of kernels/cpu/attention.c: fused multi-head scaled-dot-product
// attention with grouped K/V heads, optional additive bias [H, T, M] and key mask [B, M], forward
// and backward, on device pointers. Same arguments, the same checks (the CPU kernel's own, from
// kernels/cpu/kcheck.h) and the same statistics as the CPU kernel (lse[b,h,t] = logsumexp of the
// row's logits, -inf for a fully masked row whose output is 0), so a forward on one device and a
// backward on the other agree. Tested against the CPU twin in spec/cuda_attn_spec.lua (tag gpu).
//
//   S = scale * Q K^T + bias (-inf where the key mask is 0),  P = softmax_rows(S),  O = P V
//
// Plain CUDA, fp32, flash-attention-2's algorithm: no T x M matrix is ever formed, scratch is
// shared memory only, nothing is allocated.
//
// Layout of the work. A key tile is KT = 32 keys, one per lane of a warp: a lane computes its
// key's logit for several query rows (its K row read from shared memory, the query rows broadcast),
// then the warp shuffles each p (or dS) to every lane, and lane l accumulates output dims
// l, l+32, ... (NV = ceil(D/32) registers per row; D <= 256).
//   forward   one block per (b, h, 16-query tile); 4 warps x 4 rows; walks the key tiles with a
//             running max / sum / unnormalised output per row (rescaled when the max grows).
//   dQ (+dbias) one block per (b, h, 16-query tile), same walk: recomputes P = exp(S - lse),
//             dS = P (dO V^T - rowsum(dO * O)), dQ += scale dS K. With dbias the block loops over
//             every b in order instead (dbias is shared by the batch), so it owns its dbias rows.
//   dK/dV     one warp per (b, kv head, 32-key tile): lane l owns key l's dK and dV rows (shared
//             memory); it loops over the G query heads of the kv head and their query rows, 16 at
//             a time, accumulating dV += P^T dO and dK += scale dS^T Q.
// Determinism: every output element is written by one thread in a fixed order (GQA's sum over
// query heads is the dK/dV loop over hh; dbias's sum over b is the dQ block's loop over b); warp
// sums are fixed butterflies. No atomics: results are bit-reproducible run to run.
// rowsum(dO * O) is recomputed where needed by one helper (same bits in both backward kernels).
// Performance: correct and tiled, not tuned (no tensor cores). In the tf32 and bf16 GEMM precision
// modes (sao.cuda.precision) an attention without bias or key mask (the DiT's self- and
// cross-attention; grouped K/V heads through per-query-head copies) takes a tensor-core path: S = scale Q K^T by one strided
// batched cuBLAS GEMM per batch item (TF32) into a scratch [B, H, T, M], a row softmax that also
// writes lse, and O = P V by a second GEMM; the backward takes the same path (P recomputed from
// lse, dP and the three gradients by GEMMs, two small row kernels between).
// In the bf16 mode the forward takes attention_mma.cu's bf16 tensor-core flash kernel instead
// (D a multiple of 16 up to 128, bias and key mask too: no scratch), and the backward
// attention_mma_bwd.cu's (the same D, bias and key mask too, no dbias: a dbias keeps the fp32 flash
// kernels; scratch only delta [B, H, T]); sao_cuda_attention_impl switches both off ("cublas": the
// paths above) or forces the fp32 flash kernels ("flash"); "cudnn" runs the bf16 mode's forwards
// and backwards without bias, key mask or dbias through cuDNN's fused SDPA (attention_cudnn.cu)
// where cuDNN builds a plan for the shape, everything else as "auto".
extern "C" {
#include "sao_cuda_attn.h"
#include "sao_cuda.h"
#include "cuda_glue.h"
#include "../cpu/kcheck.h"
}
#include "attention_mma.h"
#include "sao_cudnn.h"
#include <math.h>
#include <string.h>

#define FULL_MASK 0xffffffffu
#define KT 32           // keys per tile: one per lane
#define QW 4            // warps per query block (forward, dQ)
#define QR 4            // query rows per warp (forward, dQ)
#define BQ (QW * QR)    // queries per block (forward, dQ)
#define MAX_D 256       // head dims a row keeps in registers: NV <= 8

// ---- host: the CUDA kernels' own limits (after the CPU kernel's checks) --------------------------
// The one limit the CPU kernel does not have: a row's output lives in NV = D/32 registers per lane.
static int check_d(sao_ctx *ctx, const char *op, long long D) {
    if (D > MAX_D)
        return sao_err(ctx, op, "head dim D=%lld > %d: the CUDA attention kernels hold a row in "
                       "registers (run this shape with the CPU kernel)", D, MAX_D);
    return 0;
}

// Dynamic shared memory above the 48 KB default needs an opt-in per kernel (large D only).
template <class K>
static int smem_optin(sao_ctx *ctx, const char *op, K *kernel, size_t bytes) {
    if (bytes <= 48 * 1024) return 0;
    int dev = 0, most = 0;
    CUDA_TRY(ctx, op, cudaGetDevice(&dev));
    CUDA_TRY(ctx, op, cudaDeviceGetAttribute(&most, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if ((size_t)most < bytes)
        return sao_err(ctx, op, "needs %zu bytes of shared memory per block, the device allows %d "
                       "(head dim too large for this GPU: use the CPU kernel)", bytes, most);
    CUDA_TRY(ctx, op, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return 0;
}

// ---- device helpers -------------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// sum_d a[d] * b[d] over one row, by the whole warp (lane-strided, then a butterfly): every lane
// gets the same bits, and the dQ and dK/dV kernels get the same value for the same row.
__device__ __forceinline__ float row_dot(const float *a, const float *b, int D, int lane) {
    float s = 0.0f;
    for (int d = lane; d < D; d += 32) s = fmaf(a[d], b[d], s);
    return warp_sum(s);
}

// rows [0, KT) of a strided [M, D] block starting at key j0 into dst [KT][DP]; zero past M
__device__ __forceinline__ void load_keys(float *dst, int DP, const float *base, long long rs,
                                          long long j0, long long M, int D) {
    for (int i = threadIdx.x; i < KT * D; i += blockDim.x) {
        int j = i / D, d = i - j * D;
        long long jj = j0 + j;
        dst[j * DP + d] = jj < M ? base[jj * rs + d] : 0.0f;
    }
}

// n rows of a strided [T, D] block starting at t0 into dst [n][D], times mul; zero past T
__device__ __forceinline__ void load_rows(float *dst, const float *base, long long rs, long long t0,
                                          long long T, int n, int D, float mul) {
    for (int i = threadIdx.x; i < n * D; i += blockDim.x) {
        int r = i / D, d = i - r * D;
        long long t = t0 + r;
        dst[i] = t < T ? base[t * rs + d] * mul : 0.0f;
    }
}

// K rows keep an odd pitch, so lane j reading row j, dim d hits bank (j*DP + d) % 32: all distinct.
__host__ __device__ __forceinline__ int kpitch(int D) { return D | 1; }

// ---- kernels ----------------------------------------------------------------------------------------

// M == 0: nothing to attend to; out rows 0, lse -inf (as the CPU kernel)
__global__ static void attn_empty(sao_attn_geo g, float *out, float *lse) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= g.B * g.H * g.T * g.D) return;
    long long d = i % g.D, r = i / g.D;
    long long t = r % g.T, h = (r / g.T) % g.H, b = r / (g.T * g.H);
    out[b * g.so[0] + h * g.so[1] + t * g.so[2] + d] = 0.0f;
    if (lse && d == 0) lse[r] = -INFINITY;
}

// Forward. Grid: B * H * ceil(T/BQ) blocks of QW warps. Shared: Qs [BQ][D] (scale * q),
// Ks, Vs [KT][DP].
template <int NV>
__global__ static void __launch_bounds__(QW * 32)
attn_fwd(sao_attn_geo g, const float *q, const float *k, const float *v, const float *bias,
         const uint8_t *mask, float *out, float *lse) {
    extern __shared__ float sm[];
    const int D = (int)g.D, DP = kpitch(D);
    float *Qs = sm, *Ks = Qs + BQ * D, *Vs = Ks + KT * DP;
    const long long ntq = (g.T + BQ - 1) / BQ;
    const long long t0 = ((long long)blockIdx.x % ntq) * BQ;
    const long long h = ((long long)blockIdx.x / ntq) % g.H, b = (long long)blockIdx.x / (ntq * g.H);
    const long long kh = h / g.G;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float *kb = k + b * g.sk[0] + kh * g.sk[1], *vb = v + b * g.sv[0] + kh * g.sv[1];
    const uint8_t *mb = mask ? mask + b * g.M : NULL;
    const float *qw = Qs + warp * QR * D;   // this warp's rows

    load_rows(Qs, q + b * g.sq[0] + h * g.sq[1], g.sq[2], t0, g.T, BQ, D, g.scale);
    float m[QR], l[QR], o[QR][NV];
#pragma unroll
    for (int r = 0; r < QR; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < NV; c++) o[r][c] = 0.0f;
    }
    for (long long j0 = 0; j0 < g.M; j0 += KT) {
        __syncthreads();   // the previous tile is used up (and Qs is written, on the first)
        load_keys(Ks, DP, kb, g.sk[2], j0, g.M, D);
        load_keys(Vs, DP, vb, g.sv[2], j0, g.M, D);
        __syncthreads();
        const long long j = j0 + lane;
        const bool live = j < g.M && (!mb || mb[j]);
        float s[QR];
#pragma unroll
        for (int r = 0; r < QR; r++) s[r] = 0.0f;
        const float *kr = Ks + lane * DP;
        for (int d = 0; d < D; d++) {
            float kd = kr[d];
#pragma unroll
            for (int r = 0; r < QR; r++) s[r] = fmaf(qw[r * D + d], kd, s[r]);
        }
#pragma unroll
        for (int r = 0; r < QR; r++) {   // online softmax; s[r] becomes p
            long long t = t0 + warp * QR + r;
            if (bias && live && t < g.T) s[r] += bias[(h * g.T + t) * g.M + j];
            if (!live) s[r] = -INFINITY;
            float mnew = fmaxf(m[r], warp_max(s[r]));
            float p = 0.0f;
            if (mnew != -INFINITY) {   // warp-uniform; -inf: every key so far masked, adds nothing
                float corr = expf(m[r] - mnew);
                p = expf(s[r] - mnew);
                l[r] = l[r] * corr + warp_sum(p);
                m[r] = mnew;
#pragma unroll
                for (int c = 0; c < NV; c++) o[r][c] *= corr;
            }
            s[r] = p;
        }
        const int nk = g.M - j0 < KT ? (int)(g.M - j0) : KT;
        for (int jj = 0; jj < nk; jj++) {   // O += P V
            float vv[NV];
#pragma unroll
            for (int c = 0; c < NV; c++) {
                int d = lane + 32 * c;
                vv[c] = d < D ? Vs[jj * DP + d] : 0.0f;
            }
#pragma unroll
            for (int r = 0; r < QR; r++) {
                float pj = __shfl_sync(FULL_MASK, s[r], jj);
#pragma unroll
                for (int c = 0; c < NV; c++) o[r][c] = fmaf(pj, vv[c], o[r][c]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < QR; r++) {
        long long t = t0 + warp * QR + r;
        if (t >= g.T) continue;
        float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        float *orow = out + b * g.so[0] + h * g.so[1] + t * g.so[2];
#pragma unroll
        for (int c = 0; c < NV; c++) {
            int d = lane + 32 * c;
            if (d < D) orow[d] = o[r][c] * inv;
        }
        if (lse && lane == 0) lse[(b * g.H + h) * g.T + t] = l[r] > 0.0f ? m[r] + logf(l[r]) : -INFINITY;
    }
}

// dQ and dbias. Grid: nb_grid * H * ceil(T/BQ) blocks of QW warps; the block handles batch rows
// [b0, b0 + nb) in order (nb = B with dbias, else 1). Shared: Qs, dOs [BQ][D], Ks, Vs [KT][DP].
template <int NV>
__global__ static void __launch_bounds__(QW * 32)
attn_bwd_dq(sao_attn_geo g, const float *q, const float *k, const float *v, const float *bias,
            const uint8_t *mask, const float *out, const float *lse, const float *dout, float *dq,
            float *dbias, long long nb) {
    extern __shared__ float sm[];
    const int D = (int)g.D, DP = kpitch(D);
    float *Qs = sm, *dOs = Qs + BQ * D, *Ks = dOs + BQ * D, *Vs = Ks + KT * DP;
    const long long ntq = (g.T + BQ - 1) / BQ;
    const long long t0 = ((long long)blockIdx.x % ntq) * BQ;
    const long long h = ((long long)blockIdx.x / ntq) % g.H;
    const long long b0 = ((long long)blockIdx.x / (ntq * g.H)) * nb;
    const long long kh = h / g.G;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float *qw = Qs + warp * QR * D, *dow = dOs + warp * QR * D;

    for (long long b = b0; b < b0 + nb; b++) {
        const float *kb = k + b * g.sk[0] + kh * g.sk[1], *vb = v + b * g.sv[0] + kh * g.sv[1];
        const uint8_t *mb = mask ? mask + b * g.M : NULL;
        __syncthreads();   // the previous batch row's tiles are used up
        load_rows(Qs, q + b * g.sq[0] + h * g.sq[1], g.sq[2], t0, g.T, BQ, D, g.scale);
        load_rows(dOs, dout + b * g.so[0] + h * g.so[1], g.so[2], t0, g.T, BQ, D, 1.0f);
        float L[QR], Dr[QR], acc[QR][NV];
#pragma unroll
        for (int r = 0; r < QR; r++) {
            long long t = t0 + warp * QR + r;
            L[r] = -INFINITY;
            Dr[r] = 0.0f;
            if (t < g.T) {
                long long ro = b * g.so[0] + h * g.so[1] + t * g.so[2];
                L[r] = lse[(b * g.H + h) * g.T + t];
                Dr[r] = row_dot(out + ro, dout + ro, D, lane);
            }
#pragma unroll
            for (int c = 0; c < NV; c++) acc[r][c] = 0.0f;
        }
        for (long long j0 = 0; j0 < g.M; j0 += KT) {
            __syncthreads();
            load_keys(Ks, DP, kb, g.sk[2], j0, g.M, D);
            load_keys(Vs, DP, vb, g.sv[2], j0, g.M, D);
            __syncthreads();
            const long long j = j0 + lane;
            const bool live = j < g.M && (!mb || mb[j]);
            float s[QR], dp[QR];
#pragma unroll
            for (int r = 0; r < QR; r++) s[r] = dp[r] = 0.0f;
            const float *kr = Ks + lane * DP, *vr = Vs + lane * DP;
            for (int d = 0; d < D; d++) {
                float kd = kr[d], vd = vr[d];
#pragma unroll
                for (int r = 0; r < QR; r++) {
                    s[r] = fmaf(qw[r * D + d], kd, s[r]);
                    dp[r] = fmaf(dow[r * D + d], vd, dp[r]);
                }
            }
#pragma unroll
            for (int r = 0; r < QR; r++) {   // s[r] becomes dS
                long long t = t0 + warp * QR + r;
                float p = 0.0f;
                if (live && L[r] != -INFINITY) {   // L is -inf past T and on dead rows
                    float x = s[r];
                    if (bias) x += bias[(h * g.T + t) * g.M + j];
                    p = expf(x - L[r]);
                }
                s[r] = p * (dp[r] - Dr[r]);
                if (dbias && live && t < g.T) dbias[(h * g.T + t) * g.M + j] += s[r];
            }
            if (!dq) continue;
            const int nk = g.M - j0 < KT ? (int)(g.M - j0) : KT;
            for (int jj = 0; jj < nk; jj++) {   // dQ += dS K (scaled below)
                float kv[NV];
#pragma unroll
                for (int c = 0; c < NV; c++) {
                    int d = lane + 32 * c;
                    kv[c] = d < D ? Ks[jj * DP + d] : 0.0f;
                }
#pragma unroll
                for (int r = 0; r < QR; r++) {
                    float dsj = __shfl_sync(FULL_MASK, s[r], jj);
#pragma unroll
                    for (int c = 0; c < NV; c++) acc[r][c] = fmaf(dsj, kv[c], acc[r][c]);
                }
            }
        }
        if (!dq) continue;
#pragma unroll
        for (int r = 0; r < QR; r++) {
            long long t = t0 + warp * QR + r;
            if (t >= g.T) continue;
            float *row = dq + b * g.sq[0] + h * g.sq[1] + t * g.sq[2];
#pragma unroll
            for (int c = 0; c < NV; c++) {
                int d = lane + 32 * c;
                if (d < D) row[d] += g.scale * acc[r][c];
            }
        }
    }
}

// dK and dV. Grid: B * Hkv * ceil(M/KT) blocks of one warp; lane l owns key j0 + l.
// Shared: Ks, Vs, dKs, dVs [KT][DP]; Qs, dOs [RR][D]; Ls, Drs [RR].
template <int RR>
__global__ static void __launch_bounds__(32)
attn_bwd_dkdv(sao_attn_geo g, const float *q, const float *k, const float *v, const float *bias,
              const uint8_t *mask, const float *out, const float *lse, const float *dout, float *dk,
              float *dv) {
    extern __shared__ float sm[];
    const int D = (int)g.D, DP = kpitch(D);
    float *Ks = sm, *Vs = Ks + KT * DP, *dKs = Vs + KT * DP, *dVs = dKs + KT * DP;
    float *Qs = dVs + KT * DP, *dOs = Qs + RR * D, *Ls = dOs + RR * D, *Drs = Ls + RR;
    const long long nkt = (g.M + KT - 1) / KT;
    const long long j0 = ((long long)blockIdx.x % nkt) * KT;
    const long long kh = ((long long)blockIdx.x / nkt) % g.Hkv, b = (long long)blockIdx.x / (nkt * g.Hkv);
    const int lane = threadIdx.x;
    const long long j = j0 + lane;
    const bool live = j < g.M && (!mask || mask[b * g.M + j]);
    const float *kb = k + b * g.sk[0] + kh * g.sk[1], *vb = v + b * g.sv[0] + kh * g.sv[1];

    load_keys(Ks, DP, kb, g.sk[2], j0, g.M, D);
    load_keys(Vs, DP, vb, g.sv[2], j0, g.M, D);
    float *dkr = dKs + lane * DP, *dvr = dVs + lane * DP, *kr = Ks + lane * DP, *vr = Vs + lane * DP;
    for (int d = 0; d < D; d++) dkr[d] = dvr[d] = 0.0f;
    for (long long hh = 0; hh < g.G; hh++) {   // GQA: the kv head's query heads, in order
        const long long h = kh * g.G + hh;
        for (long long t0 = 0; t0 < g.T; t0 += RR) {
            __syncwarp();   // the previous rows are used up (and Ks, Vs written, on the first)
            load_rows(Qs, q + b * g.sq[0] + h * g.sq[1], g.sq[2], t0, g.T, RR, D, g.scale);
            load_rows(dOs, dout + b * g.so[0] + h * g.so[1], g.so[2], t0, g.T, RR, D, 1.0f);
            for (int r = 0; r < RR; r++) {
                long long t = t0 + r;
                float dr = 0.0f, L = -INFINITY;
                if (t < g.T) {
                    long long ro = b * g.so[0] + h * g.so[1] + t * g.so[2];
                    dr = row_dot(out + ro, dout + ro, D, lane);
                    L = lse[(b * g.H + h) * g.T + t];
                }
                if (lane == 0) {
                    Drs[r] = dr;
                    Ls[r] = L;
                }
            }
            __syncwarp();
            float p[RR], ds[RR];
#pragma unroll
            for (int r = 0; r < RR; r++) p[r] = ds[r] = 0.0f;
            for (int d = 0; d < D; d++) {   // logits and dO V^T of this lane's key
                float kd = kr[d], vd = vr[d];
#pragma unroll
                for (int r = 0; r < RR; r++) {
                    p[r] = fmaf(Qs[r * D + d], kd, p[r]);
                    ds[r] = fmaf(dOs[r * D + d], vd, ds[r]);
                }
            }
#pragma unroll
            for (int r = 0; r < RR; r++) {
                long long t = t0 + r;
                float pr = 0.0f;
                if (live && Ls[r] != -INFINITY) {   // Ls is -inf past T and on dead rows
                    float x = p[r];
                    if (bias) x += bias[(h * g.T + t) * g.M + j];
                    pr = expf(x - Ls[r]);
                }
                p[r] = pr;
                ds[r] = pr * (ds[r] - Drs[r]);
            }
            for (int d = 0; d < D; d++) {   // dV += P^T dO, dK += dS^T (scale Q)
                float av = dvr[d], ak = dkr[d];
#pragma unroll
                for (int r = 0; r < RR; r++) {
                    av = fmaf(p[r], dOs[r * D + d], av);
                    ak = fmaf(ds[r], Qs[r * D + d], ak);
                }
                dvr[d] = av;
                dkr[d] = ak;
            }
        }
    }
    __syncwarp();
    const int nk = g.M - j0 < KT ? (int)(g.M - j0) : KT;
    for (int jj = 0; jj < nk; jj++) {   // coalesced: the warp adds one key row at a time
        if (dk) {
            float *row = dk + b * g.sk[0] + kh * g.sk[1] + (j0 + jj) * g.sk[2];
            for (int d = lane; d < D; d += 32) row[d] += dKs[jj * DP + d];
        }
        if (dv) {
            float *row = dv + b * g.sv[0] + kh * g.sv[1] + (j0 + jj) * g.sv[2];
            for (int d = lane; d < D; d += 32) row[d] += dVs[jj * DP + d];
        }
    }
}

// ---- launchers ------------------------------------------------------------------------------------
static int nv_of(long long D) { return D <= 32 ? 1 : D <= 64 ? 2 : D <= 128 ? 4 : 8; }

static int blocks_ok(sao_ctx *ctx, const char *op, long long n) {
    if (n > 2147483647LL)
        return sao_err(ctx, op, "%lld blocks exceed the CUDA grid (split the batch)", n);
    return 0;
}

template <int NV>
static int launch_fwd(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q, const float *k,
                      const float *v, const float *bias, const uint8_t *mask, float *out, float *lse) {
    const int DP = kpitch((int)g->D);
    size_t smem = sizeof(float) * (size_t)(BQ * g->D + 2 * KT * DP);
    if (smem_optin(ctx, op, attn_fwd<NV>, smem)) return -1;
    long long blocks = g->B * g->H * ((g->T + BQ - 1) / BQ);
    if (blocks_ok(ctx, op, blocks)) return -1;
    attn_fwd<NV><<<(unsigned)blocks, QW * 32, smem, sao_cuda_stream()>>>(*g, q, k, v, bias, mask, out, lse);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

template <int NV>
static int launch_dq(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q, const float *k,
                     const float *v, const float *bias, const uint8_t *mask, const float *out,
                     const float *lse, const float *dout, float *dq, float *dbias) {
    const int DP = kpitch((int)g->D);
    size_t smem = sizeof(float) * (size_t)(2 * BQ * g->D + 2 * KT * DP);
    if (smem_optin(ctx, op, attn_bwd_dq<NV>, smem)) return -1;
    long long nb = dbias ? g->B : 1;   // with dbias a block walks every batch row (it owns dbias rows)
    long long blocks = (g->B / nb) * g->H * ((g->T + BQ - 1) / BQ);
    if (blocks_ok(ctx, op, blocks)) return -1;
    attn_bwd_dq<NV><<<(unsigned)blocks, QW * 32, smem, sao_cuda_stream()>>>(
        *g, q, k, v, bias, mask, out, lse, dout, dq, dbias, nb);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

template <int RR>
static int launch_dkdv(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q, const float *k,
                       const float *v, const float *bias, const uint8_t *mask, const float *out,
                       const float *lse, const float *dout, float *dk, float *dv) {
    const int DP = kpitch((int)g->D);
    size_t smem = sizeof(float) * (size_t)(4 * KT * DP + 2 * RR * g->D + 2 * RR);
    if (smem_optin(ctx, op, attn_bwd_dkdv<RR>, smem)) return -1;
    long long blocks = g->B * g->Hkv * ((g->M + KT - 1) / KT);
    if (blocks_ok(ctx, op, blocks)) return -1;
    attn_bwd_dkdv<RR><<<(unsigned)blocks, 32, smem, sao_cuda_stream()>>>(
        *g, q, k, v, bias, mask, out, lse, dout, dk, dv);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

// ---- the tensor-core path (tf32/bf16 modes) ------------------------------------------------------
// One warp per row of S [rows, M]: P = softmax(row) in place, lse = max + log(sum exp).
__global__ static void softmax_rows(float *s, long long rows, long long M, float *lse) {
    long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (row >= rows) return;   // the whole warp: one row per warp
    float *r = s + row * M;
    float mx = -INFINITY;
    for (long long j = lane; j < M; j += 32) mx = fmaxf(mx, r[j]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, o));
    float sum = 0.0f;
    for (long long j = lane; j < M; j += 32) {
        float e = expf(r[j] - mx);
        r[j] = e;
        sum += e;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(FULL_MASK, sum, o);
    float inv = 1.0f / sum;
    for (long long j = lane; j < M; j += 32) r[j] *= inv;
    if (lse && lane == 0) lse[row] = mx + logf(sum);
}

// P = exp(S - lse) in place (the backward's recomputed probabilities), one warp per row.
__global__ static void exp_rows(float *s, const float *lse, long long rows, long long M) {
    long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    float *r = s + row * M, l = lse[row];
    for (long long j = lane; j < M; j += 32) r[j] = expf(r[j] - l);
}

// dS = P (dP - rowsum(dO * O)) in place in dp, one warp per row (b, h, t); the row sum over the
// head's D output values read through the out strides.
__global__ static void ds_rows(const float *p, float *dp, const float *out, const float *dout, sao_attn_geo g) {
    long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (row >= g.B * g.H * g.T) return;
    long long t = row % g.T, h = (row / g.T) % g.H, b = row / (g.T * g.H);
    const float *o = out + b * g.so[0] + h * g.so[1] + t * g.so[2];
    const float *d = dout + b * g.so[0] + h * g.so[1] + t * g.so[2];
    float acc = 0.0f;
    for (long long j = lane; j < g.D; j += 32) acc += o[j] * d[j];
    for (int s = 16; s > 0; s >>= 1) acc += __shfl_xor_sync(FULL_MASK, acc, s);
    const float *pr = p + row * g.M;
    float *r = dp + row * g.M;
    for (long long j = lane; j < g.M; j += 32) r[j] = pr[j] * (r[j] - acc);
}

static const long long TC_SCRATCH_MAX = 2LL << 30;   // bytes of S beyond which the flash kernel runs
// S (then P); the backward's dP (then dS); grouped heads: K and V, then dK and dV, per query head
static float *tc_scratch[6][SAO_CUDA_SCRATCH_DEVICES];
static size_t tc_scratch_n[6][SAO_CUDA_SCRATCH_DEVICES];

// sao_cuda_attention_impl: which kernels run, process-wide (a plain int, read at each call, as the
// GEMM precision is): 0 auto, 1 cublas, 2 flash, 3 cudnn (IMPL_NAMES; "cudnn" is "auto" with
// cuDNN's fused SDPA first where it applies, attention_cudnn.cu).
enum { IMPL_AUTO, IMPL_CUBLAS, IMPL_FLASH, IMPL_CUDNN, IMPL_COUNT };
static const char *const IMPL_NAMES[] = {"auto", "cublas", "flash", "cudnn"};
static int attn_impl = IMPL_AUTO;

extern "C" const char *sao_cuda_attention_impl(sao_ctx *ctx, const char *want) {
    if (want && *want) {
        int i = 0;
        while (i < IMPL_COUNT && strcmp(want, IMPL_NAMES[i])) i++;
        if (i == IMPL_COUNT) {
            sao_err(ctx, "cuda_attention_impl", "'%s': expected \"auto\", \"cublas\", \"flash\" or \"cudnn\"", want);
            return NULL;
        }
        attn_impl = i;
    }
    return IMPL_NAMES[attn_impl];
}

static bool tensor_core_path(const sao_attn_geo *g, const float *bias, const uint8_t *key_mask) {
    return attn_impl != IMPL_FLASH && sao_cuda_gemm_precision(-1) != SAO_GEMM_FP32 && !bias && !key_mask && g->B > 0 && g->T > 0 &&
           g->B * g->H * g->T * g->M * (long long)sizeof(float) <= TC_SCRATCH_MAX &&
           g->B * g->H * g->M * g->D * (long long)sizeof(float) <= TC_SCRATCH_MAX;
}

// Scratch `which` of the current device, at least `floats` long.
static float *tc_buffer(sao_ctx *ctx, const char *op, int which, size_t floats) {
    return sao_cuda_device_scratch(ctx, op, "attention scratch", tc_scratch[which], tc_scratch_n[which], floats);
}

// S_b^T [M, T] per head (column-major, = S_bh row-major [T, M]) = scale K_bh Q_bh^T, every b.
static int tc_logits(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q, const float *k, float *S) {
    long long per = g->H * g->T * g->M;
    for (long long b = 0; b < g->B; b++)
        if (sao_cuda_gemm_batched(ctx, op, true, false, (int)g->M, (int)g->T, (int)g->D, g->scale,
                                  k + b * g->sk[0], (int)g->sk[2], g->sk[1], q + b * g->sq[0], (int)g->sq[2], g->sq[1],
                                  0.0f, S + b * per, (int)g->M, g->T * g->M, (int)g->H))
            return -1;
    return 0;
}

static int tc_forward(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q, const float *k,
                      const float *v, float *out, float *lse) {
    long long per = g->H * g->T * g->M;   // S of one batch item
    float *S = tc_buffer(ctx, op, 0, (size_t)(g->B * per));
    if (!S) return -1;
    if (tc_logits(ctx, op, g, q, k, S)) return -1;
    long long rows = g->B * g->H * g->T;
    softmax_rows<<<sao_cuda_blocks(rows, 8), 256, 0, sao_cuda_stream()>>>(S, rows, g->M, lse);
    CUDA_LAUNCHED(ctx, op);
    for (long long b = 0; b < g->B; b++) {
        // O_bh^T [D, T] = V_bh^T [D, M] P_bh^T [M, T]
        if (sao_cuda_gemm_batched(ctx, op, false, false, (int)g->D, (int)g->T, (int)g->M, 1.0f,
                                  v + b * g->sv[0], (int)g->sv[2], g->sv[1], S + b * per, (int)g->M, g->T * g->M,
                                  0.0f, out + b * g->so[0], (int)g->so[2], g->so[1], (int)g->H))
            return -1;
    }
    return 0;
}

// ---- grouped K/V heads on the tensor-core path: each K/V head copied once per query head of its
// group into [B, H, M, D], and the gradients of those copies summed back per group (in order, so
// the result does not depend on the launch). `v` picks the v strides of g instead of the k ones.
__global__ static void expand_heads(const float *x, sao_attn_geo g, int v, float *y) {
    const int64_t *sx = v ? g.sv : g.sk;
    long long n = g.B * g.H * g.M * g.D;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long d = i % g.D, m = (i / g.D) % g.M, h = (i / (g.D * g.M)) % g.H, b = i / (g.D * g.M * g.H);
        y[i] = x[b * sx[0] + (h / g.G) * sx[1] + m * sx[2] + d];
    }
}

__global__ static void reduce_heads(const float *y, sao_attn_geo g, int v, float *x) {
    const int64_t *sx = v ? g.sv : g.sk;
    long long n = g.B * g.Hkv * g.M * g.D;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        long long d = i % g.D, m = (i / g.D) % g.M, hk = (i / (g.D * g.M)) % g.Hkv, b = i / (g.D * g.M * g.Hkv);
        float acc = 0.0f;
        for (long long j = 0; j < g.G; j++) acc += y[((b * g.H + hk * g.G + j) * g.M + m) * g.D + d];
        x[b * sx[0] + hk * sx[1] + m * sx[2] + d] += acc;
    }
}

static unsigned grid_for(long long n) {
    unsigned blocks = sao_cuda_blocks(n, 256);
    return blocks > (1u << 20) ? 1u << 20 : blocks;
}

// The geometry of the expanded copies: one K/V head per query head, [B, H, M, D] contiguous.
static sao_attn_geo expanded(const sao_attn_geo *g) {
    sao_attn_geo e = *g;
    e.Hkv = g->H;
    e.G = 1;
    long long st[3] = {g->H * g->M * g->D, g->M * g->D, g->D};
    for (int i = 0; i < 3; i++) e.sk[i] = e.sv[i] = st[i];
    return e;
}

// k and v copied per query head into scratches 2 and 3.
static int expand_kv(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *k, const float *v,
                     float **kx, float **vx) {
    long long n = g->B * g->H * g->M * g->D;
    *kx = tc_buffer(ctx, op, 2, (size_t)n);
    *vx = *kx ? tc_buffer(ctx, op, 3, (size_t)n) : NULL;
    if (!*vx) return -1;
    expand_heads<<<grid_for(n), 256, 0, sao_cuda_stream()>>>(k, *g, 0, *kx);
    CUDA_LAUNCHED(ctx, op);
    expand_heads<<<grid_for(n), 256, 0, sao_cuda_stream()>>>(v, *g, 1, *vx);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

// The backward on the same path, from the forward's lse: P = exp(scale Q K^T - lse), dP = dO V^T,
// dS = P (dP - rowsum(dO O)), then dV += P^T dO, dQ += scale dS K, dK += scale dS^T Q, each
// gradient accumulated (beta 1) like the flash kernels'.
static int tc_backward(sao_ctx *ctx, const char *op, const sao_attn_geo *g, const float *q, const float *k,
                       const float *v, const float *out, const float *lse, const float *dout, float *dq, float *dk,
                       float *dv) {
    long long per = g->H * g->T * g->M, rows = g->B * g->H * g->T;
    float *P = tc_buffer(ctx, op, 0, (size_t)(g->B * per));
    float *dS = P ? tc_buffer(ctx, op, 1, (size_t)(g->B * per)) : NULL;
    if (!dS) return -1;
    if (tc_logits(ctx, op, g, q, k, P)) return -1;
    unsigned blocks = sao_cuda_blocks(rows, 8);
    exp_rows<<<blocks, 256, 0, sao_cuda_stream()>>>(P, lse, rows, g->M);
    CUDA_LAUNCHED(ctx, op);
    for (long long b = 0; b < g->B; b++)   // dP_bh^T [M, T] = V_bh [M, D] dO_bh^T [D, T]
        if (sao_cuda_gemm_batched(ctx, op, true, false, (int)g->M, (int)g->T, (int)g->D, 1.0f,
                                  v + b * g->sv[0], (int)g->sv[2], g->sv[1], dout + b * g->so[0], (int)g->so[2],
                                  g->so[1], 0.0f, dS + b * per, (int)g->M, g->T * g->M, (int)g->H))
            return -1;
    ds_rows<<<blocks, 256, 0, sao_cuda_stream()>>>(P, dS, out, dout, *g);
    CUDA_LAUNCHED(ctx, op);
    for (long long b = 0; b < g->B; b++) {
        const float *Pb = P + b * per, *dSb = dS + b * per;
        // dV_bh^T [D, M] += dO_bh^T [D, T] P_bh [T, M]
        if (dv && sao_cuda_gemm_batched(ctx, op, false, true, (int)g->D, (int)g->M, (int)g->T, 1.0f,
                                        dout + b * g->so[0], (int)g->so[2], g->so[1], Pb, (int)g->M, g->T * g->M,
                                        1.0f, dv + b * g->sv[0], (int)g->sv[2], g->sv[1], (int)g->H))
            return -1;
        // dQ_bh^T [D, T] += scale K_bh^T [D, M] dS_bh^T [M, T]
        if (dq && sao_cuda_gemm_batched(ctx, op, false, false, (int)g->D, (int)g->T, (int)g->M, g->scale,
                                        k + b * g->sk[0], (int)g->sk[2], g->sk[1], dSb, (int)g->M, g->T * g->M,
                                        1.0f, dq + b * g->sq[0], (int)g->sq[2], g->sq[1], (int)g->H))
            return -1;
        // dK_bh^T [D, M] += scale Q_bh^T [D, T] dS_bh [T, M]
        if (dk && sao_cuda_gemm_batched(ctx, op, false, true, (int)g->D, (int)g->M, (int)g->T, g->scale,
                                        q + b * g->sq[0], (int)g->sq[2], g->sq[1], dSb, (int)g->M, g->T * g->M,
                                        1.0f, dk + b * g->sk[0], (int)g->sk[2], g->sk[1], (int)g->H))
            return -1;
    }
    return 0;
}

extern "C" int sao_cuda_attention_forward(sao_ctx *ctx, const struct sao_attn_desc *a, const float *q,
                                          const float *k, const float *v, const float *bias,
                                          const uint8_t *key_mask, float *out, float *lse) {
    const char *op = "cuda_attention_forward";
    sao_attn_geo g;
    SAO_CHECK(sao_attention_forward_check(ctx, op, a, q, k, v, out, &g));
    if (g.M == 0) {
        if (sao_cuda_check_ptr(ctx, op, "out", out) || sao_cuda_check_ptr(ctx, op, "lse", lse)) return -1;
        long long n = g.B * g.H * g.T * g.D;
        attn_empty<<<sao_cuda_blocks(n, 256), 256, 0, sao_cuda_stream()>>>(g, out, lse);
        CUDA_LAUNCHED(ctx, op);
        return 0;
    }
    if (check_d(ctx, op, g.D)) return -1;
    if (sao_cuda_check_ptr(ctx, op, "q", q) || sao_cuda_check_ptr(ctx, op, "k", k) ||
        sao_cuda_check_ptr(ctx, op, "v", v) || sao_cuda_check_ptr(ctx, op, "bias", bias) ||
        sao_cuda_check_ptr(ctx, op, "key_mask", key_mask) || sao_cuda_check_ptr(ctx, op, "out", out) ||
        sao_cuda_check_ptr(ctx, op, "lse", lse))
        return -1;
    bool bf16 = sao_cuda_gemm_precision(-1) == SAO_GEMM_BF16;
    if (attn_impl == IMPL_CUDNN && bf16 && !bias && !key_mask) {
        int rc = sao_cuda_sdpa_forward(ctx, op, &g, q, k, v, out, lse);
        if (rc <= 0) return rc;   // 1: cuDNN does not take it; the kernels below do
    }
    if ((attn_impl == IMPL_AUTO || attn_impl == IMPL_CUDNN) && bf16 && sao_cuda_attn_mma_fits(&g))
        return sao_cuda_attn_mma_forward(ctx, op, &g, q, k, v, bias, key_mask, out, lse);
    if (tensor_core_path(&g, bias, key_mask)) {
        if (g.G == 1) return tc_forward(ctx, op, &g, q, k, v, out, lse);
        float *kx, *vx;   // grouped heads: through copies with one K/V head per query head
        if (expand_kv(ctx, op, &g, k, v, &kx, &vx)) return -1;
        sao_attn_geo e = expanded(&g);
        return tc_forward(ctx, op, &e, q, kx, vx, out, lse);
    }
    switch (nv_of(g.D)) {
    case 1: return launch_fwd<1>(ctx, op, &g, q, k, v, bias, key_mask, out, lse);
    case 2: return launch_fwd<2>(ctx, op, &g, q, k, v, bias, key_mask, out, lse);
    case 4: return launch_fwd<4>(ctx, op, &g, q, k, v, bias, key_mask, out, lse);
    default: return launch_fwd<8>(ctx, op, &g, q, k, v, bias, key_mask, out, lse);
    }
}

extern "C" int sao_cuda_attention_backward(sao_ctx *ctx, const struct sao_attn_desc *a, const float *q,
                                           const float *k, const float *v, const float *bias,
                                           const uint8_t *key_mask, const float *out, const float *lse,
                                           const float *dout, float *dq, float *dk, float *dv,
                                           float *dbias) {
    const char *op = "cuda_attention_backward";
    sao_attn_geo g;
    SAO_CHECK(sao_attention_backward_check(ctx, op, a, q, k, v, bias, out, lse, dout, dq, dk, dv, dbias,
                                           &g));
    if (check_d(ctx, op, g.D)) return -1;
    if (sao_cuda_check_ptr(ctx, op, "q", q) || sao_cuda_check_ptr(ctx, op, "k", k) ||
        sao_cuda_check_ptr(ctx, op, "v", v) || sao_cuda_check_ptr(ctx, op, "bias", bias) ||
        sao_cuda_check_ptr(ctx, op, "key_mask", key_mask) || sao_cuda_check_ptr(ctx, op, "out", out) ||
        sao_cuda_check_ptr(ctx, op, "lse", lse) || sao_cuda_check_ptr(ctx, op, "dout", dout) ||
        sao_cuda_check_ptr(ctx, op, "dq", dq) || sao_cuda_check_ptr(ctx, op, "dk", dk) ||
        sao_cuda_check_ptr(ctx, op, "dv", dv) || sao_cuda_check_ptr(ctx, op, "dbias", dbias))
        return -1;
    bool bf16 = sao_cuda_gemm_precision(-1) == SAO_GEMM_BF16;
    if (attn_impl == IMPL_CUDNN && bf16 && !bias && !key_mask && !dbias) {
        int rc = sao_cuda_sdpa_backward(ctx, op, &g, q, k, v, out, lse, dout, dq, dk, dv);
        if (rc <= 0) return rc;   // 1: cuDNN does not take it; the kernels below do
    }
    // bf16 mode: the bf16 tensor-core flash backward (attention_mma_bwd.cu), bias and key mask too;
    // a dbias keeps the fp32 flash kernels below (their dQ block owns dbias rows across the batch)
    if (!dbias && (attn_impl == IMPL_AUTO || attn_impl == IMPL_CUDNN) && bf16 && sao_cuda_attn_mma_fits(&g))
        return sao_cuda_attn_mma_backward(ctx, op, &g, q, k, v, bias, key_mask, out, lse, dout, dq, dk, dv);
    if (!dbias && tensor_core_path(&g, bias, key_mask)) {
        if (g.G == 1) return tc_backward(ctx, op, &g, q, k, v, out, lse, dout, dq, dk, dv);
        // grouped heads: the copies' gradients (zeroed, accumulated), then summed back per group
        float *kx, *vx;
        if (expand_kv(ctx, op, &g, k, v, &kx, &vx)) return -1;
        long long n = g.B * g.H * g.M * g.D;
        float *dkx = dk ? tc_buffer(ctx, op, 4, (size_t)n) : NULL;
        float *dvx = dv ? tc_buffer(ctx, op, 5, (size_t)n) : NULL;
        if ((dk && !dkx) || (dv && !dvx)) return -1;
        if (dkx) CUDA_TRY(ctx, op, cudaMemsetAsync(dkx, 0, (size_t)n * sizeof(float), sao_cuda_stream()));
        if (dvx) CUDA_TRY(ctx, op, cudaMemsetAsync(dvx, 0, (size_t)n * sizeof(float), sao_cuda_stream()));
        sao_attn_geo e = expanded(&g);
        if (tc_backward(ctx, op, &e, q, kx, vx, out, lse, dout, dq, dkx, dvx)) return -1;
        long long nk = g.B * g.Hkv * g.M * g.D;
        if (dk) reduce_heads<<<grid_for(nk), 256, 0, sao_cuda_stream()>>>(dkx, g, 0, dk);
        if (dv) reduce_heads<<<grid_for(nk), 256, 0, sao_cuda_stream()>>>(dvx, g, 1, dv);
        CUDA_LAUNCHED(ctx, op);
        return 0;
    }
    if (dk || dv) {
        int rc = g.D <= 128 ? launch_dkdv<16>(ctx, op, &g, q, k, v, bias, key_mask, out, lse, dout, dk, dv)
                            : launch_dkdv<8>(ctx, op, &g, q, k, v, bias, key_mask, out, lse, dout, dk, dv);
        if (rc) return -1;
    }
    if (dq || dbias) {
        switch (nv_of(g.D)) {
        case 1: return launch_dq<1>(ctx, op, &g, q, k, v, bias, key_mask, out, lse, dout, dq, dbias);
        case 2: return launch_dq<2>(ctx, op, &g, q, k, v, bias, key_mask, out, lse, dout, dq, dbias);
        case 4: return launch_dq<4>(ctx, op, &g, q, k, v, bias, key_mask, out, lse, dout, dq, dbias);
        default: return launch_dq<8>(ctx, op, &g, q, k, v, bias, key_mask, out, lse, dout, dq, dbias);
        }
    }
    return 0;
}

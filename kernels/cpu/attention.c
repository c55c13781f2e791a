/* attention.c — fused multi-head scaled-dot-product attention, forward and backward, tiled with an
 * online softmax so memory stays O(tile) for any T x M (flash-attention-2's algorithm on a CPU).
 *
 *   S = scale * Q K^T + bias (+ -inf where the key mask is 0),  P = softmax_rows(S),  O = P V
 * Shapes (per batch b and query head h; g = h / (H/Hkv) is the shared K/V head):
 *   q, out, dq, dout [T, D] rows; k, v, dk, dv [M, D] rows; bias [H, T, M]; key_mask [B, M];
 *   lse [B, H, T] = log sum_m exp(S[t, m]) (the only statistic kept for the backward).
 * Any (batch, head, token) strides (see sao_attn_desc in sao_kernels.h); rows are contiguous.
 *
 * Forward: one work item per (b, h, 64-query tile); the tile walks the keys 64 at a time, keeping a
 * running max, a running sum and an unnormalised output (rescaled when the max grows).
 * Backward: one work item per (b, kv head g), or per g over all b when dbias is wanted (dbias is
 * shared by the batch). The item owns dk/dv of g and dq of g's query heads, so there are no races
 * and the summation order is fixed: results do not depend on the thread count. Per key tile it
 * recomputes S and P = exp(S - lse) for every query tile of the group, then
 *   dV += P^T dO,  dP = dO V^T,  dS = P (dP - rowsum(dO * O)),  dQ += scale dS K,  dK += scale dS^T Q.
 * The inner products run as `#pragma omp simd` loops over contiguous tiles; exp is sao_vexpf.
 */
#include "kcommon.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BQ 64   /* queries per tile */
#define BK 64   /* keys per tile */

typedef struct {
    int64_t B, H, Hkv, T, M, D, G;
    float scale;
    int64_t sq[3], sk[3], sv[3], so[3];
} geo;

static void fill_strides(int64_t *dst, const int64_t *src, int64_t heads, int64_t len, int64_t D) {
    if (src[0] || src[1] || src[2]) {
        memcpy(dst, src, 3 * sizeof(int64_t));
    } else {
        dst[0] = heads * len * D;
        dst[1] = len * D;
        dst[2] = D;
    }
}

static int setup(sao_ctx *ctx, const char *op, const sao_attn_desc *a, geo *g) {
    if (!a) return sao_err(ctx, op, "descriptor is NULL");
    if (a->B < 0 || a->H < 1 || a->Hkv < 1 || a->T < 0 || a->M < 0 || a->D < 1)
        return sao_err(ctx, op, "bad shape B=%lld H=%lld Hkv=%lld T=%lld M=%lld D=%lld",
                       (long long)a->B, (long long)a->H, (long long)a->Hkv, (long long)a->T,
                       (long long)a->M, (long long)a->D);
    if (a->H % a->Hkv)
        return sao_err(ctx, op, "%lld query heads are not a multiple of %lld K/V heads",
                       (long long)a->H, (long long)a->Hkv);
    g->B = a->B; g->H = a->H; g->Hkv = a->Hkv; g->T = a->T; g->M = a->M; g->D = a->D;
    g->G = a->H / a->Hkv;
    g->scale = a->scale != 0.0 ? (float)a->scale : (float)(1.0 / sqrt((double)a->D));
    fill_strides(g->sq, a->q_stride, a->H, a->T, a->D);
    fill_strides(g->sk, a->k_stride, a->Hkv, a->M, a->D);
    fill_strides(g->sv, a->v_stride, a->Hkv, a->M, a->D);
    fill_strides(g->so, a->o_stride, a->H, a->T, a->D);
    return 0;
}

/* S[i][j] = sum_d A[i][d] * Bt[d][j] for i < nq, j < nk; A [nq][D] rows, Bt [D][BK] */
static void tile_abt(float *S, const float *A, const float *Bt, int64_t nq, int64_t nk, int64_t D) {
    for (int64_t i = 0; i < nq; i++) {
        float *s = S + i * BK;
        for (int64_t j = 0; j < nk; j++) s[j] = 0.0f;
        const float *ar = A + i * D;
        for (int64_t d = 0; d < D; d++) {
            float av = ar[d];
            const float *bt = Bt + d * BK;
            #pragma omp simd
            for (int64_t j = 0; j < nk; j++) s[j] += av * bt[j];
        }
    }
}

/* Bt[d][j] = row j of a strided [nk, D] block (transposed into a [D][BK] tile) */
static void load_t(float *Bt, const float *base, int64_t rs, int64_t nk, int64_t D) {
    for (int64_t j = 0; j < nk; j++) {
        const float *r = base + j * rs;
        for (int64_t d = 0; d < D; d++) Bt[d * BK + j] = r[d];
    }
}

/* scores of one (query tile, key tile): S = A Kt (+ bias) with masked keys at -inf */
static void scores(float *S, const float *A, const float *Kt, int64_t nq, int64_t nk, int64_t D,
                   const float *bias_rows, int64_t M, const uint8_t *mask) {
    tile_abt(S, A, Kt, nq, nk, D);
    if (bias_rows)
        for (int64_t i = 0; i < nq; i++) {
            const float *br = bias_rows + i * M;
            float *s = S + i * BK;
            #pragma omp simd
            for (int64_t j = 0; j < nk; j++) s[j] += br[j];
        }
    if (mask)
        for (int64_t j = 0; j < nk; j++)
            if (!mask[j])
                for (int64_t i = 0; i < nq; i++) S[i * BK + j] = -INFINITY;
}

int sao_attention_forward(sao_ctx *ctx, const sao_attn_desc *a, const float *q, const float *k,
                          const float *v, const float *bias, const uint8_t *key_mask,
                          float *out, float *lse) {
    const char *op = "attention_forward";
    geo g;
    if (setup(ctx, op, a, &g)) return -1;
    SAO_NEED(ctx, op, out);
    if (g.B == 0 || g.T == 0) return 0;
    if (g.M > 0) {
        SAO_NEED(ctx, op, q);
        SAO_NEED(ctx, op, k);
        SAO_NEED(ctx, op, v);
    }
    const int64_t D = g.D, T = g.T, M = g.M;
    const int64_t ntq = (T + BQ - 1) / BQ;
    const int64_t items = g.B * g.H * ntq;
    int fail = 0;
    sao_threads_apply(ctx);
    #pragma omp parallel
    {
        float *Qs = malloc(sizeof(float) * (size_t)(BQ * D));
        float *Kt = malloc(sizeof(float) * (size_t)(D * BK));
        float *O = malloc(sizeof(float) * (size_t)(BQ * D));
        float *S = malloc(sizeof(float) * (size_t)(BQ * BK));
        float mrun[BQ], lrun[BQ];
        if (!Qs || !Kt || !O || !S) {
            #pragma omp atomic write
            fail = 1;
        }
        #pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            if (fail) continue;
            int64_t b = it / (g.H * ntq), h = (it / ntq) % g.H, t0 = (it % ntq) * BQ;
            int64_t kh = h / g.G;
            int64_t nq = T - t0 < BQ ? T - t0 : BQ;
            const float *qb = q + b * g.sq[0] + h * g.sq[1] + t0 * g.sq[2];
            const float *kb = k + b * g.sk[0] + kh * g.sk[1];
            const float *vb = v + b * g.sv[0] + kh * g.sv[1];
            const uint8_t *mb = key_mask ? key_mask + b * M : NULL;
            for (int64_t i = 0; i < nq; i++) {
                const float *qr = qb + i * g.sq[2];
                for (int64_t d = 0; d < D; d++) Qs[i * D + d] = qr[d] * g.scale;
                mrun[i] = -INFINITY;
                lrun[i] = 0.0f;
            }
            memset(O, 0, sizeof(float) * (size_t)(nq * D));
            for (int64_t j0 = 0; j0 < M; j0 += BK) {
                int64_t nk = M - j0 < BK ? M - j0 : BK;
                load_t(Kt, kb + j0 * g.sk[2], g.sk[2], nk, D);
                scores(S, Qs, Kt, nq, nk, D, bias ? bias + (h * T + t0) * M + j0 : NULL, M,
                       mb ? mb + j0 : NULL);
                for (int64_t i = 0; i < nq; i++) {
                    float *s = S + i * BK;
                    float mx = -INFINITY;
                    for (int64_t j = 0; j < nk; j++) mx = s[j] > mx ? s[j] : mx;
                    float mnew = mx > mrun[i] ? mx : mrun[i];
                    if (mnew == -INFINITY) continue;   /* every key so far is masked */
                    float corr = sao_vexpf(mrun[i] - mnew);
                    float sum = 0.0f;
                    #pragma omp simd reduction(+:sum)
                    for (int64_t j = 0; j < nk; j++) {
                        float p = sao_vexpf(s[j] - mnew);
                        s[j] = p;
                        sum += p;
                    }
                    lrun[i] = lrun[i] * corr + sum;
                    mrun[i] = mnew;
                    float *o = O + i * D;
                    if (corr != 1.0f) {
                        #pragma omp simd
                        for (int64_t d = 0; d < D; d++) o[d] *= corr;
                    }
                    for (int64_t j = 0; j < nk; j++) {
                        float p = s[j];
                        const float *vr = vb + (j0 + j) * g.sv[2];
                        #pragma omp simd
                        for (int64_t d = 0; d < D; d++) o[d] += p * vr[d];
                    }
                }
            }
            for (int64_t i = 0; i < nq; i++) {
                float *orow = out + b * g.so[0] + h * g.so[1] + (t0 + i) * g.so[2];
                float inv = lrun[i] > 0.0f ? 1.0f / lrun[i] : 0.0f;
                for (int64_t d = 0; d < D; d++) orow[d] = O[i * D + d] * inv;
                if (lse) lse[(b * g.H + h) * T + t0 + i] = lrun[i] > 0.0f ? mrun[i] + logf(lrun[i]) : -INFINITY;
            }
        }
        free(Qs);
        free(Kt);
        free(O);
        free(S);
    }
    if (fail) return sao_err(ctx, op, "out of memory for the per-thread tiles (D=%lld)", (long long)D);
    return 0;
}

int sao_attention_backward(sao_ctx *ctx, const sao_attn_desc *a, const float *q, const float *k,
                           const float *v, const float *bias, const uint8_t *key_mask,
                           const float *out, const float *lse, const float *dout,
                           float *dq, float *dk, float *dv, float *dbias) {
    const char *op = "attention_backward";
    geo g;
    if (setup(ctx, op, a, &g)) return -1;
    if (g.B == 0 || g.T == 0 || g.M == 0) return 0;
    SAO_NEED(ctx, op, q);
    SAO_NEED(ctx, op, k);
    SAO_NEED(ctx, op, v);
    SAO_NEED(ctx, op, out);
    SAO_NEED(ctx, op, lse);
    SAO_NEED(ctx, op, dout);
    if (dbias && !bias) return sao_err(ctx, op, "dbias given without bias");
    if (!dq && !dk && !dv && !dbias) return 0;
    const int64_t D = g.D, T = g.T, M = g.M, G = g.G;
    /* with dbias one item covers every batch row of a kv head (dbias is shared over b) */
    const int64_t nb_item = dbias ? g.B : 1;
    const int64_t items = dbias ? g.Hkv : g.B * g.Hkv;
    int fail = 0;
    sao_threads_apply(ctx);
    #pragma omp parallel
    {
        float *Qs = malloc(sizeof(float) * (size_t)(BQ * D));
        float *dO = malloc(sizeof(float) * (size_t)(BQ * D));
        float *Kt = malloc(sizeof(float) * (size_t)(D * BK));
        float *Vt = malloc(sizeof(float) * (size_t)(D * BK));
        float *dKa = malloc(sizeof(float) * (size_t)(BK * D));
        float *dVa = malloc(sizeof(float) * (size_t)(BK * D));
        float *P = malloc(sizeof(float) * (size_t)(BQ * BK));
        float *dP = malloc(sizeof(float) * (size_t)(BQ * BK));
        float *Dr = malloc(sizeof(float) * (size_t)(G * T));   /* rowsum(dO * O) per query row */
        if (!Qs || !dO || !Kt || !Vt || !dKa || !dVa || !P || !dP || !Dr) {
            #pragma omp atomic write
            fail = 1;
        }
        #pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            if (fail) continue;
            int64_t kh = it % g.Hkv;
            int64_t b0 = dbias ? 0 : it / g.Hkv;
            for (int64_t b = b0; b < b0 + nb_item; b++) {
                const float *kb = k + b * g.sk[0] + kh * g.sk[1];
                const float *vb = v + b * g.sv[0] + kh * g.sv[1];
                const uint8_t *mb = key_mask ? key_mask + b * M : NULL;
                for (int64_t hh = 0; hh < G; hh++) {
                    int64_t h = kh * G + hh;
                    for (int64_t t = 0; t < T; t++) {
                        const float *orow = out + b * g.so[0] + h * g.so[1] + t * g.so[2];
                        const float *drow = dout + b * g.so[0] + h * g.so[1] + t * g.so[2];
                        float s = 0.0f;
                        #pragma omp simd reduction(+:s)
                        for (int64_t d = 0; d < D; d++) s += orow[d] * drow[d];
                        Dr[hh * T + t] = s;
                    }
                }
                for (int64_t j0 = 0; j0 < M; j0 += BK) {
                    int64_t nk = M - j0 < BK ? M - j0 : BK;
                    load_t(Kt, kb + j0 * g.sk[2], g.sk[2], nk, D);
                    load_t(Vt, vb + j0 * g.sv[2], g.sv[2], nk, D);
                    memset(dKa, 0, sizeof(float) * (size_t)(nk * D));
                    memset(dVa, 0, sizeof(float) * (size_t)(nk * D));
                    for (int64_t hh = 0; hh < G; hh++) {
                        int64_t h = kh * G + hh;
                        const float *ls = lse + (b * g.H + h) * T;
                        for (int64_t t0 = 0; t0 < T; t0 += BQ) {
                            int64_t nq = T - t0 < BQ ? T - t0 : BQ;
                            for (int64_t i = 0; i < nq; i++) {
                                const float *qr = q + b * g.sq[0] + h * g.sq[1] + (t0 + i) * g.sq[2];
                                const float *dr = dout + b * g.so[0] + h * g.so[1] + (t0 + i) * g.so[2];
                                for (int64_t d = 0; d < D; d++) {
                                    Qs[i * D + d] = qr[d] * g.scale;
                                    dO[i * D + d] = dr[d];
                                }
                            }
                            /* P = exp(S - lse) */
                            scores(P, Qs, Kt, nq, nk, D, bias ? bias + (h * T + t0) * M + j0 : NULL, M,
                                   mb ? mb + j0 : NULL);
                            for (int64_t i = 0; i < nq; i++) {
                                float l = ls[t0 + i];
                                float *p = P + i * BK;
                                if (l == -INFINITY) {
                                    for (int64_t j = 0; j < nk; j++) p[j] = 0.0f;
                                    continue;
                                }
                                #pragma omp simd
                                for (int64_t j = 0; j < nk; j++) p[j] = sao_vexpf(p[j] - l);
                            }
                            /* dV += P^T dO */
                            if (dv)
                                for (int64_t i = 0; i < nq; i++) {
                                    const float *dr = dO + i * D;
                                    for (int64_t j = 0; j < nk; j++) {
                                        float pv = P[i * BK + j];
                                        float *acc = dVa + j * D;
                                        #pragma omp simd
                                        for (int64_t d = 0; d < D; d++) acc[d] += pv * dr[d];
                                    }
                                }
                            if (!dq && !dk && !dbias) continue;
                            /* dS = P * (dO V^T - Dr), stored in P */
                            tile_abt(dP, dO, Vt, nq, nk, D);
                            for (int64_t i = 0; i < nq; i++) {
                                float dri = Dr[hh * T + t0 + i];
                                float *p = P + i * BK;
                                const float *dp = dP + i * BK;
                                #pragma omp simd
                                for (int64_t j = 0; j < nk; j++) p[j] = p[j] * (dp[j] - dri);
                            }
                            if (dbias)
                                for (int64_t i = 0; i < nq; i++) {
                                    float *db = dbias + (h * T + t0 + i) * M + j0;
                                    #pragma omp simd
                                    for (int64_t j = 0; j < nk; j++) db[j] += P[i * BK + j];
                                }
                            /* dQ += scale dS K (K rows straight from k) */
                            if (dq)
                                for (int64_t i = 0; i < nq; i++) {
                                    float *dqr = dq + b * g.sq[0] + h * g.sq[1] + (t0 + i) * g.sq[2];
                                    for (int64_t j = 0; j < nk; j++) {
                                        float ds = P[i * BK + j] * g.scale;
                                        const float *kr = kb + (j0 + j) * g.sk[2];
                                        #pragma omp simd
                                        for (int64_t d = 0; d < D; d++) dqr[d] += ds * kr[d];
                                    }
                                }
                            /* dK += dS^T (scale Q) */
                            if (dk)
                                for (int64_t i = 0; i < nq; i++) {
                                    const float *qs = Qs + i * D;
                                    for (int64_t j = 0; j < nk; j++) {
                                        float ds = P[i * BK + j];
                                        float *acc = dKa + j * D;
                                        #pragma omp simd
                                        for (int64_t d = 0; d < D; d++) acc[d] += ds * qs[d];
                                    }
                                }
                        }
                    }
                    for (int64_t j = 0; j < nk; j++) {
                        if (dk) {
                            float *r = dk + b * g.sk[0] + kh * g.sk[1] + (j0 + j) * g.sk[2];
                            for (int64_t d = 0; d < D; d++) r[d] += dKa[j * D + d];
                        }
                        if (dv) {
                            float *r = dv + b * g.sv[0] + kh * g.sv[1] + (j0 + j) * g.sv[2];
                            for (int64_t d = 0; d < D; d++) r[d] += dVa[j * D + d];
                        }
                    }
                }
            }
        }
        free(Qs); free(dO); free(Kt); free(Vt); free(dKa); free(dVa); free(P); free(dP); free(Dr);
    }
    if (fail) return sao_err(ctx, op, "out of memory for the per-thread tiles (D=%lld, T=%lld)",
                             (long long)D, (long long)T);
    return 0;
}

/* attention.c — fused multi-head scaled-dot-product attention, forward and backward, tiled with an
 * online softmax so no T x M matrix is ever formed (flash-attention-2's algorithm on a CPU).
 *
 *   S = scale * Q K^T + bias (+ -inf where the key mask is 0),  P = softmax_rows(S),  O = P V
 * Shapes (per batch b and query head h; g = h / (H/Hkv) is the shared K/V head):
 *   q, out, dq, dout [T, D] rows; k, v, dk, dv [M, D] rows; bias [H, T, M]; key_mask [B, M];
 *   lse [B, H, T] = log sum_m exp(S[t, m]) (the only statistic kept for the backward).
 * Any (batch, head, token) strides (see sao_attn_desc in sao_kernels.h); rows are contiguous.
 *
 * Memory: besides O(tile) scratch per thread, each call makes zero-padded copies of K and V
 * (K transposed, [Dp][Mp] per head, so score tiles are plain products; V as [Mp][Dp]) and, in the
 * backward, per-thread dK/dV accumulators of one head ([Mp][Dp]); Dp, Mp = D, M rounded up to 16.
 * All of it is O(M * D), the size of K and V themselves.
 *
 * Forward: one work item per (b, h, 64-query tile); the tile walks the keys 64 at a time, keeping a
 * running max, a running sum and an unnormalised output (rescaled when the max grows).
 * Backward: one work item per (b, kv head g), or per g over all b when dbias is wanted (dbias is
 * shared by the batch). The item owns dk/dv of g and dq of g's query heads, so there are no races
 * and the summation order is fixed: results do not depend on the thread count. For each query
 * tile of the group it walks the key tiles, recomputing S and P = exp(S - lse), and accumulates
 *   dV += P^T dO,  dP = dO V^T,  dS = P (dP - rowsum(dO * O)),  dQ += scale dS K,  dK += scale dS^T Q.
 * Every product is one register-blocked tile kernel, mm_acc; exp is sao_vexpf.
 */
#include "kcommon.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BQ 64   /* queries per tile */
#define BK 64   /* keys per tile */

static int64_t up16(int64_t n) { return (n + 15) / 16 * 16; }

/* ---- argument checks (kcheck.h: the CUDA twins in kernels/cuda/attention.cu call them too) ------ */
static void fill_strides(int64_t *dst, const int64_t *src, int64_t heads, int64_t len, int64_t D) {
    if (src[0] || src[1] || src[2]) {
        memcpy(dst, src, 3 * sizeof(int64_t));
    } else {
        dst[0] = heads * len * D;
        dst[1] = len * D;
        dst[2] = D;
    }
}

static int setup(sao_ctx *ctx, const char *op, const sao_attn_desc *a, sao_attn_geo *g) {
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

int sao_attention_forward_check(sao_ctx *ctx, const char *op, const sao_attn_desc *a,
                                const float *q, const float *k, const float *v, const float *out,
                                sao_attn_geo *g) {
    if (setup(ctx, op, a, g)) return -1;
    SAO_NEED(ctx, op, out);
    if (g->B == 0 || g->T == 0) return 0;
    if (g->M > 0) {
        SAO_NEED(ctx, op, q);
        SAO_NEED(ctx, op, k);
        SAO_NEED(ctx, op, v);
    }
    return 1;
}

int sao_attention_backward_check(sao_ctx *ctx, const char *op, const sao_attn_desc *a,
                                 const float *q, const float *k, const float *v, const float *bias,
                                 const float *out, const float *lse, const float *dout,
                                 const float *dq, const float *dk, const float *dv,
                                 const float *dbias, sao_attn_geo *g) {
    if (setup(ctx, op, a, g)) return -1;
    if (g->B == 0 || g->T == 0 || g->M == 0) return 0;
    SAO_NEED(ctx, op, q);
    SAO_NEED(ctx, op, k);
    SAO_NEED(ctx, op, v);
    SAO_NEED(ctx, op, out);
    SAO_NEED(ctx, op, lse);
    SAO_NEED(ctx, op, dout);
    if (dbias && !bias) return sao_err(ctx, op, "dbias given without bias");
    return dq || dk || dv || dbias ? 1 : 0;
}

/* ---- the tile product: C[m][n] += A(m x k) B[k][n], n a multiple of 16 ------------------------
 * A(i, d) = A[i*ar + d*ac], so A may be read transposed (P^T, dS^T) without a copy; B and C have
 * contiguous rows. GCC vector types hold VW floats (one AVX-512 / AVX / SSE register); a block of
 * RB rows x 4 vectors of C stays in registers while k runs (4 x 64 with AVX-512, 2 x 32 with AVX).
 * Loads go through memcpy, so nothing needs alignment. */
#if defined(__AVX512F__)
#define VW 16
#define RB 4
#elif defined(__AVX__)
#define VW 8
#define RB 2
#else
#define VW 4
#define RB 2
#endif
typedef float vf __attribute__((vector_size(VW * 4)));
#define LDV(p) ({ vf v_; memcpy(&v_, (p), sizeof v_); v_; })
#define STV(p, v) memcpy((p), &(v), sizeof(vf))
/* Keeps a loaded B vector in a register: without it GCC folds the load into every FMA, which makes
 * the loop load-bound (measured ~25 % slower on Zen 4). */
#if defined(__x86_64__) || defined(__i386__)
#define IN_REG(x) __asm__("" : "+v"(x))
#else
#define IN_REG(x) ((void)0)
#endif

static void mm_acc(float *restrict Cm, int64_t ldc, const float *restrict A, int64_t ar, int64_t ac,
                   const float *restrict Bm, int64_t ldb, int64_t m, int64_t k, int64_t n) {
    int64_t j0 = 0;
    for (; j0 + 4 * VW <= n; j0 += 4 * VW) {
        int64_t i = 0;
        for (; i + RB <= m; i += RB) {
            vf c[RB][4];
            #pragma GCC unroll 4
            for (int r = 0; r < RB; r++)
                #pragma GCC unroll 4
                for (int v = 0; v < 4; v++) c[r][v] = LDV(Cm + (i + r) * ldc + j0 + VW * v);
            for (int64_t d = 0; d < k; d++) {
                const float *b = Bm + d * ldb + j0;
                vf bv[4];
                #pragma GCC unroll 4
                for (int v = 0; v < 4; v++) {
                    bv[v] = LDV(b + VW * v);
                    IN_REG(bv[v]);
                }
                #pragma GCC unroll 4
                for (int r = 0; r < RB; r++) {
                    float av = A[(i + r) * ar + d * ac];
                    #pragma GCC unroll 4
                    for (int v = 0; v < 4; v++) c[r][v] += av * bv[v];
                }
            }
            #pragma GCC unroll 4
            for (int r = 0; r < RB; r++)
                #pragma GCC unroll 4
                for (int v = 0; v < 4; v++) STV(Cm + (i + r) * ldc + j0 + VW * v, c[r][v]);
        }
        for (; i < m; i++) {
            vf c[4];
            #pragma GCC unroll 4
            for (int v = 0; v < 4; v++) c[v] = LDV(Cm + i * ldc + j0 + VW * v);
            for (int64_t d = 0; d < k; d++) {
                float av = A[i * ar + d * ac];
                const float *b = Bm + d * ldb + j0;
                #pragma GCC unroll 4
                for (int v = 0; v < 4; v++) c[v] += av * LDV(b + VW * v);
            }
            #pragma GCC unroll 4
            for (int v = 0; v < 4; v++) STV(Cm + i * ldc + j0 + VW * v, c[v]);
        }
    }
    for (; j0 < n; j0 += VW)
        for (int64_t i = 0; i < m; i++) {
            vf c = LDV(Cm + i * ldc + j0);
            for (int64_t d = 0; d < k; d++) c += A[i * ar + d * ac] * LDV(Bm + d * ldb + j0);
            STV(Cm + i * ldc + j0, c);
        }
}

/* ---- padded copies --------------------------------------------------------------------------- */

/* dst [rows_total][Dp] = scale * the first n rows of a strided block; the rest zero */
static void copy_rows(float *dst, const float *base, int64_t rs, int64_t n, int64_t rows_total,
                      int64_t D, int64_t Dp, float scale) {
    for (int64_t j = 0; j < n; j++) {
        const float *r = base + j * rs;
        float *o = dst + j * Dp;
        for (int64_t d = 0; d < D; d++) o[d] = r[d] * scale;
        for (int64_t d = D; d < Dp; d++) o[d] = 0.0f;
    }
    if (rows_total > n) memset(dst + n * Dp, 0, sizeof(float) * (size_t)((rows_total - n) * Dp));
}

/* dst [Dp][Mp]: dst[d][j] = row j of a strided [M, D] block; padding zero */
static void copy_cols(float *dst, const float *base, int64_t rs, int64_t M, int64_t Mp, int64_t D,
                      int64_t Dp) {
    memset(dst, 0, sizeof(float) * (size_t)(Dp * Mp));
    for (int64_t j0 = 0; j0 < M; j0 += 16) {   /* 16 keys at a time keep the writes in few lines */
        int64_t j1 = j0 + 16 < M ? j0 + 16 : M;
        for (int64_t d = 0; d < D; d++)
            for (int64_t j = j0; j < j1; j++) dst[d * Mp + j] = base[j * rs + d];
    }
}

/* Per-call padded copies of K (transposed), K rows and V rows / V transposed, for every (b, g).
 * want: bit 1 Kt, bit 2 Kr (scaled by kr_scale), bit 4 Vr, bit 8 Vt. NULL-able members. */
typedef struct { float *Kt, *Kr, *Vr, *Vt; } kvcopy;

static int kv_prepare(const sao_attn_geo *g, const float *k, const float *v, int want, float kr_scale,
                      kvcopy *c) {
    const int64_t Dp = up16(g->D), Mp = up16(g->M);
    const int64_t nh = g->B * g->Hkv, per = Dp * Mp;
    memset(c, 0, sizeof *c);
    if ((want & 1) && !(c->Kt = malloc(sizeof(float) * (size_t)(nh * per)))) return -1;
    if ((want & 2) && !(c->Kr = malloc(sizeof(float) * (size_t)(nh * per)))) return -1;
    if ((want & 4) && !(c->Vr = malloc(sizeof(float) * (size_t)(nh * per)))) return -1;
    if ((want & 8) && !(c->Vt = malloc(sizeof(float) * (size_t)(nh * per)))) return -1;
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < nh; i++) {
        int64_t b = i / g->Hkv, kh = i % g->Hkv;
        const float *kb = k + b * g->sk[0] + kh * g->sk[1], *vb = v + b * g->sv[0] + kh * g->sv[1];
        if (c->Kt) copy_cols(c->Kt + i * per, kb, g->sk[2], g->M, Mp, g->D, Dp);
        if (c->Kr) copy_rows(c->Kr + i * per, kb, g->sk[2], g->M, Mp, g->D, Dp, kr_scale);
        if (c->Vr) copy_rows(c->Vr + i * per, vb, g->sv[2], g->M, Mp, g->D, Dp, 1.0f);
        if (c->Vt) copy_cols(c->Vt + i * per, vb, g->sv[2], g->M, Mp, g->D, Dp);
    }
    return 0;
}

static void kv_free(kvcopy *c) {
    free(c->Kt);
    free(c->Kr);
    free(c->Vr);
    free(c->Vt);
}

/* S [nq][BK] (columns 0..nkp) = A Kt[:, j0..j0+nkp) (+ bias), -inf on masked keys and on the
 * padding columns nk <= j < nkp; columns past nkp are never read */
static void scores(float *S, const float *A, int64_t Dp, const float *Kt, int64_t Mp, int64_t nq,
                   int64_t nk, int64_t nkp, const float *bias_rows, int64_t M, const uint8_t *mask) {
    for (int64_t i = 0; i < nq; i++) memset(S + i * BK, 0, sizeof(float) * (size_t)nkp);
    mm_acc(S, BK, A, Dp, 1, Kt, Mp, nq, Dp, nkp);
    for (int64_t i = 0; i < nq; i++) {
        float *s = S + i * BK;
        if (bias_rows) {
            const float *br = bias_rows + i * M;
            #pragma omp simd
            for (int64_t j = 0; j < nk; j++) s[j] += br[j];
        }
        if (mask)
            for (int64_t j = 0; j < nk; j++)
                if (!mask[j]) s[j] = -INFINITY;
        for (int64_t j = nk; j < nkp; j++) s[j] = -INFINITY;
    }
}

int sao_attention_forward(sao_ctx *ctx, const sao_attn_desc *a, const float *q, const float *k,
                          const float *v, const float *bias, const uint8_t *key_mask,
                          float *out, float *lse) {
    const char *op = "attention_forward";
    sao_attn_geo g;
    SAO_CHECK(sao_attention_forward_check(ctx, op, a, q, k, v, out, &g));
    const int64_t D = g.D, Dp = up16(g.D), Mp = up16(g.M), T = g.T, M = g.M;
    if (M == 0) {   /* nothing to attend to: zero rows, lse = -inf */
        for (int64_t r = 0; r < g.B * g.H * T; r++) {
            int64_t b = r / (g.H * T), h = (r / T) % g.H, t = r % T;
            memset(out + b * g.so[0] + h * g.so[1] + t * g.so[2], 0, sizeof(float) * (size_t)D);
            if (lse) lse[r] = -INFINITY;
        }
        return 0;
    }
    const int64_t ntq = (T + BQ - 1) / BQ;
    const int64_t items = g.B * g.H * ntq;
    sao_threads_apply(ctx);
    kvcopy kv;
    if (kv_prepare(&g, k, v, 1 | 4, 1.0f, &kv)) {
        kv_free(&kv);
        return sao_err(ctx, op, "out of memory for the padded K/V copies (%lld x %lld per head)",
                       (long long)Mp, (long long)Dp);
    }
    int fail = 0;
    #pragma omp parallel
    {
        float *Qs = malloc(sizeof(float) * (size_t)(BQ * Dp));  /* scale * q tile [BQ][Dp] */
        float *O = malloc(sizeof(float) * (size_t)(BQ * Dp));   /* unnormalised output [BQ][Dp] */
        float *S = malloc(sizeof(float) * (size_t)(BQ * BK));   /* scores, then P [BQ][BK] */
        float mrun[BQ], lrun[BQ];                              /* running max and sum per row */
        if (!Qs || !O || !S) {
            #pragma omp atomic write
            fail = 1;
        }
        #pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            if (fail) continue;
            int64_t b = it / (g.H * ntq), h = (it / ntq) % g.H, t0 = (it % ntq) * BQ;
            int64_t kvi = b * g.Hkv + h / g.G;
            int64_t nq = T - t0 < BQ ? T - t0 : BQ;
            const float *Kt = kv.Kt + kvi * Dp * Mp, *Vr = kv.Vr + kvi * Mp * Dp;
            const uint8_t *mb = key_mask ? key_mask + b * M : NULL;
            copy_rows(Qs, q + b * g.sq[0] + h * g.sq[1] + t0 * g.sq[2], g.sq[2], nq, nq, D, Dp, g.scale);
            for (int64_t i = 0; i < nq; i++) {
                mrun[i] = -INFINITY;
                lrun[i] = 0.0f;
            }
            memset(O, 0, sizeof(float) * (size_t)(nq * Dp));
            for (int64_t j0 = 0; j0 < M; j0 += BK) {
                int64_t nk = M - j0 < BK ? M - j0 : BK, nkp = up16(nk);
                scores(S, Qs, Dp, Kt + j0, Mp, nq, nk, nkp, bias ? bias + (h * T + t0) * M + j0 : NULL,
                       M, mb ? mb + j0 : NULL);
                for (int64_t i = 0; i < nq; i++) {
                    float *s = S + i * BK;
                    float mx = -INFINITY;
                    #pragma omp simd reduction(max:mx)
                    for (int64_t j = 0; j < nkp; j++) mx = s[j] > mx ? s[j] : mx;
                    float mnew = mx > mrun[i] ? mx : mrun[i];
                    if (mnew == -INFINITY) {   /* every key so far is masked: contributes nothing */
                        memset(s, 0, sizeof(float) * (size_t)nkp);
                        continue;
                    }
                    float corr = sao_vexpf(mrun[i] - mnew);
                    float sum = 0.0f;
                    #pragma omp simd reduction(+:sum)
                    for (int64_t j = 0; j < nkp; j++) {
                        float p = sao_vexpf(s[j] - mnew);
                        s[j] = p;
                        sum += p;
                    }
                    lrun[i] = lrun[i] * corr + sum;
                    mrun[i] = mnew;
                    if (corr != 1.0f) {
                        float *o = O + i * Dp;
                        #pragma omp simd
                        for (int64_t d = 0; d < Dp; d++) o[d] *= corr;
                    }
                }
                mm_acc(O, Dp, S, BK, 1, Vr + j0 * Dp, Dp, nq, nk, Dp);   /* O += P V */
            }
            for (int64_t i = 0; i < nq; i++) {
                float *orow = out + b * g.so[0] + h * g.so[1] + (t0 + i) * g.so[2];
                float inv = lrun[i] > 0.0f ? 1.0f / lrun[i] : 0.0f;
                for (int64_t d = 0; d < D; d++) orow[d] = O[i * Dp + d] * inv;
                if (lse)
                    lse[(b * g.H + h) * T + t0 + i] = lrun[i] > 0.0f ? mrun[i] + logf(lrun[i]) : -INFINITY;
            }
        }
        free(Qs);
        free(O);
        free(S);
    }
    kv_free(&kv);
    if (fail) return sao_err(ctx, op, "out of memory for the per-thread tiles (D=%lld)", (long long)D);
    return 0;
}

int sao_attention_backward(sao_ctx *ctx, const sao_attn_desc *a, const float *q, const float *k,
                           const float *v, const float *bias, const uint8_t *key_mask,
                           const float *out, const float *lse, const float *dout,
                           float *dq, float *dk, float *dv, float *dbias) {
    const char *op = "attention_backward";
    sao_attn_geo g;
    SAO_CHECK(sao_attention_backward_check(ctx, op, a, q, k, v, bias, out, lse, dout, dq, dk, dv, dbias,
                                           &g));
    const int64_t D = g.D, Dp = up16(g.D), Mp = up16(g.M), T = g.T, M = g.M, G = g.G;
    const int need_ds = dq || dk || dbias;
    /* with dbias one item covers every batch row of a kv head (dbias is shared over b) */
    const int64_t nb_item = dbias ? g.B : 1;
    const int64_t items = dbias ? g.Hkv : g.B * g.Hkv;
    sao_threads_apply(ctx);
    kvcopy kv;
    if (kv_prepare(&g, k, v, 1 | (dq ? 2 : 0) | (need_ds ? 8 : 0), g.scale, &kv)) {
        kv_free(&kv);
        return sao_err(ctx, op, "out of memory for the padded K/V copies (%lld x %lld per head)",
                       (long long)Mp, (long long)Dp);
    }
    int fail = 0;
    #pragma omp parallel
    {
        float *Qs = malloc(sizeof(float) * (size_t)(BQ * Dp));   /* scale * q tile [BQ][Dp] */
        float *dO = malloc(sizeof(float) * (size_t)(BQ * Dp));   /* dout tile [BQ][Dp] */
        float *dQa = malloc(sizeof(float) * (size_t)(BQ * Dp));  /* dq of the query tile [BQ][Dp] */
        float *P = malloc(sizeof(float) * (size_t)(BQ * BK));    /* P, then dS [BQ][BK] */
        float *dP = malloc(sizeof(float) * (size_t)(BQ * BK));   /* dO V^T [BQ][BK] */
        float *dKa = malloc(sizeof(float) * (size_t)(Mp * Dp));  /* dk of the head [Mp][Dp] */
        float *dVa = malloc(sizeof(float) * (size_t)(Mp * Dp));  /* dv of the head [Mp][Dp] */
        float Dr[BQ];                                           /* rowsum(dO * O) of the tile */
        if (!Qs || !dO || !dQa || !P || !dP || !dKa || !dVa) {
            #pragma omp atomic write
            fail = 1;
        }
        #pragma omp for schedule(static)
        for (int64_t it = 0; it < items; it++) {
            if (fail) continue;
            int64_t kh = it % g.Hkv;
            int64_t b0 = dbias ? 0 : it / g.Hkv;
            for (int64_t b = b0; b < b0 + nb_item; b++) {
                int64_t kvi = b * g.Hkv + kh;
                const float *Kt = kv.Kt + kvi * Dp * Mp;
                const float *Kr = kv.Kr ? kv.Kr + kvi * Mp * Dp : NULL;
                const float *Vt = kv.Vt ? kv.Vt + kvi * Dp * Mp : NULL;
                const uint8_t *mb = key_mask ? key_mask + b * M : NULL;
                memset(dKa, 0, sizeof(float) * (size_t)(Mp * Dp));
                memset(dVa, 0, sizeof(float) * (size_t)(Mp * Dp));
                for (int64_t hh = 0; hh < G; hh++) {
                    int64_t h = kh * G + hh;
                    const float *ls = lse + (b * g.H + h) * T;
                    for (int64_t t0 = 0; t0 < T; t0 += BQ) {
                        int64_t nq = T - t0 < BQ ? T - t0 : BQ;
                        const float *ob = out + b * g.so[0] + h * g.so[1] + t0 * g.so[2];
                        const float *db = dout + b * g.so[0] + h * g.so[1] + t0 * g.so[2];
                        copy_rows(Qs, q + b * g.sq[0] + h * g.sq[1] + t0 * g.sq[2], g.sq[2], nq, nq, D,
                                  Dp, g.scale);
                        copy_rows(dO, db, g.so[2], nq, nq, D, Dp, 1.0f);
                        for (int64_t i = 0; i < nq; i++) {
                            const float *orow = ob + i * g.so[2], *drow = db + i * g.so[2];
                            float s = 0.0f;
                            #pragma omp simd reduction(+:s)
                            for (int64_t d = 0; d < D; d++) s += orow[d] * drow[d];
                            Dr[i] = s;
                        }
                        if (dq) memset(dQa, 0, sizeof(float) * (size_t)(nq * Dp));
                        for (int64_t j0 = 0; j0 < M; j0 += BK) {
                            int64_t nk = M - j0 < BK ? M - j0 : BK, nkp = up16(nk);
                            /* P = exp(S - lse): 0 on padding and masked keys, and on dead rows */
                            scores(P, Qs, Dp, Kt + j0, Mp, nq, nk, nkp,
                                   bias ? bias + (h * T + t0) * M + j0 : NULL, M, mb ? mb + j0 : NULL);
                            for (int64_t i = 0; i < nq; i++) {
                                float l = ls[t0 + i];
                                float *p = P + i * BK;
                                if (l == -INFINITY) {
                                    memset(p, 0, sizeof(float) * (size_t)nkp);
                                    continue;
                                }
                                #pragma omp simd
                                for (int64_t j = 0; j < nkp; j++) p[j] = sao_vexpf(p[j] - l);
                            }
                            if (dv)   /* dV += P^T dO */
                                mm_acc(dVa + j0 * Dp, Dp, P, 1, BK, dO, Dp, nk, nq, Dp);
                            if (!need_ds) continue;
                            /* dS = P * (dO V^T - Dr), in place of P */
                            for (int64_t i = 0; i < nq; i++)
                                memset(dP + i * BK, 0, sizeof(float) * (size_t)nkp);
                            mm_acc(dP, BK, dO, Dp, 1, Vt + j0, Mp, nq, Dp, nkp);
                            for (int64_t i = 0; i < nq; i++) {
                                float dri = Dr[i];
                                float *p = P + i * BK;
                                const float *dp = dP + i * BK;
                                #pragma omp simd
                                for (int64_t j = 0; j < nkp; j++) p[j] = p[j] * (dp[j] - dri);
                            }
                            if (dbias)
                                for (int64_t i = 0; i < nq; i++) {
                                    float *dbr = dbias + (h * T + t0 + i) * M + j0;
                                    #pragma omp simd
                                    for (int64_t j = 0; j < nk; j++) dbr[j] += P[i * BK + j];
                                }
                            if (dq)   /* dQ += dS (scale K) */
                                mm_acc(dQa, Dp, P, BK, 1, Kr + j0 * Dp, Dp, nq, nk, Dp);
                            if (dk)   /* dK += dS^T (scale Q) */
                                mm_acc(dKa + j0 * Dp, Dp, P, 1, BK, Qs, Dp, nk, nq, Dp);
                        }
                        if (dq)
                            for (int64_t i = 0; i < nq; i++) {
                                float *dqr = dq + b * g.sq[0] + h * g.sq[1] + (t0 + i) * g.sq[2];
                                #pragma omp simd
                                for (int64_t d = 0; d < D; d++) dqr[d] += dQa[i * Dp + d];
                            }
                    }
                }
                for (int64_t j = 0; j < M; j++) {
                    if (dk) {
                        float *r = dk + b * g.sk[0] + kh * g.sk[1] + j * g.sk[2];
                        for (int64_t d = 0; d < D; d++) r[d] += dKa[j * Dp + d];
                    }
                    if (dv) {
                        float *r = dv + b * g.sv[0] + kh * g.sv[1] + j * g.sv[2];
                        for (int64_t d = 0; d < D; d++) r[d] += dVa[j * Dp + d];
                    }
                }
            }
        }
        free(Qs); free(dO); free(dQa); free(P); free(dP); free(dKa); free(dVa);
    }
    kv_free(&kv);
    if (fail) return sao_err(ctx, op, "out of memory for the per-thread tiles (D=%lld, M=%lld)",
                             (long long)D, (long long)M);
    return 0;
}

/* features.c — onset strength, onset detection, HPSS and the evaluation feature set.
 *
 * Everything here follows librosa 0.11 defaults unless docs/analysis.md says otherwise:
 *   - onset strength: power mel (128 Slaney bands) -> dB (top 80) -> positive first difference
 *     (lag 1, max filter over max_size bands) -> mean over bands -> lag + n_fft/(2 hop) leading
 *     zeros, trimmed to T frames;
 *   - onset detection: envelope normalised to [0, 1], librosa.util.peak_pick with the
 *     onset_detect defaults (30 ms / 100 ms windows, delta 0.07, 30 ms wait);
 *   - HPSS: median filters of the magnitude spectrogram, 31 frames along time and 31 bins along
 *     frequency (scipy 'reflect' edges), soft masks with power 2 and margin 1.
 * The median filters are sliding sorted windows updated branch-free for many windows at once
 * (SIMD lanes): the time filter keeps one window per frequency bin and advances all of them
 * frame by frame; the frequency filter slides along the bins of 16 frames side by side. So
 * HPSS, its energies, the percussive spectral flux and the masks come out of one sweep over
 * the spectrogram with no extra [T, F] arrays; sweeps over disjoint frame ranges run in
 * parallel (OpenMP).
 * sao_features_compute shares one magnitude STFT between centroid, flatness, onsets and HPSS. */
#include "audio_internal.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TINY_F32 1.17549435e-38f

/* ---- sorted sliding windows ------------------------------------------------------------------------ */

static void insertion_sort(float *w, int n) {
    for (int i = 1; i < n; i++) {
        float v = w[i];
        int j = i;
        while (j > 0 && w[j - 1] > v) { w[j] = w[j - 1]; j--; }
        w[j] = v;
    }
}

/* Lane-parallel sliding windows: L independent sorted windows of w values stored rank-major,
 * win[r*L + l] = the r-th smallest value of lane l (L a multiple of LANE_BLOCK). One call
 * replaces out[l] (present in lane l) by in[l] in every lane, branch-free, so the fixed-width
 * inner loops vectorise: the new value at rank r is the old one at r, r+1 or r-1, or in[l],
 * chosen from i = rank of out and j = number of values below in. */
#define LANE_BLOCK 16
static void lanes_replace(float *restrict win, int w, int L, const float *restrict out,
                          const float *restrict in) {
    enum { V = LANE_BLOCK };
    for (int l0 = 0; l0 < L; l0 += V) {
        const float *o = out + l0, *v = in + l0;
        int ci[V], cj[V];
        float a[V], c[V];
        for (int l = 0; l < V; l++) { ci[l] = 0; cj[l] = 0; }
        for (int r = 0; r < w; r++) {
            const float *row = win + (size_t)r * L + l0;
#pragma omp simd
            for (int l = 0; l < V; l++) {
                ci[l] += row[l] < o[l];
                cj[l] += row[l] < v[l];
            }
        }
        for (int l = 0; l < V; l++) { a[l] = win[l0 + l]; c[l] = 0; }
        for (int r = 0; r < w; r++) {
            float *row = win + (size_t)r * L + l0;
            const float *next = row + (r + 1 < w ? L : 0);
#pragma omp simd
            for (int l = 0; l < V; l++) {
                float b = next[l], i = (float)ci[l], j = (float)cj[l], rr = (float)r;
                float up = rr < i ? a[l] : (rr < j - 1 ? b : (rr == j - 1 ? v[l] : a[l]));   /* in > out */
                float dn = rr < j ? a[l] : (rr == j ? v[l] : (rr <= i ? c[l] : a[l]));      /* in <= out */
                row[l] = j > i ? up : dn;
                c[l] = a[l];
                a[l] = b;
            }
        }
    }
}

/* scipy.ndimage 'reflect' (half-sample symmetric): ... c b a | a b c ... | c b a ... */
static inline int64_t reflect_index(int64_t i, int64_t n) {
    if (i >= 0 && i < n) return i;
    int64_t p = 2 * n, j = i % p;
    if (j < 0) j += p;
    return j < n ? j : p - 1 - j;
}

/* ---- statistics helpers -------------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* numpy.percentile (linear interpolation) of v[0..n), q in [0, 100]; sorts v. */
static double percentile(double *v, int64_t n, double q) {
    if (n <= 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double pos = q / 100.0 * (double)(n - 1);
    int64_t i = (int64_t)floor(pos);
    if (i >= n - 1) return v[n - 1];
    return v[i] + (v[i + 1] - v[i]) * (pos - (double)i);
}

/* ---- onset strength ---------------------------------------------------------------------------------- */

int sao_onset_cfg_default(sao_ctx *ctx, sao_onset_cfg *cfg) {
    SAO_UNUSED(ctx);
    memset(cfg, 0, sizeof *cfg);
    cfg->n_fft = 2048;
    cfg->hop = 512;
    cfg->n_mels = 128;
    cfg->fmin = 0;
    cfg->fmax = 0;
    cfg->lag = 1;
    cfg->max_size = 1;
    cfg->center = 1;
    cfg->detrend = 0;
    cfg->top_db = 80;
    cfg->aggregate_median = 0;
    return 0;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* X: frame-major [T, F] magnitudes (is_mag = 1) or powers (0). */
static int onset_from_spec(sao_ctx *ctx, const float *X, int is_mag, int64_t T, int sr, const sao_onset_cfg *c,
                           float *env) {
    const char *op = "onset_strength";
    int F = c->n_fft / 2 + 1, M = c->n_mels;
    if (c->lag < 1 || c->max_size < 1) return sao_err(ctx, op, "lag %d and max_size %d must be >= 1", c->lag, c->max_size);
    int *st = malloc((size_t)M * sizeof *st), *ln = malloc((size_t)M * sizeof *ln), *of = malloc((size_t)M * sizeof *of);
    float *w = malloc((size_t)F * (size_t)M * sizeof *w);
    float *mel = malloc((size_t)(T > 0 ? T : 1) * (size_t)M * sizeof *mel);
    float *tmp = malloc((size_t)M * 2 * sizeof *tmp);
    int rc = 0;
    if (!st || !ln || !of || !w || !mel || !tmp) { rc = sao_err(ctx, op, "out of memory"); goto done; }
    if (sao_mel_sparse(ctx, sr, c->n_fft, M, c->fmin, c->fmax, 0, 1, st, ln, of, w)) { rc = -1; goto done; }
    /* power mel, then dB with the global top_db floor */
    float mx = -INFINITY;
    for (int64_t t = 0; t < T; t++) {
        const float *x = X + t * F;
        for (int m = 0; m < M; m++) {
            float acc = 0;
            const float *wm = w + of[m];
            const float *xm = x + st[m];
            if (is_mag) for (int k = 0; k < ln[m]; k++) acc += wm[k] * (xm[k] * xm[k]);
            else for (int k = 0; k < ln[m]; k++) acc += wm[k] * xm[k];
            float db = 10.0f * log10f(acc > 1e-10f ? acc : 1e-10f);
            mel[t * M + m] = db;
            if (db > mx) mx = db;
        }
    }
    if (c->top_db > 0) {
        float fl = mx - (float)c->top_db;
        for (int64_t i = 0; i < T * M; i++) if (mel[i] < fl) mel[i] = fl;
    }
    int64_t pad = c->lag + (c->center ? c->n_fft / (2 * c->hop) : 0);
    int64_t L = T - c->lag + pad;                          /* length before trimming */
    int64_t outT = c->center ? (L < T ? L : T) : L;
    for (int64_t t = 0; t < outT; t++) {
        int64_t s = t - pad;                               /* index into the difference series */
        if (s < 0) { env[t] = 0; continue; }
        const float *cur = mel + (s + c->lag) * M, *prev = mel + s * M;
        float *d = tmp;
        for (int m = 0; m < M; m++) {
            float ref = prev[m];
            if (c->max_size > 1) {                           /* maximum_filter1d, 'reflect' */
                int h = c->max_size / 2;
                for (int j = -h; j < c->max_size - h; j++) {
                    float v = prev[reflect_index(m + j, M)];
                    if (v > ref) ref = v;
                }
            }
            float v = cur[m] - ref;
            d[m] = v > 0 ? v : 0;
        }
        if (c->aggregate_median) {
            qsort(d, (size_t)M, sizeof *d, cmp_float);
            env[t] = M % 2 ? d[M / 2] : 0.5f * (d[M / 2 - 1] + d[M / 2]);
        } else {
            float acc = 0;
            for (int m = 0; m < M; m++) acc += d[m];
            env[t] = acc / (float)M;
        }
    }
    for (int64_t t = outT; t < T; t++) env[t] = 0;
    if (c->detrend) {                                        /* y[n] = x[n] - x[n-1] + 0.99 y[n-1] */
        float px = 0, py = 0;
        for (int64_t t = 0; t < outT; t++) {
            float yv = env[t] - px + 0.99f * py;
            px = env[t];
            env[t] = yv;
            py = yv;
        }
    }
done:
    free(st); free(ln); free(of); free(w); free(mel); free(tmp);
    return rc;
}

int sao_onset_strength_raw(sao_ctx *ctx, const float *P, int64_t frames, int sr, const sao_onset_cfg *cfg,
                           float *env) {
    sao_onset_cfg c;
    if (cfg) c = *cfg;
    else sao_onset_cfg_default(ctx, &c);
    if (sr < 1) return sao_err(ctx, "onset_strength", "sample rate %d must be positive", sr);
    return onset_from_spec(ctx, P, 0, frames, sr, &c, env);
}

/* Onset envelope length for T spectrogram frames. */
static int64_t onset_len(const sao_onset_cfg *c, int64_t T) {
    int64_t pad = c->lag + (c->center ? c->n_fft / (2 * c->hop) : 0), L = T - c->lag + pad;
    return c->center ? (L < T ? L : T) : L;
}

sao_tensor *sao_onset_strength(sao_ctx *ctx, const sao_tensor *audio, int sr, const sao_onset_cfg *cfg) {
    const char *op = "onset_strength";
    sao_onset_cfg c;
    if (cfg) c = *cfg;
    else sao_onset_cfg_default(ctx, &c);
    if (sr < 1) return sao_err_null(ctx, op, "sample rate %d must be positive", sr);
    sao_audio_in_t in;
    if (sao_audio_in(ctx, op, audio, &in)) return NULL;
    float *x = sao_audio_mono_buffer(&in);
    int64_t n = in.samples;
    sao_audio_in_free(&in);
    if (!x) return sao_err_null(ctx, op, "out of memory");
    sao_stft_cfg sc;
    sao_stft_cfg_default(ctx, &sc);
    sc.n_fft = c.n_fft; sc.hop = c.hop; sc.win_length = c.n_fft; sc.center = c.center;
    sao_stft_plan *p = sao_stft_plan_new(ctx, &sc);
    sao_tensor *out = NULL;
    int64_t T = p ? sao_stft_plan_frames(p, n) : 0;
    if (p && T < 1) sao_err(ctx, op, "signal of %lld samples is too short", (long long)n);
    if (p && T >= 1) {
        int F = sao_stft_plan_bins(p);
        float *P = sao_xmalloc(ctx, op, (size_t)T * (size_t)F * sizeof *P);
        int64_t shape[1] = {onset_len(&c, T)};
        if (shape[0] < 0) shape[0] = 0;
        out = P ? sao_tensor_empty(ctx, SAO_F32, 1, shape) : NULL;
        if (out && (sao_stft_plan_power(ctx, p, x, n, 2.0, P) ||
                    onset_from_spec(ctx, P, 0, T, sr, &c, sao_tensor_data(out)))) {
            sao_tensor_free(out);
            out = NULL;
        }
        free(P);
    }
    sao_stft_plan_free(p);
    free(x);
    return out;
}

/* ---- peak picking -------------------------------------------------------------------------------------- */

/* librosa.util.peak_pick semantics; writes indices to idx, returns the count. */
static int64_t peak_pick(const float *x, int64_t n, int pre_max, int post_max, int pre_avg, int post_avg,
                         double delta, int wait, int64_t *idx) {
    int64_t k = 0, i = 0;
    if (n <= 0) return 0;
    /* frame 0 */
    {
        float mx = -INFINITY;
        double s = 0;
        int64_t e1 = post_max < n ? post_max : n, e2 = post_avg < n ? post_avg : n;
        for (int64_t j = 0; j < e1; j++) if (x[j] > mx) mx = x[j];
        for (int64_t j = 0; j < e2; j++) s += x[j];
        int is = e1 > 0 && x[0] >= mx && e2 > 0 && x[0] >= s / (double)e2 + delta;
        if (is) { idx[k++] = 0; i = wait + 1; }
        else i = 1;
    }
    while (i < n) {
        int64_t a = i - pre_max > 0 ? i - pre_max : 0, b = i + post_max < n ? i + post_max : n;
        float mx = -INFINITY;
        for (int64_t j = a; j < b; j++) if (x[j] > mx) mx = x[j];
        if (x[i] != mx) { i++; continue; }
        a = i - pre_avg > 0 ? i - pre_avg : 0;
        b = i + post_avg < n ? i + post_avg : n;
        double s = 0;
        for (int64_t j = a; j < b; j++) s += x[j];
        if (!(x[i] >= s / (double)(b - a) + delta)) { i++; continue; }
        idx[k++] = i;
        i += wait + 1;
    }
    return k;
}

static sao_tensor *indices_tensor(sao_ctx *ctx, const int64_t *idx, int64_t k) {
    int64_t shape[1] = {k};
    sao_tensor *t = sao_tensor_empty(ctx, SAO_I64, 1, shape);
    if (t && k) memcpy(sao_tensor_data(t), idx, (size_t)k * sizeof *idx);
    return t;
}

static const float *env_in(sao_ctx *ctx, const char *op, const sao_tensor *env, sao_tensor **hold, int64_t *n) {
    *hold = NULL;
    if (!env || env->ndim != 1) return sao_err_null(ctx, op, "envelope must be a 1-D tensor [T]");
    if (env->storage->device != SAO_CPU) return sao_err_null(ctx, op, "envelope is on a GPU");
    *hold = env->dtype == SAO_F32 ? sao_tensor_contiguous(ctx, env) : sao_tensor_to_dtype(ctx, env, SAO_F32);
    if (!*hold) return NULL;
    *n = env->shape[0];
    return sao_tensor_data(*hold);
}

sao_tensor *sao_peak_pick(sao_ctx *ctx, const sao_tensor *env, int pre_max, int post_max, int pre_avg,
                          int post_avg, double delta, int wait) {
    const char *op = "peak_pick";
    if (pre_max < 0 || post_max < 1 || pre_avg < 0 || post_avg < 1 || wait < 0)
        return sao_err_null(ctx, op, "need pre_max, pre_avg, wait >= 0 and post_max, post_avg >= 1");
    sao_tensor *hold;
    int64_t n;
    const float *x = env_in(ctx, op, env, &hold, &n);
    if (!x) return NULL;
    int64_t *idx = sao_xmalloc(ctx, op, (size_t)(n ? n : 1) * sizeof *idx);
    sao_tensor *t = NULL;
    if (idx) t = indices_tensor(ctx, idx, peak_pick(x, n, pre_max, post_max, pre_avg, post_avg, delta, wait, idx));
    free(idx);
    sao_tensor_free(hold);
    return t;
}

/* librosa.onset.onset_detect on an envelope; returns the count, indices in idx (n slots). */
static int64_t onset_detect_raw(const float *env, int64_t n, int sr, int hop, int64_t *idx, float *work) {
    if (n <= 0) return 0;
    float mn = INFINITY, mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(env[i])) return 0;
        if (env[i] < mn) mn = env[i];
    }
    for (int64_t i = 0; i < n; i++) {
        work[i] = env[i] - mn;
        if (work[i] > mx) mx = work[i];
    }
    if (!(mx > 0)) return 0;                                 /* nothing above the minimum */
    float den = mx + TINY_F32;
    for (int64_t i = 0; i < n; i++) work[i] /= den;
    int pre_max = (int)ceil(floor(0.03 * sr / hop)), post_max = (int)ceil(floor(0.00 * sr / hop) + 1);
    int pre_avg = (int)ceil(floor(0.10 * sr / hop)), post_avg = (int)ceil(floor(0.10 * sr / hop) + 1);
    int wait = (int)ceil(floor(0.03 * sr / hop));
    return peak_pick(work, n, pre_max, post_max, pre_avg, post_avg, 0.07, wait, idx);
}

sao_tensor *sao_onset_detect(sao_ctx *ctx, const sao_tensor *env, int sr, int hop) {
    const char *op = "onset_detect";
    if (sr < 1 || hop < 1) return sao_err_null(ctx, op, "sample rate %d and hop %d must be positive", sr, hop);
    sao_tensor *hold;
    int64_t n;
    const float *x = env_in(ctx, op, env, &hold, &n);
    if (!x) return NULL;
    int64_t *idx = sao_xmalloc(ctx, op, (size_t)(n ? n : 1) * sizeof *idx);
    float *work = sao_xmalloc(ctx, op, (size_t)(n ? n : 1) * sizeof *work);
    sao_tensor *t = NULL;
    if (idx && work) t = indices_tensor(ctx, idx, onset_detect_raw(x, n, sr, hop, idx, work));
    free(idx);
    free(work);
    sao_tensor_free(hold);
    return t;
}

/* Natural log of a positive normal float, branch-free and vectorisable: exponent/mantissa
 * split, mantissa folded into [sqrt(1/2), sqrt(2)), atanh series to t^9 (relative error of
 * the result < 2e-7). */
static inline float log_pos(float u) {
    uint32_t bits;
    memcpy(&bits, &u, sizeof bits);
    int e = (int)((bits >> 23) & 0xff) - 127;
    bits = (bits & 0x007fffffu) | 0x3f800000u;
    float m;
    memcpy(&m, &bits, sizeof m);
    int big = m > 1.41421356f;
    m = big ? 0.5f * m : m;
    e += big;
    float t = (m - 1.0f) / (m + 1.0f), t2 = t * t;
    float p = t * (2.0f + t2 * (0.666666667f + t2 * (0.4f + t2 * (0.285714286f + t2 * 0.222222222f))));
    return p + (float)e * 0.693147181f;
}

/* log(1 + x) for x >= 0 (for x < 1e-7 the absolute error is below 6e-8). */
static inline float log1p_pos(float x) { return log_pos(1.0f + x); }

/* ---- mono magnitude spectrogram helper ------------------------------------------------------------------ */

typedef struct {
    float *x;             /* mono signal */
    int64_t n;
    sao_stft_plan *plan;
    int64_t T;
    int F;
    int nyquist;          /* n_fft even: the last bin is the Nyquist bin */
    float *S;             /* [T, F] magnitudes */
} mono_spec;

static void mono_spec_free(mono_spec *m) {
    free(m->x);
    free(m->S);
    sao_stft_plan_free(m->plan);
    memset(m, 0, sizeof *m);
}

static int mono_spec_make(sao_ctx *ctx, const char *op, const sao_tensor *audio, const sao_stft_cfg *cfg,
                          int want_S, mono_spec *m) {
    memset(m, 0, sizeof *m);
    sao_audio_in_t in;
    if (sao_audio_in(ctx, op, audio, &in)) return -1;
    m->x = sao_audio_mono_buffer(&in);
    m->n = in.samples;
    sao_audio_in_free(&in);
    if (!m->x) return sao_err(ctx, op, "out of memory");
    m->plan = sao_stft_plan_new(ctx, cfg);
    if (!m->plan) { mono_spec_free(m); return -1; }
    m->T = sao_stft_plan_frames(m->plan, m->n);
    m->F = sao_stft_plan_bins(m->plan);
    m->nyquist = (cfg ? cfg->n_fft : 2048) % 2 == 0;
    if (m->T < 1) {
        int64_t n = m->n;
        mono_spec_free(m);
        return sao_err(ctx, op, "signal of %lld samples is too short for one frame", (long long)n);
    }
    if (!want_S) return 0;
    m->S = sao_xmalloc(ctx, op, (size_t)m->T * (size_t)m->F * sizeof *m->S);
    if (!m->S || sao_stft_plan_power(ctx, m->plan, m->x, m->n, 1.0, m->S)) { mono_spec_free(m); return -1; }
    return 0;
}

static double frame_centroid(const float *S, int F, double df, double *energy) {
    double num = 0, den = 0;
    for (int k = 0; k < F; k++) { num += (double)k * S[k]; den += S[k]; }
    *energy = den;
    return den > 0 ? df * num / den : 0;
}

static double frame_flatness(const float *S, int F, double amin, double power) {
    double sl = 0, sa = 0;
    float am = (float)amin;
    if (power == 2.0 && amin >= 1e-37) {
#pragma omp simd reduction(+ : sl, sa)
        for (int k = 0; k < F; k++) {
            float p = S[k] * S[k];
            p = p < am ? am : p;
            sl += (double)log_pos(p);
            sa += (double)p;
        }
    } else {
        for (int k = 0; k < F; k++) {
            float p = powf(S[k], (float)power);
            if (p < am) p = am;
            sl += logf(p);
            sa += p;
        }
    }
    return exp(sl / F) / (sa / F);
}

sao_tensor *sao_spectral_centroid(sao_ctx *ctx, const sao_tensor *audio, int sr, const sao_stft_cfg *cfg) {
    if (sr < 1) return sao_err_null(ctx, "spectral_centroid", "sample rate %d must be positive", sr);
    mono_spec m;
    if (mono_spec_make(ctx, "spectral_centroid", audio, cfg, 1, &m)) return NULL;
    int64_t shape[1] = {m.T};
    sao_tensor *t = sao_tensor_empty(ctx, SAO_F32, 1, shape);
    if (t) {
        float *y = sao_tensor_data(t);
        double df = (double)sr / (2.0 * (m.F - 1)), e;
        for (int64_t i = 0; i < m.T; i++) y[i] = (float)frame_centroid(m.S + i * m.F, m.F, df, &e);
    }
    mono_spec_free(&m);
    return t;
}

sao_tensor *sao_spectral_flatness(sao_ctx *ctx, const sao_tensor *audio, const sao_stft_cfg *cfg,
                                  double amin, double power) {
    if (!(amin > 0) || !(power > 0)) return sao_err_null(ctx, "spectral_flatness", "amin and power must be > 0");
    mono_spec m;
    if (mono_spec_make(ctx, "spectral_flatness", audio, cfg, 1, &m)) return NULL;
    int64_t shape[1] = {m.T};
    sao_tensor *t = sao_tensor_empty(ctx, SAO_F32, 1, shape);
    if (t) {
        float *y = sao_tensor_data(t);
        for (int64_t i = 0; i < m.T; i++) y[i] = (float)frame_flatness(m.S + i * m.F, m.F, amin, power);
    }
    mono_spec_free(&m);
    return t;
}

/* librosa.feature.rms frames of x (prefix sums of squares in double: O(n)). */
static int64_t rms_raw(const float *x, int64_t n, int fl, int hop, int center, float *out) {
    int64_t pad = center ? fl / 2 : 0, padded = n + 2 * pad;
    if (padded < fl) return 0;
    int64_t T = 1 + (padded - fl) / hop;
    if (!out) return T;
    double *cs = malloc((size_t)(n + 1) * sizeof *cs);
    if (!cs) return -1;
    cs[0] = 0;
    for (int64_t i = 0; i < n; i++) cs[i + 1] = cs[i] + (double)x[i] * x[i];
    for (int64_t t = 0; t < T; t++) {
        int64_t a = t * hop - pad, b = a + fl;
        if (a < 0) a = 0;
        if (b > n) b = n;
        double s = b > a ? cs[b] - cs[a] : 0;
        out[t] = (float)sqrt((s > 0 ? s : 0) / fl);
    }
    free(cs);
    return T;
}

sao_tensor *sao_rms_frames(sao_ctx *ctx, const sao_tensor *audio, int frame_length, int hop, int center) {
    const char *op = "rms";
    if (frame_length < 1 || hop < 1) return sao_err_null(ctx, op, "frame length %d and hop %d must be >= 1", frame_length, hop);
    sao_audio_in_t in;
    if (sao_audio_in(ctx, op, audio, &in)) return NULL;
    float *x = sao_audio_mono_buffer(&in);
    int64_t n = in.samples;
    sao_audio_in_free(&in);
    if (!x) return sao_err_null(ctx, op, "out of memory");
    int64_t T = rms_raw(x, n, frame_length, hop, center, NULL);
    sao_tensor *t = NULL;
    if (T < 1) sao_err(ctx, op, "signal of %lld samples is shorter than one frame", (long long)n);
    else {
        int64_t shape[1] = {T};
        t = sao_tensor_empty(ctx, SAO_F32, 1, shape);
        if (t && rms_raw(x, n, frame_length, hop, center, sao_tensor_data(t)) < 0) {
            sao_tensor_free(t);
            t = sao_err_null(ctx, op, "out of memory");
        }
    }
    free(x);
    return t;
}

/* ---- HPSS sweep ------------------------------------------------------------------------------------------ */

typedef struct {
    const float *S;       /* [T, F] magnitudes */
    int64_t T;
    int F, kernel;
    int nyquist;          /* 1 when n_fft is even: bin F-1 is the Nyquist bin */
    float power, margin, gamma;
    /* outputs (optional) */
    float *flux;          /* [T]: o[t] for t >= 1, o[0] = 0 */
    float *mask_h, *mask_p; /* [T, F] */
    double eh, ep;        /* Parseval-weighted Σ |S M|^2 */
} hpss_job;

static inline float softmask(float x, float ref, float power) {
    float z = x > ref ? x : ref;
    if (z < TINY_F32) return 0.0f;
    float a = x / z, b = ref / z;
    if (power == 2.0f) { a *= a; b *= b; }
    else if (power != 1.0f) { a = powf(a, power); b = powf(b, power); }
    return a / (a + b);
}

/* Frames [t0, t1) of the sweep; returns 0 or -1 (out of memory). Accumulates into eh/ep. */
#define FREQ_LANES 16   /* frames whose frequency medians run side by side */

/* Frequency-direction medians of nf (<= FREQ_LANES) consecutive frames S[0..nf) (rows of F
 * bins) into out[l*F + k], scipy 'reflect' edges; lanes beyond nf repeat the last frame. */
static void freq_medians(const float *S, int nf, int F, int w, float *out, float *xt, float *fw, float *o,
                         float *in) {
    const int L = FREQ_LANES, h = w / 2;
    for (int k = 0; k < F; k++)
        for (int l = 0; l < L; l++) xt[(size_t)k * L + l] = S[(size_t)(l < nf ? l : nf - 1) * F + k];
    float tmp[1024];
    for (int l = 0; l < L; l++) {
        for (int j = 0; j < w; j++) tmp[j] = xt[(size_t)reflect_index(j - h, F) * L + l];
        insertion_sort(tmp, w);
        for (int r = 0; r < w; r++) fw[(size_t)r * L + l] = tmp[r];
    }
    for (int k = 0; k < F; k++) {
        for (int l = 0; l < nf; l++) out[(size_t)l * F + k] = fw[(size_t)h * L + l];
        if (k + 1 == F) break;
        const float *ro = xt + (size_t)reflect_index(k - h, F) * L, *ri = xt + (size_t)reflect_index(k + 1 + h, F) * L;
        for (int l = 0; l < L; l++) { o[l] = ro[l]; in[l] = ri[l]; }
        lanes_replace(fw, w, L, o, in);
    }
}

/* Frames [t0, t1) of the sweep; returns 0 or -1 (out of memory). Accumulates into eh/ep. */
static int hpss_block(hpss_job *job, int64_t t0, int64_t t1, double *eh, double *ep) {
    const int F = job->F, w = job->kernel, h = w / 2, L = FREQ_LANES;
    const int64_t T = job->T;
    const float *S = job->S;
    int64_t ts = t0 > 0 ? t0 - 1 : 0;                     /* one frame early for the flux */
    const int Fp = (F + LANE_BLOCK - 1) / LANE_BLOCK * LANE_BLOCK;    /* lanes padded */
    float *tw = calloc((size_t)Fp * (size_t)w, sizeof *tw);           /* time windows, rank-major */
    float *to = calloc((size_t)Fp * 2, sizeof *to), *ti = to ? to + Fp : NULL;   /* out/in rows */
    float *fw = malloc((size_t)L * (size_t)w * sizeof *fw);          /* frequency windows */
    float *xt = malloc((size_t)F * L * sizeof *xt);
    float *pmb = malloc((size_t)F * L * sizeof *pmb);                /* P~ of a block of frames */
    float *hm = malloc((size_t)F * 3 * sizeof *hm), *mhr = hm ? hm + F : NULL, *mpr = hm ? hm + 2 * F : NULL;
    float *perc = malloc((size_t)F * sizeof *perc), *prev = malloc((size_t)F * sizeof *prev);
    /* perc/prev hold log(1 + gamma |P|) of this and the previous frame */
    float *scratch = malloc((size_t)L * 2 * sizeof *scratch);
    if (!tw || !to || !fw || !xt || !pmb || !hm || !perc || !prev || !scratch || w > 1023) {
        free(tw); free(to); free(fw); free(xt); free(pmb); free(hm); free(perc); free(prev); free(scratch);
        return -1;
    }
    /* per-bin time windows centred on frame ts */
    float tmp[1024];
    for (int k = 0; k < F; k++) {
        for (int j = 0; j < w; j++) tmp[j] = S[reflect_index(ts + j - h, T) * F + k];
        insertion_sort(tmp, w);
        for (int r = 0; r < w; r++) tw[(size_t)r * Fp + k] = tmp[r];
    }
    double sh = 0, sp = 0;
    int64_t blk0 = ts, blkn = 0;
    for (int64_t t = ts; t < t1; t++) {
        if (t >= blk0 + blkn) {                         /* next block of frequency medians */
            blk0 = t;
            blkn = t1 - t < L ? t1 - t : L;
            freq_medians(S + t * F, (int)blkn, F, w, pmb, xt, fw, scratch, scratch + L);
        }
        if (t > ts) {
            memcpy(to, S + reflect_index(t - 1 - h, T) * F, (size_t)F * sizeof *to);
            memcpy(ti, S + reflect_index(t + h, T) * F, (size_t)F * sizeof *ti);
            lanes_replace(tw, w, Fp, to, ti);
        }
        memcpy(hm, tw + (size_t)h * Fp, (size_t)F * sizeof *hm);
        const float *st = S + t * F, *pm = pmb + (t - blk0) * F;
        int count = t >= t0;
        const float margin = job->margin, power = job->power;
        double fh = 0, fp = 0;
#pragma omp simd reduction(+ : fh, fp)
        for (int k = 0; k < F; k++) {
            float mh = softmask(hm[k], pm[k] * margin, power);
            float mp = softmask(pm[k], hm[k] * margin, power);
            float s = st[k], ph = s * mh, pp = s * mp;
            perc[k] = pp;
            mhr[k] = mh;
            mpr[k] = mp;
            fh += (double)(ph * ph);
            fp += (double)(pp * pp);
        }
        if (count) {
            /* Parseval weights: 2 for every bin but DC and Nyquist, which count once */
            int kn = job->nyquist ? F - 1 : -1;
            float h0 = st[0] * mhr[0], p0 = perc[0];
            double dh = (double)h0 * h0, dp = (double)p0 * p0;
            if (kn > 0) {
                float hn = st[kn] * mhr[kn], pn = perc[kn];
                dh += (double)hn * hn;
                dp += (double)pn * pn;
            }
            sh += 2.0 * fh - dh;
            sp += 2.0 * fp - dp;
            if (job->mask_h) memcpy(job->mask_h + t * F, mhr, (size_t)F * sizeof *mhr);
            if (job->mask_p) memcpy(job->mask_p + t * F, mpr, (size_t)F * sizeof *mpr);
        }
        if (job->flux) {
            const float g = job->gamma;
#pragma omp simd
            for (int k = 0; k < F; k++) perc[k] = log1p_pos(g * perc[k]);
            if (count) {
                double o = 0;
                if (t > 0)
                    for (int k = 0; k < F; k++) {
                        float d = perc[k] - prev[k];
                        o += d > 0 ? d : 0;
                    }
                job->flux[t] = (float)o;
            }
        }
        float *sw = prev; prev = perc; perc = sw;
    }
    *eh = sh;
    *ep = sp;
    free(tw); free(to); free(fw); free(xt); free(pmb); free(hm); free(perc); free(prev); free(scratch);
    return 0;
}

static int hpss_run(sao_ctx *ctx, hpss_job *job) {
    int nth = ctx ? sao_ctx_threads(ctx) : 1;
    int64_t nblk = job->T < 256 ? 1 : (nth < 1 ? 1 : nth);
    int fail = 0;
    double eh = 0, ep = 0;
    sao_threads_apply(ctx);
#pragma omp parallel for schedule(static) reduction(+ : eh, ep) if (nblk > 1)
    for (int64_t b = 0; b < nblk; b++) {
        int64_t t0 = job->T * b / nblk, t1 = job->T * (b + 1) / nblk;
        double a = 0, c = 0;
        if (hpss_block(job, t0, t1, &a, &c)) {
#pragma omp atomic write
            fail = 1;
        }
        eh += a;
        ep += c;
    }
    job->eh = eh;
    job->ep = ep;
    return fail ? sao_err(ctx, "hpss", "out of memory") : 0;
}

static int check_kernel(sao_ctx *ctx, const char *op, int kernel) {
    if (kernel < 1 || kernel % 2 == 0 || kernel > 1023)
        return sao_err(ctx, op, "median kernel %d must be odd, 1..1023", kernel);
    return 0;
}

/* ISTFT of D * mask for the whole spectrogram. */
static int masked_istft(sao_ctx *ctx, const sao_stft_plan *p, const float *X, const float *mask, int64_t T, int F,
                        float *y, int64_t n) {
    float *tmp = sao_xmalloc(ctx, "hpss", (size_t)T * (size_t)F * 2 * sizeof *tmp);
    if (!tmp) return -1;
    for (int64_t i = 0; i < T * F; i++) {
        tmp[2 * i] = X[2 * i] * mask[i];
        tmp[2 * i + 1] = X[2 * i + 1] * mask[i];
    }
    int rc = sao_stft_plan_inverse(ctx, p, tmp, T, y, n);
    free(tmp);
    return rc;
}

/* Complex STFT of m->x plus its magnitudes into m->S. */
static int complex_and_mag(sao_ctx *ctx, const char *op, mono_spec *m, float **Xout) {
    float *X = sao_xmalloc(ctx, op, (size_t)m->T * (size_t)m->F * 2 * sizeof *X);
    if (!X) return -1;
    if (sao_stft_plan_complex(ctx, m->plan, m->x, m->n, X)) { free(X); return -1; }
    if (!m->S) m->S = sao_xmalloc(ctx, op, (size_t)m->T * (size_t)m->F * sizeof *m->S);
    if (!m->S) { free(X); return -1; }
    for (int64_t i = 0; i < m->T * m->F; i++) m->S[i] = sqrtf(X[2 * i] * X[2 * i] + X[2 * i + 1] * X[2 * i + 1]);
    *Xout = X;
    return 0;
}

int sao_hpss(sao_ctx *ctx, const sao_tensor *audio, const sao_stft_cfg *cfg, int kernel, double power,
             double margin, sao_tensor **harmonic, sao_tensor **percussive) {
    const char *op = "hpss";
    if (harmonic) *harmonic = NULL;
    if (percussive) *percussive = NULL;
    if (check_kernel(ctx, op, kernel)) return -1;
    if (!(power > 0) || !(margin >= 1)) return sao_err(ctx, op, "power must be > 0 and margin >= 1");
    mono_spec m;
    if (mono_spec_make(ctx, op, audio, cfg, 0, &m)) return -1;
    float *X = NULL, *mh = NULL, *mp = NULL;
    sao_tensor *ht = NULL, *pt = NULL;
    int rc = complex_and_mag(ctx, op, &m, &X);
    if (rc == 0) {
        mh = sao_xmalloc(ctx, op, (size_t)m.T * (size_t)m.F * sizeof *mh);
        mp = sao_xmalloc(ctx, op, (size_t)m.T * (size_t)m.F * sizeof *mp);
        if (!mh || !mp) rc = -1;
    }
    if (rc == 0) {
        hpss_job job = {m.S, m.T, m.F, kernel, m.nyquist, (float)power, (float)margin, 1000.0f, NULL, mh, mp, 0, 0};
        rc = hpss_run(ctx, &job);
    }
    float *y;
    if (rc == 0 && harmonic) {
        ht = sao_audio_alloc(ctx, 1, m.n, &y);
        rc = ht ? masked_istft(ctx, m.plan, X, mh, m.T, m.F, y, m.n) : -1;
    }
    if (rc == 0 && percussive) {
        pt = sao_audio_alloc(ctx, 1, m.n, &y);
        rc = pt ? masked_istft(ctx, m.plan, X, mp, m.T, m.F, y, m.n) : -1;
    }
    free(X); free(mh); free(mp);
    mono_spec_free(&m);
    if (rc) { sao_tensor_free(ht); sao_tensor_free(pt); return -1; }
    if (harmonic) *harmonic = ht;
    if (percussive) *percussive = pt;
    return 0;
}

/* ---- the feature set ------------------------------------------------------------------------------------ */

int sao_features_cfg_default(sao_ctx *ctx, sao_features_cfg *cfg) {
    SAO_UNUSED(ctx);
    memset(cfg, 0, sizeof *cfg);
    cfg->n_fft = 2048;
    cfg->hop = 512;
    cfg->hpss_kernel = 31;
    cfg->hpss_power = 2.0;
    cfg->hpss_margin = 1.0;
    cfg->flux_gamma = 1000.0;
    cfg->hp_time_domain = 0;
    return 0;
}

int sao_features_compute(sao_ctx *ctx, const sao_tensor *audio, int sr, const sao_features_cfg *cfg_in,
                         sao_features *out, sao_tensor **onset_env) {
    const char *op = "features";
    sao_features_cfg cfg;
    if (cfg_in) cfg = *cfg_in;
    else sao_features_cfg_default(ctx, &cfg);
    if (onset_env) *onset_env = NULL;
    if (sr < 1) return sao_err(ctx, op, "sample rate %d must be positive", sr);
    if (check_kernel(ctx, op, cfg.hpss_kernel)) return -1;
    if (cfg.n_fft < 16 || cfg.hop < 1) return sao_err(ctx, op, "n_fft %d (>= 16) and hop %d (>= 1)", cfg.n_fft, cfg.hop);
    if (!(cfg.hpss_power > 0) || !(cfg.hpss_margin >= 1) || !(cfg.flux_gamma > 0))
        return sao_err(ctx, op, "hpss power > 0, margin >= 1 and flux gamma > 0 required");
    memset(out, 0, sizeof *out);
    sao_audio_stats st;
    if (sao_audio_stats_compute(ctx, audio, &st)) return -1;
    out->channels = (int)(audio->ndim == 2 ? audio->shape[0] : 1);
    out->samples = audio->ndim == 2 ? audio->shape[1] : audio->shape[0];
    out->sample_rate = sr;
    out->duration = (double)out->samples / sr;
    out->peak = st.peak;
    out->peak_db = st.peak_db;
    out->rms = st.rms;
    out->rms_db = st.rms_db;
    out->crest_db = st.crest_db;

    sao_stft_cfg sc;
    sao_stft_cfg_default(ctx, &sc);
    sc.n_fft = cfg.n_fft;
    sc.hop = cfg.hop;
    sc.win_length = cfg.n_fft;
    mono_spec m;
    float *X = NULL;
    if (mono_spec_make(ctx, op, audio, &sc, !cfg.hp_time_domain, &m)) return -1;
    if (cfg.hp_time_domain && complex_and_mag(ctx, op, &m, &X)) { mono_spec_free(&m); return -1; }
    int64_t T = m.T;
    int F = m.F;
    out->frames = T;
    int rc = 0;
    double *vals = sao_xmalloc(ctx, op, (size_t)T * sizeof *vals);
    double *vals2 = sao_xmalloc(ctx, op, (size_t)T * sizeof *vals2);
    float *flux = sao_xcalloc(ctx, op, (size_t)T * sizeof *flux);
    float *mh = NULL, *mp = NULL;
    sao_tensor *env = NULL;
    if (!vals || !vals2 || !flux) { rc = -1; goto done; }

    /* centroid and flatness, over frames with energy */
    {
        double df = (double)sr / cfg.n_fft, sc_sum = 0, fl_sum = 0;
        int64_t k = 0;
        for (int64_t t = 0; t < T; t++) {
            double e, c = frame_centroid(m.S + t * F, F, df, &e);
            if (!(e > 0)) continue;
            vals[k] = c;
            vals2[k] = frame_flatness(m.S + t * F, F, 1e-10, 2.0);
            sc_sum += vals[k];
            fl_sum += vals2[k];
            k++;
        }
        out->centroid_hz = k ? sc_sum / k : 0;
        out->flatness = k ? fl_sum / k : 0;
        out->centroid_median_hz = percentile(vals, k, 50);
        out->flatness_median = percentile(vals2, k, 50);
    }

    /* onset envelope and onsets */
    {
        sao_onset_cfg oc;
        sao_onset_cfg_default(ctx, &oc);
        oc.n_fft = cfg.n_fft;
        oc.hop = cfg.hop;
        int64_t shape[1] = {onset_len(&oc, T)};
        env = sao_tensor_empty(ctx, SAO_F32, 1, shape);
        if (!env || onset_from_spec(ctx, m.S, 1, T, sr, &oc, sao_tensor_data(env))) { rc = -1; goto done; }
        int64_t n = shape[0];
        int64_t *idx = sao_xmalloc(ctx, op, (size_t)(n ? n : 1) * sizeof *idx);
        float *work = sao_xmalloc(ctx, op, (size_t)(n ? n : 1) * sizeof *work);
        if (!idx || !work) { free(idx); free(work); rc = -1; goto done; }
        out->onset_count = onset_detect_raw(sao_tensor_data(env), n, sr, cfg.hop, idx, work);
        out->onset_rate = out->duration > 0 ? (double)out->onset_count / out->duration : 0;
        free(idx);
        free(work);
    }

    /* HPSS, H/P energies, percussive flux */
    {
        if (cfg.hp_time_domain) {
            mh = sao_xmalloc(ctx, op, (size_t)T * (size_t)F * sizeof *mh);
            mp = sao_xmalloc(ctx, op, (size_t)T * (size_t)F * sizeof *mp);
            if (!mh || !mp) { rc = -1; goto done; }
        }
        hpss_job job = {m.S, T, F, cfg.hpss_kernel, m.nyquist, (float)cfg.hpss_power, (float)cfg.hpss_margin,
                        (float)cfg.flux_gamma, flux, mh, mp, 0, 0};
        if (hpss_run(ctx, &job)) { rc = -1; goto done; }
        out->harmonic_energy = job.eh;
        out->percussive_energy = job.ep;
        if (cfg.hp_time_domain) {
            float *y = sao_xmalloc(ctx, op, (size_t)(m.n ? m.n : 1) * sizeof *y);
            if (!y) { rc = -1; goto done; }
            double e[2] = {0, 0};
            for (int pass = 0; pass < 2 && rc == 0; pass++) {
                rc = masked_istft(ctx, m.plan, X, pass ? mp : mh, T, F, y, m.n);
                for (int64_t i = 0; rc == 0 && i < m.n; i++) e[pass] += (double)y[i] * y[i];
            }
            free(y);
            if (rc) goto done;
            out->harmonic_energy = e[0];
            out->percussive_energy = e[1];
        }
        out->hp_ratio = out->percussive_energy > 0 ? out->harmonic_energy / out->percussive_energy
                        : (out->harmonic_energy > 0 ? INFINITY : 0);
        double sum = 0;
        int64_t k = 0;
        for (int64_t t = 1; t < T; t++) { vals[k++] = flux[t]; sum += flux[t]; }
        out->transient_flux_mean = k ? sum / k : 0;
        out->transient_sharpness = out->duration > 0 ? sum / out->duration : 0;
        double med = percentile(vals, k, 50);
        out->transient_flux_p95 = percentile(vals, k, 95);
        out->transient_crest = med > 0 ? out->transient_flux_p95 / med : 0;
    }

    /* secondary transient measure: mean squared difference of frame RMS, peak-normalised mono */
    {
        float pk = 0;
        for (int64_t i = 0; i < m.n; i++) if (fabsf(m.x[i]) > pk) pk = fabsf(m.x[i]);
        if (pk > 0) {
            for (int64_t i = 0; i < m.n; i++) m.x[i] /= pk;
            int64_t R = rms_raw(m.x, m.n, cfg.n_fft, cfg.hop, 1, NULL);
            float *r = sao_xmalloc(ctx, op, (size_t)(R > 0 ? R : 1) * sizeof *r);
            if (!r) { rc = -1; goto done; }
            if (rms_raw(m.x, m.n, cfg.n_fft, cfg.hop, 1, r) < 0) { free(r); rc = sao_err(ctx, op, "out of memory"); goto done; }
            double s = 0;
            for (int64_t t = 1; t < R; t++) s += (double)(r[t] - r[t - 1]) * (r[t] - r[t - 1]);
            out->rms_diff = R > 1 ? s / (double)(R - 1) : 0;
            free(r);
        }
    }

done:
    free(vals); free(vals2); free(flux); free(mh); free(mp); free(X);
    mono_spec_free(&m);
    if (rc == 0 && onset_env) *onset_env = env;
    else sao_tensor_free(env);
    return rc;
}

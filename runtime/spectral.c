/* spectral.c — filterbanks and pitch-class front ends built on the STFT.
 *
 *   - Mel filterbank exactly as librosa.filters.mel (Slaney or HTK scale, Slaney area norm),
 *     computed in double and stored as f32; melspectrogram; power_to_db.
 *   - Chroma filterbank as librosa.filters.chroma (Gaussian pitch-class bumps, L2 columns,
 *     octave weighting, C-based roll) and chroma_stft with a given tuning.
 *   - Essentia-style key front end: spectral peaks (local maxima, plateaus, parabolic
 *     refinement on linear magnitudes), spectral whitening against an energy-weighted envelope
 *     sampled every 100 Hz, and the harmonic pitch-class profile (HPCP) with a harmonic
 *     contribution table and cosine weighting; hpcp_frames runs the whole chain per frame.
 * Parameters and the correspondence to the reference tools: docs/analysis.md. */
#include "audio_internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- mel scale ------------------------------------------------------------------------------------ */

static double hz_to_mel(double f, int htk) {
    if (htk) return 2595.0 * log10(1.0 + f / 700.0);
    const double f_sp = 200.0 / 3, min_log_hz = 1000.0, min_log_mel = min_log_hz / f_sp;
    const double logstep = log(6.4) / 27.0;
    return f >= min_log_hz ? min_log_mel + log(f / min_log_hz) / logstep : f / f_sp;
}

static double mel_to_hz(double m, int htk) {
    if (htk) return 700.0 * (pow(10.0, m / 2595.0) - 1.0);
    const double f_sp = 200.0 / 3, min_log_hz = 1000.0, min_log_mel = min_log_hz / f_sp;
    const double logstep = log(6.4) / 27.0;
    return m >= min_log_mel ? min_log_hz * exp(logstep * (m - min_log_mel)) : f_sp * m;
}

/* Dense [n_mels, F] weights in double. */
static double *mel_weights(sao_ctx *ctx, int sr, int n_fft, int n_mels, double fmin, double fmax, int htk,
                           int norm_slaney) {
    const char *op = "mel";
    if (sr < 1 || n_fft < 2 || n_mels < 1)
        return sao_err_null(ctx, op, "need sr > 0, n_fft >= 2, n_mels >= 1 (got %d, %d, %d)", sr, n_fft, n_mels);
    if (fmax <= 0) fmax = sr / 2.0;
    if (fmin < 0 || fmin >= fmax) return sao_err_null(ctx, op, "fmin %g must be in [0, fmax %g)", fmin, fmax);
    int F = n_fft / 2 + 1;
    double *w = sao_xcalloc(ctx, op, (size_t)n_mels * (size_t)F * sizeof *w);
    double *mf = sao_xmalloc(ctx, op, (size_t)(n_mels + 2) * sizeof *mf);
    if (!w || !mf) { free(w); free(mf); return NULL; }
    double lo = hz_to_mel(fmin, htk), hi = hz_to_mel(fmax, htk);
    double step = (hi - lo) / (n_mels + 1);
    for (int i = 0; i < n_mels + 2; i++) mf[i] = mel_to_hz(i == n_mels + 1 ? hi : lo + i * step, htk);
    double df = (double)sr / n_fft;
    for (int m = 0; m < n_mels; m++) {
        double d0 = mf[m + 1] - mf[m], d1 = mf[m + 2] - mf[m + 1];
        double norm = norm_slaney ? 2.0 / (mf[m + 2] - mf[m]) : 1.0;
        for (int k = 0; k < F; k++) {
            double f = k * df;
            double lower = (f - mf[m]) / d0, upper = (mf[m + 2] - f) / d1;
            double v = lower < upper ? lower : upper;
            w[(size_t)m * F + k] = v > 0 ? v * norm : 0.0;
        }
    }
    free(mf);
    return w;
}

sao_tensor *sao_mel_filterbank(sao_ctx *ctx, int sr, int n_fft, int n_mels, double fmin, double fmax,
                               int htk, int norm_slaney) {
    double *w = mel_weights(ctx, sr, n_fft, n_mels, fmin, fmax, htk, norm_slaney);
    if (!w) return NULL;
    int F = n_fft / 2 + 1;
    int64_t shape[2] = {n_mels, F};
    sao_tensor *t = sao_tensor_empty(ctx, SAO_F32, 2, shape);
    if (t) {
        float *d = sao_tensor_data(t);
        for (int64_t i = 0; i < (int64_t)n_mels * F; i++) d[i] = (float)w[i];
    }
    free(w);
    return t;
}

int sao_mel_sparse(sao_ctx *ctx, int sr, int n_fft, int n_mels, double fmin, double fmax, int htk,
                   int norm_slaney, int *start, int *len, int *off, float *wout) {
    double *w = mel_weights(ctx, sr, n_fft, n_mels, fmin, fmax, htk, norm_slaney);
    if (!w) return -1;
    int F = n_fft / 2 + 1, o = 0;
    for (int m = 0; m < n_mels; m++) {
        const double *row = w + (size_t)m * F;
        int a = 0, b = F - 1;
        while (a < F && (float)row[a] == 0.0f) a++;
        while (b >= a && (float)row[b] == 0.0f) b--;
        start[m] = a < F ? a : 0;
        len[m] = a < F ? b - a + 1 : 0;
        off[m] = o;
        for (int k = 0; k < len[m]; k++) wout[o + k] = (float)row[a + k];
        o += len[m];
    }
    free(w);
    return 0;
}

sao_tensor *sao_melspectrogram(sao_ctx *ctx, const sao_tensor *audio, int sr, const sao_stft_cfg *cfg,
                               int n_mels, double fmin, double fmax, double power) {
    sao_stft_cfg c;
    if (cfg) c = *cfg;
    else sao_stft_cfg_default(ctx, &c);
    sao_tensor *fb = sao_mel_filterbank(ctx, sr, c.n_fft, n_mels, fmin, fmax, 0, 1);
    if (!fb) return NULL;
    sao_tensor *S = sao_spectrogram(ctx, audio, &c, power);
    if (!S) { sao_tensor_free(fb); return NULL; }
    int64_t C = S->shape[0], F = S->shape[1], T = S->shape[2];
    int64_t shape[3] = {C, n_mels, T};
    sao_tensor *out = sao_tensor_new(ctx, SAO_F32, 3, shape);
    if (out) {
        const float *w = sao_tensor_data(fb), *s = sao_tensor_data(S);
        float *y = sao_tensor_data(out);
        for (int64_t ch = 0; ch < C; ch++)
            for (int64_t m = 0; m < n_mels; m++) {
                float *ym = y + (ch * n_mels + m) * T;
                for (int64_t k = 0; k < F; k++) {
                    float wk = w[m * F + k];
                    if (wk == 0.0f) continue;
                    const float *sk = s + (ch * F + k) * T;
                    for (int64_t t = 0; t < T; t++) ym[t] += wk * sk[t];
                }
            }
    }
    sao_tensor_free(S);
    sao_tensor_free(fb);
    return out;
}

int sao_power_to_db_(sao_ctx *ctx, sao_tensor *S, double ref, double amin, double top_db) {
    const char *op = "power_to_db";
    if (!S || S->dtype != SAO_F32 || !sao_tensor_is_contiguous(S) || S->storage->device != SAO_CPU)
        return sao_err(ctx, op, "needs a contiguous f32 CPU tensor");
    if (!(amin > 0)) return sao_err(ctx, op, "amin %g must be > 0", amin);
    float *x = sao_tensor_data(S);
    int64_t n = sao_tensor_numel(S);
    float r = 10.0f * log10f((float)(ref > amin ? ref : amin)), mx = -INFINITY, a = (float)amin;
    for (int64_t i = 0; i < n; i++) {
        float v = 10.0f * log10f(x[i] > a ? x[i] : a) - r;
        x[i] = v;
        if (v > mx) mx = v;
    }
    if (top_db > 0) {
        float floor_ = mx - (float)top_db;
        for (int64_t i = 0; i < n; i++)
            if (x[i] < floor_) x[i] = floor_;
    }
    return 0;
}

/* ---- chroma ---------------------------------------------------------------------------------------- */

sao_tensor *sao_chroma_filterbank(sao_ctx *ctx, int sr, int n_fft, int n_chroma, double tuning,
                                  double ctroct, double octwidth, int base_c) {
    const char *op = "chroma";
    if (sr < 1 || n_fft < 2 || n_chroma < 1)
        return sao_err_null(ctx, op, "need sr > 0, n_fft >= 2, n_chroma >= 1 (got %d, %d, %d)", sr, n_fft, n_chroma);
    int N = n_fft, F = n_fft / 2 + 1;
    double *fb = sao_xmalloc(ctx, op, (size_t)N * sizeof *fb);        /* frqbins over all N bins */
    double *bw = sao_xmalloc(ctx, op, (size_t)N * sizeof *bw);
    double *w = sao_xmalloc(ctx, op, (size_t)n_chroma * (size_t)N * sizeof *w);
    if (!fb || !bw || !w) { free(fb); free(bw); free(w); return NULL; }
    double a440 = 440.0 * pow(2.0, tuning / n_chroma);
    for (int k = 1; k < N; k++) fb[k] = n_chroma * log2(((double)k * sr / N) / (a440 / 16.0));
    fb[0] = fb[1] - 1.5 * n_chroma;
    for (int k = 0; k < N - 1; k++) bw[k] = fb[k + 1] - fb[k] > 1.0 ? fb[k + 1] - fb[k] : 1.0;
    bw[N - 1] = 1.0;
    double half = nearbyint(n_chroma / 2.0);
    for (int c = 0; c < n_chroma; c++)
        for (int k = 0; k < N; k++) {
            double d = fmod(fb[k] - c + half + 10.0 * n_chroma, (double)n_chroma);
            if (d < 0) d += n_chroma;
            d -= half;
            double z = 2.0 * d / bw[k];
            w[(size_t)c * N + k] = exp(-0.5 * z * z);
        }
    for (int k = 0; k < N; k++) {                                     /* L2 per column */
        double s = 0;
        for (int c = 0; c < n_chroma; c++) s += w[(size_t)c * N + k] * w[(size_t)c * N + k];
        s = sqrt(s);
        if (s > 2.2250738585072014e-308)
            for (int c = 0; c < n_chroma; c++) w[(size_t)c * N + k] /= s;
        if (octwidth > 0) {
            double z = (fb[k] / n_chroma - ctroct) / octwidth, g = exp(-0.5 * z * z);
            for (int c = 0; c < n_chroma; c++) w[(size_t)c * N + k] *= g;
        }
    }
    int64_t shape[2] = {n_chroma, F};
    sao_tensor *t = sao_tensor_empty(ctx, SAO_F32, 2, shape);
    if (t) {
        float *d = sao_tensor_data(t);
        int roll = base_c ? 3 * (n_chroma / 12) : 0;
        for (int c = 0; c < n_chroma; c++) {
            int src = (c + roll) % n_chroma;
            for (int k = 0; k < F; k++) d[(size_t)c * F + k] = (float)w[(size_t)src * N + k];
        }
    }
    free(fb); free(bw); free(w);
    return t;
}

sao_tensor *sao_chroma_stft(sao_ctx *ctx, const sao_tensor *audio, int sr, const sao_stft_cfg *cfg,
                            int n_chroma, double tuning) {
    sao_stft_cfg c;
    if (cfg) c = *cfg;
    else sao_stft_cfg_default(ctx, &c);
    sao_tensor *fbt = sao_chroma_filterbank(ctx, sr, c.n_fft, n_chroma, tuning, 5.0, 2.0, 1);
    if (!fbt) return NULL;
    sao_tensor *S = sao_spectrogram(ctx, audio, &c, 2.0);
    if (!S) { sao_tensor_free(fbt); return NULL; }
    int64_t C = S->shape[0], F = S->shape[1], T = S->shape[2];
    int64_t shape[3] = {C, n_chroma, T};
    sao_tensor *out = sao_tensor_new(ctx, SAO_F32, 3, shape);
    if (out) {
        const float *w = sao_tensor_data(fbt), *s = sao_tensor_data(S);
        float *y = sao_tensor_data(out);
        for (int64_t ch = 0; ch < C; ch++) {
            for (int64_t q = 0; q < n_chroma; q++) {
                float *yq = y + (ch * n_chroma + q) * T;
                for (int64_t k = 0; k < F; k++) {
                    float wk = w[q * F + k];
                    const float *sk = s + (ch * F + k) * T;
                    for (int64_t t = 0; t < T; t++) yq[t] += wk * sk[t];
                }
            }
            for (int64_t t = 0; t < T; t++) {                       /* max norm per frame */
                float mx = 0;
                for (int64_t q = 0; q < n_chroma; q++) {
                    float v = fabsf(y[(ch * n_chroma + q) * T + t]);
                    if (v > mx) mx = v;
                }
                if (mx > 1.17549435e-38f)
                    for (int64_t q = 0; q < n_chroma; q++) y[(ch * n_chroma + q) * T + t] /= mx;
            }
        }
    }
    sao_tensor_free(S);
    sao_tensor_free(fbt);
    return out;
}

/* ---- spectral peaks ------------------------------------------------------------------------------- */

typedef struct { float f, m; } peak_t;

static int by_mag_desc(const void *a, const void *b) {
    const peak_t *x = a, *y = b;
    if (x->m != y->m) return x->m < y->m ? 1 : -1;
    return x->f < y->f ? -1 : x->f > y->f;
}

static int by_freq_asc(const void *a, const void *b) {
    const peak_t *x = a, *y = b;
    return x->f < y->f ? -1 : x->f > y->f;
}

int sao_spectral_peaks(sao_ctx *ctx, const float *mag, int n_bins, double sr, double fmin, double fmax,
                       double threshold, int max_peaks, int order_by_magnitude, float *freqs, float *mags) {
    const char *op = "spectral_peaks";
    if (n_bins < 3 || !(sr > 0)) return sao_err(ctx, op, "need >= 3 bins and sr > 0 (got %d, %g)", n_bins, sr);
    if (max_peaks < 0) return sao_err(ctx, op, "max_peaks %d < 0", max_peaks);
    double df = sr / (2.0 * (n_bins - 1));
    peak_t *pk = sao_xmalloc(ctx, op, (size_t)n_bins * sizeof *pk);
    if (!pk) return -1;
    int np = 0;
    int k0 = (int)ceil(fmin / df);
    if (k0 < 0) k0 = 0;
    /* a rising edge at the bottom of the range counts as a peak (no interpolation there) */
    if (k0 + 1 < n_bins && mag[k0] > mag[k0 + 1] && mag[k0] > threshold && k0 * df <= fmax)
        pk[np++] = (peak_t){(float)(k0 * df), mag[k0]};
    for (int k = k0 > 1 ? k0 : 1; k < n_bins - 1; k++) {
        if (!(mag[k] > mag[k - 1]) || !(mag[k] > threshold)) continue;
        int j = k;
        while (j + 1 < n_bins - 1 && mag[j + 1] == mag[k]) j++;      /* plateau k..j */
        if (!(mag[j + 1] < mag[j])) { k = j; continue; }
        double pos, val;
        if (j != k) { pos = 0.5 * (k + j); val = mag[k]; }
        else {
            double a = mag[k - 1], b = mag[k], c = mag[k + 1], den = a - 2 * b + c;
            double d = den != 0 ? 0.5 * (a - c) / den : 0;
            pos = k + d;
            val = b - 0.25 * (a - c) * d;
        }
        if (pos * df > fmax) break;
        if (pos * df >= fmin) pk[np++] = (peak_t){(float)(pos * df), (float)val};
        k = j;
    }
    if (order_by_magnitude || np > max_peaks) qsort(pk, (size_t)np, sizeof *pk, by_mag_desc);
    if (np > max_peaks) np = max_peaks;
    if (!order_by_magnitude) qsort(pk, (size_t)np, sizeof *pk, by_freq_asc);
    for (int i = 0; i < np; i++) { freqs[i] = pk[i].f; mags[i] = pk[i].m; }
    free(pk);
    return np;
}

/* ---- spectral whitening --------------------------------------------------------------------------- */

static double pow_db(double x) { return x < 1e-10 ? -100.0 : 10.0 * log10(x); }  /* power dB, floored */

int sao_spectral_whitening(sao_ctx *ctx, const float *mag, int n_bins, double sr, double max_freq,
                           const float *freqs, float *mags, int n_peaks) {
    const char *op = "spectral_whitening";
    if (n_peaks <= 0) return 0;
    if (n_bins < 2 || !(sr > 0)) return sao_err(ctx, op, "need >= 2 bins and sr > 0");
    const double step = 100.0, fmaxw = 1.2 * max_freq, range = sr / 2.0;
    int npts = 0;
    for (double f = 0; f <= fmaxw && f <= range; f += step) npts++;
    if (npts < 2) return 0;
    double *env = sao_xmalloc(ctx, op, (size_t)npts * sizeof *env);
    if (!env) return -1;
    /* envelope: energy-weighted mean energy over an asymmetric window around every 100 Hz */
    for (int p = 0; p < npts; p++) {
        double f = p * step;
        double bf = f - fmax(50.0, 0.34 * f), ef = f + fmax(50.0, 0.58 * f);
        int b = (int)(bf / range * (n_bins - 1.0) + 0.5), e = (int)(ef / range * (n_bins - 1.0) + 0.5);
        if (b < 0) b = 0;
        if (b > n_bins - 1) b = n_bins - 1;
        if (e < b + 1) e = b + 1;
        if (e > n_bins) e = n_bins;
        double c = 0.5 * b + 0.5 * e, half = e - c, num = 0, den = 0;
        for (int i = b; i < e; i++) {
            double w = 1.0 - fabs(i - c) / half;
            double E = (double)mag[i] * mag[i];
            w = w * w * w * w * E;
            num += E * w;
            den += w;
        }
        env[p] = den != 0 ? num / den : 0;
    }
    env[npts - 1] = env[npts - 2];
    for (int p = 0; p < npts; p++) env[p] = pow_db(env[p]);
    double xlast = (npts - 1) * step;
    for (int i = 0; i < n_peaks; i++) {
        double f = freqs[i], A = 2.0 * pow_db(mags[i]), W;
        if (f > fmaxw - step) continue;                            /* unchanged above the range */
        double pos = f / step;
        int j = (int)pos;
        double envf;
        if (f >= xlast) envf = env[npts - 1];
        else envf = env[j] + (env[j + 1] - env[j]) * (pos - j);
        if (A > envf) W = 0.0;
        else if (A > envf - 30.0) W = A - envf;
        else W = -200.0;
        W -= 20.0 * f / 4000.0;
        mags[i] = (float)pow(10.0, W / 20.0);
    }
    free(env);
    return 0;
}

/* ---- HPCP -------------------------------------------------------------------------------------------- */

typedef struct { double semitone, strength; } harm_t;

/* Harmonic table: harmonic h (1..H+1) at 12 log2 h semitones, folded into [0, 12), strength
 * 1 / max(1, 0.5 log2 h); equal positions merged by adding strengths. */
static int harmonic_table(int H, harm_t *tab) {
    const double eps = 1e-5;
    int n = 0;
    for (int h = 1; h <= H + 1; h++) {
        double s = 12.0 * log2((double)h), w = 1.0 / fmax(1.0, s / 12.0 * 0.5);
        while (s >= 12.0 - eps) s -= 12.0;
        int i = 0;
        while (i < n && fabs(tab[i].semitone - s) >= eps) i++;
        if (i == n) tab[n++] = (harm_t){s, w};
        else tab[i].strength += w;
    }
    return n;
}

int sao_hpcp(sao_ctx *ctx, const float *freqs, const float *mags, int n_peaks, const sao_hpcp_cfg *cfg,
             float *out) {
    const char *op = "hpcp";
    int S = cfg->size;
    if (S < 12 || S % 12) return sao_err(ctx, op, "size %d must be a positive multiple of 12", S);
    if (cfg->harmonics < 0 || cfg->harmonics > 64) return sao_err(ctx, op, "harmonics %d outside 0..64", cfg->harmonics);
    double R = S / 12.0, win = cfg->window_semitones;
    if (win * R < 1.0 && cfg->weight != SAO_HPCP_NONE)
        return sao_err(ctx, op, "window %g semitones is narrower than one bin (need >= %g)", win, 12.0 / S);
    if (!(cfg->reference_hz > 0)) return sao_err(ctx, op, "reference frequency must be > 0");
    harm_t tab[66];
    int nh = harmonic_table(cfg->harmonics, tab);
    double *acc = calloc((size_t)S, sizeof *acc);
    if (!acc) return sao_err(ctx, op, "out of memory");
    for (int p = 0; p < n_peaks; p++) {
        double f0 = freqs[p], m = mags[p];
        if (!(f0 >= cfg->min_hz && f0 <= cfg->max_hz)) continue;
        for (int h = 0; h < nh; h++) {
            double f = f0 * pow(2.0, -tab[h].semitone / 12.0), hw = tab[h].strength;
            if (f <= 0) continue;
            double bin = S * log2(f / cfg->reference_hz), e = m * m * hw * hw;
            if (cfg->weight == SAO_HPCP_NONE) {
                long i = lround(bin) % S;
                if (i < 0) i += S;
                acc[i] += e;
                continue;
            }
            long lo = (long)ceil(bin - R * win / 2.0), hi = (long)floor(bin + R * win / 2.0);
            for (long i = lo; i <= hi; i++) {
                double d = fabs(bin - (double)i) / R / win, w = cos(M_PI * d);
                if (cfg->weight == SAO_HPCP_SQUARED_COSINE) w *= w;
                long iw = i % S;
                if (iw < 0) iw += S;
                acc[iw] += w * e;
            }
        }
    }
    double norm = 1.0;
    if (cfg->normalize == SAO_HPCP_NORM_UNIT_MAX || cfg->normalize == SAO_HPCP_NORM_UNIT_SUM) {
        double s = 0;
        for (int i = 0; i < S; i++) {
            if (cfg->normalize == SAO_HPCP_NORM_UNIT_MAX) s = acc[i] > s ? acc[i] : s;
            else s += acc[i];
        }
        norm = s > 0 ? 1.0 / s : 1.0;
    }
    for (int i = 0; i < S; i++) out[i] = (float)(acc[i] * norm);
    free(acc);
    return 0;
}

int sao_hpcp_preset(sao_ctx *ctx, const char *name, sao_hpcp_frames_cfg *o) {
    memset(o, 0, sizeof *o);
    if (name && (!strcmp(name, "keyextractor") || !strcmp(name, "bgate") ||
                 !strcmp(name, "keyextractor-default"))) {
        o->frame_size = 4096; o->hop_size = 4096; o->window = SAO_WIN_HANN;
        o->peak_min_hz = 25; o->peak_max_hz = 3500; o->peak_threshold = 1e-4; o->max_peaks = 60;
        o->whitening = 1;
        o->hpcp = (sao_hpcp_cfg){12, 440.0, 4, SAO_HPCP_COSINE, 1.0, 25, 3500, SAO_HPCP_NORM_NONE};
        return 0;
    }
    if (name && (!strcmp(name, "edma") || !strcmp(name, "tutorial-edma") || !strcmp(name, "tutorial"))) {
        o->frame_size = 4096; o->hop_size = 2048; o->window = SAO_WIN_BLACKMANHARRIS62;
        o->peak_min_hz = 20; o->peak_max_hz = 3500; o->peak_threshold = 1e-5; o->max_peaks = 60;
        o->whitening = 0;
        o->hpcp = (sao_hpcp_cfg){36, 440.0, 0, SAO_HPCP_COSINE, 1.0, 20, 3500, SAO_HPCP_NORM_UNIT_MAX};
        return 0;
    }
    return sao_err(ctx, "hpcp_preset", "unknown preset '%s' (keyextractor or edma)", name ? name : "(null)");
}

sao_tensor *sao_hpcp_frames(sao_ctx *ctx, const sao_tensor *audio, int sr, const sao_hpcp_frames_cfg *cfg) {
    const char *op = "hpcp_frames";
    if (!cfg) return sao_err_null(ctx, op, "cfg is NULL (use sao_hpcp_preset)");
    int N = cfg->frame_size, hop = cfg->hop_size;
    if (N < 4 || N % 2 || hop < 1) return sao_err_null(ctx, op, "frame size %d (even, >= 4) and hop %d (>= 1)", N, hop);
    if (sr < 1) return sao_err_null(ctx, op, "sample rate %d must be positive", sr);
    if (cfg->max_peaks < 1) return sao_err_null(ctx, op, "max_peaks must be >= 1");
    sao_audio_in_t in;
    if (sao_audio_in(ctx, op, audio, &in)) return NULL;
    float *x = sao_audio_mono_buffer(&in);
    int64_t n = in.samples;
    sao_audio_in_free(&in);
    if (!x) return sao_err_null(ctx, op, "out of memory");
    /* frames k centred at k*hop while the frame start k*hop - N/2 is inside the signal */
    int64_t T = n > 0 ? (n + N / 2 + hop - 1) / hop : 0;
    int64_t shape[2] = {T, cfg->hpcp.size};
    sao_tensor *out = sao_tensor_new(ctx, SAO_F32, 2, shape);
    /* window scaled to sum 2; a 1-frame STFT plan with no centring does the FFT */
    sao_stft_cfg sc = {N, N, N, cfg->window, 0, 0, SAO_PAD_CONSTANT};
    sao_stft_plan *plan = out ? sao_stft_plan_new(ctx, &sc) : NULL;
    if (!plan) { free(x); sao_tensor_free(out); return NULL; }
    const float *w = sao_stft_plan_window(plan);
    double wsum = 0;
    for (int j = 0; j < N; j++) wsum += w[j];
    float scale = (float)(2.0 / wsum);
    int F = N / 2 + 1, fail = 0;
    float *yo = sao_tensor_data(out);
    sao_threads_apply(ctx);
#pragma omp parallel if (T >= 16)
    {
        float *frame = malloc((size_t)N * sizeof *frame), *buf = sao_fft_alloc((size_t)N);
        float *spec = sao_fft_alloc((size_t)F * 2);
        float *mag = malloc((size_t)F * sizeof *mag);
        float *pf = malloc((size_t)cfg->max_peaks * sizeof *pf), *pm = malloc((size_t)cfg->max_peaks * sizeof *pm);
        sao_ctx *lctx = sao_ctx_new();
        int ok = frame && buf && spec && mag && pf && pm && lctx;
#pragma omp for schedule(static)
        for (int64_t t = 0; t < T; t++) {
            if (!ok) continue;
            int64_t s0 = t * hop - N / 2;
            for (int j = 0; j < N; j++) {
                int64_t i = s0 + j;
                frame[j] = i >= 0 && i < n ? x[i] * scale : 0.0f;
            }
            sao_stft_plan_frame(plan, frame, buf, spec);
            for (int k = 0; k < F; k++) mag[k] = sqrtf(spec[2 * k] * spec[2 * k] + spec[2 * k + 1] * spec[2 * k + 1]);
            int np = sao_spectral_peaks(lctx, mag, F, sr, cfg->peak_min_hz, cfg->peak_max_hz, cfg->peak_threshold,
                                        cfg->max_peaks, 1, pf, pm);
            if (np < 0 ||
                (cfg->whitening && sao_spectral_whitening(lctx, mag, F, sr, cfg->peak_max_hz, pf, pm, np)) ||
                sao_hpcp(lctx, pf, pm, np, &cfg->hpcp, yo + t * cfg->hpcp.size))
                ok = 0;
        }
        if (!ok) {
#pragma omp critical
            {
                if (!fail) sao_err(ctx, op, "%s", lctx ? sao_ctx_error(lctx) : "out of memory");
                fail = 1;
            }
        }
        if (lctx) sao_ctx_free(lctx);
        free(frame); free(mag); free(pf); free(pm);
        sao_fft_free(buf);
        sao_fft_free(spec);
    }
    sao_stft_plan_free(plan);
    free(x);
    if (fail) { sao_tensor_free(out); return NULL; }
    return out;
}

/* tempo.c — global tempo (BPM), a confidence, a local tempo curve and beat times.
 *
 * Pipeline (docs/analysis.md, "Tempo"):
 *   audio -> mono -> onset-strength envelope o[t] (sao_dsp.h: log-mel spectral flux, ~86 frames/s)
 *   o -> mean removed -> r[τ]: Pearson correlation of o with itself shifted by τ frames
 *   comb C(b) = mean of r(k·τ_b) over the multiples k·τ_b <= max_lag_s (at least one),
 *        τ_b = 60·fps/b, fractional lags by cubic (Catmull-Rom) interpolation
 *   metrical salience S(b) = ½ C(b) + ¼ C(b/2) + ¼ C(b/4)
 *   score(b) = max(S, 0) · prior(b), prior = log-normal (centre prior_bpm, σ prior_octaves)
 *   bpm = argmax of the score on a grid of 0.1 % steps, refined by a parabola through S at the
 *        grid neighbours; alt_bpm = the best score at the other metrical levels (x2, x1/2, x3,
 *        x1/3, x3/2, x2/3)
 *   confidence = clamp(C(bpm), 0, 1): how well the envelope repeats at the beat period
 *   local curve: the same on sliding windows, searched within half an octave of bpm
 *   beats: dynamic programming (Ellis 2007) on the envelope with the global period.
 * Everything after the envelope is here; the envelope comes from the shared DSP code. */
#include "internal.h"
#include "sao_analysis.h"
#include "sao_dsp.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double min_bpm, max_bpm, prior_bpm, prior_oct, max_lag_s, window_s, hop_s, tightness;
    int local, beats;
} topts;

static void opts_resolve(const sao_tempo_opts *o, topts *r) {
    sao_tempo_opts z;
    if (!o) { memset(&z, 0, sizeof z); o = &z; }
    r->min_bpm = o->min_bpm > 0 ? o->min_bpm : 40.0;
    r->max_bpm = o->max_bpm > 0 ? o->max_bpm : 250.0;
    r->prior_bpm = o->prior_bpm > 0 ? o->prior_bpm : 120.0;
    r->prior_oct = o->prior_octaves != 0 ? o->prior_octaves : 1.0;
    r->max_lag_s = o->max_lag_s > 0 ? o->max_lag_s : 4.0;
    r->window_s = o->window_s > 0 ? o->window_s : 8.0;
    r->hop_s = o->hop_s > 0 ? o->hop_s : 1.0;
    r->tightness = o->tightness > 0 ? o->tightness : 100.0;
    r->local = o->local != 0;
    r->beats = o->beats != 0;
}

/* ---- correlation and comb salience -------------------------------------------------------- */

/* r[τ], τ = 0..L: Σ x_t x_{t+τ} / sqrt(Σ_{t<n-τ} x_t² · Σ_{t>=τ} x_t²) for mean-removed x.
 * c2 is scratch of n+1 doubles (prefix sums of x²). */
static void acf_pearson(const double *x, int64_t n, int L, double *r, double *c2) {
    c2[0] = 0;
    for (int64_t t = 0; t < n; t++) c2[t + 1] = c2[t] + x[t] * x[t];
    for (int tau = 0; tau <= L; tau++) {
        if (tau >= n) { r[tau] = 0; continue; }
        double s = 0;
        for (int64_t t = 0; t + tau < n; t++) s += x[t] * x[t + tau];
        double e1 = c2[n - tau], e2 = c2[n] - c2[tau];
        r[tau] = (e1 > 0 && e2 > 0) ? s / sqrt(e1 * e2) : 0;
    }
}

/* Catmull-Rom interpolation of r at fractional lag u (0 <= u <= L). */
static double interp(const double *r, int L, double u) {
    int i = (int)floor(u);
    if (i >= L) return r[L];
    double f = u - i;
    double p0 = r[i > 0 ? i - 1 : 0], p1 = r[i], p2 = r[i + 1], p3 = r[i + 2 <= L ? i + 2 : L];
    return p1 + 0.5 * f * (p2 - p0 + f * (2 * p0 - 5 * p1 + 4 * p2 - p3 + f * (3 * (p1 - p2) + p3 - p0)));
}

typedef struct {
    const double *r;
    int L;          /* largest lag held in r */
    double fps;
    double comb_lag; /* multiples k·τ up to this lag (frames) */
} comb_t;

/* Mean of r at the multiples of the period of `bpm` that fit in the comb (at least one). */
static double comb_mean(const comb_t *c, double bpm) {
    double tau = 60.0 * c->fps / bpm;
    int K = (int)floor(c->comb_lag / tau);
    if (K < 1) K = 1;
    double s = 0;
    int used = 0;
    for (int k = 1; k <= K; k++) {
        double u = k * tau;
        if (u > c->L) break;
        s += interp(c->r, c->L, u);
        used++;
    }
    return used ? s / used : 0;
}

/* Metrical salience: the comb at the beat period, supported by the combs at two and four beats
 * (a beat level is credible when the half-bar and bar levels are periodic too). This keeps the
 * 3/4- and 4/3-of-the-beat periods of syncopated loops from winning. A triple grouping (3 and 6
 * beats) as an alternative support was tried and lost more (slow shuffles read as 3/2 of the
 * tempo, loops as 3/4) than it won (a fast waltz read as 2/3); docs/analysis.md. */
static double comb_salience(const comb_t *c, double bpm) {
    return 0.5 * comb_mean(c, bpm) + 0.25 * comb_mean(c, bpm / 2) + 0.25 * comb_mean(c, bpm / 4);
}

static double prior_weight(const topts *o, double bpm) {
    if (o->prior_oct < 0) return 1.0;
    double z = log2(bpm / o->prior_bpm) / o->prior_oct;
    return exp(-0.5 * z * z);
}

/* Best tempo in [lo, hi] by score = max(S,0)·prior on a grid with ratio `step`, refined by a
 * parabola through the unweighted salience of the grid neighbours. Returns bpm (0 if none)
 * and its salience in *sal. */
static double search(const comb_t *c, const topts *o, double lo, double hi, int use_prior, double *sal) {
    const double step = 1.001;
    double best = -1, best_b = 0;
    for (double b = lo; b <= hi * 1.0000001; b *= step) {
        double s = comb_salience(c, b);
        double sc = (s > 0 ? s : 0) * (use_prior ? prior_weight(o, b) : 1.0);
        if (sc > best) { best = sc; best_b = b; }
    }
    if (best <= 0) { *sal = 0; return 0; }
    double b0 = best_b / step, b2 = best_b * step;
    double s0 = comb_salience(c, b0), s1 = comb_salience(c, best_b), s2 = comb_salience(c, b2);
    double den = s0 - 2 * s1 + s2, d = 0;
    if (den < 0) d = 0.5 * (s0 - s2) / den;            /* in grid steps, |d| <= 0.5 at a max */
    if (d > 0.5) d = 0.5;
    if (d < -0.5) d = -0.5;
    double b = best_b * pow(step, d);
    *sal = comb_salience(c, b);
    return b;
}

/* ---- beat tracker (dynamic programming) -------------------------------------------------- */

static sao_tensor *track_beats(sao_ctx *ctx, const float *o, int64_t n, double fps, double t0,
                               double bpm, double tightness) {
    double tau = 60.0 * fps / bpm;
    double *loc = malloc(sizeof(double) * (size_t)n);
    double *cs = malloc(sizeof(double) * (size_t)n);
    int64_t *back = malloc(sizeof(int64_t) * (size_t)n);
    int64_t *beat = malloc(sizeof(int64_t) * (size_t)(n + 1));
    sao_tensor *res = NULL;
    if (!loc || !cs || !back || !beat) { sao_err(ctx, "tempo", "out of memory in the beat tracker"); goto done; }

    /* local score: envelope smoothed by a Gaussian of σ = τ/32 frames, divided by its std */
    double sg = tau / 32.0;
    if (sg < 0.5) sg = 0.5;
    int hw = (int)ceil(3 * sg);
    double m = 0, v = 0;
    for (int64_t t = 0; t < n; t++) {
        double s = 0;
        for (int j = -hw; j <= hw; j++) {
            int64_t k = t + j;
            if (k < 0 || k >= n) continue;
            s += o[k] * exp(-0.5 * (j / sg) * (j / sg));
        }
        loc[t] = s;
        m += s;
    }
    m /= (double)n;
    for (int64_t t = 0; t < n; t++) v += (loc[t] - m) * (loc[t] - m);
    v = sqrt(v / (double)n);
    if (v <= 0) { res = sao_tensor_new(ctx, SAO_F32, 1, (int64_t[]){0}); goto done; }
    for (int64_t t = 0; t < n; t++) loc[t] /= v;

    int64_t pmin = (int64_t)llround(tau / 2), pmax = (int64_t)llround(2 * tau);
    if (pmin < 1) pmin = 1;
    for (int64_t t = 0; t < n; t++) {
        double best = -INFINITY;
        int64_t arg = -1;
        for (int64_t d = pmin; d <= pmax && d <= t; d++) {
            double l = log((double)d / tau);
            double sc = cs[t - d] - tightness * l * l;
            if (sc > best) { best = sc; arg = t - d; }
        }
        if (arg >= 0 && best > 0) { cs[t] = loc[t] + best; back[t] = arg; }
        else { cs[t] = loc[t]; back[t] = -1; }
    }
    /* last beat: best cumulative score within the final period */
    int64_t last = n - 1;
    double bs = -INFINITY;
    for (int64_t t = n - 1; t >= 0 && t >= n - 1 - (int64_t)ceil(tau); t--)
        if (cs[t] > bs) { bs = cs[t]; last = t; }
    int64_t nb = 0;
    for (int64_t t = last; t >= 0; t = back[t]) beat[nb++] = t;
    /* reverse to time order */
    for (int64_t i = 0; i < nb / 2; i++) { int64_t tmp = beat[i]; beat[i] = beat[nb - 1 - i]; beat[nb - 1 - i] = tmp; }
    /* trim weak beats at both ends: local score below half the RMS over beats */
    double rms = 0;
    for (int64_t i = 0; i < nb; i++) rms += loc[beat[i]] * loc[beat[i]];
    rms = nb ? sqrt(rms / (double)nb) : 0;
    int64_t a = 0, b = nb;
    while (a < b && loc[beat[a]] < 0.5 * rms) a++;
    while (b > a && loc[beat[b - 1]] < 0.5 * rms) b--;
    res = sao_tensor_new(ctx, SAO_F32, 1, (int64_t[]){b - a});
    if (res) {
        float *p = sao_tensor_data(res);
        for (int64_t i = a; i < b; i++) p[i - a] = (float)(t0 + beat[i] / fps);
    }
done:
    free(loc); free(cs); free(back); free(beat);
    return res;
}

/* ---- the estimator ------------------------------------------------------------------------ */

static const double octave_ratios[] = {2.0, 0.5, 3.0, 1.0 / 3.0, 1.5, 2.0 / 3.0};

/* Tempo from a float envelope o[n] at fps frames/s. */
static int tempo_core(sao_ctx *ctx, const float *o, int64_t n, double fps, double t0,
                      const topts *op, sao_tempo_result *out) {
    memset(out, 0, sizeof *out);
    out->frame_rate = fps;
    if (!(fps > 0)) return sao_err(ctx, "tempo", "frame rate %g: must be positive", fps);
    if (op->min_bpm >= op->max_bpm)
        return sao_err(ctx, "tempo", "min_bpm %g >= max_bpm %g (give a range lo < hi)", op->min_bpm, op->max_bpm);
    double need = 2.0 * 60.0 / op->min_bpm;      /* two periods of the slowest tempo */
    if (need < 2.0) need = 2.0;
    if ((double)n / fps < need)
        return sao_err(ctx, "tempo", "signal of %.2f s is too short: tempo needs at least %.2f s "
                       "(two periods at min_bpm %g)", (double)n / fps, need, op->min_bpm);

    int rc = -1;
    double *x = malloc(sizeof(double) * (size_t)n);
    double *c2 = malloc(sizeof(double) * (size_t)(n + 1));
    int L = (int)ceil(fmax(2 * op->max_lag_s, 4.0 * 60.0 / op->min_bpm) * fps) + 2;
    if (L > n - 1) L = (int)(n - 1);
    double *r = malloc(sizeof(double) * (size_t)(L + 1));
    if (!x || !c2 || !r) { sao_err(ctx, "tempo", "out of memory (%lld frames)", (long long)n); goto done; }

    double mean = 0, var = 0;
    for (int64_t t = 0; t < n; t++) {
        if (!isfinite(o[t])) {
            sao_err(ctx, "tempo", "onset envelope frame %lld is %g (NaN or Inf in the audio?)", (long long)t, o[t]);
            goto done;
        }
        mean += o[t];
    }
    mean /= (double)n;
    for (int64_t t = 0; t < n; t++) { x[t] = o[t] - mean; var += x[t] * x[t]; }
    if (!(var > 1e-20 * (double)n)) { rc = 0; goto done; }   /* flat envelope: no tempo */

    acf_pearson(x, n, L, r, c2);
    comb_t comb = {r, L, fps, op->max_lag_s * fps};
    double sal = 0;
    double bpm = search(&comb, op, op->min_bpm, op->max_bpm, 1, &sal);
    if (bpm <= 0) { rc = 0; goto done; }

    /* the strongest other metrical level, for callers that want to see the ambiguity */
    double alt = 0, alt_sal = 0, alt_score = -1;
    for (size_t i = 0; i < sizeof octave_ratios / sizeof *octave_ratios; i++) {
        double c = bpm * octave_ratios[i];
        if (c < op->min_bpm || c > op->max_bpm) continue;
        double s;
        double b = search(&comb, op, fmax(op->min_bpm, c / 1.03), fmin(op->max_bpm, c * 1.03), 0, &s);
        double sc = s * prior_weight(op, b);
        if (b > 0 && sc > alt_score) { alt_score = sc; alt = b; alt_sal = s; }
    }
    double beat = comb_mean(&comb, bpm);
    out->bpm = bpm;
    out->salience = sal;
    out->confidence = beat < 0 ? 0 : beat > 1 ? 1 : beat;
    out->alt_bpm = alt;
    out->alt_salience = alt_sal;

    if (op->local) {
        int64_t W = (int64_t)llround(op->window_s * fps), H = (int64_t)llround(op->hop_s * fps);
        if (W > n) W = n;
        if (H < 1) H = 1;
        int64_t nw = 1 + (n - W) / H;
        int Lw = L < W - 1 ? L : (int)(W - 1);
        double *rw = malloc(sizeof(double) * (size_t)(Lw + 1));
        double *cw = malloc(sizeof(double) * (size_t)(W + 1));
        double *xw = malloc(sizeof(double) * (size_t)W);
        out->curve = (rw && cw && xw) ? sao_tensor_new(ctx, SAO_F32, 2, (int64_t[]){nw, 3}) : NULL;
        if (!out->curve) {
            free(rw); free(cw); free(xw);
            if (!sao_ctx_error(ctx)[0]) sao_err(ctx, "tempo", "out of memory for the local tempo curve");
            goto done;
        }
        float *cv = sao_tensor_data(out->curve);
        comb_t cb = {rw, Lw, fps, op->max_lag_s * fps};
        for (int64_t w = 0; w < nw; w++) {
            const float *ow = o + w * H;
            double mw = 0;
            for (int64_t t = 0; t < W; t++) mw += ow[t];
            mw /= (double)W;
            for (int64_t t = 0; t < W; t++) xw[t] = ow[t] - mw;
            acf_pearson(xw, W, Lw, rw, cw);
            double s;
            double b = search(&cb, op, fmax(op->min_bpm, bpm / M_SQRT2), fmin(op->max_bpm, bpm * M_SQRT2), 1, &s);
            cv[3 * w + 0] = (float)(t0 + (w * H + W / 2.0) / fps);
            cv[3 * w + 1] = (float)b;
            cv[3 * w + 2] = (float)s;
        }
        free(rw); free(cw); free(xw);
    }
    if (op->beats) {
        out->beats = track_beats(ctx, o, n, fps, t0, bpm, op->tightness);
        if (!out->beats) goto done;
    }
    rc = 0;
done:
    if (rc != 0) {
        if (out->curve) { sao_tensor_free(out->curve); out->curve = NULL; }
        if (out->beats) { sao_tensor_free(out->beats); out->beats = NULL; }
    }
    free(x); free(c2); free(r);
    return rc;
}

int sao_tempo_from_onset(sao_ctx *ctx, const sao_tensor *onset, double frame_rate, double t0,
                         const sao_tempo_opts *opts, sao_tempo_result *out) {
    if (!onset || !out) return sao_err(ctx, "tempo", "onset envelope and result must not be NULL");
    if (onset->ndim != 1)
        return sao_err(ctx, "tempo", "onset envelope has %d dimensions: expected a 1-D tensor [T]", onset->ndim);
    sao_tensor *f = sao_tensor_to_dtype(ctx, onset, SAO_F32);
    if (!f) return -1;
    sao_tensor *c = sao_tensor_contiguous(ctx, f);
    sao_tensor_free(f);
    if (!c) return -1;
    topts op;
    opts_resolve(opts, &op);
    int rc = tempo_core(ctx, sao_tensor_data(c), c->shape[0], frame_rate, t0, &op, out);
    sao_tensor_free(c);
    return rc;
}

/* The onset front end: log-mel spectral flux (librosa onset_strength semantics) on the mono
 * mix at the audio's own rate; hop = the power of two nearest (geometrically) to 11.6 ms (512
 * samples at 44.1/48 kHz, 256 at 16/22.05 kHz, 128 at 8 kHz), FFT = 4 hops, 128 Slaney mel
 * bands up to min(sr/2, 11025 Hz). The 11 kHz ceiling was meant to keep hi-hats and cymbals from
 * outweighing kick and snare in the band mean; measured, it changes almost nothing (242 vs 241
 * hits of 254, docs/analysis.md), and it keeps every rate on the same bands. */
int sao_tempo_estimate(sao_ctx *ctx, const sao_tensor *audio, int sample_rate,
                       const sao_tempo_opts *opts, sao_tempo_result *out) {
    if (!audio || !out) return sao_err(ctx, "tempo", "audio and result must not be NULL");
    memset(out, 0, sizeof *out);
    if (sample_rate < 4000 || sample_rate > 768000)
        return sao_err(ctx, "tempo", "sample rate %d Hz: expected 4000..768000", sample_rate);
    sao_onset_cfg oc;
    if (sao_onset_cfg_default(ctx, &oc)) return -1;
    int hop = 1;
    while (hop * 2 <= (int)lround(sample_rate * 0.0116 * 1.42)) hop *= 2;  /* nearest power of 2 */
    oc.hop = hop;
    oc.n_fft = 4 * hop;
    oc.n_mels = 128;
    oc.fmin = 0;
    oc.fmax = sample_rate / 2.0 < 11025.0 ? sample_rate / 2.0 : 11025.0;
    sao_tensor *env = sao_onset_strength(ctx, audio, sample_rate, &oc);
    if (!env) return -1;
    topts op;
    opts_resolve(opts, &op);
    int rc = tempo_core(ctx, sao_tensor_data(env), env->shape[0], (double)sample_rate / hop, 0.0, &op, out);
    sao_tensor_free(env);
    return rc;
}

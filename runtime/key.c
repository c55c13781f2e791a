/* key.c — key and scale by correlating an averaged HPCP with rotated key profiles.
 *
 * The front end (frames -> window -> spectral peaks -> whitening -> HPCP) is the shared DSP
 * code (sao_hpcp_frames in spectral.c); this file does what follows, as Essentia's Key does it
 * (DSP_SPEC §3.6.3, step 4; docs/analysis.md, "Key"):
 *   1. mean HPCP over frames, divided by its maximum, bins below pcp_threshold (0.2) zeroed;
 *   2. detuning correction (size > 12): rotate so that the maximum sits on a semitone bin;
 *   3. 12-value major/minor profiles of the chosen type, optionally replaced by "polyphonic"
 *      profiles built from the triads of the key with their first numHarmonics (4) harmonics
 *      decaying by `slope` (0.6), then linearly interpolated to the HPCP size;
 *   4. Pearson correlation with the profile rotated to every bin; the best major and best minor
 *      compete (major wins only when strictly greater); tonic = floor(bin * 12 / size).
 * HPCP bin 0 is A (440 Hz reference); results are reported with C = 0. */
#include "internal.h"
#include "sao_analysis.h"
#include "sao_dsp.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Published profile values, index 0 = tonic (Faraldo 2016/2017, Krumhansl 1990, Temperley 1999).
 * [profile][0 = major, 1 = minor][semitone] */
static const double key_profiles[SAO_KEY_PROFILE_COUNT][2][12] = {
    [SAO_KEY_PROFILE_BGATE] = {
        {1.00, 0.00, 0.42, 0.00, 0.53, 0.37, 0.00, 0.77, 0.00, 0.38, 0.21, 0.30},
        {1.00, 0.00, 0.36, 0.39, 0.00, 0.38, 0.00, 0.74, 0.27, 0.00, 0.42, 0.23}},
    [SAO_KEY_PROFILE_EDMA] = {
        {1.00, 0.29, 0.50, 0.40, 0.60, 0.56, 0.32, 0.80, 0.31, 0.45, 0.42, 0.39},
        {1.00, 0.31, 0.44, 0.58, 0.33, 0.49, 0.29, 0.78, 0.43, 0.29, 0.53, 0.32}},
    [SAO_KEY_PROFILE_KRUMHANSL] = {
        {6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88},
        {6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17}},
    [SAO_KEY_PROFILE_TEMPERLEY] = {
        {5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0},
        {5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0}},
};

typedef struct {
    int profile, polyphony, three_chords, frame_size, hop_size, num_harmonics;
    double slope, threshold;
    const char *hpcp_preset;
} kopts;

static int opts_resolve(sao_ctx *ctx, const sao_key_opts *o, kopts *r) {
    sao_key_opts z;
    if (!o) { memset(&z, 0, sizeof z); o = &z; }
    if (o->preset == SAO_KEY_PRESET_BGATE) {
        /* Essentia KeyExtractor: Key(profileType bgate, usePolyphony false, useThreeChords false) */
        r->profile = SAO_KEY_PROFILE_BGATE; r->polyphony = 0; r->three_chords = 0;
        r->hpcp_preset = "keyextractor";
    } else if (o->preset == SAO_KEY_PRESET_EDMA) {
        /* Essentia tutorial: Key(profileType edma, usePolyphony true, useThreeChords true) */
        r->profile = SAO_KEY_PROFILE_EDMA; r->polyphony = 1; r->three_chords = 1;
        r->hpcp_preset = "edma";
    } else {
        return sao_err(ctx, "key", "unknown preset %d (0 = bgate / KeyExtractor, 1 = edma / tutorial)", o->preset);
    }
    if (o->profile < 0 || o->profile >= SAO_KEY_PROFILE_COUNT)
        return sao_err(ctx, "key", "unknown profile %d (1 bgate, 2 edma, 3 krumhansl, 4 temperley)", o->profile);
    if (o->profile) r->profile = o->profile;
    if (o->polyphony) r->polyphony = o->polyphony > 0;
    if (o->three_chords) r->three_chords = o->three_chords > 0;
    r->frame_size = o->frame_size;
    r->hop_size = o->hop_size;
    r->num_harmonics = 4;
    r->slope = 0.6;
    r->threshold = o->pcp_threshold > 0 ? o->pcp_threshold : o->pcp_threshold < 0 ? 0.0 : 0.2;
    return 0;
}

/* ---- profiles ------------------------------------------------------------------------------ */

/* Adds a note at pitch class pc (0..11, relative to the tonic) with its first nh harmonics,
 * harmonic h at pc + 12 log2(h) semitones with weight w * slope^(h-1), split between the two
 * neighbouring semitones by cos²(π/2 · distance). */
static void add_note(double *prof, int pc, double w, int nh, double slope) {
    double hw = w;
    for (int h = 1; h <= nh; h++) {
        double p = pc + 12.0 * log2((double)h);
        double lo = floor(p), d = p - lo;
        int i = ((int)lo % 12 + 12) % 12;
        double c = cos(M_PI / 2 * d);
        prof[i] += hw * c * c;
        prof[(i + 1) % 12] += hw * (1 - c * c);
        hw *= slope;
    }
}

/* Triad with root `root` and intervals (third, fifth) above it. */
static void add_triad(double *prof, int root, int third, int fifth, double w, int nh, double slope) {
    add_note(prof, root % 12, w, nh, slope);
    add_note(prof, (root + third) % 12, w, nh, slope);
    add_note(prof, (root + fifth) % 12, w, nh, slope);
}

/* The 12-value major (scale 0) or minor (1) profile for the options. */
static void profile12(const kopts *o, int scale, double *out) {
    const double *P = key_profiles[o->profile][scale];
    if (!o->polyphony) {
        memcpy(out, P, 12 * sizeof *out);
        return;
    }
    memset(out, 0, 12 * sizeof *out);
    int nh = o->num_harmonics;
    double s = o->slope;
    if (scale == 0) {                                   /* major: I, IV, V (+ ii, iii, vi, vii°) */
        add_triad(out, 0, 4, 7, P[0], nh, s);
        add_triad(out, 5, 4, 7, P[5], nh, s);
        add_triad(out, 7, 4, 7, P[7], nh, s);
        if (!o->three_chords) {
            add_triad(out, 2, 3, 7, P[2], nh, s);
            add_triad(out, 4, 3, 7, P[4], nh, s);
            add_triad(out, 9, 3, 7, P[9], nh, s);
            add_triad(out, 11, 3, 6, P[11], nh, s);
        }
    } else {                                            /* minor: i, iv, V (+ ii°, III+, VI, vii°) */
        add_triad(out, 0, 3, 7, P[0], nh, s);
        add_triad(out, 5, 3, 7, P[5], nh, s);
        add_triad(out, 7, 4, 7, P[7], nh, s);
        if (!o->three_chords) {
            add_triad(out, 2, 3, 6, P[2], nh, s);
            add_triad(out, 3, 4, 8, P[3], nh, s);
            add_triad(out, 8, 4, 7, P[8], nh, s);
            add_triad(out, 11, 3, 6, P[8], nh, s);   /* weighted like VI: fitted to Essentia 2.1 */
        }
    }
}

/* 12 values -> S values, linear interpolation between semitones (periodic). */
static void resize_profile(const double *p12, int S, double *out) {
    int R = S / 12;
    for (int i = 0; i < S; i++) {
        int k = i / R;
        double f = (double)(i % R) / R;
        out[i] = (1 - f) * p12[k] + f * p12[(k + 1) % 12];
    }
}

/* Pearson correlation of x with y rotated by `shift` (y index (i - shift) mod S). */
static double corr_shift(const double *x, const double *y, int S, int shift) {
    double mx = 0, my = 0;
    for (int i = 0; i < S; i++) { mx += x[i]; my += y[i]; }
    mx /= S; my /= S;
    double sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < S; i++) {
        double a = x[i] - mx, b = y[((i - shift) % S + S) % S] - my;
        sxy += a * b; sxx += a * a; syy += b * b;
    }
    return (sxx > 0 && syy > 0) ? sxy / sqrt(sxx * syy) : 0.0;
}

/* ---- from an HPCP ---------------------------------------------------------------------------- */

static int key_core(sao_ctx *ctx, const double *hpcp_in, int S, const kopts *o, sao_key_result *out) {
    out->tonic = -1;
    out->minor = 0;
    out->strength = out->second_strength = out->relative_strength = 0;
    out->hpcp_size = S;
    double pcp[36], maxv = 0;
    for (int i = 0; i < S; i++) {
        if (!isfinite(hpcp_in[i]) || hpcp_in[i] < 0)
            return sao_err(ctx, "key", "HPCP bin %d is %g: expected finite values >= 0 (NaN or Inf in the audio?)",
                           i, hpcp_in[i]);
        pcp[i] = hpcp_in[i];
        if (pcp[i] > maxv) maxv = pcp[i];
    }
    if (!(maxv > 0)) {                       /* silence: no key (tonic -1, strength 0) */
        for (int i = 0; i < S; i++) out->hpcp[i] = 0;
        return 0;
    }
    int argmax = 0;
    for (int i = 0; i < S; i++) {
        pcp[i] /= maxv;
        if (pcp[i] < o->threshold) pcp[i] = 0;
        if (pcp[i] > pcp[argmax]) argmax = i;
    }
    int R = S / 12;
    if (R > 1) {                             /* detuning correction: maximum onto a semitone bin */
        int off = argmax % R, shift = off <= R / 2.0 ? -off : R - off;   /* move by `shift` bins */
        if (shift) {
            double tmp[36];
            for (int i = 0; i < S; i++) tmp[((i + shift) % S + S) % S] = pcp[i];
            memcpy(pcp, tmp, (size_t)S * sizeof *pcp);
        }
    }
    for (int i = 0; i < S; i++) out->hpcp[i] = (float)pcp[i];

    double p12[2][12], prof[2][36];
    for (int sc = 0; sc < 2; sc++) {
        profile12(o, sc, p12[sc]);
        resize_profile(p12[sc], S, prof[sc]);
    }
    double best[2] = {-2, -2}, first = -2, second = -2;
    int arg[2] = {0, 0};
    for (int sc = 0; sc < 2; sc++)
        for (int s = 0; s < S; s++) {
            double r = corr_shift(pcp, prof[sc], S, s);
            if (r > best[sc]) { best[sc] = r; arg[sc] = s; }
            if (r > first) { second = first; first = r; }
            else if (r > second) second = r;
        }
    int minor = best[1] > best[0];           /* major wins ties */
    int s = arg[minor];
    int from_a = s * 12 / S;                 /* semitones above A (integer division, as Essentia) */
    out->tonic = (from_a + 9) % 12;          /* A = 9 when C = 0 */
    out->minor = minor;
    out->strength = best[minor];
    out->second_strength = best[!minor];
    out->relative_strength = first != 0 ? (first - second) / first : 0;
    return 0;
}

int sao_key_from_hpcp(sao_ctx *ctx, const float *hpcp, int size, const sao_key_opts *opts,
                      sao_key_result *out) {
    if (!hpcp || !out) return sao_err(ctx, "key", "hpcp and result must not be NULL");
    memset(out, 0, sizeof *out);
    out->tonic = -1;
    if (size != 12 && size != 24 && size != 36)
        return sao_err(ctx, "key", "HPCP size %d: expected 12, 24 or 36", size);
    kopts o;
    if (opts_resolve(ctx, opts, &o)) return -1;
    double h[36];
    for (int i = 0; i < size; i++) h[i] = hpcp[i];
    return key_core(ctx, h, size, &o, out);
}

int sao_key_estimate(sao_ctx *ctx, const sao_tensor *audio, int sample_rate, const sao_key_opts *opts,
                     sao_key_result *out) {
    if (!audio || !out) return sao_err(ctx, "key", "audio and result must not be NULL");
    memset(out, 0, sizeof *out);
    out->tonic = -1;
    kopts o;
    if (opts_resolve(ctx, opts, &o)) return -1;
    if (sample_rate < 8000)
        return sao_err(ctx, "key", "sample rate %d Hz: need at least 8000 (peaks up to 3500 Hz)", sample_rate);
    sao_hpcp_frames_cfg cfg;
    if (sao_hpcp_preset(ctx, o.hpcp_preset, &cfg)) return -1;
    if (o.frame_size > 0) cfg.frame_size = o.frame_size;
    if (o.hop_size > 0) cfg.hop_size = o.hop_size;
    sao_tensor *fr = sao_hpcp_frames(ctx, audio, sample_rate, &cfg);
    if (!fr) return -1;
    int64_t T = fr->shape[0];
    int S = (int)fr->shape[1];
    if (S > 36) { sao_tensor_free(fr); return sao_err(ctx, "key", "HPCP size %d: at most 36", S); }
    const float *d = sao_tensor_data(fr);
    double mean[36] = {0};
    for (int64_t t = 0; t < T; t++)
        for (int i = 0; i < S; i++) mean[i] += d[t * S + i];
    sao_tensor_free(fr);
    if (T < 1) return sao_err(ctx, "key", "signal is empty: no analysis frame");
    for (int i = 0; i < S; i++) mean[i] /= (double)T;
    int rc = key_core(ctx, mean, S, &o, out);
    out->frames = (int)T;
    return rc;
}

const char *sao_key_name(int tonic, int flats) {
    static const char *sharp[12] = {"C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"};
    static const char *essentia[12] = {"C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"};
    if (tonic < 0 || tonic > 11) return "";
    return flats ? essentia[tonic] : sharp[tonic];
}

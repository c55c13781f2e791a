/* audio_ops.c — channel, length and level operations on [C, S] audio, and track mixing.
 *
 * Small loops over planar float data: mono mix-down (mean), channel duplication, slicing,
 * zero padding, gains, peak normalisation, clipping and PCM quantisation (the round trip
 * libsndfile performs when writing integer PCM with clipping on), level statistics, silence
 * bounds and the N-track mixer (sum or mean, zero-padded to the longest track). Every function
 * returns a new tensor unless its name ends in '_' (in place). */
#include "audio_internal.h"
#include <math.h>
#include <string.h>

static double db_to_lin(double db) { return pow(10.0, db / 20.0); }
static double lin_to_db(double x) { return x > 0 ? 20.0 * log10(x) : -INFINITY; }

sao_tensor *sao_audio_to_mono(sao_ctx *ctx, const sao_tensor *audio) {
    return sao_audio_to_channels(ctx, audio, 1);
}

sao_tensor *sao_audio_to_channels(sao_ctx *ctx, const sao_tensor *audio, int channels) {
    const char *op = "audio.to_channels";
    if (channels < 1) return sao_err_null(ctx, op, "%d channels requested (need >= 1)", channels);
    sao_audio_in_t in;
    if (sao_audio_in(ctx, op, audio, &in)) return NULL;
    int64_t C = in.channels, S = in.samples;
    if (C != channels && C != 1 && channels != 1) {
        sao_audio_in_free(&in);
        return sao_err_null(ctx, op, "cannot map %lld channels to %d (only mono<->N and N->mono)",
                            (long long)C, channels);
    }
    float *y;
    sao_tensor *t = sao_audio_alloc(ctx, channels, S, &y);
    if (t) {
        if (C == channels) memcpy(y, in.x, (size_t)(C * S) * sizeof *y);
        else if (C == 1)
            for (int c = 0; c < channels; c++) memcpy(y + (int64_t)c * S, in.x, (size_t)S * sizeof *y);
        else {
            float inv = 1.0f / (float)C;
            for (int64_t s = 0; s < S; s++) {
                float acc = 0;
                for (int64_t c = 0; c < C; c++) acc += in.x[c * S + s];
                y[s] = acc * inv;
            }
        }
    }
    sao_audio_in_free(&in);
    return t;
}

/* Copies samples [src_start, src_start+n) of every channel to [dst_start, ...) of a zeroed
 * [C, out_len] tensor. */
static sao_tensor *reframe(sao_ctx *ctx, const char *op, const sao_tensor *audio, int64_t out_len,
                           int64_t src_start, int64_t dst_start, int64_t n) {
    if (out_len < 0) return sao_err_null(ctx, op, "negative length %lld", (long long)out_len);
    sao_audio_in_t in;
    if (sao_audio_in(ctx, op, audio, &in)) return NULL;
    int64_t shape[2] = {in.channels, out_len};
    sao_tensor *t = sao_tensor_new(ctx, SAO_F32, 2, shape);
    if (t && n > 0) {
        float *y = sao_tensor_data(t);
        for (int64_t c = 0; c < in.channels; c++)
            memcpy(y + c * out_len + dst_start, in.x + c * in.samples + src_start, (size_t)n * sizeof *y);
    }
    sao_audio_in_free(&in);
    return t;
}

static int64_t samples_of(const sao_tensor *a) { return a->ndim == 2 ? a->shape[1] : a->shape[0]; }

sao_tensor *sao_audio_slice(sao_ctx *ctx, const sao_tensor *audio, int64_t start, int64_t count) {
    if (!audio) return sao_err_null(ctx, "audio.slice", "audio is NULL");
    int64_t S = samples_of(audio);
    if (start < 0) start = 0;
    if (start > S) start = S;
    int64_t n = count < 0 || start + count > S ? S - start : count;
    return reframe(ctx, "audio.slice", audio, n, start, 0, n);
}

sao_tensor *sao_audio_pad(sao_ctx *ctx, const sao_tensor *audio, int64_t before, int64_t after) {
    if (!audio) return sao_err_null(ctx, "audio.pad", "audio is NULL");
    if (before < 0 || after < 0)
        return sao_err_null(ctx, "audio.pad", "padding must be >= 0 (got %lld, %lld)", (long long)before,
                            (long long)after);
    int64_t S = samples_of(audio);
    return reframe(ctx, "audio.pad", audio, before + S + after, 0, before, S);
}

sao_tensor *sao_audio_fit(sao_ctx *ctx, const sao_tensor *audio, int64_t samples) {
    if (!audio) return sao_err_null(ctx, "audio.fit", "audio is NULL");
    int64_t S = samples_of(audio);
    return reframe(ctx, "audio.fit", audio, samples, 0, 0, S < samples ? S : samples);
}

static sao_tensor *scaled(sao_ctx *ctx, const char *op, const sao_tensor *audio, double g) {
    sao_audio_in_t in;
    if (sao_audio_in(ctx, op, audio, &in)) return NULL;
    float *y;
    sao_tensor *t = sao_audio_alloc(ctx, in.channels, in.samples, &y);
    if (t) {
        float gf = (float)g;
        for (int64_t i = 0; i < in.channels * in.samples; i++) y[i] = in.x[i] * gf;
    }
    sao_audio_in_free(&in);
    return t;
}

sao_tensor *sao_audio_gain(sao_ctx *ctx, const sao_tensor *audio, double gain_db) {
    if (!isfinite(gain_db)) return sao_err_null(ctx, "audio.gain", "gain %g dB is not finite", gain_db);
    return scaled(ctx, "audio.gain", audio, db_to_lin(gain_db));
}

static double peak_of(const float *x, int64_t n) {
    float p = 0;
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > p) p = a;
    }
    return p;
}

sao_tensor *sao_audio_peak_normalize(sao_ctx *ctx, const sao_tensor *audio, double peak_dbfs,
                                     double *gain_db) {
    const char *op = "audio.peak_normalize";
    sao_audio_in_t in;
    if (sao_audio_in(ctx, op, audio, &in)) return NULL;
    double p = peak_of(in.x, in.channels * in.samples);
    sao_audio_in_free(&in);
    double g = p > 0 ? db_to_lin(peak_dbfs) / p : 1.0;
    if (gain_db) *gain_db = lin_to_db(g);
    return scaled(ctx, op, audio, g);
}

/* In-place ops need a contiguous f32 tensor on the CPU. */
static float *inplace_data(sao_ctx *ctx, const char *op, sao_tensor *t, int64_t *n) {
    if (!t) return sao_err_null(ctx, op, "audio is NULL");
    if (t->dtype != SAO_F32 || !sao_tensor_is_contiguous(t) || t->storage->device != SAO_CPU)
        return sao_err_null(ctx, op, "in-place needs a contiguous f32 CPU tensor (use :contiguous() or "
                            "the copying variant)");
    *n = sao_tensor_numel(t);
    return sao_tensor_data(t);
}

int64_t sao_audio_clip_(sao_ctx *ctx, sao_tensor *audio, double limit) {
    int64_t n;
    float *x = inplace_data(ctx, "audio.clip", audio, &n);
    if (!x) return -1;
    if (!(limit > 0)) return sao_err(ctx, "audio.clip", "limit %g must be > 0", limit);
    float lim = (float)limit;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        if (x[i] > lim) { x[i] = lim; k++; }
        else if (x[i] < -lim) { x[i] = -lim; k++; }
    }
    return k;
}

int sao_audio_quantize_(sao_ctx *ctx, sao_tensor *audio, int bits) {
    int64_t n;
    float *x = inplace_data(ctx, "audio.quantize", audio, &n);
    if (!x) return -1;
    if (bits < 8 || bits > 32) return sao_err(ctx, "audio.quantize", "bits %d outside 8..32", bits);
    /* libsndfile's WAV writer with SFC_SET_CLIPPING (measured): the sample goes through a
     * 32-bit integer whose low bits are then dropped: q = floor(clamp(rint(x 2^31)) / 2^(32-b)),
     * read back as q / 2^(b-1). (Its FLAC writer rounds differently by up to one LSB.) */
    double scale = ldexp(1.0, bits - 1);
    int via32 = bits < 32;
    double s32 = ldexp(1.0, 31), drop = ldexp(1.0, 32 - bits);
    for (int64_t i = 0; i < n; i++) {
        double v;
        if (via32) {
            v = rint((double)x[i] * s32);
            if (v > s32 - 1) v = s32 - 1;
            if (v < -s32) v = -s32;
            v = floor(v / drop);
        } else {
            v = rint((double)x[i] * scale);
            if (v > scale - 1) v = scale - 1;
            if (v < -scale) v = -scale;
        }
        x[i] = (float)(v / scale);
    }
    return 0;
}

int sao_audio_stats_compute(sao_ctx *ctx, const sao_tensor *audio, sao_audio_stats *out) {
    sao_audio_in_t in;
    if (sao_audio_in(ctx, "audio.stats", audio, &in)) return -1;
    int64_t n = in.channels * in.samples;
    /* 8 independent lanes (vectorisable; a single double accumulator is latency bound), summed
     * in a fixed order at the end */
    enum { LANES = 8 };
    double ssl[LANES] = {0}, suml[LANES] = {0};
    float pl[LANES] = {0};
    int64_t cl[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float v = in.x[i + j], a = fabsf(v);
            ssl[j] += (double)v * v;
            suml[j] += v;
            pl[j] = a > pl[j] ? a : pl[j];
            cl[j] += a >= 1.0f;
        }
    for (int j = 0; i < n; i++, j++) {
        float v = in.x[i], a = fabsf(v);
        ssl[j] += (double)v * v;
        suml[j] += v;
        pl[j] = a > pl[j] ? a : pl[j];
        cl[j] += a >= 1.0f;
    }
    double ss = 0, sum = 0;
    float p = 0;
    int64_t clipped = 0;
    for (int j = 0; j < LANES; j++) {
        ss += ssl[j];
        sum += suml[j];
        p = pl[j] > p ? pl[j] : p;
        clipped += cl[j];
    }
    sao_audio_in_free(&in);
    memset(out, 0, sizeof *out);
    out->peak = p;
    out->rms = n ? sqrt(ss / (double)n) : 0;
    out->dc = n ? sum / (double)n : 0;
    out->peak_db = lin_to_db(out->peak);
    out->rms_db = lin_to_db(out->rms);
    out->crest_db = out->rms > 0 ? out->peak_db - out->rms_db : 0;
    out->clipped = clipped;
    return 0;
}

int sao_audio_silence_bounds(sao_ctx *ctx, const sao_tensor *audio, int sample_rate,
                             double threshold_db, double chunk_seconds, int64_t *start, int64_t *end) {
    const char *op = "audio.silence_bounds";
    if (sample_rate < 1 || !(chunk_seconds > 0))
        return sao_err(ctx, op, "sample rate %d and chunk %g s must be positive", sample_rate, chunk_seconds);
    sao_audio_in_t in;
    if (sao_audio_in(ctx, op, audio, &in)) return -1;
    int64_t S = in.samples, chunk = (int64_t)llround(chunk_seconds * sample_rate);
    if (chunk < 1) chunk = 1;
    double thr = db_to_lin(threshold_db);
    thr *= thr;                                   /* compare mean squares */
    int64_t first = -1, last = -1;
    for (int64_t b = 0; b < S; b += chunk) {
        int64_t k = S - b < chunk ? S - b : chunk;
        int loud = 0;
        for (int64_t c = 0; c < in.channels && !loud; c++) {
            const float *x = in.x + c * S + b;
            double ss = 0;
            for (int64_t i = 0; i < k; i++) ss += (double)x[i] * x[i];
            loud = ss / (double)k > thr;
        }
        if (loud) {
            if (first < 0) first = b;
            last = b + k;
        }
    }
    sao_audio_in_free(&in);
    *start = first < 0 ? 0 : first;
    *end = first < 0 ? 0 : last;
    return 0;
}

sao_tensor *sao_audio_mix(sao_ctx *ctx, sao_tensor *const *tracks, int n, const double *gains_db,
                          int mode) {
    const char *op = "audio.mix";
    if (n < 1 || !tracks) return sao_err_null(ctx, op, "no tracks to mix");
    if (mode != SAO_MIX_SUM && mode != SAO_MIX_MEAN)
        return sao_err_null(ctx, op, "unknown mode %d (0 sum, 1 mean)", mode);
    int64_t C = 1, S = 0;
    for (int i = 0; i < n; i++) {
        const sao_tensor *t = tracks[i];
        if (!t || (t->ndim != 1 && t->ndim != 2))
            return sao_err_null(ctx, op, "track %d is not [C, S] audio", i + 1);
        int64_t c = t->ndim == 2 ? t->shape[0] : 1, s = samples_of(t);
        if (c > C) C = c;
        if (s > S) S = s;
    }
    for (int i = 0; i < n; i++) {
        int64_t c = tracks[i]->ndim == 2 ? tracks[i]->shape[0] : 1;
        if (c != 1 && c != C)
            return sao_err_null(ctx, op, "track %d has %lld channels, others %lld (convert with "
                                "to_channels first)", i + 1, (long long)c, (long long)C);
    }
    int64_t shape[2] = {C, S};
    sao_tensor *out = sao_tensor_new(ctx, SAO_F32, 2, shape);
    if (!out) return NULL;
    float *y = sao_tensor_data(out);
    for (int i = 0; i < n; i++) {
        sao_audio_in_t in;
        if (sao_audio_in(ctx, op, tracks[i], &in)) { sao_tensor_free(out); return NULL; }
        double g = gains_db ? db_to_lin(gains_db[i]) : 1.0;
        if (mode == SAO_MIX_MEAN) g /= n;
        float gf = (float)g;
        for (int64_t c = 0; c < C; c++) {
            const float *x = in.x + (in.channels == 1 ? 0 : c) * in.samples;
            float *d = y + c * S;
            for (int64_t s = 0; s < in.samples; s++) d[s] += gf * x[s];
        }
        sao_audio_in_free(&in);
    }
    return out;
}

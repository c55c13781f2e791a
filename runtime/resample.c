/* resample.c — sample-rate conversion with libsamplerate.
 *
 * Each channel runs through its own SRC state (channels in parallel with OpenMP), the whole
 * signal in one pass with end_of_input set so the converter flushes its tail. The result is
 * cut or zero-padded to exactly ceil(S * sr_out / sr_in) samples, the length librosa.resample
 * produces, so that lengths are predictable across converters. libsamplerate's converters are
 * time-aligned (no group delay to remove). */
#include "audio_internal.h"
#include <math.h>
#include <samplerate.h>
#include <stdlib.h>
#include <string.h>

static int converter_of(int quality) {
    switch (quality) {
    case SAO_SRC_SINC_BEST: return SRC_SINC_BEST_QUALITY;
    case SAO_SRC_SINC_MEDIUM: return SRC_SINC_MEDIUM_QUALITY;
    case SAO_SRC_SINC_FASTEST: return SRC_SINC_FASTEST;
    case SAO_SRC_ZERO_ORDER_HOLD: return SRC_ZERO_ORDER_HOLD;
    case SAO_SRC_LINEAR: return SRC_LINEAR;
    default: return -1;
    }
}

/* Converts one channel; returns 0 or a libsamplerate error code. */
static int convert(int conv, const float *x, int64_t n, double ratio, float *y, int64_t m) {
    int err = 0;
    SRC_STATE *st = src_new(conv, 1, &err);
    if (!st) return err ? err : 1;
    /* Room for the converter's whole output: a little beyond m, then cut to m. */
    int64_t cap = m + 64;
    float *buf = malloc((size_t)cap * sizeof *buf);
    if (!buf) { src_delete(st); return 1; }
    int64_t in_done = 0, out_done = 0;
    for (;;) {
        SRC_DATA d;
        memset(&d, 0, sizeof d);
        int64_t in_left = n - in_done, room = cap - out_done;
        const int64_t maxc = 1 << 20;
        d.data_in = x + in_done;
        d.input_frames = in_left < maxc ? in_left : maxc;
        d.data_out = buf + out_done;
        d.output_frames = room < maxc ? room : maxc;
        d.end_of_input = d.input_frames == in_left;
        d.src_ratio = ratio;
        if (d.output_frames <= 0) break;
        err = src_process(st, &d);
        if (err) break;
        in_done += d.input_frames_used;
        out_done += d.output_frames_gen;
        if (d.end_of_input && d.output_frames_gen == 0) break;
    }
    src_delete(st);
    if (!err) {
        int64_t k = out_done < m ? out_done : m;
        memcpy(y, buf, (size_t)k * sizeof *y);
        if (k < m) memset(y + k, 0, (size_t)(m - k) * sizeof *y);
    }
    free(buf);
    return err;
}

sao_tensor *sao_audio_resample(sao_ctx *ctx, const sao_tensor *audio, int sr_in, int sr_out,
                               int quality) {
    const char *op = "audio.resample";
    if (sr_in < 1 || sr_out < 1)
        return sao_err_null(ctx, op, "sample rates must be positive (got %d -> %d)", sr_in, sr_out);
    int conv = converter_of(quality);
    if (conv < 0)
        return sao_err_null(ctx, op, "unknown quality %d (0 sinc best .. 4 linear)", quality);
    double ratio = (double)sr_out / sr_in;
    if (ratio > 256.0 || ratio < 1.0 / 256.0)
        return sao_err_null(ctx, op, "ratio %d -> %d exceeds libsamplerate's 256x range", sr_in, sr_out);
    sao_audio_in_t in;
    if (sao_audio_in(ctx, op, audio, &in)) return NULL;
    int64_t S = in.samples, M = (int64_t)ceil((double)S * sr_out / sr_in - 1e-9);
    if (sr_in == sr_out) M = S;
    float *y;
    sao_tensor *t = sao_audio_alloc(ctx, in.channels, M, &y);
    if (!t) { sao_audio_in_free(&in); return NULL; }
    if (sr_in == sr_out || S == 0) {
        memcpy(y, in.x, (size_t)(in.channels * M) * sizeof *y);
        sao_audio_in_free(&in);
        return t;
    }
    int err = 0;
    sao_threads_apply(ctx);
#pragma omp parallel for schedule(static) if (in.channels > 1)
    for (int64_t c = 0; c < in.channels; c++) {
        int e = convert(conv, in.x + c * S, S, ratio, y + c * M, M);
        if (e) {
#pragma omp critical
            err = e;
        }
    }
    sao_audio_in_free(&in);
    if (err) {
        sao_tensor_free(t);
        return sao_err_null(ctx, op, "libsamplerate: %s", err == 1 ? "out of memory" : src_strerror(err));
    }
    return t;
}

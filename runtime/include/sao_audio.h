/* sao_audio.h — audio I/O, channel/length operations, mixing, resampling and loudness.
 * Part of the FFI contract (read after sao.h; '#' lines are dropped, so plain declarations only).
 *
 * Audio is an f32 tensor [C, S]: C channels, S samples, planar (channel-first), as in PyTorch
 * and stable-audio-tools. Wherever audio is read, a 1-D tensor [S] is accepted as mono, other
 * float dtypes are converted and strided views are copied; results are new contiguous f32
 * [C, S] tensors owned by the caller. Sample values are full scale ±1.0.
 * Every call returns 0 / a pointer on success, -1 / NULL on error with the message in ctx.
 * Definitions and parameters: docs/analysis.md. */
#ifndef SAO_AUDIO_H
#define SAO_AUDIO_H
#include "sao.h"
#ifdef __cplusplus
extern "C" {
#endif

/* ---- files (libsndfile) -------------------------------------------------------------------
 * Reads WAV, FLAC, OGG/Vorbis, OGG/Opus, MP3 and everything else libsndfile knows, any rate and
 * channel count, as float32 (integer formats scaled to ±1). Missing, unreadable, corrupt and
 * truncated files are errors that name the file. */
typedef struct sao_audio_info {
    int64_t frames;                 /* samples per channel (S) */
    int sample_rate;
    int channels;
    double duration;                /* seconds = frames / sample_rate */
    int sf_format;                  /* libsndfile format code (major | subtype) */
    char format[16];                /* "wav", "flac", "ogg", "mp3", "aiff", ... */
    char subtype[16];               /* "pcm16", "pcm24", "pcm32", "float", "double", "vorbis", ... */
} sao_audio_info;

int sao_audio_info_read(sao_ctx *ctx, const char *path, sao_audio_info *out);
/* Whole file -> f32 [C, S]; *sample_rate receives the file's rate (may be NULL). */
sao_tensor *sao_audio_load(sao_ctx *ctx, const char *path, int *sample_rate);
/* Frames [start, start+count) (count < 0: to the end; clamped to the file) -> f32 [C, n]. */
sao_tensor *sao_audio_load_range(sao_ctx *ctx, const char *path, int64_t start, int64_t count,
                                 int *sample_rate);
/* Writes atomically (PATH.tmp.PID, then rename). format: "wav" | "flac" | "ogg" (vorbis) |
 * "mp3" (lossy; for tests and previews) | NULL (from the extension, default wav). subtype: "float" | "pcm16" | "pcm24" | "pcm32" |
 * NULL (wav: float, flac: pcm24). Integer subtypes clip at ±1 (no wrap-around). */
int sao_audio_save(sao_ctx *ctx, const char *path, const sao_tensor *audio, int sample_rate,
                   const char *format, const char *subtype);

/* ---- channels, length, level (new tensors; the input is not modified) --------------------- */
sao_tensor *sao_audio_to_mono(sao_ctx *ctx, const sao_tensor *audio);          /* mean -> [1, S] */
/* -> [channels, S]: identity copy, mono duplicated, or mean when channels == 1; other
 * combinations are errors. */
sao_tensor *sao_audio_to_channels(sao_ctx *ctx, const sao_tensor *audio, int channels);
/* Samples [start, start+count) clamped to the signal (count < 0: to the end). */
sao_tensor *sao_audio_slice(sao_ctx *ctx, const sao_tensor *audio, int64_t start, int64_t count);
/* Zero padding: `before` and `after` samples. */
sao_tensor *sao_audio_pad(sao_ctx *ctx, const sao_tensor *audio, int64_t before, int64_t after);
/* Pads with zeros at the end or cuts to exactly `samples`. */
sao_tensor *sao_audio_fit(sao_ctx *ctx, const sao_tensor *audio, int64_t samples);
/* x * 10^(gain_db/20). */
sao_tensor *sao_audio_gain(sao_ctx *ctx, const sao_tensor *audio, double gain_db);
/* Scales so that max |x| = 10^(peak_dbfs/20); silence is returned unchanged (gain 0 dB).
 * *gain_db (may be NULL) receives the applied gain. */
sao_tensor *sao_audio_peak_normalize(sao_ctx *ctx, const sao_tensor *audio, double peak_dbfs,
                                     double *gain_db);
/* Hard clip to [-limit, limit] in place (f32 contiguous tensors only); returns the number of
 * samples that were clipped, or -1. */
int64_t sao_audio_clip_(sao_ctx *ctx, sao_tensor *audio, double limit);
/* Simulates writing integer PCM WAV with sao_audio_save and reading it back, in place: clip to
 * the format's range and quantise to `bits` (8..32) exactly as libsndfile's WAV writer does
 * (round at 32 bits, drop the low bits). */
int sao_audio_quantize_(sao_ctx *ctx, sao_tensor *audio, int bits);

/* Level statistics over all channels and samples. */
typedef struct sao_audio_stats {
    double peak;                    /* max |x| (linear) */
    double rms;                     /* sqrt(mean x^2) over all C*S values */
    double peak_db, rms_db;         /* 20 log10; -inf for silence */
    double crest_db;                /* peak_db - rms_db; 0 for silence */
    double dc;                      /* mean x */
    int64_t clipped;                /* samples with |x| >= 1 */
} sao_audio_stats;
int sao_audio_stats_compute(sao_ctx *ctx, const sao_tensor *audio, sao_audio_stats *out);

/* Leading/trailing silence: the first and one-past-last sample of the region whose chunks
 * (chunk_seconds long, e.g. 0.01) have RMS above threshold_db (e.g. -50 dBFS, any channel).
 * All-silent audio gives start = end = 0. */
int sao_audio_silence_bounds(sao_ctx *ctx, const sao_tensor *audio, int sample_rate,
                             double threshold_db, double chunk_seconds,
                             int64_t *start, int64_t *end);

/* Mix n tracks: each zero-padded to the longest; channel count = the largest (mono tracks are
 * duplicated; other mismatches are errors); gains_db (may be NULL) per track; mode
 * SAO_MIX_SUM (Σ) or SAO_MIX_MEAN (Σ / n). */
typedef enum { SAO_MIX_SUM = 0, SAO_MIX_MEAN = 1 } sao_mix_mode;
sao_tensor *sao_audio_mix(sao_ctx *ctx, sao_tensor *const *tracks, int n, const double *gains_db,
                          int mode);

/* ---- resampling (libsamplerate) ------------------------------------------------------------
 * quality: SRC converter: 0 sinc best (default), 1 sinc medium, 2 sinc fastest, 3 zero-order
 * hold, 4 linear. The output has exactly ceil(S * sr_out / sr_in) samples per channel (as
 * librosa), with the filter delay compensated. sr_in == sr_out returns a copy. */
typedef enum {
    SAO_SRC_SINC_BEST = 0, SAO_SRC_SINC_MEDIUM = 1, SAO_SRC_SINC_FASTEST = 2,
    SAO_SRC_ZERO_ORDER_HOLD = 3, SAO_SRC_LINEAR = 4
} sao_src_quality;
sao_tensor *sao_audio_resample(sao_ctx *ctx, const sao_tensor *audio, int sr_in, int sr_out,
                               int quality);

/* ---- loudness -------------------------------------------------------------------------------
 * Integrated loudness (ITU-R BS.1770-4, 400 ms blocks every 100 ms, absolute gate -70 LUFS,
 * relative gate -10 LU), in LUFS. Channel weights 1, 1, 1, 1.41, 1.41 for channels 0..4 (L R C
 * Ls Rs); >5 channels: libebur128's default map.
 *   SAO_LOUDNESS_EBUR128:    libebur128 (ITU-exact pre-filter re-derived for every rate).
 *   SAO_LOUDNESS_PYLOUDNORM: pyloudnorm 0.1.x Meter() semantics (RBJ-cookbook K-weighting
 *                            biquads, its block count and boundaries) — matches pyloudnorm.
 *   SAO_LOUDNESS_BS1770:     sao's one-pass meter with libebur128's filter and blocks (the same
 *                            numbers to ~1e-6 LU, several times faster); at most 5 channels.
 * Silence, or audio shorter than one 400 ms block, gives -INFINITY (not an error). */
typedef enum { SAO_LOUDNESS_EBUR128 = 0, SAO_LOUDNESS_PYLOUDNORM = 1, SAO_LOUDNESS_BS1770 = 2 } sao_loudness_mode;
int sao_loudness_integrated(sao_ctx *ctx, const sao_tensor *audio, int sample_rate, int mode,
                            double *lufs);
/* EBU R128 loudness range (LU) and maximum true peak (linear, 4x oversampling) via
 * libebur128; either output may be NULL. */
int sao_loudness_range_true_peak(sao_ctx *ctx, const sao_tensor *audio, int sample_rate,
                                 double *lra, double *true_peak);

/* Loudness normalisation: gain = target - measured (dB). The peak guard acts when the
 * gained signal's sample peak would exceed ceiling_db (dBFS):
 *   SAO_PEAK_REPORT: apply the full gain, only report (would_clip = 1);
 *   SAO_PEAK_REDUCE: lower the gain so the peak equals the ceiling (loudness below target);
 *   SAO_PEAK_LIMIT:  apply the full gain, then a look-ahead sample-peak limiter (5 ms attack,
 *                    50 ms release, channels linked) holds the peak at the ceiling.
 * Silence (-inf LUFS) is returned unchanged with gain 0 and silent = 1. */
typedef enum { SAO_PEAK_REPORT = 0, SAO_PEAK_REDUCE = 1, SAO_PEAK_LIMIT = 2 } sao_peak_guard;
typedef struct sao_normalize_report {
    double lufs_before, lufs_after; /* measured with the same mode */
    double gain_db;                 /* gain applied (before any limiting) */
    double peak_before, peak_after; /* sample peaks, linear */
    double limiter_max_gr_db;       /* deepest limiter gain reduction (dB, >= 0) */
    int would_clip;                 /* the full gain would put the peak above the ceiling */
    int clipped;                    /* the result has a sample with |x| > 1 */
    int limited;                    /* the limiter changed the signal */
    int silent;                     /* input loudness was -inf; nothing done */
} sao_normalize_report;
sao_tensor *sao_loudness_normalize(sao_ctx *ctx, const sao_tensor *audio, int sample_rate,
                                   double target_lufs, int mode, int peak_guard, double ceiling_db,
                                   sao_normalize_report *report);
/* The limiter alone: keeps |x| <= 10^(ceiling_db/20); *max_gr_db (may be NULL) receives the
 * deepest gain reduction. */
sao_tensor *sao_audio_limit(sao_ctx *ctx, const sao_tensor *audio, int sample_rate,
                            double ceiling_db, double *max_gr_db);

#ifdef __cplusplus
}
#endif
#endif

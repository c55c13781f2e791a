/* sao_analysis.h — music analysis: global tempo (BPM), local tempo, beats; key and scale.
 * Part of the FFI contract (read after sao.h with '#' lines dropped): plain declarations only.
 *
 * Audio is an f32 tensor [C, S] or [S] as everywhere in sao (sao_audio.h); channels are mixed
 * to mono by their mean. Options structs are read field by field with 0 meaning "the
 * default", so a zeroed struct (ffi.new in Lua, `= {0}` in C) gives the documented defaults.
 * Every call returns 0 / -1 with the message in ctx. Definitions, parameters and measured
 * accuracies: docs/analysis.md, sections "Tempo" and "Key". */
#ifndef SAO_ANALYSIS_H
#define SAO_ANALYSIS_H
#include "sao.h"
#ifdef __cplusplus
extern "C" {
#endif

/* ---- tempo ---------------------------------------------------------------------------------
 * Onset-strength envelope -> autocorrelation of the envelope -> comb salience over tempo
 * candidates -> log-normal prior (the pick; the best other octave is reported as alt_bpm) ->
 * sub-BPM refinement (parabolic) ->
 * optional local tempo curve and dynamic-programming beat tracker. */
typedef struct sao_tempo_opts {
    double min_bpm, max_bpm;   /* search range; defaults 40, 250 */
    double prior_bpm;          /* centre of the log-normal tempo prior; default 120 */
    double prior_octaves;      /* its standard deviation in octaves; default 1.0; < 0: flat prior */
    double max_lag_s;          /* longest autocorrelation lag used by the comb; default 4 s */
    double window_s;           /* local tempo window; default 8 s */
    double hop_s;              /* local tempo hop; default 1 s */
    double tightness;          /* beat tracker: penalty weight of tempo deviations; default 100 */
    int local;                 /* 1: compute the local tempo curve */
    int beats;                 /* 1: run the beat tracker */
} sao_tempo_opts;

typedef struct sao_tempo_result {
    double bpm;                /* global tempo; 0 when no periodicity was found (silence) */
    double confidence;         /* [0, 1]: periodicity of the onset envelope at the beat period
                                  (docs/analysis.md); ~1 for a click track, ~0 for noise */
    double salience;           /* comb salience at bpm before the prior (a correlation, <= 1) */
    double alt_bpm;            /* the strongest candidate at another metrical level (x2, x1/2, x3,
                                  x1/3, x3/2, x2/3), 0 when none */
    double alt_salience;
    double frame_rate;         /* onset frames per second used */
    sao_tensor *curve;         /* local tempo, f32 [W, 3]: (centre time s, bpm, salience);
                                  NULL unless opts->local; owned by the caller */
    sao_tensor *beats;         /* beat times in seconds, f32 [N]; NULL unless opts->beats */
} sao_tempo_result;

/* Tempo of audio (any rate from 4 kHz; analysed as a mono mix at its own rate, onset hop the power
 * of two nearest to 11.6 ms: docs/analysis.md, "Tempo"). */
int sao_tempo_estimate(sao_ctx *ctx, const sao_tensor *audio, int sample_rate,
                       const sao_tempo_opts *opts, sao_tempo_result *out);
/* Tempo from an onset-strength envelope (f32/f64 [T]) sampled at frame_rate Hz; frame t is
 * at time t0 + t / frame_rate seconds. */
int sao_tempo_from_onset(sao_ctx *ctx, const sao_tensor *onset, double frame_rate, double t0,
                         const sao_tempo_opts *opts, sao_tempo_result *out);

/* ---- key / scale ---------------------------------------------------------------------------
 * Essentia-style: spectral peaks -> (optional) spectral whitening -> HPCP -> mean over frames
 * -> Pearson correlation with rotated major/minor key profiles (DSP_SPEC §3.6). */
typedef enum {
    SAO_KEY_PRESET_BGATE = 0,  /* Essentia KeyExtractor defaults: 4096/4096 hann, whitening,
                                  HPCP 12, 4 harmonics, profile bgate */
    SAO_KEY_PRESET_EDMA = 1    /* tutorial pipeline: 4096/2048 blackmanharris62, HPCP 36
                                  unitMax, profile edma with polyphony and three chords */
} sao_key_preset;

typedef enum {
    SAO_KEY_PROFILE_PRESET = 0, /* the preset's profile */
    SAO_KEY_PROFILE_BGATE, SAO_KEY_PROFILE_EDMA, SAO_KEY_PROFILE_KRUMHANSL,
    SAO_KEY_PROFILE_TEMPERLEY, SAO_KEY_PROFILE_COUNT
} sao_key_profile;

typedef struct sao_key_opts {
    int preset;                /* sao_key_preset */
    int profile;               /* sao_key_profile; 0: the preset's */
    int frame_size, hop_size;  /* samples; 0: the preset's */
    int polyphony;             /* chord-based profiles: 0 the preset's, 1 on, -1 off */
    int three_chords;          /* only I/IV/V (i/iv/V) chords: 0 the preset's, 1 on, -1 off */
    double pcp_threshold;      /* max-normalised HPCP bins below it are zeroed; 0: 0.2, < 0: none */
} sao_key_opts;

typedef struct sao_key_result {
    int tonic;                 /* pitch class 0 = C, 1 = C#, ... 11 = B; -1 when undefined */
    int minor;                 /* 0 major, 1 minor */
    double strength;           /* Pearson r of the winning profile, [-1, 1]: the confidence */
    double second_strength;    /* best r of the other scale */
    double relative_strength;  /* (best - second best over all 2*S candidates) / best */
    int hpcp_size;             /* 12, 24 or 36 */
    float hpcp[36];            /* the averaged, max-normalised HPCP (bin 0 = A, as Essentia) */
    int frames;                /* analysis frames used */
} sao_key_result;

/* Key of audio at its own rate (no resampling; frame sizes in samples as Essentia). */
int sao_key_estimate(sao_ctx *ctx, const sao_tensor *audio, int sample_rate,
                     const sao_key_opts *opts, sao_key_result *out);
/* Key from an averaged HPCP of `size` (12, 24 or 36) bins, bin 0 = A (440 Hz reference). */
int sao_key_from_hpcp(sao_ctx *ctx, const float *hpcp, int size, const sao_key_opts *opts,
                      sao_key_result *out);
/* Pitch-class name with sharps: "C", "C#", ... "B" (as SAO prompts write keys); "" if out of
 * range. flats = 1 gives Essentia's names ("Bb", "Eb", "Ab" but "C#", "F#"). */
const char *sao_key_name(int tonic, int flats);

#ifdef __cplusplus
}
#endif
#endif

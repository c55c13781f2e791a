/* sao_dsp.h — spectral front end and audio features: windows, STFT/ISTFT (FFTW), mel and
 * chroma filterbanks, spectral peaks / whitening / HPCP (the key estimator's front end),
 * onset strength and onset detection (the tempo estimator's front end), HPSS and the
 * evaluation features. Part of the FFI contract (read after sao.h and sao_audio.h; plain
 * declarations only). Definitions, defaults and the librosa/Essentia correspondences are in
 * docs/analysis.md.
 *
 * Layouts
 *   - Audio: f32 [C, S] (or [S] = mono), as in sao_audio.h.
 *   - Tensor spectrograms follow librosa: [C, F, T] with F = n_fft/2 + 1 frequency bins and
 *     T frames; complex STFTs are [C, F, T, 2] (real, imaginary).
 *   - Raw (pointer) functions work on one channel and are FRAME-MAJOR: out[t*F + k] (complex:
 *     out[(t*F + k)*2 + {0,1}]); they are for C callers (tempo.c, key.c) that process frame by
 *     frame without tensor overhead.
 *   - Frame t is centred at sample t*hop when center = 1 (time t*hop/sr seconds).
 * Stability: these signatures are used by runtime/tempo.c and runtime/key.c; extend the
 * configuration structs only at their end. */
#ifndef SAO_DSP_H
#define SAO_DSP_H
#include "sao.h"
#ifdef __cplusplus
extern "C" {
#endif

/* ---- windows -----------------------------------------------------------------------------------
 * periodic = 1: DFT-even ("fftbins=True" in scipy/librosa; denominator n); 0: symmetric
 * (denominator n-1; Essentia's windows are symmetric). Coefficients in docs/analysis.md. */
typedef enum {
    SAO_WIN_RECT = 0, SAO_WIN_HANN = 1, SAO_WIN_HAMMING = 2, SAO_WIN_BLACKMAN = 3,
    SAO_WIN_BLACKMANHARRIS = 4,     /* 4-term, -92 dB (scipy 'blackmanharris', Essentia bh92) */
    SAO_WIN_BLACKMANHARRIS62 = 5,   /* 3-term, -62 dB (Essentia 'blackmanharris62') */
    SAO_WIN_BLACKMANHARRIS70 = 6,   /* 3-term, -70 dB */
    SAO_WIN_BLACKMANHARRIS74 = 7,   /* 4-term, -74 dB */
    SAO_WIN_TRIANGULAR = 8,
    SAO_WIN_COUNT = 9
} sao_window_type;
int sao_window_fill(sao_ctx *ctx, int type, int n, int periodic, float *out);
sao_tensor *sao_window(sao_ctx *ctx, int type, int n, int periodic);   /* f32 [n] */
/* "rect", "hann", "hamming", "blackman", "blackmanharris", "blackmanharris62", ... -> type,
 * or -1 (error in ctx) when unknown. */
int sao_window_from_name(sao_ctx *ctx, const char *name);

/* ---- STFT configuration ------------------------------------------------------------------------ */
typedef enum { SAO_PAD_CONSTANT = 0, SAO_PAD_REFLECT = 1, SAO_PAD_EDGE = 2 } sao_pad_mode;
typedef struct sao_stft_cfg {
    int n_fft;          /* FFT size (librosa: 2048) */
    int hop;            /* hop length in samples (n_fft / 4) */
    int win_length;     /* window length <= n_fft, zero-padded to n_fft, centred (n_fft) */
    int window;         /* sao_window_type (hann) */
    int periodic;       /* 1: periodic window (librosa), 0: symmetric */
    int center;         /* 1: pad n_fft/2 on both sides so frame t is centred at t*hop (1) */
    int pad_mode;       /* padding for center (SAO_PAD_CONSTANT = zeros, librosa >= 0.10) */
} sao_stft_cfg;
/* Fills the librosa defaults: 2048, 512, 2048, hann, periodic, center, constant padding. */
int sao_stft_cfg_default(sao_ctx *ctx, sao_stft_cfg *cfg);

/* ---- STFT plan (raw, one channel, frame-major) -------------------------------------------------
 * A plan owns the window and an FFTW plan (created under a global lock, since FFTW's planner is
 * not thread-safe; executions are). One plan may be used from several threads at once. */
typedef struct sao_stft_plan sao_stft_plan;
sao_stft_plan *sao_stft_plan_new(sao_ctx *ctx, const sao_stft_cfg *cfg);
void sao_stft_plan_free(sao_stft_plan *plan);
int sao_stft_plan_bins(const sao_stft_plan *plan);                       /* F = n_fft/2 + 1 */
int64_t sao_stft_plan_frames(const sao_stft_plan *plan, int64_t samples); /* T (0: too short) */
const float *sao_stft_plan_window(const sao_stft_plan *plan);             /* n_fft values */
/* x: n samples -> out [T, F, 2] complex, unnormalised (numpy.fft.rfft of windowed frames). */
int sao_stft_plan_complex(sao_ctx *ctx, const sao_stft_plan *plan, const float *x, int64_t n,
                          float *out);
/* x -> out [T, F] = |X|^power (power 1: magnitude, 2: power). */
int sao_stft_plan_power(sao_ctx *ctx, const sao_stft_plan *plan, const float *x, int64_t n,
                        double power, float *out);
/* Inverse of sao_stft_plan_complex (librosa.istft: window, overlap-add, divide by the summed
 * squared window): spec [T, F, 2] -> y[length]. */
int sao_stft_plan_inverse(sao_ctx *ctx, const sao_stft_plan *plan, const float *spec, int64_t frames,
                          float *y, int64_t length);

/* ---- STFT on tensors ----------------------------------------------------------------------------
 * cfg may be NULL (librosa defaults). */
sao_tensor *sao_stft(sao_ctx *ctx, const sao_tensor *audio, const sao_stft_cfg *cfg); /* [C,F,T,2] */
/* [C, F, T, 2] or [F, T, 2] -> [C, S]; length < 0: n_fft + hop*(T-1) - 2*(n_fft/2) when centred. */
sao_tensor *sao_istft(sao_ctx *ctx, const sao_tensor *spec, const sao_stft_cfg *cfg, int64_t length);
sao_tensor *sao_spectrogram(sao_ctx *ctx, const sao_tensor *audio, const sao_stft_cfg *cfg,
                            double power);                                    /* [C, F, T] */

/* ---- mel ------------------------------------------------------------------------------------------
 * librosa.filters.mel: n_mels triangles between fmin and fmax (fmax <= 0: sr/2) on the Slaney
 * mel scale (htk = 0; linear below 1 kHz, logarithmic above) or HTK (htk = 1); norm_slaney = 1
 * scales each triangle to unit area in Hz (2 / (f[m+2] - f[m])). */
sao_tensor *sao_mel_filterbank(sao_ctx *ctx, int sr, int n_fft, int n_mels, double fmin, double fmax,
                               int htk, int norm_slaney);                     /* f32 [n_mels, F] */
/* librosa.feature.melspectrogram: filterbank (Slaney, norm slaney) x |STFT|^power. */
sao_tensor *sao_melspectrogram(sao_ctx *ctx, const sao_tensor *audio, int sr, const sao_stft_cfg *cfg,
                               int n_mels, double fmin, double fmax, double power); /* [C, n_mels, T] */
/* librosa.power_to_db in place: 10 log10(max(amin, S)) - 10 log10(max(amin, ref)), then floored
 * at (max - top_db) over the whole tensor when top_db > 0. f32 contiguous tensors. */
int sao_power_to_db_(sao_ctx *ctx, sao_tensor *S, double ref, double amin, double top_db);
/* Sparse form of a mel filterbank for raw callers: filter m covers bins [start[m], start[m] +
 * len[m]) with weights w[off[m] .. off[m]+len[m]). Arrays sized by the caller: start/len/off
 * n_mels, w F*n_mels (upper bound). */
int sao_mel_sparse(sao_ctx *ctx, int sr, int n_fft, int n_mels, double fmin, double fmax, int htk,
                   int norm_slaney, int *start, int *len, int *off, float *w);

/* ---- chroma -------------------------------------------------------------------------------------
 * librosa.filters.chroma (Gaussian bumps per pitch class, octave weighting centred at ctroct
 * octaves above C0-ish with width octwidth (<= 0: none), columns L2-normalised, base_c = 1
 * starts at C). tuning in fractions of a bin. */
sao_tensor *sao_chroma_filterbank(sao_ctx *ctx, int sr, int n_fft, int n_chroma, double tuning,
                                  double ctroct, double octwidth, int base_c);  /* [n_chroma, F] */
/* librosa.feature.chroma_stft with a given tuning (librosa estimates it when not given; we do
 * not): power spectrogram, filterbank, each frame divided by its max. -> [C, n_chroma, T] */
sao_tensor *sao_chroma_stft(sao_ctx *ctx, const sao_tensor *audio, int sr, const sao_stft_cfg *cfg,
                            int n_chroma, double tuning);

/* ---- spectral peaks, whitening, HPCP (Essentia-style; raw, one frame) ----------------------------
 * mag: magnitude spectrum of n_bins = n_fft/2 + 1 bins at rate sr.
 * Peaks: bins k with fmin <= k*sr/n_fft <= fmax, mag[k] > threshold, rising from k-1 and
 * falling after k (a plateau counts once, at its centre); position and height refined by a
 * parabola through k-1, k, k+1 on linear magnitudes; a falling first bin of the range counts
 * too. The max_peaks largest are kept (freqs/mags hold max_peaks values); order_by_magnitude =
 * 1 sorts them by decreasing magnitude, 0 by increasing frequency. Returns the number of peaks
 * written (>= 0) or -1. */
int sao_spectral_peaks(sao_ctx *ctx, const float *mag, int n_bins, double sr, double fmin, double fmax,
                       double threshold, int max_peaks, int order_by_magnitude,
                       float *freqs, float *mags);
/* Essentia SpectralWhitening: peak magnitudes (in place) relative to a smoothed spectral
 * envelope of mag, for peaks up to 1.2*max_freq - 100 Hz. */
int sao_spectral_whitening(sao_ctx *ctx, const float *mag, int n_bins, double sr, double max_freq,
                           const float *freqs, float *mags, int n_peaks);
typedef enum { SAO_HPCP_NONE = 0, SAO_HPCP_COSINE = 1, SAO_HPCP_SQUARED_COSINE = 2 } sao_hpcp_weight;
typedef enum { SAO_HPCP_NORM_NONE = 0, SAO_HPCP_NORM_UNIT_MAX = 1, SAO_HPCP_NORM_UNIT_SUM = 2 } sao_hpcp_norm;
typedef struct sao_hpcp_cfg {
    int size;                   /* bins per octave: 12, 24, 36, ... (12) */
    double reference_hz;        /* frequency of bin 0 (440: bin 0 = A) */
    int harmonics;              /* extra harmonics per peak (0: fundamental only; KeyExtractor 4) */
    int weight;                 /* sao_hpcp_weight (cosine) */
    double window_semitones;    /* width of the weighting window (1.0) */
    double min_hz, max_hz;      /* peaks outside are ignored (40, 5000 Essentia defaults) */
    int normalize;              /* sao_hpcp_norm per frame */
} sao_hpcp_cfg;
/* Pitch-class profile of one frame's peaks -> out[cfg->size]. */
int sao_hpcp(sao_ctx *ctx, const float *freqs, const float *mags, int n_peaks, const sao_hpcp_cfg *cfg,
             float *out);

/* The whole per-frame chain of Essentia's key front end: FrameCutter (frame k centred at
 * k*hop, zero padding, frames while k*hop - frame/2 < S), window scaled to sum 2 (a sinusoid
 * of amplitude A peaks at ~A), magnitude spectrum, peaks, optional whitening, HPCP.
 * Audio is mixed to mono. -> f32 [T, hpcp.size]. */
typedef struct sao_hpcp_frames_cfg {
    int frame_size, hop_size;   /* 4096, 4096 */
    int window;                 /* sao_window_type, symmetric (hann) */
    double peak_min_hz, peak_max_hz, peak_threshold;   /* 25, 3500, 1e-4 */
    int max_peaks;              /* 60, largest first */
    int whitening;              /* 1: SpectralWhitening with max_freq = peak_max_hz */
    sao_hpcp_cfg hpcp;
} sao_hpcp_frames_cfg;
/* Presets: "keyextractor" (Essentia KeyExtractor defaults, bgate) and "edma" (the tutorial
 * pipeline: 4096/2048, blackmanharris62, 20-3500 Hz, 1e-5, no whitening, HPCP 36 unitMax). */
int sao_hpcp_preset(sao_ctx *ctx, const char *name, sao_hpcp_frames_cfg *out);
sao_tensor *sao_hpcp_frames(sao_ctx *ctx, const sao_tensor *audio, int sr, const sao_hpcp_frames_cfg *cfg);

/* ---- onset strength (librosa.onset.onset_strength) ------------------------------------------------
 * Mono mix -> power mel spectrogram (n_fft, hop, n_mels, fmin, fmax <= 0: sr/2; Slaney) ->
 * power_to_db(ref 1, amin 1e-10, top_db) -> env[t] = aggregate_k max(0, S[k,t] - ref[k,t-lag])
 * with ref = S max-filtered over max_size mel bands -> lag + n_fft/(2 hop) zeros in front
 * (center) -> optional detrend -> trimmed to the spectrogram's T frames. Frame t is at time
 * t*hop/sr. */
typedef struct sao_onset_cfg {
    int n_fft, hop;             /* 2048, 512 */
    int n_mels;                 /* 128 */
    double fmin, fmax;          /* 0, <= 0 (sr/2) */
    int lag;                    /* 1 */
    int max_size;               /* 1 */
    int center;                 /* 1 */
    int detrend;                /* 0 */
    double top_db;              /* 80 */
    int aggregate_median;       /* 0: mean over bands (librosa default), 1: median */
} sao_onset_cfg;
int sao_onset_cfg_default(sao_ctx *ctx, sao_onset_cfg *cfg);
/* cfg may be NULL (defaults). -> f32 [T] */
sao_tensor *sao_onset_strength(sao_ctx *ctx, const sao_tensor *audio, int sr, const sao_onset_cfg *cfg);
/* The same from a precomputed frame-major power spectrogram P [T, F] of the mono signal. */
int sao_onset_strength_raw(sao_ctx *ctx, const float *P, int64_t frames, int sr, const sao_onset_cfg *cfg,
                           float *env);
/* librosa.util.peak_pick on env [T] -> i64 [K] frame indices. */
sao_tensor *sao_peak_pick(sao_ctx *ctx, const sao_tensor *env, int pre_max, int post_max, int pre_avg,
                          int post_avg, double delta, int wait);
/* librosa.onset.onset_detect defaults: env normalised to [0, 1], peak_pick with pre_max
 * 0.03 s, post_max 1, pre_avg 0.10 s, post_avg 0.10 s + 1, wait 0.03 s (in frames, floor),
 * delta 0.07. -> i64 [K] frame indices (time = frame*hop/sr). */
sao_tensor *sao_onset_detect(sao_ctx *ctx, const sao_tensor *env, int sr, int hop);

/* ---- frame features ----------------------------------------------------------------------------------
 * On the mono mix, STFT cfg (NULL: librosa defaults). Each -> f32 [T]. */
sao_tensor *sao_spectral_centroid(sao_ctx *ctx, const sao_tensor *audio, int sr, const sao_stft_cfg *cfg);
sao_tensor *sao_spectral_flatness(sao_ctx *ctx, const sao_tensor *audio, const sao_stft_cfg *cfg,
                                  double amin, double power);
/* librosa.feature.rms: sqrt(mean of squares) of frames of frame_length every hop (center:
 * zero padding of frame_length/2). */
sao_tensor *sao_rms_frames(sao_ctx *ctx, const sao_tensor *audio, int frame_length, int hop, int center);

/* ---- HPSS (librosa.decompose.hpss / librosa.effects.hpss) ---------------------------------------------
 * S = |STFT(mono)|; H~ = median over `kernel` frames (time), P~ = median over `kernel` bins
 * (frequency), scipy 'reflect' edges; masks M_H = H~^p / (H~^p + (margin P~)^p), M_P likewise
 * (0 where both are 0). harmonic/percussive (either may be NULL) receive ISTFT(D M_H) and
 * ISTFT(D M_P) with the input's length, as f32 [1, S]. */
int sao_hpss(sao_ctx *ctx, const sao_tensor *audio, const sao_stft_cfg *cfg, int kernel, double power,
             double margin, sao_tensor **harmonic, sao_tensor **percussive);

/* ---- the evaluation feature set (DSP_SPEC 3.10), one STFT shared by all ---------------------------- */
typedef struct sao_features_cfg {
    int n_fft, hop;             /* 2048, 512 */
    int hpss_kernel;            /* 31 */
    double hpss_power;          /* 2 */
    double hpss_margin;         /* 1 */
    double flux_gamma;          /* 1000: log(1 + gamma |P|) compression for transient sharpness */
    int hp_time_domain;         /* 0: H/P energies from the masked spectrogram; 1: from ISTFTs */
} sao_features_cfg;
int sao_features_cfg_default(sao_ctx *ctx, sao_features_cfg *cfg);
typedef struct sao_features {
    double duration;            /* seconds */
    int64_t samples;
    int sample_rate, channels;
    int64_t frames;             /* STFT frames analysed */
    /* level, over all channels */
    double peak, peak_db, rms, rms_db, crest_db;
    /* spectral, mono mix; means over frames with non-zero energy */
    double centroid_hz, centroid_median_hz;
    double flatness, flatness_median;
    /* HPSS */
    double hp_ratio;            /* E_harmonic / E_percussive (inf when E_percussive = 0) */
    double harmonic_energy, percussive_energy;
    /* transients (our definition, docs/analysis.md) */
    double transient_sharpness; /* percussive log-flux per second: Σ_t o[t] / duration */
    double transient_flux_mean; /* mean_t o[t] */
    double transient_flux_p95;  /* 95th percentile of o[t] */
    double transient_crest;     /* p95 / median of o[t] (0 when the median is 0) */
    double rms_diff;            /* mean squared first difference of frame RMS, peak-normalised */
    /* onsets */
    double onset_rate;          /* onsets per second (librosa onset_detect defaults) */
    int64_t onset_count;
} sao_features;
/* cfg may be NULL. onset_env (may be NULL) receives the onset strength envelope f32 [T] of the
 * mono mix (identical to sao_onset_strength with defaults when n_fft/hop are 2048/512), so a
 * caller can hand it to the tempo estimator without a second STFT. */
int sao_features_compute(sao_ctx *ctx, const sao_tensor *audio, int sr, const sao_features_cfg *cfg,
                         sao_features *out, sao_tensor **onset_env);

#ifdef __cplusplus
}
#endif
#endif

/* stft.c — windows and the short-time Fourier transform on FFTW (single precision).
 *
 * Framing follows librosa.stft: with center = 1 the signal is padded by n_fft/2 on both sides
 * (zeros, reflection or edge values), frame t covers padded samples [t*hop, t*hop + n_fft),
 * T = 1 + (S + 2*(n_fft/2) - n_fft) / hop; a window shorter than n_fft is centred in n_fft
 * zeros; the transform is unnormalised (numpy.fft.rfft). The inverse follows librosa.istft:
 * irfft, window, overlap-add, divide by the overlap-added squared window where it exceeds the
 * smallest normal float.
 * FFTW plans are made once per sao_stft_plan (FFTW_ESTIMATE) under a process-wide mutex —
 * FFTW's planner is not thread-safe while fftwf_execute_dft_* on fresh arrays is — so one plan
 * serves all threads; frames run in parallel with OpenMP, each thread with its own buffers. */
#include "audio_internal.h"
#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The one piece of process-wide state: FFTW's planner lock. */
static pthread_mutex_t fftw_planner_lock = PTHREAD_MUTEX_INITIALIZER;

struct sao_stft_plan {
    sao_stft_cfg cfg;
    int F;
    float *window;            /* n_fft values (window centred, zero-padded) */
    fftwf_plan fwd, inv;
};

/* ---- windows ------------------------------------------------------------------------------------ */

static const struct { const char *name; int n; double a[4]; } cosine_windows[SAO_WIN_COUNT] = {
    [SAO_WIN_RECT] = {"rect", 1, {1, 0, 0, 0}},
    [SAO_WIN_HANN] = {"hann", 2, {0.5, 0.5, 0, 0}},
    [SAO_WIN_HAMMING] = {"hamming", 2, {0.54, 0.46, 0, 0}},
    [SAO_WIN_BLACKMAN] = {"blackman", 3, {0.42, 0.5, 0.08, 0}},
    [SAO_WIN_BLACKMANHARRIS] = {"blackmanharris", 4, {0.35875, 0.48829, 0.14128, 0.01168}},
    [SAO_WIN_BLACKMANHARRIS62] = {"blackmanharris62", 3, {0.44959, 0.49364, 0.05677, 0}},
    [SAO_WIN_BLACKMANHARRIS70] = {"blackmanharris70", 3, {0.42323, 0.49755, 0.07922, 0}},
    [SAO_WIN_BLACKMANHARRIS74] = {"blackmanharris74", 4, {0.40217, 0.49703, 0.09892, 0.00188}},
    [SAO_WIN_TRIANGULAR] = {"triangular", 0, {0, 0, 0, 0}},
};

int sao_window_from_name(sao_ctx *ctx, const char *name) {
    if (name) {
        for (int i = 0; i < SAO_WIN_COUNT; i++)
            if (!strcmp(name, cosine_windows[i].name)) return i;
        if (!strcmp(name, "hanning") || !strcmp(name, "hann_window")) return SAO_WIN_HANN;
        if (!strcmp(name, "boxcar") || !strcmp(name, "rectangular") || !strcmp(name, "ones")) return SAO_WIN_RECT;
        if (!strcmp(name, "blackmanharris92")) return SAO_WIN_BLACKMANHARRIS;
        if (!strcmp(name, "triang")) return SAO_WIN_TRIANGULAR;
    }
    sao_err(ctx, "window", "unknown window '%s' (rect, hann, hamming, blackman, blackmanharris, "
            "blackmanharris62, blackmanharris70, blackmanharris74, triangular)", name ? name : "(null)");
    return -1;
}

/* Symmetric window of m points into out[0..n) (n <= m; periodic = symmetric of n+1, cut). */
static void window_sym(int type, int m, int n, float *out) {
    if (m == 1) { out[0] = 1.0f; return; }
    if (type == SAO_WIN_TRIANGULAR) {
        /* scipy.signal.windows.triang */
        double den = m + (m & 1);
        for (int i = 0; i < n; i++) out[i] = (float)(1.0 - fabs(2.0 * i - (m - 1)) / den);
        return;
    }
    const double *a = cosine_windows[type].a;
    int k = cosine_windows[type].n;
    for (int i = 0; i < n; i++) {
        double ph = 2.0 * M_PI * i / (m - 1), v = 0;
        for (int j = 0; j < k; j++) v += (j & 1 ? -a[j] : a[j]) * cos(j * ph);
        out[i] = (float)v;
    }
}

int sao_window_fill(sao_ctx *ctx, int type, int n, int periodic, float *out) {
    if (type < 0 || type >= SAO_WIN_COUNT) return sao_err(ctx, "window", "unknown window type %d", type);
    if (n < 1) return sao_err(ctx, "window", "length %d must be >= 1", n);
    window_sym(type, periodic ? n + 1 : n, n, out);
    return 0;
}

sao_tensor *sao_window(sao_ctx *ctx, int type, int n, int periodic) {
    if (n < 1) return sao_err_null(ctx, "window", "length %d must be >= 1", n);
    int64_t shape[1] = {n};
    sao_tensor *t = sao_tensor_empty(ctx, SAO_F32, 1, shape);
    if (t && sao_window_fill(ctx, type, n, periodic, sao_tensor_data(t))) { sao_tensor_free(t); return NULL; }
    return t;
}

/* ---- plans --------------------------------------------------------------------------------------- */

int sao_stft_cfg_default(sao_ctx *ctx, sao_stft_cfg *cfg) {
    SAO_UNUSED(ctx);
    cfg->n_fft = 2048;
    cfg->hop = 512;
    cfg->win_length = 2048;
    cfg->window = SAO_WIN_HANN;
    cfg->periodic = 1;
    cfg->center = 1;
    cfg->pad_mode = SAO_PAD_CONSTANT;
    return 0;
}

sao_stft_plan *sao_stft_plan_new(sao_ctx *ctx, const sao_stft_cfg *cfg_in) {
    const char *op = "stft";
    sao_stft_cfg cfg;
    if (cfg_in) cfg = *cfg_in;
    else sao_stft_cfg_default(ctx, &cfg);
    if (cfg.n_fft < 2 || cfg.n_fft > (1 << 24)) return sao_err_null(ctx, op, "n_fft %d outside 2..2^24", cfg.n_fft);
    if (cfg.hop < 1) return sao_err_null(ctx, op, "hop %d must be >= 1", cfg.hop);
    if (cfg.win_length <= 0) cfg.win_length = cfg.n_fft;
    if (cfg.win_length > cfg.n_fft)
        return sao_err_null(ctx, op, "win_length %d exceeds n_fft %d", cfg.win_length, cfg.n_fft);
    if (cfg.pad_mode < SAO_PAD_CONSTANT || cfg.pad_mode > SAO_PAD_EDGE)
        return sao_err_null(ctx, op, "unknown pad mode %d (0 constant, 1 reflect, 2 edge)", cfg.pad_mode);
    sao_stft_plan *p = sao_xcalloc(ctx, op, sizeof *p);
    if (!p) return NULL;
    p->cfg = cfg;
    p->F = cfg.n_fft / 2 + 1;
    p->window = sao_xcalloc(ctx, op, (size_t)cfg.n_fft * sizeof *p->window);
    if (!p->window) { free(p); return NULL; }
    int lpad = (cfg.n_fft - cfg.win_length) / 2;
    if (sao_window_fill(ctx, cfg.window, cfg.win_length, cfg.periodic, p->window + lpad)) {
        sao_stft_plan_free(p);
        return NULL;
    }
    float *in = fftwf_alloc_real((size_t)cfg.n_fft);
    fftwf_complex *out = fftwf_alloc_complex((size_t)p->F);
    if (in && out) {
        pthread_mutex_lock(&fftw_planner_lock);
        p->fwd = fftwf_plan_dft_r2c_1d(cfg.n_fft, in, out, FFTW_ESTIMATE);
        p->inv = fftwf_plan_dft_c2r_1d(cfg.n_fft, out, in, FFTW_ESTIMATE);
        pthread_mutex_unlock(&fftw_planner_lock);
    }
    fftwf_free(in);
    fftwf_free(out);
    if (!p->fwd || !p->inv) {
        sao_stft_plan_free(p);
        return sao_err_null(ctx, op, "FFTW could not plan a %d-point transform", cfg.n_fft);
    }
    return p;
}

void sao_stft_plan_free(sao_stft_plan *p) {
    if (!p) return;
    pthread_mutex_lock(&fftw_planner_lock);
    if (p->fwd) fftwf_destroy_plan(p->fwd);
    if (p->inv) fftwf_destroy_plan(p->inv);
    pthread_mutex_unlock(&fftw_planner_lock);
    free(p->window);
    free(p);
}

int sao_stft_plan_bins(const sao_stft_plan *p) { return p->F; }
const float *sao_stft_plan_window(const sao_stft_plan *p) { return p->window; }

int64_t sao_stft_plan_frames(const sao_stft_plan *p, int64_t n) {
    int64_t padded = n + (p->cfg.center ? 2 * (p->cfg.n_fft / 2) : 0);
    if (n < 1 || padded < p->cfg.n_fft) return 0;
    return 1 + (padded - p->cfg.n_fft) / p->cfg.hop;
}

/* Index i of the padded signal (i may be negative or >= n) under numpy.pad semantics. */
static float pad_value(const float *x, int64_t n, int64_t i, int mode) {
    if (i >= 0 && i < n) return x[i];
    if (mode == SAO_PAD_CONSTANT) return 0.0f;
    if (mode == SAO_PAD_EDGE || n == 1) return i < 0 ? x[0] : x[n - 1];
    int64_t period = 2 * (n - 1);              /* reflect without repeating the edge */
    int64_t j = i % period;
    if (j < 0) j += period;
    return j < n ? x[j] : x[period - j];
}

/* Padded copy of x: n + 2*pad samples. */
static float *padded_copy(sao_ctx *ctx, const sao_stft_plan *p, const float *x, int64_t n, int64_t *pad) {
    int64_t k = p->cfg.center ? p->cfg.n_fft / 2 : 0;
    float *xp = sao_xmalloc(ctx, "stft", (size_t)(n + 2 * k) * sizeof *xp);
    if (!xp) return NULL;
    for (int64_t i = 0; i < k; i++) xp[i] = pad_value(x, n, i - k, p->cfg.pad_mode);
    memcpy(xp + k, x, (size_t)n * sizeof *xp);
    for (int64_t i = 0; i < k; i++) xp[k + n + i] = pad_value(x, n, n + i, p->cfg.pad_mode);
    *pad = k;
    return xp;
}

/* Shared driver: for each frame, window + rfft, then `emit` writes the F bins. */
typedef void (*emit_fn)(const fftwf_complex *X, int F, float *dst, double power);

static void emit_complex(const fftwf_complex *X, int F, float *dst, double power) {
    SAO_UNUSED(power);
    memcpy(dst, X, (size_t)F * 2 * sizeof(float));
}

static void emit_power(const fftwf_complex *X, int F, float *dst, double power) {
    if (power == 2.0)
        for (int k = 0; k < F; k++) dst[k] = X[k][0] * X[k][0] + X[k][1] * X[k][1];
    else if (power == 1.0)
        for (int k = 0; k < F; k++) dst[k] = sqrtf(X[k][0] * X[k][0] + X[k][1] * X[k][1]);
    else
        for (int k = 0; k < F; k++)
            dst[k] = (float)pow(sqrt((double)X[k][0] * X[k][0] + (double)X[k][1] * X[k][1]), power);
}

static int run_frames(sao_ctx *ctx, const sao_stft_plan *p, const float *x, int64_t n, float *out,
                      int per_frame, emit_fn emit, double power) {
    const char *op = "stft";
    int64_t T = sao_stft_plan_frames(p, n);
    if (T < 1)
        return sao_err(ctx, op, "signal of %lld samples is too short for n_fft %d without centring",
                       (long long)n, p->cfg.n_fft);
    int64_t pad;
    float *xp = padded_copy(ctx, p, x, n, &pad);
    if (!xp) return -1;
    int N = p->cfg.n_fft, F = p->F, hop = p->cfg.hop, fail = 0;
    sao_threads_apply(ctx);
#pragma omp parallel if (T >= 64)
    {
        float *buf = fftwf_alloc_real((size_t)N);
        fftwf_complex *X = fftwf_alloc_complex((size_t)F);
        if (!buf || !X) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < T; t++) {
            if (!buf || !X) continue;
            const float *fr = xp + t * hop;
            for (int j = 0; j < N; j++) buf[j] = fr[j] * p->window[j];
            fftwf_execute_dft_r2c(p->fwd, buf, X);
            emit(X, F, out + t * per_frame, power);
        }
        fftwf_free(buf);
        fftwf_free(X);
    }
    free(xp);
    return fail ? sao_err(ctx, op, "out of memory") : 0;
}

int sao_stft_plan_complex(sao_ctx *ctx, const sao_stft_plan *p, const float *x, int64_t n, float *out) {
    return run_frames(ctx, p, x, n, out, 2 * p->F, emit_complex, 0);
}

int sao_stft_plan_power(sao_ctx *ctx, const sao_stft_plan *p, const float *x, int64_t n, double power,
                        float *out) {
    if (!(power > 0)) return sao_err(ctx, "stft", "power %g must be > 0", power);
    return run_frames(ctx, p, x, n, out, p->F, emit_power, power);
}

int sao_stft_plan_inverse(sao_ctx *ctx, const sao_stft_plan *p, const float *spec, int64_t T, float *y,
                          int64_t length) {
    const char *op = "istft";
    if (T < 1) return sao_err(ctx, op, "no frames");
    int N = p->cfg.n_fft, F = p->F, hop = p->cfg.hop;
    int64_t full = N + hop * (T - 1);
    int64_t start = p->cfg.center ? N / 2 : 0;
    float *acc = calloc((size_t)full, sizeof *acc), *wss = calloc((size_t)full, sizeof *wss);
    float *buf = fftwf_alloc_real((size_t)N);
    fftwf_complex *X = fftwf_alloc_complex((size_t)F);
    if (!acc || !wss || !buf || !X) {
        free(acc); free(wss); fftwf_free(buf); fftwf_free(X);
        return sao_err(ctx, op, "out of memory");
    }
    const float *w = p->window;
    float inv = 1.0f / (float)N;
    for (int64_t t = 0; t < T; t++) {
        memcpy(X, spec + t * 2 * F, (size_t)F * 2 * sizeof(float));
        X[0][1] = 0;                                   /* irfft ignores these imaginary parts */
        if (N % 2 == 0) X[F - 1][1] = 0;
        fftwf_execute_dft_c2r(p->inv, X, buf);
        float *a = acc + t * hop, *s = wss + t * hop;
        for (int j = 0; j < N; j++) {
            a[j] += buf[j] * inv * w[j];
            s[j] += w[j] * w[j];
        }
    }
    const float tiny = 1.17549435e-38f;
    for (int64_t i = 0; i < length; i++) {
        int64_t k = start + i;
        y[i] = k < full ? (wss[k] > tiny ? acc[k] / wss[k] : acc[k]) : 0.0f;
    }
    free(acc); free(wss); fftwf_free(buf); fftwf_free(X);
    return 0;
}

float *sao_fft_alloc(size_t nfloats) { return fftwf_alloc_real(nfloats ? nfloats : 1); }
void sao_fft_free(float *p) { fftwf_free(p); }

void sao_stft_plan_frame(const sao_stft_plan *p, const float *frame, float *buf, float *out) {
    for (int j = 0; j < p->cfg.n_fft; j++) buf[j] = frame[j] * p->window[j];
    fftwf_execute_dft_r2c(p->fwd, buf, (fftwf_complex *)out);
}

/* ---- tensor wrappers ------------------------------------------------------------------------------ */

sao_tensor *sao_stft(sao_ctx *ctx, const sao_tensor *audio, const sao_stft_cfg *cfg) {
    sao_audio_in_t in;
    if (sao_audio_in(ctx, "stft", audio, &in)) return NULL;
    sao_stft_plan *p = sao_stft_plan_new(ctx, cfg);
    sao_tensor *t = NULL;
    float *tmp = NULL;
    int64_t T = p ? sao_stft_plan_frames(p, in.samples) : 0;
    if (p && T < 1) sao_err(ctx, "stft", "signal of %lld samples is too short", (long long)in.samples);
    if (p && T >= 1) {
        int64_t F = p->F, shape[4] = {in.channels, F, T, 2};
        t = sao_tensor_empty(ctx, SAO_F32, 4, shape);
        tmp = t ? sao_xmalloc(ctx, "stft", (size_t)(T * F * 2) * sizeof *tmp) : NULL;
        for (int64_t c = 0; tmp && c < in.channels; c++) {
            if (sao_stft_plan_complex(ctx, p, in.x + c * in.samples, in.samples, tmp)) { sao_tensor_free(t); t = NULL; break; }
            float *d = (float *)sao_tensor_data(t) + c * F * T * 2;
            for (int64_t tt = 0; tt < T; tt++)
                for (int64_t k = 0; k < F; k++) {
                    d[(k * T + tt) * 2] = tmp[(tt * F + k) * 2];
                    d[(k * T + tt) * 2 + 1] = tmp[(tt * F + k) * 2 + 1];
                }
        }
        if (t && !tmp) { sao_tensor_free(t); t = NULL; }
    }
    free(tmp);
    sao_stft_plan_free(p);
    sao_audio_in_free(&in);
    return t;
}

sao_tensor *sao_spectrogram(sao_ctx *ctx, const sao_tensor *audio, const sao_stft_cfg *cfg, double power) {
    sao_audio_in_t in;
    if (sao_audio_in(ctx, "spectrogram", audio, &in)) return NULL;
    sao_stft_plan *p = sao_stft_plan_new(ctx, cfg);
    sao_tensor *t = NULL;
    float *tmp = NULL;
    int64_t T = p ? sao_stft_plan_frames(p, in.samples) : 0;
    if (p && T < 1) sao_err(ctx, "spectrogram", "signal of %lld samples is too short", (long long)in.samples);
    if (p && T >= 1) {
        int64_t F = p->F, shape[3] = {in.channels, F, T};
        t = sao_tensor_empty(ctx, SAO_F32, 3, shape);
        tmp = t ? sao_xmalloc(ctx, "spectrogram", (size_t)(T * F) * sizeof *tmp) : NULL;
        for (int64_t c = 0; tmp && c < in.channels; c++) {
            if (sao_stft_plan_power(ctx, p, in.x + c * in.samples, in.samples, power, tmp)) { sao_tensor_free(t); t = NULL; break; }
            float *d = (float *)sao_tensor_data(t) + c * F * T;
            for (int64_t tt = 0; tt < T; tt++)
                for (int64_t k = 0; k < F; k++) d[k * T + tt] = tmp[tt * F + k];
        }
        if (t && !tmp) { sao_tensor_free(t); t = NULL; }
    }
    free(tmp);
    sao_stft_plan_free(p);
    sao_audio_in_free(&in);
    return t;
}

sao_tensor *sao_istft(sao_ctx *ctx, const sao_tensor *spec, const sao_stft_cfg *cfg, int64_t length) {
    const char *op = "istft";
    if (!spec) return sao_err_null(ctx, op, "spectrum is NULL");
    if ((spec->ndim != 3 && spec->ndim != 4) || spec->shape[spec->ndim - 1] != 2)
        return sao_err_null(ctx, op, "spectrum must be [C, F, T, 2] or [F, T, 2] (real, imaginary)");
    if (spec->storage->device != SAO_CPU) return sao_err_null(ctx, op, "spectrum is on a GPU (move it to the CPU)");
    sao_stft_plan *p = sao_stft_plan_new(ctx, cfg);
    if (!p) return NULL;
    int64_t C = spec->ndim == 4 ? spec->shape[0] : 1;
    int64_t F = spec->shape[spec->ndim - 3], T = spec->shape[spec->ndim - 2];
    if (F != p->F) {
        sao_stft_plan_free(p);
        return sao_err_null(ctx, op, "spectrum has %lld bins but n_fft %d needs %d", (long long)F,
                            p->cfg.n_fft, p->F);
    }
    if (length < 0) {
        length = p->cfg.n_fft + p->cfg.hop * (T - 1) - (p->cfg.center ? 2 * (p->cfg.n_fft / 2) : 0);
        if (length < 0) length = 0;
    }
    sao_tensor *src = spec->dtype == SAO_F32 ? sao_tensor_contiguous(ctx, spec) : sao_tensor_to_dtype(ctx, spec, SAO_F32);
    float *y, *tmp = NULL;
    sao_tensor *t = src ? sao_audio_alloc(ctx, C, length, &y) : NULL;
    if (t) tmp = sao_xmalloc(ctx, op, (size_t)(T * F * 2) * sizeof *tmp);
    for (int64_t c = 0; tmp && c < C; c++) {
        const float *s = (const float *)sao_tensor_data(src) + c * F * T * 2;
        for (int64_t k = 0; k < F; k++)
            for (int64_t tt = 0; tt < T; tt++) {
                tmp[(tt * F + k) * 2] = s[(k * T + tt) * 2];
                tmp[(tt * F + k) * 2 + 1] = s[(k * T + tt) * 2 + 1];
            }
        if (sao_stft_plan_inverse(ctx, p, tmp, T, y + c * length, length)) { free(tmp); tmp = NULL; sao_tensor_free(t); t = NULL; }
    }
    if (t && !tmp) { sao_tensor_free(t); t = NULL; }
    free(tmp);
    if (src) sao_tensor_free(src);
    sao_stft_plan_free(p);
    return t;
}

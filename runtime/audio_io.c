/* audio_io.c — reading and writing audio files with libsndfile.
 *
 * Reading: any format libsndfile decodes (WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...) into an
 * f32 [C, S] tensor, deinterleaved in chunks. A file is rejected (error naming it) when it is
 * missing, unreadable, not audio, or when fewer frames decode than its header promises
 * (truncated or corrupt payload). libsndfile silently shortens some truncated WAVs; its log
 * says so, and we treat that as an error too.
 * Writing: WAV (float/pcm16/pcm24/pcm32), FLAC (pcm16/pcm24), OGG/Vorbis, MP3, always to
 * PATH.tmp.PID first and renamed into place, so readers never see half a file. */
#include "audio_internal.h"
#include <errno.h>
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK_FRAMES 65536

/* ---- shared helpers for the audio files ----------------------------------------------------- */

void *sao_xmalloc(sao_ctx *ctx, const char *op, size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) sao_err(ctx, op, "out of memory (%zu bytes)", n);
    return p;
}

void *sao_xcalloc(sao_ctx *ctx, const char *op, size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p) sao_err(ctx, op, "out of memory (%zu bytes)", n);
    return p;
}

int sao_audio_in(sao_ctx *ctx, const char *op, const sao_tensor *audio, sao_audio_in_t *in) {
    memset(in, 0, sizeof *in);
    if (!audio) return sao_err(ctx, op, "audio is NULL");
    if (audio->storage && audio->storage->device != SAO_CPU)
        return sao_err(ctx, op, "audio is on a GPU (move it to the CPU first: t:cpu())");
    if (audio->ndim != 1 && audio->ndim != 2)
        return sao_err(ctx, op, "audio must be [C, S] or [S], got %d dimensions", audio->ndim);
    if (audio->dtype != SAO_F32 && audio->dtype != SAO_F64 && audio->dtype != SAO_BF16 &&
        audio->dtype != SAO_F16)
        return sao_err(ctx, op, "audio must be floating point, got %s", sao_dtype_name(audio->dtype));
    sao_tensor *h = audio->dtype == SAO_F32 ? sao_tensor_contiguous(ctx, audio)
                                            : sao_tensor_to_dtype(ctx, audio, SAO_F32);
    if (!h) return -1;
    in->hold = h;
    in->x = sao_tensor_data(h);
    in->channels = audio->ndim == 2 ? audio->shape[0] : 1;
    in->samples = audio->ndim == 2 ? audio->shape[1] : audio->shape[0];
    if (in->channels < 1) {
        sao_audio_in_free(in);
        return sao_err(ctx, op, "audio has 0 channels");
    }
    if (in->channels > 256) {
        long long c = in->channels, s = in->samples;
        sao_audio_in_free(in);
        return sao_err(ctx, op, "audio [%lld, %lld] has %lld channels (audio is [C, S]; a [S, C] "
                       "array needs a transpose: t:t():contiguous())", c, s, c);
    }
    return 0;
}

void sao_audio_in_free(sao_audio_in_t *in) {
    if (in->hold) sao_tensor_free(in->hold);
    memset(in, 0, sizeof *in);
}

sao_tensor *sao_audio_alloc(sao_ctx *ctx, int64_t channels, int64_t samples, float **data) {
    int64_t shape[2] = {channels, samples};
    sao_tensor *t = sao_tensor_empty(ctx, SAO_F32, 2, shape);
    if (t && data) *data = sao_tensor_data(t);
    return t;
}

float *sao_audio_mono_buffer(const sao_audio_in_t *in) {
    float *m = malloc((size_t)(in->samples ? in->samples : 1) * sizeof *m);
    if (!m) return NULL;
    if (in->channels == 1) {
        memcpy(m, in->x, (size_t)in->samples * sizeof *m);
        return m;
    }
    float inv = 1.0f / (float)in->channels;
    for (int64_t s = 0; s < in->samples; s++) {
        float acc = 0;
        for (int64_t c = 0; c < in->channels; c++) acc += in->x[c * in->samples + s];
        m[s] = acc * inv;
    }
    return m;
}

/* ---- names ----------------------------------------------------------------------------------- */

static const char *major_name(int f) {
    switch (f & SF_FORMAT_TYPEMASK) {
    case SF_FORMAT_WAV: case SF_FORMAT_WAVEX: case SF_FORMAT_RF64: return "wav";
    case SF_FORMAT_W64: return "w64";
    case SF_FORMAT_FLAC: return "flac";
    case SF_FORMAT_OGG: return "ogg";
    case SF_FORMAT_MPEG: return "mp3";
    case SF_FORMAT_AIFF: return "aiff";
    case SF_FORMAT_AU: return "au";
    case SF_FORMAT_CAF: return "caf";
    case SF_FORMAT_RAW: return "raw";
    default: return "other";
    }
}

static const char *subtype_name(int f) {
    switch (f & SF_FORMAT_SUBMASK) {
    case SF_FORMAT_PCM_S8: case SF_FORMAT_PCM_U8: return "pcm8";
    case SF_FORMAT_PCM_16: return "pcm16";
    case SF_FORMAT_PCM_24: return "pcm24";
    case SF_FORMAT_PCM_32: return "pcm32";
    case SF_FORMAT_FLOAT: return "float";
    case SF_FORMAT_DOUBLE: return "double";
    case SF_FORMAT_VORBIS: return "vorbis";
    case SF_FORMAT_OPUS: return "opus";
    case SF_FORMAT_MPEG_LAYER_I: return "mp1";
    case SF_FORMAT_MPEG_LAYER_II: return "mp2";
    case SF_FORMAT_MPEG_LAYER_III: return "mp3";
    case SF_FORMAT_ULAW: return "ulaw";
    case SF_FORMAT_ALAW: return "alaw";
    default: return "other";
    }
}

/* ---- reading --------------------------------------------------------------------------------- */

/* Opens `path` for reading with a precise error: missing, a directory, unreadable, not audio. */
static SNDFILE *open_read(sao_ctx *ctx, const char *op, const char *path, SF_INFO *info) {
    if (!path || !*path) return sao_err_null(ctx, op, "empty path");
    struct stat st;
    if (stat(path, &st) != 0)
        return sao_err_null(ctx, op, "%s: %s (check the path)", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return sao_err_null(ctx, op, "%s: is a directory, not an audio file", path);
    if (access(path, R_OK) != 0)
        return sao_err_null(ctx, op, "%s: %s", path, strerror(errno));
    if (st.st_size == 0) return sao_err_null(ctx, op, "%s: empty file (0 bytes)", path);
    memset(info, 0, sizeof *info);
    SNDFILE *sf = sf_open(path, SFM_READ, info);
    if (!sf)
        return sao_err_null(ctx, op, "%s: cannot decode: %s (corrupt, or not a format libsndfile reads: "
                            "wav, flac, ogg, mp3, aiff, ...)", path, sf_strerror(NULL));
    if (info->channels < 1 || info->samplerate < 1) {
        sf_close(sf);
        return sao_err_null(ctx, op, "%s: header has %d channels at %d Hz (corrupt header)", path,
                            info->channels, info->samplerate);
    }
    return sf;
}

/* True when libsndfile's log shows a WAV/AIFF data chunk that promises more bytes than the file
 * holds ("data : N (should be M)" with N > M). Streaming writers put 0 or 0xFFFFFFFF there;
 * those are not truncations. */
static int log_says_truncated(SNDFILE *sf) {
    char log[8192];
    log[0] = 0;
    sf_command(sf, SFC_GET_LOG_INFO, log, sizeof log);
    for (const char *p = log; (p = strstr(p, "data : ")) || (p = strstr(log, "SSND : ")); p += 7) {
        long long decl, should;
        if (sscanf(p + 7, "%lld (should be %lld)", &decl, &should) == 2 && decl > should &&
            decl != 0 && decl != 0xFFFFFFFFLL && decl != 0x7FFFFFFFLL && decl != 0xFFFFFFFELL)
            return 1;
        if (!strncmp(p, "SSND", 4)) break;
    }
    return strstr(log, "runcated") != NULL;
}

/* Walks the Ogg pages of `path` (headers only): 0 when the last page ends exactly at the end of
 * the file and carries the end-of-stream flag, -1 otherwise. libvorbis (through libsndfile
 * 1.2) can crash on a cut-off final page, so truncated Ogg files are rejected before decoding. */
static int ogg_complete(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    unsigned char h[27], seg[255];
    int last_flags = -1, ok = -1;
    for (;;) {
        size_t got = fread(h, 1, 27, f);
        if (got == 0 && feof(f)) { ok = last_flags >= 0 && (last_flags & 4) ? 0 : -1; break; }
        if (got != 27 || memcmp(h, "OggS", 4) != 0) break;
        int nseg = h[26];
        if (fread(seg, 1, (size_t)nseg, f) != (size_t)nseg) break;
        long body = 0;
        for (int i = 0; i < nseg; i++) body += seg[i];
        long here = ftell(f);
        if (fseek(f, 0, SEEK_END) != 0) break;
        long end = ftell(f);
        if (here + body > end || fseek(f, here + body, SEEK_SET) != 0) break;
        last_flags = h[5];
    }
    fclose(f);
    return ok;
}

int sao_audio_info_read(sao_ctx *ctx, const char *path, sao_audio_info *out) {
    SF_INFO info;
    SNDFILE *sf = open_read(ctx, "audio.info", path, &info);
    if (!sf) return -1;
    memset(out, 0, sizeof *out);
    out->frames = info.frames;
    out->sample_rate = info.samplerate;
    out->channels = info.channels;
    out->duration = (double)info.frames / info.samplerate;
    out->sf_format = info.format;
    snprintf(out->format, sizeof out->format, "%s", major_name(info.format));
    snprintf(out->subtype, sizeof out->subtype, "%s", subtype_name(info.format));
    sf_close(sf);
    return 0;
}

sao_tensor *sao_audio_load_range(sao_ctx *ctx, const char *path, int64_t start, int64_t count,
                                 int *sample_rate) {
    const char *op = "audio.load";
    SF_INFO info;
    SNDFILE *sf = open_read(ctx, op, path, &info);
    if (!sf) return NULL;
    if ((info.format & SF_FORMAT_TYPEMASK) == SF_FORMAT_OGG && ogg_complete(path) != 0) {
        sf_close(sf);
        return sao_err_null(ctx, op, "%s: truncated or corrupt Ogg stream (no complete final page; "
                            "re-export or re-download it)", path);
    }
    if (log_says_truncated(sf)) {
        sf_close(sf);
        return sao_err_null(ctx, op, "%s: truncated (the header promises more audio than the file "
                            "holds; re-export or re-download it)", path);
    }
    int64_t total = info.frames;
    if (start < 0) start = 0;
    if (start > total) start = total;
    int64_t n = count < 0 || start + count > total ? total - start : count;
    if (start > 0 && sf_seek(sf, start, SEEK_SET) < 0) {
        sf_close(sf);
        return sao_err_null(ctx, op, "%s: cannot seek to frame %lld: %s", path, (long long)start,
                            sf_strerror(sf));
    }
    int C = info.channels;
    float *planar;
    sao_tensor *t = sao_audio_alloc(ctx, C, n, &planar);
    if (!t) { sf_close(sf); return NULL; }
    float *buf = sao_xmalloc(ctx, op, (size_t)CHUNK_FRAMES * (size_t)C * sizeof *buf);
    if (!buf) { sf_close(sf); sao_tensor_free(t); return NULL; }
    int64_t done = 0;
    while (done < n) {
        sf_count_t want = n - done < CHUNK_FRAMES ? n - done : CHUNK_FRAMES;
        sf_count_t got = sf_readf_float(sf, buf, want);
        if (got <= 0) break;
        for (sf_count_t i = 0; i < got; i++)
            for (int c = 0; c < C; c++) planar[(int64_t)c * n + done + i] = buf[i * C + c];
        done += got;
        if (got < want) break;
    }
    int err = sf_error(sf);
    char emsg[256];
    snprintf(emsg, sizeof emsg, "%s", sf_strerror(sf));
    free(buf);
    sf_close(sf);
    if (done < n || err != SF_ERR_NO_ERROR) {
        sao_tensor_free(t);
        return sao_err_null(ctx, op, "%s: truncated or corrupt: decoded %lld of %lld frames (%s)", path,
                            (long long)(start + done), (long long)(start + n),
                            err != SF_ERR_NO_ERROR ? emsg : "payload ends early");
    }
    for (int64_t i = 0; i < (int64_t)C * n; i++)
        if (!isfinite(planar[i])) {
            sao_tensor_free(t);
            return sao_err_null(ctx, op, "%s: contains NaN/Inf samples (corrupt float data)", path);
        }
    if (sample_rate) *sample_rate = info.samplerate;
    return t;
}

sao_tensor *sao_audio_load(sao_ctx *ctx, const char *path, int *sample_rate) {
    return sao_audio_load_range(ctx, path, 0, -1, sample_rate);
}

/* ---- writing --------------------------------------------------------------------------------- */

static const char *ext_of(const char *path) {
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(path, '.');
    return dot && (!slash || dot > slash) ? dot + 1 : "";
}

static int format_code(sao_ctx *ctx, const char *path, const char *format, const char *subtype,
                       int *code) {
    const char *op = "audio.save";
    const char *f = format && *format ? format : ext_of(path);
    int major, sub;
    if (!strcasecmp(f, "wav") || !*f) major = SF_FORMAT_WAV;
    else if (!strcasecmp(f, "flac")) major = SF_FORMAT_FLAC;
    else if (!strcasecmp(f, "ogg") || !strcasecmp(f, "oga")) major = SF_FORMAT_OGG;
    else if (!strcasecmp(f, "mp3")) major = SF_FORMAT_MPEG;
    else if (format && *format)
        return sao_err(ctx, op, "%s: unknown format '%s' (use wav, flac, ogg or mp3)", path, format);
    else major = SF_FORMAT_WAV;          /* unknown extension, no format: WAV */
    const char *s = subtype && *subtype ? subtype : NULL;
    if (major == SF_FORMAT_OGG) {
        if (s && strcasecmp(s, "vorbis"))
            return sao_err(ctx, op, "%s: ogg is written as vorbis only (got subtype '%s')", path, s);
        sub = SF_FORMAT_VORBIS;
    } else if (major == SF_FORMAT_MPEG) {
        if (s && strcasecmp(s, "mp3"))
            return sao_err(ctx, op, "%s: mp3 has no subtype '%s'", path, s);
        sub = SF_FORMAT_MPEG_LAYER_III;
    } else if (!s) sub = major == SF_FORMAT_FLAC ? SF_FORMAT_PCM_24 : SF_FORMAT_FLOAT;
    else if (!strcasecmp(s, "float")) sub = SF_FORMAT_FLOAT;
    else if (!strcasecmp(s, "pcm16")) sub = SF_FORMAT_PCM_16;
    else if (!strcasecmp(s, "pcm24")) sub = SF_FORMAT_PCM_24;
    else if (!strcasecmp(s, "pcm32")) sub = SF_FORMAT_PCM_32;
    else return sao_err(ctx, op, "%s: unknown subtype '%s' (use float, pcm16, pcm24 or pcm32)", path, s);
    if (major == SF_FORMAT_FLAC && sub != SF_FORMAT_PCM_16 && sub != SF_FORMAT_PCM_24)
        return sao_err(ctx, op, "%s: flac holds pcm16 or pcm24 only (got '%s')", path, s);
    *code = major | sub;
    return 0;
}

int sao_audio_save(sao_ctx *ctx, const char *path, const sao_tensor *audio, int sample_rate,
                   const char *format, const char *subtype) {
    const char *op = "audio.save";
    if (!path || !*path) return sao_err(ctx, op, "empty path");
    if (sample_rate < 1) return sao_err(ctx, op, "%s: sample rate %d must be positive", path, sample_rate);
    int code = 0;
    if (format_code(ctx, path, format, subtype, &code)) return -1;
    sao_audio_in_t in;
    if (sao_audio_in(ctx, op, audio, &in)) return -1;
    SF_INFO info = {.samplerate = sample_rate, .channels = (int)in.channels, .format = code};
    if (!sf_format_check(&info)) {
        sao_audio_in_free(&in);
        return sao_err(ctx, op, "%s: libsndfile cannot write %lld channels at %d Hz in this format",
                       path, (long long)in.channels, sample_rate);
    }
    size_t plen = strlen(path) + 32;
    char *tmp = sao_xmalloc(ctx, op, plen);
    if (!tmp) { sao_audio_in_free(&in); return -1; }
    snprintf(tmp, plen, "%s.tmp.%ld", path, (long)getpid());
    SNDFILE *sf = sf_open(tmp, SFM_WRITE, &info);
    if (!sf) {
        sao_err(ctx, op, "%s: cannot create: %s (is the folder there and writable?)", path, sf_strerror(NULL));
        free(tmp);
        sao_audio_in_free(&in);
        return -1;
    }
    sf_command(sf, SFC_SET_CLIPPING, NULL, SF_TRUE);
    if ((code & SF_FORMAT_TYPEMASK) == SF_FORMAT_OGG) {
        double q = 0.6;                          /* vorbis quality (0..1) */
        sf_command(sf, SFC_SET_VBR_ENCODING_QUALITY, &q, sizeof q);
    }
    int C = (int)in.channels;
    int64_t S = in.samples;
    float *buf = sao_xmalloc(ctx, op, (size_t)CHUNK_FRAMES * (size_t)C * sizeof *buf);
    int rc = buf ? 0 : -1;
    for (int64_t done = 0; rc == 0 && done < S; done += CHUNK_FRAMES) {
        int64_t k = S - done < CHUNK_FRAMES ? S - done : CHUNK_FRAMES;
        for (int64_t i = 0; i < k; i++)
            for (int c = 0; c < C; c++) buf[i * C + c] = in.x[(int64_t)c * S + done + i];
        if (sf_writef_float(sf, buf, k) != k)
            rc = sao_err(ctx, op, "%s: write failed: %s (disk full?)", path, sf_strerror(sf));
    }
    free(buf);
    sao_audio_in_free(&in);
    if (sf_close(sf) != 0 && rc == 0) rc = sao_err(ctx, op, "%s: cannot finish the file", path);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = sao_err(ctx, op, "%s: cannot rename into place: %s", path, strerror(errno));
    if (rc != 0) unlink(tmp);
    free(tmp);
    return rc;
}

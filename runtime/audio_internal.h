/* audio_internal.h — helpers shared by the audio and DSP files (audio_io.c, audio_ops.c,
 * resample.c, loudness.c, stft.c, spectral.c, features.c). Not part of the FFI contract.
 *
 * Audio tensors are f32 [C, S] (channel-first, planar). A 1-D tensor [S] is accepted wherever
 * audio is read and treated as mono [1, S]. Inputs of other float dtypes or with strides are
 * converted/copied once on entry by sao_audio_in(); outputs are always fresh contiguous f32. */
#ifndef SAO_AUDIO_INTERNAL_H
#define SAO_AUDIO_INTERNAL_H
#include "internal.h"
#include "sao_audio.h"
#include "sao_dsp.h"

/* A readable contiguous f32 view of an audio tensor: x + c*samples is channel c. */
typedef struct sao_audio_in_t {
    sao_tensor *hold;          /* handle that keeps the data alive (released by sao_audio_in_free) */
    const float *x;
    int64_t channels, samples;
} sao_audio_in_t;

/* Validates `audio` (CPU, 1-D or 2-D, floating point) and fills `in`. */
int sao_audio_in(sao_ctx *ctx, const char *op, const sao_tensor *audio, sao_audio_in_t *in);
void sao_audio_in_free(sao_audio_in_t *in);

/* New f32 [channels, samples] tensor (uninitialised) and its data pointer. */
sao_tensor *sao_audio_alloc(sao_ctx *ctx, int64_t channels, int64_t samples, float **data);

/* Mono mix-down (mean of channels) of `in` into a malloc'd buffer of in->samples floats;
 * returns NULL on allocation failure. When in->channels == 1 the data is still copied. */
float *sao_audio_mono_buffer(const sao_audio_in_t *in);

/* Plain heap allocation with an error message on failure. */
void *sao_xmalloc(sao_ctx *ctx, const char *op, size_t n);
void *sao_xcalloc(sao_ctx *ctx, const char *op, size_t n);

/* One frame through a plan without framing: buf[j] = frame[j] * window[j], out = rfft(buf)
 * (F complex values as 2F floats). buf and out must come from sao_fft_alloc (SIMD-aligned as
 * FFTW requires for its new-array execute). Thread-safe. */
float *sao_fft_alloc(size_t nfloats);
void sao_fft_free(float *p);
void sao_stft_plan_frame(const sao_stft_plan *p, const float *frame, float *buf, float *out);

#endif

/* sao_synth.h — offline, deterministic rendering of MIDI instruments with libfluidsynth.
 *
 * Part of the FFI contract (read after sao.h and sao_midi.h with '#' lines dropped).
 *
 * A sao_synth is one fluidsynth instance with its SoundFonts loaded once; every render resets it,
 * so the same input always gives bit-identical output, whatever was rendered before. Renders
 * are f32 planar [2, S] (S: audio samples) starting at song time 0. Events are applied at
 * fluidsynth's 64-sample block boundaries (FLUID_BUFSIZE): each one at the boundary nearest to
 * its exact sample position, so timing is within ±32 samples (0.73 ms at 44.1 kHz).
 * One sao_synth must not be used by two threads at once; use one per worker.
 */
#ifndef SAO_SYNTH_H
#define SAO_SYNTH_H
#include "sao.h"
#include "sao_midi.h"
#ifdef __cplusplus
extern "C" {
#endif

typedef struct sao_synth sao_synth;

typedef struct sao_synth_config {
    double sample_rate;            /* 0: 44100 */
    double gain;                   /* master gain; <= 0: 0.2 (fluidsynth's default) */
    int32_t polyphony;             /* voices; 0: 256 */
    int32_t reverb, chorus;        /* fluidsynth's global effects: 0 off (default), 1 on */
    int32_t interpolation;         /* 0: fluidsynth default (4th order); 1 none, 2 linear, 4, 7 (sinc) */
    int32_t channels;              /* MIDI channels (parts per render); 0: 64 */
} sao_synth_config;

/* One instrument of a render: its events and the preset that plays it. */
typedef struct sao_synth_part {
    const sao_midi_instrument *inst;   /* notes (and cc/bends in full mode); is_drum selects the
                                          percussion channel type */
    int32_t sfont;                     /* id from sao_synth_load */
    int32_t bank, preset;              /* drums: bank 128 in GM SoundFonts */
} sao_synth_part;

typedef enum { SAO_SYNTH_NOTES = 0, SAO_SYNTH_FULL = 1 } sao_synth_mode;

typedef struct sao_synth_render_opts {
    int32_t mode;                  /* SAO_SYNTH_NOTES: note on/off only (the seed's renderer);
                                      SAO_SYNTH_FULL: also control changes (sustain, volume, pan,
                                      expression, ...) and pitch bends */
    double until;                  /* render at least up to this time (s), e.g. the song's end */
    double tail;                   /* release tail after the last event / `until` (s), at most */
    double silence_db;             /* < 0: the tail stops once the output stays below this peak
                                      level (dBFS, e.g. -90) and is trimmed there;
                                      >= 0: fixed tail of exactly `tail` seconds */
} sao_synth_render_opts;

/* NULL config: all defaults. */
sao_synth *sao_synth_new(sao_ctx *ctx, const sao_synth_config *config);
void sao_synth_free(sao_synth *synth);
double sao_synth_sample_rate(const sao_synth *synth);

/* Loads a SoundFont (.sf2/.sf3) once; loading the same path again returns the same id. */
int sao_synth_load(sao_ctx *ctx, sao_synth *synth, const char *path, int32_t *sfont_id /* out */);
/* 0 when the SoundFont has (bank, preset), with its name copied to name (NUL-terminated,
 * at most n bytes; name may be NULL); -1 with a message when it does not. */
int sao_synth_preset(sao_ctx *ctx, sao_synth *synth, int32_t sfont_id, int32_t bank, int32_t preset,
                     char *name /* out */, size_t n);

/* Renders n parts together (part i on MIDI channel i) into a new f32 [2, S] tensor. */
sao_tensor *sao_synth_render(sao_ctx *ctx, sao_synth *synth, int32_t n, const sao_synth_part *parts,
                             const sao_synth_render_opts *opts);

#ifdef __cplusplus
}
#endif
#endif

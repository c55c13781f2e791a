/* sao_midi.h — Standard MIDI Files: reader, pretty_midi-style instrument split, writer.
 *
 * Part of the FFI contract (read after sao.h with '#' lines dropped): plain declarations only.
 *
 * The reader parses format 0/1 (2 tolerated) files with running status, meta events, sysex
 * (skipped) and PPQ or SMPTE division, builds the tempo map and gives every event a time in
 * seconds. Notes are paired and grouped into instruments exactly as pretty_midi 0.2 does it
 * (docs/midi.md, DSP_SPEC §3.1):
 *   - tempo, time and key signatures come from track 0 only (default 120 BPM);
 *   - an instrument is (program, channel, track); is_drum = (channel == 9); its name is the
 *     track's name at the moment the instrument is created ('' when none);
 *   - a note-off (or note-on with velocity 0) closes every open note of its (channel, pitch)
 *     that started on an earlier tick; the note goes to the program current at note-off time;
 *   - control changes and pitch bends seen before an instrument exists on (channel, track)
 *     are kept and attached to the instruments created later on that (channel, track).
 * Times are seconds (double), ticks are absolute ticks from the start of the track.
 * Channels and track indices are 0-based (drums: channel 9). Text is UTF-8 (bytes that are
 * not valid UTF-8 are read as Latin-1, as mido does).
 */
#ifndef SAO_MIDI_H
#define SAO_MIDI_H
#include "sao.h"
#ifdef __cplusplus
extern "C" {
#endif

typedef struct sao_midi_note {
    double start, end;             /* seconds */
    int64_t start_tick, end_tick;
    int32_t pitch, velocity;       /* 0..127, 1..127 */
} sao_midi_note;

typedef struct sao_midi_cc {
    double time;
    int64_t tick;
    int32_t number, value;         /* 0..127 */
} sao_midi_cc;

typedef struct sao_midi_bend {
    double time;
    int64_t tick;
    int32_t value;                 /* -8192..8191, 0 = centre */
} sao_midi_bend;

typedef struct sao_midi_tempo {
    double time;
    int64_t tick;
    double bpm;                    /* quarter notes per minute = 6e7 / tempo_us */
    int32_t tempo_us;              /* microseconds per quarter note as in the file (0: implicit 120) */
} sao_midi_tempo;

typedef struct sao_midi_timesig {
    double time;
    int64_t tick;
    int32_t numerator, denominator;  /* denominator is the note value: 4 for x/4 */
} sao_midi_timesig;

typedef struct sao_midi_keysig {
    double time;
    int64_t tick;
    int32_t key;                   /* pretty_midi key number: 0..11 major C..B, 12..23 minor C..B */
    int32_t sharps;                /* -7..7 (negative: flats) as in the file */
    int32_t minor;                 /* 0 major, 1 minor */
} sao_midi_keysig;

typedef struct sao_midi_text {
    double time;
    int64_t tick;
    int32_t type;                  /* meta type: 1 text, 2 copyright, 3 track name, 4 instrument,
                                      5 lyric, 6 marker, 7 cue point */
    int32_t track;
    char *text;
} sao_midi_text;

typedef struct sao_midi_instrument {
    char *name;
    int32_t program;               /* 0..127 */
    int32_t is_drum;
    int32_t channel;               /* 0..15 (reader); the writer chooses its own */
    int32_t track;                 /* source track index (reader) */
    int32_t n_notes, n_cc, n_bends;
    sao_midi_note *notes;
    sao_midi_cc *cc;
    sao_midi_bend *bends;
} sao_midi_instrument;

typedef struct sao_midi_song {
    int32_t format;                /* 0, 1 or 2 */
    int32_t n_tracks;
    int32_t ticks_per_beat;        /* PPQ division; 0 when the file uses SMPTE time */
    int32_t smpte_fps;             /* 24, 25, 29 (29.97 drop frame), 30; 0 for PPQ */
    int32_t smpte_ticks_per_frame;
    int64_t max_tick;              /* largest absolute tick of any event (end-of-track included) */
    double end_time;               /* pretty_midi get_end_time(): last note end, CC, bend, meta */
    double length;                 /* playing length as mido's MidiFile.length: tempo events of all
                                      tracks, up to the last event (end-of-track included) */
    int32_t n_tempos, n_timesigs, n_keysigs, n_texts, n_instruments, n_warnings;
    sao_midi_tempo *tempos;        /* at least one (tick 0) */
    sao_midi_timesig *timesigs;
    sao_midi_keysig *keysigs;
    sao_midi_text *texts;          /* every text-like meta event (types 1..7), all tracks */
    sao_midi_instrument *instruments;
    char **track_names;            /* n_tracks entries, "" when a track has none */
    char **warnings;               /* things tolerated while reading (ignored bad metas, ...) */
} sao_midi_song;

/* Reads a .mid/.midi (or RIFF RMID) file. NULL on error; the message names the file and the
 * fault: "midi_read: song.mid: track 2 at byte 1234: truncated event (file cut short?)". */
sao_midi_song *sao_midi_read(sao_ctx *ctx, const char *path);
/* Same from memory; `name` is used in messages only (may be NULL). */
sao_midi_song *sao_midi_parse(sao_ctx *ctx, const void *data, size_t n, const char *name);
/* Frees a song returned by sao_midi_read / sao_midi_parse (NULL is fine). */
void sao_midi_free(sao_midi_song *song);

/* Writes a format 1 file atomically: track 0 holds tempo, time/key signatures and text events,
 * then one track per instrument (name, program change at tick 0, notes, CC, pitch bends).
 * Only the seconds fields are read (all *tick fields are ignored): times are converted with the
 * song's tempo map at song->ticks_per_beat (480 when 0). Drums go on channel 9, the others on
 * channels 0..15 without 9, in order, wrapping around. Reads n_* / arrays; other fields ignored. */
int sao_midi_write(sao_ctx *ctx, const char *path, const sao_midi_song *song);

/* Tempo map helpers for a song (read or built): tick <-> seconds. */
double sao_midi_tick_to_time(const sao_midi_song *song, int64_t tick);
int64_t sao_midi_time_to_tick(const sao_midi_song *song, double time);

#ifdef __cplusplus
}
#endif
#endif

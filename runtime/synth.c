/* synth.c — offline rendering of MIDI instruments with libfluidsynth, deterministic to the bit.
 *
 * What is ours (DSP_SPEC §3.2): the event scheduler, tail handling and SoundFont bookkeeping;
 * the synthesis is fluidsynth's. A render walks the time-sorted events of its parts, renders the
 * audio up to each event's sample position with fluid_synth_write_float, then sends the event.
 *
 * Timing: fluidsynth applies events between its 64-sample blocks (FLUID_BUFSIZE), so every event
 * is placed on the block boundary nearest to round(t * rate) (error <= 32 samples) and every
 * write is a whole number of blocks.
 *
 * Determinism: the SoundFonts are loaded once into a "library" synth that never plays; each
 * render creates a fresh fluid_synth (under 1 ms), lends it the loaded SoundFonts
 * (fluid_synth_add_sfont / remove_sfont) and deletes it afterwards. A render therefore starts
 * from a clean state whatever was rendered before (fluid_synth_system_reset does not stop voices
 * that are already releasing, so reusing one synth would leak tails into the next render).
 *
 * Same-key overlaps: pretty_midi's note lists may overlap on one key; fluidsynth's note-off
 * releases every voice of that key, so a note-off is only sent when the last overlapping note of
 * that (channel, key) ends.
 *
 * fluidsynth logs through a process-wide callback; its errors/warnings are kept per thread and
 * quoted in our error messages instead of being printed.
 */
#include "internal.h"
#include "sao_synth.h"
#include <fluidsynth.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK 64                      /* FLUID_BUFSIZE */
#define CHUNK (BLOCK * 64)            /* longest single write between events */
#define QUIET_RUN 4096                /* tail: this many samples below the threshold end it */

struct sao_synth {
    fluid_settings_t *settings;
    fluid_synth_t *lib;               /* owns the SoundFonts; never renders */
    double rate;
    int channels;
    int effects;                      /* reverb or chorus on: voices ending is not silence */
    int interpolation;
    int n_fonts;
    char **font_paths;
    int *font_ids;                    /* our ids: the library synth's */
    fluid_sfont_t **fonts;
};

/* ---- fluidsynth's log --------------------------------------------------------------------- */

static __thread char fluid_last[256];
static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void log_capture(int level, const char *message, void *data) {
    (void)level;
    (void)data;
    snprintf(fluid_last, sizeof fluid_last, "%s", message ? message : "");
}

static void log_setup(void) {
    fluid_set_log_function(FLUID_PANIC, log_capture, NULL);
    fluid_set_log_function(FLUID_ERR, log_capture, NULL);
    fluid_set_log_function(FLUID_WARN, log_capture, NULL);
    fluid_set_log_function(FLUID_INFO, NULL, NULL);
    fluid_set_log_function(FLUID_DBG, NULL, NULL);
}

/* ---- handle ------------------------------------------------------------------------------- */

double sao_synth_sample_rate(const sao_synth *s) { return s ? s->rate : 0; }

void sao_synth_free(sao_synth *s) {
    if (!s) return;
    if (s->lib) delete_fluid_synth(s->lib);
    if (s->settings) delete_fluid_settings(s->settings);
    for (int i = 0; i < s->n_fonts; i++) free(s->font_paths[i]);
    free(s->font_paths);
    free(s->font_ids);
    free(s->fonts);
    free(s);
}

sao_synth *sao_synth_new(sao_ctx *ctx, const sao_synth_config *cfg) {
    pthread_once(&log_once, log_setup);
    sao_synth_config c = { 0 };
    if (cfg) c = *cfg;
    if (c.sample_rate == 0) c.sample_rate = 44100;
    if (c.gain <= 0) c.gain = 0.2;
    if (c.polyphony == 0) c.polyphony = 256;
    if (c.channels == 0) c.channels = 64;
    if (!(c.sample_rate >= 8000 && c.sample_rate <= 96000))
        return sao_err_null(ctx, "synth_new", "sample rate %g: fluidsynth supports 8000..96000 Hz",
                            c.sample_rate);
    if (c.polyphony < 1 || c.polyphony > 65535)
        return sao_err_null(ctx, "synth_new", "polyphony %d: need 1..65535", c.polyphony);
    if (c.channels < 1 || c.channels > 256)
        return sao_err_null(ctx, "synth_new", "channels %d: need 1..256", c.channels);
    if (!(c.gain <= 10))
        return sao_err_null(ctx, "synth_new", "gain %g: need 0..10", c.gain);
    if (c.interpolation != 0 && c.interpolation != 1 && c.interpolation != 2 && c.interpolation != 4 &&
        c.interpolation != 7)
        return sao_err_null(ctx, "synth_new", "interpolation %d: need 0 (default), 1, 2, 4 or 7",
                            c.interpolation);
    sao_synth *s = calloc(1, sizeof *s);
    if (!s) return sao_err_null(ctx, "synth_new", "out of memory");
    s->rate = c.sample_rate;
    s->channels = (c.channels + 15) / 16 * 16;
    s->effects = c.reverb || c.chorus;
    s->interpolation = c.interpolation;
    fluid_last[0] = 0;
    s->settings = new_fluid_settings();
    if (!s->settings) {
        sao_synth_free(s);
        return sao_err_null(ctx, "synth_new", "fluidsynth: cannot create settings (%s)", fluid_last);
    }
    fluid_settings_t *st = s->settings;
    fluid_settings_setnum(st, "synth.sample-rate", c.sample_rate);
    fluid_settings_setnum(st, "synth.gain", c.gain);
    fluid_settings_setint(st, "synth.polyphony", c.polyphony);
    fluid_settings_setint(st, "synth.midi-channels", s->channels);
    fluid_settings_setint(st, "synth.reverb.active", c.reverb ? 1 : 0);
    fluid_settings_setint(st, "synth.chorus.active", c.chorus ? 1 : 0);
    fluid_settings_setint(st, "synth.cpu-cores", 1);
    fluid_settings_setint(st, "synth.threadsafe-api", 0);
    fluid_settings_setint(st, "synth.lock-memory", 0);
    fluid_settings_setint(st, "synth.dynamic-sample-loading", 0);
    fluid_settings_setint(st, "synth.verbose", 0);
    s->lib = new_fluid_synth(st);
    if (!s->lib) {
        sao_synth_free(s);
        return sao_err_null(ctx, "synth_new", "fluidsynth: cannot create a synth (%s)", fluid_last);
    }
    return s;
}

int sao_synth_load(sao_ctx *ctx, sao_synth *s, const char *path, int32_t *id) {
    if (!s || !path || !id) return sao_err(ctx, "synth_load", "no synth, path or id given");
    for (int i = 0; i < s->n_fonts; i++)
        if (!strcmp(s->font_paths[i], path)) { *id = s->font_ids[i]; return 0; }
    if (access(path, R_OK) != 0)
        return sao_err(ctx, "synth_load", "%s: SoundFont not found or not readable (install the Debian "
                       "package fluid-soundfont-gm for the default, or set soundfont= in the "
                       "instrument map / SAO_SOUNDFONT)", path);
    /* SF2/SF3 are RIFF "sfbk" (DLS, which fluidsynth may also read, is RIFF "DLS "); checking
     * first keeps other files away from fluidsynth's loaders and their stderr noise */
    FILE *f0 = fopen(path, "rb");
    unsigned char magic[12] = { 0 };
    size_t got = f0 ? fread(magic, 1, sizeof magic, f0) : 0;
    if (f0) fclose(f0);
    if (got < 12 || memcmp(magic, "RIFF", 4) != 0 ||
        (memcmp(magic + 8, "sfbk", 4) != 0 && memcmp(magic + 8, "DLS ", 4) != 0))
        return sao_err(ctx, "synth_load", "%s: fluidsynth cannot load it as a SoundFont (no RIFF "
                       "sfbk header: not an SF2/SF3 file)", path);
    fluid_last[0] = 0;
    int fid = fluid_synth_sfload(s->lib, path, 0);
    if (fid == FLUID_FAILED)
        return sao_err(ctx, "synth_load", "%s: fluidsynth cannot load it as a SoundFont (%s)", path,
                       fluid_last[0] ? fluid_last : "not an SF2/SF3 file?");
    char **p = realloc(s->font_paths, (size_t)(s->n_fonts + 1) * sizeof(char *));
    if (p) s->font_paths = p;
    int *q = realloc(s->font_ids, (size_t)(s->n_fonts + 1) * sizeof(int));
    if (q) s->font_ids = q;
    fluid_sfont_t **f = realloc(s->fonts, (size_t)(s->n_fonts + 1) * sizeof(fluid_sfont_t *));
    if (f) s->fonts = f;
    char *dup = strdup(path);
    fluid_sfont_t *sf = fluid_synth_get_sfont_by_id(s->lib, fid);
    if (!p || !q || !f || !dup || !sf) {
        free(dup);
        if (sf) fluid_synth_sfunload(s->lib, fid, 0);
        return sao_err(ctx, "synth_load", "%s: out of memory", path);
    }
    s->font_paths[s->n_fonts] = dup;
    s->fonts[s->n_fonts] = sf;
    s->font_ids[s->n_fonts++] = fid;
    *id = fid;
    return 0;
}

static int font_index(const sao_synth *s, int sfid) {
    for (int i = 0; i < s->n_fonts; i++) if (s->font_ids[i] == sfid) return i;
    return -1;
}

static fluid_preset_t *find_preset(sao_synth *s, int sfid, int bank, int preset) {
    int i = font_index(s, sfid);
    if (i < 0 || bank < 0 || bank > 16383 || preset < 0 || preset > 127) return NULL;
    return fluid_sfont_get_preset(s->fonts[i], bank, preset);
}

static const char *font_path(const sao_synth *s, int sfid) {
    for (int i = 0; i < s->n_fonts; i++) if (s->font_ids[i] == sfid) return s->font_paths[i];
    return "?";
}

int sao_synth_preset(sao_ctx *ctx, sao_synth *s, int32_t sfid, int32_t bank, int32_t preset, char *name,
                     size_t n) {
    if (!s) return sao_err(ctx, "synth_preset", "no synth given");
    if (font_index(s, sfid) < 0)
        return sao_err(ctx, "synth_preset", "SoundFont id %d is not loaded in this synth", sfid);
    fluid_preset_t *p = find_preset(s, sfid, bank, preset);
    if (!p)
        return sao_err(ctx, "synth_preset", "%s: no preset %d in bank %d", font_path(s, sfid), preset, bank);
    if (name && n) snprintf(name, n, "%s", fluid_preset_get_name(p));
    return 0;
}

/* ---- rendering ---------------------------------------------------------------------------- */

enum { SEV_OFF = 0, SEV_CC = 1, SEV_BEND = 2, SEV_ON = 3 };

typedef struct sev {
    int64_t at;                       /* sample, a multiple of BLOCK */
    int32_t cls, seq;                 /* same sample: note-offs, then controls, then note-ons */
    int32_t val;                      /* bend (0..16383) */
    uint8_t kind, ch, a, b;
} sev;

static int sev_cmp(const void *x, const void *y) {
    const sev *a = x, *b = y;
    if (a->at != b->at) return a->at < b->at ? -1 : 1;
    if (a->cls != b->cls) return a->cls - b->cls;
    return a->seq - b->seq;
}

/* Nearest block boundary to time t (s). */
static int64_t block_at(double t, double rate) {
    if (!(t > 0)) return 0;
    return (int64_t)llround(t * rate / BLOCK) * BLOCK;
}

static int64_t ceil_block(int64_t n) { return (n + BLOCK - 1) / BLOCK * BLOCK; }

static int render_span(fluid_synth_t *fs, float *L, float *R, int64_t from, int64_t to) {
    while (from < to) {
        int64_t n = to - from < CHUNK ? to - from : CHUNK;
        if (fluid_synth_write_float(fs, (int)n, L, (int)from, 1, R, (int)from, 1) != FLUID_OK) return -1;
        from += n;
    }
    return 0;
}

/* A fresh fluid_synth for one render, with the library's SoundFonts lent to it; rid[i] is the
 * id font i has in it. */
static fluid_synth_t *player_new(sao_synth *s, int *rid) {
    fluid_synth_t *fs = new_fluid_synth(s->settings);
    if (!fs) return NULL;
    if (s->interpolation) fluid_synth_set_interp_method(fs, -1, s->interpolation);
    for (int i = 0; i < s->n_fonts; i++) {
        rid[i] = fluid_synth_add_sfont(fs, s->fonts[i]);
        if (rid[i] == FLUID_FAILED) {
            for (int j = 0; j < i; j++) fluid_synth_remove_sfont(fs, s->fonts[j]);
            delete_fluid_synth(fs);
            return NULL;
        }
    }
    return fs;
}

/* Takes the SoundFonts back (they stay loaded in the library synth) and deletes the player. */
static void player_free(sao_synth *s, fluid_synth_t *fs) {
    if (!fs) return;
    for (int i = 0; i < s->n_fonts; i++) fluid_synth_remove_sfont(fs, s->fonts[i]);
    delete_fluid_synth(fs);
}

sao_tensor *sao_synth_render(sao_ctx *ctx, sao_synth *s, int32_t n, const sao_synth_part *parts,
                             const sao_synth_render_opts *opts) {
    const char *op = "synth_render";
    if (!s || n < 0 || (n > 0 && !parts)) return sao_err_null(ctx, op, "no synth or parts given");
    if (n > s->channels)
        return sao_err_null(ctx, op, "%d parts but the synth has %d MIDI channels (render fewer parts "
                            "at once, or create the synth with more channels)", n, s->channels);
    sao_synth_render_opts o = { 0 };
    if (opts) o = *opts;
    if (!isfinite(o.until) || !isfinite(o.tail) || o.until < 0 || o.tail < 0 || o.tail > 600 ||
        isnan(o.silence_db))
        return sao_err_null(ctx, op, "bad options: until %g, tail %g, silence_db %g (need finite "
                            "until >= 0, 0 <= tail <= 600)", o.until, o.tail, o.silence_db);
    int full = o.mode == SAO_SYNTH_FULL;
    const double rate = s->rate;

    /* events */
    int64_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        const sao_midi_instrument *in = parts[i].inst;
        if (!in) return sao_err_null(ctx, op, "part %d has no instrument", i + 1);
        if (in->n_notes < 0 || in->n_cc < 0 || in->n_bends < 0 || (in->n_notes && !in->notes) ||
            (in->n_cc && !in->cc) || (in->n_bends && !in->bends))
            return sao_err_null(ctx, op, "part %d: bad event arrays", i + 1);
        total += 2 * (int64_t)in->n_notes + (full ? (int64_t)in->n_cc + in->n_bends : 0);
    }
    if (total > INT32_MAX / 2) return sao_err_null(ctx, op, "too many events (%lld)", (long long)total);
    sev *ev = malloc((size_t)(total > 0 ? total : 1) * sizeof(sev));
    if (!ev) return sao_err_null(ctx, op, "out of memory for %lld events", (long long)total);
    int32_t ne = 0;
    double tmax = o.until;             /* the last event's exact time: the length counts from it */
    for (int32_t i = 0; i < n; i++) {
        const sao_midi_instrument *in = parts[i].inst;
        for (int32_t j = 0; j < in->n_notes; j++) {
            const sao_midi_note *nt = &in->notes[j];
            if (nt->pitch < 0 || nt->pitch > 127 || !isfinite(nt->start) || !isfinite(nt->end) ||
                nt->start < 0 || nt->end < nt->start) {
                free(ev);
                return sao_err_null(ctx, op, "part %d (%s) note %d: pitch %d, %g..%g s is not a valid "
                                    "note (pitch 0..127, 0 <= start <= stop)", i + 1,
                                    in->name ? in->name : "", j + 1, nt->pitch, nt->start, nt->end);
            }
            if (nt->velocity <= 0) continue;
            if (nt->end > tmax) tmax = nt->end;
            int vel = nt->velocity > 127 ? 127 : nt->velocity;
            int64_t on = block_at(nt->start, rate), off = block_at(nt->end, rate);
            if (off <= on) off = on + BLOCK;   /* shorter than a block: one block long */
            ev[ne] = (sev){ .at = on, .cls = 2, .seq = ne, .kind = SEV_ON, .ch = (uint8_t)i,
                            .a = (uint8_t)nt->pitch, .b = (uint8_t)vel };
            ne++;
            ev[ne] = (sev){ .at = off, .cls = 0, .seq = ne, .kind = SEV_OFF, .ch = (uint8_t)i,
                            .a = (uint8_t)nt->pitch };
            ne++;
        }
        if (!full) continue;
        for (int32_t j = 0; j < in->n_cc; j++) {
            const sao_midi_cc *c = &in->cc[j];
            if (c->number < 0 || c->number > 127 || c->value < 0 || c->value > 127 || !isfinite(c->time)) {
                free(ev);
                return sao_err_null(ctx, op, "part %d control change %d: number %d value %d at %g is "
                                    "not valid", i + 1, j + 1, c->number, c->value, c->time);
            }
            if (c->time > tmax) tmax = c->time;
            ev[ne] = (sev){ .at = block_at(c->time, rate), .cls = 1, .seq = ne, .kind = SEV_CC,
                            .ch = (uint8_t)i, .a = (uint8_t)c->number, .b = (uint8_t)c->value };
            ne++;
        }
        for (int32_t j = 0; j < in->n_bends; j++) {
            const sao_midi_bend *b = &in->bends[j];
            if (b->value < -8192 || b->value > 8191 || !isfinite(b->time)) {
                free(ev);
                return sao_err_null(ctx, op, "part %d pitch bend %d: value %d at %g is not valid "
                                    "(-8192..8191)", i + 1, j + 1, b->value, b->time);
            }
            if (b->time > tmax) tmax = b->time;
            ev[ne] = (sev){ .at = block_at(b->time, rate), .cls = 1, .seq = ne, .kind = SEV_BEND,
                            .ch = (uint8_t)i, .val = b->value + 8192 };
            ne++;
        }
    }
    qsort(ev, (size_t)ne, sizeof(sev), sev_cmp);

    /* lengths: the output is round(max(last event time, until) * rate) + round(tail * rate)
     * samples (or less when the tail is trimmed at silence); rendering goes on in whole blocks
     * at least up to the last (block-placed) event */
    int64_t end = (int64_t)llround(tmax * rate);
    int64_t tail = (int64_t)llround(o.tail * rate);
    int64_t body = ceil_block(end);
    if (ne > 0 && ev[ne - 1].at > body) body = ev[ne - 1].at;
    int64_t cap = ceil_block(end + tail);
    if (cap < body) cap = body;
    if (cap < BLOCK) cap = BLOCK;
    if (cap > ((int64_t)1 << 31) - BLOCK) {
        free(ev);
        return sao_err_null(ctx, op, "render of %.0f s is too long", (double)cap / rate);
    }
    int64_t shape[2] = { 2, cap };
    sao_tensor *t = sao_tensor_empty(ctx, SAO_F32, 2, shape);
    if (!t) { free(ev); return NULL; }
    float *L = sao_tensor_data(t), *R = L + cap;

    /* the presets must exist (checked before any work) */
    for (int32_t i = 0; i < n; i++) {
        const sao_synth_part *p = &parts[i];
        if (!find_preset(s, p->sfont, p->bank, p->preset)) {
            free(ev);
            sao_tensor_free(t);
            return sao_err_null(ctx, op, "part %d (%s): %s has no preset %d in bank %d (check the "
                                "instrument map)", i + 1, p->inst->name ? p->inst->name : "",
                                font_index(s, p->sfont) >= 0 ? font_path(s, p->sfont)
                                                             : "SoundFont id not loaded",
                                p->preset, p->bank);
        }
    }
    /* a fresh player with every channel set for its part */
    int *rid = calloc((size_t)s->n_fonts + 1, sizeof(int));
    fluid_synth_t *fs = rid ? player_new(s, rid) : NULL;
    if (!fs) {
        free(rid);
        free(ev);
        sao_tensor_free(t);
        return sao_err_null(ctx, op, "fluidsynth: cannot create a synth (%s)", fluid_last);
    }
    for (int32_t i = 0; i < n; i++) {
        const sao_synth_part *p = &parts[i];
        fluid_synth_set_channel_type(fs, i, p->inst->is_drum ? CHANNEL_TYPE_DRUM : CHANNEL_TYPE_MELODIC);
        fluid_synth_program_select(fs, i, rid[font_index(s, p->sfont)], p->bank, p->preset);
    }
    free(rid);

    uint16_t *held = calloc((size_t)n * 128 + 1, sizeof(uint16_t));   /* sounding notes per key */
    if (!held) {
        free(ev);
        sao_tensor_free(t);
        player_free(s, fs);
        return sao_err_null(ctx, op, "out of memory");
    }
    int64_t pos = 0;
    int bad = 0;
    for (int32_t k = 0; k < ne && !bad; k++) {
        const sev *e = &ev[k];
        if (e->at > pos) {
            if (sao_interrupt_pending()) { bad = 2; break; }
            if (render_span(fs, L, R, pos, e->at)) { bad = 1; break; }
            pos = e->at;
        }
        uint16_t *h = &held[(size_t)e->ch * 128 + e->a];
        switch (e->kind) {
        case SEV_ON:
            if (*h < UINT16_MAX) (*h)++;
            fluid_synth_noteon(fs, e->ch, e->a, e->b);
            break;
        case SEV_OFF:
            if (*h > 0 && --(*h) == 0) fluid_synth_noteoff(fs, e->ch, e->a);
            break;
        case SEV_CC:
            fluid_synth_cc(fs, e->ch, e->a, e->b);
            break;
        case SEV_BEND:
            fluid_synth_pitch_bend(fs, e->ch, e->val);
            break;
        }
    }
    free(held);
    free(ev);
    if (!bad && render_span(fs, L, R, pos, body)) bad = 1;
    pos = body;
    if (!bad && full)                    /* let held pedals go so that the tail is a release */
        for (int32_t i = 0; i < n; i++) {
            fluid_synth_cc(fs, i, 64, 0);
            fluid_synth_cc(fs, i, 66, 0);
        }

    /* the tail */
    int64_t len = end + tail;
    if (!bad && o.silence_db >= 0) {
        if (render_span(fs, L, R, pos, cap)) bad = 1;
    } else if (!bad) {
        const float thr = (float)pow(10.0, o.silence_db / 20.0);
        int64_t last_loud = end - 1;
        for (int64_t j = end; j < body; j++)
            if (fabsf(L[j]) > thr || fabsf(R[j]) > thr) last_loud = j;
        while (pos < cap) {
            if (sao_interrupt_pending()) { bad = 2; break; }
            int64_t m = cap - pos < 512 ? cap - pos : 512;
            if (render_span(fs, L, R, pos, pos + m)) { bad = 1; break; }
            for (int64_t j = pos; j < pos + m; j++)
                if (fabsf(L[j]) > thr || fabsf(R[j]) > thr) last_loud = j;
            pos += m;
            if (pos - (last_loud + 1) >= QUIET_RUN) break;
            if (!s->effects && fluid_synth_get_active_voice_count(fs) == 0) break;
        }
        len = last_loud + 1 > end ? last_loud + 1 : end;
        if (len > end + tail) len = end + tail;
    }
    player_free(s, fs);
    if (bad) {
        sao_tensor_free(t);
        if (bad == 2) return sao_err_null(ctx, op, "interrupted");
        return sao_err_null(ctx, op, "fluidsynth failed to render (%s)", fluid_last);
    }
    if (len == cap) return t;
    int64_t shape2[2] = { 2, len };
    sao_tensor *u = sao_tensor_empty(ctx, SAO_F32, 2, shape2);
    if (!u) { sao_tensor_free(t); return NULL; }
    float *d = sao_tensor_data(u);
    memcpy(d, L, (size_t)len * sizeof(float));
    memcpy(d + len, R, (size_t)len * sizeof(float));
    sao_tensor_free(t);
    return u;
}

/* midi.c — Standard MIDI Files: a reader that splits notes into instruments the way pretty_midi
 * does, and a format 1 writer.
 *
 * Reading happens in three passes over the bytes of the file:
 *   1. chunks and events: MThd, then every MTrk chunk is decoded into a flat event list (delta
 *      times made absolute, running status resolved, sysex skipped, meta events kept as pointers
 *      into the file buffer). Unknown chunks are skipped, as the SMF spec asks.
 *   2. the tempo map: tempo events of track 0 only, pretty_midi's rules (a tempo at tick 0
 *      replaces the default 120 BPM, repeats of the same tempo are dropped); every event gets
 *      its time in seconds from it (SMPTE files: tick / (fps * ticks_per_frame)).
 *   3. the instrument split: pretty_midi 0.2's _load_instruments, rule for rule, including its
 *      "straggler" control changes and pitch bends (events seen before a note on a channel of a
 *      track), whose lists are shared by every instrument later created on that (channel, track).
 * Bad input never crashes: every fault is an error message naming the file, the track, the
 * byte offset and the cause. Things that pretty_midi would trip over but that are harmless to
 * skip (a tempo event of the wrong length, an impossible key signature) become warnings.
 *
 * The writer turns seconds back into ticks with the song's own tempo map, so a file read and
 * written again gives the same ticks (docs/midi.md).
 */
#include "internal.h"
#include "sao_midi.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIDI_MAX_FILE (256u << 20)   /* larger is not a MIDI file anyone made on purpose */
#define MIDI_MAX_WARNINGS 32
#define OP_READ "midi_read"
#define OP_WRITE "midi_write"

/* ---- small helpers ------------------------------------------------------------------------ */

/* Grows *p (elements of `elem` bytes) so that it holds at least `need` elements. */
static int grow(void **p, int32_t *cap, int64_t need, size_t elem) {
    if (need <= *cap) return 0;
    if (need > INT32_MAX / 2) return -1;
    int64_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return -1;
    *p = q;
    *cap = (int32_t)c;
    return 0;
}

static int valid_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        if (c < 0x80) k = 0;
        else if ((c & 0xE0) == 0xC0 && c >= 0xC2) k = 1;
        else if ((c & 0xF0) == 0xE0) k = 2;
        else if ((c & 0xF8) == 0xF0 && c <= 0xF4) k = 3;
        else return 0;
        if (k > n - i - 1) return 0;
        for (size_t j = 1; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return 0;
        i += k + 1;
    }
    return 1;
}

/* Text of a meta event as a NUL-terminated UTF-8 string: kept when it is valid UTF-8, else read
 * as Latin-1 (mido's default charset). Embedded NULs end the string. */
static char *text_dup(const uint8_t *s, size_t n) {
    size_t m = 0;
    while (m < n && s[m]) m++;
    n = m;
    if (valid_utf8(s, n)) {
        char *r = malloc(n + 1);
        if (!r) return NULL;
        memcpy(r, s, n);
        r[n] = 0;
        return r;
    }
    char *r = malloc(2 * n + 1), *o = r;
    if (!r) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80) *o++ = (char)s[i];
        else {
            *o++ = (char)(0xC0 | (s[i] >> 6));
            *o++ = (char)(0x80 | (s[i] & 0x3F));
        }
    }
    *o = 0;
    return r;
}

static char *str_dup(const char *s) {
    size_t n = strlen(s ? s : "");
    char *r = malloc(n + 1);
    if (r) memcpy(r, s ? s : "", n + 1);
    return r;
}

/* ---- pass 1: chunks and events ------------------------------------------------------------ */

enum { EV_NOTE_ON, EV_NOTE_OFF, EV_CC, EV_PROGRAM, EV_BEND, EV_META, EV_END };

typedef struct ev {
    int64_t tick;
    double time;
    const uint8_t *data;   /* meta payload (points into the file buffer) */
    uint32_t len;
    int32_t track;
    int16_t bend;          /* EV_BEND: -8192..8191 */
    uint8_t kind, ch, a, b; /* a: pitch/cc number/program/meta type, b: velocity/value */
} ev;

typedef struct parser {
    sao_ctx *ctx;
    const char *name;
    const uint8_t *base;
    size_t n;
    ev *evs;
    int32_t n_evs, cap_evs;
    sao_midi_song *song;
    int32_t cap_warn;
} parser;

static void warn(parser *P, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(parser *P, const char *fmt, ...) {
    sao_midi_song *s = P->song;
    if (s->n_warnings > MIDI_MAX_WARNINGS) return;
    char buf[256];
    if (s->n_warnings == MIDI_MAX_WARNINGS) {
        snprintf(buf, sizeof buf, "more warnings not shown");
    } else {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
    }
    if (grow((void **)&s->warnings, &P->cap_warn, s->n_warnings + 1, sizeof(char *)) != 0) return;
    char *w = str_dup(buf);
    if (w) s->warnings[s->n_warnings++] = w;
}

static int fail_at(parser *P, int track, size_t off, const char *cause, const char *hint) {
    if (track >= 0)
        return sao_err(P->ctx, OP_READ, "%s: track %d at byte %zu: %s%s%s%s", P->name, track, off,
                       cause, hint ? " (" : "", hint ? hint : "", hint ? ")" : "");
    return sao_err(P->ctx, OP_READ, "%s: %s%s%s%s", P->name, cause, hint ? " (" : "",
                   hint ? hint : "", hint ? ")" : "");
}

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static int push_ev(parser *P, const ev *e) {
    if (grow((void **)&P->evs, &P->cap_evs, (int64_t)P->n_evs + 1, sizeof(ev)) != 0)
        return sao_err(P->ctx, OP_READ, "%s: out of memory (%d events)", P->name, P->n_evs);
    P->evs[P->n_evs++] = *e;
    return 0;
}

/* Variable-length quantity: at most 4 bytes (values up to 0x0FFFFFFF). Returns bytes used,
 * 0 when the chunk ends inside it, -1 when it is longer than 4 bytes. */
static int read_vlq(const uint8_t *p, const uint8_t *end, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        if (p + i >= end) return 0;
        v = (v << 7) | (p[i] & 0x7F);
        if (!(p[i] & 0x80)) {
            *out = v;
            return i + 1;
        }
    }
    return -1;
}

/* Decodes one MTrk chunk body [p, end) into events of track `tr`. */
static int parse_track(parser *P, int tr, const uint8_t *p, const uint8_t *end) {
    int64_t tick = 0;
    int status = 0;           /* running status (channel messages only) */
    int ended = 0;
    while (p < end) {
        size_t off = (size_t)(p - P->base);
        uint32_t delta;
        int k = read_vlq(p, end, &delta);
        if (k == 0) return fail_at(P, tr, off, "truncated delta time at the end of the track chunk",
                                   "file cut short or chunk length wrong");
        if (k < 0) return fail_at(P, tr, off, "bad variable-length delta time (more than 4 bytes)",
                                  "corrupt file");
        p += k;
        tick += delta;
        if (p >= end) return fail_at(P, tr, off, "truncated event: the chunk ends after a delta time",
                                     "file cut short or chunk length wrong");
        off = (size_t)(p - P->base);
        int st = *p;
        if (st < 0x80) {
            if (!status) return fail_at(P, tr, off, "running status without a previous status byte",
                                        "corrupt track data");
            st = status;
        } else {
            p++;
        }
        ev e;
        memset(&e, 0, sizeof e);
        e.tick = tick;
        e.track = tr;
        if (st == 0xFF) {                       /* meta: type, length, data */
            if (p >= end) return fail_at(P, tr, off, "truncated meta event", "file cut short?");
            int type = *p++;
            uint32_t len;
            k = read_vlq(p, end, &len);
            if (k == 0) return fail_at(P, tr, off, "truncated meta event length", "file cut short?");
            if (k < 0) return fail_at(P, tr, off, "bad variable-length meta event length", "corrupt file");
            p += k;
            if (len > (size_t)(end - p))
                return fail_at(P, tr, off, "meta event runs past the end of its track chunk",
                               "file cut short or chunk length wrong");
            e.kind = EV_META;
            e.a = (uint8_t)type;
            e.data = p;
            e.len = len;
            p += len;
            if (type == 0x2F) {
                e.kind = EV_END;
                if (push_ev(P, &e)) return -1;
                ended = 1;
                break;
            }
            if (push_ev(P, &e)) return -1;
            continue;
        }
        if (st == 0xF0 || st == 0xF7) {         /* sysex / escape: length, data (skipped) */
            uint32_t len;
            k = read_vlq(p, end, &len);
            if (k == 0) return fail_at(P, tr, off, "truncated sysex length", "file cut short?");
            if (k < 0) return fail_at(P, tr, off, "bad variable-length sysex length", "corrupt file");
            p += k;
            if (len > (size_t)(end - p))
                return fail_at(P, tr, off, "sysex event runs past the end of its track chunk",
                               "file cut short or chunk length wrong");
            p += len;
            continue;
        }
        if (st >= 0xF1) {                       /* system common / real-time: not in files, skip */
            int nd;
            switch (st) {
            case 0xF1: case 0xF3: nd = 1; break;
            case 0xF2: nd = 2; break;
            case 0xF6: case 0xF8: case 0xFA: case 0xFB: case 0xFC: case 0xFE: nd = 0; break;
            default: {
                char cause[64];
                snprintf(cause, sizeof cause, "undefined status byte 0x%02X", st);
                return fail_at(P, tr, off, cause, "corrupt track data");
            }
            }
            if ((size_t)(end - p) < (size_t)nd)
                return fail_at(P, tr, off, "truncated event", "file cut short?");
            p += nd;
            warn(P, "track %d: system message 0x%02X at tick %lld skipped", tr, st, (long long)tick);
            continue;
        }
        /* channel message */
        status = st;
        int hi = st & 0xF0, nd = (hi == 0xC0 || hi == 0xD0) ? 1 : 2;
        if ((size_t)(end - p) < (size_t)nd)
            return fail_at(P, tr, off, "truncated channel event at the end of the track chunk",
                           "file cut short or chunk length wrong");
        for (int i = 0; i < nd; i++) {
            if (p[i] & 0x80) {
                char cause[96];
                snprintf(cause, sizeof cause, "data byte 0x%02X >= 0x80 in channel message 0x%02X",
                         p[i], st);
                return fail_at(P, tr, off, cause, "corrupt track data");
            }
        }
        e.ch = (uint8_t)(st & 0x0F);
        e.a = p[0];
        e.b = nd > 1 ? p[1] : 0;
        p += nd;
        switch (hi) {
        case 0x80: e.kind = EV_NOTE_OFF; break;
        case 0x90: e.kind = e.b ? EV_NOTE_ON : EV_NOTE_OFF; break;
        case 0xB0: e.kind = EV_CC; break;
        case 0xC0: e.kind = EV_PROGRAM; break;
        case 0xE0: e.kind = EV_BEND; e.bend = (int16_t)(((e.b << 7) | e.a) - 8192); break;
        default: continue;                      /* aftertouch: not used */
        }
        if (push_ev(P, &e)) return -1;
    }
    if (!ended) {
        ev e;
        memset(&e, 0, sizeof e);
        e.kind = EV_END;
        e.tick = tick;
        e.track = tr;
        if (push_ev(P, &e)) return -1;
    } else if (p < end) {
        warn(P, "track %d: %zu bytes after end-of-track ignored", tr, (size_t)(end - p));
    }
    return 0;
}

static int parse_chunks(parser *P, int *ntracks_out) {
    const uint8_t *p = P->base, *end = P->base + P->n;
    sao_midi_song *s = P->song;
    /* RIFF RMID wrapper: the SMF is the payload of the "data" chunk */
    if (P->n >= 20 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "RMID", 4)) {
        const uint8_t *q = p + 12;
        while (q + 8 <= end) {
            uint32_t len = (uint32_t)q[4] | ((uint32_t)q[5] << 8) | ((uint32_t)q[6] << 16) |
                           ((uint32_t)q[7] << 24);
            if (!memcmp(q, "data", 4)) {
                p = q + 8;
                if (len < (size_t)(end - p)) end = p + len;
                break;
            }
            if (len > (size_t)(end - q - 8)) break;
            q += 8 + len + (len & 1);
        }
    }
    if ((size_t)(end - p) < 4 || memcmp(p, "MThd", 4) != 0)
        return fail_at(P, -1, 0, "bad magic: no MThd header at the start", "not a Standard MIDI File");
    if ((size_t)(end - p) < 14)
        return fail_at(P, -1, 0, "truncated MThd header chunk", "file cut short?");
    uint32_t hlen = be32(p + 4);
    if (hlen < 6)
        return fail_at(P, -1, 4, "MThd header chunk shorter than 6 bytes", "corrupt header");
    if (hlen > (size_t)(end - p - 8))
        return fail_at(P, -1, 4, "truncated MThd header chunk", "file cut short?");
    int format = be16(p + 8), ntracks = be16(p + 10);
    uint16_t div = be16(p + 12);
    if (format > 2) {
        warn(P, "unknown format %d read as format 1", format);
        format = 1;
    }
    s->format = format;
    if (div & 0x8000) {
        int fps = -(int8_t)(div >> 8), tpf = div & 0xFF;
        if ((fps != 24 && fps != 25 && fps != 29 && fps != 30) || tpf == 0) {
            char cause[80];
            snprintf(cause, sizeof cause, "bad SMPTE division: %d frames/s, %d ticks/frame", fps, tpf);
            return fail_at(P, -1, 12, cause, "corrupt header");
        }
        s->smpte_fps = fps;
        s->smpte_ticks_per_frame = tpf;
    } else {
        if (div == 0) return fail_at(P, -1, 12, "division of 0 ticks per beat", "corrupt header");
        s->ticks_per_beat = div;
    }
    if (format == 0 && ntracks > 1) warn(P, "format 0 file declares %d tracks", ntracks);
    p += 8 + hlen;
    int found = 0;
    while (found < ntracks) {
        size_t off = (size_t)(p - P->base);
        if ((size_t)(end - p) < 8) {
            char cause[96];
            snprintf(cause, sizeof cause, "header declares %d tracks but the file ends after %d",
                     ntracks, found);
            return fail_at(P, -1, off, cause, "file cut short?");
        }
        uint32_t len = be32(p + 4);
        int printable = 1;
        for (int i = 0; i < 4; i++) printable &= p[i] >= 0x20 && p[i] < 0x7F;
        if (!printable) {
            char cause[96];
            snprintf(cause, sizeof cause, "expected an MTrk chunk for track %d at byte %zu", found, off);
            return fail_at(P, -1, off, cause, "corrupt file or wrong chunk length before it");
        }
        if (len > (size_t)(end - p - 8)) {
            char cause[128];
            snprintf(cause, sizeof cause, "truncated %.4s chunk: declares %u bytes, %zu remain",
                     (const char *)p, len, (size_t)(end - p - 8));
            return fail_at(P, found, off, cause, "file cut short?");
        }
        if (memcmp(p, "MTrk", 4) != 0) {
            warn(P, "unknown chunk '%.4s' (%u bytes) skipped", (const char *)p, len);
            p += 8 + len;
            continue;
        }
        if (parse_track(P, found, p + 8, p + 8 + len)) return -1;
        p += 8 + len;
        found++;
    }
    if (p < end) {
        size_t extra = (size_t)(end - p);
        if (extra >= 8 && !memcmp(p, "MTrk", 4)) warn(P, "MTrk chunks beyond the %d declared ignored", ntracks);
        else warn(P, "%zu bytes after the last track ignored", extra);
    }
    *ntracks_out = found;
    return 0;
}

/* ---- pass 2: tempo map -------------------------------------------------------------------- */

static double smpte_rate(const sao_midi_song *s) {
    double fps = s->smpte_fps == 29 ? 30000.0 / 1001.0 : (double)s->smpte_fps;
    return fps * s->smpte_ticks_per_frame;   /* ticks per second */
}

/* Seconds per tick in tempo segment i (pretty_midi: 60 / (bpm * resolution)). */
static double tick_scale(const sao_midi_song *s, const sao_midi_tempo *t) {
    double bpm = t->tempo_us > 0 ? 6e7 / t->tempo_us : t->bpm;
    return 60.0 / (bpm * s->ticks_per_beat);
}

double sao_midi_tick_to_time(const sao_midi_song *s, int64_t tick) {
    if (s->smpte_fps) return (double)tick / smpte_rate(s);
    if (s->n_tempos <= 0 || s->ticks_per_beat <= 0) {
        int tpb = s->ticks_per_beat > 0 ? s->ticks_per_beat : 480;
        return (double)tick * (60.0 / (120.0 * tpb));
    }
    int lo = 0, hi = s->n_tempos - 1;   /* last tempo with tick <= `tick` */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->tempos[mid].tick <= tick) lo = mid; else hi = mid - 1;
    }
    const sao_midi_tempo *t = &s->tempos[lo];
    return t->time + tick_scale(s, t) * (double)(tick - t->tick);
}

int64_t sao_midi_time_to_tick(const sao_midi_song *s, double time) {
    if (s->smpte_fps) return llround(time * smpte_rate(s));
    if (s->n_tempos <= 0 || s->ticks_per_beat <= 0) {
        int tpb = s->ticks_per_beat > 0 ? s->ticks_per_beat : 480;
        return llround(time / (60.0 / (120.0 * tpb)));
    }
    int lo = 0, hi = s->n_tempos - 1;   /* last tempo with time <= `time` */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->tempos[mid].time <= time) lo = mid; else hi = mid - 1;
    }
    const sao_midi_tempo *t = &s->tempos[lo];
    return t->tick + llround((time - t->time) / tick_scale(s, t));
}

static int build_tempo_map(parser *P) {
    sao_midi_song *s = P->song;
    int32_t cap = 0;
    if (grow((void **)&s->tempos, &cap, 1, sizeof(sao_midi_tempo)))
        return sao_err(P->ctx, OP_READ, "%s: out of memory", P->name);
    s->tempos[0] = (sao_midi_tempo){ .time = 0, .tick = 0, .bpm = 120.0, .tempo_us = 0 };
    s->n_tempos = 1;
    int other_tracks = 0;
    for (int32_t i = 0; i < P->n_evs; i++) {
        const ev *e = &P->evs[i];
        if (e->kind != EV_META || e->a != 0x51) continue;
        if (e->track != 0) { other_tracks++; continue; }
        if (e->len != 3) {
            warn(P, "track 0: tempo event of length %u at tick %lld ignored", e->len, (long long)e->tick);
            continue;
        }
        int32_t us = (int32_t)((e->data[0] << 16) | (e->data[1] << 8) | e->data[2]);
        if (us == 0) {
            warn(P, "track 0: tempo of 0 us/beat at tick %lld ignored", (long long)e->tick);
            continue;
        }
        sao_midi_tempo t = { .time = 0, .tick = e->tick, .bpm = 6e7 / us, .tempo_us = us };
        if (e->tick == 0) {
            s->tempos[0] = t;
            s->n_tempos = 1;
            continue;
        }
        if (!s->smpte_fps && tick_scale(s, &s->tempos[s->n_tempos - 1]) == tick_scale(s, &t)) continue;
        if (s->smpte_fps && s->tempos[s->n_tempos - 1].tempo_us == us) continue;
        if (grow((void **)&s->tempos, &cap, s->n_tempos + 1, sizeof(sao_midi_tempo)))
            return sao_err(P->ctx, OP_READ, "%s: out of memory", P->name);
        s->tempos[s->n_tempos++] = t;
    }
    if (other_tracks)
        warn(P, "%d tempo events on tracks other than 0 ignored (as pretty_midi does)", other_tracks);
    /* times of the tempo changes: each segment ends where the next begins */
    for (int32_t i = 1; i < s->n_tempos; i++) {
        if (s->smpte_fps) s->tempos[i].time = (double)s->tempos[i].tick / smpte_rate(s);
        else {
            const sao_midi_tempo *a = &s->tempos[i - 1];
            s->tempos[i].time = a->time + tick_scale(s, a) * (double)(s->tempos[i].tick - a->tick);
        }
    }
    /* every event's time; events of one track are in tick order, so walk the segments */
    int32_t seg = 0, track = -1;
    for (int32_t i = 0; i < P->n_evs; i++) {
        ev *e = &P->evs[i];
        if (e->track != track) { track = e->track; seg = 0; }
        if (e->tick > s->max_tick) s->max_tick = e->tick;
        if (s->smpte_fps) { e->time = (double)e->tick / smpte_rate(s); continue; }
        while (seg + 1 < s->n_tempos && s->tempos[seg + 1].tick <= e->tick) seg++;
        const sao_midi_tempo *t = &s->tempos[seg];
        e->time = t->time + tick_scale(s, t) * (double)(e->tick - t->tick);
    }
    return 0;
}

/* ---- metadata: signatures, texts, track names -------------------------------------------- */

static int build_meta(parser *P) {
    sao_midi_song *s = P->song;
    int32_t cap_ts = 0, cap_ks = 0, cap_tx = 0;
    int other_sig = 0;
    for (int32_t i = 0; i < P->n_evs; i++) {
        const ev *e = &P->evs[i];
        if (e->kind != EV_META) continue;
        if (e->a == 0x58 || e->a == 0x59) {
            if (e->track != 0) { other_sig++; continue; }
            if (e->a == 0x58) {
                if (e->len < 2 || e->data[0] == 0 || e->data[1] > 7) {
                    warn(P, "track 0: malformed time signature at tick %lld ignored", (long long)e->tick);
                    continue;
                }
                if (grow((void **)&s->timesigs, &cap_ts, s->n_timesigs + 1, sizeof(sao_midi_timesig)))
                    goto oom;
                s->timesigs[s->n_timesigs++] = (sao_midi_timesig){
                    .time = e->time, .tick = e->tick, .numerator = e->data[0],
                    .denominator = 1 << e->data[1] };
            } else {
                int sf = e->len >= 2 ? (int8_t)e->data[0] : 99, mi = e->len >= 2 ? e->data[1] : 9;
                if (sf < -7 || sf > 7 || mi > 1) {
                    warn(P, "track 0: malformed key signature at tick %lld ignored", (long long)e->tick);
                    continue;
                }
                int major_pc = ((sf * 7) % 12 + 12) % 12;
                int key = mi ? 12 + (major_pc + 9) % 12 : major_pc;
                if (grow((void **)&s->keysigs, &cap_ks, s->n_keysigs + 1, sizeof(sao_midi_keysig)))
                    goto oom;
                s->keysigs[s->n_keysigs++] = (sao_midi_keysig){
                    .time = e->time, .tick = e->tick, .key = key, .sharps = sf, .minor = mi };
            }
        } else if (e->a >= 1 && e->a <= 7) {
            char *t = text_dup(e->data, e->len);
            if (!t) goto oom;
            if (e->a == 3) {   /* the track's name: the last one wins, as pretty_midi */
                free(s->track_names[e->track]);
                s->track_names[e->track] = str_dup(t);
                if (!s->track_names[e->track]) { free(t); goto oom; }
            }
            if (grow((void **)&s->texts, &cap_tx, s->n_texts + 1, sizeof(sao_midi_text))) {
                free(t);
                goto oom;
            }
            s->texts[s->n_texts++] = (sao_midi_text){
                .time = e->time, .tick = e->tick, .type = e->a, .track = e->track, .text = t };
        }
    }
    if (other_sig)
        warn(P, "%d time/key signature events on tracks other than 0 ignored (as pretty_midi does)",
             other_sig);
    return 0;
oom:
    return sao_err(P->ctx, OP_READ, "%s: out of memory", P->name);
}

/* ---- pass 3: the pretty_midi instrument split -------------------------------------------- */

typedef struct evlist {            /* a control-change + pitch-bend list (may be shared) */
    sao_midi_cc *cc;
    sao_midi_bend *bend;
    int32_t n_cc, cap_cc, n_bend, cap_bend;
} evlist;

typedef struct inst_build {
    const char *name;              /* borrowed from the track-name text */
    int32_t program, channel, track, list;
    sao_midi_note *notes;
    int32_t n_notes, cap_notes;
} inst_build;

typedef struct open_notes {        /* note-ons waiting for their note-off, per (channel, pitch) */
    int64_t *tick;
    int32_t *vel;
    int32_t n, cap, cap2;
} open_notes;

typedef struct splitter {
    inst_build *insts;
    int32_t n_insts, cap_insts;
    evlist *lists;
    int32_t n_lists, cap_lists;
    int32_t inst_of[16 * 128];     /* (channel, program) -> instrument of the current track */
    int32_t straggler[16];         /* channel -> straggler list of the current track */
    open_notes open[16 * 128];     /* (channel, pitch) */
} splitter;

static int new_list(splitter *S) {
    if (grow((void **)&S->lists, &S->cap_lists, S->n_lists + 1, sizeof(evlist))) return -1;
    memset(&S->lists[S->n_lists], 0, sizeof(evlist));
    return S->n_lists++;
}

/* pretty_midi's __get_instrument. Returns the list index (create == 0) or instrument index
 * (create == 1); -1 when out of memory. */
static int get_instrument(splitter *S, int program, int ch, int track, const char *name, int create,
                          int *list_out) {
    int idx = S->inst_of[ch * 128 + program];
    if (idx >= 0) {
        *list_out = S->insts[idx].list;
        return idx;
    }
    if (!create && S->straggler[ch] >= 0) {
        *list_out = S->straggler[ch];
        return -2;
    }
    if (create) {
        if (grow((void **)&S->insts, &S->cap_insts, S->n_insts + 1, sizeof(inst_build))) return -1;
        int list = S->straggler[ch] >= 0 ? S->straggler[ch] : new_list(S);
        if (list < 0) return -1;
        inst_build *b = &S->insts[S->n_insts];
        memset(b, 0, sizeof *b);
        b->name = name;
        b->program = program;
        b->channel = ch;
        b->track = track;
        b->list = list;
        S->inst_of[ch * 128 + program] = S->n_insts;
        *list_out = list;
        return S->n_insts++;
    }
    int list = new_list(S);
    if (list < 0) return -1;
    S->straggler[ch] = list;
    *list_out = list;
    return -2;
}

static void splitter_free(splitter *S) {
    for (int32_t i = 0; i < S->n_insts; i++) free(S->insts[i].notes);
    free(S->insts);
    for (int32_t i = 0; i < S->n_lists; i++) {
        free(S->lists[i].cc);
        free(S->lists[i].bend);
    }
    free(S->lists);
    for (int i = 0; i < 16 * 128; i++) {
        free(S->open[i].tick);
        free(S->open[i].vel);
    }
    free(S);
}

static int split_instruments(parser *P) {
    sao_midi_song *s = P->song;
    splitter *S = calloc(1, sizeof *S);
    if (!S) return sao_err(P->ctx, OP_READ, "%s: out of memory", P->name);
    int32_t i = 0;
    while (i < P->n_evs) {
        int tr = P->evs[i].track;
        for (int k = 0; k < 16 * 128; k++) { S->inst_of[k] = -1; S->open[k].n = 0; }
        for (int k = 0; k < 16; k++) S->straggler[k] = -1;
        int program[16] = { 0 };
        const char *track_name = "";
        /* names are borrowed from texts[]: find this track's track-name texts in order */
        int32_t text_i = 0;
        for (; i < P->n_evs && P->evs[i].track == tr; i++) {
            const ev *e = &P->evs[i];
            if (e->kind == EV_META && e->a == 0x03) {
                while (text_i < s->n_texts &&
                       !(s->texts[text_i].track == tr && s->texts[text_i].type == 3 &&
                         s->texts[text_i].tick == e->tick && s->texts[text_i].text))
                    text_i++;
                if (text_i < s->n_texts) track_name = s->texts[text_i++].text;
                continue;
            }
            int ch = e->ch, list = -1, idx;
            switch (e->kind) {
            case EV_PROGRAM:
                program[ch] = e->a;
                break;
            case EV_NOTE_ON: {
                open_notes *o = &S->open[ch * 128 + e->a];
                if (grow((void **)&o->tick, &o->cap, o->n + 1, sizeof(int64_t)) ||
                    grow((void **)&o->vel, &o->cap2, o->n + 1, sizeof(int32_t)))
                    goto oom;
                o->tick[o->n] = e->tick;
                o->vel[o->n++] = e->b;
                break;
            }
            case EV_NOTE_OFF: {
                open_notes *o = &S->open[ch * 128 + e->a];
                if (o->n == 0) break;             /* spurious note-off */
                int32_t keep = 0, closed = 0;
                for (int32_t j = 0; j < o->n; j++) {
                    if (o->tick[j] == e->tick) {  /* started on this tick: stays open */
                        o->tick[keep] = o->tick[j];
                        o->vel[keep++] = o->vel[j];
                        continue;
                    }
                    idx = get_instrument(S, program[ch], ch, tr, track_name, 1, &list);
                    if (idx < 0) goto oom;
                    inst_build *b = &S->insts[idx];
                    if (grow((void **)&b->notes, &b->cap_notes, b->n_notes + 1, sizeof(sao_midi_note)))
                        goto oom;
                    b->notes[b->n_notes++] = (sao_midi_note){
                        .start = sao_midi_tick_to_time(s, o->tick[j]), .end = e->time,
                        .start_tick = o->tick[j], .end_tick = e->tick, .pitch = e->a,
                        .velocity = o->vel[j] };
                    closed++;
                }
                o->n = (closed > 0 && keep > 0) ? keep : 0;
                break;
            }
            case EV_CC:
            case EV_BEND: {
                idx = get_instrument(S, program[ch], ch, tr, track_name, 0, &list);
                if (idx == -1) goto oom;
                evlist *l = &S->lists[list];
                if (e->kind == EV_CC) {
                    if (grow((void **)&l->cc, &l->cap_cc, l->n_cc + 1, sizeof(sao_midi_cc))) goto oom;
                    l->cc[l->n_cc++] = (sao_midi_cc){ .time = e->time, .tick = e->tick,
                                                      .number = e->a, .value = e->b };
                } else {
                    if (grow((void **)&l->bend, &l->cap_bend, l->n_bend + 1, sizeof(sao_midi_bend)))
                        goto oom;
                    l->bend[l->n_bend++] = (sao_midi_bend){ .time = e->time, .tick = e->tick,
                                                            .value = e->bend };
                }
                break;
            }
            default:
                break;
            }
        }
    }
    /* materialise: each instrument gets its own copy of its (possibly shared) lists */
    if (S->n_insts > 0) {
        s->instruments = calloc((size_t)S->n_insts, sizeof(sao_midi_instrument));
        if (!s->instruments) goto oom;
    }
    for (int32_t k = 0; k < S->n_insts; k++) {
        inst_build *b = &S->insts[k];
        sao_midi_instrument *in = &s->instruments[k];
        s->n_instruments = k + 1;
        in->name = str_dup(b->name);
        in->program = b->program;
        in->channel = b->channel;
        in->is_drum = b->channel == 9;
        in->track = b->track;
        in->notes = b->notes;
        in->n_notes = b->n_notes;
        b->notes = NULL;
        const evlist *l = &S->lists[b->list];
        if (l->n_cc) {
            in->cc = malloc((size_t)l->n_cc * sizeof(sao_midi_cc));
            if (!in->cc) goto oom;
            memcpy(in->cc, l->cc, (size_t)l->n_cc * sizeof(sao_midi_cc));
            in->n_cc = l->n_cc;
        }
        if (l->n_bend) {
            in->bends = malloc((size_t)l->n_bend * sizeof(sao_midi_bend));
            if (!in->bends) goto oom;
            memcpy(in->bends, l->bend, (size_t)l->n_bend * sizeof(sao_midi_bend));
            in->n_bends = l->n_bend;
        }
        if (!in->name) goto oom;
    }
    splitter_free(S);
    return 0;
oom:
    splitter_free(S);
    return sao_err(P->ctx, OP_READ, "%s: out of memory", P->name);
}

typedef struct tempo_ev { int64_t tick; int32_t us, seq; } tempo_ev;

static int tempo_ev_cmp(const void *x, const void *y) {
    const tempo_ev *a = x, *b = y;
    if (a->tick != b->tick) return a->tick < b->tick ? -1 : 1;
    return a->seq - b->seq;
}

/* mido's MidiFile.length: tempo events of every track merged (stable by tick), played up to
 * the last event of any track. Differs from the track-0 map only in files that put tempo
 * events elsewhere. SMPTE files: tick / (fps * ticks_per_frame). */
static int playing_length(parser *P) {
    sao_midi_song *s = P->song;
    if (s->smpte_fps) { s->length = (double)s->max_tick / smpte_rate(s); return 0; }
    tempo_ev *t = NULL;
    int32_t n = 0, cap = 0;
    for (int32_t i = 0; i < P->n_evs; i++) {
        const ev *e = &P->evs[i];
        if (e->kind != EV_META || e->a != 0x51 || e->len != 3) continue;
        int32_t us = (int32_t)((e->data[0] << 16) | (e->data[1] << 8) | e->data[2]);
        if (us == 0) continue;
        if (grow((void **)&t, &cap, n + 1, sizeof(tempo_ev))) {
            free(t);
            return sao_err(P->ctx, OP_READ, "%s: out of memory", P->name);
        }
        t[n] = (tempo_ev){ .tick = e->tick, .us = us, .seq = n };
        n++;
    }
    if (n > 1) qsort(t, (size_t)n, sizeof(tempo_ev), tempo_ev_cmp);
    double len = 0;
    int64_t at = 0;
    int32_t us = 500000;
    for (int32_t i = 0; i < n && t[i].tick <= s->max_tick; i++) {
        len += (double)(t[i].tick - at) * us * 1e-6 / s->ticks_per_beat;
        at = t[i].tick;
        us = t[i].us;
    }
    len += (double)(s->max_tick - at) * us * 1e-6 / s->ticks_per_beat;
    s->length = len;
    free(t);
    return 0;
}

/* pretty_midi's get_end_time(). */
static void song_times(sao_midi_song *s) {
    double t = 0;
    for (int32_t i = 0; i < s->n_instruments; i++) {
        const sao_midi_instrument *in = &s->instruments[i];
        for (int32_t j = 0; j < in->n_notes; j++) if (in->notes[j].end > t) t = in->notes[j].end;
        for (int32_t j = 0; j < in->n_cc; j++) if (in->cc[j].time > t) t = in->cc[j].time;
        for (int32_t j = 0; j < in->n_bends; j++) if (in->bends[j].time > t) t = in->bends[j].time;
    }
    for (int32_t i = 0; i < s->n_timesigs; i++) if (s->timesigs[i].time > t) t = s->timesigs[i].time;
    for (int32_t i = 0; i < s->n_keysigs; i++) if (s->keysigs[i].time > t) t = s->keysigs[i].time;
    for (int32_t i = 0; i < s->n_tempos; i++) if (s->tempos[i].time > t) t = s->tempos[i].time;
    for (int32_t i = 0; i < s->n_texts; i++)
        if ((s->texts[i].type == 1 || s->texts[i].type == 5) && s->texts[i].time > t) t = s->texts[i].time;
    s->end_time = t;
}

void sao_midi_free(sao_midi_song *s) {
    if (!s) return;
    for (int32_t i = 0; i < s->n_instruments; i++) {
        free(s->instruments[i].name);
        free(s->instruments[i].notes);
        free(s->instruments[i].cc);
        free(s->instruments[i].bends);
    }
    free(s->instruments);
    for (int32_t i = 0; i < s->n_texts; i++) free(s->texts[i].text);
    free(s->texts);
    if (s->track_names)
        for (int32_t i = 0; i < s->n_tracks; i++) free(s->track_names[i]);
    free(s->track_names);
    for (int32_t i = 0; i < s->n_warnings; i++) free(s->warnings[i]);
    free(s->warnings);
    free(s->tempos);
    free(s->timesigs);
    free(s->keysigs);
    free(s);
}

sao_midi_song *sao_midi_parse(sao_ctx *ctx, const void *data, size_t n, const char *name) {
    parser P;
    memset(&P, 0, sizeof P);
    P.ctx = ctx;
    P.name = name && *name ? name : "<memory>";
    P.base = data;
    P.n = n;
    if (!data && n) return sao_err_null(ctx, OP_READ, "%s: no data", P.name);
    P.song = calloc(1, sizeof(sao_midi_song));
    if (!P.song) return sao_err_null(ctx, OP_READ, "%s: out of memory", P.name);
    sao_midi_song *s = P.song;
    int ntracks = 0;
    if (parse_chunks(&P, &ntracks)) goto fail;
    s->n_tracks = ntracks;
    s->track_names = calloc((size_t)(ntracks > 0 ? ntracks : 1), sizeof(char *));
    if (!s->track_names) { sao_err(ctx, OP_READ, "%s: out of memory", P.name); goto fail; }
    for (int i = 0; i < ntracks; i++) {
        s->track_names[i] = str_dup("");
        if (!s->track_names[i]) { sao_err(ctx, OP_READ, "%s: out of memory", P.name); goto fail; }
    }
    if (build_tempo_map(&P) || build_meta(&P) || split_instruments(&P)) goto fail;
    song_times(s);
    if (playing_length(&P)) goto fail;
    if (s->max_tick > 10000000)
        warn(&P, "largest tick %lld exceeds 1e7: pretty_midi refuses such files as corrupt",
             (long long)s->max_tick);
    free(P.evs);
    return s;
fail:
    free(P.evs);
    sao_midi_free(s);
    return NULL;
}

sao_midi_song *sao_midi_read(sao_ctx *ctx, const char *path) {
    if (!path) return sao_err_null(ctx, OP_READ, "no path given");
    FILE *f = fopen(path, "rb");
    if (!f) return sao_err_null(ctx, OP_READ, "%s: cannot open: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= MIDI_MAX_FILE) {
                fclose(f);
                free(buf);
                return sao_err_null(ctx, OP_READ, "%s: larger than %u MiB (not a MIDI file?)", path,
                                    MIDI_MAX_FILE >> 20);
            }
            cap = cap ? cap * 2 : 65536;
            uint8_t *q = realloc(buf, cap);
            if (!q) {
                fclose(f);
                free(buf);
                return sao_err_null(ctx, OP_READ, "%s: out of memory", path);
            }
            buf = q;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return sao_err_null(ctx, OP_READ, "%s: read error", path);
    }
    if (n == 0) {
        free(buf);
        return sao_err_null(ctx, OP_READ, "%s: empty file (not a Standard MIDI File)", path);
    }
    sao_midi_song *s = sao_midi_parse(ctx, buf, n, path);
    free(buf);
    return s;
}

/* ---- writer ------------------------------------------------------------------------------- */

typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
    int oom;
} wbuf;

static void put(wbuf *b, const void *d, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->n + n) c *= 2;
        uint8_t *q = realloc(b->p, c);
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put1(wbuf *b, int v) { uint8_t c = (uint8_t)v; put(b, &c, 1); }
static void put_vlq(wbuf *b, uint32_t v) {
    uint8_t t[4];
    int k = 0;
    t[k++] = v & 0x7F;
    while ((v >>= 7) && k < 4) t[k++] = (uint8_t)(0x80 | (v & 0x7F));
    while (k) put1(b, t[--k]);
}
static void put_be32(wbuf *b, uint32_t v) {
    uint8_t t[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
    put(b, t, 4);
}

typedef struct wev {               /* one event to write */
    int64_t tick;
    int32_t order, seq;            /* same tick: lower order first, then insertion order */
    uint8_t status, a, b, nd;      /* channel message; status 0xFF: meta (type a, text/data) */
    const uint8_t *data;
    uint32_t len;
    uint8_t inl[5];                /* small meta payloads */
} wev;

static int wev_cmp(const void *x, const void *y) {
    const wev *a = x, *b = y;
    if (a->tick != b->tick) return a->tick < b->tick ? -1 : 1;
    if (a->order != b->order) return a->order - b->order;
    return a->seq - b->seq;
}

typedef struct wtrack {
    wev *v;
    int32_t n, cap;
    int oom;
} wtrack;

static wev *add(wtrack *t, int64_t tick, int order) {
    if (grow((void **)&t->v, &t->cap, t->n + 1, sizeof(wev))) { t->oom = 1; return NULL; }
    wev *e = &t->v[t->n];
    memset(e, 0, sizeof *e);
    e->tick = tick;
    e->order = order;
    e->seq = t->n++;
    return e;
}

static void add_meta(wtrack *t, int64_t tick, int order, int type, const void *d, uint32_t len) {
    wev *e = add(t, tick, order);
    if (!e) return;
    e->status = 0xFF;
    e->a = (uint8_t)type;
    e->len = len;
    if (len <= sizeof e->inl) { memcpy(e->inl, d, len); e->data = NULL; }
    else e->data = d;
}

static void add_chan(wtrack *t, int64_t tick, int order, int status, int a, int b, int nd) {
    wev *e = add(t, tick, order);
    if (!e) return;
    e->status = (uint8_t)status;
    e->a = (uint8_t)a;
    e->b = (uint8_t)b;
    e->nd = (uint8_t)nd;
}

/* Serialises a track's events (sorted) with running status and an end-of-track at end_tick. */
static int emit_track(sao_ctx *ctx, const char *path, wbuf *out, wtrack *t, int64_t end_tick) {
    if (t->oom) return sao_err(ctx, OP_WRITE, "%s: out of memory", path);
    qsort(t->v, (size_t)t->n, sizeof(wev), wev_cmp);
    wbuf b = { 0 };
    int64_t last = 0;
    int running = 0;
    for (int32_t i = 0; i < t->n; i++) {
        const wev *e = &t->v[i];
        int64_t d = e->tick - last;
        if (d > 0x0FFFFFFF) {
            free(b.p);
            return sao_err(ctx, OP_WRITE, "%s: gap of %lld ticks between events is too long for a "
                           "MIDI file (lower ticks_per_beat?)", path, (long long)d);
        }
        put_vlq(&b, (uint32_t)d);
        last = e->tick;
        if (e->status == 0xFF) {
            put1(&b, 0xFF);
            put1(&b, e->a);
            put_vlq(&b, e->len);
            put(&b, e->data ? e->data : e->inl, e->len);
            running = 0;
        } else {
            if (e->status != running) put1(&b, e->status);
            running = e->status;
            put1(&b, e->a);
            if (e->nd > 1) put1(&b, e->b);
        }
    }
    if (end_tick < last) end_tick = last;
    put_vlq(&b, (uint32_t)(end_tick - last > 0x0FFFFFFF ? 0 : end_tick - last));
    put1(&b, 0xFF);
    put1(&b, 0x2F);
    put1(&b, 0x00);
    if (b.oom) { free(b.p); return sao_err(ctx, OP_WRITE, "%s: out of memory", path); }
    put(out, "MTrk", 4);
    put_be32(out, (uint32_t)b.n);
    put(out, b.p, b.n);
    free(b.p);
    return out->oom ? sao_err(ctx, OP_WRITE, "%s: out of memory", path) : 0;
}

/* sharps for a key number, preferring the usual spelling (flats for F, Bb, Eb, Ab, Db, Gb). */
static int key_sharps(int key) {
    static const int major_sf[12] = { 0, -5, 2, -3, 4, -1, 6, 1, -4, 3, -2, 5 };
    int pc = key % 12;
    return key >= 12 ? major_sf[(pc + 3) % 12] : major_sf[pc];
}

int sao_midi_write(sao_ctx *ctx, const char *path, const sao_midi_song *in) {
    if (!path || !in) return sao_err(ctx, OP_WRITE, "no path or song given");
    int tpb = in->ticks_per_beat > 0 ? in->ticks_per_beat : 480;
    if (tpb > 0x7FFF)
        return sao_err(ctx, OP_WRITE, "%s: ticks_per_beat %d exceeds 32767", path, tpb);
    if (in->n_instruments < 0 || in->n_instruments > 65534 || in->n_tempos < 0 || in->n_timesigs < 0 ||
        in->n_keysigs < 0 || in->n_texts < 0)
        return sao_err(ctx, OP_WRITE, "%s: bad counts in the song", path);
    /* the tempo map as the reader will rebuild it: ticks from seconds, tempo quantised to us */
    sao_midi_song map;
    memset(&map, 0, sizeof map);
    map.ticks_per_beat = tpb;
    int32_t nt = in->n_tempos + 1;
    map.tempos = calloc((size_t)nt, sizeof(sao_midi_tempo));
    if (!map.tempos) return sao_err(ctx, OP_WRITE, "%s: out of memory", path);
    map.tempos[0] = (sao_midi_tempo){ .time = 0, .tick = 0, .bpm = 120, .tempo_us = 500000 };
    map.n_tempos = 1;
    int rc = -1;
    double prev_time = 0;
    for (int32_t i = 0; i < in->n_tempos; i++) {
        const sao_midi_tempo *t = &in->tempos[i];
        int32_t us = t->tempo_us > 0 ? t->tempo_us : (t->bpm > 0 ? (int32_t)llround(6e7 / t->bpm) : 0);
        if (!(t->time >= 0) || !isfinite(t->time) || us <= 0 || us > 0xFFFFFF) {
            sao_err(ctx, OP_WRITE, "%s: tempo %d: bad time %g or bpm %g (need time >= 0, "
                    "3.58 < bpm < 6e7)", path, i + 1, t->time, t->bpm);
            goto done;
        }
        if (t->time < prev_time) {
            sao_err(ctx, OP_WRITE, "%s: tempo %d: times must be in order (%g after %g)", path, i + 1,
                    t->time, prev_time);
            goto done;
        }
        prev_time = t->time;
        sao_midi_tempo nt_ = { .tick = sao_midi_time_to_tick(&map, t->time), .tempo_us = us };
        nt_.bpm = 6e7 / us;
        if (nt_.tick == 0) { map.tempos[0] = nt_; map.n_tempos = map.n_tempos > 1 ? map.n_tempos : 1; }
        else {
            const sao_midi_tempo *a = &map.tempos[map.n_tempos - 1];
            nt_.time = a->time + tick_scale(&map, a) * (double)(nt_.tick - a->tick);
            map.tempos[map.n_tempos++] = nt_;
        }
    }

    wbuf out = { 0 };
    int ntracks = in->n_instruments + 1;
    put(&out, "MThd", 4);
    put_be32(&out, 6);
    put1(&out, 0); put1(&out, 1);
    put1(&out, ntracks >> 8); put1(&out, ntracks & 0xFF);
    put1(&out, tpb >> 8); put1(&out, tpb & 0xFF);

    /* track 0: conductor */
    wtrack t0 = { 0 };
    int64_t end0 = 0;
    const char *song_name = (in->track_names && in->n_tracks > 0 && in->track_names[0]) ? in->track_names[0] : NULL;
    if (song_name && *song_name) add_meta(&t0, 0, 0, 0x03, song_name, (uint32_t)strlen(song_name));
    for (int32_t i = 0; i < map.n_tempos; i++) {
        uint8_t d[3] = { (uint8_t)(map.tempos[i].tempo_us >> 16), (uint8_t)(map.tempos[i].tempo_us >> 8),
                         (uint8_t)map.tempos[i].tempo_us };
        add_meta(&t0, map.tempos[i].tick, 1, 0x51, d, 3);
    }
    for (int32_t i = 0; i < in->n_timesigs; i++) {
        const sao_midi_timesig *ts = &in->timesigs[i];
        int den = ts->denominator, dd = 0;
        while ((1 << dd) < den && dd < 8) dd++;
        if (ts->numerator < 1 || ts->numerator > 255 || den < 1 || (1 << dd) != den || dd > 7 ||
            !(ts->time >= 0)) {
            sao_err(ctx, OP_WRITE, "%s: time signature %d: %d/%d at %g is not valid (numerator 1..255, "
                    "denominator a power of 2 up to 128, time >= 0)", path, i + 1, ts->numerator, den,
                    ts->time);
            free(out.p); free(t0.v);
            goto done;
        }
        uint8_t d[4] = { (uint8_t)ts->numerator, (uint8_t)dd, 24, 8 };
        add_meta(&t0, sao_midi_time_to_tick(&map, ts->time), 2, 0x58, d, 4);
    }
    for (int32_t i = 0; i < in->n_keysigs; i++) {
        const sao_midi_keysig *ks = &in->keysigs[i];
        if (ks->key < 0 || ks->key > 23 || !(ks->time >= 0)) {
            sao_err(ctx, OP_WRITE, "%s: key signature %d: key %d at %g is not valid (0..11 major, "
                    "12..23 minor)", path, i + 1, ks->key, ks->time);
            free(out.p); free(t0.v);
            goto done;
        }
        int sf = key_sharps(ks->key), mi = ks->key >= 12;
        /* keep the given spelling when it names the same key (F# vs Gb) */
        if (ks->sharps >= -7 && ks->sharps <= 7 && ks->minor == mi) {
            int pc = ((ks->sharps * 7) % 12 + 12) % 12;
            if ((mi ? 12 + (pc + 9) % 12 : pc) == ks->key) sf = ks->sharps;
        }
        uint8_t d[2] = { (uint8_t)(int8_t)sf, (uint8_t)mi };
        add_meta(&t0, sao_midi_time_to_tick(&map, ks->time), 3, 0x59, d, 2);
    }
    for (int32_t i = 0; i < in->n_texts; i++) {
        const sao_midi_text *tx = &in->texts[i];
        if (tx->type == 3 || tx->type < 1 || tx->type > 7 || !tx->text) continue;
        if (!(tx->time >= 0)) {
            sao_err(ctx, OP_WRITE, "%s: text event %d: time %g < 0", path, i + 1, tx->time);
            free(out.p); free(t0.v);
            goto done;
        }
        add_meta(&t0, sao_midi_time_to_tick(&map, tx->time), 4, tx->type, tx->text,
                 (uint32_t)strlen(tx->text));
    }
    for (int32_t i = 0; i < t0.n; i++) if (t0.v[i].tick > end0) end0 = t0.v[i].tick;
    if (in->length > 0 && isfinite(in->length)) {
        int64_t e = sao_midi_time_to_tick(&map, in->length);
        if (e > end0) end0 = e;
    }
    if (emit_track(ctx, path, &out, &t0, end0)) { free(out.p); free(t0.v); goto done; }
    free(t0.v);

    /* one track per instrument */
    int next_ch = 0;
    for (int32_t k = 0; k < in->n_instruments; k++) {
        const sao_midi_instrument *ins = &in->instruments[k];
        int ch;
        if (ins->is_drum) ch = 9;
        else {
            ch = next_ch;
            next_ch = (next_ch + 1) % 16;
            if (next_ch == 9) next_ch = 10;
        }
        const char *what = NULL;
        int bad = -1;
        if (ins->program < 0 || ins->program > 127) what = "program must be 0..127";
        if ((ins->n_notes > 0 && !ins->notes) || (ins->n_cc > 0 && !ins->cc) ||
            (ins->n_bends > 0 && !ins->bends) || ins->n_notes < 0 || ins->n_cc < 0 || ins->n_bends < 0)
            what = "bad event arrays";
        wtrack t = { 0 };
        if (ins->name && *ins->name) add_meta(&t, 0, 0, 0x03, ins->name, (uint32_t)strlen(ins->name));
        add_chan(&t, 0, 1, 0xC0 | ch, ins->program, 0, 1);
        for (int32_t j = 0; !what && j < ins->n_notes; j++) {
            const sao_midi_note *n = &ins->notes[j];
            if (n->pitch < 0 || n->pitch > 127) what = "note pitch must be 0..127";
            else if (n->velocity < 1 || n->velocity > 127) what = "note velocity must be 1..127";
            else if (!(n->start >= 0) || !(n->end > n->start) || !isfinite(n->end))
                what = "note needs 0 <= start < stop";
            if (what) { bad = j; break; }
            int64_t a = sao_midi_time_to_tick(&map, n->start), b = sao_midi_time_to_tick(&map, n->end);
            if (b <= a) b = a + 1;              /* shorter than a tick: keep it one tick long */
            add_chan(&t, a, 4, 0x90 | ch, n->pitch, n->velocity, 2);
            add_chan(&t, b, 2, 0x90 | ch, n->pitch, 0, 2);   /* note-off as velocity 0 */
        }
        for (int32_t j = 0; !what && j < ins->n_cc; j++) {
            const sao_midi_cc *c = &ins->cc[j];
            if (c->number < 0 || c->number > 127 || c->value < 0 || c->value > 127)
                what = "control change number and value must be 0..127";
            else if (!(c->time >= 0)) what = "control change time must be >= 0";
            if (what) { bad = j; break; }
            add_chan(&t, sao_midi_time_to_tick(&map, c->time), 3, 0xB0 | ch, c->number, c->value, 2);
        }
        for (int32_t j = 0; !what && j < ins->n_bends; j++) {
            const sao_midi_bend *pb = &ins->bends[j];
            if (pb->value < -8192 || pb->value > 8191) what = "pitch bend must be -8192..8191";
            else if (!(pb->time >= 0)) what = "pitch bend time must be >= 0";
            if (what) { bad = j; break; }
            int v = pb->value + 8192;
            add_chan(&t, sao_midi_time_to_tick(&map, pb->time), 3, 0xE0 | ch, v & 0x7F, v >> 7, 2);
        }
        if (what) {
            if (bad >= 0) sao_err(ctx, OP_WRITE, "%s: instrument %d event %d: %s", path, k + 1, bad + 1, what);
            else sao_err(ctx, OP_WRITE, "%s: instrument %d: %s", path, k + 1, what);
            free(t.v);
            free(out.p);
            goto done;
        }
        if (emit_track(ctx, path, &out, &t, 0)) { free(t.v); free(out.p); goto done; }
        free(t.v);
    }
    if (out.oom) { free(out.p); sao_err(ctx, OP_WRITE, "%s: out of memory", path); goto done; }
    rc = sao_write_file_atomic(ctx, OP_WRITE, path, out.p, out.n);
    free(out.p);
done:
    free(map.tempos);
    return rc;
}

/* tokenizer.c — the T5 tokenizer: a SentencePiece unigram model read from `spiece.model`, applied
 * the way the t5-base fast tokenizer (HF tokenizers, tokenizer.json) applies it. SAO_SPEC §4.1.
 *
 * The model file is a protobuf ModelProto; its wire format is parsed here (no libprotobuf):
 *   ModelProto      1: repeated SentencePiece pieces   2: TrainerSpec   3: NormalizerSpec
 *   SentencePiece   1: piece (string)   2: score (float)   3: type (NORMAL 1, UNKNOWN 2, CONTROL 3,
 *                   USER_DEFINED 4, UNUSED 5, BYTE 6; NORMAL when absent)
 *   TrainerSpec     3: model_type (UNIGRAM 1; anything else is refused)
 *   NormalizerSpec  2: precompiled_charsmap (bytes)   3: add_dummy_prefix (bool, default true)
 * The ids are the piece indices; T5 adds 100 sentinels <extra_id_N> after them (id = n_pieces +
 * 99 - N), so t5-base has 32000 pieces and 32100 ids (its embedding table has 32128 rows).
 *
 * Encoding one text (the t5-base tokenizer.json pipeline):
 *   1. special tokens: the raw text is split around the strings of the CONTROL/UNKNOWN pieces
 *      (<pad>, </s>, <unk>) and <extra_id_N>; each becomes its id, the text between is step 2-5.
 *   2. normalise with the model's precompiled charsmap (SentencePiece's nmt_nfkc for t5: NFKC plus
 *      whitespace/control clean-up): at each byte position the LONGEST key of the charsmap's
 *      double-array trie that prefixes the rest of the text is replaced by its string; where no key
 *      matches one UTF-8 character is copied (a malformed byte becomes U+FFFD). Without a charsmap
 *      (identity normaliser) the text is used as is.
 *   3. split on whitespace (Unicode White_Space), dropping it: runs of spaces, tabs and newlines
 *      collapse and leading/trailing whitespace vanishes (WhitespaceSplit).
 *   4. each word gets the prefix U+2581 '▁' (Metaspace, prepend "always"; with add_dummy_prefix
 *      false in the model the first word gets none, as slow SentencePiece does).
 *   5. unigram Viterbi per word over UTF-8 characters: a piece spanning characters [i, j) scores
 *      its log-probability; a character no one-character piece covers gets an <unk> node scored
 *      min(score) - 10; the best path wins (ties: the earlier-starting last piece, as HF); runs of
 *      consecutive <unk> are fused into one (fuse_unk).
 * Then </s> (id 1), truncation to max_len - 1 pieces + </s>, and padding with <pad> (id 0).
 *
 * Differences from HF, by construction rather than by test: HF's Precompiled normaliser walks
 * grapheme clusters and takes the first (shortest) charsmap match of a cluster; SentencePiece and
 * this file take the longest match at each position. They agree on everything in
 * spec/tokenizer_spec.lua (accents, combining marks, full-width forms, ligatures, NBSP, control
 * characters, emoji, CJK); a text where they differ would need a charsmap key that is a proper
 * prefix of another inside one grapheme cluster.
 */
#include "internal.h"
#include "sao_model.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PIECE_NORMAL = 1, PIECE_UNKNOWN = 2, PIECE_CONTROL = 3, PIECE_USER = 4, PIECE_UNUSED = 5, PIECE_BYTE = 6 };
#define T5_EXTRA_IDS 100
#define UNK_PENALTY 10.0

struct sao_t5_tokenizer {
    int n;                  /* pieces */
    char **piece;           /* NUL-terminated UTF-8 */
    uint32_t *plen;         /* byte lengths */
    float *score;
    uint8_t *type;
    int unk_id, eos_id, pad_id;
    double unk_score;       /* min(score) - 10 */
    uint32_t max_bytes;     /* longest matchable piece, in bytes */
    int32_t *slot;          /* open-addressing hash of the matchable pieces: id or -1 */
    uint32_t nslot;         /* power of two */
    uint32_t *trie;         /* charsmap double-array units (NULL: identity normaliser) */
    uint32_t trie_units;
    char *norm;             /* charsmap replacement strings, NUL-separated */
    uint32_t norm_size;
    int add_dummy_prefix;
    int *special;           /* ids of the CONTROL/UNKNOWN pieces, matched whole in raw text */
    int nspecial;
};

/* ---- growable byte / id buffers ---------------------------------------------------------- */
typedef struct { char *p; size_t n, cap; } sbuf;
typedef struct { int64_t *p; size_t n, cap; } ibuf;

static int sbuf_put(sbuf *b, const void *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1) c *= 2;
        char *q = realloc(b->p, c);
        if (!q) return -1;
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static int ibuf_put(ibuf *b, int64_t v) {
    if (b->n == b->cap) {
        size_t c = b->cap ? b->cap * 2 : 64;
        int64_t *q = realloc(b->p, c * sizeof *q);
        if (!q) return -1;
        b->p = q;
        b->cap = c;
    }
    b->p[b->n++] = v;
    return 0;
}

/* ---- UTF-8 ------------------------------------------------------------------------------- */
/* Length of the well-formed UTF-8 character at s (n bytes left), 0 when malformed. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t l;
    unsigned min;
    if ((c & 0xE0) == 0xC0) l = 2, min = 0x80;
    else if ((c & 0xF0) == 0xE0) l = 3, min = 0x800;
    else if ((c & 0xF8) == 0xF0) l = 4, min = 0x10000;
    else return 0;
    if (l > n) return 0;
    unsigned cp = c & (0x7F >> l);
    for (size_t i = 1; i < l; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return l;
}

static unsigned utf8_cp(const unsigned char *s, size_t l) {
    if (l == 1) return s[0];
    unsigned cp = s[0] & (0x7F >> l);
    for (size_t i = 1; i < l; i++) cp = (cp << 6) | (s[i] & 0x3F);
    return cp;
}

/* Unicode White_Space (what WhitespaceSplit splits on). */
static int is_space_cp(unsigned c) {
    return c == ' ' || (c >= 0x09 && c <= 0x0D) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* ---- protobuf wire format ---------------------------------------------------------------- */
typedef struct { const unsigned char *p, *end; } pb;

static int pb_varint(pb *r, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) return -1;
        unsigned char b = *r->p++;
        x |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Reads one field: its number, wire type, and (for varint) value or (for length-delimited,
 * fixed32, fixed64) the bytes. */
static int pb_field(pb *r, uint32_t *field, int *wire, uint64_t *val, pb *sub) {
    uint64_t key;
    if (pb_varint(r, &key)) return -1;
    *field = (uint32_t)(key >> 3);
    *wire = (int)(key & 7);
    size_t len;
    switch (*wire) {
    case 0: return pb_varint(r, val);
    case 1: len = 8; break;
    case 5: len = 4; break;
    case 2:
        if (pb_varint(r, val)) return -1;
        if (*val > (uint64_t)(r->end - r->p)) return -1;
        len = (size_t)*val;
        break;
    default: return -1;   /* groups (3, 4) are not used by sentencepiece */
    }
    if (len > (size_t)(r->end - r->p)) return -1;
    sub->p = r->p;
    sub->end = r->p + len;
    r->p += len;
    return 0;
}

/* ---- piece hash ---------------------------------------------------------------------------- */
static uint32_t fnv1a(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static int lookup(const sao_t5_tokenizer *tk, const char *s, size_t n) {
    uint32_t m = tk->nslot - 1;
    for (uint32_t i = fnv1a(s, n) & m;; i = (i + 1) & m) {
        int32_t id = tk->slot[i];
        if (id < 0) return -1;
        if (tk->plen[id] == n && memcmp(tk->piece[id], s, n) == 0) return id;
    }
}

/* Pieces the Viterbi may use: everything but the special (CONTROL, UNKNOWN) ones, which are only
 * matched whole in step 1 — HF's Unigram model knows no piece types. */
static int matchable(int type) { return type != PIECE_CONTROL && type != PIECE_UNKNOWN; }

/* ---- precompiled charsmap: Darts-clone double array ----------------------------------------
 * Blob: u32 trie size in bytes, the trie (u32 units), then the NUL-separated replacements.
 * A unit packs: bits 0-7 label, bit 8 "has leaf", bit 9 offset scale, bits 10-31 offset; a leaf
 * unit's low 31 bits are its value (here: a byte offset into the replacements). */
static uint32_t unit_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
static uint32_t unit_label(uint32_t u) { return u & ((1u << 31) | 0xFF); }
static int unit_has_leaf(uint32_t u) { return (u >> 8) & 1; }
static uint32_t unit_value(uint32_t u) { return u & ((1u << 31) - 1); }

/* Length of the longest trie key prefixing s[0..n) (0: none); its value in *value. */
static size_t trie_longest(const sao_t5_tokenizer *tk, const unsigned char *s, size_t n, uint32_t *value) {
    const uint32_t *a = tk->trie;
    uint32_t pos = unit_offset(a[0]);
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        pos ^= s[i];
        if (pos >= tk->trie_units) break;
        uint32_t u = a[pos];
        if (unit_label(u) != s[i]) break;
        pos ^= unit_offset(u);
        if (pos >= tk->trie_units) break;
        if (unit_has_leaf(u)) {
            best = i + 1;
            *value = unit_value(a[pos]);
        }
    }
    return best;
}

static int normalize(const sao_t5_tokenizer *tk, const unsigned char *s, size_t n, sbuf *out) {
    static const char fffd[] = "\xEF\xBF\xBD";
    size_t i = 0;
    while (i < n) {
        uint32_t v = 0;
        size_t k = tk->trie ? trie_longest(tk, s + i, n - i, &v) : 0;
        if (k > 0 && v < tk->norm_size) {
            const char *r = tk->norm + v;
            if (sbuf_put(out, r, strnlen(r, tk->norm_size - v))) return -1;
            i += k;
            continue;
        }
        size_t l = utf8_len(s + i, n - i);
        if (l == 0) {
            if (sbuf_put(out, fffd, 3)) return -1;
            i += 1;
        } else {
            if (sbuf_put(out, s + i, l)) return -1;
            i += l;
        }
    }
    return 0;
}

/* ---- loading -------------------------------------------------------------------------------- */
void sao_t5_tokenizer_free(sao_t5_tokenizer *tk) {
    if (!tk) return;
    for (int i = 0; i < tk->n; i++) free(tk->piece[i]);
    free(tk->piece);
    free(tk->plen);
    free(tk->score);
    free(tk->type);
    free(tk->slot);
    free(tk->trie);
    free(tk->norm);
    free(tk->special);
    free(tk);
}

static int add_piece(sao_t5_tokenizer *tk, int *cap, pb sub) {
    const char *str = NULL;
    size_t len = 0;
    float score = 0.0f;
    int type = PIECE_NORMAL;
    while (sub.p < sub.end) {
        uint32_t f;
        int w;
        uint64_t v;
        pb s;
        if (pb_field(&sub, &f, &w, &v, &s)) return -1;
        if (f == 1 && w == 2) {
            str = (const char *)s.p;
            len = (size_t)(s.end - s.p);
        } else if (f == 2 && w == 5) {
            uint32_t bits = (uint32_t)s.p[0] | (uint32_t)s.p[1] << 8 | (uint32_t)s.p[2] << 16 | (uint32_t)s.p[3] << 24;
            memcpy(&score, &bits, 4);
        } else if (f == 3 && w == 0) {
            type = (int)v;
        }
    }
    if (!str) return -1;
    if (tk->n == *cap) {
        int c = *cap ? *cap * 2 : 1024;
        char **np = realloc(tk->piece, (size_t)c * sizeof *np);
        if (!np) return -2;
        tk->piece = np;
        uint32_t *nl = realloc(tk->plen, (size_t)c * sizeof *nl);
        if (!nl) return -2;
        tk->plen = nl;
        float *ns = realloc(tk->score, (size_t)c * sizeof *ns);
        if (!ns) return -2;
        tk->score = ns;
        uint8_t *nt = realloc(tk->type, (size_t)c);
        if (!nt) return -2;
        tk->type = nt;
        *cap = c;
    }
    char *copy = malloc(len + 1);
    if (!copy) return -2;
    memcpy(copy, str, len);
    copy[len] = 0;
    tk->piece[tk->n] = copy;
    tk->plen[tk->n] = (uint32_t)len;
    tk->score[tk->n] = score;
    tk->type[tk->n] = (uint8_t)(type >= 1 && type <= 6 ? type : PIECE_NORMAL);
    tk->n++;
    return 0;
}

static int read_charsmap(sao_ctx *ctx, sao_t5_tokenizer *tk, const char *what, pb cm) {
    size_t n = (size_t)(cm.end - cm.p);
    if (n == 0) return 0;   /* identity normaliser */
    if (n < 4) return sao_err(ctx, "t5_tokenizer", "%s: precompiled_charsmap too short (%zu bytes)", what, n);
    uint32_t tsize = (uint32_t)cm.p[0] | (uint32_t)cm.p[1] << 8 | (uint32_t)cm.p[2] << 16 | (uint32_t)cm.p[3] << 24;
    if (tsize % 4 || tsize == 0 || (size_t)tsize > n - 4)
        return sao_err(ctx, "t5_tokenizer", "%s: corrupt precompiled_charsmap (trie size %u of %zu bytes)", what, tsize, n);
    tk->trie_units = tsize / 4;
    tk->trie = malloc(tsize);
    tk->norm_size = (uint32_t)(n - 4 - tsize);
    tk->norm = malloc(tk->norm_size + 1);
    if (!tk->trie || !tk->norm) return sao_err(ctx, "t5_tokenizer", "%s: out of memory", what);
    for (uint32_t i = 0; i < tk->trie_units; i++) {
        const unsigned char *b = cm.p + 4 + 4 * (size_t)i;
        tk->trie[i] = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    }
    memcpy(tk->norm, cm.p + 4 + tsize, tk->norm_size);
    tk->norm[tk->norm_size] = 0;
    return 0;
}

sao_t5_tokenizer *sao_t5_tokenizer_from_memory(sao_ctx *ctx, const void *data, size_t size, const char *what) {
    const char *op = "t5_tokenizer";
    if (!what) what = "spiece.model";
    if (!data) return sao_err_null(ctx, op, "%s: no data", what);
    sao_t5_tokenizer *tk = calloc(1, sizeof *tk);
    if (!tk) return sao_err_null(ctx, op, "out of memory");
    tk->add_dummy_prefix = 1;
    tk->unk_id = tk->eos_id = tk->pad_id = -1;
    int cap = 0;
    pb r = { data, (const unsigned char *)data + size };
    while (r.p < r.end) {
        uint32_t f;
        int w;
        uint64_t v;
        pb sub;
        if (pb_field(&r, &f, &w, &v, &sub)) {
            sao_err(ctx, op, "%s: not a SentencePiece model (malformed protobuf at byte %zu; is the file "
                    "truncated, or a tokenizer.json / HTML page?)", what, (size_t)(r.p - (const unsigned char *)data));
            goto fail;
        }
        if (f == 1 && w == 2) {
            int rc = add_piece(tk, &cap, sub);
            if (rc) {
                if (rc == -2) sao_err(ctx, op, "out of memory");
                else sao_err(ctx, op, "%s: malformed piece #%d", what, tk->n);
                goto fail;
            }
        } else if (f == 2 && w == 2) {               /* TrainerSpec */
            while (sub.p < sub.end) {
                uint32_t g;
                int gw;
                uint64_t gv;
                pb s;
                if (pb_field(&sub, &g, &gw, &gv, &s)) {
                    sao_err(ctx, op, "%s: malformed trainer_spec", what);
                    goto fail;
                }
                if (g == 3 && gw == 0 && gv != 1) {
                    sao_err(ctx, op, "%s: model_type %llu is not unigram (1); only unigram models (T5) are supported",
                            what, (unsigned long long)gv);
                    goto fail;
                }
            }
        } else if (f == 3 && w == 2) {               /* NormalizerSpec */
            while (sub.p < sub.end) {
                uint32_t g;
                int gw;
                uint64_t gv;
                pb s;
                if (pb_field(&sub, &g, &gw, &gv, &s)) {
                    sao_err(ctx, op, "%s: malformed normalizer_spec", what);
                    goto fail;
                }
                if (g == 2 && gw == 2 && read_charsmap(ctx, tk, what, s)) goto fail;
                if (g == 3 && gw == 0) tk->add_dummy_prefix = gv != 0;
            }
        }
    }
    if (tk->n == 0) {
        sao_err(ctx, op, "%s: no pieces (not a SentencePiece model?)", what);
        goto fail;
    }
    double minsc = INFINITY;
    uint32_t nmatch = 0;
    for (int i = 0; i < tk->n; i++) {
        if (tk->type[i] == PIECE_UNKNOWN && tk->unk_id < 0) tk->unk_id = i;
        if (tk->type[i] == PIECE_CONTROL && strcmp(tk->piece[i], "</s>") == 0) tk->eos_id = i;
        if (tk->type[i] == PIECE_CONTROL && strcmp(tk->piece[i], "<pad>") == 0) tk->pad_id = i;
        if (tk->score[i] < minsc) minsc = tk->score[i];
        if (matchable(tk->type[i])) {
            nmatch++;
            if (tk->plen[i] > tk->max_bytes) tk->max_bytes = tk->plen[i];
        }
    }
    if (tk->unk_id < 0 || tk->eos_id < 0) {
        sao_err(ctx, op, "%s: the model has no %s piece (T5 needs <unk> and </s>)", what,
                tk->unk_id < 0 ? "<unk>" : "</s>");
        goto fail;
    }
    tk->unk_score = minsc - UNK_PENALTY;
    tk->special = malloc((size_t)(tk->n - (int)nmatch + 1) * sizeof *tk->special);
    if (!tk->special) {
        sao_err(ctx, op, "out of memory");
        goto fail;
    }
    for (int i = 0; i < tk->n; i++)
        if (!matchable(tk->type[i]) && tk->plen[i] > 0) tk->special[tk->nspecial++] = i;
    tk->nslot = 16;
    while (tk->nslot < 2 * nmatch + 2) tk->nslot *= 2;
    tk->slot = malloc(tk->nslot * sizeof *tk->slot);
    if (!tk->slot) {
        sao_err(ctx, op, "out of memory");
        goto fail;
    }
    for (uint32_t i = 0; i < tk->nslot; i++) tk->slot[i] = -1;
    for (int i = 0; i < tk->n; i++) {
        if (!matchable(tk->type[i]) || lookup(tk, tk->piece[i], tk->plen[i]) >= 0) continue;  /* first wins */
        uint32_t m = tk->nslot - 1, j = fnv1a(tk->piece[i], tk->plen[i]) & m;
        while (tk->slot[j] >= 0) j = (j + 1) & m;
        tk->slot[j] = i;
    }
    return tk;
fail:
    sao_t5_tokenizer_free(tk);
    return NULL;
}

sao_t5_tokenizer *sao_t5_tokenizer_load(sao_ctx *ctx, const char *path) {
    const char *op = "t5_tokenizer";
    FILE *f = fopen(path, "rb");
    if (!f) return sao_err_null(ctx, op, "%s: cannot open (put t5-base's spiece.model there; see checkpoints/README.md)", path);
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1 << 20;
            char *q = realloc(buf, cap);
            if (!q) {
                free(buf);
                fclose(f);
                return sao_err_null(ctx, op, "%s: out of memory", path);
            }
            buf = q;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return sao_err_null(ctx, op, "%s: read error", path);
    }
    sao_t5_tokenizer *tk = sao_t5_tokenizer_from_memory(ctx, buf, n, path);
    free(buf);
    return tk;
}

int sao_t5_tokenizer_piece_count(const sao_t5_tokenizer *tk) { return tk->n; }
int sao_t5_tokenizer_vocab_size(const sao_t5_tokenizer *tk) { return tk->n + T5_EXTRA_IDS; }
int sao_t5_tokenizer_special_id(const sao_t5_tokenizer *tk, const char *which) {
    if (strcmp(which, "unk") == 0) return tk->unk_id;
    if (strcmp(which, "eos") == 0) return tk->eos_id;
    if (strcmp(which, "pad") == 0) return tk->pad_id;
    return -1;
}

/* The piece string of id (pieces, then "<extra_id_N>"); writes into buf (always NUL-terminated). */
int sao_t5_tokenizer_piece(const sao_t5_tokenizer *tk, int64_t id, char *buf, size_t cap) {
    if (!buf || cap == 0) return -1;
    buf[0] = 0;
    if (id >= 0 && id < tk->n) {
        snprintf(buf, cap, "%s", tk->piece[id]);
        return 0;
    }
    if (id >= tk->n && id < tk->n + T5_EXTRA_IDS) {
        snprintf(buf, cap, "<extra_id_%d>", (int)(tk->n + T5_EXTRA_IDS - 1 - id));
        return 0;
    }
    return -1;
}

/* ---- encoding ------------------------------------------------------------------------------ */
/* Special token at s (n bytes left): returns its byte length and id, or 0. */
static size_t special_at(const sao_t5_tokenizer *tk, const char *s, size_t n, int64_t *id) {
    if (s[0] != '<') return 0;
    size_t best = 0;
    for (int k = 0; k < tk->nspecial; k++) {
        int i = tk->special[k];
        size_t l = tk->plen[i];
        if (l > best && l <= n && memcmp(s, tk->piece[i], l) == 0) {
            best = l;
            *id = i;
        }
    }
    static const char ex[] = "<extra_id_";
    size_t el = sizeof ex - 1;
    if (n > el && memcmp(s, ex, el) == 0) {
        size_t k = el;
        int v = 0, nd = 0;
        while (k < n && s[k] >= '0' && s[k] <= '9' && nd < 3) {
            v = v * 10 + (s[k] - '0');
            k++;
            nd++;
        }
        int canonical = nd > 0 && !(nd > 1 && s[el] == '0');
        if (canonical && k < n && s[k] == '>' && v < T5_EXTRA_IDS && k + 1 > best) {
            best = k + 1;
            *id = tk->n + T5_EXTRA_IDS - 1 - v;
        }
    }
    return best;
}

typedef struct {
    double *score;
    int32_t *prev;      /* start char index of the best last piece */
    int32_t *id;
    size_t *off;        /* byte offset of each char boundary */
    size_t cap;
} lattice;

static int lattice_reserve(lattice *lt, size_t nchar) {
    if (nchar + 1 <= lt->cap) return 0;
    size_t c = lt->cap ? lt->cap : 64;
    while (c < nchar + 1) c *= 2;
    double *s = realloc(lt->score, c * sizeof *s);
    if (!s) return -1;
    lt->score = s;
    int32_t *p = realloc(lt->prev, c * sizeof *p);
    if (!p) return -1;
    lt->prev = p;
    int32_t *d = realloc(lt->id, c * sizeof *d);
    if (!d) return -1;
    lt->id = d;
    size_t *o = realloc(lt->off, c * sizeof *o);
    if (!o) return -1;
    lt->off = o;
    lt->cap = c;
    return 0;
}

/* Viterbi over one word w (already '▁'-prefixed, valid UTF-8); appends its ids to out. */
static int viterbi(const sao_t5_tokenizer *tk, const char *w, size_t wn, lattice *lt, ibuf *out) {
    size_t nc = 0;
    for (size_t i = 0; i < wn;) {
        size_t l = utf8_len((const unsigned char *)w + i, wn - i);
        i += l ? l : 1;
        nc++;
    }
    if (lattice_reserve(lt, nc)) return -1;
    size_t k = 0;
    for (size_t i = 0; i < wn; k++) {
        lt->off[k] = i;
        size_t l = utf8_len((const unsigned char *)w + i, wn - i);
        i += l ? l : 1;
    }
    lt->off[nc] = wn;
    lt->score[0] = 0.0;
    for (size_t j = 1; j <= nc; j++) lt->score[j] = -INFINITY;
    for (size_t i = 0; i < nc; i++) {
        if (lt->score[i] == -INFINITY) continue;
        int single = 0;
        for (size_t j = i + 1; j <= nc; j++) {
            size_t nb = lt->off[j] - lt->off[i];
            if (nb > tk->max_bytes) break;
            int id = lookup(tk, w + lt->off[i], nb);
            if (id < 0) continue;
            if (j == i + 1) single = 1;
            double s = lt->score[i] + tk->score[id];
            if (s > lt->score[j]) {
                lt->score[j] = s;
                lt->prev[j] = (int32_t)i;
                lt->id[j] = id;
            }
        }
        if (!single) {
            double s = lt->score[i] + tk->unk_score;
            if (s > lt->score[i + 1]) {
                lt->score[i + 1] = s;
                lt->prev[i + 1] = (int32_t)i;
                lt->id[i + 1] = tk->unk_id;
            }
        }
    }
    /* backtrack into the tail of out, then reverse, fusing <unk> runs */
    size_t start = out->n;
    for (size_t j = nc; j > 0; j = (size_t)lt->prev[j])
        if (ibuf_put(out, lt->id[j])) return -1;
    for (size_t a = start, b = out->n - 1; a < b; a++, b--) {
        int64_t t = out->p[a];
        out->p[a] = out->p[b];
        out->p[b] = t;
    }
    size_t m = start;
    for (size_t a = start; a < out->n; a++) {
        if (out->p[a] == tk->unk_id && m > start && out->p[m - 1] == tk->unk_id) continue;
        out->p[m++] = out->p[a];
    }
    out->n = m;
    return 0;
}

/* Steps 2-5 for a text run between special tokens. */
static int encode_run(const sao_t5_tokenizer *tk, const char *s, size_t n, int *first_word, sbuf *norm,
                      sbuf *word, lattice *lt, ibuf *out) {
    norm->n = 0;
    if (normalize(tk, (const unsigned char *)s, n, norm)) return -1;
    const unsigned char *p = (const unsigned char *)norm->p;
    size_t i = 0, nn = norm->n;
    while (i < nn) {
        /* skip whitespace */
        while (i < nn) {
            size_t l = utf8_len(p + i, nn - i);
            if (!l || !is_space_cp(utf8_cp(p + i, l))) break;
            i += l;
        }
        if (i >= nn) break;
        size_t w0 = i;
        while (i < nn) {
            size_t l = utf8_len(p + i, nn - i);
            if (l && is_space_cp(utf8_cp(p + i, l))) break;
            i += l ? l : 1;
        }
        word->n = 0;
        if ((tk->add_dummy_prefix || !*first_word) && sbuf_put(word, "\xE2\x96\x81", 3)) return -1;
        if (sbuf_put(word, p + w0, i - w0)) return -1;
        *first_word = 0;
        if (viterbi(tk, word->p, word->n, lt, out)) return -1;
    }
    return 0;
}

static int encode_all(sao_ctx *ctx, const sao_t5_tokenizer *tk, const char *text, size_t len, ibuf *out) {
    sbuf norm = { 0 }, word = { 0 };
    lattice lt = { 0 };
    int rc = 0, first = 1;
    size_t run = 0;
    for (size_t i = 0; i <= len && rc == 0;) {
        int64_t sid = 0;
        size_t sl = i < len ? special_at(tk, text + i, len - i, &sid) : 0;
        if (i == len || sl > 0) {
            if (i > run) rc = encode_run(tk, text + run, i - run, &first, &norm, &word, &lt, out);
            if (rc == 0 && sl > 0) rc = ibuf_put(out, sid);
            if (i == len) break;
            i += sl;
            run = i;
        } else {
            i++;
        }
    }
    free(norm.p);
    free(word.p);
    free(lt.score);
    free(lt.prev);
    free(lt.id);
    free(lt.off);
    if (rc) return sao_err(ctx, "t5_tokenize", "out of memory");
    return 0;
}

int64_t sao_t5_tokenizer_encode(sao_ctx *ctx, const sao_t5_tokenizer *tk, const char *text, size_t len,
                                int64_t *ids, int64_t cap) {
    if (!tk || (!text && len)) return sao_err(ctx, "t5_tokenize", "NULL tokenizer or text");
    ibuf out = { 0 };
    if (encode_all(ctx, tk, text ? text : "", len, &out)) {
        free(out.p);
        return -1;
    }
    for (size_t i = 0; i < out.n && (int64_t)i < cap; i++) ids[i] = out.p[i];
    int64_t n = (int64_t)out.n;
    free(out.p);
    return n;
}

int sao_t5_tokenize(sao_ctx *ctx, const sao_t5_tokenizer *tk, const char *text, size_t len, int64_t max_len,
                    int64_t *ids, int64_t *mask) {
    const char *op = "t5_tokenize";
    if (!tk || !ids || (!text && len)) return sao_err(ctx, op, "NULL tokenizer, text or ids");
    if (max_len < 1) return sao_err(ctx, op, "max_len %lld < 1 (SAO uses 128)", (long long)max_len);
    ibuf out = { 0 };
    if (encode_all(ctx, tk, text ? text : "", len, &out)) {
        free(out.p);
        return -1;
    }
    int64_t n = (int64_t)out.n < max_len - 1 ? (int64_t)out.n : max_len - 1;
    for (int64_t i = 0; i < n; i++) ids[i] = out.p[i];
    ids[n] = tk->eos_id;
    int64_t pad = tk->pad_id >= 0 ? tk->pad_id : 0;
    for (int64_t i = n + 1; i < max_len; i++) ids[i] = pad;
    if (mask)
        for (int64_t i = 0; i < max_len; i++) mask[i] = i <= n;
    free(out.p);
    return (int)(n + 1);
}

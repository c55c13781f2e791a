/* json.c — recursive-descent JSON reader (RFC 8259) with a depth limit; see json.h. */
#include "json.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s;
    size_t n, i;
    char *err;
    size_t errlen;
    int depth;
} parser;

static int fail(parser *p, const char *what) {
    if (p->err && p->err[0] == 0) snprintf(p->err, p->errlen, "%s at byte %zu", what, p->i);
    return -1;
}

static void ws(parser *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int hex4(parser *p, unsigned *out) {
    if (p->i + 4 > p->n) return fail(p, "truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->i++];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return fail(p, "bad \\u escape");
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xc0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static int parse_string(parser *p, char **out) {
    p->i++;  /* opening quote */
    size_t start = p->i;
    /* the unescaped string is never longer than the escaped one */
    size_t cap = 0;
    while (start + cap < p->n && p->s[start + cap] != '"') cap += (p->s[start + cap] == '\\') ? 2 : 1;
    char *o = malloc(cap + 1);
    if (!o) return fail(p, "out of memory");
    size_t k = 0;
    for (;;) {
        if (p->i >= p->n) { free(o); return fail(p, "unterminated string"); }
        char c = p->s[p->i++];
        if (c == '"') break;
        if ((unsigned char)c < 0x20) { free(o); return fail(p, "control character in string"); }
        if (c != '\\') { o[k++] = c; continue; }
        if (p->i >= p->n) { free(o); return fail(p, "unterminated escape"); }
        c = p->s[p->i++];
        switch (c) {
        case '"': o[k++] = '"'; break;
        case '\\': o[k++] = '\\'; break;
        case '/': o[k++] = '/'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (hex4(p, &cp)) { free(o); return -1; }
            if (cp >= 0xd800 && cp < 0xdc00 && p->i + 6 <= p->n && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
                unsigned lo;
                p->i += 2;
                if (hex4(p, &lo)) { free(o); return -1; }
                if (lo >= 0xdc00 && lo < 0xe000) cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (k + 4 > cap + 1) { free(o); return fail(p, "escape expands past buffer"); }
            k += put_utf8(o + k, cp);
            break;
        }
        default: free(o); return fail(p, "bad escape");
        }
    }
    o[k] = 0;
    *out = o;
    return 0;
}

static sao_json *parse_value(parser *p);

static sao_json *node(parser *p, sao_jtype t) {
    sao_json *j = calloc(1, sizeof *j);
    if (!j) { fail(p, "out of memory"); return NULL; }
    j->type = t;
    j->start = p->i;
    return j;
}

static sao_json *parse_container(parser *p, int is_obj) {
    sao_json *j = node(p, is_obj ? SAO_JOBJ : SAO_JARR);
    if (!j) return NULL;
    if (++p->depth > 64) { fail(p, "nesting too deep"); free(j); return NULL; }
    p->i++;
    ws(p);
    char close = is_obj ? '}' : ']';
    sao_json **tail = &j->child;
    if (p->i < p->n && p->s[p->i] == close) { p->i++; goto done; }
    for (;;) {
        char *key = NULL;
        if (is_obj) {
            ws(p);
            if (p->i >= p->n || p->s[p->i] != '"') { fail(p, "expected a member name"); goto bad; }
            if (parse_string(p, &key)) goto bad;
            ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') { free(key); fail(p, "expected ':'"); goto bad; }
            p->i++;
        }
        sao_json *v = parse_value(p);
        if (!v) { free(key); goto bad; }
        v->key = key;
        *tail = v;
        tail = &v->next;
        ws(p);
        if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
        if (p->i < p->n && p->s[p->i] == close) { p->i++; break; }
        fail(p, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
        goto bad;
    }
done:
    p->depth--;
    j->end = p->i;
    return j;
bad:
    sao_json_free(j);
    return NULL;
}

static sao_json *parse_value(parser *p) {
    ws(p);
    if (p->i >= p->n) { fail(p, "unexpected end of text"); return NULL; }
    char c = p->s[p->i];
    if (c == '{' || c == '[') return parse_container(p, c == '{');
    if (c == '"') {
        sao_json *j = node(p, SAO_JSTR);
        if (!j) return NULL;
        if (parse_string(p, &j->str)) { free(j); return NULL; }
        j->end = p->i;
        return j;
    }
    static const struct { const char *w; sao_jtype t; double v; } lits[] = {
        {"true", SAO_JBOOL, 1}, {"false", SAO_JBOOL, 0}, {"null", SAO_JNULL, 0}};
    for (int k = 0; k < 3; k++) {
        size_t l = strlen(lits[k].w);
        if (p->i + l <= p->n && memcmp(p->s + p->i, lits[k].w, l) == 0) {
            sao_json *j = node(p, lits[k].t);
            if (!j) return NULL;
            j->num = lits[k].v;
            p->i += l;
            j->end = p->i;
            return j;
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        size_t st = p->i;
        if (p->s[p->i] == '-') p->i++;
        while (p->i < p->n && ((p->s[p->i] >= '0' && p->s[p->i] <= '9') || p->s[p->i] == '.' ||
                               p->s[p->i] == 'e' || p->s[p->i] == 'E' || p->s[p->i] == '+' || p->s[p->i] == '-'))
            p->i++;
        char buf[64];
        size_t l = p->i - st;
        if (l == 0 || l >= sizeof buf) { fail(p, "bad number"); return NULL; }
        memcpy(buf, p->s + st, l);
        buf[l] = 0;
        char *endp;
        double v = strtod(buf, &endp);
        if (*endp) { p->i = st; fail(p, "bad number"); return NULL; }
        sao_json *j = node(p, SAO_JNUM);
        if (!j) return NULL;
        j->start = st;
        j->num = v;
        j->end = p->i;
        return j;
    }
    fail(p, "unexpected character");
    return NULL;
}

sao_json *sao_json_parse(const char *text, size_t len, char *err, size_t errlen) {
    parser p = {text, len, 0, err, errlen, 0};
    if (err && errlen) err[0] = 0;
    sao_json *j = parse_value(&p);
    if (!j) return NULL;
    ws(&p);
    if (p.i != p.n) { fail(&p, "trailing characters after the JSON value"); sao_json_free(j); return NULL; }
    return j;
}

void sao_json_free(sao_json *j) {
    while (j) {
        sao_json *next = j->next;
        sao_json_free(j->child);
        free(j->str);
        free(j->key);
        free(j);
        j = next;
    }
}

sao_json *sao_json_get(const sao_json *obj, const char *key) {
    if (!obj || obj->type != SAO_JOBJ) return NULL;
    for (sao_json *c = obj->child; c; c = c->next)
        if (c->key && strcmp(c->key, key) == 0) return c;
    return NULL;
}

size_t sao_json_len(const sao_json *arr) {
    size_t n = 0;
    if (arr) for (sao_json *c = arr->child; c; c = c->next) n++;
    return n;
}

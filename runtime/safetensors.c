/* safetensors.c — read (mmap, zero-copy) and write (atomic) the safetensors format.
 *
 *   u64 little-endian n | n bytes of JSON header | raw data
 *   header: {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *            "__metadata__": {"key": "value", ...}}
 *   offsets are relative to the first byte after the header.
 *
 * Loading maps the file once; every tensor is a view on one shared mmap storage whose last
 * reference unmaps it. A tensor whose data is not aligned to its element size is copied to the
 * heap instead (safetensors does not promise alignment). Every malformed case is an error that
 * names the file and the fault; nothing is returned half-built. */
#include "internal.h"
#include "json.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_HEADER (100u << 20)   /* 100 MB, as the reference implementation */

static void mmap_release(sao_storage *s) { munmap(s->handle, s->handle_size); }
static const sao_allocator mmap_allocator = {"mmap", mmap_release};

static int st_dtype(const char *s) {
    if (!strcmp(s, "F32")) return SAO_F32;
    if (!strcmp(s, "F64")) return SAO_F64;
    if (!strcmp(s, "BF16")) return SAO_BF16;
    if (!strcmp(s, "F16")) return SAO_F16;
    if (!strcmp(s, "I32")) return SAO_I32;
    if (!strcmp(s, "I64")) return SAO_I64;
    if (!strcmp(s, "U8") || !strcmp(s, "BOOL")) return SAO_U8;
    return -1;
}

static const char *st_dtype_name(int d) {
    static const char *n[] = {"F32", "F64", "BF16", "F16", "I32", "I64", "U8"};
    return (d >= 0 && d < SAO_DTYPE_COUNT) ? n[d] : "?";
}

typedef struct { size_t begin, end; int idx; } span;
static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

void sao_st_free(sao_st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) {
        if (f->names) free(f->names[i]);
        if (f->tensors) sao_tensor_free(f->tensors[i]);
    }
    free(f->names);
    free(f->tensors);
    free(f->metadata_json);
    free(f);
}

sao_tensor *sao_st_take(sao_st_file *f, int i) {
    if (!f || i < 0 || i >= f->n) return NULL;
    sao_tensor *t = f->tensors[i];
    f->tensors[i] = NULL;
    return t;
}

sao_st_file *sao_st_load(sao_ctx *ctx, const char *path) {
    const char *op = "load_safetensors";
    int fd = open(path, O_RDONLY);
    if (fd < 0) return sao_err_null(ctx, op, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return sao_err_null(ctx, op, "%s: cannot stat: %s", path, strerror(errno)); }
    size_t size = (size_t)st.st_size;
    if (size < 8) { close(fd); return sao_err_null(ctx, op, "%s: truncated file (%zu bytes, need at least 8 for the header length)", path, size); }
    /* copy-on-write: tensors are zero-copy views of the file, and an in-place op on one (a LoRA
     * merge, t:mul_()) copies the pages it touches instead of faulting; the file never changes */
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    close(fd);
    if (base == MAP_FAILED) return sao_err_null(ctx, op, "%s: mmap failed: %s", path, strerror(errno));
    const unsigned char *b = base;
    uint64_t n = 0;
    for (int k = 7; k >= 0; k--) n = (n << 8) | b[k];
    sao_st_file *f = NULL;
    sao_json *hdr = NULL;
    sao_storage *stor = NULL;
    span *spans = NULL;
    if (n > MAX_HEADER) { sao_err(ctx, op, "%s: header length %llu is larger than the 100 MB limit (not a safetensors file?)", path, (unsigned long long)n); goto fail; }
    if (8 + n > size) { sao_err(ctx, op, "%s: header length %llu runs past the end of the file (%zu bytes): truncated?", path, (unsigned long long)n, size); goto fail; }
    char jerr[160];
    hdr = sao_json_parse((const char *)b + 8, (size_t)n, jerr, sizeof jerr);
    if (!hdr) { sao_err(ctx, op, "%s: header is not valid JSON (%s)", path, jerr); goto fail; }
    if (hdr->type != SAO_JOBJ) { sao_err(ctx, op, "%s: header is not a JSON object", path); goto fail; }
    size_t data0 = 8 + (size_t)n, datasize = size - data0;

    int count = 0;
    for (sao_json *c = hdr->child; c; c = c->next) if (strcmp(c->key, "__metadata__")) count++;
    f = calloc(1, sizeof *f);
    if (!f) { sao_err(ctx, op, "%s: out of memory", path); goto fail; }
    f->names = calloc((size_t)count + 1, sizeof *f->names);
    f->tensors = calloc((size_t)count + 1, sizeof *f->tensors);
    spans = calloc((size_t)count + 1, sizeof *spans);
    stor = calloc(1, sizeof *stor);
    if (!f->names || !f->tensors || !spans || !stor) { sao_err(ctx, op, "%s: out of memory", path); goto fail; }
    stor->data = base;
    stor->nbytes = size;
    stor->refcount = 1;   /* held by this function until the end */
    stor->device = SAO_CPU;
    stor->allocator = &mmap_allocator;
    stor->handle = base;
    stor->handle_size = size;

    sao_json *meta = sao_json_get(hdr, "__metadata__");
    if (meta) {
        if (meta->type != SAO_JOBJ) { sao_err(ctx, op, "%s: __metadata__ is not an object", path); goto fail; }
        size_t l = meta->end - meta->start;
        f->metadata_json = malloc(l + 1);
        if (!f->metadata_json) { sao_err(ctx, op, "%s: out of memory", path); goto fail; }
        memcpy(f->metadata_json, (const char *)b + 8 + meta->start, l);
        f->metadata_json[l] = 0;
    }

    for (sao_json *c = hdr->child; c; c = c->next) {
        if (!strcmp(c->key, "__metadata__")) continue;
        const char *nm = c->key;
        if (c->type != SAO_JOBJ) { sao_err(ctx, op, "%s: tensor '%s': entry is not an object", path, nm); goto fail; }
        sao_json *jd = sao_json_get(c, "dtype"), *js = sao_json_get(c, "shape"), *jo = sao_json_get(c, "data_offsets");
        if (!jd || jd->type != SAO_JSTR) { sao_err(ctx, op, "%s: tensor '%s': missing or non-string dtype", path, nm); goto fail; }
        int dt = st_dtype(jd->str);
        if (dt < 0) { sao_err(ctx, op, "%s: tensor '%s': unknown or unsupported dtype '%s' (supported: F32 F64 BF16 F16 I32 I64 U8 BOOL)", path, nm, jd->str); goto fail; }
        if (!js || js->type != SAO_JARR) { sao_err(ctx, op, "%s: tensor '%s': missing shape", path, nm); goto fail; }
        size_t nd = sao_json_len(js);
        if (nd > 8) { sao_err(ctx, op, "%s: tensor '%s': %zu dimensions (at most 8)", path, nm, nd); goto fail; }
        int64_t shape[8];
        double numel = 1;
        int k = 0;
        for (sao_json *d = js->child; d; d = d->next, k++) {
            if (d->type != SAO_JNUM || d->num < 0 || d->num != (double)(int64_t)d->num) {
                sao_err(ctx, op, "%s: tensor '%s': shape entry %d is not a non-negative integer", path, nm, k); goto fail;
            }
            shape[k] = (int64_t)d->num;
            numel *= d->num;
        }
        if (!jo || jo->type != SAO_JARR || sao_json_len(jo) != 2 || jo->child->type != SAO_JNUM ||
            jo->child->next->type != SAO_JNUM) {
            sao_err(ctx, op, "%s: tensor '%s': data_offsets must be [begin, end]", path, nm); goto fail;
        }
        double db = jo->child->num, de = jo->child->next->num;
        if (db < 0 || de < db || db != (double)(int64_t)db || de != (double)(int64_t)de) {
            sao_err(ctx, op, "%s: tensor '%s': bad data_offsets [%.0f, %.0f]", path, nm, db, de); goto fail;
        }
        if (de > (double)datasize) {
            sao_err(ctx, op, "%s: tensor '%s': data_offsets [%.0f, %.0f] run past the data (%zu bytes): truncated file?", path, nm, db, de, datasize); goto fail;
        }
        size_t es = sao_dtype_size(dt);
        if (numel * (double)es != de - db) {
            sao_err(ctx, op, "%s: tensor '%s': shape needs %.0f bytes of %s but data_offsets span %.0f", path, nm, numel * (double)es, jd->str, de - db); goto fail;
        }
        int i = f->n;
        spans[i].begin = (size_t)db; spans[i].end = (size_t)de; spans[i].idx = i;
        f->names[i] = strdup(nm);
        if (!f->names[i]) { sao_err(ctx, op, "%s: out of memory", path); goto fail; }
        size_t at = data0 + (size_t)db;
        sao_tensor *t;
        if (at % es == 0) {
            t = calloc(1, sizeof *t);
            if (!t) { sao_err(ctx, op, "%s: out of memory", path); goto fail; }
            t->storage = stor;
            __atomic_add_fetch(&stor->refcount, 1, __ATOMIC_ACQ_REL);
            t->offset = (int64_t)(at / es);
            t->dtype = dt;
            t->ndim = (int)nd;
            int64_t s = 1;
            for (int d = (int)nd - 1; d >= 0; d--) { t->shape[d] = shape[d]; t->stride[d] = s; s *= shape[d]; }
        } else {
            t = sao_tensor_empty(ctx, dt, (int)nd, shape);
            if (!t) goto fail;
            memcpy(sao_tensor_data(t), b + at, (size_t)(de - db));
        }
        f->tensors[i] = t;
        f->n++;
    }
    /* overlapping data is a malformed file (each byte belongs to one tensor) */
    qsort(spans, (size_t)f->n, sizeof *spans, span_cmp);
    for (int i = 1; i < f->n; i++) {
        if (spans[i].begin < spans[i - 1].end) {
            sao_err(ctx, op, "%s: tensors '%s' and '%s' have overlapping data_offsets", path,
                    f->names[spans[i - 1].idx], f->names[spans[i].idx]);
            goto fail;
        }
    }
    free(spans);
    sao_json_free(hdr);
    /* drop this function's reference: the tensors now own the mapping */
    if (__atomic_sub_fetch(&stor->refcount, 1, __ATOMIC_ACQ_REL) == 0) { munmap(base, size); free(stor); }
    return f;
fail:
    free(spans);
    sao_json_free(hdr);
    if (f) {
        for (int i = 0; i < f->n; i++) { sao_tensor_free(f->tensors[i]); f->tensors[i] = NULL; }
        sao_st_free(f);
    }
    if (stor) {
        if (__atomic_sub_fetch(&stor->refcount, 1, __ATOMIC_ACQ_REL) == 0) { munmap(base, size); free(stor); }
    } else {
        munmap(base, size);
    }
    return NULL;
}

/* ---- writing ------------------------------------------------------------------------------ */
typedef struct { char *s; size_t n, cap; int oom; } buf;

static void put(buf *b, const char *s, size_t l) {
    if (b->oom) return;
    if (b->n + l + 1 > b->cap) {
        size_t c = b->cap ? b->cap * 2 : 4096;
        while (c < b->n + l + 1) c *= 2;
        char *ns = realloc(b->s, c);
        if (!ns) { b->oom = 1; return; }
        b->s = ns;
        b->cap = c;
    }
    memcpy(b->s + b->n, s, l);
    b->n += l;
    b->s[b->n] = 0;
}
static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

static void put_json_string(buf *b, const char *s) {
    put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char e[8];
        if (c == '"' || c == '\\') { e[0] = '\\'; e[1] = (char)c; put(b, e, 2); }
        else if (c < 0x20) { snprintf(e, sizeof e, "\\u%04x", c); put(b, e, 6); }
        else put(b, (const char *)&c, 1);
    }
    put(b, "\"", 1);
}

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int sao_st_save(sao_ctx *ctx, const char *path, int n, const char *const *names,
                sao_tensor *const *tensors, const char *metadata_json) {
    const char *op = "save_safetensors";
    if (metadata_json) {
        char jerr[160];
        sao_json *m = sao_json_parse(metadata_json, strlen(metadata_json), jerr, sizeof jerr);
        if (!m) return sao_err(ctx, op, "%s: metadata is not valid JSON (%s)", path, jerr);
        int ok = m->type == SAO_JOBJ;
        for (sao_json *c = m->child; ok && c; c = c->next) ok = c->type == SAO_JSTR;
        sao_json_free(m);
        if (!ok) return sao_err(ctx, op, "%s: metadata must be an object of string values", path);
    }
    for (int i = 0; i < n; i++) {
        if (!names[i] || !*names[i] || !strcmp(names[i], "__metadata__"))
            return sao_err(ctx, op, "%s: tensor %d has an empty or reserved name", path, i + 1);
        for (int j = 0; j < i; j++)
            if (!strcmp(names[i], names[j])) return sao_err(ctx, op, "%s: duplicate tensor name '%s'", path, names[i]);
        if (tensors[i]->storage->device != SAO_CPU)
            return sao_err(ctx, op, "%s: tensor '%s' is not on the CPU (move it with :to(\"cpu\") first)", path, names[i]);
    }
    buf h = {0};
    puts_(&h, "{");
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const sao_tensor *t = tensors[i];
        size_t bytes = (size_t)sao_tensor_numel(t) * sao_dtype_size(t->dtype);
        char tmp[96];
        if (i) puts_(&h, ",");
        put_json_string(&h, names[i]);
        puts_(&h, ":{\"dtype\":\"");
        puts_(&h, st_dtype_name(t->dtype));
        puts_(&h, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(tmp, sizeof tmp, "%s%lld", d ? "," : "", (long long)t->shape[d]);
            puts_(&h, tmp);
        }
        snprintf(tmp, sizeof tmp, "],\"data_offsets\":[%zu,%zu]}", off, off + bytes);
        puts_(&h, tmp);
        off += bytes;
    }
    if (metadata_json) {
        if (n) puts_(&h, ",");
        puts_(&h, "\"__metadata__\":");
        puts_(&h, metadata_json);
    }
    puts_(&h, "}");
    while (!h.oom && h.n % 8) puts_(&h, " ");
    if (h.oom) { free(h.s); return sao_err(ctx, op, "%s: out of memory building the header", path); }

    size_t plen = strlen(path) + 32;
    char *tmpf = malloc(plen);
    if (!tmpf) { free(h.s); return sao_err(ctx, op, "%s: out of memory", path); }
    snprintf(tmpf, plen, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmpf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int e = errno;
        free(h.s); free(tmpf);
        return sao_err(ctx, op, "%s: cannot create: %s (does the folder exist?)", path, strerror(e));
    }
    unsigned char len8[8];
    uint64_t hn = h.n;
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)(hn >> (8 * k));
    int bad = write_all(fd, len8, 8) || write_all(fd, h.s, h.n);
    free(h.s);
    for (int i = 0; i < n && !bad; i++) {
        sao_tensor *c = sao_tensor_contiguous(ctx, tensors[i]);
        if (!c) { bad = 2; break; }
        bad = write_all(fd, sao_tensor_data(c), (size_t)sao_tensor_numel(c) * sao_dtype_size(c->dtype));
        sao_tensor_free(c);
    }
    int e = errno;
    if (!bad && fsync(fd) != 0) { bad = 1; e = errno; }
    if (close(fd) != 0 && !bad) { bad = 1; e = errno; }
    if (!bad && rename(tmpf, path) != 0) { bad = 1; e = errno; }
    if (bad) {
        unlink(tmpf);
        free(tmpf);
        return bad == 2 ? -1 : sao_err(ctx, op, "%s: write failed: %s", path, strerror(e));
    }
    free(tmpf);
    return 0;
}

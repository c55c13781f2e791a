/* http.c — the HTTP client behind sao.http: libcurl multi for concurrent batches, retries with
 * exponential backoff + jitter (connection errors, timeouts, 408, 429, 5xx), Retry-After,
 * a per-host rate limit, an idle-read timeout, and an on-disk response cache keyed by
 * SHA-256(method, URL, body) with secrets masked. Also a small SHA-256 and a monotonic clock.
 *
 * One batch = one event loop: jobs wait (backoff or rate limit) → run (an easy handle in the
 * multi) → finish (done, or back to waiting for a retry). Nothing here prints; every attempt
 * leaves a line in resp->log, with secrets masked, for the Lua side to show when asked.
 *
 * Cache file (cache_dir/<k0k1>/<key>, written atomically):
 *   "SAOHTTP 1\nstatus N\ntime UNIX\nmethod M\nurl URL\nheaders H\nbody B\n\n" + H + B bytes
 * where URL is masked and H, B are byte counts.
 */
#include "internal.h"
#include "sao_http.h"
#include <curl/curl.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* ---- SHA-256 (FIPS 180-4) -------------------------------------------------------------- */
typedef struct { uint32_t h[8]; uint64_t len; uint8_t buf[64]; size_t nbuf; } sha256_state;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(sha256_state *s, const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha256_init(sha256_state *s) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->len = 0;
    s->nbuf = 0;
}

static void sha256_update(sha256_state *s, const void *data, size_t n) {
    const uint8_t *p = data;
    s->len += n;
    while (n > 0) {
        size_t k = 64 - s->nbuf < n ? 64 - s->nbuf : n;
        memcpy(s->buf + s->nbuf, p, k);
        s->nbuf += k; p += k; n -= k;
        if (s->nbuf == 64) { sha256_block(s, s->buf); s->nbuf = 0; }
    }
}

static void sha256_final_hex(sha256_state *s, char *out65) {
    uint64_t bits = s->len * 8;
    uint8_t pad = 0x80;
    sha256_update(s, &pad, 1);
    uint8_t zero = 0;
    while (s->nbuf != 56) sha256_update(s, &zero, 1);
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(s, lenb, 8);
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) {
            uint8_t byte = (uint8_t)(s->h[i] >> (24 - 8 * j));
            out65[8 * i + 2 * j] = hx[byte >> 4];
            out65[8 * i + 2 * j + 1] = hx[byte & 15];
        }
    out65[64] = 0;
}

int sao_sha256_hex(sao_ctx *ctx, const void *data, size_t n, char *out65) {
    if (!out65 || (!data && n)) return sao_err(ctx, "sha256", "NULL argument");
    sha256_state s;
    sha256_init(&s);
    sha256_update(&s, data, n);
    sha256_final_hex(&s, out65);
    return 0;
}

/* ---- clock ----------------------------------------------------------------------------- */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int sao_http_clock(sao_ctx *ctx, double *seconds) {
    if (!seconds) return sao_err(ctx, "http_clock", "NULL output");
    *seconds = now_s();
    return 0;
}

int sao_http_sleep(sao_ctx *ctx, double seconds) {
    double end = now_s() + (seconds > 0 ? seconds : 0);
    for (;;) {
        if (sao_interrupt_pending()) return sao_err(ctx, "http_sleep", "interrupted");
        double left = end - now_s();
        if (left <= 0) return 0;
        if (left > 0.05) left = 0.05;    /* wake often enough to notice Ctrl-C */
        struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

/* ---- growable byte buffer -------------------------------------------------------------- */
typedef struct { char *p; size_t n, cap; } buf;

static int buf_add(buf *b, const void *data, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static int buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int buf_printf(buf *b, const char *fmt, ...) {
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0) return -1;
    return buf_add(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

static char *buf_take(buf *b) {           /* hands the (always NUL-terminated) string over */
    if (!b->p && buf_add(b, "", 0) != 0) return NULL;
    char *p = b->p;
    b->p = NULL;
    b->n = b->cap = 0;
    return p;
}

static void buf_free(buf *b) { free(b->p); b->p = NULL; b->n = b->cap = 0; }

/* ---- masking of secrets ---------------------------------------------------------------- */
/* Secrets shorter than this are not masked: they would garble every message. */
#define MIN_SECRET 4

static const char *const sensitive_params[] = {
    "api_key", "apikey", "key", "token", "access_token", "refresh_token", "client_secret",
    "secret", "password", "sig", "api_sig", "auth", "sk", NULL};

static int is_param_char(char c) { return isalnum((unsigned char)c) || c == '_' || c == '-'; }

/* Appends text[0:n] to out with every secret replaced by "***" and the value of every sensitive
 * query/form parameter (after '?', '&' or at the start) replaced by "***". */
static int redact_append(buf *out, const char *text, size_t n, const char *secrets) {
    buf tmp = {0};
    /* pass 1: literal secrets */
    size_t i = 0;
    while (i < n) {
        size_t best = 0;
        if (secrets) {
            const char *s = secrets;
            while (*s) {
                const char *e = strchr(s, '\n');
                size_t len = e ? (size_t)(e - s) : strlen(s);
                if (len >= MIN_SECRET && len <= n - i && len > best && memcmp(text + i, s, len) == 0)
                    best = len;
                s += len;
                if (*s == '\n') s++;
            }
        }
        if (best) {
            if (buf_add(&tmp, "***", 3)) goto oom;
            i += best;
        } else {
            if (buf_add(&tmp, text + i, 1)) goto oom;
            i++;
        }
    }
    /* pass 2: sensitive parameters */
    const char *t = tmp.p ? tmp.p : "";
    size_t m = tmp.n;
    i = 0;
    while (i < m) {
        if (i == 0 || t[i - 1] == '?' || t[i - 1] == '&') {
            size_t j = i;
            while (j < m && is_param_char(t[j])) j++;
            if (j < m && t[j] == '=' && j > i) {
                int hit = 0;
                for (int k = 0; sensitive_params[k]; k++)
                    if (strlen(sensitive_params[k]) == j - i && strncasecmp(t + i, sensitive_params[k], j - i) == 0)
                        hit = 1;
                if (hit) {
                    if (buf_add(out, t + i, j + 1 - i) || buf_add(out, "***", 3)) goto oom;
                    i = j + 1;
                    while (i < m && t[i] != '&' && t[i] != '#' && t[i] != ' ' && t[i] != '\n' && t[i] != '"')
                        i++;
                    continue;
                }
            }
        }
        if (buf_add(out, t + i, 1)) goto oom;
        i++;
    }
    if (!out->p && buf_add(out, "", 0)) goto oom;
    buf_free(&tmp);
    return 0;
oom:
    buf_free(&tmp);
    return -1;
}

int sao_http_redact(sao_ctx *ctx, const char *text, const char *secrets, char *out, size_t cap) {
    if (!text || !out || cap == 0) return sao_err(ctx, "http_redact", "NULL argument");
    buf b = {0};
    if (redact_append(&b, text, strlen(text), secrets)) {
        buf_free(&b);
        return sao_err(ctx, "http_redact", "out of memory");
    }
    size_t k = b.n < cap - 1 ? b.n : cap - 1;
    memcpy(out, b.p, k);
    out[k] = 0;
    buf_free(&b);
    return 0;
}

/* ---- the client ------------------------------------------------------------------------ */
typedef struct { char host[256]; double rate; int has_rate; double next_ok; } host_slot;

struct sao_http {
    sao_http_opts o;
    char *cache_dir;
    char *user_agent;
    char *noproxy;              /* the environment's no_proxy plus loopback */
    CURLM *multi;               /* kept across batches: its connection cache is reused */
    host_slot *hosts;
    int nhosts, caphosts;
    uint64_t rng;
    int64_t stats[6];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;
static void curl_init_once(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

int sao_http_opts_init(sao_ctx *ctx, sao_http_opts *o) {
    if (!o) return sao_err(ctx, "http_opts_init", "NULL options");
    memset(o, 0, sizeof *o);
    o->connect_timeout_s = 10;
    o->timeout_s = 120;
    o->read_timeout_s = 30;
    o->max_retries = 4;
    o->backoff_base_s = 0.5;
    o->backoff_max_s = 30;
    o->jitter = 0.25;
    o->retry_after_max_s = 120;
    o->rate_per_s = 0;
    o->max_parallel = 8;
    o->max_body = (int64_t)64 << 20;
    o->cache_ttl_s = 0;
    o->seed = 0x5a0;
    return 0;
}

sao_http *sao_http_new(sao_ctx *ctx, const sao_http_opts *opts) {
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK)
        return sao_err_null(ctx, "http_new", "libcurl init failed: %s", curl_easy_strerror(curl_init_rc));
    sao_http *h = calloc(1, sizeof *h);
    if (!h) return sao_err_null(ctx, "http_new", "out of memory");
    if (opts) h->o = *opts;
    else sao_http_opts_init(ctx, &h->o);
    if (h->o.max_parallel < 1) h->o.max_parallel = 1;
    if (h->o.max_retries < 0) h->o.max_retries = 0;
    if (h->o.max_body <= 0) h->o.max_body = (int64_t)64 << 20;
    h->cache_dir = (h->o.cache_dir && *h->o.cache_dir) ? strdup(h->o.cache_dir) : NULL;
    char ua[64];
    snprintf(ua, sizeof ua, "sao/%s", sao_version());
    h->user_agent = strdup(h->o.user_agent && *h->o.user_agent ? h->o.user_agent : ua);
    /* loopback never goes through a proxy, whatever http_proxy says; the user's no_proxy stays */
    const char *np = getenv("no_proxy");
    if (!np || !*np) np = getenv("NO_PROXY");
    size_t npn = (np ? strlen(np) : 0) + 32;
    h->noproxy = malloc(npn);
    if (h->noproxy) snprintf(h->noproxy, npn, "%s%slocalhost,127.0.0.1,::1", np && *np ? np : "", np && *np ? "," : "");
    h->o.cache_dir = h->cache_dir;
    h->o.user_agent = h->user_agent;
    h->rng = h->o.seed ^ 0x9e3779b97f4a7c15ull;
    h->multi = curl_multi_init();
    if (!h->multi || !h->user_agent || !h->noproxy || (h->o.cache_dir == NULL && opts && opts->cache_dir && *opts->cache_dir)) {
        sao_http_free(h);
        return sao_err_null(ctx, "http_new", "out of memory (libcurl multi handle)");
    }
    return h;
}

void sao_http_free(sao_http *h) {
    if (!h) return;
    if (h->multi) curl_multi_cleanup(h->multi);
    free(h->hosts);
    free(h->cache_dir);
    free(h->user_agent);
    free(h->noproxy);
    free(h);
}

static host_slot *host_get(sao_http *h, const char *host) {
    for (int i = 0; i < h->nhosts; i++)
        if (strcasecmp(h->hosts[i].host, host) == 0) return &h->hosts[i];
    if (h->nhosts == h->caphosts) {
        int cap = h->caphosts ? 2 * h->caphosts : 8;
        host_slot *p = realloc(h->hosts, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        h->hosts = p;
        h->caphosts = cap;
    }
    host_slot *s = &h->hosts[h->nhosts++];
    memset(s, 0, sizeof *s);
    snprintf(s->host, sizeof s->host, "%s", host);
    return s;
}

int sao_http_set_host_rate(sao_ctx *ctx, sao_http *h, const char *host, double rate) {
    if (!h || !host || !*host) return sao_err(ctx, "http_set_host_rate", "NULL client or empty host");
    if (!(rate >= 0)) return sao_err(ctx, "http_set_host_rate", "%s: rate %g: must be >= 0 (0 = unlimited)", host, rate);
    host_slot *s = host_get(h, host);
    if (!s) return sao_err(ctx, "http_set_host_rate", "out of memory");
    s->rate = rate;
    s->has_rate = 1;
    return 0;
}

int sao_http_stats(sao_ctx *ctx, const sao_http *h, int64_t *out6) {
    if (!h || !out6) return sao_err(ctx, "http_stats", "NULL argument");
    memcpy(out6, h->stats, sizeof h->stats);
    return 0;
}

static double rng_uniform(sao_http *h) {    /* splitmix64 → [0,1) */
    uint64_t z = (h->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- cache ----------------------------------------------------------------------------- */
static int cache_key(const sao_http_request *r, char *out65) {
    buf b = {0};
    int rc = buf_add(&b, "sao-http-cache 1\n", 17);
    rc |= buf_add(&b, r->method ? r->method : "GET", strlen(r->method ? r->method : "GET"));
    rc |= buf_add(&b, "\n", 1);
    rc |= redact_append(&b, r->url, strlen(r->url), r->secrets);
    rc |= buf_add(&b, "\n", 1);
    if (r->body && r->body_len) rc |= redact_append(&b, r->body, r->body_len, r->secrets);
    if (rc) { buf_free(&b); return -1; }
    sha256_state s;
    sha256_init(&s);
    sha256_update(&s, b.p, b.n);
    sha256_final_hex(&s, out65);
    buf_free(&b);
    return 0;
}

int sao_http_cache_key(sao_ctx *ctx, const sao_http_request *req, char *out65) {
    if (!req || !req->url || !out65) return sao_err(ctx, "http_cache_key", "NULL request, URL or output");
    if (cache_key(req, out65)) return sao_err(ctx, "http_cache_key", "out of memory");
    return 0;
}

static char *cache_path(const sao_http *h, const char *key) {
    size_t n = strlen(h->cache_dir) + 80;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%.2s/%s", h->cache_dir, key, key);
    return p;
}

static int mkdir_p(const char *dir) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp) return -1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
    return 0;
}

/* Fills r from a fresh cache entry; returns 1 on hit, 0 on miss (absent, stale, malformed). */
static int cache_read(const sao_http *h, const char *path, sao_http_response *r) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char line[64 + 8192];
    int status = -1;
    long long when = -1;
    long long nh = -1, nb = -1;
    int ok = fgets(line, sizeof line, f) && strcmp(line, "SAOHTTP 1\n") == 0;
    while (ok && fgets(line, sizeof line, f)) {
        if (line[0] == '\n') break;
        if (sscanf(line, "status %d", &status) == 1) continue;
        if (sscanf(line, "time %lld", &when) == 1) continue;
        if (sscanf(line, "headers %lld", &nh) == 1) continue;
        if (sscanf(line, "body %lld", &nb) == 1) continue;
    }
    ok = ok && status > 0 && when >= 0 && nh >= 0 && nb >= 0 && nb <= h->o.max_body && nh < (1 << 24);
    if (ok && h->o.cache_ttl_s > 0 && (double)(time(NULL) - when) > h->o.cache_ttl_s) ok = 0;
    char *hd = NULL, *bd = NULL;
    if (ok) {
        hd = malloc((size_t)nh + 1);
        bd = malloc((size_t)nb + 1);
        ok = hd && bd && fread(hd, 1, (size_t)nh, f) == (size_t)nh && fread(bd, 1, (size_t)nb, f) == (size_t)nb;
    }
    fclose(f);
    if (!ok) { free(hd); free(bd); return 0; }
    hd[nh] = 0;
    bd[nb] = 0;
    r->status = status;
    r->headers = hd;
    r->body = bd;
    r->body_len = (size_t)nb;
    r->from_cache = 1;
    return 1;
}

static int cache_write(sao_ctx *ctx, const char *path, const sao_http_request *req,
                       const sao_http_response *r) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    if (mkdir_p(dir) != 0)
        return sao_err(ctx, "http_cache", "%s: cannot create folder: %s (set cache_dir to a writable place)",
                       dir, strerror(errno));
    buf hdrs = {0}, out = {0};
    int rc = redact_append(&hdrs, r->headers ? r->headers : "", r->headers ? strlen(r->headers) : 0, req->secrets);
    rc |= buf_printf(&out, "SAOHTTP 1\nstatus %d\ntime %lld\nmethod %s\nurl ", r->status,
                     (long long)time(NULL), req->method ? req->method : "GET");
    rc |= redact_append(&out, req->url, strlen(req->url), req->secrets);
    rc |= buf_printf(&out, "\nheaders %zu\nbody %zu\n\n", hdrs.n, r->body_len);
    rc |= buf_add(&out, hdrs.p, hdrs.n);
    rc |= buf_add(&out, r->body, r->body_len);
    if (rc == 0) rc = sao_write_file_atomic(ctx, "http_cache", path, out.p, out.n);
    else sao_err(ctx, "http_cache", "out of memory");
    buf_free(&hdrs);
    buf_free(&out);
    return rc;
}

static int cacheable(const sao_http_request *q, int status) {
    if (q->cache <= 0) return 0;
    if (status >= 200 && status < 300) return 1;
    return q->cache >= 2 && status >= 400 && status < 500 && status != 401 && status != 408 && status != 429;
}

/* ---- one batch ------------------------------------------------------------------------- */
enum { JOB_WAIT, JOB_RUN, JOB_DONE };

typedef struct job {
    sao_http *h;
    const sao_http_request *q;
    sao_http_response *r;
    int state;
    double wake;                /* JOB_WAIT: earliest start */
    double t0;                  /* batch start */
    double attempt_t0;
    int attempt;
    char host[256];
    char *url_shown;            /* masked URL for messages */
    char *cache_file;
    CURL *easy;
    struct curl_slist *hdrs;
    buf body, head, log;
    double last_rx;
    curl_off_t last_dl, last_ul;
    int timed_out, too_large;
    char errbuf[CURL_ERROR_SIZE];
} job;

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
    job *j = ud;
    size_t n = size * nmemb;
    j->last_rx = now_s();
    if ((int64_t)(j->body.n + n) > j->h->o.max_body) { j->too_large = 1; return 0; }
    j->h->stats[5] += (int64_t)n;
    return buf_add(&j->body, p, n) ? 0 : n;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud) {
    job *j = ud;
    size_t n = size * nmemb;
    j->last_rx = now_s();
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) j->head.n = 0;   /* a new response (redirect, 100) */
    if (j->head.n + n > (1u << 20)) return 0;
    return buf_add(&j->head, p, n) ? 0 : n;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    (void)dltotal; (void)ultotal;
    job *j = ud;
    double t = now_s();
    if (dlnow != j->last_dl || ulnow != j->last_ul) {
        j->last_dl = dlnow;
        j->last_ul = ulnow;
        j->last_rx = t;
        return 0;
    }
    if (j->h->o.read_timeout_s > 0 && t - j->last_rx > j->h->o.read_timeout_s) {
        j->timed_out = 1;
        return 1;
    }
    return sao_interrupt_pending() ? 1 : 0;
}

static void job_release_easy(job *j) {
    if (j->easy) {
        curl_multi_remove_handle(j->h->multi, j->easy);
        curl_easy_cleanup(j->easy);
        j->easy = NULL;
    }
    curl_slist_free_all(j->hdrs);
    j->hdrs = NULL;
}

static long ms(double s) { return s > 0 ? (long)ceil(s * 1000.0) : 0; }

static int job_start(job *j) {
    sao_http *h = j->h;
    const sao_http_request *q = j->q;
    j->body.n = 0;
    j->head.n = 0;
    j->timed_out = j->too_large = 0;
    j->errbuf[0] = 0;
    j->last_dl = j->last_ul = 0;
    j->attempt++;
    j->attempt_t0 = j->last_rx = now_s();
    CURL *e = curl_easy_init();
    if (!e) return -1;
    j->easy = e;
    const char *m = q->method && *q->method ? q->method : "GET";
    curl_easy_setopt(e, CURLOPT_URL, q->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, j);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, h->user_agent);
    curl_easy_setopt(e, CURLOPT_NOPROXY, h->noproxy);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, j->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, j);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, j);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, j);
    if (h->o.connect_timeout_s > 0) curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ms(h->o.connect_timeout_s));
    if (h->o.timeout_s > 0) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, ms(h->o.timeout_s));
    if (strcmp(m, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(m, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(m, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(q->body ? q->body_len : 0));
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->body ? q->body : "");
    }
    /* header lines; "Expect:" stops curl from waiting for 100-continue on larger bodies */
    struct curl_slist *sl = curl_slist_append(NULL, "Expect:");
    if (!sl) return -1;
    j->hdrs = sl;
    if (q->headers) {
        const char *s = q->headers;
        while (*s) {
            const char *end = strchr(s, '\n');
            size_t len = end ? (size_t)(end - s) : strlen(s);
            if (len > 0 && len < 8192) {
                char line[8192];
                memcpy(line, s, len);
                line[len] = 0;
                if (line[len - 1] == '\r') line[len - 1] = 0;
                struct curl_slist *n2 = curl_slist_append(j->hdrs, line);
                if (!n2) return -1;
                j->hdrs = n2;
            }
            s += len;
            if (*s == '\n') s++;
        }
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, j->hdrs);
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK) return -1;
    h->stats[0]++;
    j->state = JOB_RUN;
    return 0;
}

/* Retry-After in seconds (delta or HTTP date), or -1 when absent. */
static double retry_after(const char *head) {
    const char *p = head;
    while (p && *p) {
        if (strncasecmp(p, "retry-after:", 12) == 0) {
            const char *v = p + 12;
            while (*v == ' ' || *v == '\t') v++;
            char val[128];
            size_t k = 0;
            while (v[k] && v[k] != '\r' && v[k] != '\n' && k < sizeof val - 1) { val[k] = v[k]; k++; }
            val[k] = 0;
            char *endp;
            double d = strtod(val, &endp);
            if (endp != val && (*endp == 0 || *endp == ' ')) return d < 0 ? 0 : d;
            time_t t = curl_getdate(val, NULL);
            if (t > 0) { double dd = difftime(t, time(NULL)); return dd < 0 ? 0 : dd; }
            return -1;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    return -1;
}

static int transport_retryable(CURLcode rc) {
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY: case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT: case CURLE_SEND_ERROR: case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING: case CURLE_PARTIAL_FILE: case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2: case CURLE_HTTP2_STREAM: case CURLE_HTTP3: case CURLE_BAD_CONTENT_ENCODING:
        return 1;
    default:
        return 0;
    }
}

static int status_retryable(long code) {
    return code == 408 || code == 429 || (code >= 500 && code <= 599 && code != 501 && code != 505);
}

/* Fills the response from the job's final attempt; err_text NULL when an HTTP answer came. */
static int job_finish(sao_ctx *ctx, job *j, long code, const char *err_text, int retryable) {
    sao_http_response *r = j->r;
    sao_http *h = j->h;
    r->status = (int)code;
    r->attempts = j->attempt;
    r->retryable = retryable;
    r->elapsed_s = now_s() - j->t0;
    if (err_text) {
        buf e = {0};
        if (redact_append(&e, err_text, strlen(err_text), j->q->secrets)) return -1;
        r->error = buf_take(&e);
        j->body.n = 0;
        if (j->body.p) j->body.p[0] = 0;
        h->stats[3]++;
    }
    r->body_len = j->body.n;
    r->body = buf_take(&j->body);
    r->headers = buf_take(&j->head);
    if (!r->body || !r->headers) return -1;
    if (!err_text && j->cache_file && cacheable(j->q, r->status)) {
        if (cache_write(ctx, j->cache_file, j->q, r) == 0) {
            h->stats[4]++;
            r->cache_path = strdup(j->cache_file);
        } else {
            buf_printf(&j->log, "cache not written: %s\n", sao_ctx_error(ctx));
            sao_ctx_clear_error(ctx);
        }
    }
    r->log = buf_take(&j->log);
    j->state = JOB_DONE;
    return r->log ? 0 : -1;
}

static double backoff(sao_http *h, int retry) {
    double d = h->o.backoff_base_s * pow(2.0, retry - 1);
    if (d > h->o.backoff_max_s) d = h->o.backoff_max_s;
    return d * (1.0 + h->o.jitter * rng_uniform(h));
}

/* An attempt ended: decide between done and another try. */
static int job_attempt_done(sao_ctx *ctx, job *j, CURLcode rc) {
    sao_http *h = j->h;
    long code = 0;
    curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &code);
    double took = now_s() - j->attempt_t0;
    char what[CURL_ERROR_SIZE + 128];
    int retryable;
    const char *err = NULL;
    if (rc == CURLE_OK) {
        retryable = status_retryable(code);
        snprintf(what, sizeof what, "HTTP %ld", code);
    } else {
        if (j->too_large)
            snprintf(what, sizeof what, "response body over %lld bytes (raise max_body)", (long long)h->o.max_body);
        else if (j->timed_out)
            snprintf(what, sizeof what, "no data for %.2f s (read timeout)", h->o.read_timeout_s);
        else if (rc == CURLE_ABORTED_BY_CALLBACK && sao_interrupt_pending())
            snprintf(what, sizeof what, "interrupted");
        else if (rc == CURLE_PARTIAL_FILE)
            snprintf(what, sizeof what, "truncated response: %s", j->errbuf[0] ? j->errbuf : curl_easy_strerror(rc));
        else
            snprintf(what, sizeof what, "%s", j->errbuf[0] ? j->errbuf : curl_easy_strerror(rc));
        retryable = !j->too_large && (j->timed_out || transport_retryable(rc));
        err = what;
        code = 0;
    }
    job_release_easy(j);
    buf_printf(&j->log, "attempt %d: %s %s -> %s (%.0f ms)", j->attempt, j->q->method ? j->q->method : "GET",
               j->url_shown, what, took * 1000.0);
    if (retryable && j->attempt <= h->o.max_retries && !sao_interrupt_pending()) {
        double delay = backoff(h, j->attempt);
        if (rc == CURLE_OK && (code == 429 || code == 503)) {
            double ra = retry_after(j->head.p ? j->head.p : "");
            if (ra > h->o.retry_after_max_s) {
                buf_printf(&j->log, "; server asks to wait %.0f s, over retry_after_max_s=%.0f: giving up\n",
                           ra, h->o.retry_after_max_s);
                return job_finish(ctx, j, code, NULL, 1);
            }
            if (ra >= 0) delay = ra;
        }
        buf_printf(&j->log, "; retry in %.3f s\n", delay);
        h->stats[2]++;
        j->r->waited_s += delay;
        j->wake = now_s() + delay;
        j->state = JOB_WAIT;
        return 0;
    }
    buf_printf(&j->log, "\n");
    if (err) {
        char full[CURL_ERROR_SIZE + 512];
        snprintf(full, sizeof full, "%s %s failed: %s (after %d attempt%s%s)", j->q->method ? j->q->method : "GET",
                 j->url_shown, what, j->attempt, j->attempt == 1 ? "" : "s",
                 retryable ? "; the server may be down or slow: check the URL, raise timeouts or retries" : "");
        return job_finish(ctx, j, 0, full, retryable);
    }
    return job_finish(ctx, j, code, NULL, retryable);
}

static void job_free(job *j) {
    job_release_easy(j);
    buf_free(&j->body);
    buf_free(&j->head);
    buf_free(&j->log);
    free(j->url_shown);
    free(j->cache_file);
}

static int host_of(const char *url, char *out, size_t cap) {
    CURLU *u = curl_url();
    if (!u) return -1;
    char *host = NULL;
    int ok = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK;
    if (ok) snprintf(out, cap, "%s", host);
    curl_free(host);
    curl_url_cleanup(u);
    return ok ? 0 : -1;
}

int sao_http_perform(sao_ctx *ctx, sao_http *h, int n, const sao_http_request *reqs, sao_http_response *resps) {
    const char *op = "http";
    if (!h || n < 0 || (n > 0 && (!reqs || !resps))) return sao_err(ctx, op, "NULL client, requests or responses");
    for (int i = 0; i < n; i++)
        if (!reqs[i].url || !*reqs[i].url) return sao_err(ctx, op, "request %d has no URL", i + 1);
    job *jobs = calloc(n ? (size_t)n : 1, sizeof *jobs);
    if (!jobs) return sao_err(ctx, op, "out of memory (%d requests)", n);
    double t0 = now_s();
    int rc = 0, ndone = 0, inflight = 0;
    for (int i = 0; i < n; i++) {
        job *j = &jobs[i];
        j->h = h;
        j->q = &reqs[i];
        j->r = &resps[i];
        j->t0 = t0;
        j->wake = t0;
        memset(j->r, 0, sizeof *j->r);
        buf u = {0};
        if (redact_append(&u, reqs[i].url, strlen(reqs[i].url), reqs[i].secrets)) { rc = sao_err(ctx, op, "out of memory"); goto out; }
        j->url_shown = buf_take(&u);
        if (host_of(reqs[i].url, j->host, sizeof j->host) != 0) {
            char msg[600];
            snprintf(msg, sizeof msg, "%s is not a valid http(s) URL (check the base URL setting)", j->url_shown);
            buf_printf(&j->log, "%s\n", msg);
            if (job_finish(ctx, j, 0, msg, 0)) { rc = sao_err(ctx, op, "out of memory"); goto out; }
            ndone++;
            continue;
        }
        if (h->cache_dir && (reqs[i].cache > 0 || reqs[i].cache_only)) {
            char key[65];
            if (cache_key(&reqs[i], key) || !(j->cache_file = cache_path(h, key))) { rc = sao_err(ctx, op, "out of memory"); goto out; }
            if (cache_read(h, j->cache_file, j->r)) {
                h->stats[1]++;
                j->r->cache_path = strdup(j->cache_file);
                j->r->elapsed_s = now_s() - t0;
                buf_printf(&j->log, "cache hit: %s %s -> HTTP %d\n", reqs[i].method ? reqs[i].method : "GET",
                           j->url_shown, j->r->status);
                j->r->log = buf_take(&j->log);
                j->state = JOB_DONE;
                ndone++;
                continue;
            }
        }
        if (reqs[i].cache_only) {
            buf_printf(&j->log, "cache miss: %s %s (cache only)\n", reqs[i].method ? reqs[i].method : "GET", j->url_shown);
            if (job_finish(ctx, j, 0, NULL, 0)) { rc = sao_err(ctx, op, "out of memory"); goto out; }
            ndone++;
            continue;
        }
    }
    while (ndone < n) {
        if (sao_interrupt_pending()) { rc = sao_err(ctx, op, "interrupted (%d of %d requests done)", ndone, n); goto out; }
        double t = now_s();
        double next_wake = t + 0.1;
        for (int i = 0; i < n && inflight < h->o.max_parallel; i++) {
            job *j = &jobs[i];
            if (j->state != JOB_WAIT) continue;
            if (j->wake > t) { if (j->wake < next_wake) next_wake = j->wake; continue; }
            host_slot *hs = host_get(h, j->host);
            if (!hs) { rc = sao_err(ctx, op, "out of memory"); goto out; }
            double rate = hs->has_rate ? hs->rate : h->o.rate_per_s;
            if (rate > 0 && hs->next_ok > t) {       /* rate limit: wait for this host's slot */
                j->r->waited_s += hs->next_ok - t;
                j->wake = hs->next_ok;
                if (j->wake < next_wake) next_wake = j->wake;
                continue;
            }
            if (rate > 0) hs->next_ok = (hs->next_ok > t ? hs->next_ok : t) + 1.0 / rate;
            if (job_start(j)) { rc = sao_err(ctx, op, "cannot start a transfer (libcurl out of memory?)"); goto out; }
            inflight++;
        }
        int running = 0;
        curl_multi_perform(h->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(h->multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            job *j = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
            if (!j) continue;
            inflight--;
            if (job_attempt_done(ctx, j, msg->data.result)) { rc = sao_err(ctx, op, "out of memory"); goto out; }
            if (j->state == JOB_DONE) ndone++;
        }
        if (ndone >= n) break;
        /* sleep until the next job may start (a retry just scheduled counts), at most 100 ms */
        double t2 = now_s();
        next_wake = t2 + 0.1;
        for (int i = 0; i < n && inflight < h->o.max_parallel; i++)   /* full: wait for sockets */
            if (jobs[i].state == JOB_WAIT && jobs[i].wake < next_wake) next_wake = jobs[i].wake;
        if (next_wake <= t2) continue;
        double wait = next_wake - t2;
        if (wait > 0.1) wait = 0.1;
        if (wait < 0) wait = 0;
        curl_multi_poll(h->multi, NULL, 0, (int)ceil(wait * 1000.0), NULL);
    }
out:
    for (int i = 0; i < n; i++) {
        if (rc != 0 && jobs[i].state != JOB_DONE) {
            resps[i].error = strdup(jobs[i].state == JOB_RUN || jobs[i].attempt ? "interrupted" : "not started");
            resps[i].attempts = jobs[i].attempt;
            resps[i].log = buf_take(&jobs[i].log);
        }
        job_free(&jobs[i]);
    }
    free(jobs);
    return rc;
}

int sao_http_response_clear(sao_ctx *ctx, sao_http_response *r) {
    (void)ctx;
    if (!r) return 0;
    free(r->body);
    free(r->headers);
    free(r->error);
    free(r->log);
    free(r->cache_path);
    memset(r, 0, sizeof *r);
    return 0;
}

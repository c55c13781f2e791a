/* sao_http.h — HTTP client on libcurl for metadata APIs and LLM servers: retries with
 * exponential backoff and jitter, Retry-After, a per-host rate limit, an on-disk response cache
 * (content-addressed, TTL, atomic writes) and concurrent batches (curl multi). Also SHA-256 and
 * a monotonic clock, which the Lua side uses for cache keys, seeds and timing.
 *
 * Read verbatim by the Lua FFI after sao.h ('#' lines dropped): plain declarations only.
 * Lua wrapper and user guide: lua/sao/http.lua, docs/http.md.
 *
 * Secrets (API keys, tokens) travel in sao_http_request.secrets: every occurrence is replaced
 * by "***" in cache keys, cache files, error messages and the per-attempt log, and query
 * parameters with sensitive names (api_key, token, client_secret, ...) are masked in messages.
 * A sao_http handle is not thread-safe: one per thread.
 */
#ifndef SAO_HTTP_H
#define SAO_HTTP_H
#include "sao.h"
#ifdef __cplusplus
extern "C" {
#endif

typedef struct sao_http sao_http;

typedef struct sao_http_opts {
    double connect_timeout_s;   /* TCP/TLS connect, per attempt (default 10) */
    double timeout_s;           /* whole attempt (default 120) */
    double read_timeout_s;      /* no byte received for this long ends the attempt (default 30) */
    int max_retries;            /* retries after the first attempt (default 4) */
    double backoff_base_s;      /* delay before retry k is base * 2^(k-1) ... (default 0.5) */
    double backoff_max_s;       /* ... capped here (default 30) ... */
    double jitter;              /* ... times (1 + jitter * u), u uniform in [0,1) (default 0.25) */
    double retry_after_max_s;   /* a longer Retry-After ends the request instead (default 120) */
    double rate_per_s;          /* request starts per second per host, 0 = unlimited (default 0) */
    int max_parallel;           /* transfers in flight within one batch (default 8) */
    int64_t max_body;           /* largest response body accepted, bytes (default 64 MiB) */
    double cache_ttl_s;         /* cache entries older than this are refetched; <= 0: never */
    uint64_t seed;              /* jitter random stream */
    const char *cache_dir;      /* NULL or "": no cache. Created when first written. */
    const char *user_agent;     /* NULL: "sao/<version>" */
} sao_http_opts;

typedef struct sao_http_request {
    const char *method;         /* "GET", "POST", "PUT", "DELETE", "HEAD" */
    const char *url;
    const char *headers;        /* "Name: value" lines separated by '\n', or NULL */
    const char *body;           /* body_len bytes (may hold NULs), or NULL */
    size_t body_len;
    const char *secrets;        /* strings to mask, separated by '\n', or NULL */
    int cache;                  /* 0: no cache; 1: read/write 2xx; 2: also 4xx but 401/408/429 */
    int cache_only;             /* 1: answer from the cache or not at all (status 0, no transfer) */
} sao_http_request;

typedef struct sao_http_response {
    int status;                 /* HTTP status of the final attempt; 0 when none arrived */
    int attempts;               /* transfers made (0 when answered from the cache) */
    int from_cache;             /* 1 when the answer came from the cache */
    int retryable;              /* 1 when the final failure was of a kind that retries can fix */
    double elapsed_s;           /* wall time, waits included */
    double waited_s;            /* of which backoff and rate-limit waits */
    char *body;                 /* NUL-terminated; body_len bytes */
    size_t body_len;
    char *headers;              /* header block of the final response ("" when none) */
    char *error;                /* NULL, or why no HTTP answer arrived (secrets masked) */
    char *log;                  /* one line per attempt (secrets masked) */
    char *cache_path;           /* file that answered or was written, or NULL */
} sao_http_response;

int sao_http_opts_init(sao_ctx *ctx, sao_http_opts *opts);   /* fills the defaults above */
sao_http *sao_http_new(sao_ctx *ctx, const sao_http_opts *opts);
void sao_http_free(sao_http *h);
/* Overrides opts.rate_per_s for one host name (no port), e.g. 5 for ws.audioscrobbler.com. */
int sao_http_set_host_rate(sao_ctx *ctx, sao_http *h, const char *host, double rate_per_s);
/* Runs n requests concurrently (at most max_parallel in flight), each retried on connection
 * errors, timeouts, 408, 429 and 5xx (but 501/505). Returns 0 when every request has an outcome
 * in resps[i] (an HTTP status or resps[i].error), -1 on bad arguments, out of memory or
 * interruption (sao_interrupt_set). resps[i] must be zeroed or cleared; free with _clear. */
int sao_http_perform(sao_ctx *ctx, sao_http *h, int n, const sao_http_request *reqs,
                     sao_http_response *resps);
int sao_http_response_clear(sao_ctx *ctx, sao_http_response *r);
/* Counters since sao_http_new: out[0] transfers, [1] cache hits, [2] retries, [3] requests
 * that failed without an HTTP answer, [4] cache writes, [5] bytes received. */
int sao_http_stats(sao_ctx *ctx, const sao_http *h, int64_t *out6);
/* The cache key of a request (64 hex digits + NUL): SHA-256 of method, URL and body with the
 * secrets masked. The entry lives at cache_dir/<key[0:2]>/<key>. */
int sao_http_cache_key(sao_ctx *ctx, const sao_http_request *req, char *out65);
/* Masks secrets ('\n'-separated) and sensitive query parameters in text; out has cap bytes. */
int sao_http_redact(sao_ctx *ctx, const char *text, const char *secrets, char *out, size_t cap);

int sao_sha256_hex(sao_ctx *ctx, const void *data, size_t n, char *out65);
int sao_http_clock(sao_ctx *ctx, double *seconds);          /* monotonic seconds */
int sao_http_sleep(sao_ctx *ctx, double seconds);           /* -1 when interrupted */

#ifdef __cplusplus
}
#endif
#endif

/* ctx.c — the context: error messages, thread count, interrupt flag, version.
 * A context carries everything a call needs; there is no other mutable global in the library
 * except the interrupt flag, which a signal handler must be able to reach. */
#include "internal.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef SAO_VERSION
#define SAO_VERSION "0.1.0"
#endif

/* Exported data, on purpose: every copy of libsao.so in a process (./sao links one, SAO_LIB may
 * load another) resolves this name to the same flag, so Ctrl-C reaches whichever copy runs. */
volatile sig_atomic_t sao_interrupt_flag;

void sao_interrupt_set(int on) { sao_interrupt_flag = on ? 1 : 0; }
int sao_interrupt_pending(void) { return sao_interrupt_flag != 0; }

volatile sig_atomic_t sao_stop_flag, sao_graceful_flag;
int sao_stop_graceful(int on) {
    int was = sao_graceful_flag != 0;
    if (on >= 0) sao_graceful_flag = on ? 1 : 0;
    return was;
}
int sao_stop_requested(void) { return sao_stop_flag != 0; }
void sao_stop_set(int on) { sao_stop_flag = on ? 1 : 0; }

const char *sao_version(void) { return SAO_VERSION; }

double sao_file_mtime(const char *path) {
    struct stat st;
    if (!path || stat(path, &st) != 0) return -1;
    return (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec * 1e-9;
}

static int default_threads(void) {
    const char *s = getenv("SAO_THREADS");
    if (s && *s) {
        int n = atoi(s);
        if (n >= 1) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 ? (int)n : 1;
}

sao_ctx *sao_ctx_new(void) {
    sao_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    ctx->threads = default_threads();
    ctx->device = SAO_CPU;
    return ctx;
}

void sao_ctx_free(sao_ctx *ctx) { free(ctx); }
const char *sao_ctx_error(const sao_ctx *ctx) { return ctx ? ctx->err : ""; }
void sao_ctx_clear_error(sao_ctx *ctx) { if (ctx) ctx->err[0] = 0; }
int sao_ctx_threads(const sao_ctx *ctx) { return ctx->threads; }

int sao_ctx_set_threads(sao_ctx *ctx, int n) {
    if (n < 1) return sao_err(ctx, "set_threads", "%d threads: need at least 1", n);
    ctx->threads = n;
    return 0;
}

/* OpenBLAS exports this; declared weakly so a build against another BLAS still links. */
extern void openblas_set_num_threads(int) __attribute__((weak));

void sao_threads_apply(const sao_ctx *ctx) {
    int n = ctx ? ctx->threads : 1;
#ifdef _OPENMP
    if (omp_get_max_threads() != n) omp_set_num_threads(n);
#endif
    if (openblas_set_num_threads) openblas_set_num_threads(n);
}

static void verr(sao_ctx *ctx, const char *op, const char *fmt, va_list ap) {
    if (!ctx) return;
    int k = snprintf(ctx->err, sizeof ctx->err, "%s: ", op ? op : "sao");
    if (k < 0) k = 0;
    if ((size_t)k < sizeof ctx->err) vsnprintf(ctx->err + k, sizeof ctx->err - (size_t)k, fmt, ap);
}

int sao_err(sao_ctx *ctx, const char *op, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    verr(ctx, op, fmt, ap);
    va_end(ap);
    return -1;
}

void *sao_err_null(sao_ctx *ctx, const char *op, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    verr(ctx, op, fmt, ap);
    va_end(ap);
    return NULL;
}

int sao_write_file_atomic(sao_ctx *ctx, const char *op, const char *path, const void *data, size_t n) {
    size_t len = strlen(path) + 32;
    char *tmp = malloc(len);
    if (!tmp) return sao_err(ctx, op, "%s: out of memory", path);
    snprintf(tmp, len, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return sao_err(ctx, op, "%s: cannot create temporary file: %s (is the folder there and writable?)",
                       path, strerror(e));
    }
    const char *p = data;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            free(tmp);
            return sao_err(ctx, op, "%s: write failed: %s", path, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    int synced = fsync(fd) == 0;
    int e0 = errno;
    if (close(fd) != 0 || !synced) {
        int e = synced ? errno : e0;
        unlink(tmp);
        free(tmp);
        return sao_err(ctx, op, "%s: cannot flush: %s", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        free(tmp);
        return sao_err(ctx, op, "%s: cannot rename into place: %s", path, strerror(e));
    }
    free(tmp);
    return 0;
}

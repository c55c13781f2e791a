/* comm_tcp.c — the TCP transport of sao_comm (sao_comm.h has the contract; comm.c the group, the
 * tensor lists and the file transport this one mirrors).
 *
 * Start-up (sao_comm_tcp), everything within timeout_s:
 *   rank 0      listens on the port of "host:port" on every interface (SO_REUSEADDR) and accepts
 *               world - 1 joins. Each join sends a hello {magic, version, JOIN, rank, world, the
 *               port of its own listener}; rank 0 checks it (magic, version, world, rank range, no
 *               rank twice), notes the joiner's address as accept() saw it (getpeername), then
 *               sends every rank the table of (address, port) of all ranks and closes these
 *               rendezvous connections: after start-up only the ring carries anything.
 *   rank r > 0  first opens its own listener on an ephemeral port, then connects to host:port
 *               (retrying every 50 ms: rank 0 may start later), says hello and reads the table.
 *   the ring    every rank connects to the listener of rank r + 1 (rank 0's is the rendezvous
 *               socket; the last rank reaches it at host:port) and says {..., RING, rank}; it then
 *               accepts one connection on its own listener and checks that the hello there is a
 *               RING one from rank r - 1, so no other connection can take the ring's place. The
 *               listeners close; a rank keeps two sockets, `next` (only sent on) and `prev` (only
 *               received on), both non-blocking with TCP_NODELAY.
 *   world 1     no socket at all: the collectives return at once (comm.c skips them).
 * Collectives, on comm.c's flat buffer x of n floats cut into shards (sao_comm_shard; some may be
 * empty), with shard indices taken mod world:
 *   header          each collective first sends {op, size} to next and compares prev's with its
 *                   own, so ranks that call different collectives (or sizes) fail, naming both
 *   reduce-scatter  world - 1 steps: at step s rank r sends shard r-s-1 to next and receives shard
 *                   r-s-2 from prev, adding it into its own copy; after the last step shard r holds
 *                   the sum (in the order r+1, r+2, ..., r) and becomes sum * (1.0f / world)
 *   all-gather      world - 1 steps: at step s rank r sends shard r-s and receives shard r-s-1
 *   all-reduce      reduce-scatter then all-gather: each element is summed once, by the shard's
 *                   owner, and copied, so every rank holds bit-identical values
 *   broadcast       a stream along the ring from root: a rank relays bytes as soon as they arrive
 *   barrier         world - 1 header steps: after step s a rank has heard, through the chain, from
 *                   the s + 1 ranks before it, so after world - 1 steps from all of them
 * Deadlock: in a step every rank sends to next while receiving from prev. With blocking sockets a
 * shard larger than the kernel's buffers would block every sender at once; here both directions
 * are non-blocking and pumped together under poll(), so each rank drains prev while next drains it.
 * Failures: a wait polls in 100 ms slices, checks Ctrl-C (sao_interrupt_pending) and, while the group
 * forms, the processes of sao_comm_tcp_watching (about every 0.2 s), and fails after
 * timeout_s without any progress, naming the rank it waited for. EOF, ECONNRESET or EPIPE (sends
 * use MSG_NOSIGNAL: no SIGPIPE) fail at once naming the rank that closed; while a rank still has
 * bytes for next, that socket is also watched for readability, which on a socket that carries
 * nothing towards us can only mean it closed (once next has all it needs it may exit). A failed
 * collective aborts the group (comm.c does it; the barrier here) and abort closes both sockets, so
 * the neighbours fail at once in turn instead of waiting out their timeout. Bytes a dying peer never
 * read still count as sent (TCP does not say): a rank may finish the step in which its neighbour
 * died and learn of it at its next collective. */
#include "comm_internal.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TCP_MAGIC 0x73616f74u   /* "saot" */
#define TCP_VERSION 1u
#define HELLO_BYTES 24          /* magic, version, kind, rank, world, port: 32-bit, big-endian */
#define ENTRY_BYTES 24          /* a table entry: family (4 or 6), port, 16 address bytes */
#define HEADER_BYTES 16         /* a collective's header: magic, op, size (64-bit) */
#define POLL_MS 100
#define RING_HELLO_LATE " to say hello on the ring (did a process die?)"

enum { HELLO_JOIN = 1, HELLO_TABLE = 2, HELLO_RING = 3 };
enum { OP_BARRIER = 1, OP_ALLREDUCE, OP_REDUCE_SCATTER, OP_ALLGATHER, OP_BROADCAST };

typedef struct {
    int next, prev;     /* ring sockets: sent on / received on; -1 once closed */
    float *tmp;         /* reduce-scatter's incoming shard */
    int64_t tmp_cap;
} tcp_group;

#define TG(c) ((tcp_group *)(c)->t)

static const comm_ops tcp_ops;

/* ---- small helpers ------------------------------------------------------------------------------- */

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static int mod(int a, int m) { return ((a % m) + m) % m; }

static void close_fd(int *fd) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

static void sleep_ms(int ms) {
    struct timespec ts = { 0, (long)ms * 1000000L };
    nanosleep(&ts, NULL);
}

/* Whether a wait must give up now: Ctrl-C, or (at start-up) a watched process that has exited.
 * The error names it. */
static int must_stop(sao_ctx *ctx, sao_comm *c, const char *op) {
    if (sao_interrupt_pending()) return sao_err(ctx, op, "rank %d: interrupted", c->rank);
    double now = comm_now();
    if (c->nwatch > 0 && now - c->watch_checked > 0.2) {
        c->watch_checked = now;
        for (int i = 0; i < c->nwatch; i++)
            if (c->watch[i] > 0 && kill((pid_t)c->watch[i], 0) != 0 && errno == ESRCH)
                return sao_err(ctx, op, "rank %d: process %lld, one of this machine's ranks, has exited before the "
                               "group formed", c->rank, (long long)c->watch[i]);
    }
    return 0;
}

static void tune(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* "rank 3", or "a joining process" while rank 0 does not know yet who is at the other end. */
static const char *who(char *buf, size_t cap, int rank) {
    if (rank < 0) snprintf(buf, cap, "a joining process");
    else snprintf(buf, cap, "rank %d", rank);
    return buf;
}

/* "10.0.0.2:29500" or "[::1]:29500". */
static const char *addr_text(char *buf, size_t cap, const struct sockaddr_storage *ss) {
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        snprintf(buf, cap, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        snprintf(buf, cap, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
    }
    return buf;
}

static socklen_t addr_len(const struct sockaddr_storage *ss) {
    return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static void set_port(struct sockaddr_storage *ss, int port) {
    if (ss->ss_family == AF_INET6) ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
}

static void put_entry(unsigned char *p, const struct sockaddr_storage *ss) {
    memset(p, 0, ENTRY_BYTES);
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        put32(p, 6);
        put32(p + 4, ntohs(a->sin6_port));
        memcpy(p + 8, &a->sin6_addr, 16);
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        put32(p, 4);
        put32(p + 4, ntohs(a->sin_port));
        memcpy(p + 8, &a->sin_addr, 4);
    }
}

static int get_entry(const unsigned char *p, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    uint32_t fam = get32(p), port = get32(p + 4);
    if (port < 1 || port > 65535) return -1;
    if (fam == 6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        memcpy(&a->sin6_addr, p + 8, 16);
        return 0;
    }
    if (fam == 4) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        memcpy(&a->sin_addr, p + 8, 4);
        return 0;
    }
    return -1;
}

static void put_hello(unsigned char *h, uint32_t kind, int rank, int world, int port) {
    put32(h, TCP_MAGIC);
    put32(h + 4, TCP_VERSION);
    put32(h + 8, kind);
    put32(h + 12, (uint32_t)rank);
    put32(h + 16, (uint32_t)world);
    put32(h + 20, (uint32_t)port);
}

/* "host:port" or "[v6]:port" -> host (brackets dropped), port 1..65535, and whether it is IPv6. */
static int parse_addr(sao_ctx *ctx, const char *op, const char *addr, char *host, size_t cap, int *port, int *v6) {
    const char *hint = "(expected host:port, e.g. 10.0.0.1:29500 or [::1]:29500)";
    if (!addr || !*addr) return sao_err(ctx, op, "empty address %s", hint);
    const char *colon, *h0 = addr, *h1;
    *v6 = addr[0] == '[';
    if (*v6) {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':') return sao_err(ctx, op, "\"%s\" is not [v6 address]:port %s", addr, hint);
        h0 = addr + 1, h1 = close, colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon) return sao_err(ctx, op, "\"%s\" has no port %s", addr, hint);
        h1 = colon;
        if (memchr(addr, ':', (size_t)(colon - addr)))
            return sao_err(ctx, op, "\"%s\": an IPv6 address goes in brackets %s", addr, hint);
    }
    if (h1 == h0) return sao_err(ctx, op, "\"%s\" has no host %s", addr, hint);
    if ((size_t)(h1 - h0) >= cap) return sao_err(ctx, op, "\"%s\": the host name is too long", addr);
    memcpy(host, h0, (size_t)(h1 - h0));
    host[h1 - h0] = 0;
    const char *p = colon + 1;
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (!*p || *end || errno || v < 1 || v > 65535 || *p == '+' || *p == '-' || *p == ' ')
        return sao_err(ctx, op, "\"%s\": the port \"%s\" is not a number in 1..65535", addr, p);
    *port = (int)v;
    return 0;
}

/* ---- moving bytes -------------------------------------------------------------------------------- */

/* Sends s[0..sn) on sfd (to rank srank) while receiving r[0..rn) on rfd (from rank rrank), both
 * non-blocking, until both are done. relay: s and r are one buffer and only bytes that have arrived
 * are sent on (the broadcast). watch: sfd carries nothing towards us, so its being readable means
 * the peer closed it. Fails after timeout_s without progress; `waiting` (or NULL) says what for. */
static int pump(sao_ctx *ctx, sao_comm *c, const char *op, int sfd, int srank, const char *s, size_t sn, int rfd,
                int rrank, char *r, size_t rn, int relay, int watch, const char *waiting) {
    size_t sent = 0, got = 0;
    double last = comm_now();
    char wb[32];
    int peer = -2, err = 0;              /* on failure: the rank whose connection failed, and errno (0: EOF) */
    for (;;) {
        int moved = 0;
        if (got < rn) {
            ssize_t m = recv(rfd, r + got, rn - got, 0);
            if (m > 0) got += (size_t)m, moved = 1;
            else if (m == 0) { peer = rrank, err = 0; break; }
            else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) { peer = rrank, err = errno; break; }
        }
        size_t can = relay ? (got < sn ? got : sn) : sn;
        if (sent < can) {
            ssize_t m = send(sfd, s + sent, can - sent, MSG_NOSIGNAL);
            if (m > 0) sent += (size_t)m, moved = 1;
            else if (m < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                peer = srank, err = errno;
                break;
            }
        }
        if (got == rn && sent == sn) return 0;
        if (must_stop(ctx, c, op)) return -1;
        double now = comm_now();
        if (moved) {
            last = now;
            continue;
        }
        if (now - last > c->timeout_s) {
            int late = got < rn ? rrank : srank;
            return sao_err(ctx, op, "rank %d waited %g s for %s%s", c->rank, c->timeout_s, who(wb, sizeof wb, late),
                           waiting ? waiting : " (did a process die?)");
        }
        struct pollfd p[2];
        int np = 0, is = -1;
        if (got < rn) p[np++] = (struct pollfd){ .fd = rfd, .events = POLLIN };
        if (sfd >= 0 && sent < sn) {   /* next may close once it has all it needs: only then is it not an error */
            is = np;
            short ev = (short)((sent < can ? POLLOUT : 0) | (watch ? POLLIN : 0));
            p[np++] = (struct pollfd){ .fd = sfd, .events = ev };
        }
        int k = poll(p, (nfds_t)np, POLL_MS);
        if (k < 0 && errno != EINTR) return sao_err(ctx, op, "rank %d: poll failed: %s", c->rank, strerror(errno));
        if (k > 0 && is >= 0 && watch && (p[is].revents & (POLLIN | POLLHUP | POLLERR))) {
            char b;
            ssize_t m = recv(sfd, &b, 1, MSG_DONTWAIT);
            if (m == 0) { peer = srank, err = 0; break; }
            if (m > 0)
                return sao_err(ctx, op, "rank %d: rank %d sent data the wrong way round the ring", c->rank, srank);
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) { peer = srank, err = errno; break; }
        }
    }
    if (err == 0 || err == ECONNRESET || err == EPIPE || err == ECONNABORTED)
        return sao_err(ctx, op, "rank %d: %s closed the connection (did its process exit?)", c->rank,
                       who(wb, sizeof wb, peer));
    return sao_err(ctx, op, "rank %d: the connection with %s failed: %s", c->rank, who(wb, sizeof wb, peer),
                   strerror(err));
}

/* A listening non-blocking socket on every interface at `port` (0: an ephemeral one). */
static int listen_on(sao_ctx *ctx, sao_comm *c, const char *op, int family, int port) {
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return sao_err(ctx, op, "rank %d: cannot open a socket: %s", c->rank, strerror(errno));
    int one = 1, zero = 0;
    if (port) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);   /* IPv4 peers too */
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_any;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_ANY);
    }
    set_port(&ss, port);
    if (bind(fd, (struct sockaddr *)&ss, addr_len(&ss)) != 0) {
        int e = errno;
        close(fd);
        if (port)
            return sao_err(ctx, op, "rank 0 cannot listen on port %d: %s (%s)", port, strerror(e),
                           e == EADDRINUSE ? "another process holds it: is another run using it? pick another port"
                                           : "pick another port");
        return sao_err(ctx, op, "rank %d cannot open a listening socket: %s", c->rank, strerror(e));
    }
    if (listen(fd, c->world + 16) != 0) {
        int e = errno;
        close(fd);
        return sao_err(ctx, op, "rank %d: listen on port %d failed: %s", c->rank, port, strerror(e));
    }
    return fd;
}

/* One connection accepted on lfd before `deadline`; `late` is the whole message of a timeout. */
static int accept_until(sao_ctx *ctx, sao_comm *c, const char *op, int lfd, double deadline, const char *late) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            tune(fd);
            return fd;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
            return sao_err(ctx, op, "rank %d: accept failed: %s", c->rank, strerror(errno));
        if (must_stop(ctx, c, op)) return -1;
        if (comm_now() > deadline) return sao_err(ctx, op, "%s", late);
        struct pollfd p = { .fd = lfd, .events = POLLIN };
        poll(&p, 1, POLL_MS);
    }
}

/* A non-blocking socket connected to `to` (called `name` in messages), retrying every 50 ms until
 * deadline: the other side may not be listening yet. */
static int connect_until(sao_ctx *ctx, sao_comm *c, const char *op, const struct sockaddr_storage *to,
                         const char *name, double deadline) {
    char at[80];
    int last = 0;
    for (;;) {
        int fd = socket(to->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) return sao_err(ctx, op, "rank %d: cannot open a socket: %s", c->rank, strerror(errno));
        int e = 0;
        if (connect(fd, (const struct sockaddr *)to, addr_len(to)) != 0) {
            e = errno;
            while (e == EINPROGRESS || e == EINTR) {
                struct pollfd p = { .fd = fd, .events = POLLOUT };
                int k = poll(&p, 1, POLL_MS);
                if (k > 0) {
                    socklen_t el = sizeof e;
                    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0) e = errno;
                } else if (k < 0 && errno != EINTR) {
                    e = errno;
                } else if (must_stop(ctx, c, op)) {
                    close(fd);
                    return -1;
                } else if (comm_now() > deadline) {
                    e = ETIMEDOUT;
                }
            }
        }
        if (e == 0) {
            tune(fd);
            return fd;
        }
        close(fd);
        last = e;
        int hopeless = e == EACCES || e == EPERM || e == EAFNOSUPPORT || e == EINVAL || e == EADDRNOTAVAIL;
        if (must_stop(ctx, c, op)) return -1;
        if (hopeless || comm_now() + 0.05 > deadline)
            return sao_err(ctx, op, "rank %d could not connect to %s at %s%s: %s (is it running, and is the "
                           "address reachable from here?)", c->rank, name, addr_text(at, sizeof at, to),
                           hopeless ? "" : " before the timeout", strerror(last));
        sleep_ms(50);
    }
}

/* Reads a hello from fd and checks magic, version and kind. */
static int read_hello(sao_ctx *ctx, sao_comm *c, const char *op, int fd, int from, unsigned char *h, uint32_t kind,
                      const char *waiting) {
    if (pump(ctx, c, op, -1, -1, NULL, 0, fd, from, (char *)h, HELLO_BYTES, 0, 0, waiting) != 0) return -1;
    char wb[32];
    if (get32(h) != TCP_MAGIC)
        return sao_err(ctx, op, "rank %d: %s did not say hello like a sao rank (another program at this port?)",
                       c->rank, who(wb, sizeof wb, from));
    if (get32(h + 4) != TCP_VERSION)
        return sao_err(ctx, op, "rank %d: %s speaks protocol version %u, this rank %u (run the same sao everywhere)",
                       c->rank, who(wb, sizeof wb, from), get32(h + 4), TCP_VERSION);
    if (get32(h + 8) != kind)
        return sao_err(ctx, op, "rank %d: %s sent message kind %u where %u was expected (is another group using "
                       "this port?)", c->rank, who(wb, sizeof wb, from), get32(h + 8), kind);
    return 0;
}

static int send_all(sao_ctx *ctx, sao_comm *c, const char *op, int fd, int to, const void *buf, size_t n) {
    return pump(ctx, c, op, fd, to, buf, n, -1, -1, NULL, 0, 0, 0, NULL);
}

/* ---- start-up ------------------------------------------------------------------------------------ */

/* Rank 0: the rendezvous, then the ring. */
static int start_root(sao_ctx *ctx, sao_comm *c, const char *op, int port, int v6) {
    tcp_group *g = TG(c);
    const int world = c->world;
    const double deadline = comm_now() + c->timeout_s;
    int rc = -1, lfd = listen_on(ctx, c, op, v6 ? AF_INET6 : AF_INET, port);
    if (lfd < 0) return -1;
    int *fds = malloc((size_t)world * sizeof *fds);
    struct sockaddr_storage *addrs = calloc((size_t)world, sizeof *addrs);
    unsigned char *table = malloc(HELLO_BYTES + (size_t)world * ENTRY_BYTES);
    if (!fds || !addrs || !table) {
        sao_err(ctx, op, "out of memory");
        goto out;
    }
    for (int r = 0; r < world; r++) fds[r] = -1;
    for (int joined = 1; joined < world; joined++) {
        char late[400];
        int k = snprintf(late, sizeof late, "rank 0 waited %g s for ranks to join: %d of %d arrived, missing rank",
                         c->timeout_s, joined, world);
        for (int r = 1, shown = 0; r < world && k < 300; r++)
            if (fds[r] < 0) k += snprintf(late + k, sizeof late - (size_t)k, shown++ ? ", %d" : " %d", r);
        snprintf(late + k, sizeof late - (size_t)k, " (are they started, with this host:port?)");
        int fd = accept_until(ctx, c, op, lfd, deadline, late);
        if (fd < 0) goto out;
        unsigned char h[HELLO_BYTES];
        if (read_hello(ctx, c, op, fd, -1, h, HELLO_JOIN, " to say hello (is it a sao rank?)") != 0) {
            close(fd);
            goto out;
        }
        int r = (int)get32(h + 12), w = (int)get32(h + 16), p = (int)get32(h + 20);
        const char *bad = NULL;
        char why[160];
        if (w != world) snprintf(why, sizeof why, "rank %d says world %d, rank 0 has %d", r, w, world), bad = why;
        else if (r < 1 || r >= world)
            snprintf(why, sizeof why, "a process says it is rank %d, outside 1..%d", r, world - 1), bad = why;
        else if (fds[r] >= 0) snprintf(why, sizeof why, "two ranks say they are rank %d", r), bad = why;
        else if (p < 1 || p > 65535) snprintf(why, sizeof why, "rank %d sent port %d", r, p), bad = why;
        socklen_t len = sizeof addrs[0];
        if (!bad && getpeername(fd, (struct sockaddr *)&addrs[r], &len) != 0)
            snprintf(why, sizeof why, "rank %d: getpeername failed: %s", r, strerror(errno)), bad = why;
        if (bad) {
            close(fd);
            sao_err(ctx, op, "%s", bad);
            goto out;
        }
        set_port(&addrs[r], p);
        fds[r] = fd;
    }
    put_hello(table, HELLO_TABLE, 0, world, port);
    for (int r = 1; r < world; r++) put_entry(table + HELLO_BYTES + (size_t)r * ENTRY_BYTES, &addrs[r]);
    memset(table + HELLO_BYTES, 0, ENTRY_BYTES);   /* rank 0: the others know it as host:port */
    for (int r = 1; r < world; r++)
        if (send_all(ctx, c, op, fds[r], r, table, HELLO_BYTES + (size_t)world * ENTRY_BYTES) != 0) goto out;
    for (int r = 1; r < world; r++) close_fd(&fds[r]);
    /* the ring: out to rank 1, in from rank world - 1 through the rendezvous socket */
    unsigned char h[HELLO_BYTES];
    g->next = connect_until(ctx, c, op, &addrs[1], "rank 1", deadline);
    if (g->next < 0) goto out;
    put_hello(h, HELLO_RING, 0, world, 0);
    if (send_all(ctx, c, op, g->next, 1, h, HELLO_BYTES) != 0) goto out;
    char late[200];
    snprintf(late, sizeof late, "rank 0 waited %g s for rank %d to join the ring (did its process die?)", c->timeout_s,
             world - 1);
    g->prev = accept_until(ctx, c, op, lfd, deadline, late);
    if (g->prev < 0) goto out;
    if (read_hello(ctx, c, op, g->prev, world - 1, h, HELLO_RING, RING_HELLO_LATE) != 0) goto out;
    if ((int)get32(h + 12) != world - 1 || (int)get32(h + 16) != world) {
        sao_err(ctx, op, "rank 0: the ring connection came from rank %d of world %d, not rank %d of %d",
                (int)get32(h + 12), (int)get32(h + 16), world - 1, world);
        goto out;
    }
    rc = 0;
out:
    if (fds)
        for (int r = 1; r < world; r++) close_fd(&fds[r]);
    free(fds);
    free(addrs);
    free(table);
    close(lfd);
    return rc;
}

/* Rank r > 0: a listener of its own, hello to rank 0, the table, then the ring. */
static int start_rank(sao_ctx *ctx, sao_comm *c, const char *op, const char *addr, const char *host, int port, int v6) {
    tcp_group *g = TG(c);
    const int world = c->world, rank = c->rank, next = (rank + 1) % world, prev = rank - 1;
    const double deadline = comm_now() + c->timeout_s;
    struct addrinfo hints = { .ai_family = v6 ? AF_INET6 : AF_INET, .ai_socktype = SOCK_STREAM }, *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int e = getaddrinfo(host, ps, &hints, &ai);
    if (e != 0 || !ai)
        return sao_err(ctx, op, "rank %d cannot resolve \"%s\" (of %s): %s", rank, host, addr,
                       e == EAI_SYSTEM ? strerror(errno) : gai_strerror(e));
    struct sockaddr_storage root;
    memset(&root, 0, sizeof root);
    memcpy(&root, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);

    int rc = -1, rfd = -1, lfd = listen_on(ctx, c, op, root.ss_family, 0);
    unsigned char *table = NULL;
    if (lfd < 0) return -1;
    struct sockaddr_storage mine;
    socklen_t len = sizeof mine;
    if (getsockname(lfd, (struct sockaddr *)&mine, &len) != 0) {
        sao_err(ctx, op, "rank %d: getsockname failed: %s", rank, strerror(errno));
        goto out;
    }
    int my_port = ntohs(mine.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&mine)->sin6_port
                                                   : ((struct sockaddr_in *)&mine)->sin_port);
    rfd = connect_until(ctx, c, op, &root, "rank 0", deadline);
    if (rfd < 0) goto out;
    unsigned char h[HELLO_BYTES];
    put_hello(h, HELLO_JOIN, rank, world, my_port);
    if (send_all(ctx, c, op, rfd, 0, h, HELLO_BYTES) != 0) goto out;
    size_t tbytes = HELLO_BYTES + (size_t)world * ENTRY_BYTES;
    if (!(table = malloc(tbytes))) {
        sao_err(ctx, op, "out of memory");
        goto out;
    }
    if (read_hello(ctx, c, op, rfd, 0, table, HELLO_TABLE, " to send the table of ranks (are all ranks started?)") != 0)
        goto out;
    if ((int)get32(table + 16) != world) {
        sao_err(ctx, op, "rank %d: rank 0 says world %d, this rank has %d", rank, (int)get32(table + 16), world);
        goto out;
    }
    if (pump(ctx, c, op, -1, -1, NULL, 0, rfd, 0, (char *)table + HELLO_BYTES, tbytes - HELLO_BYTES, 0, 0,
             " to send the table of ranks (did its process die?)") != 0)
        goto out;
    close_fd(&rfd);
    struct sockaddr_storage to = root;
    if (next != 0 && get_entry(table + HELLO_BYTES + (size_t)next * ENTRY_BYTES, &to) != 0) {
        sao_err(ctx, op, "rank %d: rank 0's table has a bad entry for rank %d", rank, next);
        goto out;
    }
    char name[32];
    snprintf(name, sizeof name, "rank %d", next);
    g->next = connect_until(ctx, c, op, &to, name, deadline);
    if (g->next < 0) goto out;
    put_hello(h, HELLO_RING, rank, world, 0);
    if (send_all(ctx, c, op, g->next, next, h, HELLO_BYTES) != 0) goto out;
    char late[200];
    snprintf(late, sizeof late, "rank %d waited %g s for rank %d to join the ring (did its process die?)", rank,
             c->timeout_s, prev);
    g->prev = accept_until(ctx, c, op, lfd, deadline, late);
    if (g->prev < 0) goto out;
    if (read_hello(ctx, c, op, g->prev, prev, h, HELLO_RING, RING_HELLO_LATE) != 0) goto out;
    if ((int)get32(h + 12) != prev || (int)get32(h + 16) != world) {
        sao_err(ctx, op, "rank %d: the ring connection came from rank %d of world %d, not rank %d of %d", rank,
                (int)get32(h + 12), (int)get32(h + 16), prev, world);
        goto out;
    }
    rc = 0;
out:
    free(table);
    close_fd(&rfd);
    close(lfd);
    return rc;
}

sao_comm *sao_comm_tcp(sao_ctx *ctx, const char *addr, int rank, int world, double timeout_s) {
    return sao_comm_tcp_watching(ctx, addr, rank, world, timeout_s, NULL, 0);
}

sao_comm *sao_comm_tcp_watching(sao_ctx *ctx, const char *addr, int rank, int world, double timeout_s,
                                const int64_t *pids, int n) {
    const char *op = "comm.tcp";
    char host[256];
    int port = 0, v6 = 0;
    if (parse_addr(ctx, op, addr, host, sizeof host, &port, &v6) != 0) return NULL;
    if (world < 1) return sao_err_null(ctx, op, "world %d: a group has at least 1 rank", world);
    if (rank < 0 || rank >= world) return sao_err_null(ctx, op, "rank %d outside 0..%d", rank, world - 1);
    sao_comm *c = comm_new(ctx, op, &tcp_ops, rank, world, -1, timeout_s);
    if (!c || world == 1) return c;   /* one rank: no state, no socket */
    tcp_group *g = calloc(1, sizeof *g);
    if (!g) {
        sao_comm_close(c);
        return sao_err_null(ctx, op, "out of memory");
    }
    g->next = g->prev = -1;
    c->t = g;
    c->watch = pids;
    c->nwatch = pids ? n : 0;
    int rc = rank == 0 ? start_root(ctx, c, op, port, v6) : start_rank(ctx, c, op, addr, host, port, v6);
    c->watch = NULL;   /* the caller's array: not kept */
    c->nwatch = 0;
    if (rc != 0) {
        sao_comm_close(c);
        return NULL;
    }
    return c;
}

/* ---- the collectives ----------------------------------------------------------------------------- */

/* One ring step: s to next while r arrives from prev. */
static int ring_step(sao_ctx *ctx, sao_comm *c, const char *op, const void *s, size_t sn, void *r, size_t rn) {
    tcp_group *g = TG(c);
    if (g->next < 0 || g->prev < 0) return sao_err(ctx, op, "rank %d: the group was aborted", c->rank);
    return pump(ctx, c, op, g->next, (c->rank + 1) % c->world, s, sn, g->prev, mod(c->rank - 1, c->world), r, rn, 0,
                1, NULL);
}

static const char *describe(char *buf, size_t cap, uint32_t code, int64_t n) {
    switch (code & 0xff) {
    case OP_BARRIER: snprintf(buf, cap, "barrier"); break;
    case OP_ALLREDUCE: snprintf(buf, cap, "allreduce of %lld floats", (long long)n); break;
    case OP_REDUCE_SCATTER: snprintf(buf, cap, "reduce_scatter of %lld floats", (long long)n); break;
    case OP_ALLGATHER: snprintf(buf, cap, "allgather of %lld floats", (long long)n); break;
    case OP_BROADCAST: snprintf(buf, cap, "broadcast of %lld bytes from rank %u", (long long)n, code >> 8); break;
    default: snprintf(buf, cap, "an unknown collective (%u)", code);
    }
    return buf;
}

/* Sends {op, n} to next and checks that prev's is the same. */
static int ring_header(sao_ctx *ctx, sao_comm *c, const char *op, uint32_t code, int64_t n) {
    unsigned char mine[HEADER_BYTES], theirs[HEADER_BYTES];
    put32(mine, TCP_MAGIC);
    put32(mine + 4, code);
    put32(mine + 8, (uint32_t)((uint64_t)n >> 32));
    put32(mine + 12, (uint32_t)(uint64_t)n);
    if (ring_step(ctx, c, op, mine, sizeof mine, theirs, sizeof theirs) != 0) return -1;
    if (memcmp(mine, theirs, sizeof mine) == 0) return 0;
    int prev = mod(c->rank - 1, c->world);
    if (get32(theirs) != TCP_MAGIC)
        return sao_err(ctx, op, "rank %d: rank %d is out of step (its bytes are not a collective's header)", c->rank,
                       prev);
    char a[80], b[80];
    int64_t tn = (int64_t)((uint64_t)get32(theirs + 8) << 32 | get32(theirs + 12));
    return sao_err(ctx, op, "rank %d: rank %d calls %s, this rank %s (every rank must call the same collectives, "
                   "with the same sizes, in the same order)", c->rank, prev,
                   describe(a, sizeof a, get32(theirs + 4), tn), describe(b, sizeof b, code, n));
}

/* world - 1 steps; afterwards shard `rank` holds the sum over the ranks, times 1/world. */
static int rs_steps(sao_ctx *ctx, sao_comm *c, const char *op, float *x, int64_t n) {
    tcp_group *g = TG(c);
    const int world = c->world, rank = c->rank;
    int64_t chunk = (n + world - 1) / world;
    if (chunk > g->tmp_cap) {
        float *p = realloc(g->tmp, (size_t)chunk * sizeof(float));
        if (!p) return sao_err(ctx, op, "out of memory for %lld floats", (long long)chunk);
        g->tmp = p;
        g->tmp_cap = chunk;
    }
    for (int s = 0; s < world - 1; s++) {
        int64_t slo, shi, rlo, rhi;
        sao_comm_shard(n, world, mod(rank - s - 1, world), &slo, &shi);
        sao_comm_shard(n, world, mod(rank - s - 2, world), &rlo, &rhi);
        if (ring_step(ctx, c, op, x + slo, (size_t)(shi - slo) * sizeof(float), g->tmp,
                      (size_t)(rhi - rlo) * sizeof(float)) != 0)
            return -1;
        const float *t = g->tmp;
        float *y = x + rlo;
        for (int64_t j = 0; j < rhi - rlo; j++) y[j] = t[j] + y[j];   /* sum from rank r+1 on, plus this rank's */
    }
    int64_t lo, hi;
    sao_comm_shard(n, world, rank, &lo, &hi);
    const float inv = 1.0f / (float)world;
    for (int64_t j = lo; j < hi; j++) x[j] = x[j] * inv;
    return 0;
}

static int ag_steps(sao_ctx *ctx, sao_comm *c, const char *op, float *x, int64_t n) {
    const int world = c->world, rank = c->rank;
    for (int s = 0; s < world - 1; s++) {
        int64_t slo, shi, rlo, rhi;
        sao_comm_shard(n, world, mod(rank - s, world), &slo, &shi);
        sao_comm_shard(n, world, mod(rank - s - 1, world), &rlo, &rhi);
        if (ring_step(ctx, c, op, x + slo, (size_t)(shi - slo) * sizeof(float), x + rlo,
                      (size_t)(rhi - rlo) * sizeof(float)) != 0)
            return -1;
    }
    return 0;
}

static int tcp_allreduce(sao_ctx *ctx, sao_comm *c, float *x, int64_t n) {
    const char *op = "comm.allreduce";
    if (ring_header(ctx, c, op, OP_ALLREDUCE, n) != 0) return -1;
    if (rs_steps(ctx, c, op, x, n) != 0) return -1;
    return ag_steps(ctx, c, op, x, n);
}

static int tcp_reduce_scatter(sao_ctx *ctx, sao_comm *c, float *x, int64_t n) {
    const char *op = "comm.reduce_scatter";
    if (ring_header(ctx, c, op, OP_REDUCE_SCATTER, n) != 0) return -1;
    return rs_steps(ctx, c, op, x, n);
}

static int tcp_allgather(sao_ctx *ctx, sao_comm *c, float *x, int64_t n) {
    const char *op = "comm.allgather";
    if (ring_header(ctx, c, op, OP_ALLGATHER, n) != 0) return -1;
    return ag_steps(ctx, c, op, x, n);
}

static void tcp_abort(sao_comm *c);

/* comm.c marks the group broken when a barrier fails but (unlike the other collectives) does not
 * abort it: close the sockets here, so the neighbours learn at once. */
static int tcp_barrier(sao_ctx *ctx, sao_comm *c) {
    if (c->world == 1) return 0;
    for (int s = 0; s < c->world - 1; s++) {
        if (ring_header(ctx, c, "comm.barrier", OP_BARRIER, s) != 0) {
            tcp_abort(c);
            return -1;
        }
    }
    return 0;
}

/* Root sends, the rank before root only receives, the others relay bytes as they arrive. */
static int tcp_broadcast(sao_ctx *ctx, sao_comm *c, void *buf, int64_t bytes, int root) {
    const char *op = "comm.broadcast";
    tcp_group *g = TG(c);
    if (ring_header(ctx, c, op, OP_BROADCAST | (uint32_t)root << 8, bytes) != 0) return -1;
    const int world = c->world, rel = mod(c->rank - root, world);
    const int next = (c->rank + 1) % world, prev = mod(c->rank - 1, world);
    const size_t sn = rel == world - 1 ? 0 : (size_t)bytes, rn = rel == 0 ? 0 : (size_t)bytes;
    return pump(ctx, c, op, g->next, next, buf, sn, g->prev, prev, buf, rn, rel != 0, 1, NULL);
}

static void tcp_abort(sao_comm *c) {
    tcp_group *g = TG(c);
    if (!g) return;
    close_fd(&g->next);
    close_fd(&g->prev);
}

static void tcp_close(sao_comm *c) {
    tcp_group *g = TG(c);
    if (!g) return;
    tcp_abort(c);
    free(g->tmp);
    free(g);
    c->t = NULL;
}

static const comm_ops tcp_ops = {
    .name = "tcp", .barrier = tcp_barrier, .allreduce_mean = tcp_allreduce,
    .reduce_scatter_mean = tcp_reduce_scatter, .allgather = tcp_allgather, .broadcast = tcp_broadcast,
    .abort = tcp_abort, .close = tcp_close,
};

// emu.cpp — the runtime of the CPU emulation of the CUDA backend (spec/support/cuda_emu/README.md):
// device memory, launches as fibers, streams and graph capture, cuBLAS(Lt) as a plain GEMM.
#include "cuda_runtime.h"
#include "cublas_v2.h"
#include <sys/mman.h>
#include <ucontext.h>
#include <vector>

// ---- device memory: a separate arena, inaccessible outside emulated device work ----
static char *arena;
static size_t used;
static const size_t ARENA = (size_t)8 << 30;
static const int SMEM_DEFAULT = 48 * 1024, SMEM_OPTIN = 232448;   // dynamic shared memory: an H100 / H200's limits
static int access_depth;
long long emu_bytes_h2d, emu_bytes_d2h, emu_launches, emu_gemms;

static void arena_init() {
    if (arena) return;
    arena = (char *)mmap(NULL, ARENA, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (arena == MAP_FAILED) { perror("emu mmap"); abort(); }
}
static void set_access(bool on) {
    size_t n = (used + 4095) & ~(size_t)4095;
    if (n && mprotect(arena, n, on ? PROT_READ | PROT_WRITE : PROT_NONE)) { perror("emu mprotect"); abort(); }
}
emu_dev_access::emu_dev_access() { arena_init(); if (access_depth++ == 0) set_access(true); }
emu_dev_access::~emu_dev_access() { if (--access_depth == 0) set_access(false); }
bool emu_is_device(const void *p) { return arena && (const char *)p >= arena && (const char *)p < arena + used; }
static bool dev_range(const void *p, size_t n) { return n == 0 || (emu_is_device(p) && emu_is_device((const char *)p + n - 1)); }
static bool host_range(const void *p, size_t n) { return n == 0 || (!emu_is_device(p) && !emu_is_device((const char *)p + n - 1)); }
[[noreturn]] static void die(const char *what, const void *a, const void *b, size_t n) {
    fprintf(stderr, "emu: %s (dst %p, src %p, %zu bytes; arena %p..%p)\n", what, a, b, n, (void *)arena, (void *)(arena + used));
    abort();
}


#include <map>
#include <set>
#include <vector>
static int no_device() { const char *s = getenv("EMU_NO_DEVICE"); return s && *s && *s != '0'; }
static cudaError_t last_error;
cudaError_t cudaGetLastError() { cudaError_t e = last_error; last_error = 0; return e; }
const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
    default: return "emu error";
    }
}

// ---- streams and capture ----
struct emu_stream { std::vector<std::function<void()>> rec; bool invalid; };
struct emu_graph { std::vector<std::function<void()>> ops; };
static emu_stream *capturing;   // the stream capturing now (one at a time here)
long long emu_captured_ops, emu_replays;
static cudaError_t unsafe() {   // an API CUDA refuses while this thread captures (thread-local mode)
    if (!capturing) return 0;
    capturing->invalid = true;
    return last_error = cudaErrorStreamCaptureUnsupported;
}
// runs op now, or records it when st captures; other streams while capturing invalidate the capture
static cudaError_t enqueue(cudaStream_t st, std::function<void()> op) {
    if (capturing) {
        if ((emu_stream *)st != capturing) { capturing->invalid = true; return last_error = cudaErrorStreamCaptureImplicit; }
        if (capturing->invalid) return last_error = cudaErrorStreamCaptureInvalidated;
        capturing->rec.push_back(std::move(op));
        emu_captured_ops++;
        return 0;
    }
    op();
    return 0;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) { if (capturing) return unsafe(); *s = (cudaStream_t) new emu_stream{{}, false}; return 0; }
cudaError_t cudaStreamDestroy(cudaStream_t s) { delete (emu_stream *)s; return 0; }
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode) {
    if (!s) return cudaErrorStreamCaptureUnsupported;   // the legacy stream cannot capture
    if (capturing) return cudaErrorStreamCaptureUnsupported;
    capturing = (emu_stream *)s;
    capturing->rec.clear();
    capturing->invalid = false;
    return 0;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g) {
    *g = NULL;
    if ((emu_stream *)s != capturing) return cudaErrorInvalidValue;
    emu_stream *c = capturing;
    capturing = NULL;
    if (c->invalid) { c->rec.clear(); return cudaErrorStreamCaptureInvalidated; }
    *g = new emu_graph{std::move(c->rec)};
    c->rec.clear();
    return 0;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long) { *e = new emu_graph{g->ops}; return 0; }
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s) {
    emu_replays++;
    return enqueue(s, [e]() { for (auto &op : e->ops) op(); });
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) { delete g; return 0; }
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) { delete e; return 0; }
struct emu_event { int dummy; };
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) { *e = new emu_event{0}; return 0; }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t s) { return enqueue(s, []() {}); }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return unsafe(); }
cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return 0; }
cudaError_t cudaDeviceSynchronize() { return unsafe(); }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return unsafe(); }
static std::map<const void *, int> smem_limit;   // kernel -> its raised dynamic shared memory limit
cudaError_t emu_func_attr(const void *kernel, cudaFuncAttribute a, int value) {
    if (a != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > SMEM_OPTIN) return last_error = cudaErrorInvalidValue;
    smem_limit[kernel] = value;
    return 0;
}

cudaError_t cudaMalloc(void **p, size_t n) {
    if (capturing) return unsafe();
    arena_init();
    size_t sz = (n + 255) & ~(size_t)255;
    if (!sz) sz = 256;
    if (used + sz > ARENA) return cudaErrorMemoryAllocation;
    { emu_dev_access a; }
    *p = arena + used;
    used += sz;
    emu_dev_access a;
    memset(*p, 0xff, sz);   // NaN: reads of never-written device memory show
    return 0;
}
cudaError_t cudaFree(void *p) { if (capturing) return unsafe(); if (p && !emu_is_device(p)) die("cudaFree of a non-device pointer", p, 0, 0); return 0; }
static std::set<void *> pinned;
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned) { if (capturing) return unsafe(); *p = malloc(n ? n : 1); pinned.insert(*p); return *p ? 0 : cudaErrorMemoryAllocation; }
cudaError_t cudaFreeHost(void *p) { pinned.erase(p); free(p); return 0; }
cudaError_t cudaMemGetInfo(size_t *f, size_t *t) { *f = ARENA - used; *t = ARENA; return 0; }
static void check_kind(void *d, const void *s, size_t n, cudaMemcpyKind k) {
    switch (k) {
    case cudaMemcpyHostToDevice: if (!dev_range(d, n) || !host_range(s, n)) die("bad HostToDevice copy", d, s, n); emu_bytes_h2d += n; break;
    case cudaMemcpyDeviceToHost: if (!host_range(d, n) || !dev_range(s, n)) die("bad DeviceToHost copy", d, s, n); emu_bytes_d2h += n; break;
    case cudaMemcpyDeviceToDevice: if (!dev_range(d, n) || !dev_range(s, n)) die("bad DeviceToDevice copy", d, s, n); break;
    case cudaMemcpyHostToHost: if (!host_range(d, n) || !host_range(s, n)) die("bad HostToHost copy", d, s, n); break;
    default: break;
    }
}
static void do_copy(void *d, const void *s, size_t n, cudaMemcpyKind k) { check_kind(d, s, n, k); emu_dev_access a; memmove(d, s, n); }
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind k) { if (capturing) return unsafe(); do_copy(d, s, n, k); return 0; }
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st) {
    return enqueue(st, [=]() { do_copy(d, s, n, k); });
}
cudaError_t cudaMemcpy2DAsync(void *d, size_t dp, const void *s, size_t sp, size_t w, size_t h, cudaMemcpyKind k, cudaStream_t st) {
    if (w > dp || w > sp) return cudaErrorInvalidValue;
    return enqueue(st, [=]() { for (size_t r = 0; r < h; r++) do_copy((char *)d + r * dp, (const char *)s + r * sp, w, k); });
}
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t st) {
    if (!dev_range(d, n)) die("cudaMemset of non-device memory", d, 0, n);
    return enqueue(st, [=]() { emu_dev_access a; memset(d, v, n); });
}
static int current;
cudaError_t cudaSetDevice(int d) { if (no_device() || d != 0) return cudaErrorInvalidDevice; current = d; return 0; }
cudaError_t cudaGetDevice(int *d) { *d = current; return 0; }
cudaError_t cudaGetDeviceCount(int *n) { *n = no_device() ? 0 : 1; return no_device() ? 100 : 0; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) {
    if (no_device() || d != 0) return cudaErrorInvalidDevice;
    snprintf(p->name, sizeof p->name, "sao CUDA emulator (CPU)");
    p->totalGlobalMem = ARENA; p->major = 9; p->minor = 0;
    return 0;
}
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr, int) { *v = SMEM_OPTIN; return 0; }
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p) {
    if (capturing) return unsafe();
    a->type = emu_is_device(p) ? cudaMemoryTypeDevice : pinned.count((void *)p) ? cudaMemoryTypeHost : cudaMemoryTypeUnregistered;
    a->device = 0;
    return 0;
}
// ---- launches: every CUDA thread a fiber, blocks one after another ----
emu_uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
enum { RUN, WAIT_BLOCK, WAIT_WARP, DONE };
struct Fib { ucontext_t uc; int state; unsigned x, y, z; int lin; };
static std::vector<Fib> fibs;
static std::vector<char *> stacks;
static ucontext_t sched_uc;
static int cur, nthr;
static const std::function<void()> *cur_fn;
static double slot[32][32];
static std::vector<double> dyn;
static const size_t STACK = 256 * 1024;

static void tramp() { (*cur_fn)(); fibs[cur].state = DONE; }
static void wait_as(int s) { fibs[cur].state = s; swapcontext(&fibs[cur].uc, &sched_uc); }
void __syncthreads() { wait_as(WAIT_BLOCK); }
void __syncwarp(unsigned) { wait_as(WAIT_WARP); }
double emu_shfl(double v, int mode, int arg) {
    int lin = fibs[cur].lin, lane = lin & 31, w = lin >> 5;
    slot[w][lane] = v;
    wait_as(WAIT_WARP);
    int src = mode == 0 ? (arg & 31) : mode == 1 ? (lane ^ arg) : lane + arg;
    double r = (src >= 0 && src < 32 && w * 32 + src < nthr) ? slot[w][src] : v;
    wait_as(WAIT_WARP);
    return r;
}
void *emu_dyn_smem() { return dyn.data(); }
// static __shared__ arrays: one region per declaration site and block, NaN-filled at the block's
// first request (a GPU's shared memory holds garbage, never the previous block's values)
struct static_smem { const char *site; size_t bytes; std::vector<double> mem; };
static std::vector<static_smem> statics;
void *emu_static_smem(const char *site, size_t bytes) {
    for (auto &s : statics)
        if (!strcmp(s.site, site)) {
            if (s.bytes != bytes) { fprintf(stderr, "emu: __shared__ %s: %zu bytes, then %zu\n", site, s.bytes, bytes); abort(); }
            return s.mem.data();
        }
    statics.push_back({site, bytes, std::vector<double>(bytes / 8 + 1)});
    memset(statics.back().mem.data(), 0xff, statics.back().mem.size() * 8);
    return statics.back().mem.data();
}

// The order fibers run in (EMU_SCHED, read at each launch): "forward" (the default: blocks, and the
// threads of a block between barriers, in index order), "reverse" (both backwards) or
// "shuffle[:SEED]" (the blocks in a random order per launch, the threads in a fresh random order in
// every round between barriers; SEED 1 by default, the stream goes on from launch to launch). A
// kernel whose result depends on the order (two threads touching the same word between barriers,
// lanes of a warp without a __syncwarp, blocks writing what other blocks read) gives other bits
// under another order: spec/cuda_sched_spec.lua runs the kernels under each and compares.
enum { SCHED_FORWARD, SCHED_REVERSE, SCHED_SHUFFLE };
static int sched_mode;
static uint64_t sched_state, sched_seed;
static void sched_read() {
    const char *s = getenv("EMU_SCHED");
    if (!s || !*s || !strcmp(s, "forward")) { sched_mode = SCHED_FORWARD; return; }
    if (!strcmp(s, "reverse")) { sched_mode = SCHED_REVERSE; return; }
    if (!strncmp(s, "shuffle", 7) && (s[7] == 0 || s[7] == ':')) {
        uint64_t seed = s[7] ? strtoull(s + 8, NULL, 10) : 1;
        if (sched_mode != SCHED_SHUFFLE || seed != sched_seed) sched_state = seed * 0x9E3779B97F4A7C15ull + 1;
        sched_mode = SCHED_SHUFFLE; sched_seed = seed;
        return;
    }
    fprintf(stderr, "emu: EMU_SCHED=%s: not forward, reverse or shuffle[:SEED]\n", s);
    abort();
}
static uint64_t sched_next() {   // splitmix64
    uint64_t z = (sched_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// order[0..n) = the indices in the mode's order (a fresh permutation each call when shuffling)
static void sched_order(std::vector<uint32_t> &order, size_t n) {
    order.resize(n);
    for (size_t i = 0; i < n; i++) order[i] = (uint32_t)(sched_mode == SCHED_REVERSE ? n - 1 - i : i);
    if (sched_mode == SCHED_SHUFFLE)
        for (size_t i = n; i > 1; i--) std::swap(order[i - 1], order[sched_next() % i]);
}

// one launch, its configuration checked by emu_submit
static void emu_run(dim3 g, dim3 b, size_t smem, const std::function<void()> &f) {
    emu_launches++;
    sched_read();
    emu_dev_access acc;
    gridDim = g; blockDim = b; cur_fn = &f;
    nthr = (int)(b.x * b.y * b.z);
    fibs.resize(nthr);
    while ((int)stacks.size() < nthr) stacks.push_back((char *)malloc(STACK));
    static std::vector<uint32_t> blocks, thr;
    size_t nblk = (size_t)g.x * g.y * g.z;
    sched_order(blocks, nblk);
    for (size_t bi = 0; bi < nblk; bi++) {
        size_t lb = blocks[bi];
        unsigned bx = (unsigned)(lb % g.x), by = (unsigned)(lb / g.x % g.y), bz = (unsigned)(lb / g.x / g.y);
        blockIdx = {bx, by, bz};
        statics.clear();
        dyn.assign(smem / 8 + 1, 0.0);
        memset(dyn.data(), 0xff, dyn.size() * 8);   // NaN: reads of unwritten shared memory show
        for (int i = 0; i < nthr; i++) {
            Fib &F = fibs[i];
            F.lin = i; F.x = i % b.x; F.y = (i / b.x) % b.y; F.z = i / (b.x * b.y); F.state = RUN;
            getcontext(&F.uc);
            F.uc.uc_stack.ss_sp = stacks[i]; F.uc.uc_stack.ss_size = STACK; F.uc.uc_link = &sched_uc;
            makecontext(&F.uc, tramp, 0);
        }
        for (;;) {
            sched_order(thr, (size_t)nthr);
            for (int k = 0; k < nthr; k++) {
                int i = (int)thr[k];
                if (fibs[i].state != RUN) continue;
                cur = i;
                threadIdx = {fibs[i].x, fibs[i].y, fibs[i].z};
                swapcontext(&sched_uc, &fibs[i].uc);
            }
            int live = 0, wb = 0;
            for (int i = 0; i < nthr; i++) { if (fibs[i].state != DONE) live++; if (fibs[i].state == WAIT_BLOCK) wb++; }
            if (live == 0) break;
            bool released = false;
            if (wb == live) { for (auto &F : fibs) if (F.state == WAIT_BLOCK) F.state = RUN; released = true; }
            else for (int w = 0; w * 32 < nthr; w++) {
                int l = 0, ww = 0;
                for (int i = w * 32; i < nthr && i < w * 32 + 32; i++) { if (fibs[i].state != DONE) l++; if (fibs[i].state == WAIT_WARP) ww++; }
                if (l > 0 && ww == l) {
                    if (l != 32 && l != nthr - w * 32) { fprintf(stderr, "emu: warp op with exited lanes\n"); abort(); }
                    for (int i = w * 32; i < nthr && i < w * 32 + 32; i++) if (fibs[i].state == WAIT_WARP) fibs[i].state = RUN;
                    released = true;
                }
            }
            if (!released) { fprintf(stderr, "emu: deadlock (barrier divergence) in block (%u,%u,%u)\n", bx, by, bz); abort(); }
        }
    }
}


void emu_submit(const emu_cfg &c, const void *kernel, std::function<void()> body) {
    const dim3 &g = c.g, &b = c.b;
    if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 2147483647u || g.y > 65535 || g.z > 65535 || b.x == 0 || b.y == 0 ||
        b.z == 0 || b.x > 1024 || b.y > 1024 || b.z > 64 || (unsigned long long)b.x * b.y * b.z > 1024) {
        // as a GPU refuses it: the launch does not run, the error is the launch's
        fprintf(stderr, "emu: invalid launch configuration: grid (%u,%u,%u) block (%u,%u,%u)\n", g.x, g.y, g.z, b.x, b.y, b.z);
        last_error = cudaErrorInvalidConfiguration;
        return;
    }
    auto lim = smem_limit.find(kernel);
    int most = lim == smem_limit.end() ? SMEM_DEFAULT : lim->second;
    if (c.smem > (size_t)most) {   // as a GPU refuses it: the launch does not run, the error is the launch's
        fprintf(stderr, "emu: a launch asks for %zu bytes of dynamic shared memory, the kernel's limit is %d "
                "(cudaFuncSetAttribute(..., cudaFuncAttributeMaxDynamicSharedMemorySize, ...) raises it)\n", c.smem, most);
        last_error = cudaErrorInvalidValue;
        return;
    }
    emu_cfg cc = c;
    cudaError_t e = enqueue(c.st, [cc, body]() { emu_run(cc.g, cc.b, cc.smem, body); });
    if (e) last_error = e;
}
// ---- cuBLASLt / cuBLAS: column-major GEMM on the CPU ----
static float rd(const void *p, int type, int64_t i) {
    if (type == CUDA_R_32F) return ((const float *)p)[i];
    uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
// D[i + j ldd] = alpha sum_l op(A)[i,l] op(B)[l,j] + beta C[i + j ldc] (+ bias[i])
static void gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const void *A, int at, int64_t lda,
                 const void *B, int bt, int64_t ldb, float beta, const float *C, int64_t ldc, float *D, int64_t ldd,
                 const float *bias) {
    size_t es_a = at == CUDA_R_32F ? 4 : 2, es_b = bt == CUDA_R_32F ? 4 : 2;
    if (!dev_range(A, es_a * (size_t)(lda * ((ta ? m : k) - 1) + (ta ? k : m)))) die("gemm: A not device memory (or too short)", A, 0, 0);
    if (!dev_range(B, es_b * (size_t)(ldb * ((tb ? k : n) - 1) + (tb ? n : k)))) die("gemm: B not device memory (or too short)", B, 0, 0);
    if (!dev_range(D, 4 * (size_t)(ldd * (n - 1) + m))) die("gemm: D not device memory (or too short)", D, 0, 0);
    if (beta != 0 && !dev_range(C, 4 * (size_t)(ldc * (n - 1) + m))) die("gemm: C not device memory", C, 0, 0);
    if (bias && !dev_range(bias, 4 * (size_t)m)) die("gemm: bias not device memory", bias, 0, 0);
    emu_gemms++;
    emu_dev_access acc;
    std::vector<float> out((size_t)(m * n));
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < m; i++) {
            float s = 0.0f;
            for (int64_t l = 0; l < k; l++) {
                float a = rd(A, at, ta ? l + i * lda : i + l * lda), b = rd(B, bt, tb ? j + l * ldb : l + j * ldb);
                s += a * b;
            }
            float r = alpha * s;
            if (beta != 0.0f) r += beta * C[i + j * ldc];
            if (bias) r += bias[i];
            out[(size_t)(i + j * m)] = r;
        }
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < m; i++) D[i + j * ldd] = out[(size_t)(i + j * m)];
}


const char *cublasGetStatusString(cublasStatus_t s) { return s ? "emu cublas error" : "success"; }
cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) { *h = (cublasLtHandle_t)1; return 0; }
cublasStatus_t cublasLtDestroy(cublasLtHandle_t) { return 0; }
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t c, cudaDataType_t s) {
    if ((c != CUBLAS_COMPUTE_32F && c != CUBLAS_COMPUTE_32F_FAST_TF32) || s != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    *d = new emu_lt_desc{0, 0, CUBLASLT_EPILOGUE_DEFAULT, NULL, CUDA_R_32F};
    return 0;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a, const void *v, size_t n) {
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: if (n != sizeof(cublasOperation_t)) return 7; d->ta = *(const cublasOperation_t *)v == CUBLAS_OP_T; break;
    case CUBLASLT_MATMUL_DESC_TRANSB: if (n != sizeof(cublasOperation_t)) return 7; d->tb = *(const cublasOperation_t *)v == CUBLAS_OP_T; break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: if (n != sizeof(cublasLtEpilogue_t)) return 7; d->epi = *(const cublasLtEpilogue_t *)v; break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: if (n != sizeof(void *)) return 7; d->bias = *(const float *const *)v; break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: if (n != sizeof(int32_t)) return 7; d->bias_type = *(const int32_t *)v; break;
    }
    return 0;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) { delete d; return 0; }
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t, uint64_t r, uint64_t c, int64_t ld) {
    if (ld < (int64_t)r) return CUBLAS_STATUS_INVALID_VALUE;
    *l = new emu_lt_layout{t, r, c, ld};
    return 0;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) { delete l; return 0; }
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) { *p = new emu_lt_pref{0}; return 0; }
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, cublasLtMatmulPreferenceAttributes_t, const void *, size_t) { return 0; }
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) { delete p; return 0; }
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int,
                                              cublasLtMatmulHeuristicResult_t *r, int *count) {
    const char *s = getenv("EMU_LT_NONE");
    *count = (s && *s == '1') ? 0 : 1;
    memset(r, 0, sizeof *r);
    return 0;
}
static cublasStatus_t blas_status(cudaError_t e) { return e ? CUBLAS_STATUS_NOT_SUPPORTED : 0; }
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void *alpha, const void *A, cublasLtMatrixLayout_t a,
                              const void *B, cublasLtMatrixLayout_t b, const void *beta, const void *C, cublasLtMatrixLayout_t c,
                              void *D, cublasLtMatrixLayout_t dl, const cublasLtMatmulAlgo_t *, void *ws, size_t wsn, cudaStream_t st) {
    int64_t m = (int64_t)c->rows, n = (int64_t)c->cols, k = d->ta ? (int64_t)a->rows : (int64_t)a->cols;
    if ((int64_t)(d->ta ? a->cols : a->rows) != m || (int64_t)(d->tb ? b->cols : b->rows) != k ||
        (int64_t)(d->tb ? b->rows : b->cols) != n || dl->rows != c->rows || dl->cols != c->cols || a->type != b->type) {
        fprintf(stderr, "emu: cublasLtMatmul: inconsistent layouts\n");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (wsn && !dev_range(ws, wsn)) die("cublasLtMatmul: workspace not device memory", ws, 0, wsn);
    if (d->epi == CUBLASLT_EPILOGUE_BIAS && (!d->bias || d->bias_type != CUDA_R_32F)) return CUBLAS_STATUS_INVALID_VALUE;
    float al = *(const float *)alpha, be = *(const float *)beta;
    int ta = d->ta, tb = d->tb, at = a->type, bt = b->type;
    int64_t lda = a->ld, ldb = b->ld, ldc = c->ld, ldd = dl->ld;
    const float *bias = d->epi == CUBLASLT_EPILOGUE_BIAS ? d->bias : NULL;
    return blas_status(enqueue(st, [=]() { gemm(ta, tb, m, n, k, al, A, at, lda, B, bt, ldb, be, (const float *)C, ldc, (float *)D, ldd, bias); }));
}
struct emu_blas_handle { cudaStream_t st; void *ws; };
cublasStatus_t cublasCreate(cublasHandle_t *h) { if (capturing) { unsafe(); return CUBLAS_STATUS_NOT_SUPPORTED; } *h = new emu_blas_handle{0, NULL}; return 0; }
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) { h->st = s; return 0; }
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t n) { if (n && !dev_range(ws, n)) die("cublasSetWorkspace: not device memory", ws, 0, n); h->ws = ws; return 0; }
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *alpha,
                           const float *A, int lda, const float *B, int ldb, const float *beta, float *C, int ldc) {
    float al = *alpha, be = *beta;
    return blas_status(enqueue(h->st, [=]() { gemm(ta == CUBLAS_OP_T, tb == CUBLAS_OP_T, m, n, k, al, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, be, C, ldc, C, ldc, NULL); }));
}
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType_t at, int lda, const void *B, cudaDataType_t bt, int ldb, const void *beta,
                            void *C, cudaDataType_t, int ldc, cublasComputeType_t, cublasGemmAlgo_t) {
    float al = *(const float *)alpha, be = *(const float *)beta;
    return blas_status(enqueue(h->st, [=]() { gemm(ta == CUBLAS_OP_T, tb == CUBLAS_OP_T, m, n, k, al, A, at, lda, B, bt, ldb, be, (const float *)C, ldc, (float *)C, ldc, NULL); }));
}
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType_t at, int lda, long long sA, const void *B,
                            cudaDataType_t bt, int ldb, long long sB, const void *beta, void *C, cudaDataType_t, int ldc,
                            long long sC, int batch, cublasComputeType_t, cublasGemmAlgo_t) {
    float al = *(const float *)alpha, be = *(const float *)beta;
    size_t ea = at == CUDA_R_32F ? 4 : 2, eb = bt == CUDA_R_32F ? 4 : 2;
    return blas_status(enqueue(h->st, [=]() {
        for (int i = 0; i < batch; i++)
            gemm(ta == CUBLAS_OP_T, tb == CUBLAS_OP_T, m, n, k, al, (const char *)A + i * sA * ea, at, lda,
                 (const char *)B + i * sB * eb, bt, ldb, be, (const float *)C + i * sC, ldc, (float *)C + i * sC, ldc, NULL);
    }));
}

extern "C" void emu_stats(long long *v) { v[0] = emu_launches; v[1] = emu_gemms; v[2] = emu_bytes_h2d; v[3] = emu_bytes_d2h; v[4] = emu_captured_ops; v[5] = emu_replays; }

// ---- lent to the other fakes (emu_internal.h) ----
#include "emu_internal.h"
cudaError_t emu_enqueue(cudaStream_t st, std::function<void()> op) { return enqueue(st, std::move(op)); }
bool emu_dev_range(const void *p, size_t n) { return dev_range(p, n); }
cudaError_t emu_unsafe() { return unsafe(); }

// alloc.cu — the caching device allocator: device tensor storage and the cuBLASLt workspaces come
// from here (sao_cuda_malloc / sao_cuda_free), so that in steady state no cudaMalloc/cudaFree
// (each a device-wide synchronisation) happens at all.
//
// Size classes: a request is rounded up to a multiple of 512 B up to 1 MiB, and above that to a
// quarter power of two (1.25, 1.5, 1.75, 2, 2.5, ... MiB: at most 25% slack). A freed block goes
// into the bin of its (device, size class) and the next request of that class takes it back
// without calling the driver. Blocks are never split or merged: simple, and predictable for
// training, whose buffers are planned up front and come in few sizes.
//
// Stream order: every sao kernel and copy runs on one stream (sao_cuda_stream(), the legacy
// default stream), so a block freed on the host while a kernel still reads it is only reused by
// work queued after that kernel. A per-context stream will need an event per freed block.
//
// The cache is process-wide (like the driver's own state): a free has no context, and a tensor
// may outlive the context that made it. One pthread mutex guards it. When cudaMalloc reports
// out-of-memory, the cached blocks of every device are given back and the call is retried once.
#include "cuda_internal.h"
extern "C" {
#include "sao_cuda.h"
}
#include <pthread.h>
#include <map>
#include <new>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

struct Block {
    size_t size;   // size class in bytes (what the driver gave us)
    int device;
};

// Everything the allocator knows. Created on first use and never destroyed: the driver reclaims
// device memory at exit, and no destructor may run after the CUDA runtime has shut down.
struct Cache {
    std::unordered_map<void *, Block> live;                   // handed out, by address
    std::map<std::pair<int, size_t>, std::vector<void *>> bins;  // (device, size class) -> free blocks
    int64_t allocated = 0;      // bytes of live blocks (size classes)
    int64_t cached = 0;         // bytes of free blocks held in the bins
    int64_t peak = 0;           // max of `allocated` since the process started
    int64_t n_cudamalloc = 0;   // driver allocations made
    int64_t n_freed = 0;        // blocks handed back or released (sao_cuda_free_count)
};

pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
Cache *cache;   // guarded by cache_lock

struct Locked {
    Locked() { pthread_mutex_lock(&cache_lock); }
    ~Locked() { pthread_mutex_unlock(&cache_lock); }
};

const size_t LARGEST = (size_t)1 << 50;       // a request beyond 1 PiB is a bug upstream

// The size classes are sao_cuda_size_class's (runtime/cuda_load.c, shared with libsao.so).
size_t size_class(size_t n) { return sao_cuda_size_class(n); }

// Gives the free blocks of `device` (-1: every device) back to the driver; returns the bytes.
// The current device is restored. Caller holds cache_lock.
int64_t release_cached(int device) {
    if (!cache) return 0;
    int cur = 0;
    if (cudaGetDevice(&cur) != cudaSuccess) cur = 0;
    int64_t freed = 0;
    for (auto it = cache->bins.begin(); it != cache->bins.end();) {
        if (device >= 0 && it->first.first != device) { ++it; continue; }
        cudaSetDevice(it->first.first);
        for (void *p : it->second) {
            cudaFree(p);
            freed += (int64_t)it->first.second;
            cache->n_freed++;
        }
        it = cache->bins.erase(it);
    }
    cudaSetDevice(cur);
    cudaGetLastError();   // a failed cudaFree leaves nothing to act on; keep it out of the next check
    cache->cached -= freed;
    return freed;
}

}  // namespace

extern "C" int sao_cuda_malloc(sao_ctx *ctx, size_t bytes, void **out) {
    const char *op = "cuda_malloc";
    if (!out) return sao_err(ctx, op, "out is NULL (pass the address of a pointer to receive the block)");
    *out = NULL;
    if (bytes > LARGEST) return sao_err(ctx, op, "%zu bytes requested: not a plausible size (a negative size cast to size_t?)", bytes);
    int dev = 0;
    CUDA_TRY(ctx, op, cudaGetDevice(&dev));
    size_t sz = size_class(bytes);

    Locked guard;
    try {
        if (!cache) cache = new Cache();
        auto bin = cache->bins.find({dev, sz});
        void *p = NULL;
        if (bin != cache->bins.end() && !bin->second.empty()) {
            p = bin->second.back();          // reuse: no driver call
            bin->second.pop_back();
            cache->cached -= (int64_t)sz;
        } else {
            cudaError_t e = cudaMalloc(&p, sz);
            if (e == cudaErrorMemoryAllocation) {
                cudaGetLastError();          // clear it, hand the cache back, try once more
                release_cached(-1);
                e = cudaMalloc(&p, sz);
            }
            if (e == cudaErrorMemoryAllocation) {
                cudaGetLastError();
                return sao_err(ctx, op,
                               "%s:%d: cudaMalloc of %zu bytes (%zu requested) on device %d: %s, even after "
                               "emptying the cache (sao holds %.1f MiB in live blocks: free tensors with "
                               ":free(), lower the batch or length, or look in nvidia-smi for other processes)",
                               __FILE__, __LINE__, sz, bytes, dev, cudaGetErrorString(e),
                               (double)cache->allocated / 1048576.0);
            }
            if (e != cudaSuccess) {
                cudaGetLastError();
                return sao_err(ctx, op, "%s:%d: cudaMalloc of %zu bytes on device %d: %s (is a GPU visible? check nvidia-smi)",
                               __FILE__, __LINE__, sz, dev, cudaGetErrorString(e));
            }
            cache->n_cudamalloc++;
        }
        try {
            cache->live.emplace(p, Block{sz, dev});
        } catch (...) {
            cache->bins[{dev, sz}].push_back(p);   // keep it cached rather than lose it
            cache->cached += (int64_t)sz;
            throw;
        }
        cache->allocated += (int64_t)sz;
        if (cache->allocated > cache->peak) cache->peak = cache->allocated;
        *out = p;
        return 0;
    } catch (const std::bad_alloc &) {
        return sao_err(ctx, op, "host out of memory while recording a device block");
    }
}

extern "C" int sao_cuda_free(void *ptr) {
    if (!ptr) return 0;
    Locked guard;
    if (!cache) return -1;
    auto it = cache->live.find(ptr);
    if (it == cache->live.end()) return -1;   // not ours (or freed twice): leave it alone
    Block b = it->second;
    cache->live.erase(it);
    cache->n_freed++;
    try {
        cache->bins[{b.device, b.size}].push_back(ptr);
        cache->cached += (int64_t)b.size;
    } catch (...) {
        cudaFree(ptr);                       // no room to remember it: give it to the driver
        cudaGetLastError();
    }
    cache->allocated -= (int64_t)b.size;
    return 0;
}

int64_t sao_cuda_free_count(void) {
    Locked guard;
    return cache ? cache->n_freed : 0;
}

extern "C" int64_t sao_cuda_empty_cache(void) {
    Locked guard;
    return release_cached(-1);
}

extern "C" void sao_cuda_reset_peak(void) {
    Locked guard;
    if (cache) cache->peak = cache->allocated;
}

extern "C" void sao_cuda_memory_stats(int64_t *allocated, int64_t *cached, int64_t *peak, int64_t *n_cudamalloc) {
    Locked guard;
    if (allocated) *allocated = cache ? cache->allocated : 0;
    if (cached) *cached = cache ? cache->cached : 0;
    if (peak) *peak = cache ? cache->peak : 0;
    if (n_cudamalloc) *n_cudamalloc = cache ? cache->n_cudamalloc : 0;
}


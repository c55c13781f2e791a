// selftest.cu (spec/support/cuda_emu) — checks that the emulator's thread orders (EMU_SCHED) expose
// order-dependent kernels: build.sh rewrites this file like the backend's, links it with emu.cpp
// and runs it after every build. Each racy kernel below must give other bits under another order
// than the forward one, and each correct twin (the same work with the barrier it needs) the same
// bits under every order; otherwise the emulator's orders would hide races and
// spec/cuda_sched_spec.lua would prove nothing. Exit status 0 when every check holds.
#include "cuda_runtime.h"
#include <string>
#include <vector>

// neighbour exchange through shared memory: thread t writes its slot, reads t+1's
__global__ void block_exchange(float *out, int sync) {
    extern __shared__ float sm[];
    int t = threadIdx.x, n = blockDim.x;
    sm[t] = (float)(t + 1 + 100 * blockIdx.x);
    if (sync) __syncthreads();
    out[blockIdx.x * n + t] = sm[(t + 1) % n];
}

// the same within one warp: lane l writes, reads lane l^1's word, with or without __syncwarp
__global__ void warp_exchange(float *out, int sync) {
    extern __shared__ float sm[];
    int t = threadIdx.x;
    sm[t] = (float)(t * 3 + 1);
    if (sync) __syncwarp();
    out[t] = sm[t ^ 1];
}

// an in-place update read by another lane: every lane reads its neighbour's value, then overwrites
// its own; without a barrier between, a lane may read an already overwritten word
__global__ void in_place(float *out, int sync) {
    extern __shared__ float sm[];
    int t = threadIdx.x;
    sm[t] = (float)t;
    __syncwarp();
    float v = sm[(t + 31) % 32];
    if (sync) __syncwarp();
    sm[t] = v * 2.0f + 1.0f;
    __syncwarp();
    out[t] = sm[t];
}

// blocks writing one word (the last writer wins) against each block writing its own
__global__ void block_writes(float *out, int distinct) {
    if (threadIdx.x == 0) out[distinct ? blockIdx.x : 0] = (float)(blockIdx.x + 1);
}

// a static shared-memory word written by block 0 only and read by every block: on a GPU the other
// blocks read garbage, so here they must read NaN, never block 0's value
__global__ void static_smem(float *out) {
    __shared__ float word[1];
    if (blockIdx.x == 0 && threadIdx.x == 0) word[0] = 7.0f;
    __syncthreads();
    if (threadIdx.x == 0) out[blockIdx.x] = word[0];
}

// a warp sum by shuffles: order-independent by construction
__global__ void warp_sum(float *out) {
    float v = (float)(threadIdx.x + 1) * 0.1f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    out[threadIdx.x] = v;
}

static int failures, checks;

// runs launch(d) under EMU_SCHED=mode, returns the n floats at d
template <class F> static std::vector<float> run(const char *mode, int n, F launch) {
    setenv("EMU_SCHED", mode, 1);
    float *d;
    cudaMalloc((void **)&d, n * sizeof(float));
    cudaMemsetAsync(d, 0, n * sizeof(float));
    launch(d);
    std::vector<float> h(n);
    cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost);
    unsetenv("EMU_SCHED");
    return h;
}

// racy: some order other than forward changes the result; clean: no order does
template <class F> static void expect(const char *name, bool racy, int n, F launch) {
    static const char *orders[] = {"reverse", "shuffle:1", "shuffle:2", "shuffle:3"};
    std::vector<float> ref = run("forward", n, launch);
    int differ = 0;
    std::string which;
    for (const char *o : orders) {
        std::vector<float> got = run(o, n, launch);
        bool same = memcmp(got.data(), ref.data(), n * sizeof(float)) == 0;
        if (!same) { differ++; which += std::string(" ") + o; }
    }
    checks++;
    bool ok = racy ? differ > 0 : differ == 0;
    if (!ok) failures++;
    printf("emu selftest: %-34s %s: %s (orders differing from forward:%s)\n", name, racy ? "racy " : "clean",
           ok ? "ok" : "FAILED", which.empty() ? " none" : which.c_str());
}

int main() {
    for (int sync = 0; sync < 2; sync++) {
        expect(sync ? "block exchange, __syncthreads" : "block exchange, no barrier", !sync, 4 * 64,
               [sync](float *d) { block_exchange<<<4, 64, 64 * sizeof(float)>>>(d, sync); });
        expect(sync ? "warp exchange, __syncwarp" : "warp exchange, no barrier", !sync, 32,
               [sync](float *d) { warp_exchange<<<1, 32, 32 * sizeof(float)>>>(d, sync); });
        expect(sync ? "in-place update, __syncwarp" : "in-place update, no barrier", !sync, 32,
               [sync](float *d) { in_place<<<1, 32, 32 * sizeof(float)>>>(d, sync); });
        expect(sync ? "blocks write their own word" : "blocks write one word", !sync, 16,
               [sync](float *d) { block_writes<<<16, 32>>>(d, sync); });
    }
    expect("warp sum by shuffles", false, 32, [](float *d) { warp_sum<<<1, 32>>>(d); });
    {   // static shared memory starts as NaN in every block, under every order
        std::vector<float> h = run("forward", 4, [](float *d) { static_smem<<<4, 32>>>(d); });
        bool ok = h[0] == 7.0f && h[1] != h[1] && h[2] != h[2] && h[3] != h[3];
        checks++;
        if (!ok) failures++;
        printf("emu selftest: %-34s %s: %s (block 0 %g, block 1 %g)\n", "static shared arrays, per block", "fresh",
               ok ? "ok" : "FAILED", h[0], h[1]);
    }
    {   // more than 48 KB of dynamic shared memory: refused until the kernel's limit is raised
        float *d;
        cudaMalloc((void **)&d, 32 * sizeof(float));
        cudaGetLastError();
        const size_t big = 64 * 1024;
        warp_exchange<<<1, 32, big>>>(d, 1);
        cudaError_t refused = cudaGetLastError();
        cudaFuncSetAttribute(warp_exchange, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)big);
        warp_exchange<<<1, 32, big>>>(d, 1);
        cudaError_t raised = cudaGetLastError();
        bool ok = refused == cudaErrorInvalidValue && raised == cudaSuccess;
        checks++;
        if (!ok) failures++;
        printf("emu selftest: %-34s %s: %s (errors %d, then %d)\n", "dynamic shared memory over 48 KB", "limit",
               ok ? "ok" : "FAILED", refused, raised);
    }
    {   // a grid beyond CUDA's limits (y above 65535) is refused at the launch, not run
        float *d;
        cudaMalloc((void **)&d, 16 * sizeof(float));
        cudaGetLastError();
        block_writes<<<dim3(1, 65536), 32>>>(d, 1);
        cudaError_t e = cudaGetLastError();
        bool ok = e == cudaErrorInvalidConfiguration;
        checks++;
        if (!ok) failures++;
        printf("emu selftest: %-34s %s: %s (error %d)\n", "grid y above 65535", "limit", ok ? "ok" : "FAILED", e);
    }
    printf("emu selftest: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}

#include "cuda_internal.h"
// conv1d.cu — CUDA twins of kernels/cpu/conv1d.c: 1-D convolution and transposed convolution with
// PyTorch semantics (stride, zero padding, dilation, groups, optional bias; output_padding for the
// transposed form), forward and backward, on device pointers. Same arguments as the CPU kernels,
// checked by their own checks, which also work out the geometry and output lengths
// (kernels/cpu/kcheck.h); tested against them in spec/cuda_attn_spec.lua (tag gpu).
//
// As on the CPU, one relation underlies everything: a conv from X [B, Cx, Tx] to Y [B, Cy, Ty]
// with weight W [Cy, Cx/groups, K],
//   Y[b, co, t] = sum_{ci in co's group, k} W[co, ci, k] * X[b, ci, t*stride + k*dilation - padding]
// and three direct kernels evaluate it:
//   rel_forward        one thread per Y element (Y from X)
//   rel_backward_data  one thread per X element (dX from dY, the transposed relation: the (co, k)
//                      with t = (u + padding - k*dilation) / stride an integer in [0, Ty))
//   rel_backward_weight one block per W element, a fixed-order block reduction over (b, t)
// and bias_grad sums dY per channel (one block per channel, in double as the CPU does).
// Conv1d(C_in -> C_out) is the relation with X = x, Y = y. ConvTranspose1d(C_in -> C_out) with
// weight [C_in, C_out/g, K] is its adjoint with X = y (Cx = C_out), Y = x (Cy = C_in): its forward
// is rel_backward_data, its dx is rel_forward of dy, its dw is rel_backward_weight with dy as X.
//
// Determinism: each output element is produced by one thread or one block in a fixed order, with
// no atomics, so results are bit-reproducible run to run.
// Performance: direct loops, clarity over speed (no shared-memory tiling, no cuDNN yet). The weight
// gradient reads all of X and dY per weight element: fine for the DiT's 1x1 convs, slow for the
// Oobleck VAE's (which is frozen in SAO training).
extern "C" {
#include "sao_cuda_attn.h"
#include "../cpu/kcheck.h"
}

#define THREADS 256

// ---- kernels ----------------------------------------------------------------------------------------

// Y[b, co, t] = (accumulate ? Y : 0) + bias[co] + sum_{ci, k} W[co, ci, k] X[b, g*cxg + ci, t*s + k*d - p]
__global__ static void rel_forward(sao_conv_geo c, const float *x, const float *w, const float *bias,
                                   int accumulate, float *y) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= c.B * c.cy * c.ty) return;
    long long t = i % c.ty, co = (i / c.ty) % c.cy, b = i / (c.ty * c.cy);
    const float *xg = x + (b * c.cx + (co / c.cyg) * c.cxg) * c.tx;   // co's input group
    const float *wr = w + co * c.cxg * c.K;
    float acc = 0.0f;
    for (long long ci = 0; ci < c.cxg; ci++)
        for (long long k = 0; k < c.K; k++) {
            long long src = t * c.s + k * c.d - c.p;
            if (src >= 0 && src < c.tx) acc = fmaf(wr[ci * c.K + k], xg[ci * c.tx + src], acc);
        }
    if (bias) acc += bias[co];
    y[i] = accumulate ? y[i] + acc : acc;
}

// dX[b, ci, u] = (accumulate ? dX : 0) + bias[ci] + sum over co in ci's group and the k with
// u = t*s + k*d - p for an integer t in [0, ty): W[co, ci % cxg, k] dY[b, co, t]
__global__ static void rel_backward_data(sao_conv_geo c, const float *dy, const float *w,
                                         const float *bias, int accumulate, float *dx) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= c.B * c.cx * c.tx) return;
    long long u = i % c.tx, ci = (i / c.tx) % c.cx, b = i / (c.tx * c.cx);
    long long gi = ci / c.cxg, cil = ci % c.cxg;
    const float *dyg = dy + (b * c.cy + gi * c.cyg) * c.ty;   // ci's output group
    const float *wg = w + (gi * c.cyg * c.cxg + cil) * c.K;     // W[gi*cyg + co, cil, 0]
    float acc = 0.0f;
    for (long long k = 0; k < c.K; k++) {
        long long num = u + c.p - k * c.d;
        if (num < 0) break;   // num falls as k grows
        if (num % c.s) continue;
        long long t = num / c.s;
        if (t >= c.ty) continue;
        for (long long co = 0; co < c.cyg; co++)
            acc = fmaf(wg[co * c.cxg * c.K + k], dyg[co * c.ty + t], acc);
    }
    if (bias) acc += bias[ci];
    dx[i] = accumulate ? dx[i] + acc : acc;
}

// dW[co, ci, k] += sum_{b, t} dY[b, co, t] X[b, g*cxg + ci, t*s + k*d - p]; one block per weight
// element, threads strided over (b, t), then a fixed shared-memory tree
__global__ static void __launch_bounds__(THREADS)
rel_backward_weight(sao_conv_geo c, const float *x, const float *dy, float *dw) {
    __shared__ float part[THREADS];
    long long wi = blockIdx.x;   // < cy * cxg * K
    long long k = wi % c.K, ci = (wi / c.K) % c.cxg, co = wi / (c.K * c.cxg);
    long long xc = (co / c.cyg) * c.cxg + ci, off = k * c.d - c.p;
    // t with 0 <= t*s + off < tx
    long long tlo = off >= 0 ? 0 : (-off + c.s - 1) / c.s;
    long long thi = c.tx - off <= 0 ? 0 : (c.tx - off + c.s - 1) / c.s;   // first t past the end
    if (thi > c.ty) thi = c.ty;
    long long nt = thi > tlo ? thi - tlo : 0;
    float acc = 0.0f;
    for (long long e = threadIdx.x; e < c.B * nt; e += THREADS) {
        long long b = e / nt, t = tlo + e % nt;
        acc = fmaf(dy[(b * c.cy + co) * c.ty + t], x[(b * c.cx + xc) * c.tx + t * c.s + off], acc);
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int h = THREADS / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) part[threadIdx.x] += part[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) dw[wi] += part[0];
}

// dbias[ch] += sum_{b, t} dy[b, ch, t], summed in double (as the CPU kernel); one block per channel
__global__ static void __launch_bounds__(THREADS)
bias_grad(const float *dy, long long B, long long C, long long T, float *dbias) {
    __shared__ double part[THREADS];
    long long ch = blockIdx.x;
    double acc = 0.0;
    for (long long e = threadIdx.x; e < B * T; e += THREADS) {
        long long b = e / T, t = e % T;
        acc += (double)dy[(b * C + ch) * T + t];
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int h = THREADS / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) part[threadIdx.x] += part[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) dbias[ch] += (float)part[0];
}

// ---- launchers ------------------------------------------------------------------------------------
static int grid_ok(sao_ctx *ctx, const char *op, long long blocks) {
    if (blocks > 2147483647LL)
        return sao_err(ctx, op, "%lld blocks exceed the CUDA grid (split the batch or the signal)", blocks);
    return 0;
}

static int run_forward(sao_ctx *ctx, const char *op, const sao_conv_geo *c, const float *x,
                       const float *w, const float *bias, int accumulate, float *y) {
    long long n = c->B * c->cy * c->ty;
    if (n == 0) return 0;
    if (grid_ok(ctx, op, (n + THREADS - 1) / THREADS)) return -1;
    rel_forward<<<sao_cuda_blocks(n, THREADS), THREADS, 0, sao_cuda_stream()>>>(*c, x, w, bias, accumulate, y);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

static int run_backward_data(sao_ctx *ctx, const char *op, const sao_conv_geo *c, const float *dy,
                             const float *w, const float *bias, int accumulate, float *dx) {
    long long n = c->B * c->cx * c->tx;
    if (n == 0) return 0;
    if (grid_ok(ctx, op, (n + THREADS - 1) / THREADS)) return -1;
    rel_backward_data<<<sao_cuda_blocks(n, THREADS), THREADS, 0, sao_cuda_stream()>>>(*c, dy, w, bias,
                                                                                    accumulate, dx);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

static int run_backward_weight(sao_ctx *ctx, const char *op, const sao_conv_geo *c, const float *x,
                               const float *dy, float *dw) {
    long long n = c->cy * c->cxg * c->K;
    if (grid_ok(ctx, op, n)) return -1;
    rel_backward_weight<<<(unsigned)n, THREADS, 0, sao_cuda_stream()>>>(*c, x, dy, dw);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

static int run_bias_grad(sao_ctx *ctx, const char *op, const float *dy, long long B, long long C,
                         long long T, float *dbias) {
    if (grid_ok(ctx, op, C)) return -1;
    bias_grad<<<(unsigned)C, THREADS, 0, sao_cuda_stream()>>>(dy, B, C, T, dbias);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

// The pointers a backward will read or write are device memory (x only for dw, w only for dx).
static int backward_ptrs(sao_ctx *ctx, const char *op, const float *dy, const float *x,
                         const float *w, const float *dx, const float *dw, const float *dbias) {
    if (sao_cuda_check_ptr(ctx, op, "dy", dy) || sao_cuda_check_ptr(ctx, op, "x", dw ? x : NULL) ||
        sao_cuda_check_ptr(ctx, op, "w", dx ? w : NULL) || sao_cuda_check_ptr(ctx, op, "dx", dx) ||
        sao_cuda_check_ptr(ctx, op, "dw", dw) || sao_cuda_check_ptr(ctx, op, "dbias", dbias))
        return -1;
    return 0;
}

// ---- entry points ------------------------------------------------------------------------------------
extern "C" int sao_cuda_conv1d_forward(sao_ctx *ctx, const float *x, const float *w, const float *bias,
                                       int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                                       int stride, int padding, int dilation, int groups, float *y) {
    const char *op = "cuda_conv1d_forward";
    sao_conv_geo c;
    SAO_CHECK(sao_conv1d_forward_check(ctx, op, SAO_KCHECK_CUDA, x, w, B, c_in, t_in, c_out, k, stride,
                                       padding, dilation, groups, y, &c));
    if (sao_cuda_check_ptr(ctx, op, "x", x) || sao_cuda_check_ptr(ctx, op, "w", w) ||
        sao_cuda_check_ptr(ctx, op, "bias", bias) || sao_cuda_check_ptr(ctx, op, "y", y))
        return -1;
    return run_forward(ctx, op, &c, x, w, bias, 0, y);
}

extern "C" int sao_cuda_conv1d_backward(sao_ctx *ctx, const float *dy, const float *x, const float *w,
                                        int64_t B, int64_t c_in, int64_t t_in, int64_t c_out, int64_t k,
                                        int stride, int padding, int dilation, int groups,
                                        float *dx, float *dw, float *dbias) {
    const char *op = "cuda_conv1d_backward";
    sao_conv_geo c;
    SAO_CHECK(sao_conv1d_backward_check(ctx, op, SAO_KCHECK_CUDA, dy, x, w, B, c_in, t_in, c_out, k,
                                        stride, padding, dilation, groups, dx, dw, &c));
    if (backward_ptrs(ctx, op, dy, x, w, dx, dw, dbias)) return -1;
    if (dbias && run_bias_grad(ctx, op, dy, B, c_out, c.ty, dbias)) return -1;
    if (dx && run_backward_data(ctx, op, &c, dy, w, NULL, 1, dx)) return -1;
    if (dw && run_backward_weight(ctx, op, &c, x, dy, dw)) return -1;
    return 0;
}

extern "C" int sao_cuda_conv_transpose1d_forward(sao_ctx *ctx, const float *x, const float *w,
                                                 const float *bias, int64_t B, int64_t c_in,
                                                 int64_t t_in, int64_t c_out, int64_t k, int stride,
                                                 int padding, int output_padding, int dilation,
                                                 int groups, float *y) {
    const char *op = "cuda_conv_transpose1d_forward";
    sao_conv_geo c;
    SAO_CHECK(sao_conv_transpose1d_forward_check(ctx, op, SAO_KCHECK_CUDA, x, w, B, c_in, t_in, c_out,
                                                 k, stride, padding, output_padding, dilation,
                                                 groups, y, &c));
    if (sao_cuda_check_ptr(ctx, op, "x", x) || sao_cuda_check_ptr(ctx, op, "w", w) ||
        sao_cuda_check_ptr(ctx, op, "bias", bias) || sao_cuda_check_ptr(ctx, op, "y", y))
        return -1;
    return run_backward_data(ctx, op, &c, x, w, bias, 0, y);   // y = bias + conv^T(x)
}

extern "C" int sao_cuda_conv_transpose1d_backward(sao_ctx *ctx, const float *dy, const float *x,
                                                  const float *w, int64_t B, int64_t c_in,
                                                  int64_t t_in, int64_t c_out, int64_t k, int stride,
                                                  int padding, int output_padding, int dilation,
                                                  int groups, float *dx, float *dw, float *dbias) {
    const char *op = "cuda_conv_transpose1d_backward";
    sao_conv_geo c;
    SAO_CHECK(sao_conv_transpose1d_backward_check(ctx, op, SAO_KCHECK_CUDA, dy, x, w, B, c_in, t_in,
                                                  c_out, k, stride, padding, output_padding,
                                                  dilation, groups, dx, dw, &c));
    if (backward_ptrs(ctx, op, dy, x, w, dx, dw, dbias)) return -1;
    if (dbias && run_bias_grad(ctx, op, dy, B, c_out, c.tx, dbias)) return -1;
    if (dx && run_forward(ctx, op, &c, dy, w, NULL, 1, dx)) return -1;        // dx += conv(dy)
    if (dw && run_backward_weight(ctx, op, &c, dy, x, dw)) return -1;         // X = dy, dY = x
    return 0;
}

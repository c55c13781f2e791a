#include "sao_cudnn.h"
// conv1d.cu — CUDA twins of kernels/cpu/conv1d.c: 1-D convolution and transposed convolution with
// PyTorch semantics (stride, zero padding, dilation, groups, optional bias; output_padding for the
// transposed form), forward and backward, on device pointers. Same arguments as the CPU kernels,
// checked by their own checks, which also work out the geometry and output lengths
// (kernels/cpu/kcheck.h); tested against them in spec/cuda_conv_spec.lua (tag gpu), on both paths.
//
// Two paths evaluate the relation below. cuDNN (conv_cudnn.cu) runs every conv but the plain 1x1
// ones (stride 1, no padding: the DiT's, which its CUDA graphs capture) when it is loaded and
// sao_cuda_conv_backend has not asked for "gemm"; otherwise, and for a shape cuDNN has no
// deterministic algorithm for, the im2col + GEMM path of this file runs. Bias and accumulation
// are this file's in both: the bias is written first (prefill) and the conv added onto it (cuDNN's
// beta = 1), a backward adds into its d-buffers (beta = 1), and the bias gradient is bias_grad.
//
// As on the CPU, one relation underlies everything: a conv from X [B, Cx, Tx] to Y [B, Cy, Ty]
// with weight W [Cy, Cx/groups, K],
//   Y[b, co, t] = sum_{ci in co's group, k} W[co, ci, k] * X[b, ci, t*stride + k*dilation - padding]
// evaluated four ways:
//   run_forward        Y from X: per batch item and group, im2col of a chunk of output columns
//                      (col [nc, cxg*K], column-major) and one GEMM Y_chunk += col W_g^T; a 1x1
//                      conv (stride 1, no padding) multiplies X itself
//   run_backward_data  X from Y (the transposed relation): per chunk of Y columns one GEMM
//                      Z = W_g^T Y_chunk ([cxg*K, nt]), then a gather adds into every X element the
//                      Z entries with u = t*s + k*d - p (one thread per element, k in order)
//   rel_backward_weight one block per W element, a fixed-order block reduction over (b, t)
//   bias_grad          dY summed per channel (one block per channel, in double as the CPU does)
// The GEMMs run on cuBLASLt (sao_cuda_gemm_f32): fp32 in the fp32 GEMM precision mode, TF32 tensor
// cores in the tf32 and bf16 modes (the Oobleck VAE's 5 TFLOP decode, when cuDNN does not run it).
// Conv1d(C_in -> C_out) is the relation with X = x, Y = y. ConvTranspose1d(C_in -> C_out) with
// weight [C_in, C_out/g, K] is its adjoint with X = y (Cx = C_out), Y = x (Cy = C_in): its forward
// is run_backward_data, its dx is run_forward of dy, its dw is rel_backward_weight with dy as X.
//
// Determinism: chunks run in order on one stream, each output element is written by one thread or
// one GEMM per chunk, no atomics: results are bit-reproducible run to run (cuDNN's too: only its
// deterministic algorithms are chosen).
// The GEMM path's weight gradient reads all of X and dY per weight element: fine for the DiT's 1x1
// convs, slow for the Oobleck VAE's (frozen in SAO training), which cuDNN's backward filter takes.
extern "C" {
#include "cuda_glue.h"
#include "sao_cuda_attn.h"
}


#define THREADS 256

// ---- kernels ----------------------------------------------------------------------------------------

// v[b, ch, t] = (accumulate ? v : 0) + (bias ? bias[ch] : 0) over v [B, C, T]: the GEMMs then add.
__global__ static void prefill(float *v, const float *bias, long long C, long long T, long long n, int accumulate) {
    SAO_GRID_STRIDE(i, n) {
        float b = bias ? bias[(i / T) % C] : 0.0f;
        v[i] = accumulate ? v[i] + b : b;
    }
}

// col [nc, rows] column-major: col[r * nc + j] = X[ci, (t0 + j) s + k d - p] (0 outside), r = ci K + k,
// for one batch item's group xg [cxg, tx]. Consecutive threads take consecutive j (coalesced).
__global__ static void im2col(sao_conv_geo c, const float *xg, long long t0, long long nc, float *col) {
    SAO_GRID_STRIDE(i, nc * c.rows) {
        long long j = i % nc, r = i / nc, ci = r / c.K, k = r % c.K;
        long long src = (t0 + j) * c.s + k * c.d - c.p;
        col[i] = src >= 0 && src < c.tx ? xg[ci * c.tx + src] : 0.0f;
    }
}

// X[ci, u] += sum over k (in order) with u + p - k d = t s, t in [t0, t0 + nt): Z[(ci K + k) nt + t - t0],
// for u in [u0, u0 + nu), one batch item's group xg [cxg, tx]; Z [nt, rows] column-major.
__global__ static void col2im(sao_conv_geo c, const float *z, long long t0, long long nt, long long u0,
                              long long nu, float *xg) {
    SAO_GRID_STRIDE(i, nu * c.cxg) {
        long long u = u0 + i % nu, ci = i / nu;
        float acc = 0.0f;
        for (long long k = 0; k < c.K; k++) {
            long long num = u + c.p - k * c.d;
            if (num < 0) break;   // num falls as k grows
            if (num % c.s) continue;
            long long t = num / c.s - t0;
            if (t >= 0 && t < nt) acc += z[(ci * c.K + k) * nt + t];
        }
        xg[ci * c.tx + u] += acc;
    }
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

// The chunk scratch of the current device (im2col columns / the adjoint's Z; cuDNN's workspace),
// grown as needed.
static const long long SCRATCH_FLOATS = 32LL << 20;   // 128 MB: chunks of at least one column
static float *scratch[SAO_CUDA_SCRATCH_DEVICES];
static size_t scratch_n[SAO_CUDA_SCRATCH_DEVICES];

static float *chunk_buffer(sao_ctx *ctx, const char *op, size_t floats) {
    return sao_cuda_device_scratch(ctx, op, "conv scratch", scratch, scratch_n, floats);
}

// Columns per chunk: as many as fit the scratch next to `rows` floats each.
static long long chunk_cols(long long total, long long rows) {
    long long nc = SCRATCH_FLOATS / (rows > 0 ? rows : 1);
    if (nc < 1) nc = 1;
    return nc < total ? nc : total;
}

static int launch_prefill(sao_ctx *ctx, const char *op, float *v, const float *bias, long long B, long long C,
                          long long T, int accumulate) {
    long long n = B * C * T;
    if (accumulate && !bias) return 0;
    prefill<<<sao_cuda_stride_blocks(n), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(v, bias, C, T, n, accumulate);
    CUDA_LAUNCHED(ctx, op);
    return 0;
}

static int too_big(sao_ctx *ctx, const char *op, long long v) {
    if (v > 2147483647LL) return sao_err(ctx, op, "a GEMM dimension of %lld exceeds cuBLAS's int (split the batch or the signal)", v);
    return 0;
}

// out = (accumulate ? out : 0) + bias + rel(a, b) by cuDNN: 1 when it ran, 0 when it does not take
// the shape (nothing written: the GEMM path runs), -1 on error. Without a bias the prefill is
// left to cuDNN's beta (0: out is not read, as a fresh output may hold anything).
static int try_cudnn(sao_ctx *ctx, const char *op, int rel, const sao_conv_geo *c, const float *a, const float *b,
                     const float *bias, int accumulate, float *out, long long C, long long T) {
    const sao_cudnn_plan *plan = NULL;
    if (sao_cudnn_conv_plan(ctx, op, rel, c, &plan)) return -1;
    if (!plan) return 0;
    if (bias && launch_prefill(ctx, op, out, bias, c->B, C, T, accumulate)) return -1;
    float beta = accumulate || bias ? 1.0f : 0.0f;
    return sao_cudnn_conv_run(ctx, op, plan, a, b, beta, out, scratch, scratch_n) ? -1 : 1;
}

// Y = (accumulate ? Y : 0) + bias + conv(X)
static int run_forward(sao_ctx *ctx, const char *op, const sao_conv_geo *c, const float *x,
                       const float *w, const float *bias, int accumulate, float *y) {
    if (c->B * c->cy * c->ty == 0) return 0;
    int done = try_cudnn(ctx, op, SAO_CUDNN_FORWARD, c, x, w, bias, accumulate, y, c->cy, c->ty);
    if (done) return done < 0 ? -1 : 0;
    if (launch_prefill(ctx, op, y, bias, c->B, c->cy, c->ty, accumulate)) return -1;
    if (too_big(ctx, op, c->ty) || too_big(ctx, op, c->rows) || too_big(ctx, op, c->tx)) return -1;
    bool plain = c->K == 1 && c->s == 1 && c->p == 0 && c->tx == c->ty;   // X is its own im2col
    long long nc = plain ? c->ty : chunk_cols(c->ty, c->rows);
    float *col = plain ? NULL : chunk_buffer(ctx, op, (size_t)(nc * c->rows));
    if (!plain && !col) return -1;
    for (long long b = 0; b < c->B; b++)
        for (long long g = 0; g < c->g; g++) {
            const float *xg = x + (b * c->cx + g * c->cxg) * c->tx;
            const float *wg = w + g * c->cyg * c->rows;   // [cyg, rows] row-major = [rows, cyg] column-major
            float *yg = y + (b * c->cy + g * c->cyg) * c->ty;
            if (plain) {   // Y^T [ty, cyg] += X^T [tx, cxg] W_g^T
                if (sao_cuda_gemm_f32(ctx, op, false, false, (int)c->ty, (int)c->cyg, (int)c->rows, xg, (int)c->tx,
                                      wg, (int)c->rows, 1.0f, yg, (int)c->ty)) return -1;
                continue;
            }
            for (long long t0 = 0; t0 < c->ty; t0 += nc) {
                long long n = c->ty - t0 < nc ? c->ty - t0 : nc;
                im2col<<<sao_cuda_stride_blocks(n * c->rows), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(*c, xg, t0, n, col);
                CUDA_LAUNCHED(ctx, op);
                // Y^T rows t0.. [n, cyg] += col [n, rows] W_g^T
                if (sao_cuda_gemm_f32(ctx, op, false, false, (int)n, (int)c->cyg, (int)c->rows, col, (int)n, wg,
                                      (int)c->rows, 1.0f, yg + t0, (int)c->ty)) return -1;
            }
        }
    return 0;
}

// X = (accumulate ? X : 0) + bias + conv^T(Y)
static int run_backward_data(sao_ctx *ctx, const char *op, const sao_conv_geo *c, const float *dy,
                             const float *w, const float *bias, int accumulate, float *dx) {
    if (c->B * c->cx * c->tx == 0) return 0;
    int done = try_cudnn(ctx, op, SAO_CUDNN_DATA, c, dy, w, bias, accumulate, dx, c->cx, c->tx);
    if (done) return done < 0 ? -1 : 0;
    if (launch_prefill(ctx, op, dx, bias, c->B, c->cx, c->tx, accumulate)) return -1;
    if (c->ty == 0) return 0;
    if (too_big(ctx, op, c->ty) || too_big(ctx, op, c->rows)) return -1;
    long long nt = chunk_cols(c->ty, c->rows);
    float *z = chunk_buffer(ctx, op, (size_t)(nt * c->rows));
    if (!z) return -1;
    for (long long b = 0; b < c->B; b++)
        for (long long g = 0; g < c->g; g++) {
            const float *dyg = dy + (b * c->cy + g * c->cyg) * c->ty;
            const float *wg = w + g * c->cyg * c->rows;
            float *dxg = dx + (b * c->cx + g * c->cxg) * c->tx;
            for (long long t0 = 0; t0 < c->ty; t0 += nt) {
                long long n = c->ty - t0 < nt ? c->ty - t0 : nt;
                // Z [n, rows] (column-major) = Y_chunk^T [n, cyg] W_g [cyg, rows]
                if (sao_cuda_gemm_f32(ctx, op, false, true, (int)n, (int)c->rows, (int)c->cyg, dyg + t0, (int)c->ty,
                                      wg, (int)c->rows, 0.0f, z, (int)n)) return -1;
                // the X columns this chunk reaches: u = t s + k d - p for t in the chunk, any k
                long long u0 = t0 * c->s - c->p, u1 = (t0 + n - 1) * c->s + (c->K - 1) * c->d - c->p + 1;
                if (u0 < 0) u0 = 0;
                if (u1 > c->tx) u1 = c->tx;
                if (u1 <= u0) continue;
                col2im<<<sao_cuda_stride_blocks((u1 - u0) * c->cxg), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(
                    *c, z, t0, n, u0, u1 - u0, dxg);
                CUDA_LAUNCHED(ctx, op);
            }
        }
    return 0;
}

static int run_backward_weight(sao_ctx *ctx, const char *op, const sao_conv_geo *c, const float *x,
                               const float *dy, float *dw) {
    int done = try_cudnn(ctx, op, SAO_CUDNN_FILTER, c, x, dy, NULL, 1, dw, 0, 0);   // dW += ...
    if (done) return done < 0 ? -1 : 0;
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

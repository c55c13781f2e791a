// dit_glue.cu — the DiT's CUDA kernel table (forward and training) (dit_ops, runtime/dit_internal.h): the sao_cuda_
// twins of the CPU kernels, the shared memory helpers (runtime/cuda_glue.h: row copies, zero, y += x,
// host <-> device transfers), and the CFG combine + rescale, the twin of dit.c's cpu_cfg (same
// operation order, double sums, unbiased std over io channels).
// Everything is queued on sao's stream; `get` (a blocking copy to the host) is where the work of a
// forward is waited for, and where an error of a running kernel surfaces.
#include "cuda_internal.h"
extern "C" {
#include "cuda_glue.h"
#include "dit_internal.h"
#include "sao_cuda.h"
#include "sao_cuda_ops.h"
#include "sao_cuda_attn.h"
}
#include <math.h>
#include <string.h>

// One thread per (batch, time) row of io channels: the combine, then (phi != 0) the rescale by
// std(cond) / std(g), summed in double in channel order as the CPU does. The roundings are spelled
// out with intrinsics so that nvcc fuses exactly what gcc fuses in dit.c's cpu_cfg (-O2
// -march=native, gnu11 contracts to FMA; read off its disassembly): the combine is
// fmaf(s, c - u, u), the squares are fma(a, a, sum), the blend is fma(phi g, ratio, (1 - phi) g).
// Same inputs then give the same bits as the CPU build (a CPU build without FMA differs by an ulp).
__global__ static void cfg_kernel(const float *cond, const float *unc, long long rows, long long io, float s,
                                  double phi, float *g) {
    SAO_GRID_STRIDE(r, rows) {
        const float *c = cond + r * io, *u = unc + r * io;
        float *o = g + r * io;
        for (long long ch = 0; ch < io; ch++) o[ch] = __fmaf_rn(s, __fsub_rn(c[ch], u[ch]), u[ch]);
        if (phi == 0.0) continue;
        double sc = 0, sc2 = 0, sg = 0, sg2 = 0;
        for (long long ch = 0; ch < io; ch++) {
            double a_ = c[ch], g_ = o[ch];
            sc = __dadd_rn(sc, a_); sc2 = __fma_rn(a_, a_, sc2);
            sg = __dadd_rn(sg, g_); sg2 = __fma_rn(g_, g_, sg2);
        }
        double n = (double)io, n1 = (double)(io - 1);
        double vc = __ddiv_rn(__dsub_rn(sc2, __ddiv_rn(__dmul_rn(sc, sc), n)), n1);
        double vg = __ddiv_rn(__dsub_rn(sg2, __ddiv_rn(__dmul_rn(sg, sg), n)), n1);
        double ratio = __ddiv_rn(sqrt(vc > 0 ? vc : 0), sqrt(vg > 0 ? vg : 1e-30));
        double keep = __dsub_rn(1.0, phi);
        for (long long ch = 0; ch < io; ch++) {
            double g_ = o[ch];
            o[ch] = (float)__fma_rn(__dmul_rn(phi, g_), ratio, __dmul_rn(g_, keep));
        }
    }
}

static int cuda_cfg(sao_ctx *ctx, const float *cond, const float *unc, int64_t rows, int64_t io, double scale,
                    double phi, float *g) {
    if (rows <= 0) return 0;
    cfg_kernel<<<sao_cuda_stride_blocks(rows), SAO_CUDA_THREADS, 0, sao_cuda_stream()>>>(
        cond, unc, (long long)rows, (long long)io, (float)scale, phi, g);
    CUDA_LAUNCHED(ctx, "dit_cfg");
    return 0;
}

static float *cuda_alloc(sao_ctx *ctx, size_t floats) {
    void *p = NULL;
    return sao_cuda_malloc(ctx, floats * sizeof(float), &p) ? NULL : (float *)p;
}

static void cuda_release(float *p) { sao_cuda_free(p); }

static dit_ops cuda_ops(void) {
    dit_ops o;
    memset(&o, 0, sizeof o);
    o.device = "cuda";
    o.linear = sao_cuda_linear_forward;
    o.silu = sao_cuda_silu_forward;
    o.fourier = sao_cuda_fourier_features_forward;
    o.transpose = sao_cuda_transpose_forward;
    o.layernorm = sao_cuda_layernorm_forward;
    o.rope = sao_cuda_rope_forward;
    o.attention = sao_cuda_attention_forward;
    o.swiglu = sao_cuda_swiglu_forward;
    o.copy = sao_cuda_copy_rows;
    o.zero = sao_cuda_zero;
    o.add = sao_cuda_add;
    o.scale = sao_cuda_scale;
    o.cfg = cuda_cfg;
    o.put = sao_cuda_put;
    o.get = sao_cuda_get;
    o.linear_bwd = sao_cuda_linear_backward;
    o.silu_bwd = sao_cuda_silu_backward;
    o.swiglu_bwd = sao_cuda_swiglu_backward;
    o.layernorm_bwd = sao_cuda_layernorm_backward;
    o.rope_bwd = sao_cuda_rope_backward;
    o.attention_bwd = sao_cuda_attention_backward;
    o.fourier_bwd = sao_cuda_fourier_features_backward;
    o.sumsq = sao_cuda_sumsq;
    o.alloc = cuda_alloc;
    o.release = cuda_release;
    return o;
}

extern "C" const dit_ops dit_ops_cuda = cuda_ops();

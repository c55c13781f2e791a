/* rope.c — partial rotary position embedding, half-split ("rotate_half", NeoX style), as the
 * SAO DiT self-attention applies it to q and k (spec 5.3.2): the first rot_dim dims of each head
 * row are rotated in pairs (i, i + rot_dim/2) by theta_i(p) = p * inv_freq[i]; the rest pass.
 *
 *   y_i        = x_i cos(theta_i) - x_{i+h} sin(theta_i)      i < h = rot_dim/2
 *   y_{i+h}    = x_{i+h} cos(theta_i) + x_i sin(theta_i)
 * The backward is the rotation by -theta (the map is orthogonal).
 *
 * Rows: B x H x T rows of D elements, element (b, h, t, d) at b*s[0] + h*s[1] + t*s[2] + d
 * (s = strides, NULL or zeros for contiguous [B, H, T, D]); y uses the same strides and may be x.
 * The angle p * inv_freq[i] is rounded to fp32 before cos/sin (upstream forms it in fp32).
 */
#include "kcommon.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The argument check of both kernels, CPU and CUDA (kcheck.h); s: the strides to use. */
int sao_rope_check(sao_ctx *ctx, const char *op, const float *x, int64_t B, int64_t H, int64_t T,
                   int64_t D, const int64_t *strides, int64_t rot_dim, const float *inv_freq,
                   double base, const float *y, int64_t s[3]) {
    if (B < 0 || H < 1 || T < 0 || D < 1)
        return sao_err(ctx, op, "bad shape B=%lld H=%lld T=%lld D=%lld", (long long)B, (long long)H,
                       (long long)T, (long long)D);
    if (rot_dim < 0 || rot_dim > D || rot_dim % 2)
        return sao_err(ctx, op, "rot_dim %lld must be even and within the head dim %lld",
                       (long long)rot_dim, (long long)D);
    if (!inv_freq && !(base > 0.0))
        return sao_err(ctx, op, "no inv_freq and base %g (pass the stored inv_freq or a base > 0, "
                       "SAO: 10000)", base);
    SAO_NEED(ctx, op, x);
    SAO_NEED(ctx, op, y);
    int given = strides && (strides[0] || strides[1] || strides[2]);
    s[0] = given ? strides[0] : H * T * D;
    s[1] = given ? strides[1] : T * D;
    s[2] = given ? strides[2] : D;
    return B == 0 || T == 0 ? 0 : 1;
}

static int rope_apply(sao_ctx *ctx, const char *op, const float *x, int64_t B, int64_t H, int64_t T,
                      int64_t D, const int64_t *strides, int64_t rot_dim, int64_t pos_offset,
                      const float *inv_freq, double base, float sign, float *y) {
    int64_t s[3];
    SAO_CHECK(sao_rope_check(ctx, op, x, B, H, T, D, strides, rot_dim, inv_freq, base, y, s));
    const int64_t sb = s[0], sh = s[1], st = s[2];
    int64_t half = rot_dim / 2;
    float *tab = NULL;   /* [T][half] cos, then [T][half] sin */
    if (half > 0) {
        tab = malloc((size_t)(2 * T * half) * sizeof(float));
        if (!tab) return sao_err(ctx, op, "out of memory for a %lld x %lld angle table",
                                 (long long)T, (long long)half);
        for (int64_t i = 0; i < half; i++) {
            float f = inv_freq ? inv_freq[i] : (float)pow(base, -2.0 * (double)i / (double)rot_dim);
            for (int64_t t = 0; t < T; t++) {
                float th = (float)(pos_offset + t) * f;   /* fp32 product, as upstream */
                tab[t * half + i] = (float)cos((double)th);
                tab[T * half + t * half + i] = sign * (float)sin((double)th);
            }
        }
    }
    sao_threads_apply(ctx);
    #pragma omp parallel for schedule(static) if (B * H * T * D >= SAO_PAR_MIN)
    for (int64_t r = 0; r < B * H * T; r++) {
        int64_t b = r / (H * T), h = (r / T) % H, t = r % T;
        const float *xr = x + b * sb + h * sh + t * st;
        float *yr = y + b * sb + h * sh + t * st;
        const float *cs = tab + t * half, *sn = tab + T * half + t * half;
        #pragma omp simd
        for (int64_t i = 0; i < half; i++) {
            float x1 = xr[i], x2 = xr[i + half];
            yr[i] = x1 * cs[i] - x2 * sn[i];
            yr[i + half] = x2 * cs[i] + x1 * sn[i];
        }
        if (yr != xr)
            for (int64_t d = rot_dim; d < D; d++) yr[d] = xr[d];
    }
    free(tab);
    return 0;
}

int sao_rope_forward(sao_ctx *ctx, const float *x, int64_t B, int64_t H, int64_t T, int64_t D,
                     const int64_t *strides, int64_t rot_dim, int64_t pos_offset,
                     const float *inv_freq, double base, float *y) {
    return rope_apply(ctx, "rope_forward", x, B, H, T, D, strides, rot_dim, pos_offset, inv_freq,
                      base, 1.0f, y);
}

int sao_rope_backward(sao_ctx *ctx, const float *dy, int64_t B, int64_t H, int64_t T, int64_t D,
                      const int64_t *strides, int64_t rot_dim, int64_t pos_offset,
                      const float *inv_freq, double base, float *dx) {
    return rope_apply(ctx, "rope_backward", dy, B, H, T, D, strides, rot_dim, pos_offset, inv_freq,
                      base, -1.0f, dx);
}

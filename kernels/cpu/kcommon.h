/* kcommon.h — what the CPU kernels share: the NULL-argument check, the checks they share with
 * their CUDA twins (kcheck.h), the parallel threshold, and vectorisable float approximations of
 * exp and sin/cos (libm's scalar calls stop the compiler from vectorising a loop; these are plain
 * arithmetic, so `#pragma omp simd` loops vectorise).
 *
 * Accuracy, measured against double libm (spec/kernels_spec.lua re-checks both through the
 * kernels: "silu ... whole float range" and "snake ... wide range"):
 *   sao_vexpf     relative error < 1e-7 (7.9e-8 measured) on [-87, 88]; 0 below -87.33 (and for
 *                 -inf); NaN stays NaN; inputs above 88 saturate at exp(88) ~ 1.65e38 (the kernels
 *                 only call it with x <= 0 or inside sigmoids, where that is harmless).
 *   sao_vsincosf  absolute error < 1e-7 (7.1e-8 measured) for |x| < 1e6 (the reduction
 *                 x - k*pi/2 runs in double; the polynomials are Taylor series on [-pi/4, pi/4]).
 */
#ifndef SAO_KCOMMON_H
#define SAO_KCOMMON_H
#include "internal.h"
#include "kcheck.h"
#include "sao_kernels.h"
#include <stdint.h>

/* Below this many elements an elementwise loop runs on one thread (OpenMP start-up costs more). */
#define SAO_PAR_MIN 32768

/* exp(x) = 2^n * exp(r), n = round(x/ln2), r = x - n*ln2 in [-ln2/2, ln2/2] (two-part ln2 so
 * n*LN2_HI is exact), exp(r) by its degree-7 Taylor polynomial (truncation 5e-9 relative). */
static inline float sao_vexpf(float x) {
    const float lo = -87.33654f, hi = 88.0f;
    float xc = x < lo ? lo : (x > hi ? hi : x);
    float nf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  /* round to nearest */
    float r = xc - nf * 0.693145751953125f;
    r = r - nf * 1.428606820309417232e-6f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { int32_t i; float f; } s;
    s.i = ((int32_t)nf + 127) << 23;
    float e = p * s.f;
    return x < lo ? 0.0f : e;
}

/* sin and cos of x: k = round(x * 2/pi), r = x - k*pi/2 (in double), then the quadrant k mod 4
 * picks +-sin(r) / +-cos(r). */
static inline void sao_vsincosf(float x, float *s_out, float *c_out) {
    double xd = (double)x;
    double kd = (xd * 0.63661977236758134308 + 6755399441055744.0) - 6755399441055744.0;
    float r = (float)(xd - kd * 1.57079632679489661923);
    int q = (int)(int64_t)kd & 3;
    float r2 = r * r;
    float sp = 1.0f / 362880.0f;
    sp = sp * r2 - 1.0f / 5040.0f;
    sp = sp * r2 + 1.0f / 120.0f;
    sp = sp * r2 - 1.0f / 6.0f;
    sp = (sp * r2) * r + r;
    float cp = -1.0f / 3628800.0f;
    cp = cp * r2 + 1.0f / 40320.0f;
    cp = cp * r2 - 1.0f / 720.0f;
    cp = cp * r2 + 1.0f / 24.0f;
    cp = cp * r2 - 0.5f;
    cp = cp * r2 + 1.0f;
    float s = (q & 1) ? cp : sp;
    float c = (q & 1) ? sp : cp;
    *s_out = (q & 2) ? -s : s;
    *c_out = ((q + 1) & 2) ? -c : c;
}

static inline float sao_vsigmoidf(float x) { return 1.0f / (1.0f + sao_vexpf(-x)); }

/* Common argument check: returns -1 through sao_err when a pointer is NULL. */
#define SAO_NEED(ctx, op, p)                                                                        \
    do {                                                                                            \
        if (!(p)) return sao_err((ctx), (op), "%s is NULL (pass a buffer of the documented shape)", #p); \
    } while (0)

#endif

/* dtype.c — element types: sizes, names, and the half-precision conversions (bf16, IEEE f16)
 * used by every copy/convert path. Rounding is to nearest, ties to even, as PyTorch does. */
#include "internal.h"
#include <math.h>
#include <string.h>

static const char *names[SAO_DTYPE_COUNT] = {"f32", "f64", "bf16", "f16", "i32", "i64", "u8"};
static const size_t sizes[SAO_DTYPE_COUNT] = {4, 8, 2, 2, 4, 8, 1};

size_t sao_dtype_size(int dtype) {
    return (dtype >= 0 && dtype < SAO_DTYPE_COUNT) ? sizes[dtype] : 0;
}

const char *sao_dtype_name(int dtype) {
    return (dtype >= 0 && dtype < SAO_DTYPE_COUNT) ? names[dtype] : "?";
}

int sao_dtype_from_name(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < SAO_DTYPE_COUNT; i++)
        if (strcmp(name, names[i]) == 0) return i;
    /* aliases, including the safetensors spellings */
    static const struct { const char *n; int d; } alias[] = {
        {"float32", SAO_F32}, {"float", SAO_F32}, {"F32", SAO_F32},
        {"float64", SAO_F64}, {"double", SAO_F64}, {"F64", SAO_F64},
        {"bfloat16", SAO_BF16}, {"BF16", SAO_BF16},
        {"float16", SAO_F16}, {"half", SAO_F16}, {"F16", SAO_F16},
        {"int32", SAO_I32}, {"I32", SAO_I32}, {"int64", SAO_I64}, {"long", SAO_I64}, {"I64", SAO_I64},
        {"uint8", SAO_U8}, {"byte", SAO_U8}, {"U8", SAO_U8}, {"bool", SAO_U8}, {"BOOL", SAO_U8},
    };
    for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++)
        if (strcmp(name, alias[i].n) == 0) return alias[i].d;
    return -1;
}

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float sao_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t sao_f32_to_bf16(float f) {
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  /* quiet NaN */
    uint32_t lsb = (u >> 16) & 1u;
    u += 0x7fffu + lsb;
    return (uint16_t)(u >> 16);
}

float sao_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0) {
        if (man == 0) return u2f(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 31) return u2f(sign | 0x7f800000u | (man << 13));
    return u2f(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t sao_f32_to_f16(float f) {
    uint32_t u = f2u(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;                 /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00u;                /* overflow (>= 65520) -> inf */
    if (a < 0x38800000u) {                                      /* below 2^-14: subnormal or 0 */
        /* round(|f| * 2^24) with ties to even, done in float exactly via the magic-number add */
        float v = u2f(a) + 0.5f;                                /* 0.5 = 2^-1: ulp there is 2^-24 */
        return sign | (uint16_t)(f2u(v) - f2u(0.5f));
    }
    uint32_t lsb = (a >> 13) & 1u;
    a += 0xc8000fffu + lsb;                                     /* rebias exponent (-112<<23) + round */
    return sign | (uint16_t)(a >> 13);
}

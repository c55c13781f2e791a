// cuda_bf16.h (spec/support/cuda_emu): bf16 as its 16 bits, rounded to nearest even; read back exactly.
#pragma once
#include "cuda_runtime.h"
struct __nv_bfloat16 { uint16_t x; };
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return {(uint16_t)((u >> 16) | 0x40)};   // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);                                              // round to nearest even
    return {(uint16_t)(u >> 16)};
}
inline float emu_bf16_to_float(__nv_bfloat16 b) {   // exact: bf16 is fp32's upper half
    uint32_t u = (uint32_t)b.x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

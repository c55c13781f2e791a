// mma.h (spec/support/cuda_emu): the WMMA subset kernels/cuda uses (kernels/cuda/attention_mma.cu):
// 16x16x16 fragments, bf16 operands (matrix_a / matrix_b, row- or column-major), fp32
// accumulators; fill_fragment, load_matrix_sync, mma_sync, store_matrix_sync.
//
// The model: a fragment holds the whole 16x16 tile in every lane (x[] is the tile, row-major,
// num_elements = 256), so a kernel that loops over x[] touches every element once per lane and
// cannot depend on CUDA's unspecified element-to-lane mapping. The warp-wide calls are warp
// barriers (a lane skipping one deadlocks or is reported, as on a GPU) and check what WMMA
// requires: the pointer 256-bit (32-byte) aligned, ldm a multiple of 8 elements for bf16 and of 4
// for float. Ordering, modelled so that a missing __syncwarp / __syncthreads shows:
//   load_matrix_sync   the lane reads the whole tile when it arrives, then waits for the warp (a
//                      lane that loads what other lanes wrote without a barrier in between reads
//                      stale or NaN-filled memory, as lanes running ahead would);
//   store_matrix_sync  waits for the warp, then each lane writes its share (element e by lane
//                      e % 32), so reading what other lanes stored needs a barrier;
//   mma_sync           a barrier, then every lane computes the whole tile: bf16 operands read as
//                      bf16 (exact in fp32), products summed in fp32 in k order onto c.
// A GPU's tensor cores accumulate in their own order (and may keep extra bits): the same values
// to fp32 rounding, not the same bits.
#pragma once
#include "cuda_runtime.h"
#include "cuda_bf16.h"

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class T> struct emu_frag_base {
    enum { num_elements = 256 };
    T x[256];
};
template <class Use, int m, int n, int k, class T, class Layout = void> class fragment;
template <> class fragment<matrix_a, 16, 16, 16, __nv_bfloat16, row_major> : public emu_frag_base<__nv_bfloat16> {};
template <> class fragment<matrix_a, 16, 16, 16, __nv_bfloat16, col_major> : public emu_frag_base<__nv_bfloat16> {};
template <> class fragment<matrix_b, 16, 16, 16, __nv_bfloat16, row_major> : public emu_frag_base<__nv_bfloat16> {};
template <> class fragment<matrix_b, 16, 16, 16, __nv_bfloat16, col_major> : public emu_frag_base<__nv_bfloat16> {};
template <> class fragment<accumulator, 16, 16, 16, float, void> : public emu_frag_base<float> {};

inline int emu_wmma_lane() {
    return (int)((threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31);
}
[[noreturn]] inline void emu_wmma_die(const char *what, const void *p, unsigned ldm) {
    fprintf(stderr, "emu: wmma %s (pointer %p, ldm %u): WMMA needs 256-bit aligned pointers and ldm a multiple "
            "of 8 (bf16) or 4 (float) elements\n", what, p, ldm);
    abort();
}
inline void emu_wmma_check(const char *what, const void *p, unsigned ldm, unsigned multiple) {
    if ((uintptr_t)p % 32 != 0) emu_wmma_die(what, p, ldm);
    if (ldm == 0 || ldm % multiple != 0) emu_wmma_die(what, p, ldm);
}
// element (r, c) of a tile stored with leading dimension ldm
inline size_t emu_wmma_at(bool row, int r, int c, unsigned ldm) {
    return row ? (size_t)r * ldm + c : (size_t)c * ldm + r;
}

template <class Use, class T, class L>
inline void emu_wmma_load(fragment<Use, 16, 16, 16, T, L> &a, const T *p, unsigned ldm, bool row) {
    emu_wmma_check("load_matrix_sync", p, ldm, sizeof(T) == 2 ? 8 : 4);
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) a.x[r * 16 + c] = p[emu_wmma_at(row, r, c, ldm)];
    __syncwarp();
}

inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, __nv_bfloat16, row_major> &a, const __nv_bfloat16 *p, unsigned ldm) { emu_wmma_load(a, p, ldm, true); }
inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, __nv_bfloat16, col_major> &a, const __nv_bfloat16 *p, unsigned ldm) { emu_wmma_load(a, p, ldm, false); }
inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, __nv_bfloat16, row_major> &a, const __nv_bfloat16 *p, unsigned ldm) { emu_wmma_load(a, p, ldm, true); }
inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, __nv_bfloat16, col_major> &a, const __nv_bfloat16 *p, unsigned ldm) { emu_wmma_load(a, p, ldm, false); }
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &a, const float *p, unsigned ldm, layout_t l) {
    emu_wmma_load(a, p, ldm, l == mem_row_major);
}

inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &a, unsigned ldm, layout_t l) {
    emu_wmma_check("store_matrix_sync", p, ldm, 4);
    __syncwarp();
    for (int e = emu_wmma_lane(); e < 256; e += 32) p[emu_wmma_at(l == mem_row_major, e / 16, e % 16, ldm)] = a.x[e];
}

template <class Use, class T, class L> inline void fill_fragment(fragment<Use, 16, 16, 16, T, L> &a, T v) {
    for (int e = 0; e < 256; e++) a.x[e] = v;
}

// d = a b + c (d may be c)
template <class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float> &d,
                     const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA> &a,
                     const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB> &b,
                     const fragment<accumulator, 16, 16, 16, float> &c) {
    __syncwarp();
    float out[256];
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 16; n++) {
            float s = c.x[r * 16 + n];
            for (int k = 0; k < 16; k++) s += emu_bf16_to_float(a.x[r * 16 + k]) * emu_bf16_to_float(b.x[k * 16 + n]);
            out[r * 16 + n] = s;
        }
    for (int e = 0; e < 256; e++) d.x[e] = out[e];
}
}  // namespace wmma
}  // namespace nvcuda

// cudnn_emu_internal.h (spec/support/cuda_emu): what the two halves of the fake cuDNN share,
// cudnn_emu.cpp (handles, legacy convolutions) and cudnn_graph_emu.cpp (the backend API); kernel
// code never includes it.
#pragma once
#include "cudnn.h"

// a handle (cudnnCreate); magic tells a real one from a stray pointer
#define EMU_CUDNN_HANDLE_MAGIC 0x63756e6eu
struct emu_cudnn_handle { unsigned magic; cudaStream_t st; };
inline bool emu_cudnn_handle_ok(const emu_cudnn_handle *h) { return h && h->magic == EMU_CUDNN_HANDLE_MAGIC; }

// "emu: cuDNN: " + the printf-formatted message on stderr, then st (how the fake refuses a call)
cudnnStatus_t emu_cudnn_fail(cudnnStatus_t st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

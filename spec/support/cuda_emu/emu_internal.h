// emu_internal.h (spec/support/cuda_emu): what emu.cpp lends the other fake libraries compiled
// into the emulated backend (cudnn_emu.cpp); kernel code never includes it.
#pragma once
#include "cuda_runtime.h"
#include <functional>
// runs op now, or records it when st is capturing (another stream while capturing invalidates it)
cudaError_t emu_enqueue(cudaStream_t st, std::function<void()> op);
// [p, p + n) lies in the device arena
bool emu_dev_range(const void *p, size_t n);
// an API CUDA refuses while this thread captures: invalidates the capture, returns the error (0 when not capturing)
cudaError_t emu_unsafe();

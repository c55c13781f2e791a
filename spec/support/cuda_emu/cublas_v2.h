// cublas_v2.h (spec/support/cuda_emu): the plain cuBLAS calls kernels/cuda makes, on emu.cpp's GEMM.
#pragma once
#include "cublasLt.h"
typedef struct emu_blas_handle *cublasHandle_t;
cublasStatus_t cublasCreate(cublasHandle_t *);
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t);
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void *, size_t);
cublasStatus_t cublasSgemm(cublasHandle_t, cublasOperation_t, cublasOperation_t, int m, int n, int k, const float *alpha,
                           const float *A, int lda, const float *B, int ldb, const float *beta, float *C, int ldc);
cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t, cublasOperation_t, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType_t, int lda, const void *B, cudaDataType_t, int ldb, const void *beta,
                            void *C, cudaDataType_t, int ldc, cublasComputeType_t, cublasGemmAlgo_t);
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t, cublasOperation_t, cublasOperation_t, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType_t, int lda, long long sA, const void *B,
                            cudaDataType_t, int ldb, long long sB, const void *beta, void *C, cudaDataType_t, int ldc,
                            long long sC, int batch, cublasComputeType_t, cublasGemmAlgo_t);

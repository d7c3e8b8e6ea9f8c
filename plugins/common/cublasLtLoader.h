// cuBLASLt, loaded at run time (dlopen) like cuBLAS (cublasLoader.h), for the one product that needs it: the GEMM
// path's product with the bias in its epilogue (GemmBias: auto's choice on channels-last tensors). Only the entry
// points, enum values and structs used are declared here, as cublasLt.h of CUDA 12 and 13 defines them (checked
// against the header of the nvidia-cublas 13.10 wheel; never vendored).
#pragma once

#include "dcnStatus.h"

#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>
#include <library_types.h>

namespace dcn
{

using CublasLtHandleT = void*;     // cublasLtHandle_t
using CublasLtMatmulDescT = void*; // cublasLtMatmulDesc_t
using CublasLtLayoutT = void*;     // cublasLtMatrixLayout_t
using CublasLtPreferenceT = void*; // cublasLtMatmulPreference_t

// cublasLtMatmulAlgo_t and cublasLtMatmulHeuristicResult_t, as laid out in cublasLt.h.
struct CublasLtAlgo
{
    uint64_t data[8];
};

struct CublasLtHeuristicResult
{
    CublasLtAlgo algo;
    size_t workspaceSize;
    int state; // cublasStatus_t: 0 where the other fields are valid
    float wavesCount;
    int reserved[4];
};

// cublasLtMatmulDescAttributes_t, cublasLtEpilogue_t, cublasLtMatmulPreferenceAttributes_t (the values used).
constexpr int kLtDescTransA = 3;          // int32_t cublasOperation_t
constexpr int kLtDescTransB = 4;          // int32_t cublasOperation_t
constexpr int kLtDescEpilogue = 7;        // uint32_t cublasLtEpilogue_t
constexpr int kLtDescBiasPointer = 8;     // const void*
constexpr int kLtDescBiasDataType = 26;   // int32_t cudaDataType
constexpr uint32_t kLtEpilogueBias = 4;   // D = alpha * op(A) op(B) + beta * C + bias (a value per row of D)
constexpr int kLtPreferenceMaxWorkspace = 1; // uint64_t bytes
constexpr int kLtPreferenceReductionSchemeMask = 3; // uint32_t mask of cublasLtReductionScheme_t

struct CublasLtApi
{
    int (*create)(CublasLtHandleT*);
    int (*descCreate)(CublasLtMatmulDescT*, int computeType, cudaDataType scaleType);
    int (*descDestroy)(CublasLtMatmulDescT);
    int (*descSetAttribute)(CublasLtMatmulDescT, int attribute, void const* value, size_t bytes);
    int (*layoutCreate)(CublasLtLayoutT*, cudaDataType type, uint64_t rows, uint64_t cols, int64_t ld);
    int (*layoutDestroy)(CublasLtLayoutT);
    int (*preferenceCreate)(CublasLtPreferenceT*);
    int (*preferenceDestroy)(CublasLtPreferenceT);
    int (*preferenceSetAttribute)(CublasLtPreferenceT, int attribute, void const* value, size_t bytes);
    int (*algoGetHeuristic)(CublasLtHandleT, CublasLtMatmulDescT, CublasLtLayoutT a, CublasLtLayoutT b,
        CublasLtLayoutT c, CublasLtLayoutT d, CublasLtPreferenceT, int requested, CublasLtHeuristicResult* results,
        int* returned);
    int (*matmul)(CublasLtHandleT, CublasLtMatmulDescT, void const* alpha, void const* a, CublasLtLayoutT aLayout,
        void const* b, CublasLtLayoutT bLayout, void const* beta, void const* c, CublasLtLayoutT cLayout, void* d,
        CublasLtLayoutT dLayout, CublasLtAlgo const* algo, void* workspace, size_t workspaceBytes,
        cudaStream_t stream);
};

// The environment variable that rules cuBLASLt out: "off" makes cublasLtApi() null as if no library loaded (the
// GEMM path's bias then takes the fill where the epilogue was only preferred: how its GPU test reaches that way);
// unset or "on" loads it; any other value is an error (DCN_ERROR_INVALID_ARGUMENT) from threadCublasLtHandle.
constexpr char const* kCublasLtSwitch = "DCN_DEPLOY_CUBLASLT";

// The loaded API, or null when no libcublasLt.so.13/.12 can be opened or kCublasLtSwitch rules it out.
CublasLtApi const* cublasLtApi();

// This thread's cuBLASLt handle for the current device, created on first use (never destroyed, as the C ABI's
// cuBLAS handles: threadCublasHandle). Fails where cuBLASLt does not load (DCN_ERROR_UNSUPPORTED, saying why; a
// bad kCublasLtSwitch value: DCN_ERROR_INVALID_ARGUMENT) or cublasLtCreate fails.
Status threadCublasLtHandle(CublasLtHandleT& handle);

} // namespace dcn

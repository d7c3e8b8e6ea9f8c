// cuBLAS, loaded at run time (dlopen), for the kernels' GEMM path.
//
// The libraries never link cuBLAS: the TensorRT plugin and the ctypes kernels library stay loadable on machines
// without it (CI, a slim TensorRT runtime image), and the GEMM path reports itself unavailable there, so the
// automatic choice falls back to the fused kernel. Only the few entry points used are declared here; their
// signatures and enum values are cuBLAS's stable v2 API (cublas_api.h, CUDA 12 and 13).
#pragma once

#include "dcnStatus.h"

#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>
#include <library_types.h>
#include <string>

namespace dcn
{

using CublasHandleT = void*; // cublasHandle_t

struct CublasApi
{
    int (*create)(CublasHandleT*);
    int (*destroy)(CublasHandleT);
    int (*setStream)(CublasHandleT, cudaStream_t);
    int (*setWorkspace)(CublasHandleT, void*, size_t);
    int (*setMathMode)(CublasHandleT, int);
    int (*gemmStridedBatchedEx)(CublasHandleT, int transa, int transb, int m, int n, int k, void const* alpha,
        void const* a, cudaDataType aType, int lda, long long strideA, void const* b, cudaDataType bType, int ldb,
        long long strideB, void const* beta, void* c, cudaDataType cType, int ldc, long long strideC, int batchCount,
        int computeType, int algo);
};

// fn = the symbol `name` of a dlopen'ed library; false (and fn null) where it has none. For the cuBLAS and cuBLASLt
// loaders.
bool resolveSymbol(void* library, char const* name, void*& fn);

template <typename Fn>
bool resolveSymbol(void* library, char const* name, Fn& fn)
{
    void* found = nullptr;
    bool const ok = resolveSymbol(library, name, found);
    fn = reinterpret_cast<Fn>(found);
    return ok;
}

// The loaded API, or null when no libcublas.so.13/.12 can be opened (why: cublasUnavailableReason()).
CublasApi const* cublasApi();
char const* cublasUnavailableReason();

// One cuBLAS handle for one device, created on first use and destroyed with this object (on its device).
// Not thread-safe: each owner (a plugin instance, a thread) holds its own.
class CublasHandle
{
public:
    // rememberFailure: a failed cublasCreate is not retried (the plugin's handle: see prepare). The C ABI's
    // per-thread handles retry, so a transient failure (memory, at the first call) does not last the thread's life.
    explicit CublasHandle(bool rememberFailure = false)
        : mRememberFailure(rememberFailure)
    {
    }
    ~CublasHandle();
    CublasHandle(CublasHandle const&) = delete;
    CublasHandle& operator=(CublasHandle const&) = delete;

    // Create the handle for the current device now (it allocates device memory: do it outside stream capture).
    // With rememberFailure, a creation that failed is not retried: later calls return the same failure at once, so
    // the owner falls back (AUTO runs the fused kernel) instead of calling cublasCreate on every launch, maybe under
    // graph capture.
    Status prepare();
    // The handle for the current device (created if need be), bound to stream, with workspace as cuBLAS's.
    Status bind(cudaStream_t stream, void* workspace, size_t workspaceBytes, CublasHandleT& handle);

private:
    CublasHandleT mHandle = nullptr;
    int mDevice = -1;
    bool mRememberFailure = false;
    std::string mCreateFailure; // cublasCreate's failure, when it failed and mRememberFailure (prepare)
};

// This thread's handle (for callers that own none, such as the C ABI).
CublasHandle& threadCublasHandle();

} // namespace dcn

// Launchers of the deformable-convolution CUDA kernels (C++ side; the C ABI wraps them in deformConvKernel.cu).
#pragma once

#include "dcnStatus.h"
#include "deformConvMath.h"

#include <cstddef>
#include <cuda_runtime_api.h>

namespace dcn
{

class CublasHandle;

// Which kernel serves (geo, dtype, algo) on the current device; DCN_ALGO_AUTO resolved. Fails for impossible pairs
// (float64 with the fused kernel, the GEMM path without a loadable cuBLAS).
Status resolveAlgo(DeformConvGeometry const& geo, int32_t dtype, int32_t algo, int32_t& resolved);

// Workspace bytes the launch needs: the GEMM path's column buffer (capped, the batch runs in chunks) plus cuBLAS's
// workspace; the fused kernel's re-laid-out weights; 0 for the direct kernel. For DCN_ALGO_AUTO, the most any
// choice needs, so a plan made where cuBLAS loads still fits a run where it does not.
size_t deformConvWorkspaceSize(DeformConvGeometry const& geo, int32_t dtype, int32_t algo);

// Enqueue the forward on stream. Pointers are device pointers to contiguous NCHW tensors of one dtype; bias and
// mask may be null. cublas: the caller's cuBLAS handle for the GEMM path (a TensorRT plugin owns one), or null
// for this thread's own. Returns an error status (never throws) for bad arguments or a CUDA launch error.
Status launchDeformConv(DeformConvGeometry const& geo, int32_t dtype, int32_t algo, void const* input,
    void const* offset, void const* weight, void const* bias, void const* mask, void* output, void* workspace,
    size_t workspaceBytes, cudaStream_t stream, CublasHandle* cublas = nullptr);

// The GEMM path (deformConvGemm.cu).
bool gemmPathAvailable();
size_t gemmWorkspaceBytes(DeformConvGeometry const& geo, int32_t dtype);
Status launchGemmPath(DeformConvGeometry const& geo, int32_t dtype, void const* input, void const* offset,
    void const* weight, void const* bias, void const* mask, void* output, void* workspace, cudaStream_t stream,
    CublasHandle* cublas);

} // namespace dcn

// Launchers of the deformable-convolution CUDA kernels (C++ side; the C ABI wraps them in deformConvKernel.cu).
#pragma once

#include "dcnStatus.h"
#include "deformConvMath.h"

#include <cstddef>
#include <cuda_runtime_api.h>

namespace dcn
{

// Which kernel serves (geo, dtype, algo) on the current device; DCN_ALGO_AUTO resolved. Fails for impossible pairs
// (float64 with the fused kernel).
Status resolveAlgo(DeformConvGeometry const& geo, int32_t dtype, int32_t algo, int32_t& resolved);

// Workspace bytes the launch needs: the fused kernel's re-laid-out weights (OC*C/group*kH*kW elements), 0 for the
// direct kernel. Neither kernel builds a column buffer.
size_t deformConvWorkspaceSize(DeformConvGeometry const& geo, int32_t dtype, int32_t algo);

// Enqueue the forward on stream. Pointers are device pointers to contiguous NCHW tensors of one dtype; bias and
// mask may be null. Returns an error status (never throws) for bad arguments or a CUDA launch error.
Status launchDeformConv(DeformConvGeometry const& geo, int32_t dtype, int32_t algo, void const* input,
    void const* offset, void const* weight, void const* bias, void const* mask, void* output, void* workspace,
    size_t workspaceBytes, cudaStream_t stream);

} // namespace dcn

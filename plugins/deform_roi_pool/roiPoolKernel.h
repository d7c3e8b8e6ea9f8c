// Launchers of the deformable RoI pooling CUDA kernels (C++ side; the C ABI wraps them in roiPoolKernel.cu).
#pragma once

#include "dcnStatus.h"
#include "roi_pool_kernels.h"

#include <cuda_runtime_api.h>

namespace dcn
{

// Enqueue on stream; device pointers to contiguous tensors of one dtype (offset/trans may be null). Checks desc.
Status launchDeformRoiPool(dcn_deform_roi_pool_desc const& d, int32_t dtype, void const* input, void const* rois,
    void const* offset, void* output, cudaStream_t stream);
Status launchDeformPsroiPool(dcn_deform_psroi_pool_desc const& d, int32_t dtype, void const* input, void const* rois,
    void const* trans, void* output, cudaStream_t stream);

} // namespace dcn

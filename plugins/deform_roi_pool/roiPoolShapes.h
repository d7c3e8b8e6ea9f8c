// Validation of the deformable RoI pooling descriptors (plain C++, no CUDA or TensorRT types).
#pragma once

#include "dcnStatus.h"
#include "roi_pool_kernels.h"

namespace dcn
{

// Every field in range; names the field, the expected and the actual value otherwise.
Status checkRoiPool(dcn_deform_roi_pool_desc const& d);
Status checkPsroiPool(dcn_deform_psroi_pool_desc const& d);

} // namespace dcn

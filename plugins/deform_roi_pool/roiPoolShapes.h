// Validation of the deformable RoI pooling descriptors (plain C++, no CUDA or TensorRT types).
#pragma once

#include "dcnStatus.h"
#include "roiPoolMath.h"
#include "roi_pool_kernels.h"

#include <cstdint>

namespace dcn
{

// Every field in range; names the field, the expected and the actual value otherwise.
Status checkRoiPool(dcn_deform_roi_pool_desc const& d);
Status checkPsroiPool(dcn_deform_psroi_pool_desc const& d);

// The float fields: spatial_scale finite and > 0, gamma / trans_std finite (as dcn_deploy.ops.roi_spec.check_float).
Status checkRoiPoolFloats(char const* op, float spatialScale, char const* shiftName, float shift);

// `op: name must be from minimum to maximum, got value` unless value is in [minimum, maximum].
Status inRange(char const* op, char const* name, int64_t value, int64_t minimum, int64_t maximum = INT32_MAX);

} // namespace dcn

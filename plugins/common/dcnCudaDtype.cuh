// ElementTraits for CUDA's half types (nvcc only): half and bfloat16 accumulate in float32.
#pragma once

#include "dcnDtype.h"
#include "dcnStatus.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace dcn
{

template <>
struct ElementTraits<__half>
{
    using Acc = float;
    static DCN_HD float toAcc(__half v) { return __half2float(v); }
    static DCN_HD __half fromAcc(float v) { return __float2half_rn(v); }
};

template <>
struct ElementTraits<__nv_bfloat16>
{
    using Acc = float;
    static DCN_HD float toAcc(__nv_bfloat16 v) { return __bfloat162float(v); }
    static DCN_HD __nv_bfloat16 fromAcc(float v) { return __float2bfloat16_rn(v); }
};

// f(T{}) for the element type of a dcn_dtype (float, double, __half, __nv_bfloat16): its Status, or
// unsupportedDtype for any other value.
template <typename F>
Status withElementType(int32_t dtype, F&& f)
{
    switch (dtype)
    {
    case DCN_FLOAT32: return f(float());
    case DCN_FLOAT64: return f(double());
    case DCN_FLOAT16: return f(__half());
    case DCN_BFLOAT16: return f(__nv_bfloat16());
    default: return Status::unsupportedDtype(dtype);
    }
}

} // namespace dcn

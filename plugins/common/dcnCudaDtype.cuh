// ElementTraits for CUDA's half types (nvcc only): half and bfloat16 accumulate in float32.
#pragma once

#include "dcnDtype.h"

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

} // namespace dcn

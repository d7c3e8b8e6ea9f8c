// ElementTraits for CUDA's half types (nvcc only): half and bfloat16 accumulate in float32.
#pragma once

#include "dcnDtype.h"
#include "dcnStatus.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <utility>

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

// f(T{}) for the element type of a dcn_dtype (float, double, __half, __nv_bfloat16): its Status, or refuse()'s for
// any other value. A kernel that takes only some of the four refuses the rest inside f, under if constexpr (so no
// kernel is instantiated for them), usually with the same refuse.
template <typename F, typename Refuse>
Status withElementType(int32_t dtype, F&& f, Refuse&& refuse)
{
    switch (dtype)
    {
    case DCN_FLOAT32: return f(float());
    case DCN_FLOAT64: return f(double());
    case DCN_FLOAT16: return f(__half());
    case DCN_BFLOAT16: return f(__nv_bfloat16());
    default: return refuse();
    }
}

// The same, refusing a value outside dcn_dtype with unsupportedDtype.
template <typename F>
Status withElementType(int32_t dtype, F&& f)
{
    return withElementType(dtype, std::forward<F>(f), [dtype] { return Status::unsupportedDtype(dtype); });
}

} // namespace dcn

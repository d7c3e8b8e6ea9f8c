// The direct deformable-convolution kernel: one thread per output element (forward, v1/v2, groups, offset groups,
// asymmetric padding), from the per-sample arithmetic in deformConvMath.h. Simple; the correctness baseline, and
// the better choice for depth-wise-like layers (few output channels per group) where a matrix product has nothing
// to share. Every dtype, float64 included. Which kernel runs is decided in deformConvLaunch.cu.
#include "dcnCudaDtype.cuh"
#include "dcnCudaStatus.h"
#include "dcnGridStride.h"
#include "deformConvKernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

namespace dcn
{

namespace
{

// ---------------------------------------------------------------------------------------------------------------
// Direct kernel: one thread per output element (n, o, y, x).
template <typename T>
__global__ void __launch_bounds__(kGridStrideThreads) deformConvDirectKernel(DeformConvGeometry const geo,
    T const* __restrict__ input, T const* __restrict__ offset, T const* __restrict__ weight,
    T const* __restrict__ bias, T const* __restrict__ mask, T* __restrict__ output, int64_t const total)
{
    using Acc = typename ElementTraits<T>::Acc;
    dcn_deform_conv_desc const& d = geo.d;
    int64_t const plane = int64_t(d.height) * d.width;
    int32_t const kernelPoints = geo.kernelPoints;
    int32_t const cg = geo.channelsPerGroup;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += int64_t(gridDim.x) * blockDim.x)
    {
        int32_t const x = int32_t(idx % geo.outW);
        int64_t rest = idx / geo.outW;
        int32_t const y = int32_t(rest % geo.outH);
        rest /= geo.outH;
        int32_t const o = int32_t(rest % d.out_channels);
        int32_t const n = int32_t(rest / d.out_channels);
        int32_t const g = o / geo.outChannelsPerGroup;
        T const* w = weight + int64_t(o) * cg * kernelPoints;
        Acc acc = bias ? ElementTraits<T>::toAcc(bias[o]) : Acc(0);
        for (int32_t kp = 0; kp < kernelPoints; ++kp)
        {
            int32_t cachedGroup = -1;
            BilinearTaps<Acc> taps;
            for (int32_t c = 0; c < cg; ++c)
            {
                int32_t const cin = g * cg + c;
                int32_t const og = cin / geo.channelsPerOffsetGroup;
                if (og != cachedGroup) // channels of one offset group share the sample position
                {
                    taps = kernelPointTaps<Acc>(geo, offset, mask, n, og, kp, y, x);
                    cachedGroup = og;
                }
                Acc const v = sampleTaps<Acc>(input + (int64_t(n) * d.in_channels + cin) * plane, taps);
                acc += ElementTraits<T>::toAcc(w[int64_t(c) * kernelPoints + kp]) * v;
            }
        }
        output[idx] = ElementTraits<T>::fromAcc(acc);
    }
}

template <typename T>
Status launchDirect(DeformConvGeometry const& geo, void const* input, void const* offset, void const* weight,
    void const* bias, void const* mask, void* output, cudaStream_t stream)
{
    int64_t const total = int64_t(geo.d.batch) * geo.d.out_channels * geo.outH * geo.outW;
    deformConvDirectKernel<T><<<gridStrideBlocks(total), kGridStrideThreads, 0, stream>>>(geo, static_cast<T const*>(input),
        static_cast<T const*>(offset), static_cast<T const*>(weight), static_cast<T const*>(bias),
        static_cast<T const*>(mask), static_cast<T*>(output), total);
    return launchStatus("the direct deformable-convolution kernel");
}

} // namespace

Status launchDirectPath(DeformConvGeometry const& geo, int32_t dtype, void const* input, void const* offset,
    void const* weight, void const* bias, void const* mask, void* output, cudaStream_t stream)
{
    switch (dtype)
    {
    case DCN_FLOAT32: return launchDirect<float>(geo, input, offset, weight, bias, mask, output, stream);
    case DCN_FLOAT64: return launchDirect<double>(geo, input, offset, weight, bias, mask, output, stream);
    case DCN_FLOAT16: return launchDirect<__half>(geo, input, offset, weight, bias, mask, output, stream);
    case DCN_BFLOAT16: return launchDirect<__nv_bfloat16>(geo, input, offset, weight, bias, mask, output, stream);
    default:
        return Status::unsupportedDtype(dtype);
    }
}

} // namespace dcn

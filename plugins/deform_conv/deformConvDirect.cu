// The direct deformable-convolution kernel: one thread per block of output channels at one pixel (forward, v1/v2,
// groups, offset groups, asymmetric padding), from the per-sample arithmetic in deformConvMath.h. Simple; the
// correctness baseline, and the better choice for depth-wise-like layers (few output channels per group) where a
// matrix product has nothing to share. Every dtype, float64 included. Which kernel runs is decided in deformConvLaunch.cu.
#include "dcnCudaDtype.cuh"
#include "dcnCudaStatus.h"
#include "dcnGridStride.h"
#include "deformConvDirectBlock.h"
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
// Direct kernel: one thread per work item (n, block of output channels, y, x), x fastest so that a warp's
// offset, mask and output accesses run along a row (deformConvDirectBlock.h).
template <typename T>
__global__ void __launch_bounds__(kGridStrideThreads) deformConvDirectKernel(DeformConvGeometry const geo,
    T const* __restrict__ input, T const* __restrict__ offset, T const* __restrict__ weight,
    T const* __restrict__ bias, T const* __restrict__ mask, T* __restrict__ output, int64_t const total)
{
    int32_t const blocks = directBlocks(geo);
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += int64_t(gridDim.x) * blockDim.x)
    {
        int32_t const x = int32_t(idx % geo.outW);
        int64_t rest = idx / geo.outW;
        int32_t const y = int32_t(rest % geo.outH);
        rest /= geo.outH;
        int32_t const block = int32_t(rest % blocks);
        int32_t const n = int32_t(rest / blocks);
        directOutputBlock<T>(geo, input, offset, weight, bias, mask, output, n, block, y, x);
    }
}

template <typename T>
Status launchDirect(DeformConvGeometry const& geo, void const* input, void const* offset, void const* weight,
    void const* bias, void const* mask, void* output, cudaStream_t stream)
{
    int64_t const total = int64_t(geo.d.batch) * directBlocks(geo) * geo.outH * geo.outW;
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

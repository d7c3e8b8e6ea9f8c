// The direct deformable-convolution kernel: one thread per block of output channels at one pixel (forward, v1/v2,
// groups, offset groups, asymmetric padding), from the per-sample arithmetic in deformConvMath.h. Simple; the
// correctness baseline, and the better choice for depth-wise-like layers (few output channels per group) where a
// matrix product has nothing to share. Every dtype, float64 included. Which kernel runs is decided in
// deformConvLaunch.cu. Also its variant over a channels-last copy of the input, which serves depth-wise layers by
// default (GemmOptions::directChannelsLast; DCN_DEPLOY_DIRECT_LAYOUT=nchw in the C ABI turns it off).
#include "dcnCudaDtype.cuh"
#include "dcnCudaStatus.h"
#include "dcnGridStride.h"
#include "deformConvDirectBlock.h"
#include "deformConvKernel.h"
#include "deformConvRelayout.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
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
    deformConvDirectKernel<T><<<gridStrideBlocks(total), kGridStrideThreads, 0, stream>>>(geo,
        static_cast<T const*>(input), static_cast<T const*>(offset), static_cast<T const*>(weight),
        static_cast<T const*>(bias), static_cast<T const*>(mask), static_cast<T*>(output), total);
    return launchStatus("the direct deformable-convolution kernel");
}

// The channels-last direct kernel (depth-wise layers): one thread per item of depthwiseItem (ChannelsLastOut: its
// output channels-last too).
template <typename T, int Vector, bool ChannelsLastOut>
__global__ void __launch_bounds__(kGridStrideThreads) depthwiseChannelsLastKernel(DeformConvGeometry const geo,
    T const* __restrict__ nhwc, T const* __restrict__ offset, T const* __restrict__ weight,
    T const* __restrict__ bias, T const* __restrict__ mask, T* __restrict__ output, int32_t const n0,
    int64_t const total)
{
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += int64_t(gridDim.x) * blockDim.x)
        depthwiseItem<T, Vector, ChannelsLastOut>(geo, nhwc, offset, weight, bias, mask, output, n0, idx);
}

// Per chunk of images: the input to channels-last in the workspace, then the items of those images. With
// channelsLastTensors the input already is channels-last (and the output is written so): one launch over the batch,
// no workspace.
template <typename T>
Status launchDirectChannelsLast(DeformConvGeometry const& geo, T const* input, T const* offset, T const* weight,
    T const* bias, T const* mask, T* output, void* workspace, size_t budget, bool channelsLastTensors,
    cudaStream_t stream)
{
    int32_t const vector = depthwiseVectorWidth(geo, sizeof(T));
    int32_t const images = channelsLastTensors ? geo.d.batch : directChannelsLastImages(geo, sizeof(T), budget);
    T* nhwc = static_cast<T*>(workspace);
    for (int32_t n0 = 0; n0 < geo.d.batch; n0 += images)
    {
        int32_t const count = std::min(images, geo.d.batch - n0);
        Status status = channelsLastTensors ? Status::success()
                                            : launchChannelsLast<T>(geo, input, nhwc, n0, count, stream);
        if (!status.ok())
            return status;
        T const* source = channelsLastTensors ? input : nhwc;
        int64_t const total = depthwiseItems(geo, count, vector);
        bool launched = false;
        withVectorWidth(vector, [&](auto width) {
            // Only the widths depthwiseVectorWidth can pick (2 up to 16 bytes' worth): no kernels for the others
            // (float with 8, double with 4 or 8, any type with 1), which would never run.
            constexpr int kVector = decltype(width)::value;
            if constexpr (kVector >= 2 && kVector * sizeof(T) <= 16)
            {
                unsigned const blocks = gridStrideBlocks(total);
                if (channelsLastTensors)
                    depthwiseChannelsLastKernel<T, kVector, true><<<blocks, kGridStrideThreads, 0, stream>>>(
                        geo, source, offset, weight, bias, mask, output, n0, total);
                else
                    depthwiseChannelsLastKernel<T, kVector, false><<<blocks, kGridStrideThreads, 0, stream>>>(
                        geo, source, offset, weight, bias, mask, output, n0, total);
                launched = true;
            }
        });
        if (!launched) // directChannelsLastRefusal turns such layers away before this
            return Status::invalid("the channels-last direct kernel has no instance for vectors of "
                + std::to_string(vector) + " elements of " + std::to_string(sizeof(T)) + " bytes");
        status = launchStatus("the channels-last direct kernel");
        if (!status.ok())
            return status;
    }
    return Status::success();
}

} // namespace

Status launchDirectChannelsLastPath(DeformConvGeometry const& geo, int32_t dtype, void const* input,
    void const* offset, void const* weight, void const* bias, void const* mask, void* output, void* workspace,
    size_t budget, bool channelsLastTensors, cudaStream_t stream)
{
    return withElementType(dtype, [&](auto tag) {
        using T = decltype(tag);
        return launchDirectChannelsLast<T>(geo, static_cast<T const*>(input), static_cast<T const*>(offset),
            static_cast<T const*>(weight), static_cast<T const*>(bias), static_cast<T const*>(mask),
            static_cast<T*>(output), workspace, budget, channelsLastTensors, stream);
    });
}

Status launchDirectPath(DeformConvGeometry const& geo, int32_t dtype, void const* input, void const* offset,
    void const* weight, void const* bias, void const* mask, void* output, cudaStream_t stream)
{
    return withElementType(dtype, [&](auto tag) {
        return launchDirect<decltype(tag)>(geo, input, offset, weight, bias, mask, output, stream);
    });
}

} // namespace dcn

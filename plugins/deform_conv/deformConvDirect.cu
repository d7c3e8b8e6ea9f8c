// The direct deformable-convolution kernel: one thread per block of output channels at one pixel (forward, v1/v2,
// groups, offset groups, asymmetric padding), from the per-sample arithmetic in deformConvMath.h. Simple; the
// correctness baseline, and the better choice for depth-wise-like layers (few output channels per group) where a
// matrix product has nothing to share. Every dtype, float64 included. Which kernel runs is decided in
// deformConvLaunch.cu. Also its variant over a channels-last copy of the input, which serves depth-wise layers by
// default, and layers of small groups (2 to 16 channels per group in and out, at most 64 bytes) where auto takes no
// matrix product (GemmOptions::directChannelsLast; DCN_DEPLOY_DIRECT_LAYOUT=nchw in the C ABI turns it off).
#include "dcnCudaDtype.cuh"
#include "dcnCudaStatus.h"
#include "dcnGridStride.h"
#include "deformConvDirectBlock.h"
#include "deformConvDirectChannelsLast.h"
#include "deformConvDirectSharedTaps.h" // sharedTapsRefusal
#include "deformConvGroupMma.h"         // groupMmaRefusal
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

// The channels-last direct kernel for Cpg > 1 channels per group: a block of kGridStrideThreads threads takes
// directVectorsAcross(vectors) neighbouring channel items (grid y) of one image (grid z, from n0) at consecutive
// pixels (grid x), the items fastest as in depthwiseItem; first it fills its items' weight tables
// (fillDirectWeightTable, Acc) in shared memory, which every item then reads (the same entry across a warp: a
// broadcast), instead of Cpg weights of T per channel and kernel point from global memory. The body of both grouped
// kernels below.
template <typename T, int Vector, int Cpg, bool ChannelsLastOut>
__device__ __forceinline__ void groupedChannelsLastBlock(DeformConvGeometry const& geo, T const* __restrict__ nhwc,
    T const* __restrict__ offset, T const* __restrict__ weight, T const* __restrict__ bias,
    T const* __restrict__ mask, T* __restrict__ output, int32_t const n0)
{
    using Acc = typename ElementTraits<T>::Acc;
    extern __shared__ __align__(16) unsigned char tableBytes[];
    Acc* const tables = reinterpret_cast<Acc*>(tableBytes);
    int32_t const across = directVectorsAcross(geo.d.in_channels / Vector);
    int32_t const entries = geo.kernelPoints * Vector * Cpg;
    int32_t const firstChannel = int32_t(blockIdx.y) * across * Vector;
    for (int32_t side = 0; side < across; ++side)
        fillDirectWeightTable<T, Vector, Cpg>(geo, weight, firstChannel + side * Vector, tables + side * entries,
            int32_t(threadIdx.x), int32_t(blockDim.x));
    __syncthreads();
    int32_t const side = across == 2 ? int32_t(threadIdx.x & 1) : 0;
    int64_t const pixel = int64_t(blockIdx.x) * (blockDim.x / across) + (across == 2 ? threadIdx.x >> 1 : threadIdx.x);
    if (pixel >= int64_t(geo.outH) * geo.outW)
        return;
    int32_t const y = int32_t(pixel / geo.outW);
    int32_t const x = int32_t(pixel - int64_t(y) * geo.outW);
    channelsLastDirectItem<T, Vector, Cpg, ChannelsLastOut>(geo, nhwc, offset, weight, tables + side * entries, bias,
        mask, output, n0, int32_t(blockIdx.z), firstChannel + side * Vector, y, x);
}

template <typename T, int Vector, int Cpg, bool ChannelsLastOut>
__global__ void __launch_bounds__(kGridStrideThreads) groupedChannelsLastKernel(DeformConvGeometry const geo,
    T const* __restrict__ nhwc, T const* __restrict__ offset, T const* __restrict__ weight,
    T const* __restrict__ bias, T const* __restrict__ mask, T* __restrict__ output, int32_t const n0)
{
    groupedChannelsLastBlock<T, Vector, Cpg, ChannelsLastOut>(geo, nhwc, offset, weight, bias, mask, output, n0);
}

// Wide items of a half type (groups of 16) and float32's of 64 bytes (groups of 16: groupedKernelFor) in blocks told to
// fit two a SM, so up to 128 registers: on sm_90 ptxas then issues the half types' eight 16-byte gathers of a kernel
// point together (128 registers), where under the plain bound it took 110 and split them into two waves, each waiting
// on its loads (SASS, session 36); float32's sixteen in two waves of 12 and 4 (13 and 3 with a channels-last output;
// 128 registers, 16 bytes of spill outside the kernel-point loop) where the plain bound took 102 registers and four
// waves of 4 (session 39). Two blocks a SM either way. The other instances keep the plain bound: an explicit minimum
// changes their code too (float32 groups of 8 72 -> 112 registers, three blocks a SM -> two), and theirs is the timed
// code.
template <typename T, int Vector, int Cpg, bool ChannelsLastOut>
__global__ void __launch_bounds__(kGridStrideThreads, 2) wideChannelsLastKernel(DeformConvGeometry const geo,
    T const* __restrict__ nhwc, T const* __restrict__ offset, T const* __restrict__ weight,
    T const* __restrict__ bias, T const* __restrict__ mask, T* __restrict__ output, int32_t const n0)
{
    groupedChannelsLastBlock<T, Vector, Cpg, ChannelsLastOut>(geo, nhwc, offset, weight, bias, mask, output, n0);
}

// The grouped kernel of an instance: wideChannelsLastKernel for a half type's wide items and float32's of 64 bytes,
// else groupedChannelsLastKernel (only the one chosen is instantiated).
template <typename T, int Vector, int Cpg, bool ChannelsLastOut>
constexpr auto groupedKernelFor()
{
    if constexpr ((sizeof(T) == 2 && Vector * sizeof(T) > 16) || (sizeof(T) == 4 && Vector * sizeof(T) > 32))
        return &wideChannelsLastKernel<T, Vector, Cpg, ChannelsLastOut>;
    else
        return &groupedChannelsLastKernel<T, Vector, Cpg, ChannelsLastOut>;
}

// The items of `count` images from n0 of `source` (channels-last): the grid-stride kernel for depth-wise layers,
// the grouped kernel (in launches of at most 65535 images, its grid z) for the others.
template <typename T, int Vector, int Cpg, bool ChannelsLastOut>
void launchChannelsLastItems(DeformConvGeometry const& geo, T const* source, T const* offset, T const* weight,
    T const* bias, T const* mask, T* output, int32_t n0, int32_t count, cudaStream_t stream)
{
    if constexpr (Cpg == 1)
    {
        int64_t const total = depthwiseItems(geo, count, Vector);
        depthwiseChannelsLastKernel<T, Vector, ChannelsLastOut><<<gridStrideBlocks(total), kGridStrideThreads, 0,
            stream>>>(geo, source, offset, weight, bias, mask, output, n0, total);
    }
    else
    {
        int32_t const vectors = geo.d.in_channels / Vector;
        int32_t const across = directVectorsAcross(vectors);
        int64_t const pixelsPerBlock = kGridStrideThreads / across;
        unsigned const pixelBlocks = unsigned((int64_t(geo.outH) * geo.outW + pixelsPerBlock - 1) / pixelsPerBlock);
        size_t const tableBytes = directWeightTableBytes(geo, sizeof(T));
        auto const kernel = groupedKernelFor<T, Vector, Cpg, ChannelsLastOut>();
        for (int32_t first = 0; first < count; first += 65535)
        {
            dim3 const grid(pixelBlocks, unsigned(vectors / across), unsigned(std::min(count - first, 65535)));
            kernel<<<grid, kGridStrideThreads, tableBytes, stream>>>(geo,
                source + int64_t(first) * inputImageElements(geo), offset, weight, bias, mask, output, n0 + first);
        }
    }
}

// Per chunk of images: the input to channels-last in the workspace, then the items of those images. With
// channelsLastTensors the input already is channels-last (and the output is written so): one launch over the batch,
// no workspace. sharedTaps: the items in the shared-taps kernel's blocks (deformConvDirectSharedTaps.cu) where
// sharedTapsRefusal passes; groupMma: the tensor-core group kernel (deformConvGroupMma.cu) where groupMmaRuns (its
// refusal passes on an sm_80 or newer GPU).
template <typename T>
Status launchDirectChannelsLast(DeformConvGeometry const& geo, int32_t dtype, T const* input, T const* offset,
    T const* weight, T const* bias, T const* mask, T* output, void* workspace, size_t budget, bool channelsLastTensors,
    bool sharedTaps, bool groupMma, cudaStream_t stream)
{
    bool const mmaGroups = groupMma && groupMmaRuns(geo, dtype);
    bool const shareTaps = !mmaGroups && sharedTaps && sharedTapsRefusal(geo, sizeof(T)).empty();
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
        if (mmaGroups || shareTaps) // the kernels of their own files (deformConvKernel.h)
        {
            auto const launch = mmaGroups ? launchGroupMmaItems : launchSharedTapsItems;
            status = launch(geo, dtype, source, offset, weight, bias, mask, output, n0, count, channelsLastTensors,
                stream);
            if (!status.ok())
                return status;
            continue;
        }
        bool const launched = withChannelsLastDirectInstance<T>(geo, [&](auto width, auto group) {
            constexpr int kVector = decltype(width)::value;
            constexpr int kCpg = decltype(group)::value;
            if (channelsLastTensors)
                launchChannelsLastItems<T, kVector, kCpg, true>(geo, source, offset, weight, bias, mask, output, n0,
                    count, stream);
            else
                launchChannelsLastItems<T, kVector, kCpg, false>(geo, source, offset, weight, bias, mask, output, n0,
                    count, stream);
        });
        if (!launched) // directChannelsLastRefusal turns such layers away before this
            return Status::invalid(noChannelsLastDirectInstance("the channels-last direct kernel", geo, sizeof(T)));
        status = launchStatus("the channels-last direct kernel");
        if (!status.ok())
            return status;
    }
    return Status::success();
}

} // namespace

Status launchDirectChannelsLastPath(DeformConvGeometry const& geo, int32_t dtype, void const* input,
    void const* offset, void const* weight, void const* bias, void const* mask, void* output, void* workspace,
    size_t budget, bool channelsLastTensors, bool sharedTaps, bool groupMma, cudaStream_t stream)
{
    return withElementType(dtype, [&](auto tag) {
        using T = decltype(tag);
        return launchDirectChannelsLast<T>(geo, dtype, static_cast<T const*>(input), static_cast<T const*>(offset),
            static_cast<T const*>(weight), static_cast<T const*>(bias), static_cast<T const*>(mask),
            static_cast<T*>(output), workspace, budget, channelsLastTensors, sharedTaps, groupMma, stream);
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

// The channels-last direct kernel's blocks with shared taps (deformConvDirectSharedTaps.h; experimental, opt-in:
// GemmOptions::directSharedTaps), in a file of their own so that they compile beside the per-item kernels of
// deformConvDirect.cu, which calls launchSharedTapsItems where sharedTapsRefusal passes.
#include "dcnCudaDtype.cuh"
#include "dcnCudaStatus.h"
#include "deformConvDirectSharedTaps.h"
#include "deformConvKernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

namespace dcn
{

namespace
{

// Block (pixel block, channel block, image from n0) of kSharedTapsThreads threads fills its taps and weights tables
// in shared memory, then each thread runs its item (Cpg channels per group).
template <typename T, int Vector, int Cpg, bool ChannelsLastOut>
__global__ void __launch_bounds__(kSharedTapsThreads) sharedTapsKernel(DeformConvGeometry const geo,
    T const* __restrict__ nhwc, T const* __restrict__ offset, T const* __restrict__ weight,
    T const* __restrict__ bias, T const* __restrict__ mask, T* __restrict__ output, int32_t const n0)
{
    using Acc = typename ElementTraits<T>::Acc;
    extern __shared__ __align__(16) unsigned char tapBytes[];
    SharedTap<Acc>* const table = reinterpret_cast<SharedTap<Acc>*>(tapBytes);
    int32_t const channelBlock = int32_t(blockIdx.y);
    int32_t const og = channelBlock * kSharedTapsItems * Vector / geo.channelsPerOffsetGroup;
    int32_t const thread = int32_t(threadIdx.x);
    fillSharedTapsOfPixel<T>(geo, offset, mask, n0 + int32_t(blockIdx.z), og, int64_t(blockIdx.x) * kSharedTapsPixels,
        thread % kSharedTapsPixels, table, thread / kSharedTapsPixels, kSharedTapsThreads / kSharedTapsPixels);
    fillSharedTapsWeights<T, Vector, Cpg>(geo, weight, channelBlock * kSharedTapsItems * Vector,
        reinterpret_cast<Acc*>(table + sharedTapEntries(geo)), thread, kSharedTapsThreads);
    __syncthreads();
    sharedTapsItem<T, Vector, Cpg, ChannelsLastOut>(geo, nhwc, bias, table, output, n0, int32_t(blockIdx.z),
        int64_t(blockIdx.x), channelBlock, thread);
}

// The blocks of `count` images from n0, in launches of at most 65535 images (grid z).
template <typename T, int Vector, int Cpg, bool ChannelsLastOut>
void launchBlocks(DeformConvGeometry const& geo, T const* source, T const* offset, T const* weight, T const* bias,
    T const* mask, T* output, int32_t n0, int32_t count, cudaStream_t stream)
{
    unsigned const channelBlocks = unsigned(geo.d.in_channels / (Vector * kSharedTapsItems));
    size_t const tableBytes = sharedTapsTablesBytes(geo, sizeof(T));
    for (int32_t first = 0; first < count; first += 65535)
    {
        dim3 const grid(unsigned(sharedTapsPixelBlocks(geo)), channelBlocks, unsigned(std::min(count - first, 65535)));
        sharedTapsKernel<T, Vector, Cpg, ChannelsLastOut><<<grid, kSharedTapsThreads, tableBytes, stream>>>(geo,
            source + int64_t(first) * inputImageElements(geo), offset, weight, bias, mask, output, n0 + first);
    }
}

} // namespace

Status launchSharedTapsItems(DeformConvGeometry const& geo, int32_t dtype, void const* source, void const* offset,
    void const* weight, void const* bias, void const* mask, void* output, int32_t n0, int32_t count,
    bool channelsLastOut, cudaStream_t stream)
{
    return withElementType(dtype, [&](auto tag) {
        using T = decltype(tag);
        bool const launched = withChannelsLastDirectInstance<T>(geo, [&](auto width, auto group) {
            constexpr int kVector = decltype(width)::value;
            constexpr int kCpg = decltype(group)::value;
            auto const launch = [&](auto out) {
                launchBlocks<T, kVector, kCpg, decltype(out)::value>(geo, static_cast<T const*>(source),
                    static_cast<T const*>(offset), static_cast<T const*>(weight), static_cast<T const*>(bias),
                    static_cast<T const*>(mask), static_cast<T*>(output), n0, count, stream);
            };
            if (channelsLastOut)
                launch(std::true_type{});
            else
                launch(std::false_type{});
        });
        if (!launched) // sharedTapsRefusal turns such layers away before this
            return Status::invalid(noChannelsLastDirectInstance("the shared-taps direct kernel", geo, sizeof(T)));
        return launchStatus("the shared-taps direct kernel");
    });
}

} // namespace dcn

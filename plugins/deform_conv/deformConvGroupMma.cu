// The tensor-core group kernel's launch (the kernel: deformConvGroupMma.cuh; experimental, opt-in:
// GemmOptions::directGroupMma), in a file of its own beside the channels-last direct kernel's, whose launch
// (deformConvDirect.cu) calls launchGroupMmaItems where groupMmaRuns (its refusal passes on an sm_80 or newer GPU).
#include "dcnCudaDtype.cuh"
#include "dcnCudaStatus.h"
#include "deformConvGroupMma.cuh"
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

// Blocks of Channels channels; a block needing more shared memory than the default 48 KiB opts in first (every
// sm_80 or newer GPU allows groupMmaRefusal's bound).
template <typename T, int Channels, bool ChannelsLastOut>
Status launchBlocks(DeformConvGeometry const& geo, T const* source, T const* offset, T const* weight, T const* bias,
    T const* mask, T* output, int32_t n0, int32_t count, cudaStream_t stream)
{
    size_t const shared = groupMmaSharedBytes(Channels, geo.kernelPoints);
    auto const kernel = groupMmaKernel<T, Channels, ChannelsLastOut>;
    if (shared > kGroupMmaDefaultSharedBytes)
    {
        cudaError_t const optIn = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared));
        if (optIn != cudaSuccess)
        {
            cudaGetLastError(); // not the launch's error
            return Status::error(DCN_ERROR_CUDA, "the tensor-core group kernel could not opt in to "
                    + std::to_string(shared) + " bytes of shared memory a block: " + cudaGetErrorString(optIn));
        }
    }
    for (int32_t first = 0; first < count; first += 65535)
    {
        dim3 const grid(unsigned(groupMmaPixelBlocks(geo)), unsigned(geo.d.in_channels / Channels),
            unsigned(std::min(count - first, 65535)));
        kernel<<<grid, kGroupMmaThreads, shared, stream>>>(geo, source + int64_t(first) * inputImageElements(geo),
            offset, weight, bias, mask, output, n0 + first);
    }
    return launchStatus("the tensor-core group kernel");
}

bool groupMmaDeviceCapable()
{
    int device = 0;
    int major = 0;
    if (cudaGetDevice(&device) != cudaSuccess
        || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess)
    {
        cudaGetLastError(); // the query's error is not the launch's
        return false;
    }
    return major >= 8;
}

} // namespace

bool groupMmaRuns(DeformConvGeometry const& geo, int32_t dtype)
{
    return groupMmaRefusal(geo, dtype).empty() && groupMmaDeviceCapable();
}

Status launchGroupMmaItems(DeformConvGeometry const& geo, int32_t dtype, void const* source, void const* offset,
    void const* weight, void const* bias, void const* mask, void* output, int32_t n0, int32_t count,
    bool channelsLastOut, cudaStream_t stream)
{
    std::string const refusal = groupMmaRefusal(geo, dtype);
    if (!refusal.empty()) // the caller checks first; this names a broken rule
        return Status::invalid(refusal);
    auto const launch = [&](auto tag) {
        using T = decltype(tag);
        auto const run = [&](auto channels, auto out) {
            return launchBlocks<T, decltype(channels)::value, decltype(out)::value>(geo, static_cast<T const*>(source),
                static_cast<T const*>(offset), static_cast<T const*>(weight), static_cast<T const*>(bias),
                static_cast<T const*>(mask), static_cast<T*>(output), n0, count, stream);
        };
        auto const withOut = [&](auto channels) {
            return channelsLastOut ? run(channels, std::true_type{}) : run(channels, std::false_type{});
        };
        return groupMmaBlockChannels(geo.channelsPerGroup) == 32 ? withOut(std::integral_constant<int, 32>{})
                                                                 : withOut(std::integral_constant<int, 16>{});
    };
    return dtype == DCN_FLOAT16 ? launch(__half()) : launch(__nv_bfloat16());
}

} // namespace dcn

// The implicit-GEMM deformable-convolution kernel (DCN_ALGO_IMPLICIT_GEMM): the column tiles are sampled straight
// into shared memory and multiplied there on tensor cores, so the C*kH*kW x pixels columns never go to memory.
// Layout, steps and the rule for which layers it takes: deformConvImplicit.h (shared with the host build that CI
// checks). Not chosen by DCN_ALGO_AUTO nor offered to TensorRT until it has been checked and timed on a GPU
// (benchmarks/gpu_notes.md).
#include "dcnCudaDtype.cuh"
#include "dcnCudaStatus.h"
#include "dcnDynamicShared.cuh"
#include "deformConvImplicit.h"
#include "deformConvImplicitKernel.cuh"
#include "deformConvImplicitSpecialised.cuh"
#include "deformConvKernel.h"
#include "deformConvRelayout.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <string>
#include <type_traits>

namespace dcn
{
namespace
{

// The block's dynamic shared memory with tileM rows, for the stepwise or the specialised kernel.
size_t implicitKernelSharedBytes(int32_t kernel, DeformConvGeometry const& geo, int32_t tileM, size_t elementBytes)
{
    return kernel == kImplicitSpecialised ? specialisedSharedBytes(geo, tileM, elementBytes)
                                          : implicitSharedBytes(geo, tileM, elementBytes);
}

// f(kernel function) for the kernel, tile height and threads chosen; false where there is no such instance.
template <typename T, typename F>
bool withChosenImplicitKernel(int32_t kernel, int32_t tileM, int32_t threads, F&& f)
{
    if (kernel == kImplicitSpecialised)
        return withSpecialisedKernel<T>(tileM, f);
    return withImplicitKernel<T>(tileM, threads, f);
}

// The launch shape for this device, once per forward: tiles of tileM output channels (0: the layer's
// implicitTileM), halved until their shared memory fits, their threads (implicitThreads, or specialisedThreads),
// and that much dynamic shared memory allowed to the kernel.
template <typename T>
Status chooseImplicitLaunch(DeformConvGeometry const& geo, int32_t dtype, int32_t kernel, int32_t requestedTileM,
    int32_t requestedThreads, int32_t& tileM, int32_t& threads, size_t& shared)
{
    if (kernel != kImplicitStepwise && kernel != kImplicitSpecialised)
        return Status::invalid("the implicit-GEMM kernel is 0 (stepwise) or 1 (specialised), got "
            + std::to_string(kernel));
    if (kernel == kImplicitSpecialised && currentComputeCapability() < 80)
        return Status::error(DCN_ERROR_UNSUPPORTED, "the specialised implicit-GEMM kernel runs on sm_80 and newer "
                                                    "(cp.async); unset DCN_DEPLOY_IMPLICIT_KERNEL for the stepwise one");
    int device = 0;
    int sharedOptin = 0;
    if (cudaGetDevice(&device) != cudaSuccess
        || cudaDeviceGetAttribute(&sharedOptin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess)
        return launchStatus("the implicit-GEMM kernel (querying the device)");
    tileM = requestedTileM > 0 ? requestedTileM
        : kernel == kImplicitSpecialised ? specialisedTileM(geo, dtype)
                                         : implicitTileM(geo);
    while (tileM > 64 && implicitKernelSharedBytes(kernel, geo, tileM, sizeof(T)) > size_t(sharedOptin))
        tileM /= 2;
    threads = kernel == kImplicitSpecialised ? specialisedThreads(tileM)
                                             : implicitThreads(tileM, dtype, requestedThreads);
    shared = implicitKernelSharedBytes(kernel, geo, tileM, sizeof(T));
    if (shared > size_t(sharedOptin))
        return Status::error(DCN_ERROR_UNSUPPORTED, std::string("the ")
            + (kernel == kImplicitSpecialised ? "specialised " : "") + "implicit-GEMM kernel needs "
            + std::to_string(shared) + " bytes of shared memory per block for this layer, the device allows "
            + std::to_string(sharedOptin)
            + (kernel == kImplicitSpecialised ? "; unset DCN_DEPLOY_IMPLICIT_KERNEL (the stepwise kernel needs less) "
                                                "or use algo 3 (GEMM)"
                                              : "; use algo 3 (GEMM)"));
    // The device's whole opt-in, not this layer's need: the attribute is per function and device, process-wide, so a
    // thread that set it to a smaller layer's size between another thread's set and launch made that launch fail.
    if (!withChosenImplicitKernel<T>(kernel, tileM, threads, [&](auto function) {
            cudaFuncSetAttribute(function, cudaFuncAttributeMaxDynamicSharedMemorySize, sharedOptin);
        }))
        return Status::invalid(kernel == kImplicitSpecialised
                ? "the specialised implicit-GEMM kernel has no instance of " + std::to_string(tileM)
                    + "-row tiles: use 64, 128 or 256 (its threads follow the tile; DCN_DEPLOY_IMPLICIT_THREADS is "
                      "not read for it)"
                : "the implicit-GEMM kernel has no instance of " + std::to_string(tileM) + "-row tiles with "
                    + std::to_string(requestedThreads) + " threads per block: use 0 (its rule), 256 or 512");
    return launchStatus("the implicit-GEMM kernel (allowing its shared memory)");
}

template <typename T>
void launchImplicitTiles(DeformConvGeometry const& geo, int32_t kernel, int32_t tileM, int32_t threads,
    size_t shared, T const* nhwc, T const* offset, T const* weights, T const* bias, T const* mask, T* output,
    int32_t n0, int32_t chunkPixels, cudaStream_t stream)
{
    dim3 const grid(unsigned((int64_t(chunkPixels) + kImplicitTileN - 1) / kImplicitTileN),
        unsigned((geo.outChannelsPerGroup + tileM - 1) / tileM), unsigned(geo.d.group));
    withChosenImplicitKernel<T>(kernel, tileM, threads, [&](auto function) {
        function<<<grid, unsigned(threads), shared, stream>>>(geo, nhwc, offset, weights, bias, mask, output, n0,
            chunkPixels);
    });
}

template <typename T>
Status runImplicit(DeformConvGeometry const& geo, int32_t dtype, int32_t kernel, int32_t requestedTileM,
    int32_t requestedThreads, T const* input, T const* offset, T const* weight, T const* bias, T const* mask,
    T* output, void* workspace, cudaStream_t stream)
{
    int32_t tileM = 0;
    int32_t threads = 0;
    size_t shared = 0;
    Status status
        = chooseImplicitLaunch<T>(geo, dtype, kernel, requestedTileM, requestedThreads, tileM, threads, shared);
    if (!status.ok())
        return status;
    ImplicitPlan const plan = planImplicit(geo, sizeof(T));
    T* nhwc = static_cast<T*>(workspace);
    T* weights = reinterpret_cast<T*>(static_cast<char*>(workspace) + plan.nhwcBytes);
    int32_t const plane = geo.outH * geo.outW;
    status = launchWeightsRelayout<T>(geo, weight, weights, stream);
    for (int32_t n0 = 0; status.ok() && n0 < geo.d.batch; n0 += plan.images)
    {
        int32_t const images = std::min(plan.images, geo.d.batch - n0);
        status = launchChannelsLast<T>(geo, input, nhwc, n0, images, stream);
        if (!status.ok())
            break;
        launchImplicitTiles<T>(geo, kernel, tileM, threads, shared, nhwc, offset, weights, bias, mask, output, n0,
            images * plane, stream);
        status = launchStatus("the implicit-GEMM kernel");
    }
    return status;
}

} // namespace

size_t implicitWorkspaceBytes(DeformConvGeometry const& geo, int32_t dtype)
{
    return planImplicit(geo, dtypeBytes(dtype)).totalBytes;
}

Status launchImplicitPath(DeformConvGeometry const& geo, int32_t dtype, int32_t kernel, int32_t tileM,
    int32_t threads, void const* input, void const* offset, void const* weight, void const* bias, void const* mask,
    void* output, void* workspace, cudaStream_t stream)
{
    // float32 and float64 (and codes outside dcn_dtype): not reached, the launch picks this kernel only where
    // implicitKernelRefusal is empty.
    auto const refuse = [&] { return Status::error(DCN_ERROR_UNSUPPORTED, implicitKernelRefusal(geo, dtype)); };
    return withElementType(
        dtype,
        [&](auto tag) {
            using T = decltype(tag);
            if constexpr (std::is_same<T, float>::value || std::is_same<T, double>::value)
                return refuse();
            else
            {
                if (std::is_same<T, __nv_bfloat16>::value && currentComputeCapability() < 80)
                    return Status::error(DCN_ERROR_UNSUPPORTED,
                        "the implicit-GEMM kernel runs bfloat16 on sm_80 and newer (bfloat16 tensor cores); use algo 3 "
                        "(GEMM)");
                return runImplicit<T>(geo, dtype, kernel, tileM, threads, static_cast<T const*>(input),
                    static_cast<T const*>(offset), static_cast<T const*>(weight), static_cast<T const*>(bias),
                    static_cast<T const*>(mask), static_cast<T*>(output), workspace, stream);
            }
        },
        refuse);
}

} // namespace dcn

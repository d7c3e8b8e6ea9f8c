// The GEMM path of deformable convolution: sample, then multiply with cuBLAS.
//
// For a chunk of the batch (whole images, or a slice of one image's output pixels when one image's columns exceed
// the budget), one kernel writes the deformably sampled columns
//     columns[image][c*kH*kW + kp][pixel]          (mask folded in, rounded to the tensor type)
// into the workspace; then one strided-batched cuBLAS product per convolution group multiplies the weights, read
// in place as an (oC/group) x (C/group*kH*kW) matrix, by them, straight into the NCHW output (float32 accumulation
// for every type but float64). The bias is written into the output first and the product adds to it (beta = 1).
//
// Measured on an H100 (benchmarks/RESULTS.md), this beat the fused kernel of deformConvKernel.cu on every dense
// layer: the column buffer costs bandwidth, but the sampling runs at full occupancy and the product at cuBLAS's
// speed. Each bilinear tap set is computed once per (pixel, kernel point, offset group, channel slice) and reused
// over the slice's channels.
#include "cublasLoader.h"
#include "dcnCudaDtype.cuh"
#include "deformConvKernel.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>

namespace dcn
{
namespace
{

constexpr int kThreads = 256;
constexpr int kChannelsPerThread = 16;              // channels one thread samples with one set of taps
constexpr size_t kCublasWorkspaceBytes = 8u << 20;  // handed to cuBLAS, so it never allocates during enqueue
constexpr size_t kDefaultColumnBudget = 64u << 20;  // the most bytes one chunk's columns take

size_t columnBudget()
{
    // DCN_DEPLOY_GEMM_CHUNK_MB: a tuning knob for benchmarks; read once.
    static size_t const budget = [] {
        char const* text = std::getenv("DCN_DEPLOY_GEMM_CHUNK_MB");
        long const mb = text ? std::strtol(text, nullptr, 10) : 0;
        return mb > 0 ? size_t(mb) << 20 : kDefaultColumnBudget;
    }();
    return budget;
}

// How the batch is cut: `images` whole images per chunk, or (images == 1) `pixels` output pixels of one image.
struct GemmPlan
{
    int32_t images;
    int64_t pixels;
    size_t columnBytes; // rounded up to 256
};

GemmPlan planGemm(DeformConvGeometry const& geo, int32_t dtype)
{
    int64_t const rows = int64_t(geo.d.in_channels) * geo.kernelPoints;
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    size_t const element = dtypeBytes(dtype);
    size_t const imageBytes = size_t(rows) * size_t(plane) * element;
    GemmPlan plan{1, plane, 0};
    if (imageBytes <= columnBudget())
        plan.images = int32_t(std::min<int64_t>(std::max<int64_t>(geo.d.batch, 1), int64_t(columnBudget() / std::max<size_t>(imageBytes, 1))));
    else // a slice of one image: a multiple of 256 pixels, at least 256
        plan.pixels = std::min<int64_t>(plane, std::max<int64_t>(256, int64_t(columnBudget() / (size_t(rows) * element)) / 256 * 256));
    size_t const bytes = size_t(plan.images) * size_t(rows) * size_t(plan.pixels) * element;
    plan.columnBytes = (bytes + 255) / 256 * 256;
    return plan;
}

template <typename T>
struct CudaType;
template <>
struct CudaType<float>
{
    static constexpr cudaDataType value = CUDA_R_32F;
};
template <>
struct CudaType<double>
{
    static constexpr cudaDataType value = CUDA_R_64F;
};
template <>
struct CudaType<__half>
{
    static constexpr cudaDataType value = CUDA_R_16F;
};
template <>
struct CudaType<__nv_bfloat16>
{
    static constexpr cudaDataType value = CUDA_R_16BF;
};

// columns[img][c*kp + k][p] for images n0.. and pixels p0.. of the chunk. One thread: one (image, offset group,
// kernel point, channel slice, pixel); consecutive threads take consecutive pixels, so the writes coalesce.
template <typename T>
__global__ void __launch_bounds__(kThreads) deformColumnsKernel(DeformConvGeometry const geo,
    T const* __restrict__ input, T const* __restrict__ offset, T const* __restrict__ mask, T* __restrict__ columns,
    int32_t const n0, int32_t const images, int64_t const p0, int32_t const pixels, int32_t const slices)
{
    using Acc = typename ElementTraits<T>::Acc;
    dcn_deform_conv_desc const& d = geo.d;
    int32_t const kernelPoints = geo.kernelPoints;
    int32_t const perGroup = geo.channelsPerOffsetGroup;
    int64_t const plane = int64_t(d.height) * d.width;
    int64_t const total = int64_t(images) * d.offset_group * kernelPoints * slices * pixels;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += int64_t(gridDim.x) * blockDim.x)
    {
        int32_t const p = int32_t(idx % pixels);
        int64_t rest = idx / pixels;
        int32_t const slice = int32_t(rest % slices);
        rest /= slices;
        int32_t const k = int32_t(rest % kernelPoints);
        rest /= kernelPoints;
        int32_t const og = int32_t(rest % d.offset_group);
        int32_t const img = int32_t(rest / d.offset_group);
        int64_t const pixel = p0 + p;
        int32_t const y = int32_t(pixel / geo.outW);
        int32_t const x = int32_t(pixel - int64_t(y) * geo.outW);
        int32_t const n = n0 + img;
        BilinearTaps<Acc> const taps = kernelPointTaps<Acc>(geo, offset, mask, n, og, k, y, x);
        int32_t const cBegin = og * perGroup + slice * kChannelsPerThread;
        int32_t const cEnd = min(cBegin + kChannelsPerThread, (og + 1) * perGroup);
        T const* channel = input + (int64_t(n) * d.in_channels + cBegin) * plane;
        T* out = columns + ((int64_t(img) * d.in_channels + cBegin) * kernelPoints + k) * pixels + p;
        int64_t const outStep = int64_t(kernelPoints) * pixels;
#pragma unroll 4
        for (int32_t c = cBegin; c < cEnd; ++c)
        {
            *out = ElementTraits<T>::fromAcc(sampleTaps<Acc>(channel, taps));
            channel += plane;
            out += outStep;
        }
    }
}

// output[n0 + img][o][p0 + p] = bias[o] for the chunk (the product then adds to it).
template <typename T>
__global__ void __launch_bounds__(kThreads) fillBiasKernel(T* __restrict__ output, T const* __restrict__ bias,
    int32_t const outChannels, int64_t const plane, int32_t const n0, int32_t const images, int64_t const p0,
    int32_t const pixels)
{
    int64_t const total = int64_t(images) * outChannels * pixels;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += int64_t(gridDim.x) * blockDim.x)
    {
        int32_t const p = int32_t(idx % pixels);
        int64_t const row = idx / pixels; // img * outChannels + o
        int32_t const o = int32_t(row % outChannels);
        output[(int64_t(n0) * outChannels + row) * plane + p0 + p] = bias[o];
    }
}

unsigned blocksFor(int64_t total)
{
    int64_t const blocks = (total + kThreads - 1) / kThreads;
    return unsigned(std::min<int64_t>(std::max<int64_t>(blocks, 1), int64_t(1) << 30));
}

Status cudaLaunchStatus(char const* what)
{
    cudaError_t const error = cudaGetLastError();
    if (error == cudaSuccess)
        return Status::success();
    return Status::error(DCN_ERROR_CUDA, std::string("launching the ") + what + ": " + cudaGetErrorName(error) + " ("
        + cudaGetErrorString(error) + ")");
}

template <typename T>
Status runGemmPath(DeformConvGeometry const& geo, int32_t dtype, T const* input, T const* offset, T const* weight,
    T const* bias, T const* mask, T* output, void* workspace, cudaStream_t stream, CublasHandleT handle)
{
    GemmPlan const plan = planGemm(geo, dtype);
    dcn_deform_conv_desc const& d = geo.d;
    T* columns = static_cast<T*>(workspace);
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    int32_t const slices = (geo.channelsPerOffsetGroup + kChannelsPerThread - 1) / kChannelsPerThread;
    int32_t const rowsPerGroup = geo.channelsPerGroup * geo.kernelPoints; // the product's k
    int32_t const ocg = geo.outChannelsPerGroup;
    using Scalar = typename std::conditional<std::is_same<T, double>::value, double, float>::type;
    Scalar const one = 1, zero = 0;
    int const compute = std::is_same<T, double>::value ? kCublasCompute64F : kCublasCompute32F;
    CublasApi const* api = cublasApi();
    for (int32_t n0 = 0; n0 < d.batch; n0 += plan.images)
    {
        int32_t const images = std::min(plan.images, d.batch - n0);
        for (int64_t p0 = 0; p0 < plane; p0 += plan.pixels)
        {
            int32_t const pixels = int32_t(std::min<int64_t>(plan.pixels, plane - p0));
            int64_t const samples = int64_t(images) * d.offset_group * geo.kernelPoints * slices * pixels;
            deformColumnsKernel<T><<<blocksFor(samples), kThreads, 0, stream>>>(
                geo, input, offset, mask, columns, n0, images, p0, pixels, slices);
            Status status = cudaLaunchStatus("deformable sampling kernel");
            if (!status.ok())
                return status;
            if (bias)
            {
                fillBiasKernel<T><<<blocksFor(int64_t(images) * d.out_channels * pixels), kThreads, 0, stream>>>(
                    output, bias, d.out_channels, plane, n0, images, p0, pixels);
                status = cudaLaunchStatus("bias kernel");
                if (!status.ok())
                    return status;
            }
            // Row-major out[o][p] = W[o][k] * columns[k][p] is, column-major, out^T = columns^T * W^T.
            for (int32_t g = 0; g < d.group; ++g)
            {
                int const rc = api->gemmStridedBatchedEx(handle, kCublasOpN, kCublasOpN, pixels, ocg, rowsPerGroup,
                    &one, columns + int64_t(g) * rowsPerGroup * pixels, CudaType<T>::value, pixels,
                    int64_t(d.in_channels) * geo.kernelPoints * pixels,
                    weight + int64_t(g) * ocg * rowsPerGroup, CudaType<T>::value, rowsPerGroup, 0,
                    bias ? &one : &zero, output + (int64_t(n0) * d.out_channels + int64_t(g) * ocg) * plane + p0,
                    CudaType<T>::value, int(plane), int64_t(d.out_channels) * plane, images, compute,
                    kCublasGemmDefault);
                if (rc != 0)
                    return Status::error(DCN_ERROR_CUDA, "cublasGemmStridedBatchedEx failed with cuBLAS status "
                        + std::to_string(rc) + " (group " + std::to_string(g) + ")");
            }
        }
    }
    return Status::success();
}

} // namespace

bool gemmPathAvailable()
{
    return cublasApi() != nullptr;
}

size_t gemmWorkspaceBytes(DeformConvGeometry const& geo, int32_t dtype)
{
    return planGemm(geo, dtype).columnBytes + kCublasWorkspaceBytes;
}

Status launchGemmPath(DeformConvGeometry const& geo, int32_t dtype, void const* input, void const* offset,
    void const* weight, void const* bias, void const* mask, void* output, void* workspace, cudaStream_t stream,
    CublasHandle* cublas)
{
    GemmPlan const plan = planGemm(geo, dtype);
    CublasHandleT handle = nullptr;
    Status status = (cublas ? *cublas : threadCublasHandle())
                        .bind(stream, static_cast<char*>(workspace) + plan.columnBytes, kCublasWorkspaceBytes, handle);
    if (!status.ok())
        return status;
    switch (dtype)
    {
    case DCN_FLOAT32:
        return runGemmPath<float>(geo, dtype, static_cast<float const*>(input), static_cast<float const*>(offset),
            static_cast<float const*>(weight), static_cast<float const*>(bias), static_cast<float const*>(mask),
            static_cast<float*>(output), workspace, stream, handle);
    case DCN_FLOAT64:
        return runGemmPath<double>(geo, dtype, static_cast<double const*>(input), static_cast<double const*>(offset),
            static_cast<double const*>(weight), static_cast<double const*>(bias), static_cast<double const*>(mask),
            static_cast<double*>(output), workspace, stream, handle);
    case DCN_FLOAT16:
        return runGemmPath<__half>(geo, dtype, static_cast<__half const*>(input), static_cast<__half const*>(offset),
            static_cast<__half const*>(weight), static_cast<__half const*>(bias), static_cast<__half const*>(mask),
            static_cast<__half*>(output), workspace, stream, handle);
    case DCN_BFLOAT16:
        return runGemmPath<__nv_bfloat16>(geo, dtype, static_cast<__nv_bfloat16 const*>(input),
            static_cast<__nv_bfloat16 const*>(offset), static_cast<__nv_bfloat16 const*>(weight),
            static_cast<__nv_bfloat16 const*>(bias), static_cast<__nv_bfloat16 const*>(mask),
            static_cast<__nv_bfloat16*>(output), workspace, stream, handle);
    default:
        return Status::error(DCN_ERROR_UNSUPPORTED, "dtype " + std::to_string(dtype) + " has no GEMM path");
    }
}

} // namespace dcn

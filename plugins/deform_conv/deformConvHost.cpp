// The host (CPU) build of the deformable-convolution forward, from the same arithmetic as the CUDA kernels
// (deformConvMath.h). It exists so that machines without a GPU check the indexing and the math against the
// PyTorch reference through the C ABI; it is written for clarity, not speed.
#include "dcnDtype.h"
#include "dcnStatus.h"
#include "deformConvColumns.h"
#include "deformConvMath.h"
#include "deformConvShapes.h"

#include <algorithm>
#include <vector>

namespace dcn
{
namespace
{

// For each output pixel: sample the (C, kH*kW) column once, then one dot product per output channel.
template <typename T>
void forwardHost(DeformConvGeometry const& geo, T const* input, T const* offset, T const* weight, T const* bias,
    T const* mask, T* output)
{
    using Acc = typename ElementTraits<T>::Acc;
    dcn_deform_conv_desc const& d = geo.d;
    int32_t const kp = geo.kernelPoints;
    int64_t const plane = int64_t(d.height) * d.width;
    int64_t const outPlane = int64_t(geo.outH) * geo.outW;
    std::vector<Acc> column(size_t(d.in_channels) * kp);

    for (int32_t n = 0; n < d.batch; ++n)
        for (int32_t y = 0; y < geo.outH; ++y)
            for (int32_t x = 0; x < geo.outW; ++x)
            {
                for (int32_t og = 0; og < d.offset_group; ++og)
                    for (int32_t k = 0; k < kp; ++k)
                    {
                        BilinearTaps<Acc> const taps = kernelPointTaps<Acc>(geo, offset, mask, n, og, k, y, x);
                        for (int32_t c = og * geo.channelsPerOffsetGroup; c < (og + 1) * geo.channelsPerOffsetGroup; ++c)
                            column[size_t(c) * kp + k] = sampleTaps<Acc>(input + (int64_t(n) * d.in_channels + c) * plane, taps);
                    }
                for (int32_t o = 0; o < d.out_channels; ++o)
                {
                    int32_t const g = o / geo.outChannelsPerGroup;
                    Acc acc = bias ? ElementTraits<T>::toAcc(bias[o]) : Acc(0);
                    T const* w = weight + int64_t(o) * geo.channelsPerGroup * kp;
                    Acc const* col = column.data() + size_t(g) * geo.channelsPerGroup * kp;
                    for (int32_t e = 0; e < geo.channelsPerGroup * kp; ++e)
                        acc += ElementTraits<T>::toAcc(w[e]) * col[e];
                    output[(int64_t(n) * d.out_channels + o) * outPlane + int64_t(y) * geo.outW + x]
                        = ElementTraits<T>::fromAcc(acc);
                }
            }
}

template <typename T>
void forwardTyped(DeformConvGeometry const& geo, void const* input, void const* offset, void const* weight,
    void const* bias, void const* mask, void* output)
{
    forwardHost<T>(geo, static_cast<T const*>(input), static_cast<T const*>(offset), static_cast<T const*>(weight),
        static_cast<T const*>(bias), static_cast<T const*>(mask), static_cast<T*>(output));
}

// The CUDA GEMM path step by step on the host (deformConvColumns.h): same chunks, same layouts, same per-thread
// sampling, and the cuBLAS call's arguments (gemmCallFor) run through a plain column-major product.
template <typename T>
void gemmHost(GemmCall const& call, T const* columns, T const* weights, T* output, bool accumulate)
{
    using Acc = typename ElementTraits<T>::Acc;
    for (int32_t b = 0; b < call.batch; ++b)
        for (int32_t j = 0; j < call.n; ++j)
            for (int32_t i = 0; i < call.m; ++i)
            {
                // C(i, j) += sum_l A^T(i, l) * B(l, j); A is k x m column-major (A^T(i, l) = A[l + i*lda]).
                Acc acc = Acc(0);
                for (int32_t l = 0; l < call.k; ++l)
                    acc += ElementTraits<T>::toAcc(columns[call.aOffset + b * call.strideA + l + i * call.lda])
                        * ElementTraits<T>::toAcc(weights[call.bOffset + l + j * call.ldb]);
                T& c = output[call.cOffset + b * call.strideC + i + j * call.ldc];
                c = ElementTraits<T>::fromAcc(accumulate ? ElementTraits<T>::toAcc(c) + acc : acc);
            }
}

template <typename T, int Vector>
void columnsHost(DeformConvGeometry const& geo, T const* nhwc, T const* offset, T const* mask, T* columns, int32_t n0,
    int32_t images, int64_t p0, int32_t pixels)
{
    int64_t const total = columnThreads(geo, images, pixels, Vector);
    if (columnIndexFits32(geo, total)) // the index type the CUDA launch picks
        for (uint32_t idx = 0; idx < uint32_t(total); ++idx)
            columnVector<T, Vector>(geo, nhwc, offset, mask, columns, n0, p0, pixels, idx);
    else
        for (int64_t idx = 0; idx < total; ++idx)
            columnVector<T, Vector>(geo, nhwc, offset, mask, columns, n0, p0, pixels, idx);
}

template <typename T>
void forwardHostGemm(DeformConvGeometry const& geo, size_t columnBudget, T const* input, T const* offset,
    T const* weight, T const* bias, T const* mask, T* output)
{
    dcn_deform_conv_desc const& d = geo.d;
    GemmPlan const plan = planGemm(geo, sizeof(T), columnBudget);
    std::vector<T> columns(plan.columnsBytes / sizeof(T)), nhwc(plan.nhwcBytes / sizeof(T)),
        weights(plan.weightsBytes / sizeof(T));
    int64_t const weightCount = int64_t(d.out_channels) * geo.channelsPerGroup * geo.kernelPoints;
    for (int64_t idx = 0; idx < weightCount; ++idx)
        weightElement<T>(geo, weight, weights.data(), idx);
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    for (int32_t n0 = 0; n0 < d.batch; n0 += plan.images)
    {
        int32_t const images = std::min(plan.images, d.batch - n0);
        int64_t const nhwcCount = int64_t(images) * d.in_channels * d.height * d.width;
        for (int64_t idx = 0; idx < nhwcCount; ++idx)
            nhwcElement<T>(geo, input, nhwc.data(), n0, idx);
        for (int64_t p0 = 0; p0 < plane; p0 += plan.pixels)
        {
            int32_t const pixels = int32_t(std::min<int64_t>(plan.pixels, plane - p0));
            switch (plan.vector)
            {
            case 8: columnsHost<T, 8>(geo, nhwc.data(), offset, mask, columns.data(), n0, images, p0, pixels); break;
            case 4: columnsHost<T, 4>(geo, nhwc.data(), offset, mask, columns.data(), n0, images, p0, pixels); break;
            case 2: columnsHost<T, 2>(geo, nhwc.data(), offset, mask, columns.data(), n0, images, p0, pixels); break;
            default: columnsHost<T, 1>(geo, nhwc.data(), offset, mask, columns.data(), n0, images, p0, pixels);
            }
            if (bias)
                for (int32_t img = 0; img < images; ++img)
                    for (int32_t o = 0; o < d.out_channels; ++o)
                        for (int32_t p = 0; p < pixels; ++p)
                            output[(int64_t(n0 + img) * d.out_channels + o) * plane + p0 + p] = bias[o];
            for (int32_t g = 0; g < d.group; ++g)
                gemmHost<T>(gemmCallFor(geo, g, n0, images, p0, pixels), columns.data(), weights.data(), output,
                    bias != nullptr);
        }
    }
}

// The checks both host entries make, then body<T>() for the dtype (tag: a T value). Empty batches succeed at once.
template <typename Body>
Status hostEntry(char const* entry, dcn_deform_conv_desc const* desc, int32_t dtype, void const* input,
    void const* offset, void const* weight, void* output, DeformConvGeometry& geo, Body&& body)
{
    if (!desc)
        return Status::invalid(std::string(entry) + ": desc must not be NULL");
    Status status = makeGeometry(*desc, geo);
    if (!status.ok())
        return status;
    if (desc->batch > 0 && (!input || !offset || !weight || !output))
        return Status::invalid(std::string(entry) + ": input, offset, weight and output must not be NULL "
                                                    "(bias and mask may be)");
    if (desc->batch == 0)
        return Status::success();
    switch (dtype)
    {
    case DCN_FLOAT32: body(float{}); break;
    case DCN_FLOAT64: body(double{}); break;
    case DCN_FLOAT16: body(HostHalf{}); break;
    case DCN_BFLOAT16: body(HostBFloat16{}); break;
    default:
        return Status::error(DCN_ERROR_UNSUPPORTED,
            "dtype " + std::to_string(dtype) + " is not one of float32 (0), float16 (1), bfloat16 (2), float64 (3)");
    }
    return Status::success();
}

} // namespace
} // namespace dcn

DCN_API int32_t dcn_deform_conv2d_forward_host(const dcn_deform_conv_desc* desc, int32_t dtype, const void* input,
    const void* offset, const void* weight, const void* bias, const void* mask, void* output)
{
    return dcn::guarded([&] {
        dcn::DeformConvGeometry geo;
        return dcn::hostEntry("dcn_deform_conv2d_forward_host", desc, dtype, input, offset, weight, output, geo,
            [&](auto tag) { dcn::forwardTyped<decltype(tag)>(geo, input, offset, weight, bias, mask, output); });
    });
}

DCN_API int32_t dcn_deform_conv2d_forward_host_gemm(const dcn_deform_conv_desc* desc, int32_t dtype,
    const void* input, const void* offset, const void* weight, const void* bias, const void* mask, void* output,
    size_t column_budget_bytes)
{
    return dcn::guarded([&] {
        dcn::DeformConvGeometry geo;
        size_t const budget = column_budget_bytes ? column_budget_bytes : dcn::kGemmDefaultColumnBudget;
        return dcn::hostEntry("dcn_deform_conv2d_forward_host_gemm", desc, dtype, input, offset, weight, output, geo,
            [&](auto tag) {
                using T = decltype(tag);
                dcn::forwardHostGemm<T>(geo, budget, static_cast<T const*>(input), static_cast<T const*>(offset),
                    static_cast<T const*>(weight), static_cast<T const*>(bias), static_cast<T const*>(mask),
                    static_cast<T*>(output));
            });
    });
}

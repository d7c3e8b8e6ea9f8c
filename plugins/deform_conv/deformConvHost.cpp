// The host (CPU) build of the deformable-convolution forward, from the same arithmetic as the CUDA kernels
// (deformConvMath.h). It exists so that machines without a GPU check the indexing and the math against the
// PyTorch reference through the C ABI; it is written for clarity, not speed.
#include "dcnDtype.h"
#include "dcnStatus.h"
#include "deformConvMath.h"
#include "deformConvShapes.h"

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

} // namespace
} // namespace dcn

DCN_API int32_t dcn_deform_conv2d_forward_host(const dcn_deform_conv_desc* desc, int32_t dtype, const void* input,
    const void* offset, const void* weight, const void* bias, const void* mask, void* output)
{
    return dcn::guarded([&] {
        if (!desc)
            return dcn::Status::invalid("dcn_deform_conv2d_forward_host: desc must not be NULL");
        dcn::DeformConvGeometry geo;
        dcn::Status status = dcn::makeGeometry(*desc, geo);
        if (!status.ok())
            return status;
        if (desc->batch > 0 && (!input || !offset || !weight || !output))
            return dcn::Status::invalid("dcn_deform_conv2d_forward_host: input, offset, weight and output must not be NULL "
                                        "(bias and mask may be)");
        if (desc->batch == 0)
            return dcn::Status::success();
        switch (dtype)
        {
        case DCN_FLOAT32: dcn::forwardTyped<float>(geo, input, offset, weight, bias, mask, output); break;
        case DCN_FLOAT64: dcn::forwardTyped<double>(geo, input, offset, weight, bias, mask, output); break;
        case DCN_FLOAT16: dcn::forwardTyped<dcn::HostHalf>(geo, input, offset, weight, bias, mask, output); break;
        case DCN_BFLOAT16: dcn::forwardTyped<dcn::HostBFloat16>(geo, input, offset, weight, bias, mask, output); break;
        default:
            return dcn::Status::error(DCN_ERROR_UNSUPPORTED,
                "dtype " + std::to_string(dtype) + " is not one of float32 (0), float16 (1), bfloat16 (2), float64 (3)");
        }
        return dcn::Status::success();
    });
}

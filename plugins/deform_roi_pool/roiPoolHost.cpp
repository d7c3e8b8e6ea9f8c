// The host (CPU) build of the deformable RoI pooling forwards, from the same per-element arithmetic as the CUDA
// kernels (roiPoolMath.h), so machines without a GPU check it against the PyTorch reference through the C ABI.
#include "dcnStatus.h"
#include "roiPoolMath.h"
#include "roiPoolShapes.h"

#include <string>

namespace dcn
{
namespace
{

template <typename T>
void roiPoolHost(dcn_deform_roi_pool_desc const& d, void const* input, void const* rois, void const* offset, void* output)
{
    using Acc = typename ElementTraits<T>::Acc;
    T* out = static_cast<T*>(output);
    for (int32_t k = 0; k < d.num_rois; ++k)
        for (int32_t c = 0; c < d.channels; ++c)
            for (int32_t ph = 0; ph < d.pooled_height; ++ph)
                for (int32_t pw = 0; pw < d.pooled_width; ++pw)
                    *out++ = ElementTraits<T>::fromAcc(deformRoiPoolElement<ElementTraits<T>, Acc>(d,
                        static_cast<T const*>(input), static_cast<T const*>(rois), static_cast<T const*>(offset), k, c, ph, pw));
}

template <typename T>
void psroiPoolHost(dcn_deform_psroi_pool_desc const& d, void const* input, void const* rois, void const* trans, void* output)
{
    using Acc = typename ElementTraits<T>::Acc;
    T* out = static_cast<T*>(output);
    for (int32_t k = 0; k < d.num_rois; ++k)
        for (int32_t c = 0; c < d.output_dim; ++c)
            for (int32_t ph = 0; ph < d.pooled_size; ++ph)
                for (int32_t pw = 0; pw < d.pooled_size; ++pw)
                    *out++ = ElementTraits<T>::fromAcc(deformPsroiPoolElement<ElementTraits<T>, Acc>(d,
                        static_cast<T const*>(input), static_cast<T const*>(rois), static_cast<T const*>(trans), k, c, ph, pw));
}

} // namespace
} // namespace dcn

DCN_API int32_t dcn_deform_roi_pool_forward_host(const dcn_deform_roi_pool_desc* desc, int32_t dtype,
    const void* input, const void* rois, const void* offset, void* output)
{
    return dcn::guarded([&] {
        if (!desc)
            return dcn::Status::invalid("dcn_deform_roi_pool_forward_host: desc must not be NULL");
        dcn::Status status = dcn::checkRoiPool(*desc);
        if (!status.ok() || desc->num_rois == 0)
            return status;
        if (!input || !rois || !output)
            return dcn::Status::invalid("dcn_deform_roi_pool_forward_host: input, rois and output must not be NULL "
                                        "(offset may be)");
        switch (dtype)
        {
        case DCN_FLOAT32: dcn::roiPoolHost<float>(*desc, input, rois, offset, output); break;
        case DCN_FLOAT64: dcn::roiPoolHost<double>(*desc, input, rois, offset, output); break;
        case DCN_FLOAT16: dcn::roiPoolHost<dcn::HostHalf>(*desc, input, rois, offset, output); break;
        case DCN_BFLOAT16: dcn::roiPoolHost<dcn::HostBFloat16>(*desc, input, rois, offset, output); break;
        default: return dcn::Status::unsupportedDtype(dtype);
        }
        return dcn::Status::success();
    });
}

DCN_API int32_t dcn_deform_psroi_pool_forward_host(const dcn_deform_psroi_pool_desc* desc, int32_t dtype,
    const void* input, const void* rois, const void* trans, void* output)
{
    return dcn::guarded([&] {
        if (!desc)
            return dcn::Status::invalid("dcn_deform_psroi_pool_forward_host: desc must not be NULL");
        dcn::Status status = dcn::checkPsroiPool(*desc);
        if (!status.ok() || desc->num_rois == 0)
            return status;
        if (!input || !rois || !output || (!desc->no_trans && !trans))
            return dcn::Status::invalid("dcn_deform_psroi_pool_forward_host: input, rois, output (and trans unless "
                                        "no_trans) must not be NULL");
        switch (dtype)
        {
        case DCN_FLOAT32: dcn::psroiPoolHost<float>(*desc, input, rois, trans, output); break;
        case DCN_FLOAT64: dcn::psroiPoolHost<double>(*desc, input, rois, trans, output); break;
        case DCN_FLOAT16: dcn::psroiPoolHost<dcn::HostHalf>(*desc, input, rois, trans, output); break;
        case DCN_BFLOAT16: dcn::psroiPoolHost<dcn::HostBFloat16>(*desc, input, rois, trans, output); break;
        default: return dcn::Status::unsupportedDtype(dtype);
        }
        return dcn::Status::success();
    });
}

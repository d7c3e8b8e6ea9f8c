// CUDA kernels of the deformable RoI pooling ops: one thread per output element, the arithmetic of roiPoolMath.h
// (half types load into float32 and round once at the end), behind the C ABI of roi_pool_kernels.h.
#include "dcnCudaDtype.cuh"
#include "dcnCudaStatus.h"
#include "dcnGridStride.h"
#include "dcnStatus.h"
#include "roiPoolKernel.h"
#include "roiPoolMath.h"
#include "roiPoolShapes.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <string>

namespace dcn
{
namespace
{

template <typename T>
__global__ void roiPoolKernel(dcn_deform_roi_pool_desc d, T const* input, T const* rois, T const* offset, T* output,
    int64_t total)
{
    using Acc = typename ElementTraits<T>::Acc;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    {
        int32_t const pw = int32_t(i % d.pooled_width);
        int32_t const ph = int32_t((i / d.pooled_width) % d.pooled_height);
        int32_t const c = int32_t((i / (int64_t(d.pooled_width) * d.pooled_height)) % d.channels);
        int32_t const k = int32_t(i / (int64_t(d.pooled_width) * d.pooled_height * d.channels));
        output[i] = ElementTraits<T>::fromAcc(deformRoiPoolElement<ElementTraits<T>, Acc>(d, input, rois, offset, k, c, ph, pw));
    }
}

template <typename T>
__global__ void psroiPoolKernel(dcn_deform_psroi_pool_desc d, T const* input, T const* rois, T const* trans,
    T* output, int64_t total)
{
    using Acc = typename ElementTraits<T>::Acc;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    {
        int32_t const pw = int32_t(i % d.pooled_size);
        int32_t const ph = int32_t((i / d.pooled_size) % d.pooled_size);
        int32_t const c = int32_t((i / (int64_t(d.pooled_size) * d.pooled_size)) % d.output_dim);
        int32_t const k = int32_t(i / (int64_t(d.pooled_size) * d.pooled_size * d.output_dim));
        output[i] = ElementTraits<T>::fromAcc(deformPsroiPoolElement<ElementTraits<T>, Acc>(d, input, rois, trans, k, c, ph, pw));
    }
}

template <typename T>
Status launchRoiPool(dcn_deform_roi_pool_desc const& d, void const* input, void const* rois, void const* offset,
    void* output, cudaStream_t stream)
{
    int64_t const total = int64_t(d.num_rois) * d.channels * d.pooled_height * d.pooled_width;
    roiPoolKernel<T><<<gridStrideBlocks(total, 65535 * 8), kGridStrideThreads, 0, stream>>>(d, static_cast<T const*>(input),
        static_cast<T const*>(rois), static_cast<T const*>(offset), static_cast<T*>(output), total);
    return launchStatus("the DeformRoIPool kernel");
}

template <typename T>
Status launchPsroiPool(dcn_deform_psroi_pool_desc const& d, void const* input, void const* rois, void const* trans,
    void* output, cudaStream_t stream)
{
    int64_t const total = int64_t(d.num_rois) * d.output_dim * d.pooled_size * d.pooled_size;
    psroiPoolKernel<T><<<gridStrideBlocks(total, 65535 * 8), kGridStrideThreads, 0, stream>>>(d, static_cast<T const*>(input),
        static_cast<T const*>(rois), static_cast<T const*>(trans), static_cast<T*>(output), total);
    return launchStatus("the DeformPSRoIPool kernel");
}

} // namespace

// C++ entry points for the TensorRT plugins.
Status launchDeformRoiPool(dcn_deform_roi_pool_desc const& d, int32_t dtype, void const* input, void const* rois,
    void const* offset, void* output, cudaStream_t stream)
{
    Status status = checkRoiPool(d);
    if (!status.ok() || d.num_rois == 0)
        return status;
    return withElementType(dtype, [&](auto tag) {
        return launchRoiPool<decltype(tag)>(d, input, rois, offset, output, stream);
    });
}

Status launchDeformPsroiPool(dcn_deform_psroi_pool_desc const& d, int32_t dtype, void const* input, void const* rois,
    void const* trans, void* output, cudaStream_t stream)
{
    Status status = checkPsroiPool(d);
    if (!status.ok() || d.num_rois == 0)
        return status;
    return withElementType(dtype, [&](auto tag) {
        return launchPsroiPool<decltype(tag)>(d, input, rois, trans, output, stream);
    });
}

} // namespace dcn

DCN_API int32_t dcn_deform_roi_pool_forward_cuda(const dcn_deform_roi_pool_desc* desc, int32_t dtype,
    const void* input, const void* rois, const void* offset, void* output, void* stream)
{
    return dcn::guarded([&] {
        if (!desc)
            return dcn::Status::invalid("dcn_deform_roi_pool_forward_cuda: desc must not be NULL");
        if (desc->num_rois > 0 && (!input || !rois || !output))
            return dcn::Status::invalid("dcn_deform_roi_pool_forward_cuda: input, rois and output must not be NULL");
        return dcn::launchDeformRoiPool(*desc, dtype, input, rois, offset, output, static_cast<cudaStream_t>(stream));
    });
}

DCN_API int32_t dcn_deform_psroi_pool_forward_cuda(const dcn_deform_psroi_pool_desc* desc, int32_t dtype,
    const void* input, const void* rois, const void* trans, void* output, void* stream)
{
    return dcn::guarded([&] {
        if (!desc)
            return dcn::Status::invalid("dcn_deform_psroi_pool_forward_cuda: desc must not be NULL");
        if (desc->num_rois > 0 && (!input || !rois || !output || (!desc->no_trans && !trans)))
            return dcn::Status::invalid("dcn_deform_psroi_pool_forward_cuda: input, rois, output (and trans unless "
                                        "no_trans) must not be NULL");
        return dcn::launchDeformPsroiPool(*desc, dtype, input, rois, trans, output, static_cast<cudaStream_t>(stream));
    });
}

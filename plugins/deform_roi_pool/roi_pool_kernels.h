/*
 * C ABI of the deformable RoI pooling kernels (dcn_deploy ops DeformRoIPool and DeformPSRoIPool, docs/ops.md).
 *
 * Exported by the same libraries as plugins/common/dcn_kernels.h: the *_host functions by libdcn_deploy_host.so
 * (host pointers), the *_cuda functions by libdcn_deploy_kernels.so and libdcn_deploy_plugin.so (device pointers,
 * a cudaStream_t passed as void*). Every function returns a dcn_status; dcn_last_error() explains a failure.
 *
 * Semantics: dcn_deploy.ops.roi_pool (mmcv's deform_roi_pool; Deformable-ConvNets' DeformablePSROIPooling).
 * Layout: input (N, C, H, W), rois (K, 5) rows (batch index, x1, y1, x2, y2), all contiguous and of one dtype.
 * A RoI whose batch index (truncated toward zero) is outside [0, N) pools to 0 (kernels cannot raise).
 */
#ifndef DCN_ROI_POOL_KERNELS_H
#define DCN_ROI_POOL_KERNELS_H

#include "dcn_kernels.h"

/* DeformRoIPool: offset (K, 2, pooled_height, pooled_width) or NULL (plain RoIAlign). sampling_ratio 0 = adaptive
 * (ceil(roi size / pooled size) per RoI), which the kernels support although the ONNX function body cannot. */
typedef struct dcn_deform_roi_pool_desc
{
    int32_t batch, channels, height, width, num_rois;
    int32_t pooled_height, pooled_width, sampling_ratio;
    float spatial_scale, gamma;
} dcn_deform_roi_pool_desc;

/* DeformPSRoIPool: input channels = output_dim*group_size^2; trans (K, 2*num_classes, part_size, part_size), or
 * NULL / ignored when no_trans. part_size 0 means pooled_size. */
typedef struct dcn_deform_psroi_pool_desc
{
    int32_t batch, channels, height, width, num_rois;
    int32_t output_dim, group_size, pooled_size, part_size, sample_per_part, num_classes, no_trans;
    float spatial_scale, trans_std;
} dcn_deform_psroi_pool_desc;

DCN_API int32_t dcn_deform_roi_pool_check(const dcn_deform_roi_pool_desc* desc);
DCN_API int32_t dcn_deform_psroi_pool_check(const dcn_deform_psroi_pool_desc* desc);

/* ---- libdcn_deploy_host.so ---- */
DCN_API int32_t dcn_deform_roi_pool_forward_host(const dcn_deform_roi_pool_desc* desc, int32_t dtype,
    const void* input, const void* rois, const void* offset, void* output);
DCN_API int32_t dcn_deform_psroi_pool_forward_host(const dcn_deform_psroi_pool_desc* desc, int32_t dtype,
    const void* input, const void* rois, const void* trans, void* output);
/* The fast CPU forwards (PyTorch's CPU path): the same results, float32 (0) or float64 (3) only; num_threads OpenMP
 * threads, 0 for OpenMP's default. */
DCN_API int32_t dcn_deform_roi_pool_forward_cpu(const dcn_deform_roi_pool_desc* desc, int32_t dtype,
    const void* input, const void* rois, const void* offset, void* output, int32_t num_threads);
DCN_API int32_t dcn_deform_psroi_pool_forward_cpu(const dcn_deform_psroi_pool_desc* desc, int32_t dtype,
    const void* input, const void* rois, const void* trans, void* output, int32_t num_threads);

/* ---- libdcn_deploy_kernels.so / libdcn_deploy_plugin.so ---- */
DCN_API int32_t dcn_deform_roi_pool_forward_cuda(const dcn_deform_roi_pool_desc* desc, int32_t dtype,
    const void* input, const void* rois, const void* offset, void* output, void* stream);
DCN_API int32_t dcn_deform_psroi_pool_forward_cuda(const dcn_deform_psroi_pool_desc* desc, int32_t dtype,
    const void* input, const void* rois, const void* trans, void* output, void* stream);

#endif /* DCN_ROI_POOL_KERNELS_H */

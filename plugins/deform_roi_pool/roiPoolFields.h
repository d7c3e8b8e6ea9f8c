// The TensorRT plugins' plain logic for DeformRoIPool and DeformPSRoIPool (no TensorRT or CUDA types): field
// parsing and serialisation (names = the ONNX attributes of docs/ops.md) and the shape checks that turn the
// input shapes into a kernel descriptor. Tests reach the parsers through the C ABI (dcn_plugin_*_parse_fields).
#pragma once

#include "dcnStatus.h"
#include "pluginFields.h"
#include "roi_pool_kernels.h"

#include <cstdint>
#include <string>
#include <vector>

namespace dcn
{

// One field to serialise (owned): an int32 or a float32 value.
struct RoiOwnedField
{
    std::string name;
    bool isFloat;
    int32_t intValue;
    float floatValue;
};

// Defaults = the ONNX schema's defaults.
dcn_deform_roi_pool_desc defaultRoiPoolAttrs();
dcn_deform_psroi_pool_desc defaultPsroiPoolAttrs();

// Parse known fields (int fields: INT32 or INT64; float fields: FLOAT32 or FLOAT64; one value each), ignore
// unknown ones (plugin_namespace, ...), then check the values. Shape members of the descriptor are left 0.
Status parseRoiPoolFields(std::vector<RawField> const& fields, dcn_deform_roi_pool_desc& attrs);
Status parsePsroiPoolFields(std::vector<RawField> const& fields, dcn_deform_psroi_pool_desc& attrs);

std::vector<RoiOwnedField> roiPoolFields(dcn_deform_roi_pool_desc const& attrs);
std::vector<RoiOwnedField> psroiPoolFields(dcn_deform_psroi_pool_desc const& attrs);

// The descriptor for inputs X (4-D), rois (2-D) and offset/trans (4-D), -1 for an unknown dimension (skipped by
// the checks). Fails naming the input whose known dimensions do not fit.
Status roiPoolDescFromShapes(dcn_deform_roi_pool_desc const& attrs, int32_t const* ranks, int64_t const* const* dims,
    dcn_deform_roi_pool_desc& desc);
Status psroiPoolDescFromShapes(dcn_deform_psroi_pool_desc const& attrs, int32_t const* ranks,
    int64_t const* const* dims, dcn_deform_psroi_pool_desc& desc);

} // namespace dcn

/* C ABI for tests: parse TensorRT-style fields into a descriptor (shape members 0). */
DCN_API int32_t dcn_plugin_deform_roi_pool_parse_fields(int32_t count, const char* const* names,
    const void* const* data, const int32_t* lengths, const int32_t* types, dcn_deform_roi_pool_desc* attrs);
DCN_API int32_t dcn_plugin_deform_psroi_pool_parse_fields(int32_t count, const char* const* names,
    const void* const* data, const int32_t* lengths, const int32_t* types, dcn_deform_psroi_pool_desc* attrs);

// TensorRT data types and formats <-> the C ABI's element types, shared by every plugin.
#pragma once

#include "dcn_kernels.h"

#include <NvInferRuntime.h>

#include <cstdint>

namespace dcn
{

// The I/O types our plugins accept: float32, float16 and bfloat16 (all inputs of one type).
inline bool supportedType(nvinfer1::DataType type)
{
    return type == nvinfer1::DataType::kFLOAT || type == nvinfer1::DataType::kHALF
        || type == nvinfer1::DataType::kBF16;
}

// supportsFormatCombination of our plugins: every input and the output linear (NCHW) and of one supported type,
// the first input's.
inline bool linearOfOneType(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
    int32_t nbOutputs)
{
    if (pos < 0 || pos >= nbInputs + nbOutputs)
        return false;
    nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != nvinfer1::TensorFormat::kLINEAR || !supportedType(desc.type))
        return false;
    return pos == 0 || desc.type == inOut[0].desc.type;
}

// The channels-last format TensorRT binds to a supported type (NvInferRuntime.h's TensorFormat): HWC8 for the half
// types (C padded to a multiple of 8), HWC for float32 (unpadded).
inline nvinfer1::TensorFormat channelsLastFormatOf(nvinfer1::DataType type)
{
    return type == nvinfer1::DataType::kFLOAT ? nvinfer1::TensorFormat::kHWC : nvinfer1::TensorFormat::kHWC8;
}

inline bool isChannelsLastFormat(nvinfer1::TensorFormat format)
{
    return format == nvinfer1::TensorFormat::kHWC8 || format == nvinfer1::TensorFormat::kHWC;
}

// The C ABI element type of a supported TensorRT type.
inline int32_t dcnDtype(nvinfer1::DataType type)
{
    switch (type)
    {
    case nvinfer1::DataType::kHALF: return DCN_FLOAT16;
    case nvinfer1::DataType::kBF16: return DCN_BFLOAT16;
    default: return DCN_FLOAT32;
    }
}

} // namespace dcn

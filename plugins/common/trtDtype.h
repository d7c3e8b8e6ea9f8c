// TensorRT data types <-> the C ABI's element types, shared by every plugin.
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

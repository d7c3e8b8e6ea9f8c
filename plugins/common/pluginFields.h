// A TensorRT plugin field as our plain-C++ plugin logic sees it (no TensorRT types): both plugins' field parsers
// take these, and the shells convert TensorRT's PluginField to them.
#pragma once

#include <cstdint>

namespace dcn
{

// nvinfer1::PluginFieldType codes of the field types our parsers read.
constexpr int32_t kFieldTypeFloat32 = 1;
constexpr int32_t kFieldTypeFloat64 = 2;
constexpr int32_t kFieldTypeInt32 = 5;
constexpr int32_t kFieldTypeInt64 = 10;

// One field as TensorRT hands it over (the pointer is borrowed); type is a PluginFieldType code.
struct RawField
{
    char const* name;
    void const* data;
    int32_t length;
    int32_t type;
};

} // namespace dcn

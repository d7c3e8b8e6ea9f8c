// TensorRT IPluginV3 shells of DeformRoIPool and DeformPSRoIPool (op set dcn_deploy, version "1"; docs/ops.md).
// The logic lives in roiPoolFields.h (fields, shapes) and roiPoolKernel.h (kernels); the plugin classes
// (roiPoolPlugin.cpp) only translate types. Both are one class template over the op.
#pragma once

#include "roiPoolFields.h"

#include <NvInferRuntime.h>

#include <vector>

namespace dcn
{

// The creator of one op's plugin; Op is DeformRoiPoolOp or DeformPsroiPoolOp (roiPoolPlugin.cpp).
template <typename Op>
class RoiPoolPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    RoiPoolPluginCreator();
    ~RoiPoolPluginCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &mFieldCollection; }
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override { return "1"; }
    char const* getPluginNamespace() const noexcept override { return "dcn_deploy"; }

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

struct DeformRoiPoolOp;
struct DeformPsroiPoolOp;
using DeformRoiPoolPluginCreator = RoiPoolPluginCreator<DeformRoiPoolOp>;
using DeformPsroiPoolPluginCreator = RoiPoolPluginCreator<DeformPsroiPoolOp>;

extern template class RoiPoolPluginCreator<DeformRoiPoolOp>;
extern template class RoiPoolPluginCreator<DeformPsroiPoolOp>;

} // namespace dcn

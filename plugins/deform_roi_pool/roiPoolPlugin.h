// TensorRT IPluginV3 shells of DeformRoIPool and DeformPSRoIPool (op set dcn_deploy, version "1"; docs/ops.md).
// The logic lives in roiPoolFields.h (fields, shapes) and roiPoolKernel.h (kernels); the plugin classes
// (roiPoolPlugin.cpp) only translate types. Both are one class template over the op.
#pragma once

#include "pluginShell.h"
#include "roiPoolFields.h"

#include <NvInferRuntime.h>

namespace dcn
{

// The creator of one op's plugin; Op is DeformRoiPoolOp or DeformPsroiPoolOp (roiPoolPlugin.cpp). Name, version,
// namespace and field names: PluginCreatorShell (pluginShell.h).
template <typename Op>
class RoiPoolPluginCreator : public PluginCreatorShell
{
public:
    RoiPoolPluginCreator();
    ~RoiPoolPluginCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;
};

struct DeformRoiPoolOp;
struct DeformPsroiPoolOp;
using DeformRoiPoolPluginCreator = RoiPoolPluginCreator<DeformRoiPoolOp>;
using DeformPsroiPoolPluginCreator = RoiPoolPluginCreator<DeformPsroiPoolOp>;

extern template class RoiPoolPluginCreator<DeformRoiPoolOp>;
extern template class RoiPoolPluginCreator<DeformPsroiPoolOp>;

} // namespace dcn

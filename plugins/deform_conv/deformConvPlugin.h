// TensorRT IPluginV3 shell of DeformConv2d (op set dcn_deploy, version "1"; docs/ops.md). The logic lives in
// deformConvShapes.h (fields, shapes) and deformConvKernel.h (kernels); these classes only translate types.
#pragma once

#include "cublasLoader.h"
#include "deformConvGemmPlan.h"
#include "deformConvMath.h"
#include "deformConvShapes.h"
#include "deformConvTactics.h"
#include "pluginShell.h"

#include <NvInferRuntime.h>

#include <memory>
#include <string>
#include <vector>

namespace dcn
{

constexpr char const* kDeformConvPluginName = "DeformConv2d";

// The IPluginV3 parts every plugin shares (capabilities, clone, name, version, namespace, one output, formats) are
// PluginV3Shell's (pluginShell.h).
class DeformConvPlugin : public PluginV3Shell<DeformConvPlugin>
{
public:
    static constexpr char const* kName = kDeformConvPluginName;

    // columnBudget: the GEMM path's, as an engine's fields carry it (parseColumnBudgetField); a build chooses its
    // own in configurePlugin (deformConvPluginWorkspace.h). allowTf32: the field kFieldAllowTf32 (parseFields).
    explicit DeformConvPlugin(
        dcn_deform_conv_attrs const& attrs, size_t columnBudget = kGemmDefaultColumnBudget, bool allowTf32 = false);
    DeformConvPlugin(DeformConvPlugin const& other);
    DeformConvPlugin& operator=(DeformConvPlugin const&) = delete;
    ~DeformConvPlugin() override = default;

    // IPluginV3OneBuild
    // Linear tensors of one type (PluginV3Shell's), or X and Y channels-last (kHWC8 for half types, kHWC for
    // float32: channelsLastFormatOf) where channelsLastRefusal allows: TensorRT's own half-precision convolutions
    // run channels-last, so the layer then needs no reformat around it, and the GEMM path none of its own transposes.
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    // The kernels TensorRT times for the last configurePlugin's types and profile (deformConvTactics.h).
    int32_t getNbTactics() noexcept override { return int32_t(mValidTactics.size()); }
    int32_t getValidTactics(int32_t* tactics, int32_t nbTactics) noexcept override;
    char const* getTimingCacheID() noexcept override { return mTimingCacheId.c_str(); }

    // IPluginV3OneRuntime
    // The tactic of the next enqueue: while timing at build time, and the engine's choice after deserialisation.
    int32_t setTactic(int32_t tactic) noexcept override;
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    // The tactic the next enqueue runs (kTacticDefault until setTactic); for logs and the shell test.
    int32_t tactic() const noexcept { return mTactic; }
    // The GEMM path's column budget the workspace is sized with; for logs and the shell test.
    size_t columnBudget() const noexcept { return mColumnBudget; }
    // Whether float32 layers may run the GEMM path's products on TF32 tensor cores (kFieldAllowTf32); for the shell test.
    bool allowTf32() const noexcept { return mAllowTf32; }
    // The GEMM path's options the next enqueue passes to the launch (column budget, TF32 for float32 layers where
    // allowTf32, channels-last tensors where X is kHWC8 or kHWC); for the shell test.
    GemmOptions gemmOptions() const;

private:
    void refreshSerializedFields();

    dcn_deform_conv_attrs mAttrs;
    // The GEMM path's column budget: set by configurePlugin to fit kWorkspaceLimitVariable at the profile's largest
    // shapes, serialised into the engine, and used by every enqueue (the workspace was sized with it).
    size_t mColumnBudget;
    // The field kFieldAllowTf32: the build allowed TF32, so float32 enqueues pass GemmOptions::tf32 (the C ABI's
    // DCN_FORWARD_ALLOW_TF32) to the launch; half types ignore it. Serialised into the engine.
    bool mAllowTf32;
    // Set by onShapeChange for the shapes of the next enqueue.
    DeformConvGeometry mGeometry{};
    int32_t mDtype = DCN_FLOAT32;
    int32_t mNbInputs = 0;
    // X and Y are channels-last (kHWC8 or kHWC): set by configurePlugin and onShapeChange from X's format.
    bool mChannelsLast = false;
    // Set by configurePlugin: what getValidTactics offers (never tactic 0).
    std::vector<int32_t> mValidTactics;
    // Set by setTactic; 0 (the heuristic) until TensorRT sets one.
    int32_t mTactic = kTacticDefault;
    // False once attachToContext failed to create this instance's cuBLAS handle: the gemm tactic then runs the
    // heuristic, which falls back to the fused kernel.
    bool mCublasUsable = true;
    std::string mTimingCacheId;
    // The GEMM path's cuBLAS handle: this instance's own (a clone makes a new one), created in attachToContext,
    // bound to each enqueue's stream, destroyed with the instance.
    std::unique_ptr<CublasHandle> mCublas = std::make_unique<CublasHandle>(/*rememberFailure=*/true);
    // Storage behind getFieldsToSerialize.
    SerializedFields<OwnedField> mSerializedFields;
};

// Name, version, namespace and field names: PluginCreatorShell (pluginShell.h).
class DeformConvPluginCreator : public PluginCreatorShell
{
public:
    DeformConvPluginCreator();
    ~DeformConvPluginCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;
};

} // namespace dcn

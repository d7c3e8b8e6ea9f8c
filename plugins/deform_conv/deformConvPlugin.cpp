#include "deformConvPlugin.h"

#include "deformConvDirectChannelsLast.h"
#include "deformConvKernel.h"
#include "deformConvPluginWorkspace.h"
#include "trtDtype.h"
#include "trtLogging.h"

#include <algorithm>
#include <exception>

using namespace nvinfer1;

namespace dcn
{
namespace
{

std::string const kWho = pluginWho(kDeformConvPluginName);
// The inputs as the count checks' messages list them.
constexpr char const* kInputNames = "X, W, offset[, B[, mask]]";

// A TensorRT dimension expression with the operators convOutputExtent needs, so the plugin's symbolic output
// shape and the tested integer arithmetic are one formula.
struct DimExpr
{
    IDimensionExpr const* expr;
    IExprBuilder* builder;

    DimExpr binary(DimensionOperation op, IDimensionExpr const* other) const
    {
        return DimExpr{builder->operation(op, *expr, *other), builder};
    }
};
DimExpr operator+(DimExpr a, int64_t v) { return a.binary(DimensionOperation::kSUM, a.builder->constant(v)); }
DimExpr operator-(DimExpr a, int64_t v) { return a.binary(DimensionOperation::kSUB, a.builder->constant(v)); }
DimExpr operator-(DimExpr a, DimExpr b) { return a.binary(DimensionOperation::kSUB, b.expr); }
DimExpr operator*(DimExpr a, int64_t v) { return a.binary(DimensionOperation::kPROD, a.builder->constant(v)); }
DimExpr floorDiv(DimExpr a, int64_t v) { return a.binary(DimensionOperation::kFLOOR_DIV, a.builder->constant(v)); }

TensorShape shapeOf(Dims const& dims)
{
    TensorShape shape;
    shape.rank = dims.nbDims;
    for (int32_t k = 0; k < dims.nbDims && k < 8; ++k)
        shape.d[k] = dims.d[k];
    return shape;
}

std::vector<TensorShape> shapesOf(DynamicPluginTensorDesc const* in, int32_t nbInputs)
{
    std::vector<TensorShape> shapes;
    for (int32_t k = 0; k < nbInputs; ++k)
        shapes.push_back(shapeOf(in[k].desc.dims));
    return shapes;
}

bool reject(Status const& status)
{
    if (!status.ok())
        logTrtError(kWho + status.message);
    return !status.ok();
}

void logTrtWarning(std::string const& message)
{
    logTrt(ILogger::Severity::kWARNING, kWho + message);
}

} // namespace

DeformConvPlugin::DeformConvPlugin(dcn_deform_conv_attrs const& attrs, size_t columnBudget, bool allowTf32)
    : mAttrs(attrs)
    , mColumnBudget(columnBudget)
    , mAllowTf32(allowTf32)
    , mTimingCacheId(std::string(kDeformConvPluginName) + "/" + kPluginVersion + ";"
          + timingCacheSuffix(attrs, gemmPathAvailable(), allowTf32) + workspaceLimitCacheSuffix())
{
    refreshSerializedFields();
}

DeformConvPlugin::DeformConvPlugin(DeformConvPlugin const& other)
    : PluginV3Shell(other)
    , mAttrs(other.mAttrs)
    , mColumnBudget(other.mColumnBudget)
    , mAllowTf32(other.mAllowTf32)
    , mGeometry(other.mGeometry)
    , mDtype(other.mDtype)
    , mNbInputs(other.mNbInputs)
    , mChannelsLast(other.mChannelsLast)
    , mValidTactics(other.mValidTactics)
    , mTactic(other.mTactic)
    , mTimingCacheId(other.mTimingCacheId)
{
    // mCublas is a fresh handle (and mCublasUsable true with it); attachToContext prepares it.
    refreshSerializedFields(); // the field list points into this object's storage, never the other's
}

int32_t DeformConvPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    return guardTrtCall(kDeformConvPluginName, "getOutputDataTypes", int32_t(-1), [&]() -> int32_t {
        if (reject(checkInputOutputCounts(3, 5, kInputNames, nbInputs, nbOutputs)))
            return -1;
        for (int32_t k = 1; k < nbInputs; ++k)
            if (inputTypes[k] != inputTypes[0])
            {
                logTrtError(kWho + "all inputs must have one data type (float, half or bfloat16); input "
                    + std::to_string(k) + " differs from X: cast them in the ONNX graph");
                return -1;
            }
        outputTypes[0] = inputTypes[0];
        return 0;
    });
}

int32_t DeformConvPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
    DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    return guardTrtCall(kDeformConvPluginName, "getOutputShapes", int32_t(-1), [&]() -> int32_t {
        if (nbOutputs != 1 || nbInputs < 3 || nbInputs > 5)
        {
            reject(Status::invalid(
                "expects 3 to 5 inputs (" + std::string(kInputNames) + "), got " + std::to_string(nbInputs)));
            return -1;
        }
        // Check what is known now (constants), so bad fields fail while the network is built.
        std::vector<TensorShape> known;
        for (int32_t k = 0; k < nbInputs; ++k)
        {
            TensorShape shape;
            shape.rank = inputs[k].nbDims;
            for (int32_t r = 0; r < inputs[k].nbDims && r < 8; ++r)
                shape.d[r] = inputs[k].d[r]->isConstant() ? inputs[k].d[r]->getConstantValue() : -1;
            known.push_back(shape);
        }
        TensorShape unused;
        if (reject(checkInputShapes(mAttrs, known, unused)))
            return -1;
        DimsExprs const& x = inputs[kInputX];
        DimsExprs const& w = inputs[kInputW];
        DimExpr const height{x.d[2], &exprBuilder}, width{x.d[3], &exprBuilder};
        DimExpr const kernelH{w.d[2], &exprBuilder}, kernelW{w.d[3], &exprBuilder};
        outputs[0].nbDims = 4;
        outputs[0].d[0] = x.d[0];
        outputs[0].d[1] = w.d[0];
        outputs[0].d[2] = convOutputExtent(height, kernelH, mAttrs.strides[0], mAttrs.pads[0], mAttrs.pads[2], mAttrs.dilations[0]).expr;
        outputs[0].d[3] = convOutputExtent(width, kernelW, mAttrs.strides[1], mAttrs.pads[1], mAttrs.pads[3], mAttrs.dilations[1]).expr;
        return 0;
    });
}

bool DeformConvPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    return guardTrtCall(kDeformConvPluginName, "supportsFormatCombination", false, [&]() -> bool {
        if (pos < 0 || pos >= nbInputs + nbOutputs || nbInputs <= kInputOffset)
            return false;
        PluginTensorDesc const& desc = inOut[pos].desc;
        bool const output = pos == nbInputs;
        if (!isChannelsLastFormat(desc.format)) // linear: X's format for the output
            return linearOfOneType(pos, inOut, nbInputs, nbOutputs)
                && (!output || inOut[kInputX].desc.format == TensorFormat::kLINEAR);
        if (pos != kInputX && !output) // the offsets, mask, weights and bias stay linear
            return false;
        if (!supportedType(desc.type) || desc.format != channelsLastFormatOf(desc.type))
            return false;
        if (output && (inOut[kInputX].desc.format != desc.format || desc.type != inOut[kInputX].desc.type))
            return false;
        return channelsLastRefusal(mAttrs, shapeOf(inOut[kInputX].desc.dims), shapeOf(inOut[kInputW].desc.dims),
            dcnDtype(desc.type), gemmPathAvailable())
            .empty();
    });
}

int32_t DeformConvPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept
{
    return guardTrtCall(kDeformConvPluginName, "configurePlugin", int32_t(-1), [&]() -> int32_t {
        if (nbOutputs != 1)
        {
            reject(Status::invalid("has one output, got " + std::to_string(nbOutputs)));
            return -1;
        }
        if (reject(checkInputTypes(in, nbInputs)))
            return -1;
        TensorShape output;
        if (reject(checkInputShapes(mAttrs, shapesOf(in, nbInputs), output)))
            return -1;
        // getWorkspaceSize sizes the workspace from the profile's largest shapes and must cover every smaller
        // shape; it cannot fail, so a largest shape the kernels refuse (e.g. N*oH*oW past int32) is refused here,
        // at build time, instead of leaving a 0-byte workspace for shapes that do run.
        DeformConvGeometry largest;
        TensorShape const maxX = shapeOf(in[kInputX].max), maxW = shapeOf(in[kInputW].max);
        int32_t const dtype = dcnDtype(in[0].desc.type);
        bool const channelsLast = isChannelsLastFormat(in[kInputX].desc.format);
        mValidTactics.clear(); // unknown largest shapes: no tactics to time, the heuristic runs
        if (maxX.rank == 4 && maxW.rank == 4)
        {
            Status const status = makeGeometry(descFromShapes(mAttrs, maxX, maxW), largest);
            if (!status.ok())
            {
                reject(Status::invalid("the optimisation profile's largest shapes do not fit: " + status.message
                    + "; lower the profile's max shapes"));
                return -1;
            }
            // A layer that is not dense has its channels-last tensors read by the direct kernel alone, whose gathers
            // add 32-bit offsets within an image (supportsFormatCombination could not see the largest H and W); a
            // dense one falls back to the gemm tactic there (channelsLastTactics).
            std::string const directRefusal = channelsLast
                    && !autoTakesMatrixPath(largest.outChannelsPerGroup, largest.channelsPerGroup, largest.kernelPoints)
                ? directChannelsLastRefusal(largest, dtypeBytes(dtype))
                : std::string();
            if (!directRefusal.empty())
            {
                reject(Status::invalid("X and Y channels-last (HWC8 or HWC) at the optimisation profile's largest shapes: "
                    + directRefusal + "; lower the profile's max shapes"));
                return -1;
            }
            mValidTactics = channelsLast ? channelsLastTactics(largest, dtype) : validTactics(largest, dtype, gemmPathAvailable());
            // The workspace TensorRT may give this layer: at most the build's limit, when one is set.
            size_t limit = 0;
            size_t fitted = kGemmDefaultColumnBudget;
            bool chargesTensors = false;
            Status budget = workspaceLimitFromEnvironment(limit);
            if (budget.ok())
                budget = workspaceChargesTensorsFromEnvironment(chargesTensors);
            size_t const tensorBytes
                = chargesTensors ? layerTensorBytes(largest, dtype, nbInputs > kInputBias, nbInputs > kInputMask) : 0;
            if (budget.ok())
                budget = columnBudgetWithin(largest, dtype, gemmPathAvailable(), limit, tensorBytes, fitted,
                    channelsLast);
            if (reject(budget))
                return -1;
            // The smallest budget any configuration (optimisation profile) needed: every workspace sized earlier
            // with a larger one still covers it (planGemm's rooms never shrink as the budget grows), and the engine
            // keeps one budget per layer.
            mColumnBudget = std::min(mColumnBudget, fitted);
            if (mColumnBudget < kGemmDefaultColumnBudget)
                logTrt(ILogger::Severity::kINFO, kWho + "column budget " + describeBytes(mColumnBudget) + " instead of "
                    + describeBytes(kGemmDefaultColumnBudget) + ", so that the workspace ("
                    + describeBytes(pluginWorkspaceBytes(largest, dtype, gemmPathAvailable(), mColumnBudget,
                        channelsLast))
                    + (tensorBytes ? ", with " + describeBytes(tensorBytes) + " of inputs and outputs" : std::string())
                    + ") fits " + kWorkspaceLimitVariable + " (" + describeBytes(limit)
                    + "): the same results, in more chunks");
        }
        mNbInputs = nbInputs;
        mDtype = dtype;
        mChannelsLast = channelsLast;
        return 0;
    });
}

size_t DeformConvPlugin::getWorkspaceSize(
    DynamicPluginTensorDesc const* inputs, int32_t nbInputs, DynamicPluginTensorDesc const*, int32_t) const noexcept
{
    return guardTrtCall(kDeformConvPluginName, "getWorkspaceSize", size_t(0), [&]() -> size_t {
        if (nbInputs < 3)
            return 0;
        // The largest shapes of the profile bound every workspace the kernels ask for.
        TensorShape const x = shapeOf(inputs[kInputX].max);
        TensorShape const w = shapeOf(inputs[kInputW].max);
        DeformConvGeometry geometry;
        if (x.rank != 4 || w.rank != 4)
            return 0;
        // An invalid largest shape is logged (enqueue would then fail on a missing workspace, not silently).
        if (reject(makeGeometry(descFromShapes(mAttrs, x, w), geometry)))
            return 0;
        // Enough for whichever tactic TensorRT picks, and for the heuristic (tactic 0, the gemm tactic's fallback),
        // with the column budget configurePlugin chose.
        return pluginWorkspaceBytes(geometry, dcnDtype(inputs[kInputX].desc.type), gemmPathAvailable(), mColumnBudget,
            isChannelsLastFormat(inputs[kInputX].desc.format));
    });
}

int32_t DeformConvPlugin::getValidTactics(int32_t* tactics, int32_t nbTactics) noexcept
{
    return guardTrtCall(kDeformConvPluginName, "getValidTactics", int32_t(-1), [&]() -> int32_t {
        // nbTactics is what getNbTactics answered after the same configurePlugin. Fewer slots still get valid
        // ids; more would leave TensorRT timing undefined ones.
        if (tactics == nullptr || nbTactics < 0 || nbTactics > int32_t(mValidTactics.size()))
        {
            reject(Status::invalid("getValidTactics was asked for " + std::to_string(nbTactics) + " tactics, "
                + std::to_string(mValidTactics.size()) + " were advertised (getNbTactics)"));
            return -1;
        }
        std::copy(mValidTactics.begin(), mValidTactics.begin() + nbTactics, tactics);
        return 0;
    });
}

int32_t DeformConvPlugin::setTactic(int32_t tactic) noexcept
{
    return guardTrtCall(kDeformConvPluginName, "setTactic", int32_t(-1), [&]() -> int32_t {
        int32_t algo = DCN_ALGO_AUTO;
        if (reject(algoForTactic(tactic, true, algo)))
            return -1;
        if (tactic == kTacticGemm && !gemmPathAvailable()) // an engine built where cuBLAS loads, run where it does not
            logTrtWarning(std::string("the engine chose the cuBLAS GEMM tactic, but ") + cublasUnavailableReason()
                + "; running the default choice instead (same results, maybe slower): install cuBLAS or rebuild "
                  "the engine here");
        else if (tactic == kTacticGemm && !mCublasUsable)
            logTrtWarning("the engine chose the cuBLAS GEMM tactic, but this context has no cuBLAS handle; running "
                          "the default choice instead");
        mTactic = tactic;
        return 0;
    });
}

int32_t DeformConvPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const*, int32_t) noexcept
{
    return guardTrtCall(kDeformConvPluginName, "onShapeChange", int32_t(-1), [&]() -> int32_t {
        if (nbInputs < 3 || nbInputs > 5)
            return -1;
        std::vector<TensorShape> shapes;
        for (int32_t k = 0; k < nbInputs; ++k)
            shapes.push_back(shapeOf(in[k].dims));
        TensorShape output;
        if (reject(checkInputShapes(mAttrs, shapes, output)))
            return -1;
        if (reject(makeGeometry(descFromShapes(mAttrs, shapes[kInputX], shapes[kInputW]), mGeometry)))
            return -1;
        mNbInputs = nbInputs;
        mDtype = dcnDtype(in[0].type);
        mChannelsLast = isChannelsLastFormat(in[kInputX].format);
        return 0;
    });
}

int32_t DeformConvPlugin::enqueue(PluginTensorDesc const*, PluginTensorDesc const*, void const* const* inputs,
    void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    return guardTrtCall(kDeformConvPluginName, "enqueue", int32_t(-1), [&]() -> int32_t {
        void const* bias = mNbInputs >= 4 ? inputs[kInputBias] : nullptr;
        void const* mask = mNbInputs >= 5 ? inputs[kInputMask] : nullptr;
        int32_t algo = DCN_ALGO_AUTO;
        Status status = algoForTactic(mTactic, mCublasUsable && gemmPathAvailable(), algo);
        // What this shape needs with this algorithm, not the allocation (sized in getWorkspaceSize for the profile's
        // largest shapes and every tactic, unknown here after deserialisation): the kernels plan their chunks from
        // the shapes alone, so more room would not change what they do, and the launch's check stays exact.
        GemmOptions const gemm = gemmOptions();
        if (status.ok())
            status = launchDeformConv(mGeometry, mDtype, algo, inputs[kInputX], inputs[kInputOffset], inputs[kInputW],
                bias, mask, outputs[0], workspace, deformConvWorkspaceSize(mGeometry, mDtype, algo, gemm), stream,
                mCublas.get(), gemm);
        return reject(status) ? -1 : 0;
    });
}

IPluginV3* DeformConvPlugin::attachToContext(IPluginResourceContext*) noexcept
{
    // The clone owns a fresh cuBLAS handle, made here rather than in the first enqueue, which may run under CUDA
    // graph capture (cublasCreate allocates). Where cuBLAS does not load, nothing is made: AUTO runs the fused kernel.
    auto* attached = static_cast<DeformConvPlugin*>(clone());
    if (attached && gemmPathAvailable())
    {
        Status const status = attached->mCublas->prepare();
        attached->mCublasUsable = status.ok();
        if (!status.ok() && attached->mTactic == kTacticGemm)
            logTrtWarning("no cuBLAS handle for the engine's GEMM tactic (" + status.message
                + "); running the default choice instead");
    }
    return attached;
}

PluginFieldCollection const* DeformConvPlugin::getFieldsToSerialize() noexcept
{
    refreshSerializedFields();
    return mSerializedFields.collection();
}

GemmOptions DeformConvPlugin::gemmOptions() const
{
    GemmOptions options;
    options.columnBudget = mColumnBudget;
    // The field, as the C ABI's forward maps DCN_FORWARD_ALLOW_TF32: float32 layers only (the plan ignores it for
    // other types too). It changes no workspace size, so the one sized at build time still fits.
    options.tf32 = mAllowTf32 && mDtype == DCN_FLOAT32;
    // X and Y channels-last (kHWC8 for half types, offered only for C and oC multiples of 8, where it is plain NHWC;
    // kHWC for float32): the GEMM path or the channels-last direct kernel reads and writes them where they are.
    options.channelsLastTensors = mChannelsLast;
    return options;
}

void DeformConvPlugin::refreshSerializedFields()
{
    std::vector<OwnedField> owned = fieldsFromAttrs(mAttrs);
    owned.push_back({kFieldColumnBudget, {int32_t(mColumnBudget >> 20)}}); // whole MiB (columnBudgetWithin)
    owned.push_back({kFieldAllowTf32, {mAllowTf32 ? 1 : 0}});
    mSerializedFields.assign(std::move(owned), [](OwnedField const& field) {
        return PluginField(
            field.name.c_str(), field.values.data(), PluginFieldType::kINT32, int32_t(field.values.size()));
    });
}

// The names the ONNX parser passes on (docs/ops.md); the pointers are static strings.
DeformConvPluginCreator::DeformConvPluginCreator()
    : PluginCreatorShell(kDeformConvPluginName,
        {
            PluginField(kFieldStrides, nullptr, PluginFieldType::kINT32, 2),
            PluginField(kFieldPads, nullptr, PluginFieldType::kINT32, 4),
            PluginField(kFieldDilations, nullptr, PluginFieldType::kINT32, 2),
            PluginField(kFieldGroup, nullptr, PluginFieldType::kINT32, 1),
            PluginField(kFieldOffsetGroup, nullptr, PluginFieldType::kINT32, 1),
            PluginField(kFieldAllowTf32, nullptr, PluginFieldType::kINT32, 1), // set by `dcn-deploy build`, not ONNX
        })
{
}

IPluginV3* DeformConvPluginCreator::createPlugin(char const* name, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept
{
    return guardTrtCall(kDeformConvPluginName, "createPlugin", static_cast<IPluginV3*>(nullptr), [&]() -> IPluginV3* {
        std::vector<RawField> const fields = rawFields(fc);
        dcn_deform_conv_attrs attrs;
        bool allowTf32 = false;
        size_t columnBudget = kGemmDefaultColumnBudget;
        Status status = phase == TensorRTPhase::kRUNTIME ? requireEngineFields(fields) : Status::success();
        if (status.ok())
            status = parseFields(fields, attrs, allowTf32);
        if (status.ok())
            status = parseColumnBudgetField(fields, columnBudget);
        if (!status.ok())
        {
            logTrtError(kWho + "node '" + (name ? name : "?") + "': " + status.message);
            return nullptr;
        }
        return new DeformConvPlugin(attrs, columnBudget, allowTf32);
    });
}

} // namespace dcn

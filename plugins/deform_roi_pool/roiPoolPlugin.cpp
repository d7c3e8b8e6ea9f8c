#include "roiPoolPlugin.h"

#include "roiPoolKernel.h"
#include "trtDtype.h"
#include "trtLogging.h"

#include <exception>
#include <string>

using namespace nvinfer1;

namespace dcn
{

// What differs between the two ops; everything else is RoiPoolPlugin<Op>.
struct DeformRoiPoolOp
{
    using Desc = dcn_deform_roi_pool_desc;
    static constexpr char const* kName = "DeformRoIPool";
    static constexpr char const* kInputs = "X, rois, offset";
    static Status parse(std::vector<RawField> const& f, Desc& d) { return parseRoiPoolFields(f, d); }
    static std::vector<RoiOwnedField> fields(Desc const& d) { return roiPoolFields(d); }
    static Status fromShapes(Desc const& a, int32_t const* ranks, int64_t const* const* dims, Desc& d)
    {
        return roiPoolDescFromShapes(a, ranks, dims, d);
    }
    static void outputDims(Desc const& a, DimsExprs const* in, IExprBuilder& b, DimsExprs& out)
    {
        out.nbDims = 4;
        out.d[0] = in[1].d[0];
        out.d[1] = in[0].d[1];
        out.d[2] = b.constant(a.pooled_height);
        out.d[3] = b.constant(a.pooled_width);
    }
    static Status launch(Desc const& d, int32_t dtype, void const* const* in, void* out, cudaStream_t stream)
    {
        return launchDeformRoiPool(d, dtype, in[0], in[1], in[2], out, stream);
    }
};

struct DeformPsroiPoolOp
{
    using Desc = dcn_deform_psroi_pool_desc;
    static constexpr char const* kName = "DeformPSRoIPool";
    static constexpr char const* kInputs = "X, rois, trans";
    static Status parse(std::vector<RawField> const& f, Desc& d) { return parsePsroiPoolFields(f, d); }
    static std::vector<RoiOwnedField> fields(Desc const& d) { return psroiPoolFields(d); }
    static Status fromShapes(Desc const& a, int32_t const* ranks, int64_t const* const* dims, Desc& d)
    {
        return psroiPoolDescFromShapes(a, ranks, dims, d);
    }
    static void outputDims(Desc const& a, DimsExprs const* in, IExprBuilder& b, DimsExprs& out)
    {
        out.nbDims = 4;
        out.d[0] = in[1].d[0];
        out.d[1] = b.constant(a.output_dim);
        out.d[2] = b.constant(a.pooled_size);
        out.d[3] = b.constant(a.pooled_size);
    }
    static Status launch(Desc const& d, int32_t dtype, void const* const* in, void* out, cudaStream_t stream)
    {
        return launchDeformPsroiPool(d, dtype, in[0], in[1], in[2], out, stream);
    }
};

namespace
{

// Three input shapes as rank + int64 rows (-1 where unknown).
struct Shapes
{
    int32_t ranks[3] = {};
    int64_t rows[3][8] = {};
    int64_t const* ptrs[3] = {rows[0], rows[1], rows[2]};

    void set(int32_t k, Dims const& dims)
    {
        ranks[k] = dims.nbDims;
        for (int32_t r = 0; r < dims.nbDims && r < 8; ++r)
            rows[k][r] = dims.d[r];
    }
};

} // namespace

// Capabilities, clone, name, version, namespace, one output, formats and attachToContext: PluginV3Shell
// (pluginShell.h).
template <typename Op>
class RoiPoolPlugin : public PluginV3Shell<RoiPoolPlugin<Op>>
{
public:
    using Desc = typename Op::Desc;
    static constexpr char const* kName = Op::kName;

    explicit RoiPoolPlugin(Desc const& attrs)
        : mAttrs(attrs)
    {
        refreshSerializedFields();
    }

    RoiPoolPlugin(RoiPoolPlugin const& other)
        : PluginV3Shell<RoiPoolPlugin>(other)
        , mAttrs(other.mAttrs)
        , mDesc(other.mDesc)
        , mDtype(other.mDtype)
    {
        refreshSerializedFields(); // the field list points into this object's storage
    }

    RoiPoolPlugin& operator=(RoiPoolPlugin const&) = delete;

    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
        int32_t nbInputs) const noexcept override
    {
        return guardTrtCall(Op::kName, "getOutputDataTypes", int32_t(-1), [&]() -> int32_t {
            Status const counts = checkInputOutputCounts(3, 3, Op::kInputs, nbInputs, nbOutputs);
            if (!counts.ok())
                return fail(counts.message);
            for (int32_t k = 1; k < nbInputs; ++k)
                if (inputTypes[k] != inputTypes[0])
                    return fail("all inputs must have X's data type (float, half or bfloat16); input " + std::to_string(k)
                        + " differs: cast it in the ONNX graph");
            outputTypes[0] = inputTypes[0];
            return 0;
        });
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t, DimsExprs* outputs,
        int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept override
    {
        return guardTrtCall(Op::kName, "getOutputShapes", int32_t(-1), [&]() -> int32_t {
            if (nbOutputs != 1 || nbInputs != 3)
                return fail("expects 3 inputs (" + std::string(Op::kInputs) + ")");
            Shapes known; // constants now, so wrong shapes fail while the network is built
            for (int32_t k = 0; k < 3; ++k)
            {
                known.ranks[k] = inputs[k].nbDims;
                for (int32_t r = 0; r < inputs[k].nbDims && r < 8; ++r)
                    known.rows[k][r] = inputs[k].d[r]->isConstant() ? inputs[k].d[r]->getConstantValue() : -1;
            }
            Desc unused;
            Status const status = Op::fromShapes(mAttrs, known.ranks, known.ptrs, unused);
            if (!status.ok())
                return fail(status.message);
            Op::outputDims(mAttrs, inputs, exprBuilder, outputs[0]);
            return 0;
        });
    }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*,
        int32_t nbOutputs) noexcept override
    {
        return guardTrtCall(Op::kName, "configurePlugin", int32_t(-1), [&]() -> int32_t {
            if (nbInputs != 3 || nbOutputs != 1)
                return fail("expects 3 inputs (" + std::string(Op::kInputs) + ") and 1 output");
            Status const types = checkInputTypes(in, 3);
            if (!types.ok())
                return fail(types.message);
            Shapes shapes;
            for (int32_t k = 0; k < 3; ++k)
                shapes.set(k, in[k].desc.dims);
            Desc unused;
            Status const status = Op::fromShapes(mAttrs, shapes.ranks, shapes.ptrs, unused);
            if (!status.ok())
                return fail(status.message);
            mDtype = dcnDtype(in[0].desc.type);
            return 0;
        });
    }

    size_t getWorkspaceSize(DynamicPluginTensorDesc const*, int32_t, DynamicPluginTensorDesc const*,
        int32_t) const noexcept override
    {
        return 0;
    }

    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const*, int32_t) noexcept override
    {
        return guardTrtCall(Op::kName, "onShapeChange", int32_t(-1), [&]() -> int32_t {
            if (nbInputs != 3)
                return -1;
            Shapes shapes;
            for (int32_t k = 0; k < 3; ++k)
                shapes.set(k, in[k].dims);
            Status const status = Op::fromShapes(mAttrs, shapes.ranks, shapes.ptrs, mDesc);
            if (!status.ok())
                return fail(status.message);
            mDtype = dcnDtype(in[0].type);
            return 0;
        });
    }

    int32_t enqueue(PluginTensorDesc const*, PluginTensorDesc const*, void const* const* inputs, void* const* outputs,
        void*, cudaStream_t stream) noexcept override
    {
        return guardTrtCall(Op::kName, "enqueue", int32_t(-1), [&]() -> int32_t {
            Status const status = Op::launch(mDesc, mDtype, inputs, outputs[0], stream);
            return status.ok() ? 0 : fail(status.message);
        });
    }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        refreshSerializedFields();
        return mSerializedFields.collection();
    }

private:
    static std::string who() { return pluginWho(Op::kName); }

    static int32_t fail(std::string const& message)
    {
        // messages of roiPoolFields already start with the op's name
        bool const named = message.rfind(Op::kName, 0) == 0;
        logTrtError(named ? std::string(kPluginNamespace) + "::" + message : who() + message);
        return -1;
    }

    void refreshSerializedFields()
    {
        mSerializedFields.assign(Op::fields(mAttrs), [](RoiOwnedField const& f) {
            return f.isFloat ? PluginField(f.name.c_str(), &f.floatValue, PluginFieldType::kFLOAT32, 1)
                             : PluginField(f.name.c_str(), &f.intValue, PluginFieldType::kINT32, 1);
        });
    }

    Desc mAttrs;
    Desc mDesc{}; // set by onShapeChange for the next enqueue
    int32_t mDtype = DCN_FLOAT32;
    SerializedFields<RoiOwnedField> mSerializedFields;
};

namespace
{

// The creator's field names and types: Op's serialised fields, in their order.
template <typename Op>
std::vector<PluginField> creatorFieldNames()
{
    typename Op::Desc defaults{};
    // PluginField names must outlive the creator: keep one static copy per op
    static std::vector<std::string> const names = [] {
        std::vector<std::string> out;
        typename Op::Desc d{};
        for (RoiOwnedField const& f : Op::fields(d))
            out.push_back(f.name);
        return out;
    }();
    std::vector<RoiOwnedField> const kinds = Op::fields(defaults);
    std::vector<PluginField> fieldNames;
    for (size_t k = 0; k < names.size(); ++k)
        fieldNames.emplace_back(names[k].c_str(), nullptr,
            kinds[k].isFloat ? PluginFieldType::kFLOAT32 : PluginFieldType::kINT32, 1);
    return fieldNames;
}

} // namespace

template <typename Op>
RoiPoolPluginCreator<Op>::RoiPoolPluginCreator()
    : PluginCreatorShell(Op::kName, creatorFieldNames<Op>())
{
}

template <typename Op>
IPluginV3* RoiPoolPluginCreator<Op>::createPlugin(char const* name, PluginFieldCollection const* fc, TensorRTPhase) noexcept
{
    return guardTrtCall(Op::kName, "createPlugin", static_cast<IPluginV3*>(nullptr), [&]() -> IPluginV3* {
        std::vector<RawField> const fields = rawFields(fc);
        typename Op::Desc attrs;
        Status const status = Op::parse(fields, attrs);
        if (!status.ok())
        {
            logTrtError(
                std::string(kPluginNamespace) + "::" + status.message + " (node '" + (name ? name : "?") + "')");
            return nullptr;
        }
        return new RoiPoolPlugin<Op>(attrs);
    });
}

template class RoiPoolPluginCreator<DeformRoiPoolOp>;
template class RoiPoolPluginCreator<DeformPsroiPoolOp>;

} // namespace dcn

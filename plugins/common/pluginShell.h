// What the TensorRT IPluginV3 shells (deformConvPlugin, roiPoolPlugin) write alike, written once: the op set's
// namespace and version, the capability switch, clone and attachToContext through the copy constructor, the
// creator's name and field list, createPlugin's view of TensorRT's fields, the storage behind getFieldNames and
// getFieldsToSerialize, and two input checks with their messages. Each shell keeps what differs: its fields,
// shapes, kernels and the rest of its messages.
#pragma once

#include "dcnStatus.h"
#include "pluginFields.h"
#include "trtDtype.h"
#include "trtLogging.h"

#include <NvInferRuntime.h>

#include <string>
#include <utility>
#include <vector>

namespace dcn
{

// Every plugin's namespace and version (docs/ops.md: op set dcn_deploy, version "1").
constexpr char const* kPluginNamespace = "dcn_deploy";
constexpr char const* kPluginVersion = "1";

// "dcn_deploy::<plugin>: ", how a plugin's log messages start.
inline std::string pluginWho(char const* plugin)
{
    return std::string(kPluginNamespace) + "::" + plugin + ": ";
}

// createPlugin's fields as our parsers take them (pluginFields.h); the pointers stay TensorRT's. fc may be null.
inline std::vector<RawField> rawFields(nvinfer1::PluginFieldCollection const* fc)
{
    std::vector<RawField> fields;
    for (int32_t k = 0; fc && k < fc->nbFields; ++k)
        fields.push_back({fc->fields[k].name, fc->fields[k].data, fc->fields[k].length, int32_t(fc->fields[k].type)});
    return fields;
}

// getOutputDataTypes' count check: minInputs to maxInputs inputs and one output, else "expects 3 to 5 inputs
// (names) and 1 output, got 2 inputs and 1 outputs" ("expects 3 inputs ..." when minInputs == maxInputs).
inline Status checkInputOutputCounts(
    int32_t minInputs, int32_t maxInputs, char const* names, int32_t nbInputs, int32_t nbOutputs)
{
    if (nbOutputs == 1 && nbInputs >= minInputs && nbInputs <= maxInputs)
        return Status::success();
    std::string const expected = std::to_string(minInputs)
        + (minInputs == maxInputs ? std::string() : " to " + std::to_string(maxInputs));
    return Status::invalid("expects " + expected + " inputs (" + names + ") and 1 output, got "
        + std::to_string(nbInputs) + " inputs and " + std::to_string(nbOutputs) + " outputs");
}

// configurePlugin's type check: every input float, half or bfloat16, and all of X's (input 0's) type.
inline Status checkInputTypes(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs)
{
    for (int32_t k = 0; k < nbInputs; ++k)
        if (!supportedType(in[k].desc.type) || in[k].desc.type != in[0].desc.type)
            return Status::invalid(
                "input " + std::to_string(k) + " must be float, half or bfloat16, the same type as X");
    return Status::success();
}

// A PluginFieldCollection over PluginFields this object keeps. Not copyable: the collection points into it.
class PluginFieldList
{
public:
    PluginFieldList() = default;
    PluginFieldList(PluginFieldList const&) = delete;
    PluginFieldList& operator=(PluginFieldList const&) = delete;

    void assign(std::vector<nvinfer1::PluginField> fields)
    {
        mFields = std::move(fields);
        mCollection.nbFields = int32_t(mFields.size());
        mCollection.fields = mFields.data();
    }
    nvinfer1::PluginFieldCollection const* collection() const noexcept { return &mCollection; }

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

// The storage behind getFieldsToSerialize: the field values a plugin owns (Owned: its shell's field type) and the
// PluginFields pointing into them. Not copyable: a copy would point into the other's values.
template <typename Owned>
class SerializedFields
{
public:
    // Keeps `owned` and lists each of its fields as toField(Owned const&) makes it, in order.
    template <typename ToField>
    void assign(std::vector<Owned> owned, ToField toField)
    {
        mOwned = std::move(owned); // kept first: the PluginFields point into it
        std::vector<nvinfer1::PluginField> fields;
        for (Owned const& field : mOwned)
            fields.push_back(toField(field));
        mList.assign(std::move(fields));
    }
    nvinfer1::PluginFieldCollection const* collection() const noexcept { return mList.collection(); }

private:
    std::vector<Owned> mOwned;
    PluginFieldList mList;
};

// The IPluginV3 parts every plugin here writes alike (CRTP). Derived names its op in a static kName, is copyable
// (clone copies it) and declares the rest; it overrides attachToContext when a context needs more than a copy.
template <typename Derived>
class PluginV3Shell : public nvinfer1::IPluginV3,
                      public nvinfer1::IPluginV3OneCore,
                      public nvinfer1::IPluginV3OneBuild,
                      public nvinfer1::IPluginV3OneRuntime
{
public:
    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override
    {
        return guardTrtCall(Derived::kName, "clone", static_cast<nvinfer1::IPluginV3*>(nullptr),
            [&]() -> nvinfer1::IPluginV3* { return new Derived(static_cast<Derived const&>(*this)); });
    }

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override { return Derived::kName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

    // IPluginV3OneBuild: one output; every input and the output linear and of one supported type (trtDtype.h).
    int32_t getNbOutputs() const noexcept override { return 1; }
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override
    {
        return linearOfOneType(pos, inOut, nbInputs, nbOutputs);
    }

    // IPluginV3OneRuntime: each execution context gets its own copy.
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext*) noexcept override { return clone(); }

protected:
    PluginV3Shell() = default;
    PluginV3Shell(PluginV3Shell const&) = default;
    PluginV3Shell& operator=(PluginV3Shell const&) = delete;
};

// The creator parts every plugin here writes alike: the op's name, version and namespace, and the field names and
// types getFieldNames hands TensorRT (the ones the ONNX parser passes on).
class PluginCreatorShell : public nvinfer1::IPluginCreatorV3One
{
public:
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return mFieldNames.collection(); }
    char const* getPluginName() const noexcept override { return mName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

protected:
    // name and the fields' names must outlive the creator (static strings).
    PluginCreatorShell(char const* name, std::vector<nvinfer1::PluginField> fieldNames)
        : mName(name)
    {
        mFieldNames.assign(std::move(fieldNames));
    }

private:
    char const* mName;
    PluginFieldList mFieldNames;
};

} // namespace dcn

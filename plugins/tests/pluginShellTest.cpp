// Exercises the TensorRT plugin shell (creator, fields, getOutputShapes, format/type checks, configure,
// serialisation, clone) without the TensorRT library: TensorRT's interface classes are header-only, and the two
// it implements internally (IExprBuilder, IDimensionExpr) are stood in for by a minimal expression evaluator
// below. This checks OUR shell's logic and its use of the interfaces; it says nothing about TensorRT's own
// behaviour (the engine build stays a GPU-machine check). Run by tests/test_plugin_logic.py; exit code = failures.
#include "deformConvKernel.h"
#include "deformConvPlugin.h"
#include "deformConvPluginWorkspace.h"
#include "shellTestSupport.h"
#include "trtLogging.h"

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <deque>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

using shelltest::Builder;
using shelltest::dimsExprs;
using shelltest::tensorDesc;
using shelltest::CaptureLogger;
using shelltest::check;
using shelltest::failures;
using shelltest::Finder;

// ---- helpers ----
struct Fields
{
    std::vector<std::vector<int32_t>> values;
    std::vector<std::string> names;
    std::vector<PluginField> fields;
    PluginFieldCollection collection{};

    void add(std::string const& name, std::vector<int32_t> v, PluginFieldType type = PluginFieldType::kINT32)
    {
        names.push_back(name);
        values.push_back(std::move(v));
        fields.clear();
        for (size_t k = 0; k < names.size(); ++k)
            fields.emplace_back(names[k].c_str(), values[k].data(), k + 1 == names.size() ? type : PluginFieldType::kINT32,
                int32_t(values[k].size()));
        collection.nbFields = int32_t(fields.size());
        collection.fields = fields.data();
    }
};

// Attributes used throughout: strides (2,1), pads (1,0,2,1), dilations (1,2), group 2 (or `group`), offset_group 2.
Fields standardFields(int32_t group = 2)
{
    Fields f;
    f.add("strides", {2, 1});
    f.add("pads", {1, 0, 2, 1});
    f.add("dilations", {1, 2});
    f.add("group", {group});
    f.add("offset_group", {2});
    return f;
}

dcn_deform_conv_attrs const kStandardAttrs{{2, 1}, {1, 0, 2, 1}, {1, 2}, 2, 2}; // standardFields()

// A layer of `groups` groups with as many output as input channels (C in all), on the standard attributes
// (standardFields(groups): 2 offset groups, a 3x2 kernel) at 2 x C x 10 x 12 with an oh x ow output: its five input
// shapes, its attributes and its output shape.
struct GroupedLayer
{
    std::vector<std::vector<int64_t>> shapes;
    dcn_deform_conv_attrs attrs;
    std::vector<int64_t> output;
};

GroupedLayer groupedLayer(int64_t channels, int32_t groups, int64_t oh, int64_t ow)
{
    dcn_deform_conv_attrs attrs = kStandardAttrs;
    attrs.group = groups;
    return {{{2, channels, 10, 12}, {channels, channels / groups, 3, 2}, {2, 2 * 2 * 3 * 2, oh, ow}, {channels},
                {2, 2 * 3 * 2, oh, ow}},
        attrs, {2, channels, oh, ow}};
}

// The kernels' geometry for these attributes and the X, W shapes of `shapes`; false if they do not fit.
bool geometryOf(dcn_deform_conv_attrs const& attrs, std::vector<std::vector<int64_t>> const& shapes,
    dcn::DeformConvGeometry& geometry)
{
    dcn::TensorShape x, w;
    x.rank = w.rank = 4;
    for (int k = 0; k < 4; ++k)
    {
        x.d[k] = shapes[0][k];
        w.d[k] = shapes[1][k];
    }
    return dcn::makeGeometry(dcn::descFromShapes(attrs, x, w), geometry).ok();
}

// The same for the standard fields.
bool standardGeometry(std::vector<std::vector<int64_t>> const& shapes, dcn::DeformConvGeometry& geometry)
{
    return geometryOf(kStandardAttrs, shapes, geometry);
}

template <typename Capability>
Capability* capability(IPluginV3* plugin, PluginCapabilityType type)
{
    return static_cast<Capability*>(plugin->getCapabilityInterface(type));
}

// Elements of a tensor of this shape.
size_t elementCount(std::vector<int64_t> const& shape)
{
    size_t n = 1;
    for (int64_t d : shape)
        n *= size_t(d);
    return n;
}

// The GPU checks' reference: the direct kernel over NCHW (no workspace) on device buffers x, w, offset, bias and
// mask of `shapes`, in dtype, into `reference`, on the default stream; false where the layer or the launch fails.
bool launchNchwReference(dcn_deform_conv_attrs const& attrs, std::vector<std::vector<int64_t>> const& shapes,
    int32_t dtype, void const* x, void const* w, void const* offset, void const* bias, void const* mask,
    void* reference)
{
    dcn::DeformConvGeometry geometry;
    dcn::GemmOptions nchw;
    nchw.directChannelsLast = false;
    return geometryOf(attrs, shapes, geometry)
        && dcn::launchDeformConv(geometry, dtype, DCN_ALGO_DIRECT, x, offset, w, bias, mask, reference, nullptr, 0,
            nullptr, nullptr, nchw).ok();
}

// The plugin configured as the builder does for `io` (5 inputs, then the output), each step checked (`who` names
// them): its workspace size into workspaceBytes, and the tactics to run, the default (0) first, then those offered.
std::vector<int32_t> configureAsBuilder(IPluginV3OneBuild* build, std::vector<DynamicPluginTensorDesc> const& io,
    std::string const& who, size_t& workspaceBytes)
{
    check(build->configurePlugin(io.data(), 5, &io[5], 1) == 0, who + ": configurePlugin");
    workspaceBytes = build->getWorkspaceSize(io.data(), 5, &io[5], 1);
    std::vector<int32_t> tactics(size_t(build->getNbTactics()));
    check(build->getValidTactics(tactics.data(), int32_t(tactics.size())) == 0, who + ": getValidTactics");
    tactics.insert(tactics.begin(), dcn::kTacticDefault);
    return tactics;
}

// One enqueue of the configured `plugin` as an engine runs it: a context-attached clone, setTactic(tactic),
// onShapeChange with `io` (5 inputs, then the output), the output poisoned with 0xff bytes first (NaN in every float
// type: an element the kernel never wrote shows), enqueue on the default stream. Its return code; -1 where a step
// before it failed.
int32_t enqueueAsEngine(IPluginV3* plugin, int32_t tactic, std::vector<PluginTensorDesc> const& io,
    void const* const* inputs, void* output, size_t outputBytes, void* workspace)
{
    std::unique_ptr<IPluginV3> attached(
        capability<IPluginV3OneRuntime>(plugin, PluginCapabilityType::kRUNTIME)->attachToContext(nullptr));
    auto* runtime = capability<IPluginV3OneRuntime>(attached.get(), PluginCapabilityType::kRUNTIME);
    bool const ready = runtime->setTactic(tactic) == 0 && runtime->onShapeChange(io.data(), 5, &io[5], 1) == 0;
    cudaMemset(output, 0xff, outputBytes);
    void* outputs[1] = {output};
    return ready ? runtime->enqueue(io.data(), &io[5], inputs, outputs, workspace, nullptr) : -1;
}

// With a GPU: configure the plugin as the builder does, then enqueue every tactic it offers and the default (0),
// each through a context-attached clone (as an engine runs), on random float32 data with the workspace
// getWorkspaceSize asked for, and compare with the direct kernel over NCHW on the same device buffers, within
// `tolerance` times (max |out| + 1) (IEEE float32, or TF32 products where the fields say allow_tf32 = 1). `attrs`
// are the fields' attributes. Without a GPU: reported and skipped.
void checkEnqueueOnGpu(dcn::DeformConvPluginCreator& creator, Fields& fields, dcn_deform_conv_attrs const& attrs,
    std::vector<std::vector<int64_t>> const& shapes, std::vector<int64_t> const& outShape, double tolerance,
    std::string const& label)
{
    if (!shelltest::cudaDevicePresent())
    {
        std::printf("skip enqueue on a GPU: no CUDA device\n");
        return;
    }
    std::printf("info cuBLAS GEMM path available: %s\n", dcn::gemmPathAvailable() ? "yes" : "no");
    std::unique_ptr<IPluginV3> plugin(creator.createPlugin("gpu", &fields.collection, TensorRTPhase::kBUILD));
    auto* build = capability<IPluginV3OneBuild>(plugin.get(), PluginCapabilityType::kBUILD);
    std::vector<DynamicPluginTensorDesc> io;
    for (auto const& shape : shapes)
        io.push_back(tensorDesc(shape));
    io.push_back(tensorDesc(outShape));
    std::vector<PluginTensorDesc> runtimeIo;
    for (auto const& d : io)
        runtimeIo.push_back(d.desc);
    size_t workspaceBytes = 0;
    std::vector<int32_t> const tactics = configureAsBuilder(build, io, "GPU", workspaceBytes);

    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    shelltest::DeviceBuffers buffers;
    void* device[5];
    for (size_t k = 0; k < 5; ++k)
    {
        std::vector<float> host(elementCount(shapes[k]));
        for (float& v : host)
            v = k == 2 ? 3.0f * normal(rng) : k == 4 ? std::fabs(normal(rng)) : normal(rng); // offsets reach off the image
        device[k] = buffers.upload(host);
    }
    size_t const outCount = elementCount(outShape);
    void* output = buffers.allocate(outCount);
    void* reference = buffers.allocate(outCount);
    void* workspace = buffers.allocate(workspaceBytes / sizeof(float) + 1);
    check(buffers.ok(), "GPU: buffers allocated (workspace " + std::to_string(workspaceBytes) + " bytes)");
    if (!buffers.ok())
        return;
    bool const direct = launchNchwReference(attrs, shapes, DCN_FLOAT32, device[0], device[1], device[2], device[3],
        device[4], reference);
    std::vector<float> const want = buffers.download(reference, outCount);
    void const* inputs[5] = {device[0], device[1], device[2], device[3], device[4]};
    for (int32_t tactic : tactics)
    {
        int32_t const rc
            = enqueueAsEngine(plugin.get(), tactic, runtimeIo, inputs, output, outCount * sizeof(float), workspace);
        std::vector<float> const got = buffers.download(output, outCount);
        double maxError = 0.0, maxValue = 0.0;
        for (size_t i = 0; i < got.size(); ++i)
        {
            double const error = std::fabs(double(got[i]) - double(want[i]));
            maxError = std::isnan(error) ? INFINITY : std::fmax(maxError, error);
            maxValue = std::fmax(maxValue, std::fabs(double(want[i])));
        }
        check(rc == 0 && direct && buffers.ok() && maxError <= tolerance * (maxValue + 1.0),
            "GPU (" + label + "): tactic " + dcn::tacticName(tactic) + " enqueue agrees with the direct kernel (max "
                + "abs error " + std::to_string(maxError) + ", max |out| " + std::to_string(maxValue) + ")");
    }
}

// The element types of the channels-last GPU check: float16 in HWC8, float32 in HWC (channelsLastFormatOf).
template <typename T>
struct ChannelsLastElement;
template <>
struct ChannelsLastElement<dcn::HostHalf>
{
    static constexpr DataType type = DataType::kHALF;
    static constexpr int32_t dtype = DCN_FLOAT16;
    static dcn::HostHalf from(float v) { return dcn::HostHalf{dcn::floatToHalf(v)}; }
    static double value(dcn::HostHalf v) { return dcn::halfToFloat(v.bits); }
};
template <>
struct ChannelsLastElement<float>
{
    static constexpr DataType type = DataType::kFLOAT;
    static constexpr int32_t dtype = DCN_FLOAT32;
    static float from(float v) { return v; }
    static double value(float v) { return v; }
};

// With a GPU: the plugin as TensorRT runs a layer with X and Y channels-last (float16 in HWC8, float32 in HWC), where
// it offers them: each tactic of that configuration and the default through a context-attached clone, onShapeChange
// with those formats, enqueue on NHWC buffers; against the direct kernel over NCHW on the same values, the output
// read back channels-last, within `tolerance` times (max |out| + 1). Without a GPU, or where the plugin does not
// offer the format for the layer (a dense one without cuBLAS): reported and skipped.
template <typename T>
void checkChannelsLastEnqueueOnGpu(dcn::DeformConvPluginCreator& creator, Fields& fields,
    dcn_deform_conv_attrs const& attrs, std::vector<std::vector<int64_t>> const& shapes,
    std::vector<int64_t> const& outShape, double tolerance, std::string const& label)
{
    using Element = ChannelsLastElement<T>;
    TensorFormat const format = dcn::channelsLastFormatOf(Element::type);
    std::string const formatName = format == TensorFormat::kHWC ? "HWC" : "HWC8";
    std::string const title = "GPU " + formatName + " (" + label + ")";
    if (!shelltest::cudaDevicePresent())
    {
        std::printf("skip %s enqueue on a GPU (%s): no CUDA device\n", formatName.c_str(), label.c_str());
        return;
    }
    std::unique_ptr<IPluginV3> plugin(creator.createPlugin("gpu_nhwc", &fields.collection, TensorRTPhase::kBUILD));
    auto* build = capability<IPluginV3OneBuild>(plugin.get(), PluginCapabilityType::kBUILD);
    std::vector<DynamicPluginTensorDesc> io;
    for (size_t k = 0; k < shapes.size(); ++k)
        io.push_back(tensorDesc(shapes[k], Element::type, k == 0 ? format : TensorFormat::kLINEAR));
    io.push_back(tensorDesc(outShape, Element::type, format));
    if (!build->supportsFormatCombination(0, io.data(), 5, 1) || !build->supportsFormatCombination(5, io.data(), 5, 1))
    {
        std::printf("skip %s enqueue on a GPU (%s): the plugin does not offer it for this layer here\n",
            formatName.c_str(), label.c_str());
        return;
    }
    std::vector<PluginTensorDesc> runtimeIo;
    for (auto const& d : io)
        runtimeIo.push_back(d.desc);
    size_t workspaceBytes = 0;
    std::vector<int32_t> const tactics = configureAsBuilder(build, io, title, workspaceBytes);

    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<std::vector<T>> host(5);
    for (size_t k = 0; k < 5; ++k)
    {
        host[k].resize(elementCount(shapes[k]));
        for (T& v : host[k]) // offsets reach off the image; the mask positive
            v = Element::from(k == 2 ? 3.0f * normal(rng) : k == 4 ? std::fabs(normal(rng)) : normal(rng));
    }
    int64_t const n = shapes[0][0], c = shapes[0][1], h = shapes[0][2], w = shapes[0][3];
    std::vector<T> nhwc(host[0].size());
    for (int64_t i = 0; i < n; ++i)
        for (int64_t ch = 0; ch < c; ++ch)
            for (int64_t p = 0; p < h * w; ++p)
                nhwc[size_t((i * h * w + p) * c + ch)] = host[0][size_t((i * c + ch) * h * w + p)];
    shelltest::DeviceBuffers buffers;
    auto floatsFor = [](size_t count) { return (count * sizeof(T) + sizeof(float) - 1) / sizeof(float); };
    auto upload = [&](std::vector<T> const& values) {
        void* ptr = buffers.allocate(floatsFor(values.size()));
        if (ptr && cudaMemcpy(ptr, values.data(), values.size() * sizeof(T), cudaMemcpyHostToDevice) != cudaSuccess)
            return static_cast<void*>(nullptr);
        return ptr;
    };
    void* device[5] = {upload(nhwc), upload(host[1]), upload(host[2]), upload(host[3]), upload(host[4])};
    void* nchwInput = upload(host[0]);
    size_t const outCount = elementCount(outShape);
    void* output = buffers.allocate(floatsFor(outCount));
    void* reference = buffers.allocate(floatsFor(outCount));
    void* workspace = buffers.allocate(workspaceBytes / sizeof(float) + 1);
    bool const ready = buffers.ok() && nchwInput && device[0] && device[1] && device[2] && device[3] && device[4];
    check(ready, title + ": buffers (workspace " + std::to_string(workspaceBytes) + " bytes)");
    if (!ready)
        return;
    bool const direct = launchNchwReference(attrs, shapes, Element::dtype, nchwInput, device[1], device[2], device[3],
        device[4], reference);
    auto download = [&](void const* ptr) {
        std::vector<T> values(outCount);
        bool const copied = cudaDeviceSynchronize() == cudaSuccess
            && cudaMemcpy(values.data(), ptr, outCount * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess;
        return copied ? values : std::vector<T>();
    };
    std::vector<T> const want = download(reference);
    int64_t const oc = outShape[1], plane = outShape[2] * outShape[3];
    void const* inputs[5] = {device[0], device[1], device[2], device[3], device[4]};
    for (int32_t tactic : tactics)
    {
        int32_t const rc
            = enqueueAsEngine(plugin.get(), tactic, runtimeIo, inputs, output, outCount * sizeof(T), workspace);
        std::vector<T> const got = download(output);
        double maxError = got.size() == outCount && want.size() == outCount ? 0.0 : INFINITY, maxValue = 0.0;
        for (int64_t i = 0; i < n && std::isfinite(maxError); ++i)
            for (int64_t o = 0; o < oc; ++o)
                for (int64_t p = 0; p < plane; ++p)
                {
                    double const expected = Element::value(want[size_t((i * oc + o) * plane + p)]);
                    double const error = std::fabs(Element::value(got[size_t((i * plane + p) * oc + o)]) - expected);
                    maxError = std::isnan(error) ? INFINITY : std::fmax(maxError, error);
                    maxValue = std::fmax(maxValue, std::fabs(expected));
                }
        check(rc == 0 && direct && maxError <= tolerance * (maxValue + 1.0),
            title + ": tactic " + dcn::tacticName(tactic) + " enqueue on channels-last tensors agrees with the "
                + "direct kernel over NCHW (max abs error " + std::to_string(maxError) + ", max |out| "
                + std::to_string(maxValue) + ")");
    }
}

// The field allow_tf32 (the build's TF32 setting, which `dcn-deploy build` writes on routed nodes since a plugin
// cannot see the builder's flags): 0 or 1, anything else refused naming the field and the node; absent means 0.
// Serialised, kept by deserialisation and clone, in the timing-cache ID only where 1; an engine of the previous format
// (no such field) still loads, in IEEE float32. The launch gets TF32 for float32 layers only.
void checkAllowTf32(dcn::DeformConvPluginCreator& creator, CaptureLogger& logger,
    std::vector<std::vector<int64_t>> const& shapes, std::vector<int64_t> const& outShape)
{
    auto allowOf = [](IPluginV3* p) { return p != nullptr && static_cast<dcn::DeformConvPlugin*>(p)->allowTf32(); };
    auto withTf32 = [](std::vector<int32_t> values, PluginFieldType type) {
        Fields fields = standardFields();
        fields.add(dcn::kFieldAllowTf32, std::move(values), type);
        return fields;
    };
    struct Bad
    {
        std::vector<int32_t> values;
        PluginFieldType type;
        char const* fragment;
    };
    Bad const bads[] = {{{2}, PluginFieldType::kINT32, "got 2"}, {{-1}, PluginFieldType::kINT32, "got -1"},
        {{1}, PluginFieldType::kFLOAT32, "must be INT32"}, {{1, 1}, PluginFieldType::kINT32, "must hold 1 value"}};
    for (Bad const& bad : bads)
    {
        Fields fields = withTf32(bad.values, bad.type);
        logger.lastError.clear();
        bool const refused = creator.createPlugin("node_tf32", &fields.collection, TensorRTPhase::kBUILD) == nullptr;
        check(refused && logger.lastError.find("'allow_tf32'") != std::string::npos
                && logger.lastError.find("node_tf32") != std::string::npos
                && logger.lastError.find(bad.fragment) != std::string::npos,
            "createPlugin refuses a bad allow_tf32 naming the field: " + logger.lastError);
    }

    Fields plain = standardFields();
    Fields off = withTf32({0}, PluginFieldType::kINT32);
    Fields on = withTf32({1}, PluginFieldType::kINT32);
    std::unique_ptr<IPluginV3> plainPlugin(creator.createPlugin("dcn", &plain.collection, TensorRTPhase::kBUILD));
    std::unique_ptr<IPluginV3> offPlugin(creator.createPlugin("dcn", &off.collection, TensorRTPhase::kBUILD));
    std::unique_ptr<IPluginV3> onPlugin(creator.createPlugin("dcn", &on.collection, TensorRTPhase::kBUILD));
    check(plainPlugin && offPlugin && onPlugin && !allowOf(plainPlugin.get()) && !allowOf(offPlugin.get())
            && allowOf(onPlugin.get()),
        "createPlugin takes allow_tf32 = 0 and 1; without the field, 0");
    if (!plainPlugin || !offPlugin || !onPlugin)
        return;
    auto idOf = [](IPluginV3* p) {
        return std::string(capability<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD)->getTimingCacheID());
    };
    std::string const plainId = idOf(plainPlugin.get());
    check(idOf(offPlugin.get()) == plainId && idOf(onPlugin.get()) != plainId
            && idOf(onPlugin.get()).find(";tf32=1") != std::string::npos,
        "the timing-cache ID of a TF32 layer differs (" + idOf(onPlugin.get()) + "), an IEEE one's is as before");

    // The launch's options: TF32 for float32 I/O only, and only where the field allows it.
    auto optionsAfterShapes = [&](IPluginV3* p, DataType type, bool& tf32) {
        std::vector<PluginTensorDesc> io;
        for (auto const& shape : shapes)
            io.push_back(tensorDesc(shape, type).desc);
        io.push_back(tensorDesc(outShape, type).desc);
        auto* runtime = capability<IPluginV3OneRuntime>(p, PluginCapabilityType::kRUNTIME);
        bool const ok = runtime->onShapeChange(io.data(), 5, &io[5], 1) == 0;
        tf32 = static_cast<dcn::DeformConvPlugin*>(p)->gemmOptions().tf32;
        return ok;
    };
    bool onFloat = false, onHalf = true, onBf16 = true, plainFloat = true, offFloat = true;
    bool const shaped = optionsAfterShapes(onPlugin.get(), DataType::kFLOAT, onFloat)
        && optionsAfterShapes(plainPlugin.get(), DataType::kFLOAT, plainFloat)
        && optionsAfterShapes(offPlugin.get(), DataType::kFLOAT, offFloat);
    std::unique_ptr<IPluginV3> onHalfPlugin(onPlugin->clone());
    std::unique_ptr<IPluginV3> onBf16Plugin(onPlugin->clone());
    bool const shapedHalf = optionsAfterShapes(onHalfPlugin.get(), DataType::kHALF, onHalf)
        && optionsAfterShapes(onBf16Plugin.get(), DataType::kBF16, onBf16);
    check(shaped && shapedHalf && onFloat && !onHalf && !onBf16 && !plainFloat && !offFloat,
        "the launch gets TF32 for float32 layers with allow_tf32 = 1 only (not half, bfloat16, 0 or absent)");

    // Serialised, and kept by deserialisation (the engine) and clone.
    auto* onRuntime = capability<IPluginV3OneRuntime>(onPlugin.get(), PluginCapabilityType::kRUNTIME);
    PluginFieldCollection const* serialized = onRuntime->getFieldsToSerialize();
    auto carried = [](PluginFieldCollection const* fields) {
        int32_t value = -1;
        for (int32_t k = 0; k < fields->nbFields; ++k)
            if (std::string(fields->fields[k].name) == dcn::kFieldAllowTf32 && fields->fields[k].length == 1
                && fields->fields[k].type == PluginFieldType::kINT32)
                value = *static_cast<int32_t const*>(fields->fields[k].data);
        return value;
    };
    std::unique_ptr<IPluginV3> loaded(creator.createPlugin("dcn", serialized, TensorRTPhase::kRUNTIME));
    std::unique_ptr<IPluginV3> cloned(onPlugin->clone());
    PluginFieldCollection const* plainSerialized
        = capability<IPluginV3OneRuntime>(plainPlugin.get(), PluginCapabilityType::kRUNTIME)->getFieldsToSerialize();
    check(serialized->nbFields == 8 && carried(serialized) == 1 && carried(plainSerialized) == 0
            && allowOf(loaded.get()) && allowOf(cloned.get()) && idOf(loaded.get()) == idOf(onPlugin.get()),
        "allow_tf32 is serialised (1, and 0 without the field) and kept by createPlugin(kRUNTIME) and clone");

    // An engine written before the field existed: the same fields without allow_tf32. It loads, in IEEE float32.
    std::vector<PluginField> previous;
    for (int32_t k = 0; k < serialized->nbFields; ++k)
        if (std::string(serialized->fields[k].name) != dcn::kFieldAllowTf32)
            previous.push_back(serialized->fields[k]);
    PluginFieldCollection previousCollection{int32_t(previous.size()), previous.data()};
    logger.lastError.clear();
    std::unique_ptr<IPluginV3> old(creator.createPlugin("dcn", &previousCollection, TensorRTPhase::kRUNTIME));
    check(previous.size() == 7 && old != nullptr && !allowOf(old.get()) && logger.lastError.empty(),
        "an engine of the previous format (7 fields, no allow_tf32) still loads, in IEEE float32");
}

// The tactic logic (deformConvTactics.h) on its own: ids, the algorithm each runs, what is offered, and the
// fused kernel's rule against the kernels' own (resolveAlgo, the authority at launch).
void checkTacticLogic()
{
    auto algoOf = [](int32_t tactic, bool gemm) {
        int32_t algo = -1;
        return dcn::algoForTactic(tactic, gemm, algo).ok() ? algo : -1;
    };
    check(algoOf(dcn::kTacticDefault, true) == DCN_ALGO_AUTO && algoOf(dcn::kTacticDirect, true) == DCN_ALGO_DIRECT
            && algoOf(dcn::kTacticFused, true) == DCN_ALGO_FUSED_GEMM
            && algoOf(dcn::kTacticGemm, true) == DCN_ALGO_GEMM,
        "tactics 0/1/2/3 run auto/direct/fused/gemm");
    check(algoOf(dcn::kTacticGemm, false) == DCN_ALGO_AUTO && algoOf(dcn::kTacticFused, false) == DCN_ALGO_FUSED_GEMM,
        "the gemm tactic runs the heuristic where cuBLAS does not load; the others do not depend on it");
    int32_t unused = 0;
    dcn::Status const unknown = dcn::algoForTactic(9, true, unused);
    check(!unknown.ok() && unknown.message.find("tactic 9") != std::string::npos,
        "an unknown tactic is refused: " + unknown.message);

    // Geometries at the fused kernel's limits, and a dense and a depth-wise-like layer.
    auto geometryOf = [](int32_t c, int32_t oc, int32_t group) {
        dcn_deform_conv_desc d{1, c, 8, 8, oc, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, group, 1};
        dcn::DeformConvGeometry geo{};
        bool const ok = dcn::makeGeometry(d, geo).ok();
        check(ok, "geometry C=" + std::to_string(c) + " oC=" + std::to_string(oc) + " group=" + std::to_string(group));
        return geo;
    };
    std::vector<dcn::DeformConvGeometry> const geometries = {geometryOf(64, 64, 1), geometryOf(16, 16, 16),
        geometryOf(65535, 65535, 65535), geometryOf(65536, 65536, 65536), geometryOf(1, 64 * 65535, 1),
        geometryOf(1, 64 * 65535 + 1, 1)};
    bool agree = true;
    int32_t refused = 0;
    for (auto const& geo : geometries)
        for (int32_t dtype : {DCN_FLOAT32, DCN_FLOAT16, DCN_BFLOAT16, DCN_FLOAT64})
        {
            int32_t resolved = 0;
            bool const kernels = dcn::resolveAlgo(geo, dtype, DCN_ALGO_FUSED_GEMM, resolved).ok();
            agree = agree && kernels == dcn::fusedKernelAccepts(geo, dtype);
            refused += kernels ? 0 : 1;
        }
    check(agree && refused == 4 + 2 * 4,
        "fusedKernelAccepts agrees with the kernels' resolveAlgo (" + std::to_string(refused)
            + " of 24 refused: float64, 65536 groups, 64*65535+1 output channels)");

    dcn::DeformConvGeometry const dense = geometries[0];
    check(dcn::validTactics(dense, DCN_FLOAT16, false) == std::vector<int32_t>{dcn::kTacticDirect, dcn::kTacticFused},
        "without cuBLAS: direct and fused are offered, not gemm");
    check(dcn::validTactics(dense, DCN_BFLOAT16, true)
            == std::vector<int32_t>{dcn::kTacticDirect, dcn::kTacticFused, dcn::kTacticGemm},
        "with cuBLAS: direct, fused and gemm");
    check(dcn::validTactics(geometries[3], DCN_FLOAT32, true)
            == std::vector<int32_t>{dcn::kTacticDirect, dcn::kTacticGemm},
        "65536 groups: no fused tactic");
    check(dcn::workspaceAlgos({dcn::kTacticDirect, dcn::kTacticFused, dcn::kTacticGemm})
            == std::vector<int32_t>{DCN_ALGO_AUTO, DCN_ALGO_DIRECT, DCN_ALGO_FUSED_GEMM, DCN_ALGO_GEMM},
        "the workspace covers the heuristic and every offered tactic");
    dcn_deform_conv_attrs const attrs{{2, 1}, {1, 0, 2, 1}, {1, 2}, 2, 2};
    dcn_deform_conv_attrs other = attrs;
    other.pads[3] = 0;
    check(dcn::timingCacheSuffix(attrs, true, false) != dcn::timingCacheSuffix(other, true, false)
            && dcn::timingCacheSuffix(attrs, true, false) != dcn::timingCacheSuffix(attrs, false, false)
            && dcn::timingCacheSuffix(attrs, false, false) == dcn::timingCacheSuffix(attrs, false, false),
        "the timing-cache suffix tells fields and cuBLAS apart: " + dcn::timingCacheSuffix(attrs, false, false));
    check(dcn::timingCacheSuffix(attrs, true, true) == dcn::timingCacheSuffix(attrs, true, false) + ";tf32=1"
            && dcn::timingCacheSuffix(attrs, true, false).find("tf32") == std::string::npos,
        "the timing-cache suffix adds ';tf32=1' where TF32 is allowed, nothing otherwise: "
            + dcn::timingCacheSuffix(attrs, true, true));
}

// The plugin's tactic interface as the builder and the runtime use it (no timing: TensorRT does that).
void checkPluginTactics(dcn::DeformConvPluginCreator& creator, CaptureLogger& logger, Fields& fields,
    std::vector<DynamicPluginTensorDesc> const& io)
{
    std::unique_ptr<IPluginV3> plugin(creator.createPlugin("dcn", &fields.collection, TensorRTPhase::kBUILD));
    auto* build = capability<IPluginV3OneBuild>(plugin.get(), PluginCapabilityType::kBUILD);
    auto* runtime = capability<IPluginV3OneRuntime>(plugin.get(), PluginCapabilityType::kRUNTIME);
    auto tacticOf = [](IPluginV3* p) { return p ? static_cast<dcn::DeformConvPlugin*>(p)->tactic() : -1; };
    check(build->getNbTactics() == 0 && tacticOf(plugin.get()) == dcn::kTacticDefault,
        "before configurePlugin: no tactics offered, the default (heuristic) set");

    check(build->configurePlugin(io.data(), 5, &io[5], 1) == 0, "configurePlugin (half)");
    dcn::DeformConvGeometry largest;
    std::vector<std::vector<int64_t>> shapes;
    for (int32_t k = 0; k < 2; ++k)
        shapes.push_back(std::vector<int64_t>(io[k].max.d, io[k].max.d + 4));
    standardGeometry(shapes, largest);
    std::vector<int32_t> const expected = dcn::validTactics(largest, DCN_FLOAT16, dcn::gemmPathAvailable());
    std::vector<int32_t> offered(size_t(build->getNbTactics()), -1);
    bool const listed = build->getValidTactics(offered.data(), int32_t(offered.size())) == 0;
    std::string names;
    for (int32_t t : offered)
        names += std::string(dcn::tacticName(t)) + " ";
    check(listed && offered == expected && offered.size() >= 2 && offered.front() != 0,
        "getNbTactics / getValidTactics offer " + names + "(gemm only where cuBLAS loads)");
    std::vector<int32_t> tooMany(offered.size() + 1);
    logger.lastError.clear();
    bool const tooManyRefused = build->getValidTactics(tooMany.data(), int32_t(tooMany.size())) != 0;
    check(tooManyRefused && logger.lastError.find("advertised") != std::string::npos,
        "getValidTactics refuses more slots than getNbTactics said: " + logger.lastError);

    // The build: the builder times each tactic (setTactic, then enqueue) and keeps the fastest in the engine.
    for (int32_t tactic : offered)
        check(runtime->setTactic(tactic) == 0 && tacticOf(plugin.get()) == tactic,
            std::string("setTactic(") + dcn::tacticName(tactic) + ")");
    logger.lastError.clear();
    bool const unknownRefused = runtime->setTactic(42) != 0;
    check(unknownRefused && logger.lastError.find("tactic 42") != std::string::npos
            && tacticOf(plugin.get()) == offered.back(),
        "setTactic refuses an unknown id and keeps the last one: " + logger.lastError);
    int32_t const chosen = dcn::kTacticFused;
    runtime->setTactic(chosen);
    std::unique_ptr<IPluginV3> cloned(plugin->clone());
    check(tacticOf(cloned.get()) == chosen, "clone keeps the tactic");

    // The engine: fields only (the tactic is TensorRT's to keep); on load, createPlugin(kRUNTIME), setTactic with
    // the engine's tactic, then attachToContext per execution context.
    PluginFieldCollection const* serialized = runtime->getFieldsToSerialize();
    // the five attributes, the kernels revision, the column budget and allow_tf32
    bool fieldsOnly = serialized->nbFields == 8;
    for (int32_t k = 0; k < serialized->nbFields; ++k)
        fieldsOnly = fieldsOnly && std::string(serialized->fields[k].name).find("tactic") == std::string::npos;
    check(fieldsOnly, "the tactic is not serialised as a field (TensorRT stores it and calls setTactic on load)");
    std::unique_ptr<IPluginV3> loaded(creator.createPlugin("dcn", serialized, TensorRTPhase::kRUNTIME));
    auto* loadedRuntime
        = loaded ? capability<IPluginV3OneRuntime>(loaded.get(), PluginCapabilityType::kRUNTIME) : nullptr;
    check(loadedRuntime && tacticOf(loaded.get()) == dcn::kTacticDefault,
        "a plugin loaded before setTactic runs the heuristic (tactic 0)");
    std::unique_ptr<IPluginV3> context(
        loadedRuntime && loadedRuntime->setTactic(chosen) == 0 ? loadedRuntime->attachToContext(nullptr) : nullptr);
    check(tacticOf(context.get()) == chosen,
        "setTactic on load, then attachToContext: the context runs the engine's tactic");

    // Timing cache: one ID per creation state, the same for clones, another for other fields.
    char const* id = build->getTimingCacheID();
    auto* clonedBuild = capability<IPluginV3OneBuild>(cloned.get(), PluginCapabilityType::kBUILD);
    Fields otherFields;
    otherFields.add("strides", {1, 1});
    std::unique_ptr<IPluginV3> otherPlugin(creator.createPlugin("dcn", &otherFields.collection, TensorRTPhase::kBUILD));
    char const* otherId = otherPlugin
        ? capability<IPluginV3OneBuild>(otherPlugin.get(), PluginCapabilityType::kBUILD)->getTimingCacheID()
        : nullptr;
    std::string const revision = ";kernels=" + std::to_string(dcn::kKernelsRevision);
    check(id && otherId && std::string(id).rfind("DeformConv2d/1;", 0) == 0
            && std::string(id) == clonedBuild->getTimingCacheID() && std::string(id) != otherId
            && std::string(id).find(revision) != std::string::npos,
        std::string("getTimingCacheID: ") + (id ? id : "null"));
}

// X and Y channels-last (kHWC8): the rules of channelsLastRefusal one by one (as where cuBLAS loads), the formats
// the plugin accepts (channels-last only where cuBLAS loads in this process, which the CPU machines lack), and a
// configuration with X and Y in HWC8: the gemm tactic alone, the channels-last workspace (no room for a transposed
// input, no staging: smaller than the linear one's), and the launch options of the next enqueue, kept by a clone and
// set again by onShapeChange from X's format. `io`: the standard half layer (C 16, oC 64, group 2), linear.
void checkChannelsLast(dcn::DeformConvPluginCreator& creator, Fields& fields, std::vector<DynamicPluginTensorDesc> io)
{
    auto shape = [](std::vector<int64_t> const& dims) {
        dcn::TensorShape t;
        t.rank = int32_t(dims.size());
        std::copy(dims.begin(), dims.end(), t.d);
        return t;
    };
    dcn::TensorShape const x = shape({2, 16, 10, 12}), w = shape({64, 8, 3, 2});
    check(dcn::channelsLastRefusal(kStandardAttrs, x, w, DCN_FLOAT16, true).empty()
            && dcn::channelsLastRefusal(kStandardAttrs, x, w, DCN_BFLOAT16, true).empty(),
        "channels-last: a dense half layer with C and oC multiples of 8 may take it where cuBLAS loads");
    check(dcn::channelsLastRefusal(kStandardAttrs, shape({2, 12, 10, 12}), shape({60, 6, 3, 2}), DCN_FLOAT32, true)
                .empty(),
        "channels-last: a dense float32 layer may take it (HWC, unpadded: C of 12 and oC of 60 too) where cuBLAS loads");
    struct Refusal
    {
        char const* what;
        dcn::TensorShape x, w;
        int32_t dtype;
        bool gemm;
        char const* fragment;
    };
    Refusal const refusals[] = {
        {"float64", x, w, DCN_FLOAT64, true, "float32 (HWC) or half types (HWC8)"},
        {"C of 12", shape({2, 12, 10, 12}), shape({64, 6, 3, 2}), DCN_FLOAT16, true, "multiples of 8, got 12 and 64"},
        {"oC of 60", x, shape({60, 8, 3, 2}), DCN_FLOAT16, true, "multiples of 8, got 16 and 60"},
        {"unknown C", shape({2, -1, 10, 12}), w, DCN_FLOAT16, true, "known at build time"},
        {"4 output channels per group", x, shape({8, 8, 3, 2}), DCN_FLOAT16, true, "this layer is neither"},
        {"no cuBLAS", x, w, DCN_FLOAT16, false, "cuBLAS does not load here"},
    };
    for (Refusal const& r : refusals)
    {
        std::string const why = dcn::channelsLastRefusal(kStandardAttrs, r.x, r.w, r.dtype, r.gemm);
        check(why.find(r.fragment) != std::string::npos, std::string("channels-last refused for ") + r.what + ": " + why);
    }
    // Depth-wise layers: the channels-last direct kernel reads them, cuBLAS or not, where the channels of an offset
    // group come in pairs.
    dcn_deform_conv_attrs const depthwiseAttrs{{2, 1}, {1, 0, 2, 1}, {1, 2}, 16, 2};
    dcn_deform_conv_attrs const oddOffsetGroups{{2, 1}, {1, 0, 2, 1}, {1, 2}, 16, 16};
    dcn::TensorShape const depthwiseW = shape({16, 1, 3, 2});
    std::string const oddWhy = dcn::channelsLastRefusal(oddOffsetGroups, x, depthwiseW, DCN_FLOAT16, true);
    check(dcn::channelsLastRefusal(depthwiseAttrs, x, depthwiseW, DCN_FLOAT16, false).empty()
            && oddWhy.find("in multiples of 2, got 16 channels, 1 per offset group") != std::string::npos,
        "channels-last: a depth-wise half layer may take it without cuBLAS (8 channels an offset group), not with "
        "one channel an offset group: " + oddWhy);
    // Groups of 8 channels in and out (dense by autoTakesMatrixPath): the channels-last direct kernel takes them in a
    // half type, cuBLAS or not, and TensorRT times it against the gemm tactic; in float32 too, as wide items (two
    // 16-byte gathers; auto's choice since kernels revision 12); groups of 4 as well. Groups of 16 in a half type
    // are wide items offered as the direct tactic beside gemm, but auto's choice is the GEMM path, so without cuBLAS
    // channels-last is refused.
    {
        dcn_deform_conv_attrs const groupsOf8{{1, 1}, {1, 1, 1, 1}, {1, 1}, 2, 1};
        dcn_deform_conv_attrs const groupsOf4{{1, 1}, {1, 1, 1, 1}, {1, 1}, 4, 1};
        dcn::TensorShape const grouped = shape({2, 16, 10, 12});
        dcn::DeformConvGeometry eight;
        bool const made = geometryOf(groupsOf8, {{2, 16, 10, 12}, {16, 8, 3, 3}}, eight);
        std::string const float32Why = dcn::channelsLastRefusal(groupsOf8, grouped, shape({16, 8, 3, 3}), DCN_FLOAT32,
            false);
        dcn_deform_conv_attrs const groupsOf16{{1, 1}, {1, 1, 1, 1}, {1, 1}, 2, 1};
        dcn::TensorShape const grouped32 = shape({2, 32, 10, 12});
        dcn::DeformConvGeometry sixteen;
        bool const madeSixteen = geometryOf(groupsOf16, {{2, 32, 10, 12}, {32, 16, 3, 3}}, sixteen);
        std::string const wideWhy = dcn::channelsLastRefusal(groupsOf16, grouped32, shape({32, 16, 3, 3}),
            DCN_FLOAT16, false);
        std::string const wideFloat32Why = dcn::channelsLastRefusal(groupsOf16, grouped32, shape({32, 16, 3, 3}),
            DCN_FLOAT32, false);
        std::string const autoKeepsGemm = "and cuBLAS does not load here (the channels-last direct kernel takes it "
                                          "when asked for, but auto runs groups of more than 8 channels on the GEMM "
                                          "path";
        check(dcn::channelsLastRefusal(groupsOf8, grouped, shape({16, 8, 3, 3}), DCN_FLOAT16, false).empty()
                && float32Why.empty() && wideWhy.find(autoKeepsGemm) != std::string::npos
                && wideFloat32Why.find(autoKeepsGemm) != std::string::npos
                && dcn::channelsLastRefusal(groupsOf8, grouped, shape({16, 8, 3, 3}), DCN_FLOAT32, true).empty()
                && dcn::channelsLastRefusal(groupsOf16, grouped32, shape({32, 16, 3, 3}), DCN_FLOAT16, true).empty()
                && dcn::channelsLastRefusal(groupsOf16, grouped32, shape({32, 16, 3, 3}), DCN_FLOAT32, true).empty()
                && dcn::channelsLastRefusal(groupsOf4, grouped, shape({16, 4, 3, 3}), DCN_FLOAT32, false).empty(),
            "channels-last: groups of 8 (in float32 wide items) and of 4 take the direct kernel without cuBLAS; groups "
            "of 16 (wide items: 32 bytes in float16, 64 in float32) need the GEMM path as auto's choice: '"
                + float32Why + "' / " + wideWhy + " / " + wideFloat32Why);
        std::vector<int32_t> const both{dcn::kTacticDirect, dcn::kTacticGemm};
        check(made && madeSixteen && dcn::channelsLastTactics(eight, DCN_FLOAT16) == both
                && dcn::channelsLastTactics(eight, DCN_FLOAT32) == both
                && dcn::channelsLastTactics(sixteen, DCN_FLOAT16) == both
                && dcn::channelsLastTactics(sixteen, DCN_FLOAT32) == both,
            "channels-last groups of 8 and 16: the direct and gemm tactics (TensorRT times both), float32 groups of 16 "
            "(64 bytes) too");
    }
    {
        dcn::DeformConvGeometry depthwise;
        bool const made = geometryOf(depthwiseAttrs, {{2, 16, 10, 12}, {16, 1, 3, 2}}, depthwise);
        dcn::GemmOptions options;
        options.channelsLastTensors = true;
        check(made && dcn::channelsLastTactics(depthwise, DCN_FLOAT16) == std::vector<int32_t>{dcn::kTacticDirect}
                && dcn::pluginWorkspaceBytes(depthwise, DCN_FLOAT16, true, dcn::kGemmDefaultColumnBudget, true) == 0,
            "channels-last depth-wise layer: the direct tactic alone, no workspace");
        // the plugin itself, cuBLAS or not: float16 in HWC8, float32 in HWC
        for (DataType type : {DataType::kHALF, DataType::kFLOAT})
        {
            Fields depthwiseFields = standardFields(16);
            std::unique_ptr<IPluginV3> plugin(
                creator.createPlugin("nhwc_dw", &depthwiseFields.collection, TensorRTPhase::kBUILD));
            auto* build = plugin ? capability<IPluginV3OneBuild>(plugin.get(), PluginCapabilityType::kBUILD) : nullptr;
            int64_t const oh = dcn::convOutputExtent<int64_t>(10, int64_t(3), 2, 1, 2, 1);
            int64_t const ow = dcn::convOutputExtent<int64_t>(12, int64_t(2), 1, 0, 1, 2);
            TensorFormat const format = dcn::channelsLastFormatOf(type);
            std::vector<DynamicPluginTensorDesc> dw = {tensorDesc({2, 16, 10, 12}, type, format),
                tensorDesc({16, 1, 3, 2}, type), tensorDesc({2, 2 * 2 * 3 * 2, oh, ow}, type), tensorDesc({16}, type),
                tensorDesc({2, 2 * 3 * 2, oh, ow}, type), tensorDesc({2, 16, oh, ow}, type, format)};
            bool const taken = build && build->supportsFormatCombination(0, dw.data(), 5, 1)
                && build->supportsFormatCombination(5, dw.data(), 5, 1);
            std::vector<int32_t> tactics;
            if (build && build->configurePlugin(dw.data(), 5, &dw[5], 1) == 0)
            {
                tactics.resize(size_t(build->getNbTactics()));
                build->getValidTactics(tactics.data(), int32_t(tactics.size()));
            }
            check(taken && tactics == std::vector<int32_t>{dcn::kTacticDirect}
                    && build->getWorkspaceSize(dw.data(), 5, &dw[5], 1) == 0
                    && static_cast<dcn::DeformConvPlugin*>(plugin.get())->gemmOptions().channelsLastTensors,
                std::string("a depth-wise ") + (type == DataType::kHALF ? "half plugin layer takes X and Y in HWC8"
                                                                         : "float32 plugin layer takes X and Y in HWC")
                    + ": the direct tactic alone, no workspace");
        }
    }

    std::unique_ptr<IPluginV3> plugin(creator.createPlugin("hwc8", &fields.collection, TensorRTPhase::kBUILD));
    auto* build = capability<IPluginV3OneBuild>(plugin.get(), PluginCapabilityType::kBUILD);
    size_t const linearBytes = build->getWorkspaceSize(io.data(), 5, &io[5], 1);
    bool const gemm = dcn::gemmPathAvailable();
    io[0].desc.format = TensorFormat::kHWC8;
    bool const xTaken = build->supportsFormatCombination(0, io.data(), 5, 1);
    io[5].desc.format = TensorFormat::kHWC8;
    bool const yTaken = build->supportsFormatCombination(5, io.data(), 5, 1);
    io[5].desc.format = TensorFormat::kLINEAR;
    bool const linearYRefused = !build->supportsFormatCombination(5, io.data(), 5, 1);
    io[2].desc.format = TensorFormat::kHWC8;
    bool const offsetRefused = !build->supportsFormatCombination(2, io.data(), 5, 1);
    io[2].desc.format = TensorFormat::kLINEAR;
    check(xTaken == gemm && yTaken == gemm && linearYRefused && offsetRefused,
        std::string("supportsFormatCombination: X and Y in HWC8 together ") + (gemm ? "(cuBLAS loads)" : "refused "
            "(cuBLAS does not load here)") + ", never the offsets, never Y linear beside X in HWC8");
    io[0].desc.format = TensorFormat::kLINEAR;
    io[5].desc.format = TensorFormat::kHWC8;
    check(!build->supportsFormatCombination(5, io.data(), 5, 1), "supportsFormatCombination: Y in HWC8 beside X linear "
                                                                  "is refused");
    // float32: X and Y in HWC (unpadded), never HWC8; a half type never HWC (bound to FP32 and UINT8)
    for (int32_t k : {0, 5})
        io[size_t(k)].desc.format = TensorFormat::kHWC8;
    for (auto& d : io)
        d.desc.type = DataType::kFLOAT;
    bool const float32Hwc8Refused = !build->supportsFormatCombination(0, io.data(), 5, 1);
    for (int32_t k : {0, 5})
        io[size_t(k)].desc.format = TensorFormat::kHWC;
    bool const float32HwcTaken = build->supportsFormatCombination(0, io.data(), 5, 1)
        && build->supportsFormatCombination(5, io.data(), 5, 1);
    io[5].desc.format = TensorFormat::kHWC8;
    bool const mixedRefused = !build->supportsFormatCombination(5, io.data(), 5, 1);
    for (auto& d : io)
        d.desc.type = DataType::kHALF;
    io[5].desc.format = TensorFormat::kHWC;
    bool const halfHwcRefused = !build->supportsFormatCombination(0, io.data(), 5, 1);
    check(float32Hwc8Refused && float32HwcTaken == gemm && mixedRefused && halfHwcRefused,
        std::string("supportsFormatCombination: float32 X and Y in HWC ") + (gemm ? "taken" : "refused (no cuBLAS)")
            + ", float32 in HWC8 and half types in HWC refused, never HWC beside HWC8");
    for (int32_t k : {0, 5})
        io[size_t(k)].desc.format = TensorFormat::kHWC8;

    // A configuration TensorRT chose with X and Y in HWC8 (offered only where cuBLAS loads; the plain logic below
    // holds either way).
    bool const configured = build->configurePlugin(io.data(), 5, &io[5], 1) == 0;
    std::vector<int32_t> tactics(size_t(build->getNbTactics()));
    bool const listed = build->getValidTactics(tactics.data(), int32_t(tactics.size())) == 0;
    check(configured && listed && tactics == std::vector<int32_t>{dcn::kTacticGemm},
        "configurePlugin with X and Y in HWC8 offers the gemm tactic alone");
    size_t const channelsLastBytes = build->getWorkspaceSize(io.data(), 5, &io[5], 1);
    dcn::DeformConvGeometry largest;
    dcn::GemmOptions options;
    options.channelsLastTensors = true;
    bool const made = standardGeometry({{2, 16, 10, 12}, {64, 8, 3, 2}}, largest);
    size_t const gemmBytes = made ? dcn::deformConvWorkspaceSize(largest, DCN_FLOAT16, DCN_ALGO_GEMM, options) : 0;
    check(made && channelsLastBytes == gemmBytes && channelsLastBytes > 0 && channelsLastBytes < linearBytes,
        "getWorkspaceSize with X and Y in HWC8: the channels-last GEMM path's " + std::to_string(channelsLastBytes)
            + " bytes (linear: " + std::to_string(linearBytes) + ")");
    auto* self = static_cast<dcn::DeformConvPlugin*>(plugin.get());
    std::unique_ptr<IPluginV3> cloned(plugin->clone());
    check(self->gemmOptions().channelsLastTensors
            && static_cast<dcn::DeformConvPlugin*>(cloned.get())->gemmOptions().channelsLastTensors,
        "the next enqueue reads and writes channels-last tensors, in a clone too");
    std::vector<PluginTensorDesc> runtimeIo;
    for (auto const& d : io)
        runtimeIo.push_back(d.desc);
    auto* runtime = capability<IPluginV3OneRuntime>(plugin.get(), PluginCapabilityType::kRUNTIME);
    for (auto& d : runtimeIo)
        d.format = TensorFormat::kLINEAR;
    bool const linearAgain = runtime->onShapeChange(runtimeIo.data(), 5, &runtimeIo[5], 1) == 0
        && !self->gemmOptions().channelsLastTensors;
    runtimeIo[0].format = runtimeIo[5].format = TensorFormat::kHWC8;
    bool const hwc8Again = runtime->onShapeChange(runtimeIo.data(), 5, &runtimeIo[5], 1) == 0
        && self->gemmOptions().channelsLastTensors;
    check(linearAgain && hwc8Again, "onShapeChange sets the layout of the next enqueue from X's format");

    // A float32 configuration with X and Y in HWC: the gemm tactic alone, the channels-last GEMM path's workspace.
    std::vector<DynamicPluginTensorDesc> f32 = io;
    for (auto& d : f32)
        d.desc.type = DataType::kFLOAT;
    f32[0].desc.format = f32[5].desc.format = TensorFormat::kHWC;
    std::unique_ptr<IPluginV3> f32Plugin(creator.createPlugin("hwc_f32", &fields.collection, TensorRTPhase::kBUILD));
    auto* f32Build = capability<IPluginV3OneBuild>(f32Plugin.get(), PluginCapabilityType::kBUILD);
    std::vector<int32_t> f32Tactics;
    if (f32Build->configurePlugin(f32.data(), 5, &f32[5], 1) == 0)
    {
        f32Tactics.resize(size_t(f32Build->getNbTactics()));
        f32Build->getValidTactics(f32Tactics.data(), int32_t(f32Tactics.size()));
    }
    size_t const f32Bytes = made ? dcn::deformConvWorkspaceSize(largest, DCN_FLOAT32, DCN_ALGO_GEMM, options) : 0;
    check(f32Tactics == std::vector<int32_t>{dcn::kTacticGemm}
            && f32Build->getWorkspaceSize(f32.data(), 5, &f32[5], 1) == f32Bytes && f32Bytes > 0
            && static_cast<dcn::DeformConvPlugin*>(f32Plugin.get())->gemmOptions().channelsLastTensors,
        "configurePlugin with float32 X and Y in HWC offers the gemm tactic alone, with the channels-last GEMM "
        "path's workspace (" + std::to_string(f32Bytes) + " bytes)");
}

} // namespace

// The library's entry point (plugin_registry.cpp), as TensorRT calls it.
extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);

// The size a string names, or 0 where parseByteSize refuses it.
size_t parsedSize(std::string const& text)
{
    size_t bytes = 0;
    return dcn::parseByteSize(text, "size", bytes).ok() ? bytes : 0;
}

void checkByteSizes()
{
    struct Case
    {
        char const* text;
        size_t bytes; // 0: refused
    };
    Case const cases[] = {{"512M", size_t(512) << 20}, {"2G", size_t(2) << 30}, {"1024", size_t(1) << 30},
        {"1.5G", size_t(3) << 29}, {"262144K", size_t(256) << 20}, {" 64 MiB ", size_t(64) << 20},
        {"64mb", size_t(64) << 20}, {"1t", size_t(1) << 40}, {"0", 0}, {"-1", 0}, {"12Q", 0}, {"", 0}, {"M", 0},
        {"1.G", 0}, {"99999999999999999999", 0}, {"18446744073709551620", 0}};
    for (Case const& c : cases)
        check(parsedSize(c.text) == c.bytes,
            std::string("parseByteSize('") + c.text + "') = " + std::to_string(parsedSize(c.text)));
}

// Set (or with nullptr unset) the build's workspace limit for the plugin.
void setWorkspaceLimit(char const* value)
{
    if (value)
        setenv(dcn::kWorkspaceLimitVariable, value, 1);
    else
        unsetenv(dcn::kWorkspaceLimitVariable);
}

// A workspace limit at build time (DCN_DEPLOY_PLUGIN_WORKSPACE): a batch-8 det res3 layer in half precision needs
// ~354 MiB with the default column budget; under a 256 MiB limit the plugin takes the largest budget that fits,
// serialises it, and a deserialised plugin plans with it, at the largest shape and every smaller batch. A limit below
// what the layer needs at the smallest budget, or a malformed one, stops the build with a message.
void checkWorkspaceLimit(dcn::DeformConvPluginCreator& creator, CaptureLogger& logger)
{
    checkByteSizes();
    Fields fields;
    fields.add("strides", {1, 1});
    fields.add("pads", {1, 1, 1, 1});
    std::vector<std::vector<int64_t>> const shapes
        = {{8, 128, 100, 167}, {128, 128, 3, 3}, {8, 18, 100, 167}, {128}, {8, 9, 100, 167}};
    std::vector<DynamicPluginTensorDesc> io;
    for (auto const& shape : shapes)
        io.push_back(tensorDesc(shape, DataType::kHALF));
    io.push_back(tensorDesc({8, 128, 100, 167}, DataType::kHALF));
    for (int32_t k : {0, 2, 4, 5}) // a dynamic batch, 1 to 8
    {
        io[k].desc.dims.d[0] = -1;
        io[k].min.d[0] = 1;
    }
    dcn_deform_conv_attrs const attrs{{1, 1}, {1, 1, 1, 1}, {1, 1}, 1, 1};
    auto geometryAt = [&](int32_t batch) {
        dcn::TensorShape x, w;
        x.rank = w.rank = 4;
        for (int k = 0; k < 4; ++k)
        {
            x.d[k] = shapes[0][k];
            w.d[k] = shapes[1][k];
        }
        x.d[0] = batch;
        dcn::DeformConvGeometry geometry{};
        dcn::makeGeometry(dcn::descFromShapes(attrs, x, w), geometry);
        return geometry;
    };
    dcn::DeformConvGeometry const largest = geometryAt(8);
    bool const gemm = dcn::gemmPathAvailable();

    std::unique_ptr<IPluginV3> plugin(creator.createPlugin("res3", &fields.collection, TensorRTPhase::kBUILD));
    auto* build = plugin ? capability<IPluginV3OneBuild>(plugin.get(), PluginCapabilityType::kBUILD) : nullptr;
    if (!build)
    {
        check(false, "createPlugin for the workspace-limit layer");
        return;
    }
    {
        // The limit is part of the creation state TensorRT's timing cache keys on: it decides the column budget.
        setWorkspaceLimit("256M");
        std::unique_ptr<IPluginV3> limited(creator.createPlugin("res3", &fields.collection, TensorRTPhase::kBUILD));
        setWorkspaceLimit(nullptr);
        std::string const plain = build->getTimingCacheID();
        std::string const underLimit = limited
            ? capability<IPluginV3OneBuild>(limited.get(), PluginCapabilityType::kBUILD)->getTimingCacheID()
            : "";
        check(plain.find("workspace_limit") == std::string::npos
                && underLimit == plain + ";workspace_limit=" + std::to_string(size_t(256) << 20),
            "the timing-cache ID carries the workspace limit: " + underLimit);
    }
    auto* shell = static_cast<dcn::DeformConvPlugin*>(plugin.get());
    setWorkspaceLimit(nullptr);
    size_t const unlimited = dcn::pluginWorkspaceBytes(largest, DCN_FLOAT16, gemm, dcn::kGemmDefaultColumnBudget);
    check(build->configurePlugin(io.data(), 5, &io[5], 1) == 0 && shell->columnBudget() == dcn::kGemmDefaultColumnBudget
            && build->getWorkspaceSize(io.data(), 5, &io[5], 1) == unlimited && unlimited > (size_t(256) << 20),
        "no limit: the default column budget, workspace " + dcn::describeBytes(unlimited));

    setWorkspaceLimit("256M");
    logger.lastInfo.clear();
    bool const configured = build->configurePlugin(io.data(), 5, &io[5], 1) == 0;
    size_t const budget = shell->columnBudget();
    size_t const asked = build->getWorkspaceSize(io.data(), 5, &io[5], 1);
    check(configured && budget < dcn::kGemmDefaultColumnBudget && asked <= (size_t(256) << 20)
            && asked == dcn::pluginWorkspaceBytes(largest, DCN_FLOAT16, gemm, budget)
            && dcn::pluginWorkspaceBytes(largest, DCN_FLOAT16, gemm, 2 * budget) > (size_t(256) << 20)
            && logger.lastInfo.find(dcn::kWorkspaceLimitVariable) != std::string::npos,
        "a 256 MiB limit: column budget " + dcn::describeBytes(budget) + ", workspace " + dcn::describeBytes(asked)
            + " (the largest budget that fits): " + logger.lastInfo);

    // A second optimisation profile configured afterwards without the limit (or with a smaller max shape) keeps the
    // smaller budget: the engine holds one budget per layer, and every workspace sized so far covers it.
    setWorkspaceLimit(nullptr);
    check(build->configurePlugin(io.data(), 5, &io[5], 1) == 0 && shell->columnBudget() == budget,
        "a later configuration without the limit keeps the smallest budget chosen (" + dcn::describeBytes(budget) + ")");

    // The engine carries the budget; the loaded plugin plans with it, within the allocation, at every batch.
    auto* runtime = capability<IPluginV3OneRuntime>(plugin.get(), PluginCapabilityType::kRUNTIME);
    PluginFieldCollection const* serialized = runtime->getFieldsToSerialize();
    int32_t carried = 0;
    for (int32_t k = 0; k < serialized->nbFields; ++k)
        if (std::string(serialized->fields[k].name) == dcn::kFieldColumnBudget)
            carried = *static_cast<int32_t const*>(serialized->fields[k].data);
    setWorkspaceLimit(nullptr); // a run never reads the variable
    std::unique_ptr<IPluginV3> loaded(creator.createPlugin("res3", serialized, TensorRTPhase::kRUNTIME));
    bool fits = loaded != nullptr && static_cast<dcn::DeformConvPlugin*>(loaded.get())->columnBudget() == budget
        && size_t(carried) << 20 == budget;
    dcn::GemmOptions options;
    options.columnBudget = budget;
    for (int32_t batch = 1; batch <= 8 && fits; ++batch)
        for (int32_t algo : {DCN_ALGO_AUTO, DCN_ALGO_GEMM, DCN_ALGO_FUSED_GEMM})
            fits = fits && dcn::deformConvWorkspaceSize(geometryAt(batch), DCN_FLOAT16, algo, options) <= asked;
    check(fits, "the engine carries the budget (" + std::to_string(carried)
            + " MiB); loaded, every batch 1..8 plans within the workspace");
    {
        Fields damaged; // the engine's fields with a budget of 0 MiB
        for (int32_t k = 0; k < serialized->nbFields; ++k)
        {
            auto const* values = static_cast<int32_t const*>(serialized->fields[k].data);
            std::vector<int32_t> copy(values, values + serialized->fields[k].length);
            if (std::string(serialized->fields[k].name) == dcn::kFieldColumnBudget)
                copy = {0};
            damaged.add(serialized->fields[k].name, copy);
        }
        logger.lastError.clear();
        bool const refused = creator.createPlugin("res3", &damaged.collection, TensorRTPhase::kRUNTIME) == nullptr;
        check(refused && logger.lastError.find(dcn::kFieldColumnBudget) != std::string::npos,
            "createPlugin refuses a column budget of 0 MiB: " + logger.lastError);
        // An engine without the revision and budget fields (built by an older library): refused, not run with a
        // workspace of other sizes; the same fields build a plugin (from ONNX).
        logger.lastError.clear();
        bool const old = creator.createPlugin("res3", &fields.collection, TensorRTPhase::kRUNTIME) == nullptr;
        std::unique_ptr<IPluginV3> fromOnnx(creator.createPlugin("res3", &fields.collection, TensorRTPhase::kBUILD));
        check(old && fromOnnx != nullptr && logger.lastError.find("has no field 'dcn_kernels_revision'") != std::string::npos
                && logger.lastError.find("Rebuild the engine") != std::string::npos,
            "createPlugin(kRUNTIME) refuses an engine without the revision field: " + logger.lastError);
    }

    setWorkspaceLimit("8M");
    logger.lastError.clear();
    bool const tooSmall = build->configurePlugin(io.data(), 5, &io[5], 1) != 0;
    check(tooSmall && logger.lastError.find(dcn::kWorkspaceLimitVariable) != std::string::npos
            && logger.lastError.find("needs at least") != std::string::npos,
        "a limit below the layer's least workspace stops the build: " + logger.lastError);
    // A builder that counts the layer's inputs and outputs against the limit too (TensorRT-RTX's): the budget leaves
    // room for them (x, weight, offset, bias, mask and output at batch 8, half precision), and the timing-cache ID
    // says so. A fresh plugin: one configured earlier keeps its smallest budget.
    size_t const tensorBytes
        = size_t(8 * 128 * 16700 + 128 * 128 * 9 + 8 * 18 * 16700 + 128 + 8 * 9 * 16700 + 8 * 128 * 16700) * 2;
    check(dcn::layerTensorBytes(largest, DCN_FLOAT16, true, true) == tensorBytes
            && dcn::layerTensorBytes(largest, DCN_FLOAT16, false, false)
                == tensorBytes - size_t(128 + 8 * 9 * 16700) * 2,
        "layerTensorBytes: " + dcn::describeBytes(dcn::layerTensorBytes(largest, DCN_FLOAT16, true, true)));
    setWorkspaceLimit("256M");
    setenv(dcn::kWorkspaceChargesTensorsVariable, "1", 1);
    std::unique_ptr<IPluginV3> charged(creator.createPlugin("res3", &fields.collection, TensorRTPhase::kBUILD));
    auto* chargedBuild = charged ? capability<IPluginV3OneBuild>(charged.get(), PluginCapabilityType::kBUILD) : nullptr;
    bool const chargedConfigured = chargedBuild && chargedBuild->configurePlugin(io.data(), 5, &io[5], 1) == 0;
    size_t const chargedBudget
        = chargedConfigured ? static_cast<dcn::DeformConvPlugin*>(charged.get())->columnBudget() : 0;
    size_t const chargedAsk = chargedConfigured ? chargedBuild->getWorkspaceSize(io.data(), 5, &io[5], 1) : 0;
    check(chargedConfigured && chargedBudget < budget && chargedAsk + tensorBytes <= (size_t(256) << 20)
            && dcn::pluginWorkspaceBytes(largest, DCN_FLOAT16, gemm, 2 * chargedBudget) + tensorBytes
                > (size_t(256) << 20)
            && std::string(chargedBuild->getTimingCacheID()) == std::string(build->getTimingCacheID())
                    + ";workspace_limit=" + std::to_string(size_t(256) << 20) + ";charges_tensors=1",
        std::string("a limit that also counts the layer's tensors (") + dcn::describeBytes(tensorBytes) + "): column budget "
            + dcn::describeBytes(chargedBudget) + ", workspace " + dcn::describeBytes(chargedAsk) + ", ID "
            + (chargedBuild ? chargedBuild->getTimingCacheID() : ""));
    setWorkspaceLimit("64M");
    logger.lastError.clear();
    bool const chargedTooSmall = chargedBuild && chargedBuild->configurePlugin(io.data(), 5, &io[5], 1) != 0;
    check(chargedTooSmall && logger.lastError.find("for its inputs and outputs") != std::string::npos
            && logger.lastError.find(dcn::kWorkspaceChargesTensorsVariable) != std::string::npos,
        "under 64 MiB, less than the layer's tensors, the build stops saying why: " + logger.lastError);
    setenv(dcn::kWorkspaceChargesTensorsVariable, "yes", 1);
    logger.lastError.clear();
    bool const chargedMalformed = chargedBuild && chargedBuild->configurePlugin(io.data(), 5, &io[5], 1) != 0;
    check(chargedMalformed && logger.lastError.find(std::string(dcn::kWorkspaceChargesTensorsVariable) + " must be 1")
            != std::string::npos,
        "a malformed " + std::string(dcn::kWorkspaceChargesTensorsVariable) + " stops the build: " + logger.lastError);
    unsetenv(dcn::kWorkspaceChargesTensorsVariable);

    setWorkspaceLimit("lots");
    logger.lastError.clear();
    bool const malformed = build->configurePlugin(io.data(), 5, &io[5], 1) != 0;
    check(malformed && logger.lastError.find(dcn::kWorkspaceLimitVariable) != std::string::npos
            && logger.lastError.find("'lots'") != std::string::npos,
        "a malformed limit stops the build naming the variable: " + logger.lastError);
    setWorkspaceLimit(nullptr);
}

int main()
{
    CaptureLogger logger;
    Finder finder(&logger);
    dcn::DeformConvPluginCreator creator;

    // The entry point installs TensorRT's logger finder only when the TensorRT of these headers is loaded (another
    // major version's finder has another vtable layout); this process loads no libnvinfer, so messages go to stderr.
    check(dcn::sharedLibraryLoaded("libc.so.6") && !dcn::sharedLibraryLoaded("libnvinfer.so.0"),
        "sharedLibraryLoaded finds a loaded soname and not an absent one");
    setLoggerFinder(&finder);
    {
        Fields bad;
        bad.add("strides", {0, 1});
        logger.lastError.clear();
        bool const rejected = creator.createPlugin("n", &bad.collection, TensorRTPhase::kBUILD) == nullptr;
        check(rejected && !dcn::headersTensorRTLoaded() && logger.lastError.empty(),
            "setLoggerFinder keeps a finder out when libnvinfer.so." + std::to_string(NV_TENSORRT_MAJOR)
                + " is not loaded");
    }
    dcn::setTrtLoggerFinder(&finder); // the rest of the checks read the messages through the finder

    // Creator identity and fields.
    check(std::string(creator.getPluginName()) == "DeformConv2d" && std::string(creator.getPluginVersion()) == "1"
            && std::string(creator.getPluginNamespace()) == "dcn_deploy",
        "creator is DeformConv2d / 1 / dcn_deploy");
    PluginFieldCollection const* names = creator.getFieldNames();
    std::string joined;
    for (int32_t k = 0; names && k < names->nbFields; ++k)
        joined += std::string(names->fields[k].name) + (names->fields[k].type == PluginFieldType::kINT32 ? "," : "?,");
    check(joined == "strides,pads,dilations,group,offset_group,allow_tf32,",
        "creator lists the five INT32 attribute fields and allow_tf32: " + joined);

    // Invalid fields: null plugin and a message naming the field and node.
    {
        Fields bad;
        bad.add("pads", {1, 1});
        logger.lastError.clear();
        bool const rejected = creator.createPlugin("node_7", &bad.collection, TensorRTPhase::kBUILD) == nullptr;
        check(rejected && logger.lastError.find("'pads'") != std::string::npos
                && logger.lastError.find("node_7") != std::string::npos,
            "createPlugin rejects pads of length 2: " + logger.lastError);
        Fields wrongType;
        wrongType.add("group", {1}, PluginFieldType::kFLOAT32);
        bool const rejectedType = creator.createPlugin("n", &wrongType.collection, TensorRTPhase::kBUILD) == nullptr;
        check(rejectedType && logger.lastError.find("'group'") != std::string::npos,
            "createPlugin rejects a FLOAT32 group: " + logger.lastError);
    }

    Fields fields = standardFields();
    std::unique_ptr<IPluginV3> plugin(creator.createPlugin("dcn", &fields.collection, TensorRTPhase::kBUILD));
    check(plugin != nullptr, "createPlugin accepts valid fields");
    if (!plugin)
        return failures;
    auto* core = capability<IPluginV3OneCore>(plugin.get(), PluginCapabilityType::kCORE);
    auto* build = capability<IPluginV3OneBuild>(plugin.get(), PluginCapabilityType::kBUILD);
    auto* runtime = capability<IPluginV3OneRuntime>(plugin.get(), PluginCapabilityType::kRUNTIME);
    check(core && build && runtime && std::string(core->getPluginName()) == "DeformConv2d"
            && std::string(core->getPluginNamespace()) == "dcn_deploy",
        "capability interfaces");
    check(build->getNbOutputs() == 1, "one output");

    // Output shapes: constants fold to the formula's values; a dynamic H stays symbolic.
    int64_t const oh = dcn::convOutputExtent<int64_t>(10, int64_t(3), 2, 1, 2, 1);
    int64_t const ow = dcn::convOutputExtent<int64_t>(12, int64_t(2), 1, 0, 1, 2);
    // C = 16, oC = 64, group 2: dense enough for the fused kernel (so the workspace is not 0).
    std::vector<std::vector<int64_t>> shapes
        = {{2, 16, 10, 12}, {64, 8, 3, 2}, {2, 2 * 2 * 3 * 2, oh, ow}, {64}, {2, 2 * 3 * 2, oh, ow}};
    for (int32_t nbInputs = 3; nbInputs <= 5; ++nbInputs)
    {
        Builder builder;
        std::vector<DimsExprs> in;
        for (int32_t k = 0; k < nbInputs; ++k)
            in.push_back(dimsExprs(builder, shapes[k]));
        DimsExprs out{};
        int32_t const rc = build->getOutputShapes(in.data(), nbInputs, nullptr, 0, &out, 1, builder);
        bool const same = rc == 0 && out.nbDims == 4 && out.d[0]->getConstantValue() == 2
            && out.d[1]->getConstantValue() == 64 && out.d[2]->getConstantValue() == oh
            && out.d[3]->getConstantValue() == ow;
        check(same, "getOutputShapes with " + std::to_string(nbInputs) + " inputs = (2, 64, " + std::to_string(oh) + ", "
                + std::to_string(ow) + ")");
    }
    {
        Builder builder;
        std::vector<DimsExprs> in = {dimsExprs(builder, {-1, 16, -1, 12}), dimsExprs(builder, shapes[1]),
            dimsExprs(builder, {-1, 24, -1, ow})};
        DimsExprs out{};
        int32_t const rc = build->getOutputShapes(in.data(), 3, nullptr, 0, &out, 1, builder);
        check(rc == 0 && !out.d[0]->isConstant() && !out.d[2]->isConstant() && out.d[3]->getConstantValue() == ow,
            "getOutputShapes keeps dynamic N and H symbolic");
    }
    {
        Builder builder;
        std::vector<DimsExprs> in
            = {dimsExprs(builder, {2, 12, 10, 12}), dimsExprs(builder, shapes[1]), dimsExprs(builder, shapes[2])};
        DimsExprs out{};
        logger.lastError.clear();
        int32_t const rc = build->getOutputShapes(in.data(), 3, nullptr, 0, &out, 1, builder);
        check(rc != 0 && logger.lastError.find("'group'") != std::string::npos,
            "getOutputShapes rejects C != W.shape[1]*group naming 'group': " + logger.lastError);
    }

    // Types and formats.
    std::vector<DynamicPluginTensorDesc> io;
    for (auto const& shape : shapes)
        io.push_back(tensorDesc(shape, DataType::kHALF));
    io.push_back(tensorDesc({2, 64, oh, ow}, DataType::kHALF));
    bool allHalf = true;
    for (int32_t pos = 0; pos < 6; ++pos)
        allHalf = allHalf && build->supportsFormatCombination(pos, io.data(), 5, 1);
    check(allHalf, "half, linear everywhere is supported");
    io[3].desc.type = DataType::kFLOAT;
    check(!build->supportsFormatCombination(3, io.data(), 5, 1), "a float bias beside half X is rejected");
    io[3].desc.type = DataType::kHALF;
    io[0].desc.format = TensorFormat::kCHW4;
    check(!build->supportsFormatCombination(0, io.data(), 5, 1), "a vectorised format is rejected");
    io[0].desc.format = TensorFormat::kLINEAR;
    io[0].desc.type = DataType::kINT32;
    check(!build->supportsFormatCombination(0, io.data(), 5, 1), "int32 is rejected");
    io[0].desc.type = DataType::kHALF;
    DataType inTypes[5] = {DataType::kBF16, DataType::kBF16, DataType::kBF16, DataType::kBF16, DataType::kBF16};
    DataType outType = DataType::kFLOAT;
    check(build->getOutputDataTypes(&outType, 1, inTypes, 5) == 0 && outType == DataType::kBF16, "output type = input type");
    inTypes[2] = DataType::kFLOAT;
    check(build->getOutputDataTypes(&outType, 1, inTypes, 5) != 0, "mixed input types are rejected");

    // Configure: good shapes pass, a wrong offset channel count fails naming offset_group.
    check(build->configurePlugin(io.data(), 5, &io[5], 1) == 0, "configurePlugin accepts consistent shapes");
    std::vector<DynamicPluginTensorDesc> badIo = io;
    badIo[2] = tensorDesc({2, 12, oh, ow}, DataType::kHALF);
    logger.lastError.clear();
    bool const badRejected = build->configurePlugin(badIo.data(), 5, &badIo[5], 1) != 0;
    check(badRejected && logger.lastError.find("offset_group") != std::string::npos,
        "configurePlugin rejects 12 offset channels: " + logger.lastError);
    {
        // A dynamic batch whose profile max makes N*oH*oW pass int32: getWorkspaceSize could only answer 0 for it
        // (while smaller batches need a workspace), so the build stops here naming the profile.
        std::vector<DynamicPluginTensorDesc> dynamicIo = io;
        for (int32_t k : {0, 2, 4, 5})
        {
            dynamicIo[k].desc.dims.d[0] = -1;
            dynamicIo[k].min.d[0] = 1;
            dynamicIo[k].opt.d[0] = 2;
            dynamicIo[k].max.d[0] = 2;
        }
        check(build->configurePlugin(dynamicIo.data(), 5, &dynamicIo[5], 1) == 0,
            "configurePlugin accepts a dynamic batch with a small profile");
        int64_t const tooMany = (int64_t(1) << 31) / (oh * ow) + 1;
        for (int32_t k : {0, 2, 4, 5})
            dynamicIo[k].max.d[0] = tooMany;
        logger.lastError.clear();
        bool const hugeRejected = build->configurePlugin(dynamicIo.data(), 5, &dynamicIo[5], 1) != 0;
        check(hugeRejected && logger.lastError.find("profile's largest shapes") != std::string::npos
                && logger.lastError.find("2^31") != std::string::npos,
            "configurePlugin rejects a profile max batch of " + std::to_string(tooMany) + ": " + logger.lastError);
    }

    // Workspace from the shapes: for this dense half layer, the larger of the GEMM path's and the fused kernel's
    // (the heuristic's size, which covers every tactic here).
    dcn::DeformConvGeometry geometry;
    bool const geometryOk = standardGeometry(shapes, geometry);
    size_t const expectedWorkspace = std::max(dcn::deformConvWorkspaceSize(geometry, DCN_FLOAT16, DCN_ALGO_AUTO),
        dcn::deformConvWorkspaceSize(geometry, DCN_FLOAT16, DCN_ALGO_GEMM));
    check(geometryOk && expectedWorkspace > 0 && build->getWorkspaceSize(io.data(), 5, &io[5], 1) == expectedWorkspace,
        "getWorkspaceSize = " + std::to_string(expectedWorkspace) + " bytes");
    {
        // A depth-wise-like layer (2 output channels per group): the heuristic runs the direct kernel (no
        // workspace), but the fused tactic (and gemm, where cuBLAS loads) may be timed and chosen, so the
        // workspace must hold theirs too.
        std::vector<std::vector<int64_t>> thin = shapes;
        thin[1] = {4, 8, 3, 2};
        thin[3] = {4};
        std::vector<DynamicPluginTensorDesc> thinIo;
        for (auto const& shape : thin)
            thinIo.push_back(tensorDesc(shape, DataType::kHALF));
        thinIo.push_back(tensorDesc({2, 4, oh, ow}, DataType::kHALF));
        dcn::DeformConvGeometry thinGeometry;
        bool const thinOk = standardGeometry(thin, thinGeometry)
            && build->configurePlugin(thinIo.data(), 5, &thinIo[5], 1) == 0;
        size_t need = 0;
        for (int32_t algo : {DCN_ALGO_FUSED_GEMM, dcn::gemmPathAvailable() ? DCN_ALGO_GEMM : DCN_ALGO_DIRECT})
            need = std::max(need, dcn::deformConvWorkspaceSize(thinGeometry, DCN_FLOAT16, algo));
        size_t const got = build->getWorkspaceSize(thinIo.data(), 5, &thinIo[5], 1);
        check(thinOk && dcn::deformConvWorkspaceSize(thinGeometry, DCN_FLOAT16, DCN_ALGO_AUTO) == 0 && need > 0
                && got == need,
            "getWorkspaceSize of a depth-wise-like layer covers its tactics: " + std::to_string(got) + " bytes");
        check(build->configurePlugin(io.data(), 5, &io[5], 1) == 0, "configurePlugin back to the dense layer");
    }

    checkTacticLogic();
    checkPluginTactics(creator, logger, fields, io);
    checkChannelsLast(creator, fields, io);

    // Runtime: shape change, serialisation round trip, clone.
    std::vector<PluginTensorDesc> runtimeIo;
    for (auto const& d : io)
        runtimeIo.push_back(d.desc);
    check(runtime->onShapeChange(runtimeIo.data(), 5, &runtimeIo[5], 1) == 0, "onShapeChange accepts the shapes");
    PluginFieldCollection const* serialized = runtime->getFieldsToSerialize();
    std::unique_ptr<IPluginV3> restored(creator.createPlugin("dcn", serialized, TensorRTPhase::kRUNTIME));
    bool roundTrip = restored != nullptr && serialized->nbFields == 8;
    if (restored)
    {
        PluginFieldCollection const* again
            = capability<IPluginV3OneRuntime>(restored.get(), PluginCapabilityType::kRUNTIME)->getFieldsToSerialize();
        for (int32_t k = 0; k < serialized->nbFields && roundTrip; ++k)
        {
            auto const* a = static_cast<int32_t const*>(again->fields[k].data);
            auto const* b = static_cast<int32_t const*>(serialized->fields[k].data);
            roundTrip = std::string(again->fields[k].name) == serialized->fields[k].name
                && again->fields[k].length == serialized->fields[k].length;
            for (int32_t e = 0; roundTrip && e < again->fields[k].length; ++e)
                roundTrip = a[e] == b[e];
        }
    }
    check(roundTrip, "getFieldsToSerialize -> createPlugin(kRUNTIME) round trip");
    {
        // An engine serialised by a library of another kernels revision: refused, not run with a wrong workspace.
        std::vector<PluginField> stale(serialized->fields, serialized->fields + serialized->nbFields);
        int32_t const otherRevision = dcn::kKernelsRevision + 1;
        for (PluginField& field : stale)
            if (std::string(field.name) == dcn::kFieldKernelsRevision)
                field.data = &otherRevision;
        PluginFieldCollection staleCollection{int32_t(stale.size()), stale.data()};
        std::unique_ptr<IPluginV3> refused(creator.createPlugin("dcn", &staleCollection, TensorRTPhase::kRUNTIME));
        check(refused == nullptr && logger.lastError.find("kernels revision") != std::string::npos
                && logger.lastError.find("Rebuild the engine") != std::string::npos,
            "createPlugin(kRUNTIME) refuses an engine of another kernels revision: " + logger.lastError);
    }
    std::unique_ptr<IPluginV3> cloned(plugin->clone());
    plugin.reset(); // the clone must not point into the original
    PluginFieldCollection const* clonedFields
        = cloned ? capability<IPluginV3OneRuntime>(cloned.get(), PluginCapabilityType::kRUNTIME)->getFieldsToSerialize()
                 : nullptr;
    check(clonedFields && clonedFields->nbFields == 8 && static_cast<int32_t const*>(clonedFields->fields[1].data)[2] == 2,
        "clone keeps the fields after the original is destroyed");

    checkAllowTf32(creator, logger, shapes, {2, 64, oh, ow});
    checkWorkspaceLimit(creator, logger);
    checkEnqueueOnGpu(creator, fields, kStandardAttrs, shapes, {2, 64, oh, ow}, 1e-5, "IEEE float32");
    // allow_tf32 = 1: the gemm tactic's products on TF32 tensor cores (inputs rounded to 10 mantissa bits; the other
    // kernels stay IEEE float32), so a looser bound.
    Fields tf32Fields = standardFields();
    tf32Fields.add(dcn::kFieldAllowTf32, {1});
    checkEnqueueOnGpu(creator, tf32Fields, kStandardAttrs, shapes, {2, 64, oh, ow}, 5e-3, "allow_tf32 = 1");
    // A depth-wise layer (16 groups of one channel, 2 offset groups): the default runs the direct kernel over a
    // channels-last copy of the input in the workspace.
    Fields depthwiseFields = standardFields(16);
    GroupedLayer const depthwise = groupedLayer(16, 16, oh, ow);
    checkEnqueueOnGpu(creator, depthwiseFields, depthwise.attrs, depthwise.shapes, depthwise.output, 1e-5, "depth-wise");
    // X and Y channels-last, float16 in HWC8 and float32 in HWC: the GEMM path on the dense layer (where cuBLAS
    // loads; in float16 its columns are rounded to half, so a half-precision bound), the channels-last direct kernel
    // on the depth-wise one (the NCHW direct kernel's sums in its order: rounding of the output only).
    checkChannelsLastEnqueueOnGpu<dcn::HostHalf>(creator, fields, kStandardAttrs, shapes, {2, 64, oh, ow}, 1e-2,
        "dense, gemm");
    checkChannelsLastEnqueueOnGpu<float>(creator, fields, kStandardAttrs, shapes, {2, 64, oh, ow}, 1e-5,
        "dense, gemm");
    checkChannelsLastEnqueueOnGpu<float>(creator, depthwiseFields, depthwise.attrs, depthwise.shapes,
        depthwise.output, 1e-5, "depth-wise, direct");
    checkChannelsLastEnqueueOnGpu<dcn::HostHalf>(creator, depthwiseFields, depthwise.attrs, depthwise.shapes,
        depthwise.output, 2e-3, "depth-wise, direct");
    // A grouped layer of 8 channels a group in and out (8 groups, 2 offset groups): dense by autoTakesMatrixPath, yet
    // the channels-last direct kernel's (auto's choice since kernels revision 10) in float16, where HWC8 offers the
    // direct and gemm tactics; in float32 wide items (two 16-byte gathers a neighbour, kernels revision 11), HWC the
    // direct and gemm tactics too, auto's choice the direct kernel since kernels revision 12. Groups of 16: wide
    // items as well (float16 two 16-byte gathers a neighbour, float32 four since kernels revision 13), auto's choice
    // the GEMM path.
    Fields groupedFields = standardFields(8);
    GroupedLayer const grouped = groupedLayer(64, 8, oh, ow);
    checkEnqueueOnGpu(creator, groupedFields, grouped.attrs, grouped.shapes, grouped.output, 1e-5, "groups of 8");
    checkChannelsLastEnqueueOnGpu<dcn::HostHalf>(creator, groupedFields, grouped.attrs, grouped.shapes, grouped.output,
        1e-2, "groups of 8, direct and gemm");
    checkChannelsLastEnqueueOnGpu<float>(creator, groupedFields, grouped.attrs, grouped.shapes, grouped.output, 1e-5,
        "groups of 8, wide direct and gemm");
    Fields sixteenFields = standardFields(4);
    GroupedLayer const sixteen = groupedLayer(64, 4, oh, ow);
    checkEnqueueOnGpu(creator, sixteenFields, sixteen.attrs, sixteen.shapes, sixteen.output, 1e-5, "groups of 16");
    checkChannelsLastEnqueueOnGpu<dcn::HostHalf>(creator, sixteenFields, sixteen.attrs, sixteen.shapes,
        sixteen.output, 1e-2, "groups of 16, wide direct and gemm");
    checkChannelsLastEnqueueOnGpu<float>(creator, sixteenFields, sixteen.attrs, sixteen.shapes, sixteen.output, 1e-5,
        "groups of 16, 64-byte wide direct and gemm");

    std::printf("%d failure(s)\n", failures);
    return failures;
}

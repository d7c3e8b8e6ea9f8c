// Exercises the TensorRT plugin shell (creator, fields, getOutputShapes, format/type checks, configure,
// serialisation, clone) without the TensorRT library: TensorRT's interface classes are header-only, and the two
// it implements internally (IExprBuilder, IDimensionExpr) are stood in for by a minimal expression evaluator
// below. This checks OUR shell's logic and its use of the interfaces; it says nothing about TensorRT's own
// behaviour (the engine build stays a GPU-machine check). Run by tests/test_plugin_logic.py; exit code = failures.
#include "deformConvKernel.h"
#include "deformConvPlugin.h"
#include "shellTestSupport.h"
#include "trtLogging.h"

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

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

// Attributes used throughout: strides (2,1), pads (1,0,2,1), dilations (1,2), group 2, offset_group 2.
Fields standardFields()
{
    Fields f;
    f.add("strides", {2, 1});
    f.add("pads", {1, 0, 2, 1});
    f.add("dilations", {1, 2});
    f.add("group", {2});
    f.add("offset_group", {2});
    return f;
}

// The kernels' geometry for the standard fields and the X, W shapes of `shapes`; false if they do not fit.
bool standardGeometry(std::vector<std::vector<int64_t>> const& shapes, dcn::DeformConvGeometry& geometry)
{
    dcn::TensorShape x, w;
    x.rank = w.rank = 4;
    for (int k = 0; k < 4; ++k)
    {
        x.d[k] = shapes[0][k];
        w.d[k] = shapes[1][k];
    }
    dcn_deform_conv_attrs const attrs{{2, 1}, {1, 0, 2, 1}, {1, 2}, 2, 2}; // standardFields()
    return dcn::makeGeometry(dcn::descFromShapes(attrs, x, w), geometry).ok();
}

template <typename Capability>
Capability* capability(IPluginV3* plugin, PluginCapabilityType type)
{
    return static_cast<Capability*>(plugin->getCapabilityInterface(type));
}

// With a GPU: enqueue the plugin (AUTO: the GEMM path where cuBLAS loads, else the fused kernel) on random float32
// data and compare with the direct kernel on the same device buffers. Without a GPU: reported and skipped.
void checkEnqueueOnGpu(dcn::DeformConvPluginCreator& creator, Fields& fields,
    std::vector<std::vector<int64_t>> const& shapes, std::vector<int64_t> const& outShape)
{
    if (!shelltest::cudaDevicePresent())
    {
        std::printf("skip enqueue on a GPU: no CUDA device\n");
        return;
    }
    std::printf("info cuBLAS GEMM path available: %s\n", dcn::gemmPathAvailable() ? "yes" : "no");
    std::unique_ptr<IPluginV3> plugin(creator.createPlugin("gpu", &fields.collection, TensorRTPhase::kRUNTIME));
    auto* build = capability<IPluginV3OneBuild>(plugin.get(), PluginCapabilityType::kBUILD);
    auto* runtime = capability<IPluginV3OneRuntime>(plugin.get(), PluginCapabilityType::kRUNTIME);
    std::vector<DynamicPluginTensorDesc> io;
    for (auto const& shape : shapes)
        io.push_back(tensorDesc(shape));
    io.push_back(tensorDesc(outShape));
    std::vector<PluginTensorDesc> runtimeIo;
    for (auto const& d : io)
        runtimeIo.push_back(d.desc);
    size_t const workspaceBytes = build->getWorkspaceSize(io.data(), 5, &io[5], 1);
    check(runtime->onShapeChange(runtimeIo.data(), 5, &runtimeIo[5], 1) == 0, "GPU: onShapeChange");

    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto count = [](std::vector<int64_t> const& shape) {
        size_t n = 1;
        for (int64_t d : shape)
            n *= size_t(d);
        return n;
    };
    shelltest::DeviceBuffers buffers;
    void* device[5];
    for (size_t k = 0; k < 5; ++k)
    {
        std::vector<float> host(count(shapes[k]));
        for (float& v : host)
            v = k == 2 ? 3.0f * normal(rng) : k == 4 ? std::fabs(normal(rng)) : normal(rng); // offsets reach off the image
        device[k] = buffers.upload(host);
    }
    size_t const outCount = count(outShape);
    void* output = buffers.allocate(outCount);
    void* reference = buffers.allocate(outCount);
    void* workspace = buffers.allocate(workspaceBytes / sizeof(float) + 1);
    check(buffers.ok(), "GPU: buffers allocated (workspace " + std::to_string(workspaceBytes) + " bytes)");
    if (!buffers.ok())
        return;
    void const* inputs[5] = {device[0], device[1], device[2], device[3], device[4]};
    void* outputs[1] = {output};
    int32_t const rc = runtime->enqueue(runtimeIo.data(), &runtimeIo[5], inputs, outputs, workspace, nullptr);
    dcn::DeformConvGeometry geometry;
    bool const direct = standardGeometry(shapes, geometry)
        && dcn::launchDeformConv(geometry, DCN_FLOAT32, DCN_ALGO_DIRECT, device[0], device[2], device[1], device[3],
               device[4], reference, nullptr, 0, nullptr).ok();
    std::vector<float> const got = buffers.download(output, outCount);
    std::vector<float> const want = buffers.download(reference, outCount);
    double maxError = 0.0, maxValue = 0.0;
    for (size_t i = 0; i < got.size(); ++i)
    {
        maxError = std::fmax(maxError, std::fabs(double(got[i]) - double(want[i])));
        maxValue = std::fmax(maxValue, std::fabs(double(want[i])));
    }
    check(rc == 0 && direct && buffers.ok() && maxError <= 1e-5 * (maxValue + 1.0),
        "GPU: plugin enqueue agrees with the direct kernel (max abs error " + std::to_string(maxError) + ", max |out| "
            + std::to_string(maxValue) + ")");
}

} // namespace

// The library's entry point (plugin_registry.cpp), as TensorRT calls it.
extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);

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
    check(joined == "strides,pads,dilations,group,offset_group,", "creator lists the five INT32 fields: " + joined);

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

    // Workspace from the shapes: for this dense half layer, the larger of the GEMM path's and the fused kernel's.
    dcn::DeformConvGeometry geometry;
    bool const geometryOk = standardGeometry(shapes, geometry);
    size_t const expectedWorkspace = dcn::deformConvWorkspaceSize(geometry, DCN_FLOAT16, DCN_ALGO_AUTO);
    check(geometryOk && expectedWorkspace > 0 && build->getWorkspaceSize(io.data(), 5, &io[5], 1) == expectedWorkspace,
        "getWorkspaceSize = " + std::to_string(expectedWorkspace) + " bytes");

    // Runtime: shape change, serialisation round trip, clone.
    std::vector<PluginTensorDesc> runtimeIo;
    for (auto const& d : io)
        runtimeIo.push_back(d.desc);
    check(runtime->onShapeChange(runtimeIo.data(), 5, &runtimeIo[5], 1) == 0, "onShapeChange accepts the shapes");
    PluginFieldCollection const* serialized = runtime->getFieldsToSerialize();
    std::unique_ptr<IPluginV3> restored(creator.createPlugin("dcn", serialized, TensorRTPhase::kRUNTIME));
    bool roundTrip = restored != nullptr && serialized->nbFields == 5;
    if (restored)
    {
        PluginFieldCollection const* again
            = capability<IPluginV3OneRuntime>(restored.get(), PluginCapabilityType::kRUNTIME)->getFieldsToSerialize();
        for (int32_t k = 0; k < 5 && roundTrip; ++k)
        {
            auto const* a = static_cast<int32_t const*>(again->fields[k].data);
            auto const* b = static_cast<int32_t const*>(fields.collection.fields[k].data);
            roundTrip = std::string(again->fields[k].name) == fields.collection.fields[k].name
                && again->fields[k].length == fields.collection.fields[k].length;
            for (int32_t e = 0; roundTrip && e < again->fields[k].length; ++e)
                roundTrip = a[e] == b[e];
        }
    }
    check(roundTrip, "getFieldsToSerialize -> createPlugin(kRUNTIME) round trip");
    std::unique_ptr<IPluginV3> cloned(plugin->clone());
    plugin.reset(); // the clone must not point into the original
    PluginFieldCollection const* clonedFields
        = cloned ? capability<IPluginV3OneRuntime>(cloned.get(), PluginCapabilityType::kRUNTIME)->getFieldsToSerialize()
                 : nullptr;
    check(clonedFields && clonedFields->nbFields == 5 && static_cast<int32_t const*>(clonedFields->fields[1].data)[2] == 2,
        "clone keeps the fields after the original is destroyed");

    checkEnqueueOnGpu(creator, fields, shapes, {2, 64, oh, ow});

    std::printf("%d failure(s)\n", failures);
    return failures;
}

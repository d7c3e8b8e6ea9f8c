// Exercises the DeformRoIPool / DeformPSRoIPool TensorRT plugin shells (creators, fields, getOutputShapes,
// format/type checks, configure, serialisation, clone) without the TensorRT library: the interface classes are
// header-only and the expression builder is stood in for by a constant-folding evaluator. It checks our shell's
// logic, not TensorRT's behaviour. Run by tests/test_roi_plugin_host.py; the exit code is the failure count.
#include "roiPoolPlugin.h"
#include "roi_pool_kernels.h"
#include "shellTestSupport.h"
#include "trtLogging.h"

#include <NvInferRuntime.h>

#include <cmath>
#include <cstdio>
#include <functional>
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
using shelltest::check;
using shelltest::failures;
using LastErrorLogger = shelltest::CaptureLogger;
using OneLoggerFinder = shelltest::Finder;

// A field list that owns its values.
struct Fields
{
    std::deque<int32_t> ints;
    std::deque<float> floats;
    std::deque<std::string> names;
    std::vector<PluginField> fields;
    PluginFieldCollection collection{};

    void addInt(std::string const& name, int32_t v)
    {
        names.push_back(name);
        ints.push_back(v);
        push(PluginField(names.back().c_str(), &ints.back(), PluginFieldType::kINT32, 1));
    }
    void addFloat(std::string const& name, float v)
    {
        names.push_back(name);
        floats.push_back(v);
        push(PluginField(names.back().c_str(), &floats.back(), PluginFieldType::kFLOAT32, 1));
    }
    void push(PluginField const& f)
    {
        fields.push_back(f);
        collection.nbFields = int32_t(fields.size());
        collection.fields = fields.data();
    }
};

std::string dimsText(DimsExprs const& e)
{
    std::string s;
    for (int32_t k = 0; k < e.nbDims; ++k)
        s += (e.d[k]->isConstant() ? std::to_string(e.d[k]->getConstantValue()) : std::string("?")) + ",";
    return s;
}

std::string fieldText(PluginFieldCollection const* fc)
{
    std::string s;
    for (int32_t k = 0; fc && k < fc->nbFields; ++k)
    {
        PluginField const& f = fc->fields[k];
        s += f.name;
        if (f.data && f.type == PluginFieldType::kINT32)
            s += "=" + std::to_string(*static_cast<int32_t const*>(f.data));
        else if (f.data && f.type == PluginFieldType::kFLOAT32)
            s += "=" + std::to_string(*static_cast<float const*>(f.data));
        s += f.type == PluginFieldType::kINT32 ? "i," : "f,";
    }
    return s;
}

// Build-phase checks shared by both ops: output shape, bad rois, types, configure, serialise + reload, clone.
void exercise(IPluginCreatorV3One& creator, Fields const& fields, std::vector<std::vector<int64_t>> const& shapes,
    std::string const& expectedOut, LastErrorLogger& logger)
{
    std::string const op = creator.getPluginName();
    IPluginV3* plugin = creator.createPlugin("node", &fields.collection, TensorRTPhase::kBUILD);
    check(plugin != nullptr, op + ": createPlugin with valid fields");
    if (!plugin)
        return;
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    check(std::string(core->getPluginName()) == op && std::string(core->getPluginNamespace()) == "dcn_deploy",
        op + ": plugin identity");

    Builder b;
    DimsExprs in[3] = {dimsExprs(b, shapes[0]), dimsExprs(b, {-1, 5}), dimsExprs(b, shapes[2])};
    DimsExprs out{};
    bool const shaped = build->getOutputShapes(in, 3, nullptr, 0, &out, 1, b) == 0;
    check(shaped && dimsText(out) == expectedOut,
        op + ": output shape with a dynamic RoI count is " + dimsText(out) + " (want " + expectedOut + ")");
    DimsExprs badRois[3] = {dimsExprs(b, shapes[0]), dimsExprs(b, {7, 4}), dimsExprs(b, shapes[2])};
    logger.lastError.clear();
    bool const refused = build->getOutputShapes(badRois, 3, nullptr, 0, &out, 1, b) != 0;
    check(refused && logger.lastError.find("rois dim 1 must be 5") != std::string::npos,
        op + ": rejects rois (7, 4): " + logger.lastError);

    DataType types[3] = {DataType::kHALF, DataType::kHALF, DataType::kFLOAT};
    DataType outType{};
    check(build->getOutputDataTypes(&outType, 1, types, 3) != 0, op + ": rejects mixed input types");
    types[2] = DataType::kHALF;
    check(build->getOutputDataTypes(&outType, 1, types, 3) == 0 && outType == DataType::kHALF, op + ": half in, half out");

    std::vector<int64_t> roisShape = {9, 5};
    std::vector<int64_t> third = shapes[2];
    third[0] = 9;
    DynamicPluginTensorDesc io[4] = {tensorDesc(shapes[0]), tensorDesc(roisShape), tensorDesc(third), tensorDesc({9, 1, 1, 1})};
    check(build->supportsFormatCombination(0, io, 3, 1), op + ": float linear X supported");
    io[1].desc.type = DataType::kINT32;
    check(!build->supportsFormatCombination(1, io, 3, 1), op + ": int32 rois rejected");
    io[1].desc.type = DataType::kFLOAT;
    check(build->configurePlugin(io, 3, io + 3, 1) == 0, op + ": configurePlugin with consistent shapes");
    PluginTensorDesc runtimeIn[3] = {io[0].desc, io[1].desc, io[2].desc};
    check(runtime->onShapeChange(runtimeIn, 3, &io[3].desc, 1) == 0, op + ": onShapeChange");
    runtimeIn[2].dims.d[0] = 8;
    check(runtime->onShapeChange(runtimeIn, 3, &io[3].desc, 1) != 0, op + ": onShapeChange rejects 8 offsets for 9 RoIs");

    std::string const serialised = fieldText(runtime->getFieldsToSerialize());
    IPluginV3* reloaded = creator.createPlugin("node", runtime->getFieldsToSerialize(), TensorRTPhase::kRUNTIME);
    check(reloaded != nullptr, op + ": reload from serialised fields " + serialised);
    if (reloaded)
    {
        auto* r = static_cast<IPluginV3OneRuntime*>(reloaded->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        check(fieldText(r->getFieldsToSerialize()) == serialised, op + ": fields survive the round trip");
        delete reloaded;
    }
    IPluginV3* copy = plugin->clone();
    check(copy != nullptr && fieldText(static_cast<IPluginV3OneRuntime*>(
                                 copy->getCapabilityInterface(PluginCapabilityType::kRUNTIME))->getFieldsToSerialize())
            == serialised,
        op + ": clone keeps the fields");
    delete copy;
    delete plugin;
}

// With a GPU: the plugin (created for the runtime, shapes set by onShapeChange) enqueued on random float32 data must
// give exactly what the C ABI's CUDA entry gives for the descriptor the fields and shapes describe: this checks the
// plugin's plumbing (shapes -> descriptor, input order, dtype), the kernels themselves being checked against the
// reference through ctypes (tests/test_roi_plugin_host.py).
void checkEnqueueOnGpu(IPluginCreatorV3One& creator, Fields const& fields, std::vector<std::vector<int64_t>> const& in,
    std::vector<int64_t> const& out, std::function<int32_t(void const* const*, void*)> const& direct)
{
    std::string const op = creator.getPluginName();
    if (!shelltest::cudaDevicePresent())
    {
        std::printf("skip %s enqueue on a GPU: no CUDA device\n", op.c_str());
        return;
    }
    std::unique_ptr<IPluginV3> plugin(creator.createPlugin("gpu", &fields.collection, TensorRTPhase::kRUNTIME));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    std::vector<PluginTensorDesc> io;
    for (auto const& shape : in)
        io.push_back(tensorDesc(shape).desc);
    io.push_back(tensorDesc(out).desc);
    check(runtime->onShapeChange(io.data(), 3, &io[3], 1) == 0, op + " GPU: onShapeChange");

    std::mt19937 rng(11);
    std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
    int64_t const batch = in[0][0], height = in[0][2], width = in[0][3], rois = in[1][0];
    std::vector<float> x(size_t(in[0][0] * in[0][1] * height * width)), boxes, third(size_t(in[2][0] * in[2][1] * in[2][2] * in[2][3]));
    for (float& v : x)
        v = 2.0f * uniform(rng) - 1.0f;
    for (int64_t k = 0; k < rois; ++k) // (batch index, x1, y1, x2, y2) in image coordinates (spatial scale 0.5)
    {
        float const x1 = uniform(rng) * 2.0f * float(width) - 2.0f, y1 = uniform(rng) * 2.0f * float(height) - 2.0f;
        boxes.insert(boxes.end(), {float(k % batch), x1, y1, x1 + 2.0f + 8.0f * uniform(rng), y1 + 2.0f + 8.0f * uniform(rng)});
    }
    for (float& v : third)
        v = uniform(rng) - 0.5f;
    shelltest::DeviceBuffers buffers;
    void const* inputs[3] = {buffers.upload(x), buffers.upload(boxes), buffers.upload(third)};
    size_t const outCount = size_t(out[0] * out[1] * out[2] * out[3]);
    void* output = buffers.allocate(outCount);
    void* reference = buffers.allocate(outCount);
    check(buffers.ok(), op + " GPU: buffers allocated");
    if (!buffers.ok())
        return;
    int32_t const rc = runtime->enqueue(io.data(), &io[3], inputs, &output, nullptr, nullptr);
    int32_t const directRc = direct(inputs, reference);
    std::vector<float> const got = buffers.download(output, outCount);
    std::vector<float> const want = buffers.download(reference, outCount);
    bool same = rc == 0 && directRc == 0 && buffers.ok();
    double maxValue = 0.0;
    for (size_t i = 0; i < got.size(); ++i)
    {
        same = same && got[i] == want[i];
        maxValue = std::fmax(maxValue, std::fabs(double(want[i])));
    }
    check(same && maxValue > 0.0, op + " GPU: plugin enqueue equals the C ABI kernel (max |out| " + std::to_string(maxValue) + ")");
}

} // namespace

int main()
{
    LastErrorLogger logger;
    OneLoggerFinder finder(&logger);
    dcn::setTrtLoggerFinder(&finder);

    dcn::DeformRoiPoolPluginCreator roiCreator;
    dcn::DeformPsroiPoolPluginCreator psCreator;
    check(std::string(roiCreator.getPluginName()) == "DeformRoIPool" && std::string(roiCreator.getPluginVersion()) == "1"
            && std::string(roiCreator.getPluginNamespace()) == "dcn_deploy",
        "creator DeformRoIPool / 1 / dcn_deploy");
    check(std::string(psCreator.getPluginName()) == "DeformPSRoIPool", "creator DeformPSRoIPool");
    check(fieldText(roiCreator.getFieldNames()) == "pooled_heighti,pooled_widthi,sampling_ratioi,spatial_scalef,gammaf,",
        "DeformRoIPool field names: " + fieldText(roiCreator.getFieldNames()));
    check(fieldText(psCreator.getFieldNames())
            == "output_dimi,group_sizei,pooled_sizei,part_sizei,sample_per_parti,no_transi,spatial_scalef,trans_stdf,",
        "DeformPSRoIPool field names: " + fieldText(psCreator.getFieldNames()));

    Fields bad;
    bad.addInt("pooled_width", 0);
    logger.lastError.clear();
    bool const rejected = roiCreator.createPlugin("node_3", &bad.collection, TensorRTPhase::kBUILD) == nullptr;
    check(rejected
            && logger.lastError.find("pooled_width") != std::string::npos
            && logger.lastError.find("node_3") != std::string::npos,
        "createPlugin rejects pooled_width 0: " + logger.lastError);

    // Scales exactly representable in float32, so the GPU check's descriptors hold the same values.
    Fields roi;
    roi.addInt("pooled_height", 7);
    roi.addInt("pooled_width", 5);
    roi.addInt("sampling_ratio", 2);
    roi.addFloat("spatial_scale", 0.5f);
    roi.addFloat("gamma", 0.125f);
    exercise(roiCreator, roi, {{2, 256, -1, -1}, {}, {-1, 2, 7, 5}}, "?,256,7,5,", logger);
    checkEnqueueOnGpu(roiCreator, roi, {{2, 8, 12, 13}, {9, 5}, {9, 2, 7, 5}}, {9, 8, 7, 5},
        [](void const* const* in, void* out) {
            dcn_deform_roi_pool_desc const d{2, 8, 12, 13, 9, 7, 5, 2, 0.5f, 0.125f};
            return dcn_deform_roi_pool_forward_cuda(&d, DCN_FLOAT32, in[0], in[1], in[2], out, nullptr);
        });

    Fields ps;
    ps.addInt("output_dim", 3);
    ps.addInt("group_size", 3);
    ps.addInt("pooled_size", 3);
    ps.addInt("part_size", 0);
    ps.addInt("sample_per_part", 4);
    ps.addInt("no_trans", 0);
    ps.addFloat("spatial_scale", 0.5f);
    ps.addFloat("trans_std", 0.125f);
    exercise(psCreator, ps, {{1, 27, -1, -1}, {}, {-1, 6, 3, 3}}, "?,3,3,3,", logger);
    checkEnqueueOnGpu(psCreator, ps, {{2, 27, 10, 11}, {9, 5}, {9, 6, 3, 3}}, {9, 3, 3, 3},
        [](void const* const* in, void* out) {
            dcn_deform_psroi_pool_desc const d{2, 27, 10, 11, 9, 3, 3, 3, 3, 4, 3, 0, 0.5f, 0.125f};
            return dcn_deform_psroi_pool_forward_cuda(&d, DCN_FLOAT32, in[0], in[1], in[2], out, nullptr);
        });

    std::printf("%d failure(s)\n", failures);
    return failures;
}

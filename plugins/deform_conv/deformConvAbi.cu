// The plain C ABI of the deformable-convolution CUDA kernels (plugins/common/dcn_kernels.h), for ctypes callers
// (tests, benchmarks): dcn_cuda_available, dcn_gemm_path_available, dcn_deform_conv2d_workspace_size and
// dcn_deform_conv2d_forward_cuda over launchDeformConv (deformConvLaunch.cu), with the GEMM path's options read
// from the environment. Errors become a code + this thread's dcn_last_error() (guarded, dcnStatus.h).
#include "cublasLoader.h"
#include "cublasLtLoader.h" // kCublasLtSwitch
#include "deformConvKernel.h"
#include "deformConvShapes.h"

#include <cuda_runtime.h>

#include <cstdlib>
#include <initializer_list>
#include <string>

DCN_API int32_t dcn_cuda_available(void)
{
    int count = 0;
    return cudaGetDeviceCount(&count) == cudaSuccess && count > 0 ? 1 : 0;
}

DCN_API int32_t dcn_gemm_path_available(void)
{
    bool const available = dcn::gemmPathAvailable();
    dcn::publish(available ? dcn::Status::success()
                           : dcn::Status::error(DCN_ERROR_UNSUPPORTED, dcn::cublasUnavailableReason()));
    return available ? 1 : 0;
}

namespace
{

// The GEMM path's options for the C ABI (benchmarks, tests), from the environment, read once:
//   DCN_DEPLOY_GEMM_CHUNK_MB      the column budget in MiB (default 256);
//   DCN_DEPLOY_GEMM_CHUNKS        even (default) or full: how the batch is cut into chunks (GemmChunks);
//   DCN_DEPLOY_GEMM_PRODUCT       tn (default) or nn: the staged product's operand layout (GemmProduct);
//   DCN_DEPLOY_GEMM_SPLIT_K       auto (default), 1, 2, 4 or 8: slices of K of the staged product, where
//                                 valid (GemmOptions::splitK, gemmSplitK);
//   DCN_DEPLOY_GEMM_TF32          0 (default) or 1: float32 products on TF32 tensor cores (GemmOptions::tf32),
//                                 whatever dcn_deform_conv2d_forward_cuda's flags say (1 forces it on);
//   DCN_DEPLOY_GEMM_OUTPUT        auto (default), direct or staged: where the product writes (GemmOutput);
//   DCN_DEPLOY_GEMM_BIAS          auto (default), epilogue or fill: where a half type's product adds the bias
//                                 (cuBLASLt's epilogue or not: GemmBias);
//   DCN_DEPLOY_GEMM_SAMPLER       auto (default), tiled or thread: how the columns are sampled (GemmSampler);
//   DCN_DEPLOY_GEMM_TILE_ITEMS    the tiled sampler's channel vectors per tile (default: kTileDefaultElements'
//                                 worth);
//   DCN_DEPLOY_CUBLAS_WORKSPACE_MB cuBLAS's workspace in MiB (default 8: kCublasWorkspaceBytes);
//   DCN_DEPLOY_DIRECT_LAYOUT      nhwc (default) or nchw: whether the direct kernel on depth-wise layers samples
//                                 a channels-last copy of the input (GemmOptions::directChannelsLast) or the
//                                 input as it is;
//   DCN_DEPLOY_DIRECT_TAPS        item (default) or shared: whether the channels-last direct kernel's items
//                                 compute their own taps or read a block's (GemmOptions::directSharedTaps),
//                                 whatever the forward's flags say (DCN_FORWARD_SHARED_TAPS also turns it on);
//   DCN_DEPLOY_DIRECT_MMA         off (default) or on: whether the half types' groups of 1 to 16 channels run on
//                                 the tensor-core group kernel where the channels-last direct kernel would run them
//                                 (GemmOptions::directGroupMma; DCN_FORWARD_GROUP_MMA also turns it on);
//   DCN_DEPLOY_IMPLICIT_TILE_M    auto (default), 64, 128 or 256: the implicit-GEMM kernel's output channels per
//                                 block;
//   DCN_DEPLOY_IMPLICIT_THREADS   auto (default), 256 or 512: its threads per block (128- and 256-row tiles);
//   DCN_DEPLOY_IMPLICIT_KERNEL    stepwise (default) or specialised: which implicit-GEMM kernel (ImplicitKernel);
//   DCN_DEPLOY_CUBLASLT           on (default) or off: off loads no cuBLASLt (kCublasLtSwitch, read by its loader,
//                                 so by the plugin too; validated here as well, as the others).
// The TensorRT plugin never reads them: its workspace is sized at build time and used at run time, maybe elsewhere.
// A bad value is reported by every entry that uses the options (abiGemmOptionsStatus).
struct AbiGemmOptions
{
    dcn::GemmOptions options;
    std::string problem; // what was wrong with the variables as read (they may be unset later), or empty
};

// Add one variable's problem to the others (read once: the variables may be unset later).
void addProblem(std::string& problems, std::string const& problem)
{
    problems += (problems.empty() ? "" : "; ") + problem;
}

// `name`'s value among `choices` (its index: the enum's value), "" meaning the first; -1 for anything else.
int32_t choiceFromEnvironment(char const* name, std::initializer_list<char const*> choices, std::string& problem)
{
    char const* text = std::getenv(name);
    std::string const value = text ? text : "";
    if (value.empty())
        return 0;
    int32_t index = 0;
    std::string names;
    for (char const* choice : choices)
    {
        if (value == choice)
            return index;
        names += (index ? ", " : "") + std::string(choice);
        ++index;
    }
    addProblem(problem, std::string(name) + " must be one of " + names + ", got '" + value
        + "': unset it or set one of those");
    return -1;
}

// `name`'s value among `choices`, "auto" and then numbers: the number chosen, 0 for "auto" or unset (or, with a
// problem, anything else).
int32_t numberChoiceFromEnvironment(char const* name, std::initializer_list<char const*> choices, std::string& problem)
{
    int32_t const index = choiceFromEnvironment(name, choices, problem);
    return index > 0 ? int32_t(std::strtol(choices.begin()[index], nullptr, 10)) : 0;
}

// `name`'s value as a whole number in [low, high]; 0 when unset or empty, -1 (with a problem) for anything else.
long wholeNumberFromEnvironment(char const* name, long low, long high, std::string& problem)
{
    char const* text = std::getenv(name);
    std::string const value = text ? text : "";
    if (value.empty())
        return 0;
    char* end = nullptr;
    long const number = std::strtol(value.c_str(), &end, 10);
    if (*end == '\0' && number >= low && number <= high)
        return number;
    addProblem(problem, std::string(name) + " must be a whole number from " + std::to_string(low) + " to "
        + std::to_string(high) + ", got '" + value + "': unset it or set one");
    return -1;
}

AbiGemmOptions const& abiGemmSettings()
{
    static AbiGemmOptions const settings = [] {
        AbiGemmOptions read;
        dcn::GemmOptions& parsed = read.options;
        long const mb = wholeNumberFromEnvironment("DCN_DEPLOY_GEMM_CHUNK_MB", 1, 1 << 20, read.problem);
        if (mb > 0)
            parsed.columnBudget = size_t(mb) << 20;
        parsed.chunks = choiceFromEnvironment("DCN_DEPLOY_GEMM_CHUNKS", {"even", "full"}, read.problem);
        parsed.product = choiceFromEnvironment("DCN_DEPLOY_GEMM_PRODUCT", {"tn", "nn"}, read.problem);
        parsed.splitK = numberChoiceFromEnvironment("DCN_DEPLOY_GEMM_SPLIT_K", {"auto", "1", "2", "4", "8"},
            read.problem);
        parsed.tf32 = choiceFromEnvironment("DCN_DEPLOY_GEMM_TF32", {"0", "1"}, read.problem) == 1;
        parsed.output = choiceFromEnvironment("DCN_DEPLOY_GEMM_OUTPUT", {"auto", "direct", "staged"}, read.problem);
        parsed.bias = choiceFromEnvironment("DCN_DEPLOY_GEMM_BIAS", {"auto", "epilogue", "fill"}, read.problem);
        parsed.sampler = choiceFromEnvironment("DCN_DEPLOY_GEMM_SAMPLER", {"auto", "tiled", "thread"}, read.problem);
        long const tileItems = wholeNumberFromEnvironment("DCN_DEPLOY_GEMM_TILE_ITEMS", 1, 1 << 20, read.problem);
        parsed.tileItems = int32_t(tileItems > 0 ? tileItems : 0);
        parsed.directChannelsLast = choiceFromEnvironment("DCN_DEPLOY_DIRECT_LAYOUT", {"nhwc", "nchw"}, read.problem)
            == 0;
        parsed.directSharedTaps = choiceFromEnvironment("DCN_DEPLOY_DIRECT_TAPS", {"item", "shared"}, read.problem)
            == 1;
        parsed.directGroupMma = choiceFromEnvironment("DCN_DEPLOY_DIRECT_MMA", {"off", "on"}, read.problem) == 1;
        long const cublasMb = wholeNumberFromEnvironment("DCN_DEPLOY_CUBLAS_WORKSPACE_MB", 1, 1024, read.problem);
        if (cublasMb > 0)
            parsed.cublasWorkspaceBytes = size_t(cublasMb) << 20;
        parsed.implicitTileM = numberChoiceFromEnvironment("DCN_DEPLOY_IMPLICIT_TILE_M", {"auto", "64", "128", "256"},
            read.problem);
        parsed.implicitThreads = numberChoiceFromEnvironment("DCN_DEPLOY_IMPLICIT_THREADS", {"auto", "256", "512"},
            read.problem);
        choiceFromEnvironment(dcn::kCublasLtSwitch, {"on", "off"}, read.problem); // read by cublasLtLoader.cpp
        parsed.implicitKernel = choiceFromEnvironment("DCN_DEPLOY_IMPLICIT_KERNEL", {"stepwise", "specialised"},
            read.problem);
        return read;
    }();
    return settings;
}

dcn::GemmOptions const& abiGemmOptions()
{
    return abiGemmSettings().options;
}

dcn::Status abiGemmOptionsStatus()
{
    AbiGemmOptions const& settings = abiGemmSettings();
    return settings.problem.empty() ? dcn::Status::success() : dcn::Status::invalid(settings.problem);
}

// The ABI's options for a call's flags (dcn_forward_flag), or a problem naming `entry` where a bit is unknown.
dcn::Status abiOptionsForFlags(char const* entry, int32_t flags, dcn::GemmOptions& options)
{
    constexpr int32_t kKnown
        = DCN_FORWARD_ALLOW_TF32 | DCN_FORWARD_CHANNELS_LAST | DCN_FORWARD_SHARED_TAPS | DCN_FORWARD_GROUP_MMA;
    if (flags & ~kKnown)
        return dcn::Status::invalid(std::string(entry) + ": flags " + std::to_string(flags)
            + " has bits other than DCN_FORWARD_ALLOW_TF32 (1), DCN_FORWARD_CHANNELS_LAST (2), "
              "DCN_FORWARD_SHARED_TAPS (4) and DCN_FORWARD_GROUP_MMA (8); pass a sum of those");
    dcn::Status const status = abiGemmOptionsStatus();
    options = abiGemmOptions(); // DCN_DEPLOY_GEMM_TF32=1 forces TF32 whatever the flags say, and so on
    options.tf32 = options.tf32 || (flags & DCN_FORWARD_ALLOW_TF32) != 0;
    options.channelsLastTensors = (flags & DCN_FORWARD_CHANNELS_LAST) != 0;
    options.directSharedTaps = options.directSharedTaps || (flags & DCN_FORWARD_SHARED_TAPS) != 0;
    options.directGroupMma = options.directGroupMma || (flags & DCN_FORWARD_GROUP_MMA) != 0;
    return status;
}

} // namespace

DCN_API int32_t dcn_deform_conv2d_workspace_size(
    const dcn_deform_conv_desc* desc, int32_t dtype, int32_t algo, int32_t flags, size_t* bytes)
{
    return dcn::guarded([&] {
        if (!desc || !bytes)
            return dcn::Status::invalid("dcn_deform_conv2d_workspace_size: desc and bytes must not be NULL");
        dcn::DeformConvGeometry geo;
        dcn::GemmOptions options;
        dcn::Status status = abiOptionsForFlags("dcn_deform_conv2d_workspace_size", flags, options);
        if (status.ok())
            status = dcn::checkDtypeAndAlgo(dtype, algo);
        if (status.ok())
            status = dcn::makeGeometry(*desc, geo);
        if (status.ok())
            *bytes = dcn::deformConvWorkspaceSize(geo, dtype, algo, options);
        return status;
    });
}

DCN_API int32_t dcn_deform_conv2d_forward_cuda(const dcn_deform_conv_desc* desc, int32_t dtype, int32_t algo,
    int32_t flags, const void* input, const void* offset, const void* weight, const void* bias, const void* mask,
    void* output, void* workspace, size_t workspace_bytes, void* stream)
{
    return dcn::guarded([&] {
        if (!desc)
            return dcn::Status::invalid("dcn_deform_conv2d_forward_cuda: desc must not be NULL");
        dcn::DeformConvGeometry geo;
        dcn::GemmOptions options;
        dcn::Status status = abiOptionsForFlags("dcn_deform_conv2d_forward_cuda", flags, options);
        if (status.ok())
            status = dcn::makeGeometry(*desc, geo);
        if (!status.ok())
            return status;
        return dcn::launchDeformConv(geo, dtype, algo, input, offset, weight, bias, mask, output, workspace,
            workspace_bytes, static_cast<cudaStream_t>(stream), nullptr, options);
    });
}

// The plain C ABI of the deformable-convolution CUDA kernels (plugins/common/dcn_kernels.h), for ctypes callers
// (tests, benchmarks): dcn_cuda_available, dcn_gemm_path_available, dcn_deform_conv2d_workspace_size and
// dcn_deform_conv2d_forward_cuda over launchDeformConv (deformConvLaunch.cu), with the GEMM path's options read
// from the environment. Errors become a code + this thread's dcn_last_error() (guarded, dcnStatus.h).
#include "cublasLoader.h"
#include "deformConvKernel.h"
#include "deformConvShapes.h"

#include <cuda_runtime.h>

#include <cstdlib>
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
//   DCN_DEPLOY_GEMM_CHUNK_MB  the column budget in MiB (default 64);
//   DCN_DEPLOY_GEMM_OUTPUT    auto (default), direct or staged: where the product writes (GemmOutput).
// The TensorRT plugin never reads them: its workspace is sized at build time and used at run time, maybe elsewhere.
// An unknown DCN_DEPLOY_GEMM_OUTPUT is reported by every entry that uses the options (abiGemmOptionsStatus).
struct AbiGemmOptions
{
    dcn::GemmOptions options;
    std::string outputText; // DCN_DEPLOY_GEMM_OUTPUT as read, for the error (the variable may be unset later)
};

AbiGemmOptions const& abiGemmSettings()
{
    static AbiGemmOptions const settings = [] {
        AbiGemmOptions read;
        dcn::GemmOptions& parsed = read.options;
        char const* text = std::getenv("DCN_DEPLOY_GEMM_CHUNK_MB");
        long const mb = text ? std::strtol(text, nullptr, 10) : 0;
        if (mb > 0)
            parsed.columnBudget = size_t(mb) << 20;
        char const* output = std::getenv("DCN_DEPLOY_GEMM_OUTPUT");
        std::string const mode = output ? output : "";
        parsed.output = mode.empty() || mode == "auto" ? dcn::kGemmOutputAuto
            : mode == "direct"                         ? dcn::kGemmOutputDirect
            : mode == "staged"                         ? dcn::kGemmOutputStaged
                                                       : -1;
        read.outputText = mode;
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
    if (dcn::validGemmOutput(abiGemmOptions().output))
        return dcn::Status::success();
    // The text read once, not getenv again: after an unsetenv, getenv's NULL appended to a string crashed.
    return dcn::Status::invalid("DCN_DEPLOY_GEMM_OUTPUT must be auto, direct or staged, got '"
        + abiGemmSettings().outputText + "': unset it or set one of those");
}

} // namespace

DCN_API int32_t dcn_deform_conv2d_workspace_size(
    const dcn_deform_conv_desc* desc, int32_t dtype, int32_t algo, size_t* bytes)
{
    return dcn::guarded([&] {
        if (!desc || !bytes)
            return dcn::Status::invalid("dcn_deform_conv2d_workspace_size: desc and bytes must not be NULL");
        dcn::DeformConvGeometry geo;
        dcn::Status status = abiGemmOptionsStatus();
        if (status.ok())
            status = dcn::makeGeometry(*desc, geo);
        if (status.ok())
            *bytes = dcn::deformConvWorkspaceSize(geo, dtype, algo, abiGemmOptions());
        return status;
    });
}

DCN_API int32_t dcn_deform_conv2d_forward_cuda(const dcn_deform_conv_desc* desc, int32_t dtype, int32_t algo,
    const void* input, const void* offset, const void* weight, const void* bias, const void* mask, void* output,
    void* workspace, size_t workspace_bytes, void* stream)
{
    return dcn::guarded([&] {
        if (!desc)
            return dcn::Status::invalid("dcn_deform_conv2d_forward_cuda: desc must not be NULL");
        dcn::DeformConvGeometry geo;
        dcn::Status status = abiGemmOptionsStatus();
        if (status.ok())
            status = dcn::makeGeometry(*desc, geo);
        if (!status.ok())
            return status;
        return dcn::launchDeformConv(geo, dtype, algo, input, offset, weight, bias, mask, output, workspace,
            workspace_bytes, static_cast<cudaStream_t>(stream), nullptr, abiGemmOptions());
    });
}

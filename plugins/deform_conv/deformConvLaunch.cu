// Which deformable-convolution kernel serves a layer (resolveAlgo), the workspace it needs
// (deformConvWorkspaceSize) and the launch (launchDeformConv): the direct kernel (deformConvDirect.cu), the fused
// implicit GEMM (deformConvFused.cu), the GEMM path over sampled columns and cuBLAS (deformConvGemm.cu) or the
// tensor-core implicit GEMM over a channels-last input (deformConvImplicit.cu; only when asked for).
#include "cublasLoader.h"
#include "deformConvDirectChannelsLast.h"
#include "deformConvGroupMma.h"
#include "deformConvImplicit.h"
#include "deformConvKernel.h"
#include "deformConvShapes.h"

#include <algorithm>
#include <cstdint>
#include <string>

namespace dcn
{

namespace
{

// A matrix product pays when a sampled column feeds several output channels and the reduction is long
// (autoTakesMatrixPath, deformConvShapes.h).
bool denseLayer(DeformConvGeometry const& geo)
{
    return autoTakesMatrixPath(geo.outChannelsPerGroup, geo.channelsPerGroup, geo.kernelPoints);
}

// AUTO's first choice: the channels-last direct kernel wherever it takes the layer (directChannelsLastRefusal:
// depth-wise layers, and groups of 2 to 16 channels in and out, some of them dense by autoTakesMatrixPath). Measured
// on an H100 (session 35) at the grouped res4 layer in float16 (32 groups of 8): 0.185 ms at batch 8 against the
// GEMM path's 0.334 (0.171 on channels-last tensors), 0.028 against 0.052 at batch 1. Except dense layers of
// groups wider than 8 channels (autoKeepsMatrixPathOnWideGroups).
bool autoTakesDirectChannelsLast(DeformConvGeometry const& geo, int32_t dtype)
{
    size_t const bytes = dtypeBytes(dtype);
    return directChannelsLastRefusal(geo, bytes).empty()
        && !autoKeepsMatrixPathOnWideGroups(directChannelLayout(geo));
}

// Whether AUTO runs the direct kernel: resolveAlgo's rule, and its workspace size's (directChannelsLast as
// resolveAlgo's argument).
bool autoRunsDirect(DeformConvGeometry const& geo, int32_t dtype, bool directChannelsLast)
{
    return !denseLayer(geo) || (directChannelsLast && autoTakesDirectChannelsLast(geo, dtype));
}

} // namespace

Status checkDtypeAndAlgo(int32_t dtype, int32_t algo)
{
    if (!validDtype(dtype))
        return Status::unsupportedDtype(dtype);
    if (algo != DCN_ALGO_AUTO && algo != DCN_ALGO_DIRECT && algo != DCN_ALGO_FUSED_GEMM && algo != DCN_ALGO_GEMM
        && algo != DCN_ALGO_IMPLICIT_GEMM)
        return Status::invalid("algo must be 0 (auto), 1 (direct), 2 (fused GEMM), 3 (GEMM) or 4 (implicit GEMM), got "
            + std::to_string(algo));
    return Status::success();
}

Status resolveAlgo(DeformConvGeometry const& geo, int32_t dtype, int32_t algo, int32_t& resolved,
    bool directChannelsLast)
{
    Status const checked = checkDtypeAndAlgo(dtype, algo);
    if (!checked.ok())
        return checked;
    if (algo == DCN_ALGO_IMPLICIT_GEMM)
    {
        std::string const refusal = implicitKernelRefusal(geo, dtype);
        if (!refusal.empty())
            return Status::error(DCN_ERROR_UNSUPPORTED, refusal + "; use algo 3 (GEMM)");
    }
    if (algo == DCN_ALGO_FUSED_GEMM && !fusedKernelAccepts(geo, dtype))
        return Status::error(DCN_ERROR_UNSUPPORTED,
            "the fused kernel supports float32/float16/bfloat16 and at most 65535 groups; use algo 1 (direct) or 3 (GEMM)");
    if (algo == DCN_ALGO_GEMM && !gemmPathAvailable())
        return Status::error(DCN_ERROR_UNSUPPORTED, std::string("algo 3 (GEMM) needs cuBLAS: ") + cublasUnavailableReason());
    if (algo == DCN_ALGO_AUTO)
    {
        // Dense layers the channels-last direct kernel does not take: cuBLAS over sampled columns where cuBLAS
        // loads (fastest measured), else the fused kernel.
        if (autoRunsDirect(geo, dtype, directChannelsLast))
            algo = DCN_ALGO_DIRECT;
        else if (gemmPathAvailable())
            algo = DCN_ALGO_GEMM;
        else
            algo = fusedKernelAccepts(geo, dtype) ? DCN_ALGO_FUSED_GEMM : DCN_ALGO_DIRECT;
    }
    resolved = algo;
    return Status::success();
}

// Whether the direct kernel runs over a channels-last copy of the input (GemmOptions::directChannelsLast): on a layer
// the channels-last direct kernel takes, or, with GemmOptions::directGroupMma on an sm_80 or newer GPU, on groups of
// 32 that the tensor-core group kernel takes (only it reads them channels-last; older GPUs run the NCHW kernel).
static bool directChannelsLast(DeformConvGeometry const& geo, int32_t dtype, GemmOptions const& gemm)
{
    if (!gemm.directChannelsLast)
        return false;
    if (directChannelsLastRefusal(geo, dtypeBytes(dtype)).empty())
        return true;
    return gemm.directGroupMma && groupMmaBlockChannels(geo.channelsPerGroup) == 32 && groupMmaRuns(geo, dtype);
}

// The path that serves channels-last tensors (GemmOptions::channelsLastTensors) for this request, or -1 for none:
// the GEMM path, asked for or AUTO's choice on a dense layer (whether cuBLAS loads is checked at launch, as for
// NCHW), or the channels-last direct kernel on the layers it takes (depth-wise, small groups: directChannelsLastRefusal),
// asked for as direct, or AUTO's choice (autoTakesDirectChannelsLast).
static int32_t channelsLastAlgo(DeformConvGeometry const& geo, int32_t dtype, int32_t algo)
{
    if (algo == DCN_ALGO_GEMM)
        return DCN_ALGO_GEMM;
    if (algo == DCN_ALGO_DIRECT && directChannelsLastRefusal(geo, dtypeBytes(dtype)).empty())
        return DCN_ALGO_DIRECT;
    if (algo == DCN_ALGO_AUTO && autoTakesDirectChannelsLast(geo, dtype))
        return DCN_ALGO_DIRECT;
    if (algo == DCN_ALGO_AUTO && denseLayer(geo))
        return DCN_ALGO_GEMM;
    return -1;
}

size_t deformConvWorkspaceSize(DeformConvGeometry const& geo, int32_t dtype, int32_t algo, GemmOptions const& gemm)
{
    // Sizes depend on the shapes only, never on whether cuBLAS loads here: an engine planned on one machine runs
    // on another.
    if (gemm.channelsLastTensors) // the channels-last direct kernel then reads the input where it is: none
        return channelsLastAlgo(geo, dtype, algo) == DCN_ALGO_GEMM ? gemmWorkspaceBytes(geo, dtype, gemm) : 0;
    size_t const fused = fusedKernelAccepts(geo, dtype) ? fusedWorkspaceBytes(geo, dtype) : 0;
    size_t const direct = directChannelsLast(geo, dtype, gemm)
        ? directChannelsLastWorkspaceBytes(geo, dtypeBytes(dtype), gemm.columnBudget)
        : 0;
    switch (algo)
    {
    case DCN_ALGO_AUTO:
        if (autoRunsDirect(geo, dtype, gemm.directChannelsLast))
            return direct;
        return std::max(fused, gemmWorkspaceBytes(geo, dtype, gemm));
    case DCN_ALGO_GEMM: return gemmWorkspaceBytes(geo, dtype, gemm);
    case DCN_ALGO_FUSED_GEMM: return fused;
    case DCN_ALGO_IMPLICIT_GEMM: return implicitKernelRefusal(geo, dtype).empty() ? implicitWorkspaceBytes(geo, dtype) : 0;
    default: return direct; // direct (callers check dtype and algo first: checkDtypeAndAlgo)
    }
}

// A path that needs ``needed`` bytes of workspace refuses a smaller (or NULL) one, naming the size entry, and one
// that is not 256-byte aligned, as dcn_kernels.h asks of every workspace (the GEMM path and the implicit-GEMM and
// channels-last direct kernels read theirs in 16-byte vectors).
static Status requireWorkspace(char const* path, size_t needed, void const* workspace, size_t workspaceBytes)
{
    if (workspace == nullptr || workspaceBytes < needed)
        return Status::error(DCN_ERROR_WORKSPACE, std::string(path) + " needs a workspace of "
            + std::to_string(needed) + " bytes (dcn_deform_conv2d_workspace_size), got "
            + std::to_string(workspaceBytes) + (workspace ? "" : " (NULL)"));
    if (reinterpret_cast<uintptr_t>(workspace) % 256 != 0)
        return Status::invalid(std::string(path) + "'s workspace must be 256-byte aligned (cudaMalloc's and "
                                                   "TensorRT's are)");
    return Status::success();
}

Status launchDeformConv(DeformConvGeometry const& geo, int32_t dtype, int32_t algo, void const* input,
    void const* offset, void const* weight, void const* bias, void const* mask, void* output, void* workspace,
    size_t workspaceBytes, cudaStream_t stream, CublasHandle* cublas, GemmOptions const& gemm)
{
    int32_t resolved = DCN_ALGO_DIRECT;
    // channels-last tensors are read by the direct kernel whatever directChannelsLast says (it only chooses how an
    // NCHW input is read)
    Status status = resolveAlgo(geo, dtype, algo, resolved, gemm.directChannelsLast || gemm.channelsLastTensors);
    if (!status.ok())
        return status;
    if (geo.d.batch == 0)
        return Status::success();
    if (!input || !offset || !weight || !output)
        return Status::invalid("input, offset, weight and output must be device pointers, got NULL (bias and mask may be NULL)");
    if (gemm.channelsLastTensors)
    {
        int32_t const serving = channelsLastAlgo(geo, dtype, algo);
        if (serving < 0 || resolved != serving)
        {
            std::string why;
            if (serving == DCN_ALGO_GEMM)
                why = "this layer cannot take the GEMM path here: " + std::string(cublasUnavailableReason());
            else if (algo != DCN_ALGO_AUTO && algo != DCN_ALGO_DIRECT)
                why = "not algo " + std::to_string(algo) + ": ask for algo 0 (auto)";
            else
                why = "and this layer is neither (" + directChannelsLastRefusal(geo, dtypeBytes(dtype)) + ")";
            return Status::error(DCN_ERROR_UNSUPPORTED, "channels-last tensors (DCN_FORWARD_CHANNELS_LAST) take the "
                "GEMM path (dense layers) or the channels-last direct kernel (depth-wise layers and groups of 2 to 16 "
                "channels), " + why
                    + "; or pass NCHW tensors");
        }
        std::string const misaligned = channelsLastAlignmentRefusal(input, output);
        if (!misaligned.empty())
            return Status::invalid(misaligned);
        if (resolved == DCN_ALGO_DIRECT)
            return launchDirectChannelsLastPath(geo, dtype, input, offset, weight, bias, mask, output, nullptr,
                gemm.columnBudget, true, gemm.directSharedTaps, gemm.directGroupMma, stream);
    }
    if (resolved == DCN_ALGO_GEMM)
    {
        status = requireWorkspace("the GEMM path", gemmWorkspaceBytes(geo, dtype, gemm), workspace, workspaceBytes);
        if (!status.ok())
            return status;
        void* handle = nullptr;
        status = bindGemmHandle(geo, dtype, gemm, workspace, stream, cublas, handle);
        if (status.ok())
            return launchGemmPath(geo, dtype, gemm, input, offset, weight, bias, mask, output, workspace,
                stream, handle);
        // cuBLAS loaded but its handle cannot be made or bound (an old driver, an unsupported GPU): AUTO falls
        // back to the fused kernel (whose workspace AUTO's size covers), or the direct one for float64.
        if (algo != DCN_ALGO_AUTO || gemm.channelsLastTensors) // no other path reads channels-last tensors
            return status;
        resolved = fusedKernelAccepts(geo, dtype) ? DCN_ALGO_FUSED_GEMM : DCN_ALGO_DIRECT;
    }
    if (resolved == DCN_ALGO_IMPLICIT_GEMM)
    {
        status = requireWorkspace("the implicit-GEMM kernel", implicitWorkspaceBytes(geo, dtype), workspace,
            workspaceBytes);
        if (!status.ok())
            return status;
        return launchImplicitPath(geo, dtype, gemm.implicitKernel, gemm.implicitTileM, gemm.implicitThreads, input,
            offset, weight, bias, mask, output, workspace, stream);
    }
    if (resolved == DCN_ALGO_DIRECT && directChannelsLast(geo, dtype, gemm))
    {
        status = requireWorkspace("the channels-last direct kernel",
            directChannelsLastWorkspaceBytes(geo, dtypeBytes(dtype), gemm.columnBudget), workspace, workspaceBytes);
        if (!status.ok())
            return status;
        return launchDirectChannelsLastPath(geo, dtype, input, offset, weight, bias, mask, output, workspace,
            gemm.columnBudget, false, gemm.directSharedTaps, gemm.directGroupMma, stream);
    }
    bool const fused = resolved == DCN_ALGO_FUSED_GEMM;
    size_t const needed = fused ? fusedWorkspaceBytes(geo, dtype) : 0;
    if (needed > 0)
    {
        status = requireWorkspace("the fused kernel", needed, workspace, workspaceBytes);
        if (!status.ok())
            return status;
    }
    // The fused kernel runs only where fusedKernelAccepts(geo, dtype) (resolveAlgo, the fallback above).
    return fused ? launchFusedPath(geo, dtype, input, offset, weight, bias, mask, output, workspace, stream)
                 : launchDirectPath(geo, dtype, input, offset, weight, bias, mask, output, stream);
}

} // namespace dcn

#include "deformConvTactics.h"

#include "deformConvDirectChannelsLast.h" // directChannelsLastLayoutRefusal

#include <sstream>

namespace dcn
{

char const* tacticName(int32_t tactic)
{
    switch (tactic)
    {
    case kTacticDefault: return "default";
    case kTacticDirect: return "direct";
    case kTacticFused: return "fused";
    case kTacticGemm: return "gemm";
    }
    return "unknown";
}

std::vector<int32_t> validTactics(DeformConvGeometry const& largest, int32_t dtype, bool gemmAvailable)
{
    std::vector<int32_t> tactics{kTacticDirect};
    if (fusedKernelAccepts(largest, dtype))
        tactics.push_back(kTacticFused);
    if (gemmAvailable)
        tactics.push_back(kTacticGemm);
    return tactics;
}

std::string channelsLastRefusal(dcn_deform_conv_attrs const& attrs, TensorShape const& x, TensorShape const& w,
    int32_t dtype, bool gemmAvailable)
{
    bool const half = dtype == DCN_FLOAT16 || dtype == DCN_BFLOAT16;
    if (!half && dtype != DCN_FLOAT32)
        return "channels-last tensors are float32 (HWC) or half types (HWC8)";
    if (x.rank != 4 || w.rank != 4 || x.d[1] < 0 || w.d[0] < 0 || w.d[1] < 0 || w.d[2] < 0 || w.d[3] < 0)
        return "channels-last tensors need C and the weights' shape known at build time";
    if (half && (x.d[1] % 8 != 0 || w.d[0] % 8 != 0))
        return "half-type channels-last tensors (HWC8) need C and out_channels multiples of 8, got "
            + std::to_string(x.d[1]) + " and " + std::to_string(w.d[0]);
    if (attrs.group < 1 || attrs.offset_group < 1 || w.d[0] % attrs.group != 0)
        return "channels-last tensors need out_channels a multiple of group";
    if (x.d[1] % attrs.offset_group != 0)
        return "channels-last tensors need C a multiple of offset_group";
    DirectChannelLayout const layout{
        x.d[1], w.d[1], w.d[0] / attrs.group, x.d[1] / attrs.offset_group, w.d[2] * w.d[3]};
    std::string const direct = directChannelsLastLayoutRefusal(layout, dtypeBytes(dtype));
    bool const wideKeptOnGemm = direct.empty() && autoKeepsMatrixPathOnWideGroups(layout);
    if (direct.empty() && !wideKeptOnGemm)
        return "";
    if (!autoTakesMatrixPath(w.d[0] / attrs.group, w.d[1], w.d[2] * w.d[3]))
        return "channels-last tensors are read by the GEMM path (dense layers) and the channels-last direct kernel, "
               "and this layer is neither (" + direct + ")";
    if (gemmAvailable)
        return "";
    std::string const notDirect = wideKeptOnGemm
        ? std::string("the channels-last direct kernel takes it when asked for, but auto runs groups of more than 8 "
                      "channels on the GEMM path, which was faster there on an H100")
        : "nor does the channels-last direct kernel take it: " + direct;
    return "a dense layer reads channels-last tensors on the GEMM path, and cuBLAS does not load here (" + notDirect
        + ")";
}

std::vector<int32_t> channelsLastTactics(DeformConvGeometry const& largest, int32_t dtype)
{
    std::vector<int32_t> tactics;
    if (directChannelsLastRefusal(largest, dtypeBytes(dtype)).empty())
        tactics.push_back(kTacticDirect);
    if (autoTakesMatrixPath(largest.outChannelsPerGroup, largest.channelsPerGroup, largest.kernelPoints))
        tactics.push_back(kTacticGemm);
    return tactics;
}

Status algoForTactic(int32_t tactic, bool gemmAvailable, int32_t& algo)
{
    switch (tactic)
    {
    case kTacticDefault: algo = DCN_ALGO_AUTO; return Status::success();
    case kTacticDirect: algo = DCN_ALGO_DIRECT; return Status::success();
    case kTacticFused: algo = DCN_ALGO_FUSED_GEMM; return Status::success();
    case kTacticGemm: algo = gemmAvailable ? DCN_ALGO_GEMM : DCN_ALGO_AUTO; return Status::success();
    }
    return Status::invalid("tactic " + std::to_string(tactic)
        + " is not one of 0 (default), 1 (direct), 2 (fused), 3 (gemm): the engine was built by another version of "
          "this plugin; rebuild it");
}

std::vector<int32_t> workspaceAlgos(std::vector<int32_t> const& tactics)
{
    std::vector<int32_t> algos{DCN_ALGO_AUTO};
    for (int32_t tactic : tactics)
    {
        int32_t algo = DCN_ALGO_AUTO;
        if (algoForTactic(tactic, true, algo).ok() && algo != DCN_ALGO_AUTO)
            algos.push_back(algo);
    }
    return algos;
}

std::string timingCacheSuffix(dcn_deform_conv_attrs const& a, bool gemmAvailable, bool allowTf32)
{
    std::ostringstream s;
    s << "strides=" << a.strides[0] << "," << a.strides[1] << ";pads=" << a.pads[0] << "," << a.pads[1] << ","
      << a.pads[2] << "," << a.pads[3] << ";dilations=" << a.dilations[0] << "," << a.dilations[1]
      << ";group=" << a.group << ";offset_group=" << a.offset_group << ";gemm=" << (gemmAvailable ? 1 : 0)
      << ";kernels=" << kKernelsRevision;
    if (allowTf32)
        s << ";tf32=1";
    return s.str();
}

} // namespace dcn

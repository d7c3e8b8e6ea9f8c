// The TensorRT plugin's tactics: which kernels (dcn_algo) TensorRT may time for one DeformConv2d layer, the ids
// that name them, and the algorithm each id runs. Plain C++ (no TensorRT or CUDA types): the plugin shell
// (deformConvPlugin.cpp) asks these functions, and the shell test checks them against the kernels' own rules.
//
// Protocol (NvInferRuntime.h, IPluginV3OneBuild / IPluginV3OneRuntime): after each configurePlugin the builder
// asks getNbTactics / getValidTactics, times each tactic (setTactic, then enqueue at the profile's opt shapes)
// and keeps the fastest in the engine; after deserialisation it calls setTactic with that id before enqueue, so the
// plugin does not serialise it. Tactic 0 is TensorRT's "default tactic" (none advertised, or none set): the
// heuristic choice DCN_ALGO_AUTO.
#pragma once

#include "dcnStatus.h"
#include "deformConvMath.h"
#include "deformConvShapes.h"

#include <cstdint>
#include <string>
#include <vector>

namespace dcn
{

// Tactic ids. TensorRT stores the chosen one in engines: never renumber or reuse one. Equal to the dcn_algo values
// they run, for readable logs, but mapped explicitly (algoForTactic).
enum DeformConvTactic : int32_t
{
    kTacticDefault = 0, // TensorRT's default: the heuristic (DCN_ALGO_AUTO)
    kTacticDirect = 1,  // DCN_ALGO_DIRECT
    kTacticFused = 2,   // DCN_ALGO_FUSED_GEMM
    kTacticGemm = 3,    // DCN_ALGO_GEMM (cuBLAS)
};

// "default", "direct", "fused", "gemm", or "unknown".
char const* tacticName(int32_t tactic);

// The tactics worth timing for a profile, given its largest shapes (every smaller shape of the profile is then
// accepted too: the limits only grow with the shapes) and the tensor type: direct always (the depth-wise-like
// layers' best), fused where the kernel accepts them, gemm only where cuBLAS loads in this process. Never 0.
std::vector<int32_t> validTactics(DeformConvGeometry const& largest, int32_t dtype, bool gemmAvailable);

// The algorithm a tactic runs. The gemm tactic runs DCN_ALGO_AUTO where the GEMM path cannot run (an engine
// moved to a machine without cuBLAS): the heuristic, which never needs cuBLAS there, instead of failing. Fails
// for ids that are none of the above.
Status algoForTactic(int32_t tactic, bool gemmAvailable, int32_t& algo);

// The algorithms a workspace sized at build time must serve when these tactics are offered: each tactic's own
// and DCN_ALGO_AUTO (tactic 0, and the gemm tactic's fallback). getWorkspaceSize takes the largest of theirs.
std::vector<int32_t> workspaceAlgos(std::vector<int32_t> const& tactics);

// Why TensorRT may not give this layer X and Y channels-last (TensorFormat::kHWC8 for the half types, kHWC for
// float32, which the launch reads as GemmOptions::channelsLastTensors), or "" where it may: float32 (HWC, unpadded
// NHWC), or a half type (HWC8, bound to FP16 and BF16) with C and oC known multiples of 8 (HWC8 pads C to 8, so then
// it is plain NHWC); C and the weights' shape known; and a layer one of the two paths that read
// channels-last tensors takes as AUTO's choice: one the channels-last direct kernel takes (depth-wise, or groups of
// 2 to 16 channels in and out; directChannelsLastLayoutRefusal) but for dense ones of wide items
// (autoKeepsMatrixPathOnWideItems), or a dense one (autoTakesMatrixPath) with cuBLAS loading here (the GEMM path,
// without its two transposes). x (N, C, H, W) and w (oC, C/group, kH, kW) as the builder gives them, -1
// where unknown.
std::string channelsLastRefusal(dcn_deform_conv_attrs const& attrs, TensorShape const& x, TensorShape const& w,
    int32_t dtype, bool gemmAvailable);

// The tactics for a configuration whose X and Y are channels-last: the paths that read them for this layer, direct
// where the channels-last direct kernel takes it (the heuristic's choice, tactic 0, there, but for dense layers of
// wide items), gemm for a dense layer (both for a dense layer of small groups, for TensorRT to time).
std::vector<int32_t> channelsLastTactics(DeformConvGeometry const& largest, int32_t dtype);

// The plugin's timing-cache ID suffix (TensorRT prefixes the I/O shapes, types and formats): everything else the
// timings depend on, i.e. the fields, whether the gemm tactic is offered at all, the kernels (";kernels=" and
// kKernelsRevision: a library whose kernels or tactics changed, such as a faster direct kernel or a layer a tactic
// now takes, times its tactics again instead of reusing an older library's timings from a shared cache), and
// ";tf32=1" last where kFieldAllowTf32 is 1 (nothing where it is 0). Fixed at creation: TensorRT may ask for it
// before it has chosen the layer's types ("considering only the creation state", NvInferRuntime.h), so float16 and
// bfloat16 layers, which ignore TF32, carry ";tf32=1" too: a timing cache shared by builds with and without TF32
// then times a half layer once per setting, a cache miss, never a wrong timing.
std::string timingCacheSuffix(dcn_deform_conv_attrs const& attrs, bool gemmAvailable, bool allowTf32);

} // namespace dcn

// The TensorRT plugin's workspace: how many bytes it asks for a profile, and the GEMM path's column budget that
// keeps that under a limit the user gives at build time. Plain C++ over the kernels' own sizes
// (deformConvWorkspaceSize); the plugin shell (deformConvPlugin.cpp) asks these functions and the shell test checks
// them.
//
// Why a limit: TensorRT gives a plugin no implementation when its workspace exceeds the builder's workspace pool
// (`--workspace` of `dcn-deploy build`, `trtexec --memPoolSize=workspace:...`), and the plugin is not told that
// limit. The default column budget (256 MiB) makes a batch-8 layer ask for up to ~390 MiB. So the limit reaches the
// plugin through an environment variable read while the engine is built, and the plugin halves its column budget
// until its workspace fits (more, smaller chunks: the same results, a little slower). The budget it chose is
// serialised into the engine (kFieldColumnBudget), since the run must plan its chunks exactly as the build sized them.
#pragma once

#include "dcnStatus.h"
#include "deformConvMath.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace dcn
{

// The variable the plugin reads at build time: the most bytes of workspace one layer may ask for, written as
// `dcn-deploy build --workspace` takes it ("512M", "2G", "262144K"; a bare number is MiB). `dcn-deploy build` sets it
// from its --workspace; with trtexec, set it to the --memPoolSize workspace value.
constexpr char const* kWorkspaceLimitVariable = "DCN_DEPLOY_PLUGIN_WORKSPACE";

// Set to 1 where the builder counts a layer's inputs and outputs against the workspace limit as well as its
// workspace, as TensorRT-RTX's does: its builder failed with "OutOfMemory" exactly where workspace + the layer's
// input and output tensors at the profile's largest shapes passed the limit (det res3 fp16 at batch 8, 197.3 MiB of
// workspace and 72.4 MiB of tensors, layerTensorBytes: 269M failed, 270M built; the same with a convolution before
// the layer; 1.7, 2026-11-26). TensorRT 10 defines the limit as scratch memory only, so unset (or 0) is the default.
// `dcn-deploy build` sets it with the limit when it builds with TensorRT-RTX.
constexpr char const* kWorkspaceChargesTensorsVariable = "DCN_DEPLOY_PLUGIN_WORKSPACE_CHARGES_TENSORS";

// The smallest column budget the plugin tries (the GEMM path then slices images into pieces of 256 pixels or more).
constexpr size_t kSmallestColumnBudget = size_t(1) << 20;

// A size as the CLI writes it (`dcn_deploy.backends.trt_options.parse_size`): digits, optionally a unit K, M, G or T
// (powers of 1024, case-insensitive, optionally followed by "iB" or "B"); no unit means MiB. Fails, naming `what`,
// for anything else, zero, or more than 2^62 bytes.
Status parseByteSize(std::string const& text, char const* what, size_t& bytes);

// kWorkspaceLimitVariable's value in bytes; 0 when unset or empty (no limit). Fails for a malformed value.
Status workspaceLimitFromEnvironment(size_t& limit);

// kWorkspaceChargesTensorsVariable's value: false when unset, empty or "0", true for "1". Fails for anything else.
Status workspaceChargesTensorsFromEnvironment(bool& charges);

// The bytes of a layer's input and output tensors at the shapes of `largest` (x, weight, offset, and the bias and
// the mask where given, and the output), in dtype.
size_t layerTensorBytes(DeformConvGeometry const& largest, int32_t dtype, bool hasBias, bool hasMask);

// The part of the plugin's timing-cache ID that the limit decides (";workspace_limit=<bytes>", then
// ";charges_tensors=1" where kWorkspaceChargesTensorsVariable is set, or "" without a valid limit): the limit picks
// the GEMM path's column budget for given shapes, and so its timings. Read when the plugin is
// created (TensorRT asks for the ID of the creation state), which `dcn-deploy build` does inside the variable's scope.
std::string workspaceLimitCacheSuffix();

// The bytes the plugin asks for a layer whose profile's largest shapes are `largest`, with this column budget:
// enough for every tactic offered (validTactics, or channelsLastTactics where X and Y are channels-last) and for the
// heuristic.
size_t pluginWorkspaceBytes(DeformConvGeometry const& largest, int32_t dtype, bool gemmAvailable, size_t columnBudget,
    bool channelsLast = false);

// The largest column budget, from kGemmDefaultColumnBudget down by halves to kSmallestColumnBudget, under which
// pluginWorkspaceBytes plus `tensorBytes` (0, or layerTensorBytes where the builder counts them) is at most `limit`
// (0: no limit, the default budget). Fails, saying what the layer needs at the smallest budget and how to fix it,
// when even that is over the limit.
Status columnBudgetWithin(DeformConvGeometry const& largest, int32_t dtype, bool gemmAvailable, size_t limit,
    size_t tensorBytes, size_t& columnBudget, bool channelsLast = false);

// "256.0 MiB", "1.5 GiB", "512.0 KiB", "100 bytes": for messages.
std::string describeBytes(size_t bytes);

} // namespace dcn

// Plain C++ logic of deformable convolution with no TensorRT or CUDA types: descriptor validation, output-size
// arithmetic, the plugin's fields (parsing, validation, serialisation) and its build-time shape checks.
// The TensorRT plugin is a thin shell over these; tests reach them through the C ABI (dcn_plugin_*).
#pragma once

#include "dcnStatus.h"
#include "deformConvMath.h"
#include "pluginFields.h"

#include <cstdint>
#include <string>
#include <vector>

namespace dcn
{

inline int64_t floorDiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// Output extent along one axis: (size + begin + end - dilation*(kernel-1) - 1) // stride + 1.
// Num is int64_t here and a TensorRT dimension expression in the plugin, so both use this one formula.
template <typename Num, typename KernelNum>
Num convOutputExtent(Num size, KernelNum kernel, int32_t stride, int32_t padBegin, int32_t padEnd, int32_t dilation)
{
    // The pads are summed in int64: two pads near 2^31 wrapped around to a small (even valid-looking) extent.
    return floorDiv(size + (int64_t(padBegin) + int64_t(padEnd)) - (kernel - int64_t(1)) * int64_t(dilation) - int64_t(1),
               int64_t(stride))
        + int64_t(1);
}

// Check every field of desc and derive the sizes the kernels need.
Status makeGeometry(dcn_deform_conv_desc const& desc, DeformConvGeometry& geometry);

// Field names, as in docs/ops.md and the ONNX attributes.
constexpr char const* kFieldStrides = "strides";
constexpr char const* kFieldPads = "pads";
constexpr char const* kFieldDilations = "dilations";
constexpr char const* kFieldGroup = "group";
constexpr char const* kFieldOffsetGroup = "offset_group";
// Written by the plugin into every engine it serialises, never an ONNX attribute: the revision of the kernels'
// algorithm choice and workspace sizing that built the engine. An engine's workspace and tactics are fixed when it is
// built, so a library whose AUTO picks another algorithm, or whose algorithms need more workspace, must not run it
// (it would write past the workspace). Bump kKernelsRevision with every such change (deformConvLaunch.cu's AUTO,
// planGemm's sizes, the tactics). An engine without the field predates it and is refused (requireEngineFields).
constexpr char const* kFieldKernelsRevision = "dcn_kernels_revision";
// 2026-11-26: 2 a zero vector after the GEMM path's input, 3 a row table, 4 a 256 MiB column budget (was 64),
// 5 the column budget as a field (below), so that a library of revision 4 refuses engines built under a smaller one;
// 6 (session 25) auto's split-K: float32 layers of few output tiles staged in 4 slices of K, a larger staging room;
// 7 (session 32) the direct kernel over a channels-last copy of the input on depth-wise layers, which takes a
// workspace (an engine of revision 6 has none for them); 8 (session 33) X and Y channels-last (kHWC8) on dense half
// layers, which a library of revision 7 would read as NCHW; 9 (session 34) X and Y channels-last (kHWC) on float32
// layers, which a library of revision 8 would read as NCHW; 10 (session 35) the channels-last direct kernel on layers
// of 2, 4 or 8 channels per group in and out too, which takes a workspace (revision 9 has none for them); 11 (session
// 36) its wide items (float32 groups of 8, half groups of 16, float64 groups of 4): a workspace for the direct
// tactic there, and the direct tactic offered on channels-last tensors of such dense layers; 12 (session 38) auto's
// choice the channels-last direct kernel on dense layers of float32 groups of 8 and float64 groups of 4 too (timed on
// an H100), whose workspace is the input's channels-last copy instead of the GEMM path's; 13 (session 39) wide items
// of up to 64 bytes (float32 groups of 16, float64 groups of 8): the direct tactic offered on channels-last float32
// tensors of groups of 16 (a workspace for it), and auto's choice the channels-last direct kernel on float64 groups
// of 8 (dense layers) and on float32 groups of 16 that are not dense (1 x 1 kernels).
constexpr int32_t kKernelsRevision = 13;
// Written by the plugin into every engine it serialises, never an ONNX attribute: the GEMM path's column budget in
// MiB that the build sized the workspace with (deformConvPluginWorkspace.h: lowered to fit a workspace limit). The
// run plans its chunks with it. An engine without the field was built with the default.
constexpr char const* kFieldColumnBudget = "dcn_column_budget_mib";
// Optional, never in an exported file: `dcn-deploy build` sets it on routed nodes from the build's TF32 setting, which
// a plugin cannot see (TensorRT keeps its builder flags to itself). One INT32: 1 lets float32 layers run the GEMM
// path's products on TF32 tensor cores (GemmOptions::tf32, what the C ABI's DCN_FORWARD_ALLOW_TF32 asks for); 0, the
// default, keeps them IEEE float32. Ignored for half types. Serialised into engines; an engine without it (written
// before the field existed) runs IEEE float32, as it was built to.
constexpr char const* kFieldAllowTf32 = "allow_tf32";

dcn_deform_conv_attrs defaultAttrs();

// One field to serialise: its name and int32 values (owned).
struct OwnedField
{
    std::string name;
    std::vector<int32_t> values;
};

Status checkAttrs(dcn_deform_conv_attrs const& attrs);
// The fields as TensorRT hands them to createPlugin: the attributes, and allowTf32 from kFieldAllowTf32 (false when
// absent). Unknown fields are ignored; a known one of the wrong type, length or value fails, naming it.
Status parseFields(std::vector<RawField> const& fields, dcn_deform_conv_attrs& attrs, bool& allowTf32);
// The same for callers that keep only the attributes (the C ABI's dcn_plugin_deform_conv_parse_fields): a bad
// kFieldAllowTf32 fails here too.
Status parseFields(std::vector<RawField> const& fields, dcn_deform_conv_attrs& attrs);
std::vector<OwnedField> fieldsFromAttrs(dcn_deform_conv_attrs const& attrs);
// An engine's fields (a plugin deserialised, TensorRTPhase::kRUNTIME) must carry kFieldKernelsRevision and
// kFieldColumnBudget: an engine without them was built by a library of older workspace sizes (64 MiB column budget,
// other layouts), so it is refused with "rebuild" rather than run past its workspace.
Status requireEngineFields(std::vector<RawField> const& fields);
// The column budget an engine's fields carry (kFieldColumnBudget), in bytes; kGemmDefaultColumnBudget where they
// have none. Fails for a field that is not one INT32 from 1 to 4096 (MiB).
Status parseColumnBudgetField(std::vector<RawField> const& fields, size_t& columnBudget);

// Input order of the plugin (docs/ops.md): X, W, offset, then optional B, then optional mask.
enum InputIndex : int32_t
{
    kInputX = 0,
    kInputW = 1,
    kInputOffset = 2,
    kInputBias = 3,
    kInputMask = 4
};

// Shapes with -1 for unknown (dynamic) dimensions; the checks skip what is unknown.
struct TensorShape
{
    int32_t rank = 0;
    int64_t d[8] = {};
};

// Check nbInputs (3, 4 or 5) shapes against attrs; write the output shape (-1 where unknown).
Status checkInputShapes(dcn_deform_conv_attrs const& attrs, std::vector<TensorShape> const& inputs, TensorShape& output);

// Whether the fused kernel accepts this geometry and dtype: float32/float16/bfloat16, at most 65535 groups and
// 65535 tiles of 64 output channels per group (its grid's limits). The kernels' resolveAlgo and the plugin's
// tactics both ask this.
bool fusedKernelAccepts(DeformConvGeometry const& geo, int32_t dtype);

// Whether the heuristic (DCN_ALGO_AUTO) sends a layer to a matrix product (the GEMM path where cuBLAS loads, else
// the fused kernel) rather than the direct kernel: a sampled column feeds 8 or more output channels of its group and
// the reduction (C/group * kH*kW) is 32 or longer. On an H200 (2026-11-26, benchmarks/RESULTS.md) the GEMM path took
// 0.29x the direct kernel's time for 32 groups of 8 channels (3x3) and 3.9x for a depth-wise layer.
bool autoTakesMatrixPath(int64_t outChannelsPerGroup, int64_t channelsPerGroup, int64_t kernelPoints);

// The kernel descriptor for fully known shapes.
dcn_deform_conv_desc descFromShapes(dcn_deform_conv_attrs const& attrs, TensorShape const& x, TensorShape const& w);

} // namespace dcn

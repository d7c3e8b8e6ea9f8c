// Launchers of the deformable-convolution CUDA kernels (C++ side; the C ABI wraps them in deformConvAbi.cu).
#pragma once

#include "dcnStatus.h"
#include "deformConvGemmPlan.h"
#include "deformConvMath.h"

#include <cstddef>
#include <cuda_runtime_api.h>

namespace dcn
{

class CublasHandle;

// dtype a dcn_dtype and algo a dcn_algo, or an error naming the one that is not (before any sizing or launch).
Status checkDtypeAndAlgo(int32_t dtype, int32_t algo);

// Which kernel serves (geo, dtype, algo) on the current device; DCN_ALGO_AUTO resolved (directChannelsLast:
// GemmOptions::directChannelsLast, whether the direct kernel may run over a channels-last copy of an NCHW input, which
// is what makes it auto's choice for dense layers of small groups). Fails for impossible pairs (float64 with the
// fused kernel, the GEMM path without a loadable cuBLAS).
Status resolveAlgo(DeformConvGeometry const& geo, int32_t dtype, int32_t algo, int32_t& resolved,
    bool directChannelsLast = true);

// Workspace bytes the launch needs: the GEMM path's column buffer (at most gemm.columnBudget bytes, the batch runs
// in chunks), the chunk's channels-last input, the re-laid-out weights, the staging scratch and cuBLAS's
// workspace; the fused kernel's re-laid-out weights; for the direct kernel 0, or the channels-last input where
// gemm.directChannelsLast and the kernel takes the layer (depth-wise, small groups: directChannelsLastRefusal). For DCN_ALGO_AUTO, the most any
// choice needs, so a plan made where cuBLAS loads still fits a run where it does not. Never smaller for a larger N,
// H or W (TensorRT sizes the workspace for the largest profile shape).
size_t deformConvWorkspaceSize(DeformConvGeometry const& geo, int32_t dtype, int32_t algo,
    GemmOptions const& gemm = GemmOptions{});

// Enqueue the forward on stream. Pointers are device pointers to contiguous NCHW tensors of one dtype; bias and
// mask may be null; the workspace is 256-byte aligned. cublas: the caller's cuBLAS handle for the GEMM path (a
// TensorRT plugin owns one), or null for this thread's own; where it cannot be bound, AUTO falls back to the
// fused kernel. gemm: as given to deformConvWorkspaceSize. Returns an error status (never throws) for bad
// arguments or a CUDA launch error.
Status launchDeformConv(DeformConvGeometry const& geo, int32_t dtype, int32_t algo, void const* input,
    void const* offset, void const* weight, void const* bias, void const* mask, void* output, void* workspace,
    size_t workspaceBytes, cudaStream_t stream, CublasHandle* cublas = nullptr, GemmOptions const& gemm = GemmOptions{});

// The direct kernel (deformConvDirect.cu): float32, float16, bfloat16 and float64; another dtype is
// DCN_ERROR_UNSUPPORTED.
Status launchDirectPath(DeformConvGeometry const& geo, int32_t dtype, void const* input, void const* offset,
    void const* weight, void const* bias, void const* mask, void* output, cudaStream_t stream);

// The direct kernel over a channels-last copy of the input (deformConvDirect.cu, deformConvDirectChannelsLast.h): only
// where directChannelsLastRefusal(geo, dtype's bytes) is empty (or, with groupMma on an sm_80 or newer GPU, on
// groups of 32 that groupMmaRefusal lets through: only the group kernel runs those). Its workspace (256-byte aligned) holds the
// channels-last input of the images `budget` holds: at least directChannelsLastWorkspaceBytes(.., budget).
// channelsLastTensors: the input and the output are channels-last themselves (GemmOptions::channelsLastTensors),
// 16-byte aligned; no workspace. sharedTaps (GemmOptions::directSharedTaps): the taps shared by a block where
// sharedTapsRefusal passes (deformConvDirectSharedTaps.h); groupMma (GemmOptions::directGroupMma): the tensor-core
// group kernel where groupMmaRuns (its refusal passes on an sm_80 or newer GPU), before sharedTaps.
Status launchDirectChannelsLastPath(DeformConvGeometry const& geo, int32_t dtype, void const* input,
    void const* offset, void const* weight, void const* bias, void const* mask, void* output, void* workspace,
    size_t budget, bool channelsLastTensors, bool sharedTaps, bool groupMma, cudaStream_t stream);

// The channels-last direct kernel's blocks with shared taps (deformConvDirectSharedTaps.cu): the items of `count`
// images from n0 of `source` (channels-last, image n0 first), only where sharedTapsRefusal(geo, dtype's bytes) is
// empty; channelsLastOut: the output is channels-last too.
Status launchSharedTapsItems(DeformConvGeometry const& geo, int32_t dtype, void const* source, void const* offset,
    void const* weight, void const* bias, void const* mask, void* output, int32_t n0, int32_t count,
    bool channelsLastOut, cudaStream_t stream);

// The tensor-core group kernel (deformConvGroupMma.cu): whether it runs the layer (groupMmaRefusal(geo, dtype) is
// empty and the current GPU is sm_80 or newer), the one rule of the launches that choose it; and the layer's groups
// of `count` images from n0 of `source` (channels-last, image n0 first), only where it runs them; channelsLastOut: the
// output is channels-last too.
bool groupMmaRuns(DeformConvGeometry const& geo, int32_t dtype);
Status launchGroupMmaItems(DeformConvGeometry const& geo, int32_t dtype, void const* source, void const* offset,
    void const* weight, void const* bias, void const* mask, void* output, int32_t n0, int32_t count,
    bool channelsLastOut, cudaStream_t stream);

// The fused kernel (deformConvFused.cu): only where fusedKernelAccepts(geo, dtype). Its workspace holds the
// re-laid-out weights: at least fusedWorkspaceBytes.
size_t fusedWorkspaceBytes(DeformConvGeometry const& geo, int32_t dtype);
Status launchFusedPath(DeformConvGeometry const& geo, int32_t dtype, void const* input, void const* offset,
    void const* weight, void const* bias, void const* mask, void* output, void* workspace, cudaStream_t stream);

// The implicit-GEMM kernel (deformConvImplicit.cu): only where implicitKernelRefusal(geo, dtype) is empty. Its
// workspace holds the chunk's channels-last input and the re-laid-out weights: at least implicitWorkspaceBytes.
size_t implicitWorkspaceBytes(DeformConvGeometry const& geo, int32_t dtype);
// kernel: an ImplicitKernel. tileM: output channels per block (64, 128, 256), 0 for implicitTileM's choice; smaller
// where the device's shared memory needs it. threads: per block of the stepwise kernel (256, 512), 0 for
// implicitThreads' choice (the specialised kernel has specialisedThreads(tileM)).
Status launchImplicitPath(DeformConvGeometry const& geo, int32_t dtype, int32_t kernel, int32_t tileM, int32_t threads,
    void const* input, void const* offset, void const* weight, void const* bias, void const* mask, void* output,
    void* workspace, cudaStream_t stream);

// Compute capability of the current device (major * 10 + minor), queried once per device; 0 when there is none.
int32_t currentComputeCapability();

// The GEMM path (deformConvGemm.cu).
bool gemmPathAvailable();
size_t gemmWorkspaceBytes(DeformConvGeometry const& geo, int32_t dtype, GemmOptions const& gemm);
// Bind cublas (or this thread's handle) to stream and the workspace's cuBLAS slice.
Status bindGemmHandle(DeformConvGeometry const& geo, int32_t dtype, GemmOptions const& gemm, void* workspace,
    cudaStream_t stream, CublasHandle* cublas, void*& handle);
Status launchGemmPath(DeformConvGeometry const& geo, int32_t dtype, GemmOptions const& gemm, void const* input,
    void const* offset, void const* weight, void const* bias, void const* mask, void* output, void* workspace,
    cudaStream_t stream, void* handle);

} // namespace dcn

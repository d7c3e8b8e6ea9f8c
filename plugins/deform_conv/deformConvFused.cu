// The fused deformable-convolution kernel (the default for dense layers where cuBLAS does not load): an implicit
// GEMM per convolution group,
//     out[oc, p] = sum_k W[oc, k] * col[k, p],   k = (kernel point, channel), p = (n, y, x),
// where the tile of col is sampled straight into shared memory and never written to global memory (no
// C*kH*kW*oH*oW column buffer). Bilinear coefficients (deformConvMath.h) are computed once per (kernel point, pixel,
// offset group) and reused over the channels of the tile. Half types multiply on tensor cores (WMMA 16x16x16,
// float32 accumulators); float32 multiplies in float32 on the CUDA cores so results stay float32-exact.
// Its workspace holds the weights re-laid out with channels contiguous (OC*C/group*kH*kW elements), so the weight
// tiles load coalesced; that copy is the only workspace, and it is small next to the activations.
#include "dcnCudaDtype.cuh"
#include "dcnCudaStatus.h"
#include "deformConvKernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <atomic>
#include <string>
#include <type_traits>

namespace dcn
{

namespace
{

constexpr int kThreads = 256; // per block; fusedBody's thread and warp layout assumes 256

// ---------------------------------------------------------------------------------------------------------------
// Weight re-layout for the fused kernel (into the workspace): W[o][c][kp] -> Wt[g][kp][o % ocg][c].
template <typename T>
__global__ void __launch_bounds__(kThreads) weightRelayoutKernel(
    DeformConvGeometry const geo, T const* __restrict__ weight, T* __restrict__ groupedWeight, int64_t const total)
{
    int32_t const kernelPoints = geo.kernelPoints;
    int32_t const cg = geo.channelsPerGroup;
    int32_t const ocg = geo.outChannelsPerGroup;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += int64_t(gridDim.x) * blockDim.x)
    {
        int32_t const kp = int32_t(idx % kernelPoints);
        int64_t const rest = idx / kernelPoints;
        int32_t const c = int32_t(rest % cg);
        int32_t const o = int32_t(rest / cg);
        int32_t const g = o / ocg;
        int32_t const m = o - g * ocg;
        groupedWeight[((int64_t(g) * kernelPoints + kp) * ocg + m) * cg + c] = weight[idx];
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Fused kernel: implicit GEMM with the column tile sampled into shared memory.
// A block computes kTileM (64 or 128) output channels x kTileN output pixels. 128 rows halve how often a sampled
// column is re-sampled by the blocks of other output channels; 64 wastes less for narrow layers.
constexpr int kTileN = 64; // output pixels (n, y, x) per block
constexpr int kTileK = 32; // input channels per step (of one kernel point)

template <typename T, bool kTensorCores, int kTileM>
struct FusedLayout
{
    using S = typename std::conditional<kTensorCores, T, float>::type; // element type of the shared tiles
    // Row padding: WMMA wants leading dimensions in multiples of 16 bytes; the SIMT path pads against bank conflicts.
    static constexpr int lda = kTileK + (kTensorCores ? 8 : 1);
    static constexpr int ldb = kTileN + (kTensorCores ? 8 : 4);
    static constexpr int ldc = kTileN + 4; // float staging tile of the tensor-core epilogue
    static constexpr size_t tileBytes = sizeof(S) * (kTileM * lda + kTileK * ldb);
    static constexpr size_t stageBytes = kTensorCores ? sizeof(float) * kTileM * ldc : 0;
    static constexpr size_t smemBytes = tileBytes > stageBytes ? tileBytes : stageBytes;
};

template <typename S>
__device__ __forceinline__ S toTile(float v)
{
    return ElementTraits<S>::fromAcc(v);
}

template <typename T, bool kTensorCores, int kTileM>
__device__ __forceinline__ void fusedBody(DeformConvGeometry const& geo, T const* __restrict__ input,
    T const* __restrict__ offset, T const* __restrict__ groupedWeight, T const* __restrict__ bias, T const* __restrict__ mask,
    T* __restrict__ output)
{
    using Layout = FusedLayout<T, kTensorCores, kTileM>;
    constexpr int kFragRows = kTileM / 64;   // tensor cores: 16-row fragments per warp (warps are 4 down x 2 across)
    constexpr int kThreadRows = kTileM / 16; // SIMT: rows per thread (threads are 16 down x 16 across)
    using S = typename Layout::S;
    constexpr int lda = Layout::lda;
    constexpr int ldb = Layout::ldb;
    __shared__ __align__(128) unsigned char smem[Layout::smemBytes];
    S* tileA = reinterpret_cast<S*>(smem);   // [kTileM][lda]: weights
    S* tileB = tileA + kTileM * lda;         // [kTileK][ldb]: sampled columns

    dcn_deform_conv_desc const& d = geo.d;
    int32_t const tid = threadIdx.x;
    int32_t const g = blockIdx.z;
    int32_t const m0 = blockIdx.y * kTileM;
    int64_t const p0 = int64_t(blockIdx.x) * kTileN;
    int32_t const cg = geo.channelsPerGroup;
    int32_t const ocg = geo.outChannelsPerGroup;
    int32_t const kernelPoints = geo.kernelPoints;
    int64_t const plane = int64_t(d.height) * d.width;
    int64_t const outPlane = int64_t(geo.outH) * geo.outW;
    int64_t const columns = int64_t(d.batch) * outPlane;

    // Sampling assignment: this thread fills column sampleCol, rows sampleRow0 + r*kRowStep of tileB.
    constexpr int kRowStep = kThreads / kTileN;
    int32_t const sampleCol = tid % kTileN;
    int32_t const sampleRow0 = tid / kTileN;
    int64_t const p = p0 + sampleCol;
    bool const colValid = p < columns;
    int32_t n = 0, y = 0, x = 0;
    if (colValid)
    {
        n = int32_t(p / outPlane);
        int32_t const pix = int32_t(p - int64_t(n) * outPlane);
        y = pix / geo.outW;
        x = pix - y * geo.outW;
    }
    T const* imageBase = input + int64_t(n) * d.in_channels * plane;

    // Accumulators.
    int32_t const warp = tid / 32;
    int32_t const warpM = warp / 2;  // 4 warps down (16*kFragRows rows each)
    int32_t const warpN = warp % 2;  // 2 warps across (32 columns each)
    int32_t const tx = tid % 16;     // SIMT: columns tx + 16*j
    int32_t const ty = tid / 16;     // SIMT: rows ty + 16*i
    using namespace nvcuda;
    typename std::conditional<kTensorCores, wmma::fragment<wmma::accumulator, 16, 16, 16, float>, char>::type
        tcAcc[kFragRows][2];
    float simtAcc[kThreadRows][4];
    if constexpr (kTensorCores)
    {
#pragma unroll
        for (int i = 0; i < kFragRows; ++i)
        {
            wmma::fill_fragment(tcAcc[i][0], 0.0f);
            wmma::fill_fragment(tcAcc[i][1], 0.0f);
        }
    }
    else
    {
#pragma unroll
        for (int i = 0; i < kThreadRows; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j)
                simtAcc[i][j] = 0.0f;
    }

    for (int32_t kp = 0; kp < kernelPoints; ++kp)
    {
        int32_t cachedGroup = -1;
        BilinearTaps<float> taps;
        for (int32_t c0 = 0; c0 < cg; c0 += kTileK)
        {
            // Weights W[g*ocg + m0 + m, c0 + kk, kp] -> tileA[m][kk] (zero outside), read from the re-laid-out copy
            // (groupedWeight = Wt[g][kp][m][c], see weightRelayoutKernel) in which c is contiguous, so consecutive
            // threads read consecutive addresses.
#pragma unroll
            for (int32_t r = 0; r < kTileM * kTileK / kThreads; ++r) // all loads in flight before the stores
            {
                int32_t const e = tid + r * kThreads;
                int32_t const m = e / kTileK;
                int32_t const kk = e - m * kTileK;
                int32_t const oc = m0 + m;
                int32_t const c = c0 + kk;
                float v = 0.0f;
                if (oc < ocg && c < cg)
                    v = ElementTraits<T>::toAcc(groupedWeight[((int64_t(g) * kernelPoints + kp) * ocg + oc) * cg + c]);
                tileA[m * lda + kk] = toTile<S>(v);
            }
            // Bilinear samples (mask folded in) -> tileB[kk][col]; the taps are reused while the offset group holds.
#pragma unroll
            for (int32_t r = 0; r < kTileK / kRowStep; ++r)
            {
                int32_t const kk = sampleRow0 + r * kRowStep;
                int32_t const c = c0 + kk;
                float v = 0.0f;
                if (colValid && c < cg)
                {
                    int32_t const cin = g * cg + c;
                    int32_t const og = cin / geo.channelsPerOffsetGroup;
                    if (og != cachedGroup)
                    {
                        taps = kernelPointTaps<float>(geo, offset, mask, n, og, kp, y, x);
                        cachedGroup = og;
                    }
                    v = sampleTaps<float>(imageBase + int64_t(cin) * plane, taps);
                }
                tileB[kk * ldb + sampleCol] = toTile<S>(v);
            }
            __syncthreads();
            if constexpr (kTensorCores)
            {
#pragma unroll
                for (int32_t kk = 0; kk < kTileK; kk += 16)
                {
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b[2];
#pragma unroll
                    for (int f = 0; f < 2; ++f)
                        wmma::load_matrix_sync(b[f], tileB + kk * ldb + warpN * 32 + f * 16, ldb);
#pragma unroll
                    for (int i = 0; i < kFragRows; ++i)
                    {
                        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
                        wmma::load_matrix_sync(a, tileA + (warpM * kFragRows + i) * 16 * lda + kk, lda);
#pragma unroll
                        for (int f = 0; f < 2; ++f)
                            wmma::mma_sync(tcAcc[i][f], a, b[f], tcAcc[i][f]);
                    }
                }
            }
            else
            {
#pragma unroll 8
                for (int32_t kk = 0; kk < kTileK; ++kk)
                {
                    float a[kThreadRows], b[4];
#pragma unroll
                    for (int i = 0; i < kThreadRows; ++i)
                        a[i] = tileA[(ty + 16 * i) * lda + kk];
#pragma unroll
                    for (int j = 0; j < 4; ++j)
                        b[j] = tileB[kk * ldb + tx + 16 * j];
#pragma unroll
                    for (int i = 0; i < kThreadRows; ++i)
#pragma unroll
                        for (int j = 0; j < 4; ++j)
                            simtAcc[i][j] += a[i] * b[j];
                }
            }
            __syncthreads();
        }
    }

    // Epilogue: bias, cast, NCHW store (consecutive threads write consecutive pixels).
    auto store = [&](int32_t m, int32_t col, float value) {
        int32_t const oc = m0 + m;
        int64_t const q = p0 + col;
        if (oc >= ocg || q >= columns)
            return;
        int32_t const o = g * ocg + oc;
        int64_t const image = q / outPlane;
        int64_t const pix = q - image * outPlane;
        if (bias)
            value += ElementTraits<T>::toAcc(bias[o]);
        output[(image * d.out_channels + o) * outPlane + pix] = ElementTraits<T>::fromAcc(value);
    };
    if constexpr (kTensorCores)
    {
        float* stage = reinterpret_cast<float*>(smem); // the tiles are dead after the last __syncthreads
        constexpr int ldc = Layout::ldc;
#pragma unroll
        for (int i = 0; i < kFragRows; ++i)
#pragma unroll
            for (int f = 0; f < 2; ++f)
                wmma::store_matrix_sync(stage + (warpM * kFragRows + i) * 16 * ldc + warpN * 32 + f * 16, tcAcc[i][f],
                    ldc, wmma::mem_row_major);
        __syncthreads();
        for (int32_t e = tid; e < kTileM * kTileN; e += kThreads)
        {
            int32_t const m = e / kTileN;
            int32_t const col = e - m * kTileN;
            store(m, col, stage[m * ldc + col]);
        }
    }
    else
    {
#pragma unroll
        for (int i = 0; i < kThreadRows; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j)
                store(ty + 16 * i, tx + 16 * j, simtAcc[i][j]);
    }
}

template <typename T, bool kTensorCores, int kTileM>
__global__ void __launch_bounds__(kThreads) deformConvFusedKernel(DeformConvGeometry const geo,
    T const* __restrict__ input, T const* __restrict__ offset, T const* __restrict__ groupedWeight,
    T const* __restrict__ bias, T const* __restrict__ mask, T* __restrict__ output)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    // bfloat16 tensor cores need sm_80; the launcher never picks this instantiation below it.
    if constexpr (kTensorCores && std::is_same<T, __nv_bfloat16>::value)
        return;
    else
#endif
        fusedBody<T, kTensorCores, kTileM>(geo, input, offset, groupedWeight, bias, mask, output);
}

template <typename T, bool kTensorCores, int kTileM>
void launchFusedTiles(DeformConvGeometry const& geo, void const* input, void const* offset, void const* groupedWeight,
    void const* bias, void const* mask, void* output, cudaStream_t stream)
{
    int64_t const columns = int64_t(geo.d.batch) * geo.outH * geo.outW;
    dim3 const grid(unsigned((columns + kTileN - 1) / kTileN), unsigned((geo.outChannelsPerGroup + kTileM - 1) / kTileM),
        unsigned(geo.d.group));
    deformConvFusedKernel<T, kTensorCores, kTileM><<<grid, kThreads, 0, stream>>>(geo, static_cast<T const*>(input),
        static_cast<T const*>(offset), static_cast<T const*>(groupedWeight), static_cast<T const*>(bias),
        static_cast<T const*>(mask), static_cast<T*>(output));
}

// workspace: room for the re-laid-out weights (fusedWorkspaceBytes).
template <typename T, bool kTensorCores>
Status launchFused(DeformConvGeometry const& geo, void const* input, void const* offset, void const* weight,
    void const* bias, void const* mask, void* output, void* workspace, cudaStream_t stream)
{
    int64_t const total = int64_t(geo.d.out_channels) * geo.channelsPerGroup * geo.kernelPoints;
    int64_t const blocks = (total + kThreads - 1) / kThreads;
    T* groupedWeight = static_cast<T*>(workspace);
    weightRelayoutKernel<T><<<unsigned(blocks < 65536 ? blocks : 65536), kThreads, 0, stream>>>(
        geo, static_cast<T const*>(weight), groupedWeight, total);
    if (geo.outChannelsPerGroup > 64)
        launchFusedTiles<T, kTensorCores, 128>(geo, input, offset, groupedWeight, bias, mask, output, stream);
    else
        launchFusedTiles<T, kTensorCores, 64>(geo, input, offset, groupedWeight, bias, mask, output, stream);
    return launchStatus("the fused deformable-convolution kernel");
}

} // namespace

// Compute capability of the current device, queried once per device (enqueue stays free of attribute queries).
int32_t currentComputeCapability()
{
    constexpr int kMaxDevices = 64;
    static std::atomic<int32_t> cache[kMaxDevices] = {};
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess)
        return 0;
    if (device < kMaxDevices && cache[device].load() != 0)
        return cache[device].load();
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    int32_t const capability = major * 10 + minor;
    if (device < kMaxDevices)
        cache[device].store(capability);
    return capability;
}

// The fused kernel reads the weights re-laid out with channels contiguous: OC*C/group*kH*kW elements.
size_t fusedWorkspaceBytes(DeformConvGeometry const& geo, int32_t dtype)
{
    size_t const bytes = size_t(geo.d.out_channels) * size_t(geo.channelsPerGroup) * size_t(geo.kernelPoints)
        * dtypeBytes(dtype);
    return (bytes + 255) / 256 * 256;
}

Status launchFusedPath(DeformConvGeometry const& geo, int32_t dtype, void const* input, void const* offset,
    void const* weight, void const* bias, void const* mask, void* output, void* workspace, cudaStream_t stream)
{
    switch (dtype)
    {
    case DCN_FLOAT32:
        return launchFused<float, false>(geo, input, offset, weight, bias, mask, output, workspace, stream);
    case DCN_FLOAT16:
        return launchFused<__half, true>(geo, input, offset, weight, bias, mask, output, workspace, stream);
    case DCN_BFLOAT16:
        // bfloat16 tensor cores start at sm_80; below, the same tiles multiply in float32 on the CUDA cores.
        return currentComputeCapability() >= 80
            ? launchFused<__nv_bfloat16, true>(geo, input, offset, weight, bias, mask, output, workspace, stream)
            : launchFused<__nv_bfloat16, false>(geo, input, offset, weight, bias, mask, output, workspace, stream);
    default: // not reached: the launch picks this kernel only where fusedKernelAccepts(geo, dtype)
        return Status::error(DCN_ERROR_UNSUPPORTED,
            "the fused kernel supports float32 (0), float16 (1) and bfloat16 (2), got dtype " + std::to_string(dtype));
    }
}

} // namespace dcn

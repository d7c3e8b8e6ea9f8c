// The implicit-GEMM deformable-convolution kernel (DCN_ALGO_IMPLICIT_GEMM): the column tiles are sampled straight
// into shared memory and multiplied there on tensor cores, so the C*kH*kW x pixels columns never go to memory.
// Layout, steps and the rule for which layers it takes: deformConvImplicit.h (shared with the host build that CI
// checks). Not chosen by DCN_ALGO_AUTO nor offered to TensorRT until it has been checked and timed on a GPU
// (benchmarks/gpu_notes.md).
#include "dcnCudaDtype.cuh"
#include "dcnCudaStatus.h"
#include "deformConvImplicit.h"
#include "deformConvKernel.h"
#include "deformConvRelayout.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <string>
#include <type_traits>

namespace dcn
{
namespace
{

// The warps of a block: kWarpsM x kWarpsN, each owning 64 output channels x (kImplicitTileN / kWarpsN) pixels as
// 4 x kFragCols WMMA 16x16 accumulators.
template <int TileM>
struct ImplicitWarps
{
    static constexpr int kWarpsM = TileM / 64;
    static constexpr int kWarpsN = (kImplicitThreads / 32) / kWarpsM;
    static constexpr int kFragCols = kImplicitTileN / kWarpsN / 16;
    static constexpr int kWeightVectors = TileM * kImplicitTileK / kImplicitVector / kImplicitThreads;      // per thread
    static constexpr int kColumnVectors = kImplicitTileN * kImplicitTileK / kImplicitVector / kImplicitThreads; // per thread
    static_assert(kWarpsM * kWarpsN * 32 == kImplicitThreads && kFragCols >= 1, "tile shape");
};

// One step's loads, held in registers while the tensor cores work on the previous step.
template <typename T, int TileM>
struct ImplicitStepLoads
{
    using W = ImplicitWarps<TileM>;
    ImplicitPack<T> weights[W::kWeightVectors];
    ImplicitPack<T> corners[W::kColumnVectors][4];
};

template <typename T, int TileM>
__device__ __forceinline__ void loadStep(DeformConvGeometry const& geo, T const* __restrict__ nhwc,
    T const* __restrict__ weights, ImplicitTaps<float> const* taps, int64_t const* inputBase, int32_t g, int32_t m0,
    ImplicitStep const& step, ImplicitStepLoads<T, TileM>& loads)
{
    using W = ImplicitWarps<TileM>;
DCN_UNROLL
    for (int i = 0; i < W::kWeightVectors; ++i)
    {
        int32_t row, vector;
        int64_t const source = implicitWeightVector(geo, g, m0, step, int32_t(threadIdx.x) + i * kImplicitThreads,
            row, vector);
        if (source >= 0)
            loads.weights[i] = loadPack<T>(weights + source);
        else
DCN_UNROLL
            for (int v = 0; v < kImplicitVector; ++v)
                loads.weights[i].v[v] = ElementTraits<T>::fromAcc(0.0f);
    }
DCN_UNROLL
    for (int i = 0; i < W::kColumnVectors; ++i)
    {
        int32_t col, vector;
        implicitColumnVector(int32_t(threadIdx.x) + i * kImplicitThreads, col, vector);
        implicitGather<T, float>(nhwc + implicitColumnSource(geo, inputBase[col], g, step, vector),
            taps[step.tapsRow * kImplicitTileN + col], loads.corners[i]);
    }
}

template <typename T, int TileM>
__device__ __forceinline__ void storeStep(ImplicitStep const& step, ImplicitTaps<float> const* taps,
    ImplicitStepLoads<T, TileM> const& loads, T* weightTile, T* columnTile)
{
    using W = ImplicitWarps<TileM>;
DCN_UNROLL
    for (int i = 0; i < W::kWeightVectors; ++i)
    {
        int32_t const e = int32_t(threadIdx.x) + i * kImplicitThreads;
        int32_t const row = e / (kImplicitTileK / kImplicitVector);
        int32_t const vector = e - row * (kImplicitTileK / kImplicitVector);
        *reinterpret_cast<ImplicitPack<T>*>(weightTile + row * kImplicitLdk + vector * kImplicitVector)
            = loads.weights[i];
    }
DCN_UNROLL
    for (int i = 0; i < W::kColumnVectors; ++i)
    {
        int32_t col, vector;
        implicitColumnVector(int32_t(threadIdx.x) + i * kImplicitThreads, col, vector);
        *reinterpret_cast<ImplicitPack<T>*>(columnTile + col * kImplicitLdk + vector * kImplicitVector)
            = implicitBlend<T, float>(taps[step.tapsRow * kImplicitTileN + col], loads.corners[i]);
    }
}

// Block (x: pixel tile of the chunk, y: tile of TileM output channels, z: group). Dynamic shared memory
// (implicitSharedBytes): inputBase[kImplicitTileN], outputBase[kImplicitTileN], then the taps table and two
// buffers of (weights tile [TileM][ldk], column tile [kImplicitTileN][ldk]); after the last step, the output
// staging instead of the taps and buffers.
template <typename T, int TileM>
__global__ void __launch_bounds__(kImplicitThreads) implicitKernel(DeformConvGeometry const geo,
    T const* __restrict__ nhwc, T const* __restrict__ offset, T const* __restrict__ weights,
    T const* __restrict__ bias, T const* __restrict__ mask, T* __restrict__ output, int32_t const n0,
    int32_t const chunkPixels)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    if constexpr (std::is_same<T, __nv_bfloat16>::value)
        return; // bfloat16 tensor cores start at sm_80; the launch refuses bfloat16 below that
    else
#endif
    {
    using namespace nvcuda;
    using W = ImplicitWarps<TileM>;
    extern __shared__ __align__(128) unsigned char shared[];
    int64_t* inputBase = reinterpret_cast<int64_t*>(shared);
    int64_t* outputBase = inputBase + kImplicitTileN;
    unsigned char* region = reinterpret_cast<unsigned char*>(outputBase + kImplicitTileN);
    auto* taps = reinterpret_cast<ImplicitTaps<float>*>(region);
    T* buffers = reinterpret_cast<T*>(region + implicitTapsRoom(geo));
    constexpr int kBufferElements = (TileM + kImplicitTileN) * kImplicitLdk;

    int32_t const g = int32_t(blockIdx.z);
    int32_t const m0 = int32_t(blockIdx.y) * TileM;
    int32_t const first = int32_t(blockIdx.x) * kImplicitTileN;
    int32_t const tid = int32_t(threadIdx.x);

    for (int32_t col = tid; col < kImplicitTileN; col += kImplicitThreads)
        implicitPixelBases(geo, n0, chunkPixels, first, col, inputBase[col], outputBase[col]);
    int32_t const entries = implicitTapsRows(geo) * kImplicitTileN;
    for (int32_t e = tid; e < entries; e += kImplicitThreads)
        taps[e] = implicitTapEntry<float>(geo, offset, mask, n0, chunkPixels, first, g, e);
    __syncthreads();

    int32_t const warp = tid / 32;
    int32_t const warpM = warp / W::kWarpsN;
    int32_t const warpN = warp - warpM * W::kWarpsN;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][W::kFragCols];
DCN_UNROLL
    for (int i = 0; i < 4; ++i)
DCN_UNROLL
        for (int j = 0; j < W::kFragCols; ++j)
            wmma::fill_fragment(acc[i][j], 0.0f);

    int32_t const steps = implicitSteps(geo);
    ImplicitStepLoads<T, TileM> loads;
    ImplicitStep step = implicitStep(geo, g, 0);
    loadStep<T, TileM>(geo, nhwc, weights, taps, inputBase, g, m0, step, loads);
    storeStep<T, TileM>(step, taps, loads, buffers, buffers + TileM * kImplicitLdk);
    __syncthreads();
    for (int32_t s = 0; s < steps; ++s)
    {
        T const* weightTile = buffers + (s & 1) * kBufferElements;
        T const* columnTile = weightTile + TileM * kImplicitLdk;
        bool const more = s + 1 < steps;
        if (more) // the next step's gathers are in flight while the tensor cores multiply this one
        {
            step = implicitStep(geo, g, s + 1);
            loadStep<T, TileM>(geo, nhwc, weights, taps, inputBase, g, m0, step, loads);
        }
DCN_UNROLL
        for (int kk = 0; kk < kImplicitTileK; kk += 16)
        {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b[W::kFragCols];
DCN_UNROLL
            for (int j = 0; j < W::kFragCols; ++j)
                wmma::load_matrix_sync(b[j], columnTile + (warpN * W::kFragCols + j) * 16 * kImplicitLdk + kk,
                    kImplicitLdk);
DCN_UNROLL
            for (int i = 0; i < 4; ++i)
            {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
                wmma::load_matrix_sync(a, weightTile + (warpM * 64 + i * 16) * kImplicitLdk + kk, kImplicitLdk);
DCN_UNROLL
                for (int j = 0; j < W::kFragCols; ++j)
                    wmma::mma_sync(acc[i][j], a, b[j], acc[i][j]);
            }
        }
        if (more)
        {
            T* nextWeights = buffers + ((s + 1) & 1) * kBufferElements;
            storeStep<T, TileM>(step, taps, loads, nextWeights, nextWeights + TileM * kImplicitLdk);
        }
        __syncthreads(); // one barrier a step: the buffer written here was last read before the previous barrier
    }

    // Epilogue, one warp row (64 output channels) at a time: accumulators -> float staging -> NCHW with the bias,
    // consecutive threads on consecutive pixels.
    float* staging = reinterpret_cast<float*>(region);
    for (int32_t pass = 0; pass < W::kWarpsM; ++pass)
    {
        if (warpM == pass)
DCN_UNROLL
            for (int i = 0; i < 4; ++i)
DCN_UNROLL
                for (int j = 0; j < W::kFragCols; ++j)
                    wmma::store_matrix_sync(staging + i * 16 * kImplicitLdc + (warpN * W::kFragCols + j) * 16,
                        acc[i][j], kImplicitLdc, wmma::mem_row_major);
        __syncthreads();
        for (int32_t e = tid; e < kImplicitStageRows * kImplicitTileN; e += kImplicitThreads)
        {
            int32_t const row = e / kImplicitTileN;
            int32_t const col = e - row * kImplicitTileN;
            int32_t const m = m0 + pass * 64 + row;
            int64_t const target = outputBase[col];
            if (m >= geo.outChannelsPerGroup || target < 0)
                continue;
            int32_t const o = g * geo.outChannelsPerGroup + m;
            float value = staging[row * kImplicitLdc + col];
            if (bias)
                value += ElementTraits<T>::toAcc(bias[o]);
            output[target + int64_t(o) * geo.outH * geo.outW] = ElementTraits<T>::fromAcc(value);
        }
        __syncthreads(); // the staging is refilled by the next pass
    }
    }
}

// Tiles of tileM output channels (0: the layer's implicitTileM), halved until their shared memory fits this device.
template <typename T>
Status launchImplicitTiles(DeformConvGeometry const& geo, int32_t requestedTileM, T const* nhwc, T const* offset,
    T const* weights, T const* bias, T const* mask, T* output, int32_t n0, int32_t chunkPixels, cudaStream_t stream)
{
    int device = 0;
    int sharedOptin = 0;
    if (cudaGetDevice(&device) != cudaSuccess
        || cudaDeviceGetAttribute(&sharedOptin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess)
        return launchStatus("the implicit-GEMM kernel (querying the device)");
    int32_t tileM = requestedTileM > 0 ? requestedTileM : implicitTileM(geo);
    while (tileM > 64 && implicitSharedBytes(geo, tileM, sizeof(T)) > size_t(sharedOptin))
        tileM /= 2;
    size_t const shared = implicitSharedBytes(geo, tileM, sizeof(T));
    if (shared > size_t(sharedOptin))
        return Status::error(DCN_ERROR_UNSUPPORTED, "the implicit-GEMM kernel needs " + std::to_string(shared)
            + " bytes of shared memory per block for this layer, the device allows " + std::to_string(sharedOptin)
            + "; use algo 3 (GEMM)");
    dim3 const grid(unsigned((int64_t(chunkPixels) + kImplicitTileN - 1) / kImplicitTileN),
        unsigned((geo.outChannelsPerGroup + tileM - 1) / tileM), unsigned(geo.d.group));
    auto launch = [&](auto kernel) {
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared));
        kernel<<<grid, kImplicitThreads, shared, stream>>>(geo, nhwc, offset, weights, bias, mask, output, n0,
            chunkPixels);
    };
    switch (tileM)
    {
    case 256: launch(implicitKernel<T, 256>); break;
    case 128: launch(implicitKernel<T, 128>); break;
    default: launch(implicitKernel<T, 64>);
    }
    return launchStatus("the implicit-GEMM kernel");
}

template <typename T>
Status runImplicit(DeformConvGeometry const& geo, int32_t tileM, T const* input, T const* offset, T const* weight, T const* bias,
    T const* mask, T* output, void* workspace, cudaStream_t stream)
{
    ImplicitPlan const plan = planImplicit(geo, sizeof(T));
    T* nhwc = static_cast<T*>(workspace);
    T* weights = reinterpret_cast<T*>(static_cast<char*>(workspace) + plan.nhwcBytes);
    int32_t const plane = geo.outH * geo.outW;
    Status status = launchWeightsRelayout<T>(geo, weight, weights, stream);
    for (int32_t n0 = 0; status.ok() && n0 < geo.d.batch; n0 += plan.images)
    {
        int32_t const images = std::min(plan.images, geo.d.batch - n0);
        status = launchChannelsLast<T>(geo, input, nhwc, n0, images, stream);
        if (status.ok())
            status = launchImplicitTiles<T>(geo, tileM, nhwc, offset, weights, bias, mask, output, n0,
                images * plane, stream);
    }
    return status;
}

} // namespace

size_t implicitWorkspaceBytes(DeformConvGeometry const& geo, int32_t dtype)
{
    return planImplicit(geo, dtypeBytes(dtype)).totalBytes;
}

Status launchImplicitPath(DeformConvGeometry const& geo, int32_t dtype, int32_t tileM, void const* input,
    void const* offset, void const* weight, void const* bias, void const* mask, void* output, void* workspace,
    cudaStream_t stream)
{
    switch (dtype)
    {
    case DCN_FLOAT16:
        return runImplicit<__half>(geo, tileM, static_cast<__half const*>(input), static_cast<__half const*>(offset),
            static_cast<__half const*>(weight), static_cast<__half const*>(bias), static_cast<__half const*>(mask),
            static_cast<__half*>(output), workspace, stream);
    case DCN_BFLOAT16:
        if (currentComputeCapability() < 80)
            return Status::error(DCN_ERROR_UNSUPPORTED,
                "the implicit-GEMM kernel runs bfloat16 on sm_80 and newer (bfloat16 tensor cores); use algo 3 (GEMM)");
        return runImplicit<__nv_bfloat16>(geo, tileM, static_cast<__nv_bfloat16 const*>(input),
            static_cast<__nv_bfloat16 const*>(offset), static_cast<__nv_bfloat16 const*>(weight),
            static_cast<__nv_bfloat16 const*>(bias), static_cast<__nv_bfloat16 const*>(mask),
            static_cast<__nv_bfloat16*>(output), workspace, stream);
    default: // not reached: the launch picks this kernel only where implicitKernelRefusal is empty
        return Status::error(DCN_ERROR_UNSUPPORTED, implicitKernelRefusal(geo, dtype));
    }
}

} // namespace dcn

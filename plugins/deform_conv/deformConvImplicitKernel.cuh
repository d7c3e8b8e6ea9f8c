// The implicit-GEMM kernel's device code (DCN_ALGO_IMPLICIT_GEMM; layout and steps: deformConvImplicit.h).
// Included by deformConvImplicit.cu, which launches it, and by plugins/tests/implicitKernelEmulation.cpp, which runs
// this same source on the CPU (each block's threads as threads, WMMA as plain tile products) so that CI checks its
// shared-memory carve-up, buffers, barriers and epilogue. Compiled by nvcc it includes what it uses from CUDA; the
// emulation provides, before including it, nvcuda::wmma, threadIdx / blockIdx, __syncthreads, the CUDA function
// qualifiers and dcn::dynamicShared().
#pragma once

#include "deformConvImplicit.h"

#if defined(__CUDACC__)
#include "dcnCudaDtype.cuh"
#include "dcnDynamicShared.cuh"

#include <mma.h>
#endif

#include <type_traits>

namespace dcn
{
namespace
{

// The warps of a block of Threads threads: kWarpsM x kWarpsN, each owning 64 output channels x
// (kImplicitTileN / kWarpsN) pixels as 4 x kFragCols WMMA 16x16 accumulators.
template <int TileM, int Threads>
struct ImplicitWarps
{
    static constexpr int kWarpsM = TileM / 64;
    static constexpr int kWarpsN = (Threads / 32) / kWarpsM;
    static constexpr int kFragCols = kImplicitTileN / kWarpsN / 16;
    static constexpr int kWeightVectors = TileM * kImplicitTileK / kImplicitVector / Threads;         // per thread
    static constexpr int kColumnVectors = kImplicitTileN * kImplicitTileK / kImplicitVector / Threads; // per thread
    static_assert(kWarpsM * kWarpsN * 32 == Threads && kFragCols >= 1 && kWeightVectors >= 1 && kColumnVectors >= 1,
        "tile shape");
};

// Whether this compile copies the weights tile global -> shared without registers: cp.async from sm_80 on, and the
// CPU emulation's stand-in for it (copies that land at the wait, their targets NaN until then). Below sm_80 the
// weights go through registers like the gathers: loaded before the tensor cores' work, stored after it.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
constexpr bool kImplicitAsyncWeights = false;
#else
constexpr bool kImplicitAsyncWeights = true;
#endif

// One weights-tile vector, copied asynchronously into shared memory (waited for by implicitCopiesWait before the
// step's barrier).
template <typename T>
__device__ __forceinline__ void implicitCopyPack(T* sharedTarget, T const* source)
{
#if defined(__CUDACC__) && defined(DCN_IMPLICIT_SYNC_COPIES) && DCN_IMPLICIT_SYNC_COPIES
    // A diagnostic build (nvcc -D; benchmarks/gpu_notes.md): the copy as a 16-byte load and a shared store, which
    // racecheck models fully, to tell its reports on the specialised kernel's ring from its model of cp.async.
    *reinterpret_cast<uint4*>(sharedTarget) = __ldg(reinterpret_cast<uint4 const*>(source));
#elif defined(__CUDACC__)
    static_assert(sizeof(ImplicitPack<T>) == 16, "cp.async copies 16 bytes");
    unsigned const target = unsigned(__cvta_generic_to_shared(sharedTarget));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(target), "l"(__cvta_generic_to_global(source))
        : "memory");
#else
    emulation::copyAsync(sharedTarget, source, sizeof(ImplicitPack<T>));
#endif
}

__device__ __forceinline__ void implicitCopiesWait()
{
#if defined(__CUDACC__)
    if constexpr (kImplicitAsyncWeights)
        asm volatile("cp.async.wait_all;\n" ::: "memory");
#else
    emulation::copiesWait();
#endif
}

// One step's gathers (and below sm_80 its weights), held in registers (as words) while the tensor cores work on the
// previous step.
template <typename T, int TileM, int Threads>
struct ImplicitStepLoads
{
    using W = ImplicitWarps<TileM, Threads>;
    ImplicitPack<T> corners[W::kColumnVectors][4];
    ImplicitPack<T> weights[kImplicitAsyncWeights ? 1 : W::kWeightVectors]; // unused with cp.async
};

// What a thread's vectors read, fixed for the block: each weights-tile vector's offset in the weights and each
// column-tile vector's in the chunk's input, both less the step's part. Vector i of the thread is vector
// thread + i * threads of its tile (both kernels share a step's vectors out this way).
template <int WeightVectors, int ColumnVectors>
struct ImplicitSources
{
    int32_t weights[WeightVectors];
    int32_t columns[ColumnVectors];
};

template <int WeightVectors, int ColumnVectors>
__device__ __forceinline__ ImplicitSources<WeightVectors, ColumnVectors> implicitSources(DeformConvGeometry const& geo,
    int64_t const* inputBase, int32_t g, int32_t m0, int32_t thread, int32_t threads)
{
    ImplicitSources<WeightVectors, ColumnVectors> sources;
DCN_UNROLL
    for (int i = 0; i < WeightVectors; ++i)
        sources.weights[i] = implicitWeightSource(geo, g, m0, thread + i * threads);
DCN_UNROLL
    for (int i = 0; i < ColumnVectors; ++i)
    {
        int32_t col, vector;
        implicitTileVector(thread + i * threads, col, vector);
        sources.columns[i] = implicitColumnSource(geo, inputBase[col], g, vector);
    }
    return sources;
}

template <int TileM, int Threads>
using ImplicitThreadSources
    = ImplicitSources<ImplicitWarps<TileM, Threads>::kWeightVectors, ImplicitWarps<TileM, Threads>::kColumnVectors>;

// Step `step`'s weights tile: copied into weightTile (in flight until implicitCopiesWait), or below sm_80 loaded
// into registers (stored by storeStepTiles).
template <typename T, int TileM, int Threads>
__device__ __forceinline__ void loadStepWeights(DeformConvGeometry const& geo, T const* __restrict__ weights,
    ImplicitThreadSources<TileM, Threads> const& sources, ImplicitStep const& step, T* weightTile,
    ImplicitStepLoads<T, TileM, Threads>& loads)
{
    using W = ImplicitWarps<TileM, Threads>;
    T const* stepWeights = weights + implicitStepWeights(geo, step);
DCN_UNROLL
    for (int i = 0; i < W::kWeightVectors; ++i)
    {
        if constexpr (kImplicitAsyncWeights)
        {
            int32_t row, vector;
            implicitTileVector(int32_t(threadIdx.x) + i * Threads, row, vector);
            implicitCopyPack<T>(weightTile + row * kImplicitLdk + vector * kImplicitVector,
                stepWeights + sources.weights[i]);
        }
        else
            loads.weights[i] = loadPack<T>(stepWeights + sources.weights[i]);
    }
}

// Step `step`'s gathers into registers.
template <typename T, int TileM, int Threads>
__device__ __forceinline__ void gatherStep(T const* __restrict__ nhwc, ImplicitTaps<float> const* taps,
    ImplicitThreadSources<TileM, Threads> const& sources, ImplicitStep const& step,
    ImplicitStepLoads<T, TileM, Threads>& loads)
{
    using W = ImplicitWarps<TileM, Threads>;
    T const* stepInput = nhwc + step.channel;
    ImplicitTaps<float> const* stepTaps = taps + step.tapsRow * kImplicitTileN;
DCN_UNROLL
    for (int i = 0; i < W::kColumnVectors; ++i)
    {
        int32_t col, vector;
        implicitTileVector(int32_t(threadIdx.x) + i * Threads, col, vector);
        implicitGather<T, float>(stepInput + sources.columns[i], stepTaps[col], loads.corners[i]);
    }
}

// Step `step`'s tiles from registers: its gathered vectors blended into columnTile (and below sm_80 its weights
// into weightTile); then the thread waits for its weight copies.
template <typename T, int TileM, int Threads>
__device__ __forceinline__ void storeStepTiles(ImplicitStep const& step, ImplicitTaps<float> const* taps,
    ImplicitStepLoads<T, TileM, Threads> const& loads, T* weightTile, T* columnTile)
{
    using W = ImplicitWarps<TileM, Threads>;
    if constexpr (!kImplicitAsyncWeights)
    {
DCN_UNROLL
        for (int i = 0; i < W::kWeightVectors; ++i)
        {
            int32_t row, vector;
            implicitTileVector(int32_t(threadIdx.x) + i * Threads, row, vector);
            storePack<T>(weightTile + row * kImplicitLdk + vector * kImplicitVector, loads.weights[i]);
        }
    }
    ImplicitTaps<float> const* stepTaps = taps + step.tapsRow * kImplicitTileN;
DCN_UNROLL
    for (int i = 0; i < W::kColumnVectors; ++i)
    {
        int32_t col, vector;
        implicitTileVector(int32_t(threadIdx.x) + i * Threads, col, vector);
        storePack<T>(columnTile + col * kImplicitLdk + vector * kImplicitVector,
            implicitBlend<T, float>(stepTaps[col], loads.corners[i]));
    }
    implicitCopiesWait();
}

// A warp's accumulators: 64 output channels x (16 FragCols) pixels as 4 x FragCols WMMA 16x16 tiles, float.
template <int FragCols>
using ImplicitAccumulators = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>[4][FragCols];

template <int FragCols>
__device__ __forceinline__ void clearAccumulators(ImplicitAccumulators<FragCols>& acc)
{
DCN_UNROLL
    for (int i = 0; i < 4; ++i)
DCN_UNROLL
        for (int j = 0; j < FragCols; ++j)
            nvcuda::wmma::fill_fragment(acc[i][j], 0.0f);
}

// One step's product on the tensor cores: the warp at (warpM, warpN) of the tile adds rows [64 warpM, +64) of the
// weights tile times columns [16 FragCols warpN, +16 FragCols) of the column tile (both kImplicitLdk apart, the
// reduction contiguous) to its accumulators.
template <typename T, int FragCols>
__device__ __forceinline__ void multiplyStepTiles(T const* weightTile, T const* columnTile, int32_t warpM,
    int32_t warpN, ImplicitAccumulators<FragCols>& acc)
{
    using namespace nvcuda;
DCN_UNROLL
    for (int kk = 0; kk < kImplicitTileK; kk += 16)
    {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b[FragCols];
DCN_UNROLL
        for (int j = 0; j < FragCols; ++j)
            wmma::load_matrix_sync(b[j], columnTile + (warpN * FragCols + j) * 16 * kImplicitLdk + kk, kImplicitLdk);
DCN_UNROLL
        for (int i = 0; i < 4; ++i)
        {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
            wmma::load_matrix_sync(a, weightTile + (warpM * 64 + i * 16) * kImplicitLdk + kk, kImplicitLdk);
DCN_UNROLL
            for (int j = 0; j < FragCols; ++j)
                wmma::mma_sync(acc[i][j], a, b[j], acc[i][j]);
        }
    }
}

// The epilogue's staging of a warp's accumulators: its 64 rows, at its pixel columns, kImplicitLdc floats apart.
template <int FragCols>
__device__ __forceinline__ void stageAccumulators(
    float* staging, int32_t warpN, ImplicitAccumulators<FragCols> const& acc)
{
DCN_UNROLL
    for (int i = 0; i < 4; ++i)
DCN_UNROLL
        for (int j = 0; j < FragCols; ++j)
            nvcuda::wmma::store_matrix_sync(staging + i * 16 * kImplicitLdc + (warpN * FragCols + j) * 16, acc[i][j],
                kImplicitLdc, nvcuda::wmma::mem_row_major);
}

// The start of both implicit kernels' dynamic shared memory: the pixel tables (each tile column's channels-last
// image and output element), then the taps table; the kernel's own buffers follow at `buffers`, and after the last
// step the output staging reuses `region` (taps and buffers).
struct ImplicitSharedStart
{
    int64_t* inputBase;
    int64_t* outputBase;
    unsigned char* region;
    ImplicitTaps<float>* taps;
    unsigned char* buffers;
};

__device__ __forceinline__ ImplicitSharedStart implicitSharedStart(DeformConvGeometry const& geo)
{
    ImplicitSharedStart start;
    start.inputBase = reinterpret_cast<int64_t*>(dynamicShared());
    start.outputBase = start.inputBase + kImplicitTileN;
    start.region = reinterpret_cast<unsigned char*>(start.outputBase + kImplicitTileN);
    start.taps = reinterpret_cast<ImplicitTaps<float>*>(start.region);
    start.buffers = start.region + implicitTapsRoom(geo);
    return start;
}

// A block's tables, filled by all its `threads` threads (this one `tid`; a barrier must follow): each tile column's
// channels-last image and output element, and the taps of every (offset group, kernel point, tile pixel). Each
// pixel's place is found once, into `places` (kImplicitTileN entries of scratch: the kernel's buffers, unused
// until the tables are done), not once per taps entry.
template <typename T>
__device__ __forceinline__ void implicitBlockTables(DeformConvGeometry const& geo, T const* __restrict__ offset,
    T const* __restrict__ mask, int32_t n0, int32_t chunkPixels, int32_t first, int32_t g, int64_t* inputBase,
    int64_t* outputBase, ImplicitTaps<float>* taps, TilePixel* places, int32_t tid, int32_t threads)
{
    for (int32_t col = tid; col < kImplicitTileN; col += threads)
    {
        inputBase[col] = tileRowImage(geo, first + col, geo.outH * geo.outW, chunkPixels);
        outputBase[col] = implicitOutputBase(geo, n0, chunkPixels, first, col);
        places[col] = implicitTilePixel(geo, chunkPixels, first, col);
    }
    __syncthreads();
    int32_t const entries = implicitTapsRows(geo) * kImplicitTileN;
    for (int32_t e = tid; e < entries; e += threads)
    {
        int32_t const row = e / kImplicitTileN;
        int32_t const col = e - row * kImplicitTileN;
        taps[e] = implicitTapEntryAt<float>(geo, offset, mask, n0, g, row, places[col]);
    }
}

// Four consecutive elements, stored as one (8 bytes for a half type) where they are consecutive and aligned in memory.
template <typename T>
struct alignas(4 * sizeof(T)) ImplicitQuad
{
    T v[4];
};

// Four staged floats of one row (16-byte aligned: kImplicitLdc and the column are multiples of 4).
struct alignas(16) ImplicitStagedQuad
{
    float v[4];
};

// The epilogue's store of one staged pass: rows [firstRow, firstRow + kImplicitStageRows) of group g's output
// channels (float, kImplicitLdc apart) written NCHW with the bias by `threads` threads (this one `tid`), each four
// consecutive tile pixels of one row at a time, consecutive threads on consecutive pixels: one 4-element store where
// the four are consecutive and aligned in the output (pixels of one image, as most are), else one by one; rows past
// the group's channels and pixels past the chunk skipped. (One 2-byte store per element was 9% of the specialised
// kernel's stall samples in session 22's profile, with nothing to overlap it.)
template <typename T>
__device__ __forceinline__ void implicitStoreStaged(DeformConvGeometry const& geo, float const* staging,
    int64_t const* outputBase, T const* __restrict__ bias, T* __restrict__ output, int32_t g, int32_t firstRow,
    int32_t tid, int32_t threads)
{
    constexpr int32_t kQuads = kImplicitTileN / 4;
    static_assert(kImplicitTileN % 4 == 0 && kImplicitLdc % 4 == 0, "staged rows hold whole, aligned quads");
    for (int32_t e = tid; e < kImplicitStageRows * kQuads; e += threads)
    {
        int32_t const row = e / kQuads;
        int32_t const col = (e - row * kQuads) * 4;
        int32_t const m = firstRow + row;
        if (m >= geo.outChannelsPerGroup)
            continue;
        int32_t const o = g * geo.outChannelsPerGroup + m;
        ImplicitStagedQuad const staged = *reinterpret_cast<ImplicitStagedQuad const*>(staging + row * kImplicitLdc + col);
        ImplicitQuad<T> quad;
        if (bias)
        {
            float const b = ElementTraits<T>::toAcc(bias[o]);
DCN_UNROLL
            for (int k = 0; k < 4; ++k)
                quad.v[k] = ElementTraits<T>::fromAcc(staged.v[k] + b);
        }
        else
DCN_UNROLL
            for (int k = 0; k < 4; ++k)
                quad.v[k] = ElementTraits<T>::fromAcc(staged.v[k]);
        T* const channel = output + int64_t(o) * geo.outH * geo.outW;
        int64_t const target = outputBase[col];
        if (target >= 0 && outputBase[col + 3] == target + 3
            && reinterpret_cast<uintptr_t>(channel + target) % sizeof(ImplicitQuad<T>) == 0)
            *reinterpret_cast<ImplicitQuad<T>*>(channel + target) = quad;
        else
DCN_UNROLL
            for (int k = 0; k < 4; ++k)
                if (outputBase[col + k] >= 0)
                    channel[outputBase[col + k]] = quad.v[k];
    }
}

// Block (x: pixel tile of the chunk, y: tile of TileM output channels, z: group) of Threads threads
// (implicitThreads). Dynamic shared memory (implicitSharedBytes): inputBase[kImplicitTileN],
// outputBase[kImplicitTileN], then the taps table and two buffers of (weights tile [TileM][ldk], column tile
// [kImplicitTileN][ldk]); after the last step, the output staging instead of the taps and buffers. Each step's
// weights tile is copied without registers (cp.async; below sm_80 through registers) and its column tile gathered
// into registers while the tensor cores multiply the previous step's; one barrier a step. The launch bounds ask
// registers for two blocks per SM with 64-row tiles (fp16 without spills, ptxas for sm_90), else one.
template <typename T, int TileM, int Threads>
__global__ void __launch_bounds__(Threads, TileM == 64 ? 2 : 1) implicitKernel(
    DeformConvGeometry const geo, T const* __restrict__ nhwc, T const* __restrict__ offset,
    T const* __restrict__ weights, T const* __restrict__ bias, T const* __restrict__ mask, T* __restrict__ output,
    int32_t const n0, int32_t const chunkPixels)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    if constexpr (std::is_same<T, __nv_bfloat16>::value)
        return; // bfloat16 tensor cores start at sm_80; the launch refuses bfloat16 below that
    else
#endif
    {
    using W = ImplicitWarps<TileM, Threads>;
    ImplicitSharedStart const start = implicitSharedStart(geo);
    int64_t* inputBase = start.inputBase;
    int64_t* outputBase = start.outputBase;
    ImplicitTaps<float>* taps = start.taps;
    T* buffers = reinterpret_cast<T*>(start.buffers);
    constexpr int kBufferElements = (TileM + kImplicitTileN) * kImplicitLdk;

    int32_t const g = int32_t(blockIdx.z);
    int32_t const m0 = int32_t(blockIdx.y) * TileM;
    int32_t const first = int32_t(blockIdx.x) * kImplicitTileN;
    int32_t const tid = int32_t(threadIdx.x);

    implicitBlockTables<T>(geo, offset, mask, n0, chunkPixels, first, g, inputBase, outputBase, taps,
        reinterpret_cast<TilePixel*>(start.buffers), tid, Threads);
    __syncthreads();

    int32_t const warp = tid / 32;
    int32_t const warpM = warp / W::kWarpsN;
    int32_t const warpN = warp - warpM * W::kWarpsN;
    ImplicitAccumulators<W::kFragCols> acc;
    clearAccumulators<W::kFragCols>(acc);

    int32_t const steps = implicitSteps(geo);
    ImplicitThreadSources<TileM, Threads> const sources
        = implicitSources<W::kWeightVectors, W::kColumnVectors>(geo, inputBase, g, m0, tid, Threads);
    ImplicitStepLoads<T, TileM, Threads> loads;
    ImplicitStep step = implicitStep(geo, g, 0);
    int32_t const firstOffsetGroupChannel = step.offsetGroupChannel;
    loadStepWeights<T, TileM, Threads>(geo, weights, sources, step, buffers, loads);
    gatherStep<T, TileM, Threads>(nhwc, taps, sources, step, loads);
    storeStepTiles<T, TileM, Threads>(step, taps, loads, buffers, buffers + TileM * kImplicitLdk);
    __syncthreads();
    for (int32_t s = 0; s < steps; ++s)
    {
        T const* weightTile = buffers + (s & 1) * kBufferElements;
        T const* columnTile = weightTile + TileM * kImplicitLdk;
        T* nextWeights = buffers + ((s + 1) & 1) * kBufferElements; // last read before the previous barrier
        bool const more = s + 1 < steps;
        if (more) // the next step's copies and gathers are in flight while the tensor cores multiply this one
        {
            step = implicitNextStep(geo, firstOffsetGroupChannel, step);
            loadStepWeights<T, TileM, Threads>(geo, weights, sources, step, nextWeights, loads);
            gatherStep<T, TileM, Threads>(nhwc, taps, sources, step, loads);
        }
        multiplyStepTiles<T, W::kFragCols>(weightTile, columnTile, warpM, warpN, acc);
        if (more)
            storeStepTiles<T, TileM, Threads>(step, taps, loads, nextWeights, nextWeights + TileM * kImplicitLdk);
        __syncthreads(); // one barrier a step: the buffer written here was last read before the previous barrier
    }

    // Epilogue, one warp row (64 output channels) at a time: accumulators -> float staging -> NCHW with the bias,
    // consecutive threads on consecutive pixels.
    float* staging = reinterpret_cast<float*>(start.region);
    for (int32_t pass = 0; pass < W::kWarpsM; ++pass)
    {
        if (warpM == pass)
            stageAccumulators<W::kFragCols>(staging, warpN, acc);
        __syncthreads();
        implicitStoreStaged<T>(geo, staging, outputBase, bias, output, g, m0 + pass * 64, tid, Threads);
        __syncthreads(); // the staging is refilled by the next pass
    }
    }
}

// f(kernel) with the kernel instance for tileM rows and `threads` threads (implicitThreads); false where there is
// none. The launcher and the CPU emulation both pick the instance here.
template <typename T, typename F>
bool withImplicitKernel(int32_t tileM, int32_t threads, F&& f)
{
    switch (tileM * 1000 + threads)
    {
    case 256512: f(implicitKernel<T, 256, 512>); return true;
    case 256256: f(implicitKernel<T, 256, 256>); return true;
    case 128512: f(implicitKernel<T, 128, 512>); return true;
    case 128256: f(implicitKernel<T, 128, 256>); return true;
    case 64256: f(implicitKernel<T, 64, 256>); return true;
    default: return false;
    }
}

} // namespace
} // namespace dcn

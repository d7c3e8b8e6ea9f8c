// The warp-specialised implicit-GEMM kernel's device code (kImplicitSpecialised; its roles and shared memory:
// deformConvImplicit.h). Included by deformConvImplicit.cu, which launches it, and by
// plugins/tests/implicitKernelEmulation.cpp, which runs this same source on the CPU (named barriers and grouped
// cp.async copies emulated by cudaBlockEmulation.h), so that CI checks its ring protocol, carve-up and epilogue.
//
// Per step t of the reduction (stage s = t mod kSpecialisedStages):
//   producers  wait until stage s+1's consumers are done with it ("empty"), start step t+1's loads (its weights tile
//              copied into stage s+1 as one cp.async group, its column vectors' neighbours gathered into registers),
//              wait for step t's weights, blend step t's neighbours (gathered one step earlier) into stage s's
//              column tile, then arrive at "full" s;
//   consumers  wait at "full" s, multiply stage s's tiles into their accumulators, then arrive at "empty" s (except
//              for the last steps, which no producer waits for: every phase completes).
// The producers run at most kSpecialisedStages - 1 stages ahead of the consumers.
#pragma once

#include "deformConvImplicitKernel.cuh"

namespace dcn
{
namespace
{

// Named barriers of the ring: stage s is full at kFullBarrier + s and empty at kEmptyBarrier + s (0 is
// __syncthreads'). Every thread of the block takes part in each.
constexpr int kFullBarrier = 1;
constexpr int kEmptyBarrier = kFullBarrier + kSpecialisedStages;
static_assert(kEmptyBarrier + kSpecialisedStages <= 16, "a block has 16 named barriers");

// PTX bar.sync: arrive at named barrier `id` and wait for the block's other Threads threads.
template <int Threads>
__device__ __forceinline__ void ringWait(int id)
{
#if defined(__CUDACC__)
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "n"(Threads) : "memory");
#else
    emulation::namedBarrier(id, Threads, true);
#endif
}

// PTX bar.arrive: arrive at named barrier `id` without waiting. The thread's shared-memory writes before it are
// visible to the threads that complete the barrier's wait.
template <int Threads>
__device__ __forceinline__ void ringArrive(int id)
{
#if defined(__CUDACC__)
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "n"(Threads) : "memory");
#else
    emulation::namedBarrier(id, Threads, false);
#endif
}

// A consumer hands stage `id - kEmptyBarrier` back to the producers: bar.arrive, as the ring's protocol needs. A
// diagnostic build with DCN_RING_CONSUMERS_SYNC=1 (nvcc -D; benchmarks/gpu_notes.md) waits there instead (bar.sync):
// slower, still deadlock-free (the producers reach each "empty" wait without waiting for the consumers' next step),
// and the consumers' reads of a stage and the producers' next copies into it are then ordered by a barrier that
// every thread waits at. It tells racecheck's reports on this ring (RESULTS.md) from a limit of its bar.arrive model.
template <int Threads>
__device__ __forceinline__ void ringRelease(int id)
{
#if defined(DCN_RING_CONSUMERS_SYNC) && DCN_RING_CONSUMERS_SYNC
    ringWait<Threads>(id);
#else
    ringArrive<Threads>(id);
#endif
}

// cp.async.commit_group: the copies issued since the last commit form one group.
__device__ __forceinline__ void commitCopies()
{
#if defined(__CUDACC__)
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#else
    emulation::commitCopies();
#endif
}

// cp.async.wait_group: every group but the newest `Pending` has landed (for this thread).
template <int Pending>
__device__ __forceinline__ void waitCopies()
{
#if defined(__CUDACC__)
    asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
#else
    emulation::waitCopies(Pending);
#endif
}

// The block's warps for a TileM x kImplicitTileN tile. Consumers: kWarpsM x kWarpsN, each 64 output channels x
// (kImplicitTileN / kWarpsN) pixels as 4 x kFragCols WMMA 16x16 accumulators. Producers: kProducerThreads, each
// with kColumnVectors of a step's column vectors and kWeightVectors of its weights tile.
template <int TileM>
struct SpecialisedWarps
{
    static constexpr int kWarpsM = TileM / 64;
    static constexpr int kWarpsN = kSpecialisedConsumerWarps / kWarpsM;
    static constexpr int kFragCols = kImplicitTileN / kWarpsN / 16;
    static constexpr int kProducerThreads = 32 * specialisedProducerWarps(TileM);
    static constexpr int kThreads = specialisedThreads(TileM);
    static constexpr int kColumnVectors = kSpecialisedStepVectors / kProducerThreads;
    static constexpr int kWeightVectors = TileM * kImplicitTileK / kImplicitVector / kProducerThreads;
    static constexpr int kStageElements = (TileM + kImplicitTileN) * kImplicitLdk; // weights tile, then column tile
    static_assert(kWarpsM * kWarpsN == kSpecialisedConsumerWarps && kFragCols >= 1 && kWeightVectors >= 1
            && kColumnVectors * kProducerThreads == kSpecialisedStepVectors
            && kWeightVectors * kProducerThreads == TileM * kImplicitTileK / kImplicitVector,
        "tile shape: every producer thread an equal share of both tiles");
};

// What a producer thread (p of kProducerThreads) reads, fixed for the block (implicitSources).
template <int TileM>
using SpecialisedSources
    = ImplicitSources<SpecialisedWarps<TileM>::kWeightVectors, SpecialisedWarps<TileM>::kColumnVectors>;

// A producer thread's column vectors' neighbour indices for one step (the first half of their taps). Read before
// the producer waits at the stage's "empty" barrier (the taps table does not change during the reduction), so that
// the shared-memory latency overlaps the wait instead of stalling the copies' address arithmetic after it (session
// 22's profile: 7% of the kernel's stall samples on those two reads' first use).
template <int TileM>
struct SpecialisedStepIndices
{
    int32_t index[SpecialisedWarps<TileM>::kColumnVectors][4];
};

template <int TileM>
__device__ __forceinline__ SpecialisedStepIndices<TileM> loadStepIndices(
    ImplicitTaps<float> const* taps, ImplicitStep const& step, int32_t p)
{
    using W = SpecialisedWarps<TileM>;
    ImplicitTaps<float> const* stepTaps = taps + step.tapsRow * kImplicitTileN;
    SpecialisedStepIndices<TileM> indices;
DCN_UNROLL
    for (int i = 0; i < W::kColumnVectors; ++i)
    {
        int32_t col, vector;
        implicitTileVector(p + i * W::kProducerThreads, col, vector);
DCN_UNROLL
        for (int c = 0; c < 4; ++c)
            indices.index[i][c] = stepTaps[col].index[c];
    }
    return indices;
}

// A producer thread's column vectors' four neighbours for one step, in registers: gathered a step before their blend,
// so that the gathers' latency is covered by a step of work, as the corner copies did before (session 23). Those
// copies went through shared memory and were read back: 46% of its wavefronts in session 22's profile, whose shared
// pipe was 73% busy. The registers fit: the producers' path needs 72 of the 128 a 512-thread block allows (ptxas,
// sm_90, float16, 128-row tiles), the consumers' 120.
template <typename T, int TileM>
struct SpecialisedCorners
{
    ImplicitPack<T> pack[SpecialisedWarps<TileM>::kColumnVectors][4];
};

// One neighbour vector: an outside neighbour (index < 0) reads nothing and is zero, so the blend needs no branch
// (implicitBlendZeroFilled).
template <typename T>
__device__ __forceinline__ ImplicitPack<T> gatherCorner(T const* image, int32_t index)
{
    ImplicitPack<T> pack{};
    if (index >= 0)
        pack = loadPack<T>(image + index);
    return pack;
}

// Start step `step`'s loads: its weights tile copied into `stage` (one cp.async group) and its column vectors'
// neighbours (at `indices`) gathered into `corners`.
template <typename T, int TileM>
__device__ __forceinline__ void issueStep(DeformConvGeometry const& geo, T const* __restrict__ nhwc,
    T const* __restrict__ weights, SpecialisedStepIndices<TileM> const& indices,
    SpecialisedSources<TileM> const& sources, ImplicitStep const& step, T* stage, SpecialisedCorners<T, TileM>& corners,
    int32_t p)
{
    using W = SpecialisedWarps<TileM>;
    T const* stepWeights = weights + implicitStepWeights(geo, step);
DCN_UNROLL
    for (int i = 0; i < W::kWeightVectors; ++i)
    {
        int32_t row, vector;
        implicitTileVector(p + i * W::kProducerThreads, row, vector);
        implicitCopyPack<T>(stage + row * kImplicitLdk + vector * kImplicitVector, stepWeights + sources.weights[i]);
    }
    commitCopies();
    T const* stepInput = nhwc + step.channel;
DCN_UNROLL
    for (int i = 0; i < W::kColumnVectors; ++i)
    {
        T const* image = stepInput + sources.columns[i];
DCN_UNROLL
        for (int c = 0; c < 4; ++c)
            corners.pack[i][c] = gatherCorner<T>(image, indices.index[i][c]);
    }
}

// Blend step `step`'s gathered neighbours into the column tile of its stage, two vectors at a time: both vectors'
// taps read first, then blended and stored (two, not all: with four vectors a thread, at 256-row tiles, holding all
// their taps spilled).
template <typename T, int TileM>
__device__ __forceinline__ void blendStep(ImplicitTaps<float> const* taps, ImplicitStep const& step,
    SpecialisedCorners<T, TileM> const& corners, T* columnTile, int32_t p)
{
    using W = SpecialisedWarps<TileM>;
    constexpr int kTogether = W::kColumnVectors < 2 ? W::kColumnVectors : 2;
    static_assert(W::kColumnVectors % kTogether == 0, "whole pairs of column vectors");
    ImplicitTaps<float> const* stepTaps = taps + step.tapsRow * kImplicitTileN;
DCN_UNROLL
    for (int first = 0; first < W::kColumnVectors; first += kTogether)
    {
        ImplicitTaps<float> vectorTaps[kTogether];
DCN_UNROLL
        for (int k = 0; k < kTogether; ++k)
        {
            int32_t col, vector;
            implicitTileVector(p + (first + k) * W::kProducerThreads, col, vector);
            vectorTaps[k] = stepTaps[col];
        }
DCN_UNROLL
        for (int k = 0; k < kTogether; ++k)
        {
            int32_t col, vector;
            implicitTileVector(p + (first + k) * W::kProducerThreads, col, vector);
            storePack<T>(columnTile + col * kImplicitLdk + vector * kImplicitVector,
                implicitBlendZeroFilled<T, float>(vectorTaps[k], corners.pack[first + k]));
        }
    }
}

// What a producer thread carries from step to step.
template <typename T, int TileM>
struct SpecialisedProducer
{
    DeformConvGeometry const& geo;
    T const* nhwc;
    T const* weights;
    ImplicitTaps<float> const* taps;
    T* ring;
    SpecialisedSources<TileM> sources;
    int32_t steps, firstOffsetGroupChannel, p;
    ImplicitStep step; // the step whose loads were issued last
    int32_t stage;     // t mod kSpecialisedStages
};

// Producer step t: issue step t + 1's loads into `next` (its corners), then blend step t from `current` (gathered
// by the step before) and hand its stage to the consumers.
template <typename T, int TileM>
__device__ __forceinline__ void produceStep(SpecialisedProducer<T, TileM>& pr, int32_t t,
    SpecialisedCorners<T, TileM> const& current, SpecialisedCorners<T, TileM>& next)
{
    using W = SpecialisedWarps<TileM>;
    int32_t const nextStage = pr.stage + 1 == kSpecialisedStages ? 0 : pr.stage + 1;
    ImplicitStep const blended = pr.step;
    if (t + 1 < pr.steps)
    {
        pr.step = implicitNextStep(pr.geo, pr.firstOffsetGroupChannel, pr.step);
        SpecialisedStepIndices<TileM> const indices = loadStepIndices<TileM>(pr.taps, pr.step, pr.p);
        if (t + 1 >= kSpecialisedStages) // the stage's last consumers (step t + 1 - stages) are done with it
            ringWait<W::kThreads>(kEmptyBarrier + nextStage);
        issueStep<T, TileM>(pr.geo, pr.nhwc, pr.weights, indices, pr.sources, pr.step,
            pr.ring + nextStage * W::kStageElements, next, pr.p);
        waitCopies<1>(); // step t's weights have landed, step t + 1's are in flight
    }
    else
        waitCopies<0>();
    blendStep<T, TileM>(pr.taps, blended, current, pr.ring + pr.stage * W::kStageElements + TileM * kImplicitLdk,
        pr.p);
    ringArrive<W::kThreads>(kFullBarrier + pr.stage);
    pr.stage = nextStage;
}

// A producer thread's whole reduction: every step's loads one step ahead, its blend, and the ring's barriers. Two
// steps an iteration, so that the two sets of corner registers swap roles without a copy.
template <typename T, int TileM>
__device__ __forceinline__ void produceSteps(DeformConvGeometry const& geo, T const* __restrict__ nhwc,
    T const* __restrict__ weights, int64_t const* inputBase, ImplicitTaps<float> const* taps, T* ring, int32_t g,
    int32_t m0, int32_t p)
{
    using W = SpecialisedWarps<TileM>;
    ImplicitStep const first = implicitStep(geo, g, 0);
    SpecialisedProducer<T, TileM> pr{geo, nhwc, weights, taps, ring,
        implicitSources<W::kWeightVectors, W::kColumnVectors>(geo, inputBase, g, m0, p, W::kProducerThreads),
        implicitSteps(geo), first.offsetGroupChannel, p, first, 0};
    SpecialisedCorners<T, TileM> even, odd; // step t's neighbours: even t in `even`, odd t in `odd`
    issueStep<T, TileM>(geo, nhwc, weights, loadStepIndices<TileM>(taps, first, p), pr.sources, first, ring, even, p);
    for (int32_t t = 0; t < pr.steps; t += 2)
    {
        produceStep<T, TileM>(pr, t, even, odd);
        if (t + 1 < pr.steps)
            produceStep<T, TileM>(pr, t + 1, odd, even);
    }
}

// A consumer warp's whole reduction: each stage's tiles into its accumulators, as the stepwise kernel multiplies.
template <typename T, int TileM>
__device__ __forceinline__ void consumeSteps(DeformConvGeometry const& geo, T const* ring, int32_t warpM,
    int32_t warpN, ImplicitAccumulators<SpecialisedWarps<TileM>::kFragCols>& acc)
{
    using W = SpecialisedWarps<TileM>;
    int32_t const steps = implicitSteps(geo);
    int32_t stage = 0;
    for (int32_t t = 0; t < steps; ++t)
    {
        ringWait<W::kThreads>(kFullBarrier + stage);
        T const* weightTile = ring + stage * W::kStageElements;
        multiplyStepTiles<T, W::kFragCols>(weightTile, weightTile + TileM * kImplicitLdk, warpM, warpN, acc);
        if (t + kSpecialisedStages < steps) // a producer waits for this stage again
            ringRelease<W::kThreads>(kEmptyBarrier + stage);
        stage = stage + 1 == kSpecialisedStages ? 0 : stage + 1;
    }
}

// Block (x: pixel tile of the chunk, y: tile of TileM output channels, z: group) of specialisedThreads(TileM)
// threads: consumer warps first, then producer warps. Dynamic shared memory (specialisedSharedBytes): inputBase,
// outputBase, then the taps table and the ring of stages; after the last step, the output staging instead. The
// epilogue is the stepwise kernel's, with every thread storing.
template <typename T, int TileM>
__global__ void __launch_bounds__(specialisedThreads(TileM), 1) specialisedKernel(DeformConvGeometry const geo,
    T const* __restrict__ nhwc, T const* __restrict__ offset, T const* __restrict__ weights,
    T const* __restrict__ bias, T const* __restrict__ mask, T* __restrict__ output, int32_t const n0,
    int32_t const chunkPixels)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    return; // cp.async starts at sm_80; the launch refuses older devices
#else
    using W = SpecialisedWarps<TileM>;
    ImplicitSharedStart const start = implicitSharedStart(geo);
    int64_t* inputBase = start.inputBase;
    int64_t* outputBase = start.outputBase;
    ImplicitTaps<float>* taps = start.taps;
    T* ring = reinterpret_cast<T*>(start.buffers);

    int32_t const g = int32_t(blockIdx.z);
    int32_t const m0 = int32_t(blockIdx.y) * TileM;
    int32_t const first = int32_t(blockIdx.x) * kImplicitTileN;
    int32_t const tid = int32_t(threadIdx.x);
    implicitBlockTables<T>(geo, offset, mask, n0, chunkPixels, first, g, inputBase, outputBase, taps,
        reinterpret_cast<TilePixel*>(start.buffers), tid, W::kThreads);
    __syncthreads();

    int32_t const warp = tid / 32;
    bool const consumer = warp < kSpecialisedConsumerWarps;
    int32_t const warpM = warp / W::kWarpsN;
    int32_t const warpN = warp - warpM * W::kWarpsN;
    ImplicitAccumulators<W::kFragCols> acc;
    if (consumer)
    {
        clearAccumulators<W::kFragCols>(acc);
        consumeSteps<T, TileM>(geo, ring, warpM, warpN, acc);
    }
    else
        produceSteps<T, TileM>(geo, nhwc, weights, inputBase, taps, ring, g, m0, tid - 32 * kSpecialisedConsumerWarps);
    __syncthreads(); // both roles are done with the ring: the staging may overwrite it

    float* staging = reinterpret_cast<float*>(start.region);
    for (int32_t pass = 0; pass < W::kWarpsM; ++pass)
    {
        if (consumer && warpM == pass)
            stageAccumulators<W::kFragCols>(staging, warpN, acc);
        __syncthreads();
        implicitStoreStaged<T>(geo, staging, outputBase, bias, output, g, m0 + pass * 64, tid, W::kThreads);
        __syncthreads(); // the staging is refilled by the next pass
    }
#endif
}

// f(kernel) with the specialised kernel instance for tileM rows; false where there is none. The launcher and the
// CPU emulation both pick the instance here.
template <typename T, typename F>
bool withSpecialisedKernel(int32_t tileM, F&& f)
{
    switch (tileM)
    {
    case 256: f(specialisedKernel<T, 256>); return true;
    case 128: f(specialisedKernel<T, 128>); return true;
    case 64: f(specialisedKernel<T, 64>); return true;
    default: return false;
    }
}

} // namespace
} // namespace dcn

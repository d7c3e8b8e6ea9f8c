// The implicit-GEMM kernel (DCN_ALGO_IMPLICIT_GEMM): its tile shape, workspace, the rule for which layers it takes,
// and its per-thread work, shared by the CUDA kernel (deformConvImplicit.cu) and the host build
// (deformConvHost.cpp, which CI checks against the PyTorch reference). Half types only on the GPU.
//
// Per convolution group g, the layer is the product
//     out[o, p] = bias[o] + sum_k weights[o][k] * col[k][p],   k = (kernel point, channel), p = (image, y, x),
// and a block computes a tile of tileM output channels x kImplicitTileN output pixels of it without writing the
// columns anywhere: the reduction runs in steps of kImplicitTileK channels of one kernel point, and each step's
// column tile is sampled straight into shared memory from the channels-last input (nhwc, as the GEMM path's), 8
// channels (16 bytes of a half type) per gather, then multiplied on tensor cores with float32 accumulators.
//
//   taps     the bilinear taps of every (offset group the group's channels touch, kernel point, tile pixel),
//            computed once per block (reading the offsets and the mask coalesced along the pixels);
//   steps    s = kernel point * (C/group / 32) + channel step: while the tensor cores multiply step s, the weights
//            tile [tileM][32] of step s + 1 is copied into the other of two shared buffers (cp.async; below sm_80
//            through registers) and its column tile [kImplicitTileN][32] gathered into registers, then blended into
//            that buffer (both tiles with the reduction contiguous);
//   output   the accumulators go through shared memory (64 rows at a time) and are written NCHW with the bias,
//            consecutive threads on consecutive pixels.
//
// Workspace: the chunk's channels-last input (images per chunk within the GEMM path's budget) and the weights with
// the kernel point outer (weights[o][kp][c], the GEMM path's layout), so a step's weights are 64 contiguous bytes
// per output channel.
#pragma once

#include "deformConvColumns.h"
#include "deformConvMath.h"

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#if !defined(__CUDA_ARCH__)
#include <stdexcept>
#include <vector>
#endif

namespace dcn
{

constexpr int32_t kImplicitTileN = 128;   // output pixels per block
constexpr int32_t kImplicitTileK = 32;    // reduction elements per step: 32 channels of one kernel point
constexpr int32_t kImplicitVector = 8;    // channels per gather (16 bytes of a half type)
constexpr int32_t kImplicitLdk = kImplicitTileK + 8; // a tile row, padded: 80 bytes, so ldmatrix rows miss banks
constexpr int32_t kImplicitLdc = kImplicitTileN + 8; // a float row of the output staging (+8: no bank conflicts)
constexpr int32_t kImplicitStageRows = 64;           // output rows staged per pass (one warp row)
constexpr size_t kImplicitTapsBytesMax = size_t(96) << 10; // 24 rows of 128 taps (a 3x3 kernel: 2 offset groups)

// One sample's four neighbours in a channels-last image: index = the neighbour's first channel as an element
// offset within its image (pixel * C), -1 where the neighbour is outside; weight with the mask folded in.
template <typename Acc>
struct alignas(16) ImplicitTaps
{
    int32_t index[4];
    Acc weight[4];
};

// Which of the block's tile rows a reduction step reads, and where: kernel point, first channel within the group,
// and the row of the taps table (offset group within the span * kernel points + kernel point); with the offset
// group within the span and the channel within that offset group, so that the next step follows without a division
// (implicitNextStep).
struct ImplicitStep
{
    int32_t kp, channel, tapsRow;
    int32_t spanGroup, offsetGroupChannel;
};

// The offset groups group g's channels fall in: the first, and at most implicitOffsetGroupSpan of them for any
// group (a reduction step never straddles two: both group sizes are multiples of the step, implicitKernelRefusal).
DCN_HD int32_t implicitFirstOffsetGroup(DeformConvGeometry const& geo, int32_t g)
{
    return int32_t(int64_t(g) * geo.channelsPerGroup / geo.channelsPerOffsetGroup);
}
DCN_HD int32_t implicitOffsetGroupSpan(DeformConvGeometry const& geo)
{
    // Groups start at multiples of cg, so within an offset group at multiples of gcd(cg, cpog), at most
    // cpog - gcd into it; the span is the offset groups that start and cg more channels cover. (cg/cpog when cpog
    // divides cg, 1 when cg divides cpog.)
    int32_t const cg = geo.channelsPerGroup;
    int32_t const cpog = geo.channelsPerOffsetGroup;
    int32_t a = cg, b = cpog;
    while (b != 0)
    {
        int32_t const r = a % b;
        a = b;
        b = r;
    }
    return (cpog - a + cg - 1) / cpog + 1;
}
DCN_HD int32_t implicitTapsRows(DeformConvGeometry const& geo)
{
    return implicitOffsetGroupSpan(geo) * geo.kernelPoints;
}

DCN_HD size_t implicitTapsBytes(DeformConvGeometry const& geo)
{
    return size_t(implicitTapsRows(geo)) * kImplicitTileN * sizeof(ImplicitTaps<float>);
}

// The taps table's room in shared memory: rounded up to 256 bytes, where the tile buffers start.
DCN_HD size_t implicitTapsRoom(DeformConvGeometry const& geo)
{
    return alignUp256(implicitTapsBytes(geo));
}

// Why the implicit kernel cannot take a layer, or "" when it can. dtype: a dcn_dtype (the CUDA kernel runs half
// types only; the host build also runs float32 and float64, with the same tiles, for exact checks).
inline std::string implicitKernelRefusal(DeformConvGeometry const& geo, int32_t dtype, bool hostBuild = false)
{
    if (!(dtype == DCN_FLOAT16 || dtype == DCN_BFLOAT16 || (hostBuild && (dtype == DCN_FLOAT32 || dtype == DCN_FLOAT64))))
        return "the implicit-GEMM kernel runs float16 and bfloat16 only (tensor cores), got dtype "
            + std::to_string(dtype);
    if (geo.channelsPerGroup % kImplicitTileK != 0 || geo.channelsPerOffsetGroup % kImplicitTileK != 0)
        return "the implicit-GEMM kernel needs input channels per group and per offset group that are multiples of "
            + std::to_string(kImplicitTileK) + ", got " + std::to_string(geo.channelsPerGroup) + " and "
            + std::to_string(geo.channelsPerOffsetGroup);
    if (implicitTapsBytes(geo) > kImplicitTapsBytesMax)
        return "the implicit-GEMM kernel keeps a block's taps in shared memory: at most "
            + std::to_string(kImplicitTapsBytesMax / kImplicitTileN / sizeof(ImplicitTaps<float>))
            + " (offset groups per group) x (kernel points), got " + std::to_string(implicitTapsRows(geo));
    if (int64_t(geo.d.height) * geo.d.width * geo.d.in_channels > int64_t(INT32_MAX))
        return "the implicit-GEMM kernel needs H*W*C below 2^31 per image";
    if (int64_t(geo.d.out_channels) * geo.kernelPoints * geo.channelsPerGroup > int64_t(INT32_MAX))
        return "the implicit-GEMM kernel needs fewer than 2^31 weights";
    if (int64_t(geo.outH) * geo.outW > int64_t(INT32_MAX) - kImplicitTileN)
        return "the implicit-GEMM kernel needs oH*oW below 2^31 - " + std::to_string(kImplicitTileN);
    if (geo.d.group > 65535)
        return "the implicit-GEMM kernel takes at most 65535 groups, got " + std::to_string(geo.d.group);
    return "";
}

// Output channels per block: the smallest of 64, 128 and 256 that covers a group's output channels (256 past that,
// in several row blocks). Larger tiles sample each column tile for more output channels.
inline int32_t implicitTileM(DeformConvGeometry const& geo)
{
    return geo.outChannelsPerGroup <= 64 ? 64 : geo.outChannelsPerGroup <= 128 ? 128 : 256;
}

// Threads per block for tileM-row tiles of dtype: 512 (16 warps) for float16 256-row tiles, which gives the
// gathers' latency twice the warps to hide behind (4% faster than 256 at res4 batch 8, H100); 256 otherwise
// (bfloat16 spills at 512, and neither was timed for it). requested: 0 for this rule, else 256 or 512
// (DCN_DEPLOY_IMPLICIT_THREADS; 64-row tiles always take 256). 0 for a request no kernel instance serves.
inline int32_t implicitThreads(int32_t tileM, int32_t dtype, int32_t requested)
{
    if (tileM == 64)
        return 256;
    if (requested == 0)
        return tileM == 256 && dtype == DCN_FLOAT16 ? 512 : 256;
    return requested == 256 || requested == 512 ? requested : 0;
}

// Dynamic shared memory of either implicit kernel's block (its start: implicitSharedStart): the pixel tables, then
// either the taps and the kernel's own buffers (bufferBytes), or (after the last step) the output staging.
inline size_t implicitBlockSharedBytes(DeformConvGeometry const& geo, size_t bufferBytes)
{
    size_t const tables = 2 * kImplicitTileN * sizeof(int64_t);
    size_t const staging = size_t(kImplicitStageRows) * kImplicitLdc * sizeof(float);
    return tables + std::max(implicitTapsRoom(geo) + bufferBytes, staging);
}

// The stepwise kernel's, with tileM rows: two buffers of (weights tile + column tile).
inline size_t implicitSharedBytes(DeformConvGeometry const& geo, int32_t tileM, size_t elementBytes)
{
    return implicitBlockSharedBytes(geo, 2 * size_t(tileM + kImplicitTileN) * kImplicitLdk * elementBytes);
}

// The warp-specialised kernel (kImplicitSpecialised, deformConvImplicitSpecialised.cuh): the same tiles, steps, taps
// table and epilogue, but the roles split. Producer warps copy each step's weights tile (cp.async) and gather its
// column tile's neighbours into registers, one step ahead, then blend them into the column tile of one of
// kSpecialisedStages ring stages; kSpecialisedConsumerWarps warps multiply the stages in turn. They meet at named
// barriers: a stage's "full" (the producers arrive, the consumers wait) and "empty" (the other way). So the tensor
// cores never wait for a block-wide barrier each step.
constexpr int32_t kSpecialisedConsumerWarps = 8;
constexpr int32_t kSpecialisedStages = 3;
// Column-tile vectors of a step (each producer thread gathers and blends its share).
constexpr int32_t kSpecialisedStepVectors = kImplicitTileN * kImplicitTileK / kImplicitVector;

// Producer warps for tileM-row tiles: 4 with 256 rows, whose consumers hold 128 accumulators a thread (384 threads
// leave them 168 registers; ptxas for sm_90, session 23: float16 keeps a 16-byte stack, bfloat16 spills 128 bytes,
// so bfloat16 takes 128-row tiles: specialisedTileM); 8 below, where the sampling is as much work for half the
// product or less, and 512 threads' 128 registers a thread suffice (float16: 127, no spill).
DCN_HD constexpr int32_t specialisedProducerWarps(int32_t tileM)
{
    return tileM == 256 ? 4 : 8;
}

DCN_HD constexpr int32_t specialisedThreads(int32_t tileM)
{
    return 32 * (kSpecialisedConsumerWarps + specialisedProducerWarps(tileM));
}

// The specialised kernel's tile height for a layer when none is asked for: implicitTileM's, but at most 128 rows
// for bfloat16 (whose 256-row instance spills inside the consumers' loop on sm_90).
inline int32_t specialisedTileM(DeformConvGeometry const& geo, int32_t dtype)
{
    int32_t const tileM = implicitTileM(geo);
    return dtype == DCN_BFLOAT16 ? std::min<int32_t>(tileM, 128) : tileM;
}

// The specialised kernel's, with tileM rows: the ring of stages (weights tile + column tile each).
inline size_t specialisedSharedBytes(DeformConvGeometry const& geo, int32_t tileM, size_t elementBytes)
{
    size_t const ring = size_t(kSpecialisedStages) * size_t(tileM + kImplicitTileN) * kImplicitLdk * elementBytes;
    return implicitBlockSharedBytes(geo, ring);
}

struct ImplicitPlan
{
    int32_t images;      // whole images per chunk
    size_t nhwcBytes;    // room for one chunk's channels-last input
    size_t weightsBytes; // weights[o][kp][c]
    size_t totalBytes;
};

// The most bytes of channels-last input one chunk of the implicit kernel takes: 64 MiB, the GEMM path's column
// budget when this kernel was timed (the GEMM path's is 256 MiB since 2026-11-26; this kernel has none of its
// columns, and a larger room was not timed for it).
constexpr size_t kImplicitInputBudget = size_t(64) << 20;

// Images per chunk: as many as kImplicitInputBudget holds of channels-last input (at least one, at most 65535: the
// transpose's grid), with the chunk's pixels within int32. The rooms are sized as the GEMM path's.
inline ImplicitPlan planImplicit(DeformConvGeometry const& geo, size_t elementBytes)
{
    size_t const budget = kImplicitInputBudget;
    int64_t const batch = std::max<int64_t>(geo.d.batch, 1);
    size_t const imageBytes = inputImageBytes(geo, elementBytes);
    int64_t const plane = std::max<int64_t>(int64_t(geo.outH) * geo.outW, 1);
    ImplicitPlan plan{};
    plan.images = int32_t(std::min<int64_t>({batch, std::max<int64_t>(1, int64_t(budget / std::max<size_t>(imageBytes, 1))),
        std::max<int64_t>(1, (int64_t(INT32_MAX) - kImplicitTileN) / plane), int64_t(65535)}));
    plan.nhwcBytes = channelsLastRoomBytes(geo, elementBytes, budget);
    plan.weightsBytes = relaidWeightsBytes(geo, elementBytes);
    plan.totalBytes = plan.nhwcBytes + plan.weightsBytes;
    return plan;
}

// Step s of group g: the kernel point outer, the channels inner (s = kp * (C/group / 32) + channel step).
DCN_HD ImplicitStep implicitStep(DeformConvGeometry const& geo, int32_t g, int32_t s)
{
    int32_t const stepsPerPoint = geo.channelsPerGroup / kImplicitTileK;
    int32_t const kp = s / stepsPerPoint;
    int32_t const channel = (s - kp * stepsPerPoint) * kImplicitTileK;
    int64_t const inputChannel = int64_t(g) * geo.channelsPerGroup + channel;
    int32_t const spanGroup = int32_t(inputChannel / geo.channelsPerOffsetGroup) - implicitFirstOffsetGroup(geo, g);
    int32_t const offsetGroupChannel = int32_t(inputChannel % geo.channelsPerOffsetGroup);
    return ImplicitStep{kp, channel, spanGroup * geo.kernelPoints + kp, spanGroup, offsetGroupChannel};
}

// The step after `step` of group g, by counting (the kernel's main loop divides nothing): the next 32 channels, the
// next offset group where they start one (both group sizes are multiples of 32), the next kernel point after the
// group's last channel. Equal to implicitStep(geo, g, s + 1); the host build steps this way too.
DCN_HD ImplicitStep implicitNextStep(DeformConvGeometry const& geo, int32_t firstOffsetGroupChannel,
    ImplicitStep step)
{
    step.channel += kImplicitTileK;
    step.offsetGroupChannel += kImplicitTileK;
    if (step.offsetGroupChannel == geo.channelsPerOffsetGroup)
    {
        step.offsetGroupChannel = 0;
        ++step.spanGroup;
    }
    if (step.channel == geo.channelsPerGroup)
    {
        step.channel = 0;
        ++step.kp;
        step.spanGroup = 0;
        step.offsetGroupChannel = firstOffsetGroupChannel;
    }
    step.tapsRow = step.spanGroup * geo.kernelPoints + step.kp;
    return step;
}

DCN_HD int32_t implicitSteps(DeformConvGeometry const& geo)
{
    return geo.kernelPoints * (geo.channelsPerGroup / kImplicitTileK);
}

// Where tile column `col` of the block at chunk pixel `first` writes: its output element (n0 + image, channel 0,
// y, x), or -1 past the chunk. (Where it reads, its channels-last image, is the tiled sampler's tileRowImage.)
DCN_HD int64_t implicitOutputBase(DeformConvGeometry const& geo, int32_t n0, int32_t chunkPixels, int32_t first,
    int32_t col)
{
    int32_t const flat = first + col;
    if (flat >= chunkPixels)
        return -1;
    int32_t const plane = geo.outH * geo.outW;
    int32_t const img = flat / plane;
    return (int64_t(n0) + img) * geo.d.out_channels * plane + (flat - img * plane);
}

// Taps table entry (row, col) (row = offset group within the span * kernel points + kernel point) of group g's
// block, for its tile pixel col at `place` (tilePixel): the tiled sampler's taps (placeTaps), each outside neighbour
// as index -1. None for a row past the last offset group (the last groups' span) or a pixel past the chunk.
template <typename Acc, typename T>
DCN_HD ImplicitTaps<Acc> implicitTapEntryAt(DeformConvGeometry const& geo, T const* offset, T const* mask, int32_t n0,
    int32_t g, int32_t row, TilePixel const& place)
{
    int32_t const og = implicitFirstOffsetGroup(geo, g) + row / geo.kernelPoints;
    BilinearTaps<Acc> const taps = og < geo.d.offset_group
        ? placeTaps<Acc>(geo, offset, mask, n0, place, og * geo.kernelPoints + row % geo.kernelPoints)
        : noTaps<Acc>();
    ImplicitTaps<Acc> out;
    for (int t = 0; t < 4; ++t)
    {
        bool const valid = taps.valid & (1u << t);
        out.index[t] = valid ? taps.index[t] : -1;
        out.weight[t] = valid ? taps.weight[t] : Acc(0);
    }
    return out;
}

// Where tile pixel col of the block at chunk pixel `first` is (tilePixel): the kernels keep it in a table, one
// entry per pixel, so that the taps table's entries (kernel points x pixels) do not each divide to find it.
DCN_HD TilePixel implicitTilePixel(DeformConvGeometry const& geo, int32_t chunkPixels, int32_t first, int32_t col)
{
    return tilePixel(geo, 0, geo.outH * geo.outW, chunkPixels, first + col);
}

// Taps table entry e = row * kImplicitTileN + col (implicitTapEntryAt), its pixel found outright.
template <typename Acc, typename T>
DCN_HD ImplicitTaps<Acc> implicitTapEntry(DeformConvGeometry const& geo, T const* offset, T const* mask, int32_t n0,
    int32_t chunkPixels, int32_t first, int32_t g, int32_t e)
{
    int32_t const row = e / kImplicitTileN;
    return implicitTapEntryAt<Acc>(geo, offset, mask, n0, g, row,
        implicitTilePixel(geo, chunkPixels, first, e - row * kImplicitTileN));
}

// 16 raw bytes: the unit in which a tile vector is loaded, held and stored.
struct alignas(16) ImplicitWord
{
    uint32_t x[4];
};

// kImplicitVector consecutive elements, moved as whole words (one 16-byte word for a half type on the GPU). They
// travel as words, never element by element: copying 16-bit elements out of a load made the GPU wait for every
// load where it landed, before the tensor cores could work (Nsight Compute, H100, 2026-11-26).
template <typename T>
struct alignas(16) ImplicitPack
{
    ImplicitWord w[sizeof(T) * kImplicitVector / sizeof(ImplicitWord)];
};

// Element v of a pack (blendVector reads packs through this).
template <typename T>
DCN_HD T vectorElement(ImplicitPack<T> const& pack, int v)
{
#if defined(__CUDA_ARCH__)
    return reinterpret_cast<T const*>(pack.w)[v];
#else
    T element;
    std::memcpy(&element, reinterpret_cast<unsigned char const*>(pack.w) + size_t(v) * sizeof(T), sizeof(T));
    return element;
#endif
}

template <typename T>
DCN_HD ImplicitPack<T> loadPack(T const* source)
{
#if defined(__CUDA_ARCH__)
    return *reinterpret_cast<ImplicitPack<T> const*>(source);
#else // the host build checks the alignment the GPU's vector load relies on
    ImplicitPack<T> pack;
    if (reinterpret_cast<uintptr_t>(source) % (sizeof(T) * kImplicitVector) != 0)
        throw std::logic_error("misaligned implicit-GEMM load: offset not a multiple of the vector width");
    std::memcpy(pack.w, source, sizeof(pack.w));
    return pack;
#endif
}

template <typename T>
DCN_HD void storePack(T* target, ImplicitPack<T> const& pack)
{
#if defined(__CUDA_ARCH__)
    *reinterpret_cast<ImplicitPack<T>*>(target) = pack;
#else // the alignment of the GPU's vector store (shared memory's 16-byte stores and cp.async need it too)
    if (reinterpret_cast<uintptr_t>(target) % alignof(ImplicitPack<T>) != 0)
        throw std::logic_error("misaligned implicit-GEMM store: a tile row or vector off its 16-byte boundary");
    std::memcpy(target, pack.w, sizeof(pack.w));
#endif
}

// The four neighbours' channel vectors of one sample: image = the pixel's channels-last image advanced to the
// vector's first channel. All four loads are issued before any is used; an outside neighbour reads the image's
// first pixel and is discarded by implicitBlend.
template <typename T, typename Acc>
DCN_HD void implicitGather(T const* image, ImplicitTaps<Acc> const& taps, ImplicitPack<T> (&corners)[4])
{
DCN_UNROLL
    for (int t = 0; t < 4; ++t)
        corners[t] = loadPack<T>(image + (taps.index[t] < 0 ? 0 : taps.index[t]));
}

// The bilinear sample of the vector's channels from its gathered neighbours (blendVector: the GEMM path's
// arithmetic), rounded to T, as a pack: neighbour t counts where bit t of `valid` is set.
template <typename T, typename Acc>
DCN_HD ImplicitPack<T> blendPack(ImplicitTaps<Acc> const& taps, ImplicitPack<T> const (&corners)[4], uint32_t valid)
{
    ImplicitPack<T> out;
#if defined(__CUDA_ARCH__)
    blendVector<T, kImplicitVector>(corners, taps.weight, valid, reinterpret_cast<T(&)[kImplicitVector]>(out.w));
#else
    T result[kImplicitVector];
    blendVector<T, kImplicitVector>(corners, taps.weight, valid, result);
    std::memcpy(out.w, result, sizeof(out.w));
#endif
    return out;
}

// The sample from neighbours gathered as implicitGather does: an outside neighbour (index -1) is skipped.
template <typename T, typename Acc>
DCN_HD ImplicitPack<T> implicitBlend(ImplicitTaps<Acc> const& taps, ImplicitPack<T> const (&corners)[4])
{
    uint32_t valid = 0;
DCN_UNROLL
    for (int t = 0; t < 4; ++t)
        valid |= taps.index[t] < 0 ? 0u : 1u << t;
    return blendPack<T>(taps, corners, valid);
}

// The sample from neighbours an outside one of which was copied as zeros (the specialised kernel's copies zero-fill
// it): all four blended unconditionally, in blendVector's order, so the result is implicitBlend's (adding 0 * 0 to a
// sum that started at +0 changes no value), without a branch per neighbour.
template <typename T, typename Acc>
DCN_HD ImplicitPack<T> implicitBlendZeroFilled(ImplicitTaps<Acc> const& taps, ImplicitPack<T> const (&corners)[4])
{
    return blendPack<T>(taps, corners, 0xFu);
}

// Vector e of a step's tile, in either tile (weights: a row per output channel; columns: a row per pixel): its
// row and its channel vector within the step (4 per row). Every 32 consecutive e (a warp's) cover 8 rows, and the
// 8 of each quarter-warp take two whole rows 4 apart: a row's 4 vectors are still 64 contiguous bytes in global
// memory (one pixel's or one output channel's channels), and the two rows lie in disjoint shared-memory banks
// (rows kImplicitLdk = 40 half elements, 80 bytes, apart: 4 rows start 320 bytes = 2.5 x 128 further), so a
// quarter-warp's 16-byte stores into a tile need one wavefront. Adjacent rows (e / 4) overlapped in one bank group:
// the specialised kernel's column-tile stores took 8 wavefronts a warp where 4 do (session 22's profile).
DCN_HD void implicitTileVector(int32_t e, int32_t& row, int32_t& vector)
{
    static_assert(kImplicitTileK / kImplicitVector == 4, "four channel vectors per tile row");
    int32_t const lane = e & 31;
    vector = lane & 3;
    row = (e >> 5) * 8 + (lane >> 3) + ((lane >> 2) & 1) * 4;
}

// Where a column-tile vector's channels start in the chunk's channels-last input, less the step's channel: tile
// column `col`'s image (inputBase, from tileRowImage: image 0 past the chunk, where the taps discard what is read),
// group g's first channel and the vector within the step. An element offset within the chunk, which fits int32
// (implicitKernelRefusal, planImplicit).
DCN_HD int32_t implicitColumnSource(DeformConvGeometry const& geo, int64_t inputBase, int32_t g, int32_t vector)
{
    return int32_t(inputBase + int64_t(g) * geo.channelsPerGroup + vector * kImplicitVector);
}

// Where weights-tile vector e (of tileM * kImplicitTileK / kImplicitVector) of the block at output channel m0 of
// group g starts in weights[o][kp][c], less the step's part (implicitStepWeights). A row past the group's output
// channels reads the group's last row instead: its products are never stored, and every load stays in bounds.
DCN_HD int32_t implicitWeightSource(DeformConvGeometry const& geo, int32_t g, int32_t m0, int32_t e)
{
    int32_t row, vector;
    implicitTileVector(e, row, vector);
    int32_t const m = m0 + row < geo.outChannelsPerGroup ? m0 + row : geo.outChannelsPerGroup - 1;
    int64_t const o = int64_t(g) * geo.outChannelsPerGroup + m;
    return int32_t(o * geo.kernelPoints * geo.channelsPerGroup + vector * kImplicitVector);
}

// The step's part of every weights-tile vector's offset: its kernel point and channel.
DCN_HD int32_t implicitStepWeights(DeformConvGeometry const& geo, ImplicitStep const& step)
{
    return step.kp * geo.channelsPerGroup + step.channel;
}

#if !defined(__CUDACC__)
// The kernel's workspace in host memory, for the host build and the emulation of the CUDA source: both buffers
// aligned as the GPU's workspace is (the vector loads check it), the weights re-laid out once, and each chunk's
// channels-last input on demand.
template <typename T>
struct ImplicitHostWorkspace
{
    ImplicitHostWorkspace(DeformConvGeometry const& geo, ImplicitPlan const& plan, T const* weight)
        : nhwcStore(plan.nhwcBytes / sizeof(Vector))
        , weightsStore(plan.weightsBytes / sizeof(Vector))
    {
        for (int64_t row = 0; row < int64_t(geo.d.out_channels) * geo.channelsPerGroup; ++row)
            weightRow<T>(geo, weight, weights(), row);
    }

    // nhwc() = images n0..n0+images-1 of input, channels last.
    void loadChunk(DeformConvGeometry const& geo, T const* input, int32_t n0, int32_t images)
    {
        channelsLastHost<T>(geo, input, nhwc(), n0, images);
    }

    T* nhwc() { return reinterpret_cast<T*>(nhwcStore.data()); }
    T* weights() { return reinterpret_cast<T*>(weightsStore.data()); }

    struct alignas(sizeof(T) * kImplicitVector) Vector // the alignment of a vector load of T (loadPack checks it)
    {
        unsigned char bytes[sizeof(T) * kImplicitVector];
    };
    std::vector<Vector> nhwcStore, weightsStore;
};
#endif

} // namespace dcn

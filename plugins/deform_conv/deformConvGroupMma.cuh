// The tensor-core group kernel (rules and layout: deformConvGroupMma.h; launched by deformConvGroupMma.cu). Also run
// on the CPU by plugins/tests/groupMmaEmulation.cpp, each block's threads as threads, its warp's products by the
// emulation's mma.m16n8k16 (cudaBlockEmulation.h, which provides threadIdx and the rest before including this), so
// CI checks the sampling, the tiles, the fragments' layout as PTX documents it, and the epilogue.
#pragma once

#include "deformConvColumns.h"
#include "deformConvDirectChannelsLast.h"
#include "deformConvGroupMma.h"

#if defined(__CUDACC__)
#include "dcnCudaDtype.cuh"
#include "dcnDynamicShared.cuh"
#endif

#include <cmath>
#include <cstring>
#include <type_traits>

namespace dcn
{
namespace
{

// The 32 bits of two consecutive 2-byte elements of shared memory (the lower element in the low half, as a fragment
// register holds them).
template <typename T>
__device__ __forceinline__ uint32_t loadPair(T const* at)
{
#if defined(__CUDA_ARCH__)
    return *reinterpret_cast<uint32_t const*>(at);
#else
    uint32_t bits;
    std::memcpy(&bits, at, 4);
    return bits;
#endif
}

// Eight 32-bit words to 32 bytes of shared memory (16-byte aligned), as two 16-byte stores.
__device__ __forceinline__ void storeWords(void* at, uint32_t const (&words)[8])
{
#if defined(__CUDA_ARCH__)
    reinterpret_cast<uint4*>(at)[0] = make_uint4(words[0], words[1], words[2], words[3]);
    reinterpret_cast<uint4*>(at)[1] = make_uint4(words[4], words[5], words[6], words[7]);
#else
    std::memcpy(at, words, sizeof words);
#endif
}

__device__ __forceinline__ void groupMmaSyncWarp()
{
#if defined(__CUDA_ARCH__)
    __syncwarp();
#elif defined(DCN_CUDA_EMULATION)
    emulation::syncWarp();
#endif
}

// d += A B for one 16 x 8 tile of a warp, A 16 x 16 (row-major) and B 16 x 8 (column-major) in T (float16 or
// bfloat16), d in float32: PTX mma.sync.aligned.m16n8k16.row.col.f32.<T>.<T>.f32. Fragments as PTX lays them out,
// with g = lane / 4 and t = lane % 4: a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1], a[2] = A[g][2t+8, 2t+9],
// a[3] = A[g+8][2t+8, 2t+9]; b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g]; d[0..1] = D[g][2t, 2t+1], d[2..3] =
// D[g+8][2t, 2t+1]. Compiled for sm_80 and newer; below that the launch never runs the kernel (nothing here).
template <typename T>
__device__ __forceinline__ void mmaTile(float (&d)[4], uint32_t const (&a)[4], uint32_t const (&b)[2])
{
#if defined(__CUDA_ARCH__)
#if __CUDA_ARCH__ >= 800
    if constexpr (std::is_same<T, __half>::value)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%0, %1, %2, %3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
#elif defined(DCN_CUDA_EMULATION)
    emulation::mmaM16N8K16<T>(d, a, b);
#endif
}

// The weights of the block's Channels channels from c into its table, block-diagonal for groups of fewer channels:
// table[(kp * Channels + o) * rows + i] = weight[c + o, i % cpg, kp] (rows: groupMmaRowElements) where output
// channel c + o and input channel c + i are of one group, else 0 (cpg: the channels per group, a power of two
// dividing Channels). The weights are read in memory order (they are contiguous for the block's channels), each
// thread carrying its (kernel point, channel pair) from entry to entry instead of dividing (fewer kernel points than
// threads: groupMmaRefusal's shared-memory bound); for smaller groups the table is zeroed first (a barrier between
// the two passes).
template <typename T, int Channels>
__device__ __forceinline__ void fillGroupMmaWeights(DeformConvGeometry const& geo, T const* __restrict__ weight,
    int32_t c, T* table)
{
    constexpr int32_t kRow = Channels + 8; // groupMmaRowElements(Channels)
    int32_t const kernelPoints = geo.kernelPoints;
    int32_t const cpg = geo.channelsPerGroup;
    int32_t shift = 0; // cpg is a power of two: shifts and masks instead of divisions
    while ((1 << shift) < cpg)
        ++shift;
    if (cpg < Channels)
    {
        int32_t const words = kernelPoints * Channels * kRow / 2;
        for (int32_t w = int32_t(threadIdx.x); w < words; w += kGroupMmaThreads)
            reinterpret_cast<uint32_t*>(table)[w] = 0;
        __syncthreads();
    }
    int32_t const entries = Channels * cpg * kernelPoints;
    T const* blockWeights = weight + int64_t(c) * cpg * kernelPoints;
    int32_t const stepPairs = kGroupMmaThreads / kernelPoints;
    int32_t const stepPoints = kGroupMmaThreads - stepPairs * kernelPoints;
    int32_t pair = int32_t(threadIdx.x) / kernelPoints; // o * cpg + l: output channel c + o, its input channel l
    int32_t kp = int32_t(threadIdx.x) - pair * kernelPoints;
    for (int32_t e = int32_t(threadIdx.x); e < entries; e += kGroupMmaThreads)
    {
        int32_t const o = pair >> shift;
        int32_t const i = (o & ~(cpg - 1)) + (pair & (cpg - 1));
        table[(kp * Channels + o) * kRow + i] = blockWeights[e];
        kp += stepPoints;
        pair += stepPairs;
        if (kp >= kernelPoints)
        {
            kp -= kernelPoints;
            ++pair;
        }
    }
}

// One pixel's Channels output sums (bias not included) by FMAs into its column of the warp's staged outputs, channel
// by channel from unrounded float32 samples: for a pixel whose sums from the tile came out infinite or NaN. That
// happens only where a sample was not finite, or past T's range when rounded into the tile (float16's 65504, through
// a mask above 1), and then all of its sums are, through the zero weights between the block's groups too (0 x inf),
// where the reference keeps each group's outputs to its own samples. The kernel points and the input channels in
// the per-item kernel's order; slow (each output channel takes its taps again), and rare: its loops are not
// unrolled, so that it stays small (sm_90, blocks of 16: the kernel 72 registers with it, 80 without).
template <typename T, int Channels>
__device__ void groupMmaExactPixel(DeformConvGeometry const& geo, T const* __restrict__ nhwc,
    T const* __restrict__ offset, T const* __restrict__ weight, T const* __restrict__ mask, int32_t n0, int32_t img,
    int32_t c, int64_t pixel, float* column)
{
    dcn_deform_conv_desc const& d = geo.d;
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    int32_t const cpg = geo.channelsPerGroup;
    int32_t const y = int32_t(pixel / geo.outW);
    int32_t const x = int32_t(pixel - int64_t(y) * geo.outW);
    T const* image = nhwc + int64_t(img) * inputImageElements(geo) + c;
    int64_t const firstPoint
        = (int64_t(n0 + img) * d.offset_group + c / geo.channelsPerOffsetGroup) * geo.kernelPoints;
DCN_NO_UNROLL
    for (int32_t o = 0; o < Channels; ++o)
    {
        int32_t const first = o / cpg * cpg; // the first channel (in the block) of output o's group
        T const* dyAt = offset + 2 * firstPoint * plane + pixel;
        T const* scaleAt = mask ? mask + firstPoint * plane + pixel : nullptr;
        float sum = 0.0f;
DCN_NO_UNROLL
        for (int32_t i = 0; i < d.kernel_h; ++i)
DCN_NO_UNROLL
            for (int32_t j = 0; j < d.kernel_w; ++j)
            {
                BilinearTaps<float> const taps
                    = offsetTaps<float>(d, dyAt, plane, scaleAt, baseRow(d, y, i), baseCol(d, x, j));
DCN_NO_UNROLL
                for (int32_t l = 0; l < cpg; ++l)
                {
                    ChannelPack<T, 1> packs[4];
                    gatherNeighbours<T, 1, float, uint32_t>(image + first + l, taps, d.in_channels, packs);
                    float sample[1];
                    blendInAcc<T, 1, /*Selected=*/true>(packs, taps.weight, taps.valid, sample);
                    sum += ElementTraits<T>::toAcc(
                               weight[(int64_t(c + o) * cpg + l) * geo.kernelPoints + i * d.kernel_w + j])
                        * sample[0];
                }
                dyAt += 2 * plane;
                if (scaleAt)
                    scaleAt += plane;
            }
        column[o * kGroupMmaStagedRow] = sum;
    }
}

// The n8 tiles of a warp's pixels (a block's Channels / 16 m16 tiles of output channels take as many k16 steps).
constexpr int kGroupMmaPixelTiles = kGroupMmaPixels / 8;

// A block: warp w takes output pixels (blockIdx.x * kGroupMmaWarps + w) * 32 .. + 32 of image blockIdx.z (from n0;
// nhwc holds the launch's images channels-last) in channels blockIdx.y * Channels .. + Channels (one group, or
// several whole ones). Per kernel point each lane samples its pixel's channels, 16 at a time (offsetTaps,
// gatherNeighbours, blendInAcc: the wide item's sample, zero for a lane past the image's pixels), into the warp's
// samples tile, rounded to T; then the warp's m16n8k16 products (4 pixel tiles x Channels / 16 output tiles x
// Channels / 16 input steps) add that point's weights times the tile into float32 sums. Last, the sums go through
// the warp's staged outputs, so that each lane adds the bias to and stores its own pixel's channels
// (directItemStore: NCHW, or 32- or 64-byte vectors channels-last). A lane whose sums came out infinite or NaN
// takes them again by groupMmaExactPixel.
template <typename T, int Channels, bool ChannelsLastOut>
__device__ __forceinline__ void groupMmaBlock(DeformConvGeometry const& geo, T const* __restrict__ nhwc,
    T const* __restrict__ offset, T const* __restrict__ weight, T const* __restrict__ bias,
    T const* __restrict__ mask, T* __restrict__ output, int32_t const n0)
{
    using Acc = float;
    constexpr int32_t kRow = Channels + 8; // groupMmaRowElements(Channels)
    constexpr int kTiles = Channels / 16; // m16 tiles of output channels; k16 steps of input channels
    unsigned char* const shared = dynamicShared();
    T* const weights = reinterpret_cast<T*>(shared);
    int32_t const c = int32_t(blockIdx.y) * Channels;
    fillGroupMmaWeights<T, Channels>(geo, weight, c, weights);
    __syncthreads();

    int32_t const warp = int32_t(threadIdx.x) / 32;
    int32_t const lane = int32_t(threadIdx.x) % 32;
    unsigned char* const warpRoom
        = shared + groupMmaWeightsBytes(Channels, geo.kernelPoints) + warp * groupMmaWarpBytes(Channels);
    T* const samples = reinterpret_cast<T*>(warpRoom);
    float* const staged = reinterpret_cast<float*>(warpRoom + size_t(kGroupMmaPixels) * kRow * sizeof(T));
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    int64_t const firstPixel = (int64_t(blockIdx.x) * kGroupMmaWarps + warp) * kGroupMmaPixels;
    if (firstPixel >= plane) // the whole warp past the image: nothing to sample or store (the branch is warp-wide)
        return;
    int64_t const pixel = firstPixel + lane;
    bool const inside = pixel < plane;
    dcn_deform_conv_desc const& d = geo.d;
    int32_t const og = c / geo.channelsPerOffsetGroup;
    int32_t const img = int32_t(blockIdx.z);
    int32_t const y = inside ? int32_t(pixel / geo.outW) : 0;
    int32_t const x = inside ? int32_t(pixel - int64_t(y) * geo.outW) : 0;
    T const* image = nhwc + int64_t(img) * inputImageElements(geo) + c;
    int64_t const firstPoint = (int64_t(n0 + img) * d.offset_group + og) * geo.kernelPoints;
    int64_t const at = inside ? pixel : 0;
    T const* dyAt = offset + 2 * firstPoint * plane + at;
    T const* scaleAt = mask ? mask + firstPoint * plane + at : nullptr;
    int32_t const g = lane / 4;
    int32_t const t = lane % 4;

    float sums[kTiles][kGroupMmaPixelTiles][4] = {};
    T const* pointWeights = weights;
    for (int32_t i = 0; i < d.kernel_h; ++i)
    {
        int32_t const row = baseRow(d, y, i);
        for (int32_t j = 0; j < d.kernel_w; ++j)
        {
            uint32_t words[kTiles][8] = {};
            if (inside)
            {
                BilinearTaps<Acc> const taps = offsetTaps<Acc>(d, dyAt, plane, scaleAt, row, baseCol(d, x, j));
DCN_UNROLL
                for (int half = 0; half < kTiles; ++half) // 16 channels at a time
                {
                    ChannelPack<T, 16> packs[4];
                    gatherNeighbours<T, 16, Acc, uint32_t>(image + 16 * half, taps, d.in_channels, packs);
                    Acc sample[16];
                    blendInAcc<T, 16, /*Selected=*/true>(packs, taps.weight, taps.valid, sample);
DCN_UNROLL
                    for (int w = 0; w < 8; ++w)
                        words[half][w] = elementBits(ElementTraits<T>::fromAcc(sample[2 * w]))
                            | elementBits(ElementTraits<T>::fromAcc(sample[2 * w + 1])) << 16;
                }
            }
DCN_UNROLL
            for (int half = 0; half < kTiles; ++half)
                storeWords(samples + lane * kRow + 16 * half, words[half]);
            groupMmaSyncWarp();
DCN_UNROLL
            for (int m = 0; m < kTiles; ++m)
DCN_UNROLL
                for (int k = 0; k < kTiles; ++k)
                {
                    T const* const tileWeights = pointWeights + (16 * m) * kRow + 16 * k;
                    uint32_t const a[4] = {loadPair(tileWeights + g * kRow + 2 * t),
                        loadPair(tileWeights + (g + 8) * kRow + 2 * t), loadPair(tileWeights + g * kRow + 2 * t + 8),
                        loadPair(tileWeights + (g + 8) * kRow + 2 * t + 8)};
DCN_UNROLL
                    for (int tile = 0; tile < kGroupMmaPixelTiles; ++tile)
                    {
                        T const* column = samples + (tile * 8 + g) * kRow + 16 * k + 2 * t;
                        uint32_t const b[2] = {loadPair(column), loadPair(column + 8)};
                        mmaTile<T>(sums[m][tile], a, b);
                    }
                }
            groupMmaSyncWarp(); // every lane's fragments read before the next point's samples overwrite the tile
            pointWeights += Channels * kRow;
            dyAt += 2 * plane;
            if (scaleAt)
                scaleAt += plane;
        }
    }
DCN_UNROLL
    for (int m = 0; m < kTiles; ++m)
DCN_UNROLL
        for (int tile = 0; tile < kGroupMmaPixelTiles; ++tile)
DCN_UNROLL
            for (int e = 0; e < 4; ++e)
                staged[(16 * m + g + (e / 2) * 8) * kGroupMmaStagedRow + tile * 8 + 2 * t + e % 2] = sums[m][tile][e];
    groupMmaSyncWarp();
    if (!inside)
        return;
    float poisoned = 0.0f; // NaN where one of its sums is infinite or NaN (x * 0)
DCN_UNROLL
    for (int o = 0; o < Channels; ++o)
        poisoned += staged[o * kGroupMmaStagedRow + lane] * 0.0f;
    if (poisoned != poisoned) // its own column of the staged outputs: no other lane reads it
        groupMmaExactPixel<T, Channels>(geo, nhwc, offset, weight, mask, n0, img, c, pixel, staged + lane);
    Acc out[Channels];
    directItemStart<T, Channels>(bias, c, out);
DCN_UNROLL
    for (int o = 0; o < Channels; ++o)
        out[o] += staged[o * kGroupMmaStagedRow + lane];
    directItemStore<T, Channels, ChannelsLastOut>(geo, out, output, n0 + img, c, pixel);
}

template <typename T, int Channels, bool ChannelsLastOut>
__global__ void __launch_bounds__(kGroupMmaThreads) groupMmaKernel(DeformConvGeometry const geo,
    T const* __restrict__ nhwc, T const* __restrict__ offset, T const* __restrict__ weight,
    T const* __restrict__ bias, T const* __restrict__ mask, T* __restrict__ output, int32_t const n0)
{
    groupMmaBlock<T, Channels, ChannelsLastOut>(geo, nhwc, offset, weight, bias, mask, output, n0);
}

} // namespace
} // namespace dcn

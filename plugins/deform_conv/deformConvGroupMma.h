// The tensor-core group kernel's rules (the kernel: deformConvGroupMma.cuh): which layers it takes, its blocks and
// its shared memory. Experimental and opt-in (GemmOptions::directGroupMma; DCN_FORWARD_GROUP_MMA in the C ABI).
//
// The channels-last direct kernel's wide items for the half types' groups of 16 (ResNeXt-50's c4) spend most of
// their instructions on the group's 16 x 16 product per kernel point, 256 FMAs an output pixel (session 36's SASS:
// 358 of 596 instructions), and were no faster than the GEMM path on an H100 (session 38). Here a warp takes 16
// channels (a group of 16, or whole smaller groups: 2, 4, 8 or 16 of 8, 4, 2 or 1 channels) or 32 (a group of 32,
// ResNeXt's c5, which the per-item kernels do not take) at 32 consecutive output pixels: each lane samples its
// pixel's channels at a kernel point as the wide item does, 16 at a time (the same taps, gathers and float32
// blend), rounds them to the element type into a shared-memory tile, and the warp multiplies that kernel point's
// weights (16 x 16, block-diagonal for smaller groups; or 32 x 32) by the tile's samples on tensor cores (4 or 16
// mma.m16n8k16, float32 accumulators). The samples are rounded to the element type before the product, as the
// GEMM path's columns are, so the results agree with the reference to the GEMM path's precision, not bit for bit
// with the direct kernels'. Where a pixel's sums come out infinite or NaN (a sample not finite, or past float16's
// range through a mask above 1, which the tile cannot hold; 0 x inf would also poison the block's other groups
// through their zero weights), that pixel's sums are taken again by FMAs from unrounded samples, so that infinities
// and NaNs stay in their own groups as in the reference.
#pragma once

#include "deformConvDirectChannelsLast.h"
#include "deformConvShapes.h"

#include <string>

namespace dcn
{

// A warp's pixels (four n8 tiles), the warps of a block (consecutive pixels of one image), and the channels of a
// block in and out: 16 (one m16 tile, one k16 step: a group of 16, or several smaller whole ones) or 32 (two of
// each: a group of 32, ResNeXt's c5).
constexpr int32_t kGroupMmaPixels = 32;
constexpr int32_t kGroupMmaWarps = 4;
constexpr int32_t kGroupMmaThreads = 32 * kGroupMmaWarps;
constexpr int32_t kGroupMmaMaxChannels = 32;
// Floats a row (output channel) of a warp's staged outputs takes: 32 pixels and one of padding.
constexpr int32_t kGroupMmaStagedRow = kGroupMmaPixels + 1;
// Shared memory a block may have: what every sm_80 or newer GPU lets a kernel opt in to (sm_86 and sm_89: 99 KiB);
// the launch opts in where a block needs more than the default 48 KiB.
constexpr size_t kGroupMmaDefaultSharedBytes = 48 * 1024;
constexpr size_t kGroupMmaMaxSharedBytes = 99 * 1024;

// The channels of a block (16 or 32) for the layer's groups: 32 for groups of 32, 16 for smaller ones.
DCN_HD int32_t groupMmaBlockChannels(int32_t channelsPerGroup)
{
    return channelsPerGroup == 32 ? 32 : 16;
}

// Elements a row of the weights and samples tiles takes in shared memory: the block's channels and 8 of padding
// (48 or 80 bytes), so that the 32-bit fragment reads of a warp (8 rows x 4 words) fall in 32 different banks.
DCN_HD int32_t groupMmaRowElements(int32_t channels)
{
    return channels + 8;
}

// Shared memory of a block: the block's weights (per kernel point a channels x channels tile, output channel by
// input channel, in rows of groupMmaRowElements elements), then per warp its samples tile (32 pixels by the
// block's channels, rows likewise) and its staged outputs (the block's channels by 32 pixels, float32).
DCN_HD size_t groupMmaWeightsBytes(int32_t channels, int32_t kernelPoints)
{
    return size_t(kernelPoints) * channels * groupMmaRowElements(channels) * 2;
}

DCN_HD size_t groupMmaWarpBytes(int32_t channels)
{
    return size_t(kGroupMmaPixels) * groupMmaRowElements(channels) * 2 + size_t(channels) * kGroupMmaStagedRow * 4;
}

inline size_t groupMmaSharedBytes(int32_t channels, int32_t kernelPoints)
{
    return groupMmaWeightsBytes(channels, kernelPoints) + kGroupMmaWarps * groupMmaWarpBytes(channels);
}

// Blocks along the output pixels of an image (grid x).
inline int64_t groupMmaPixelBlocks(DeformConvGeometry const& geo)
{
    int64_t const perBlock = int64_t(kGroupMmaPixels) * kGroupMmaWarps;
    return (int64_t(geo.outH) * geo.outW + perBlock - 1) / perBlock;
}

// Why the tensor-core group kernel cannot take the layer, or "": float16 or bfloat16; groups of 1 (depth-wise), 2,
// 4, 8, 16 or 32 channels in and out, in blocks of 16 channels (32 for groups of 32) within offset groups (a block
// of 16: one group of 16, or several smaller ones, whose weights the kernel lays out block-diagonal); the channels-
// last input copy of the direct kernel, with its 32-bit gathers (images of fewer than 2^31 elements), and for groups
// of 16 or fewer a layer that kernel takes (its launch then serves the layer where the GPU is older than sm_80);
// shared memory within kGroupMmaMaxSharedBytes (blocks of 16: at most 113 kernel points; of 32: 29); blocks within
// the grid. The GPU must also be sm_80 or newer (m16n8k16 products), which the launch checks.
inline std::string groupMmaRefusal(DeformConvGeometry const& geo, int32_t dtype)
{
    if (dtype != DCN_FLOAT16 && dtype != DCN_BFLOAT16)
        return "the tensor-core group kernel takes float16 and bfloat16 tensors, got dtype " + std::to_string(dtype);
    int32_t const cpg = geo.channelsPerGroup;
    int32_t const channels = groupMmaBlockChannels(cpg);
    if (cpg != geo.outChannelsPerGroup || cpg > channels || channels % cpg != 0)
        return "the tensor-core group kernel takes groups of 1, 2, 4, 8, 16 or 32 channels in and out, got "
            + std::to_string(cpg) + " and " + std::to_string(geo.outChannelsPerGroup);
    if (geo.channelsPerOffsetGroup % channels != 0)
        return "the tensor-core group kernel takes channels in blocks of " + std::to_string(channels)
            + " within offset groups, got " + std::to_string(geo.channelsPerOffsetGroup)
            + " channels per offset group";
    if (inputImageElements(geo) > int64_t(INT32_MAX))
        return "the tensor-core group kernel takes images of fewer than 2^31 elements, got "
            + std::to_string(inputImageElements(geo));
    if (channels == 16)
    {
        std::string const direct = directChannelsLastRefusal(geo, 2);
        if (!direct.empty())
            return "the tensor-core group kernel reads the channels-last direct kernel's input, and " + direct;
    }
    size_t const shared = groupMmaSharedBytes(channels, geo.kernelPoints);
    if (shared > kGroupMmaMaxSharedBytes)
        return "the tensor-core group kernel keeps a block's weights and tiles in "
            + std::to_string(kGroupMmaMaxSharedBytes) + " bytes of shared memory, and this layer's "
            + std::to_string(geo.kernelPoints) + " kernel points need " + std::to_string(shared);
    if (geo.d.in_channels / channels > 65535 || groupMmaPixelBlocks(geo) > int64_t(INT32_MAX))
        return "the tensor-core group kernel takes at most 65535 blocks of " + std::to_string(channels)
            + " channels (grid y) and 2^31 - 1 blocks of " + std::to_string(kGroupMmaPixels * kGroupMmaWarps)
            + " pixels (grid x)";
    return std::string();
}

} // namespace dcn

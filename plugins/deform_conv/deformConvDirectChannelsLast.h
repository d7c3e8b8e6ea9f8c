// The direct kernel over a channels-last copy of the input (GemmOptions::directChannelsLast, the default for the
// layers it takes; DCN_DEPLOY_DIRECT_LAYOUT=nchw in the C ABI turns it off). For layers of small groups with as
// many output as input channels per group (depth-wise: one; grouped as ResNeXt's: 2 to 16): a work item is Vector
// consecutive channels at one output pixel, whole groups, and each neighbour's Vector channels are one 16-byte
// gather instead of Vector 2- or 4-byte gathers from Vector planes; or, for a group wider than 16 bytes (float32
// groups of 8 and 16, half groups of 16: "wide items", one group each), two or four. A group of Cpg > 1 channels
// multiplies its Cpg samples by a Cpg x Cpg block of weights per kernel point, read from a table of the item's
// weights in Acc (fillDirectWeightTable: shared memory on the GPU, filled once per block).
// Which layers it takes (directChannelsLastRefusal, also the TensorRT plugin's rule for channels-last formats), its
// workspace, and one work item (channelsLastDirectItem), shared by the CUDA kernels (deformConvDirect.cu) and the
// host build (deformConvHost.cpp), so that CI checks the kernel's own code on the CPU.
#pragma once

#include "deformConvColumns.h"
#include "deformConvMath.h"
#include "deformConvShapes.h" // autoTakesMatrixPath

#include <algorithm>
#include <string>

namespace dcn
{

// Channels per group the channels-last direct kernel takes (as many output channels per group), and the bytes an
// item's channels may span: an item holds whole groups, in one 16-byte gather per neighbour, or in two to four for a
// group of up to 64 bytes (a wide item: float32 groups of 8 and 16, half groups of 16, float64 groups of 4 and 8).
constexpr int32_t kDirectGroupMax = 16;
constexpr size_t kDirectItemMaxBytes = 64;
// The largest weight tables (fillDirectWeightTable) a block of the grouped kernel keeps in shared memory: the default
// dynamic shared memory of every target, so that no launch needs an opt-in.
constexpr size_t kDirectWeightTableMaxBytes = 48 * 1024;

// The channel structure the channels-last direct kernel depends on, which the TensorRT plugin knows before the
// spatial sizes (deformConvTactics.cpp).
struct DirectChannelLayout
{
    int64_t channels;
    int64_t channelsPerGroup;
    int64_t outChannelsPerGroup;
    int64_t channelsPerOffsetGroup;
    int64_t kernelPoints;
};

inline DirectChannelLayout directChannelLayout(DeformConvGeometry const& geo)
{
    return {geo.d.in_channels, geo.channelsPerGroup, geo.outChannelsPerGroup, geo.channelsPerOffsetGroup,
        geo.kernelPoints};
}

// Channels per item: 16 bytes' worth, within an offset group (a vector shares its sample positions); 1 where none
// fits, which the direct kernel over NCHW serves instead. A group wider than that (a power of two of channels, at
// most kDirectItemMaxBytes, within an offset group) is an item of its own: a wide item.
inline int32_t directItemWidth(DirectChannelLayout const& layout, size_t elementBytes)
{
    if (layout.channels > INT32_MAX || layout.channelsPerOffsetGroup > INT32_MAX)
        return 1;
    int32_t const vector
        = vectorWidthDividing(elementBytes, int32_t(layout.channels), int32_t(layout.channelsPerOffsetGroup));
    int64_t const cpg = layout.channelsPerGroup;
    bool const wideGroup = cpg > vector && (cpg & (cpg - 1)) == 0
        && cpg * int64_t(elementBytes) <= int64_t(kDirectItemMaxBytes) && layout.channelsPerOffsetGroup % cpg == 0
        && layout.channels % cpg == 0;
    return wideGroup ? int32_t(cpg) : vector;
}

inline int32_t directItemWidth(DeformConvGeometry const& geo, size_t elementBytes)
{
    return directItemWidth(directChannelLayout(geo), elementBytes);
}

// The widest groups (channels in and out) of a dense layer (autoTakesMatrixPath) that AUTO gives the channels-last
// direct kernel. Measured on an H100 (session 38, benchmarks/RESULTS.md): groups of 8 are faster there than on the
// GEMM path in float16 (grouped res4, 32 x 8, batch 8: 0.185 ms against 0.334) and in float32 as wide items (0.278
// against 0.495; batch 1 0.051 against 0.076); the half types' groups of 16 (ResNeXt-50's c4, wide items) are not
// (0.498 against 0.480 at batch 8, 0.069 against 0.070 at batch 1). float64 groups of 4 (wide items too) follow
// float32's groups of 8, untimed.
constexpr int64_t kAutoDirectMaxDenseGroupChannels = 8;

// Whether AUTO keeps the GEMM path on a layer the channels-last direct kernel may take: dense layers of wider groups
// than kAutoDirectMaxDenseGroupChannels; asked for as direct (or as the TensorRT plugin's direct tactic), the kernel
// takes them. AUTO's rule in the launch (deformConvLaunch.cu) and the plugin's for channels-last formats.
inline bool autoKeepsMatrixPathOnWideGroups(DirectChannelLayout const& layout)
{
    return layout.channelsPerGroup > kAutoDirectMaxDenseGroupChannels
        && autoTakesMatrixPath(layout.outChannelsPerGroup, layout.channelsPerGroup, layout.kernelPoints);
}

// Channel vectors side by side in a warp: 2 where the channels hold an even number of vectors, else 1. Two
// neighbouring vectors make each lane pair's gather of a neighbour one whole 32-byte sector (one vector alone used
// half of each sector it loaded: Nsight Compute on depth-wise res4, session 32, found the kernel L1-bound at 92 %
// with 15.6 of 32 bytes used per loaded sector), while 16 consecutive pixels keep the output stores (2 bytes a
// channel in float16) and the offset and mask reads in whole sectors too.
DCN_HD int32_t directVectorsAcross(int64_t vectors)
{
    return vectors % 2 == 0 ? 2 : 1;
}

// Bytes of the weight tables a block of the grouped kernel keeps (one per item side by side: Vector x Cpg
// weights per kernel point in Acc, fillDirectWeightTable); 0 for depth-wise layers, which read their weights as
// they are.
inline int64_t directWeightTableBytes(DirectChannelLayout const& layout, size_t elementBytes)
{
    if (layout.channelsPerGroup <= 1)
        return 0;
    int64_t const item = directItemWidth(layout, elementBytes);
    return directVectorsAcross(layout.channels / item) * layout.kernelPoints * item * layout.channelsPerGroup
        * int64_t(accumulatorBytes(elementBytes));
}

inline size_t directWeightTableBytes(DeformConvGeometry const& geo, size_t elementBytes)
{
    return size_t(directWeightTableBytes(directChannelLayout(geo), elementBytes));
}

// Why the channels-last direct kernel cannot take a layer of this channel structure, or "" where it can: as many
// output as input channels per group, at most kDirectGroupMax (depth-wise layers, and grouped ones of small
// groups), channels in items of at least two within offset groups, each item whole groups (directItemWidth); for
// groups of several channels, a weight table that fits kDirectWeightTableMaxBytes and few enough items for the
// grid.
inline std::string directChannelsLastLayoutRefusal(DirectChannelLayout const& layout, size_t elementBytes)
{
    int64_t const cpg = layout.channelsPerGroup;
    if (cpg != layout.outChannelsPerGroup || cpg > kDirectGroupMax)
        return "the channels-last direct kernel takes layers with as many output as input channels per group, at "
               "most " + std::to_string(kDirectGroupMax) + " (depth-wise, or small groups), got "
            + std::to_string(cpg) + " and " + std::to_string(layout.outChannelsPerGroup);
    int32_t const item = directItemWidth(layout, elementBytes);
    if (item < 2)
        return "the channels-last direct kernel needs channels (and channels per offset group) in multiples of 2, "
               "got " + std::to_string(layout.channels) + " channels, "
            + std::to_string(layout.channelsPerOffsetGroup) + " per offset group";
    if (item % cpg != 0)
        return "the channels-last direct kernel needs whole groups in each item of " + std::to_string(item)
            + " channels (16 bytes or fewer, within an offset group, or one group of up to "
            + std::to_string(kDirectItemMaxBytes) + " bytes), got " + std::to_string(cpg) + " channels per group";
    int64_t const tableBytes = directWeightTableBytes(layout, elementBytes);
    if (tableBytes > int64_t(kDirectWeightTableMaxBytes))
        return "the channels-last direct kernel keeps a block's weights in " + std::to_string(kDirectWeightTableMaxBytes)
            + " bytes, and this layer's " + std::to_string(layout.kernelPoints) + " kernel points need "
            + std::to_string(tableBytes);
    int64_t const channelBlocks = layout.channels / item / directVectorsAcross(layout.channels / item);
    if (cpg > 1 && channelBlocks > 65535)
        return "the channels-last direct kernel takes at most 65535 blocks of channels (grid y), got "
            + std::to_string(channelBlocks);
    return std::string();
}

// The same for a whole layer, which also needs input images of fewer than 2^31 elements (its gathers add 32-bit
// offsets). The direct kernel over NCHW serves the layers it refuses.
inline std::string directChannelsLastRefusal(DeformConvGeometry const& geo, size_t elementBytes)
{
    if (inputImageElements(geo) > int64_t(INT32_MAX))
        return "the channels-last direct kernel takes images of fewer than 2^31 elements, got "
            + std::to_string(inputImageElements(geo));
    return directChannelsLastLayoutRefusal(directChannelLayout(geo), elementBytes);
}

// Its workspace: the channels-last input of as many images as `budget` holds (at least one): the GEMM path's
// column budget (GemmOptions::columnBudget, DCN_DEPLOY_GEMM_CHUNK_MB in the C ABI).
inline size_t directChannelsLastWorkspaceBytes(DeformConvGeometry const& geo, size_t elementBytes,
    size_t budget = kGemmDefaultColumnBudget)
{
    return channelsLastRoomBytes(geo, elementBytes, budget);
}

// Images per transpose (and launch) of the channels-last direct kernel: what its workspace holds, at most 65535
// (the transpose's grid z).
inline int32_t directChannelsLastImages(DeformConvGeometry const& geo, size_t elementBytes,
    size_t budget = kGemmDefaultColumnBudget)
{
    size_t const image = std::max<size_t>(inputImageBytes(geo, elementBytes), 1);
    int64_t const fit = int64_t(directChannelsLastWorkspaceBytes(geo, elementBytes, budget) / image);
    return int32_t(std::min<int64_t>({std::max<int64_t>(fit, 1), std::max(geo.d.batch, 1), 65535}));
}

// f(std::integral_constant<int, N>{}) with N = count for the channels-last direct kernel's counts (16, 8, 4, 2:
// its items' widths and groups; else 1).
template <typename F>
void withDirectCount(int32_t count, F&& f)
{
    if (count == 16)
        f(std::integral_constant<int, 16>{});
    else
        withVectorWidth(count, f);
}

// f(std::integral_constant<int, Vector>{}, std::integral_constant<int, Cpg>{}) for the layer's instance of the
// kernel (its directItemWidth and channels per group), and true; false, calling nothing, where it has none:
// instances exist for vectors of 2 up to 16 bytes' worth holding whole groups of 1, 2, 4 or 8, and for wide items
// of one group of up to 64 bytes, the layers directChannelsLastRefusal lets through. The CUDA launch and the host
// build pick their instance here.
template <typename T, typename F>
bool withChannelsLastDirectInstance(DeformConvGeometry const& geo, F&& f)
{
    int32_t const cpg = geo.channelsPerGroup;
    bool found = false;
    withDirectCount(directItemWidth(geo, sizeof(T)), [&](auto width) {
        withDirectCount(cpg, [&](auto group) {
            constexpr int kVector = decltype(width)::value;
            constexpr int kCpg = decltype(group)::value;
            constexpr size_t kBytes = kVector * sizeof(T);
            if constexpr (kVector >= 2 && kVector % kCpg == 0
                && (kBytes <= 16 || (kVector == kCpg && kBytes <= kDirectItemMaxBytes)))
                if (kCpg == cpg) // withDirectCount maps other counts to 1
                {
                    f(width, group);
                    found = true;
                }
        });
    });
    return found;
}

// Why `kernel` (a launch dispatching by withChannelsLastDirectInstance) has no instance for the layer: its refusal
// turns such layers away before the launch, so this names a broken rule.
inline std::string noChannelsLastDirectInstance(char const* kernel, DeformConvGeometry const& geo,
    size_t elementBytes)
{
    return std::string(kernel) + " has no instance for items of " + std::to_string(directItemWidth(geo, elementBytes))
        + " elements of " + std::to_string(elementBytes) + " bytes and groups of "
        + std::to_string(geo.channelsPerGroup) + " channels";
}

// The weights of the item at channels c .. c + Vector of a layer of Cpg > 1 channels per group, in Acc, as the item
// reads them: table[(kp * Vector + v) * Cpg + l] = weight[c + v, l, kp] (output channel c + v, input channel l of
// its group, kernel point kp). Entries first, first + step, ... (a block's threads share the work).
template <typename T, int Vector, int Cpg>
DCN_HD void fillDirectWeightTable(DeformConvGeometry const& geo, T const* weight, int32_t c,
    typename ElementTraits<T>::Acc* table, int32_t first, int32_t step)
{
    int32_t const kernelPoints = geo.kernelPoints;
    int32_t const entries = kernelPoints * Vector * Cpg;
    for (int32_t i = first; i < entries; i += step)
    {
        int32_t const l = i % Cpg;
        int32_t const v = (i / Cpg) % Vector;
        int32_t const kp = i / (Cpg * Vector);
        table[i] = ElementTraits<T>::toAcc(weight[(int64_t(c + v) * Cpg + l) * kernelPoints + kp]);
    }
}

// An item's sums before its first kernel point: output channels c .. c + Vector's biases, or zeros.
template <typename T, int Vector>
DCN_HD void directItemStart(T const* bias, int32_t c, typename ElementTraits<T>::Acc (&acc)[Vector])
{
    using Acc = typename ElementTraits<T>::Acc;
DCN_UNROLL
    for (int v = 0; v < Vector; ++v)
        acc[v] = bias ? ElementTraits<T>::toAcc(bias[c + v]) : Acc(0);
}

// An item's outputs (channels c .. c + Vector of image n at output pixel `pixel`, row-major), rounded to T: into an
// NCHW output, one store a channel; ChannelsLastOut, one vector store.
template <typename T, int Vector, bool ChannelsLastOut>
DCN_HD void directItemStore(DeformConvGeometry const& geo, typename ElementTraits<T>::Acc const (&acc)[Vector],
    T* output, int32_t n, int32_t c, int64_t pixel)
{
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    if constexpr (ChannelsLastOut)
    {
        T values[Vector];
DCN_UNROLL
        for (int v = 0; v < Vector; ++v)
            values[v] = ElementTraits<T>::fromAcc(acc[v]);
        storeVector<T, Vector>(output + (int64_t(n) * plane + pixel) * geo.d.out_channels + c, values);
    }
    else
    {
        T* out = output + (int64_t(n) * geo.d.out_channels + c) * plane + pixel;
DCN_UNROLL
        for (int v = 0; v < Vector; ++v)
            out[v * plane] = ElementTraits<T>::fromAcc(acc[v]);
    }
}

// out[n0 + img, c .. c + Vector, y, x] from nhwc (the images from n0, channels-last) for a layer of Cpg channels
// per group in and out (directChannelsLastRefusal): per output channel the same sum, in the same order, as
// directOutputBlock (bias, then kernel point by kernel point, input channel by input channel of its group, the
// weight times the bilinear sample, its valid neighbours added in order). Depth-wise (Cpg 1): the weights read as
// they are; else from `table` (fillDirectWeightTable's, for this c). The kernel points are walked row by row with
// pointers into the offsets, the mask and the weights (offsetTaps, as kernelPointTaps calls it, without its
// per-point 64-bit indexing and division: Nsight Compute's SASS view, session 32, had integer work at a third of
// this item's instructions). ChannelsLastOut: the output is channels-last too (GemmOptions::channelsLastTensors),
// and the item's Vector channels are one store.
template <typename T, int Vector, int Cpg, bool ChannelsLastOut = false>
DCN_HD void channelsLastDirectItem(DeformConvGeometry const& geo, T const* nhwc, T const* offset, T const* weight,
    typename ElementTraits<T>::Acc const* table, T const* bias, T const* mask, T* output, int32_t n0, int32_t img,
    int32_t c, int32_t y, int32_t x)
{
    static_assert(Cpg >= 1 && Vector % Cpg == 0, "an item holds whole groups");
    using Acc = typename ElementTraits<T>::Acc;
    dcn_deform_conv_desc const& d = geo.d;
    int32_t const channels = d.in_channels;
    int32_t const kernelPoints = geo.kernelPoints;
    int32_t const og = c / geo.channelsPerOffsetGroup;
    T const* image = nhwc + int64_t(img) * inputImageElements(geo) + c;
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    // kernel point 0's channel of (image, offset group) in the mask; the offsets' dy channel is twice it
    int64_t const firstPoint = (int64_t(n0 + img) * d.offset_group + og) * kernelPoints;
    int64_t const pixel = int64_t(y) * geo.outW + x;
    T const* dyAt = offset + 2 * firstPoint * plane + pixel; // dy of kernel point 0; dx one plane on
    T const* scaleAt = mask ? mask + firstPoint * plane + pixel : nullptr;
    T const* weightAt = weight + int64_t(c) * kernelPoints; // weight[c][0]; channel c + v is v * kernelPoints on
    Acc acc[Vector];
    directItemStart<T, Vector>(bias, c, acc);
    for (int32_t i = 0; i < d.kernel_h; ++i)
    {
        int32_t const row = baseRow(d, y, i);
        for (int32_t j = 0; j < d.kernel_w; ++j)
        {
            BilinearTaps<Acc> const taps = offsetTaps<Acc>(d, dyAt, plane, scaleAt, row, baseCol(d, x, j));
            ChannelPack<T, Vector> packs[4];
            // element offsets in 32 bits: an image's elements fit (directChannelsLastRefusal)
            gatherNeighbours<T, Vector, Acc, uint32_t>(image, taps, channels, packs);
            Acc sample[Vector];
            blendInAcc<T, Vector, /*Selected=*/true>(packs, taps.weight, taps.valid, sample);
            if constexpr (Cpg == 1)
            {
DCN_UNROLL
                for (int v = 0; v < Vector; ++v)
                    acc[v] += ElementTraits<T>::toAcc(weightAt[v * kernelPoints]) * sample[v];
                ++weightAt;
            }
            else
            {
DCN_UNROLL
                for (int v = 0; v < Vector; ++v)
DCN_UNROLL
                    for (int l = 0; l < Cpg; ++l)
                        acc[v] += table[v * Cpg + l] * sample[v / Cpg * Cpg + l];
                table += Vector * Cpg;
            }
            dyAt += 2 * plane;
            if (scaleAt)
                scaleAt += plane;
        }
    }
    directItemStore<T, Vector, ChannelsLastOut>(geo, acc, output, n0 + img, c, pixel);
}

// Work items of one launch (images from n0): images * C / vector * oH * oW.
inline int64_t depthwiseItems(DeformConvGeometry const& geo, int32_t images, int32_t vector)
{
    return int64_t(images) * (geo.d.in_channels / vector) * geo.outH * geo.outW;
}

// Item idx of a launch: (img, pair of channel vectors, y, x, vector of the pair), the pair's vectors fastest, then
// pixels (directVectorsAcross), of a depth-wise layer (the grouped kernel maps its blocks itself). ChannelsLastOut:
// as channelsLastDirectItem's.
template <typename T, int Vector, bool ChannelsLastOut = false>
DCN_HD void depthwiseItem(DeformConvGeometry const& geo, T const* nhwc, T const* offset, T const* weight,
    T const* bias, T const* mask, T* output, int32_t n0, int64_t idx)
{
    int64_t const outPlane = int64_t(geo.outH) * geo.outW;
    int32_t const vectors = geo.d.in_channels / Vector;
    int32_t const across = directVectorsAcross(vectors);
    int32_t const shift = across == 2 ? 1 : 0; // across is 1 or 2: no 64-bit division for it
    int32_t const inPair = int32_t(idx & (across - 1));
    int64_t const rest = idx >> shift;
    int64_t const pixel = rest % outPlane;
    int64_t const outer = rest / outPlane;
    int32_t const pairs = vectors / across;
    int32_t const c = (int32_t(outer % pairs) * across + inPair) * Vector;
    int32_t const img = int32_t(outer / pairs);
    int32_t const y = int32_t(pixel / geo.outW);
    int32_t const x = int32_t(pixel - int64_t(y) * geo.outW);
    channelsLastDirectItem<T, Vector, 1, ChannelsLastOut>(geo, nhwc, offset, weight, nullptr, bias, mask, output, n0,
        img, c, y, x);
}

} // namespace dcn

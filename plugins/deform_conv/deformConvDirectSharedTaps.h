// The channels-last direct kernel's items with their taps shared by a block (GemmOptions::directSharedTaps;
// DCN_DEPLOY_DIRECT_TAPS=shared in the C ABI; opt-in: on an H100, session 38, no faster than the per-item kernels).
// Every item of an offset group at one pixel samples the same positions, yet channelsLastDirectItem computes its taps
// (the offsets' and the mask's loads, the floors, the bilinear weights, the validity) for itself: 32 times over at
// depth-wise res4 in float16, 8 at grouped res4 (4 offset groups). Here a block of kSharedTapsPixels consecutive output
// pixels x kSharedTapsItems items of one offset group first computes the taps of its pixels' kernel points once, into a
// table (shared memory on the GPU), and its items' weights, in Acc, into another, then each item gathers, blends and
// weights its channels reading them: depth-wise layers, and groups of 2 to 16 channels in and out (an item whole
// groups, each group's samples times its Cpg x Cpg block of weights). The sums are channelsLastDirectItem's, in its
// order, from the same taps and weights: bit for bit its results. Shared by the CUDA kernel (deformConvDirect.cu) and
// the host build (deformConvHost.cpp), which runs a block's fills by its threads' shares and then its threads' items
// one by one, so that CI checks the kernel's own code on the CPU.
#pragma once

#include "deformConvDirectChannelsLast.h"

#include <string>

namespace dcn
{

// A block: 32 consecutive output pixels (in row-major order across rows) x 8 items (channel vectors, or wide items'
// groups: directItemWidth), one thread each.
constexpr int32_t kSharedTapsPixels = 32;
constexpr int32_t kSharedTapsItems = 8;
constexpr int32_t kSharedTapsThreads = kSharedTapsPixels * kSharedTapsItems;
// The most a block keeps in its tables: the default dynamic shared memory of every target (no opt-in needed).
constexpr size_t kSharedTapsTablesMaxBytes = 48 * 1024;

// One table entry: the taps of one (kernel point, block pixel), their indices already element offsets in a
// channels-last image (pixel index x channels). 16-byte aligned so that an item reads it in vector loads.
template <typename Acc>
struct alignas(16) SharedTap
{
    BilinearTaps<Acc> taps;
};

// Entries of a block's taps table: one per kernel point and block pixel. Its weights table follows it.
DCN_HD int32_t sharedTapEntries(DeformConvGeometry const& geo)
{
    return geo.kernelPoints * kSharedTapsPixels;
}

// Bytes of a block's tables: the taps, then the weights (per kernel point, each item's Vector x Cpg weights in Acc).
inline size_t sharedTapsTablesBytes(DeformConvGeometry const& geo, size_t elementBytes)
{
    size_t const acc = accumulatorBytes(elementBytes);
    size_t const entry = acc == 8 ? sizeof(SharedTap<double>) : sizeof(SharedTap<float>);
    size_t const weights = size_t(geo.kernelPoints) * kSharedTapsItems * directItemWidth(geo, elementBytes)
        * size_t(geo.channelsPerGroup) * acc;
    return size_t(sharedTapEntries(geo)) * entry + weights;
}

// Why the shared-taps kernel cannot take a layer, or "" where it can: a layer the channels-last direct kernel takes
// (directChannelsLastRefusal: depth-wise, or as many output as input channels per group, items of whole groups),
// whose offset groups hold whole blocks of kSharedTapsItems items, with tables within kSharedTapsTablesMaxBytes and
// at most 65535 blocks of channels (grid y). The launch falls back to channelsLastDirectItem's kernels on the
// others.
inline std::string sharedTapsRefusal(DeformConvGeometry const& geo, size_t elementBytes)
{
    std::string const direct = directChannelsLastRefusal(geo, elementBytes);
    if (!direct.empty())
        return direct;
    int64_t const item = directItemWidth(geo, elementBytes);
    int64_t const blockChannels = item * kSharedTapsItems;
    if (geo.channelsPerOffsetGroup % blockChannels != 0)
        return "the shared-taps direct kernel needs offset groups of a multiple of " + std::to_string(blockChannels)
            + " channels (" + std::to_string(kSharedTapsItems) + " items of " + std::to_string(item) + "), got "
            + std::to_string(geo.channelsPerOffsetGroup);
    size_t const tableBytes = sharedTapsTablesBytes(geo, elementBytes);
    if (tableBytes > kSharedTapsTablesMaxBytes)
        return "the shared-taps direct kernel keeps a block's taps and weights in "
            + std::to_string(kSharedTapsTablesMaxBytes) + " bytes, and this layer's " + std::to_string(geo.kernelPoints)
            + " kernel points need " + std::to_string(tableBytes);
    if (geo.d.in_channels / blockChannels > 65535)
        return "the shared-taps direct kernel takes at most 65535 blocks of channels (grid y), got "
            + std::to_string(geo.d.in_channels / blockChannels);
    return std::string();
}

// Pixel blocks of an image (grid x).
DCN_HD int64_t sharedTapsPixelBlocks(DeformConvGeometry const& geo)
{
    return (int64_t(geo.outH) * geo.outW + kSharedTapsPixels - 1) / kSharedTapsPixels;
}

// The taps table's entries of block pixel p (at firstPixel + p) for kernel points firstPoint, firstPoint + pointStep,
// ... of the block whose pixels start at firstPixel, for image n's offset group og: entry kp * kSharedTapsPixels + p
// holds the taps of kernel point kp at that pixel (pixels fastest, so that a warp's offset and mask reads run along
// a row), computed as channelsLastDirectItem computes them; a pixel past the image's last has none. A block's
// thread t fills pixel t % kSharedTapsPixels from point t / kSharedTapsPixels on (its pixel's place is found once).
template <typename T>
DCN_HD void fillSharedTapsOfPixel(DeformConvGeometry const& geo, T const* offset, T const* mask, int32_t n, int32_t og,
    int64_t firstPixel, int32_t p, SharedTap<typename ElementTraits<T>::Acc>* table, int32_t firstPoint,
    int32_t pointStep)
{
    using Acc = typename ElementTraits<T>::Acc;
    dcn_deform_conv_desc const& d = geo.d;
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    int64_t const pixel = firstPixel + p;
    int32_t const kernelPoints = geo.kernelPoints;
    if (pixel >= plane)
    {
        for (int32_t kp = firstPoint; kp < kernelPoints; kp += pointStep)
            table[kp * kSharedTapsPixels + p].taps = noTaps<Acc>();
        return;
    }
    int32_t const y = int32_t(pixel / geo.outW);
    int32_t const x = int32_t(pixel - int64_t(y) * geo.outW);
    int64_t const point = (int64_t(n) * d.offset_group + og) * kernelPoints + firstPoint; // its mask channel
    T const* dyAt = offset + 2 * point * plane + pixel; // dy of kernel point firstPoint; dx one plane on
    T const* scaleAt = mask ? mask + point * plane + pixel : nullptr;
    int64_t const scaleStep = int64_t(pointStep) * plane;
    for (int32_t kp = firstPoint; kp < kernelPoints; kp += pointStep)
    {
        int32_t const i = kp / d.kernel_w;
        int32_t const j = kp - i * d.kernel_w;
        BilinearTaps<Acc> taps = offsetTaps<Acc>(d, dyAt, plane, scaleAt, baseRow(d, y, i), baseCol(d, x, j));
DCN_UNROLL
        for (int t = 0; t < 4; ++t) // an image's elements fit 32 bits (directChannelsLastRefusal)
            taps.index[t] *= d.in_channels;
        table[kp * kSharedTapsPixels + p].taps = taps;
        dyAt += 2 * scaleStep;
        if (scaleAt)
            scaleAt += scaleStep;
    }
}

// Entries first, first + step, ... of the weights table of the block whose channels start at firstChannel, in Acc:
// entry ((kp * kSharedTapsItems * Vector + i) * Cpg + l) holds weight[firstChannel + i][l][kp] (output channel
// firstChannel + i, input channel l of its group, kernel point kp): kernel points outermost, so that an item's
// Vector x Cpg weights of a kernel point are side by side, in the order its sums read them. Entry e reads the e-th
// of the block's weights in memory, so that a warp's reads are consecutive; its (channel, kernel point) is carried
// from entry to entry, not divided out of e.
template <typename T, int Vector, int Cpg>
DCN_HD void fillSharedTapsWeights(DeformConvGeometry const& geo, T const* weight, int32_t firstChannel,
    typename ElementTraits<T>::Acc* table, int32_t first, int32_t step)
{
    constexpr int32_t kRow = kSharedTapsItems * Vector; // output channels of a block
    int32_t const kernelPoints = geo.kernelPoints;
    int32_t const entries = kernelPoints * kRow * Cpg;
    T const* source = weight + int64_t(firstChannel) * Cpg * kernelPoints;
    int32_t channel = first / kernelPoints; // (i, l) as i * Cpg + l, of entry e = channel * kernelPoints + kp
    int32_t kp = first - channel * kernelPoints;
    int32_t const stepChannels = step / kernelPoints;
    int32_t const stepPoints = step - stepChannels * kernelPoints;
    for (int32_t e = first; e < entries; e += step)
    {
        table[kp * kRow * Cpg + channel] = ElementTraits<T>::toAcc(source[e]);
        channel += stepChannels;
        kp += stepPoints;
        if (kp >= kernelPoints)
        {
            kp -= kernelPoints;
            ++channel;
        }
    }
}

// Which item and which block pixel a block's thread takes: two items side by side at 16 consecutive pixels per warp
// (channelsLastDirectItem's kernel's layout, directVectorsAcross: a lane pair's gathers of a neighbour fill a 32-byte
// sector, and the NCHW output's stores run along 16 pixels); warps 2w and 2w + 1 take items 2w and 2w + 1 at the
// block's two halves of pixels.
struct SharedTapsPlace
{
    int32_t item;
    int32_t pixel;
};

DCN_HD SharedTapsPlace sharedTapsPlace(int32_t thread)
{
    int32_t const warp = thread >> 5;
    int32_t const lane = thread & 31;
    return {(warp >> 1) * 2 + (lane & 1), (warp & 1) * 16 + (lane >> 1)};
}

// Thread `thread` of block (pixelBlock, channelBlock) of image img of a launch (images from n0; nhwc holds them,
// channels-last) once the block's tables are filled (taps, then weights right after them): its item's output,
// channelsLastDirectItem's sums from the tables (Cpg channels per group). ChannelsLastOut: as
// channelsLastDirectItem's.
template <typename T, int Vector, int Cpg, bool ChannelsLastOut = false>
DCN_HD void sharedTapsItem(DeformConvGeometry const& geo, T const* nhwc, T const* bias,
    SharedTap<typename ElementTraits<T>::Acc> const* table, T* output, int32_t n0, int32_t img, int64_t pixelBlock,
    int32_t channelBlock, int32_t thread)
{
    using Acc = typename ElementTraits<T>::Acc;
    SharedTapsPlace const place = sharedTapsPlace(thread);
    int64_t const pixel = pixelBlock * kSharedTapsPixels + place.pixel;
    if (pixel >= int64_t(geo.outH) * geo.outW)
        return;
    int32_t const c = (channelBlock * kSharedTapsItems + place.item) * Vector;
    int32_t const kernelPoints = geo.kernelPoints;
    T const* image = nhwc + int64_t(img) * inputImageElements(geo) + c;
    SharedTap<Acc> const* entry = table + place.pixel;
    Acc const* weightAt = reinterpret_cast<Acc const*>(table + sharedTapEntries(geo)) + place.item * Vector * Cpg;
    Acc acc[Vector];
    directItemStart<T, Vector>(bias, c, acc);
    for (int32_t kp = 0; kp < kernelPoints; ++kp)
    {
        BilinearTaps<Acc> const taps = entry->taps;
        ChannelPack<T, Vector> packs[4];
        gatherNeighbours<T, Vector, Acc, uint32_t>(image, taps, 1, packs);
        Acc sample[Vector];
        blendInAcc<T, Vector, /*Selected=*/true>(packs, taps.weight, taps.valid, sample);
DCN_UNROLL
        for (int v = 0; v < Vector; ++v)
DCN_UNROLL
            for (int l = 0; l < Cpg; ++l)
                acc[v] += weightAt[v * Cpg + l] * sample[v / Cpg * Cpg + l];
        weightAt += kSharedTapsItems * Vector * Cpg;
        entry += kSharedTapsPixels;
    }
    directItemStore<T, Vector, ChannelsLastOut>(geo, acc, output, n0 + img, c, pixel);
}

} // namespace dcn

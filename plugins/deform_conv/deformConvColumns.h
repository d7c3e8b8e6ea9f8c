// The GEMM path's per-element work, shared by the CUDA kernels (deformConvGemmKernels.cuh, deformConvRelayout.cuh)
// and the host build (deformConvHost.cpp, which CI checks against the PyTorch reference): the transposes' elements,
// the samplers (deformConvGemmPlan.h has the layouts and the plan they follow) and the staged output's element.
// The sampling works on channel vectors: `vector` consecutive channels of one (image, pixel, kernel point), taken
// by consecutive threads in column order, so loads and stores are contiguous across a warp (GemmSampler: tiled,
// with each tile's taps computed once, or one thread per vector computing its own).
#pragma once

#include "deformConvGemmPlan.h"
#include "deformConvMath.h"

#include <algorithm>
#include <cstddef>
#include <climits>
#include <cstdint>
#include <cstring>
#if !defined(__CUDA_ARCH__)
#include <stdexcept>
#include <type_traits>
#endif

namespace dcn
{

// nhwc[img][pix][c] = input[n0 + img][c][pix] for element idx of images * C * H * W (idx in nhwc order).
template <typename T>
DCN_HD void nhwcElement(DeformConvGeometry const& geo, T const* input, T* nhwc, int32_t n0, int64_t idx)
{
    int64_t const plane = int64_t(geo.d.height) * geo.d.width;
    int32_t const channels = geo.d.in_channels;
    int32_t const c = int32_t(idx % channels);
    int64_t const rest = idx / channels;
    int64_t const pix = rest % plane;
    int64_t const img = rest / plane;
    nhwc[idx] = input[((n0 + img) * channels + c) * plane + pix];
}

// The host builds' transpose: nhwc = images n0..n0+images-1 of input, channels last, element by element as the
// CUDA transpose kernel moves them (nhwcElement).
template <typename T>
inline void channelsLastHost(DeformConvGeometry const& geo, T const* input, T* nhwc, int32_t n0, int64_t images)
{
    int64_t const elements = images * inputImageElements(geo);
    for (int64_t idx = 0; idx < elements; ++idx)
        nhwcElement<T>(geo, input, nhwc, n0, idx);
}

// weights[o][kp][cig] = weight[o][cig][kp] for the kH*kW weights of row idx = o * C/group + cig: one thread reads a
// row's kernel points (contiguous) and writes them C/group apart, so neighbouring threads write neighbouring
// elements and each thread has all its loads in flight at once.
template <typename T>
DCN_HD void weightRow(DeformConvGeometry const& geo, T const* weight, T* weights, int64_t idx)
{
    int32_t const cg = geo.channelsPerGroup;
    int32_t const kernelPoints = geo.kernelPoints;
    int32_t const cig = int32_t(idx % cg);
    int64_t const o = idx / cg;
    T const* source = weight + idx * kernelPoints;
    T* target = weights + o * kernelPoints * cg + cig;
    for (int32_t kp = 0; kp < kernelPoints; ++kp)
        target[int64_t(kp) * cg] = source[kp];
}

// weights[g][kp][cig][oig] = weight[g * oC/g + oig][cig][kp] for element idx of them, in that order: the staged
// product's A as NN (GemmProduct), a group's output channels contiguous. One thread per element: the writes are
// coalesced, the reads (all of the weights, small) come through the cache.
template <typename T>
DCN_HD void weightElementOutputMajor(DeformConvGeometry const& geo, T const* weight, T* weights, int64_t idx)
{
    int32_t const ocg = geo.outChannelsPerGroup;
    int32_t const cg = geo.channelsPerGroup;
    int32_t const oig = int32_t(idx % ocg);
    int64_t rest = idx / ocg;
    int32_t const cig = int32_t(rest % cg);
    rest /= cg;
    int32_t const kp = int32_t(rest % geo.kernelPoints);
    int64_t const g = rest / geo.kernelPoints;
    weights[idx] = weight[((g * ocg + oig) * cg + cig) * geo.kernelPoints + kp];
}

// The bits of one element, widened to 32 (elements of 2 or 4 bytes).
template <typename T>
DCN_HD uint32_t elementBits(T value)
{
    if constexpr (sizeof(T) == 2)
    {
        uint16_t bits;
        std::memcpy(&bits, &value, 2);
        return bits;
    }
    else
    {
        uint32_t bits;
        std::memcpy(&bits, &value, 4);
        return bits;
    }
}

// out[0..Vector) = values as one store of sizeof(T)*Vector bytes (out is aligned to that), or stores of 16 bytes
// past 16 (the channels-last direct kernel's wide items, up to 64 bytes; out 16-byte aligned). Assigning a struct
// of half elements instead compiled to one 2-byte store per element (PTX st.global.u16); packing the bits into
// 32-bit words first gives a single vector store.
template <typename T, int Vector>
DCN_HD void storeVector(T* out, T const (&values)[Vector])
{
    constexpr int kBytes = int(sizeof(T)) * Vector;
    if constexpr (kBytes < 4 || sizeof(T) > 4)
    {
DCN_UNROLL
        for (int v = 0; v < Vector; ++v)
            out[v] = values[v];
    }
    else
    {
        constexpr int kWords = kBytes / 4;
        constexpr int kPerWord = 4 / int(sizeof(T));
        uint32_t words[kWords];
DCN_UNROLL
        for (int w = 0; w < kWords; ++w)
        {
            words[w] = 0;
DCN_UNROLL
            for (int e = 0; e < kPerWord; ++e)
                words[w] |= elementBits(values[w * kPerWord + e]) << (16 * e);
        }
#if defined(__CUDA_ARCH__) // the store intrinsics keep the vector (a plain uint4 assignment was split too)
        static_assert(kWords <= 16 && (kWords < 4 || kWords % 4 == 0), "up to 64 bytes a vector, in 16-byte pieces");
        if constexpr (kWords >= 4)
        {
DCN_UNROLL
            for (int piece = 0; piece < kWords / 4; ++piece)
                __stcg(reinterpret_cast<uint4*>(out) + piece,
                    make_uint4(words[4 * piece], words[4 * piece + 1], words[4 * piece + 2], words[4 * piece + 3]));
        }
        else if constexpr (kWords == 2)
            __stcg(reinterpret_cast<uint2*>(out), make_uint2(words[0], words[1]));
        else
            __stcg(reinterpret_cast<unsigned int*>(out), words[0]);
#else // the host build checks the alignment the GPU's vector store relies on (the offsets are the same)
        if (reinterpret_cast<uintptr_t>(out) % (kBytes < 16 ? kBytes : 16) != 0)
            throw std::logic_error("misaligned column store: offset not a multiple of the vector width");
        std::memcpy(out, words, kBytes);
#endif
    }
}

// Number of sampling threads of a chunk: images * pixels * kernel points * C / vector.
inline int64_t columnThreads(DeformConvGeometry const& geo, int32_t images, int32_t pixels, int32_t vector)
{
    return int64_t(images) * pixels * geo.kernelPoints * (geo.d.in_channels / vector);
}

// Whether a chunk's thread indices, and its output pixel numbers, fit 32-bit unsigned arithmetic, with room for
// the grid-stride step past the end (the launch's stride is below total + one block, so idx + stride stays below
// 2 * (2^30 + 256) < 2^32). True under the default column budget unless one pixel's column (C * kH * kW) exceeds
// 2^22 elements or oH * oW exceeds 2^31. Why bother: the index decomposition is four divisions per thread, and
// 64-bit ones cost several times as many instructions on the GPU.
inline bool columnIndexFits32(DeformConvGeometry const& geo, int64_t total)
{
    return total <= (int64_t(1) << 30) && int64_t(geo.outH) * geo.outW <= (int64_t(1) << 31);
}

// Element v of a vector of channels as the samplers hold it (an array v); the implicit-GEMM kernel's packs, raw
// words, overload this (deformConvImplicit.h; found by argument-dependent lookup).
template <typename Pack>
DCN_HD auto vectorElement(Pack const& pack, int v) -> decltype(pack.v[v])
{
    return pack.v[v];
}

// acc[0..Vector) = the bilinear blend of Vector channels of element type T from their four gathered neighbours
// (packs[t]), in the accumulation type: neighbour t counts where bit t of `valid` is set; an outside one is
// skipped, not multiplied by a zero weight (an infinity in what was read in its place would make NaN). The valid
// neighbours are added in order from 0, as sampleTaps adds them.
// Selected: an outside neighbour is skipped by a select of the sum instead of a branch, with the same values bit for
// bit (its sum is computed from what was read in its place and dropped). For the channels-last direct kernel, whose
// gatherNeighbours loads are meant to be in flight together: with branches the front end moved neighbour 1's
// 16-byte load into its branch, issued only after neighbour 0's blend had waited for its load (SASS on sm_90, CUDA
// 13.0, __half and __nv_bfloat16 with Vector 8); with selects the PTX has the four loads together (ptxas may still
// split them in two to save registers). The matrix paths keep the branches: in the implicit-GEMM kernel the selects
// cost registers (spills in one instance).
template <typename T, int Vector, bool Selected = false, typename Acc, typename Pack>
DCN_HD void blendInAcc(Pack const (&packs)[4], Acc const (&weight)[4], uint32_t valid, Acc (&acc)[Vector])
{
DCN_UNROLL
    for (int v = 0; v < Vector; ++v)
        acc[v] = Acc(0);
DCN_UNROLL
    for (int t = 0; t < 4; ++t)
    {
        bool const inside = (valid >> t) & 1u;
        if constexpr (!Selected)
        {
            if (!inside)
                continue;
        }
DCN_UNROLL
        for (int v = 0; v < Vector; ++v)
        {
            Acc const sum = acc[v] + weight[t] * ElementTraits<T>::toAcc(vectorElement(packs[t], v));
            if constexpr (Selected)
                acc[v] = inside ? sum : acc[v];
            else
                acc[v] = sum;
        }
    }
}

// result[0..Vector) = blendInAcc's blend rounded to T. Both matrix paths' samplers blend here.
template <typename T, int Vector, typename Acc, typename Pack>
DCN_HD void blendVector(Pack const (&packs)[4], Acc const (&weight)[4], uint32_t valid, T (&result)[Vector])
{
    Acc acc[Vector];
    blendInAcc<T, Vector>(packs, weight, valid, acc);
DCN_UNROLL
    for (int v = 0; v < Vector; ++v)
        result[v] = ElementTraits<T>::fromAcc(acc[v]);
}

// Vector consecutive channels, as one load of sizeof(T) * Vector bytes: what both samplers gather per neighbour. Past
// 16 bytes (the channels-last direct kernel's wide items, up to 64), 16-byte aligned: loaded as 16-byte vectors, the
// widest load of the targets built.
template <typename T, int Vector>
struct alignas(sizeof(T) * Vector < 16 ? sizeof(T) * Vector : 16) ChannelPack
{
    T v[Vector];
};

// packs[t] = the Vector consecutive channels of neighbour t of a sample, by taps, at `image` (a channels-last image
// advanced to the first channel): element taps.index[t] * scale (scale: the channels per pixel). All four are
// loaded before any is used, so the four loads are in flight together: an invalid one has index 0 (the image's
// first pixel, always readable) and its value is discarded by the blend, not multiplied by a zero weight (an
// infinity there would make NaN). Offset: the type the element offsets are computed in, int64_t, or uint32_t where
// the caller knows an image's elements fit (fewer address instructions a gather).
template <typename T, int Vector, typename Acc, typename Offset = int64_t>
DCN_HD void gatherNeighbours(T const* image, BilinearTaps<Acc> const& taps, int32_t scale,
    ChannelPack<T, Vector> (&packs)[4])
{
DCN_UNROLL
    for (int t = 0; t < 4; ++t)
        packs[t] = *reinterpret_cast<ChannelPack<T, Vector> const*>(image + Offset(taps.index[t]) * Offset(scale));
}

// out[0..Vector) = the bilinear sample, by taps, of the Vector consecutive channels at `image` (gatherNeighbours),
// rounded to T and stored as one vector. The per-thread sampler's; the tiled one is tileItem.
template <typename T, int Vector, typename Acc>
DCN_HD void sampleVector(T const* image, BilinearTaps<Acc> const& taps, int32_t scale, T* out)
{
    ChannelPack<T, Vector> packs[4];
    gatherNeighbours<T, Vector>(image, taps, scale, packs);
    T result[Vector];
    blendVector<T, Vector>(packs, taps.weight, taps.valid, result);
    storeVector<T, Vector>(out, result);
}

// The per-thread sampler (GemmSampler): thread idx of a chunk (images n0.., pixels p0..p0+pixels) samples `Vector`
// channels into the columns. nhwc holds the chunk's images (image n0 first). Index: uint32_t where
// columnIndexFits32, else int64_t.
template <typename T, int Vector, typename Index>
DCN_HD void columnVector(DeformConvGeometry const& geo, T const* nhwc, T const* offset, T const* mask, T* columns,
    int32_t n0, int64_t p0, int32_t pixels, Index idx)
{
    using Acc = typename ElementTraits<T>::Acc;
    dcn_deform_conv_desc const& d = geo.d;
    int32_t const channels = d.in_channels;
    int32_t const kernelPoints = geo.kernelPoints;
    Index const vectors = Index(channels / Vector);
    int32_t const c = int32_t(idx % vectors) * Vector;
    Index rest = idx / vectors;
    int32_t const kp = int32_t(rest % Index(kernelPoints));
    rest /= Index(kernelPoints);
    int32_t const p = int32_t(rest % Index(pixels));
    int32_t const img = int32_t(rest / Index(pixels));
    Index const pixel = Index(p0) + Index(p); // below outH * outW
    int32_t const y = int32_t(pixel / Index(geo.outW));
    int32_t const x = int32_t(pixel - Index(y) * Index(geo.outW));
    int32_t const og = c / geo.channelsPerOffsetGroup;
    BilinearTaps<Acc> const taps = kernelPointTaps<Acc>(geo, offset, mask, n0 + img, og, kp, y, x);
    int32_t const g = c / geo.channelsPerGroup;
    int32_t const cig = c - g * geo.channelsPerGroup;
    T* out = columns + (int64_t(img) * pixels + p) * channels * kernelPoints
        + (int64_t(g) * kernelPoints + kp) * geo.channelsPerGroup + cig;
    sampleVector<T, Vector>(nhwc + img * inputImageElements(geo) + c, taps, channels, out);
}

// The tiled sampler (GemmSampler), in two steps per tile; the CUDA kernel and the host build both call these.
// A tile is tilePixels consecutive pixels of the chunk, counted across its images (flat = img * pixels + p), from
// flat pixel `first`; a column row holds C * kH*kW / Vector vectors ("row vectors").
//   1. the tables: tileRowVector for every row vector, tilePixel for every tile pixel, then (after a barrier)
//      tileEntryTaps for every (point, tile pixel) entry, entry = point * tilePixels + tile pixel;
//   2. then, for every item (row, r) of the tile, tileItem samples row vector r of tile pixel `row`: the tile's
//      columns are one contiguous block, and the item's vector is at (row * rowVectors + r) * Vector in it.

// Row vector r: (group, kernel point, channel vector) in column order.
DCN_HD TileRowVector tileRowVector(DeformConvGeometry const& geo, int32_t vector, int32_t r)
{
    int32_t const vectorsPerGroup = geo.channelsPerGroup / vector;
    int32_t const perGroup = geo.kernelPoints * vectorsPerGroup;
    int32_t const g = r / perGroup;
    int32_t const rest = r - g * perGroup;
    int32_t const kp = rest / vectorsPerGroup;
    int32_t const c = g * geo.channelsPerGroup + (rest - kp * vectorsPerGroup) * vector;
    return TileRowVector{c, (c / geo.channelsPerOffsetGroup) * geo.kernelPoints + kp};
}

// Where the image (of the chunk's channels-last input) of flat pixel `flat` starts, in elements; 0 past the chunk's
// end (no item reads it).
DCN_HD int64_t tileRowImage(DeformConvGeometry const& geo, int32_t flat, int32_t pixels, int32_t chunkPixels)
{
    return flat < chunkPixels ? flat / pixels * inputImageElements(geo) : 0;
}

// Where the chunk's flat pixel `flat` is (TilePixel). The tiled sampler computes it once per tile pixel, so that
// the taps of its points need no division to find it.
DCN_HD TilePixel tilePixel(DeformConvGeometry const& geo, int64_t p0, int32_t pixels, int32_t chunkPixels, int32_t flat)
{
    if (flat >= chunkPixels)
        return TilePixel{-1, 0, 0, 0};
    int32_t const img = flat / pixels;
    int64_t const pixel = p0 + (flat - img * pixels);
    int32_t const y = int32_t(pixel / geo.outW);
    return TilePixel{img, y, int32_t(pixel - int64_t(y) * geo.outW), int32_t(img * inputImageElements(geo))};
}

// The taps of point (offset group * kernel points + kernel point) of the pixel at `place`, their indices scaled to
// element offsets within its channels-last image (in 32 bits: the callers refuse larger images); none for a pixel
// past the chunk's end.
template <typename Acc, typename T>
DCN_HD BilinearTaps<Acc> placeTaps(DeformConvGeometry const& geo, T const* offset, T const* mask, int32_t n0,
    TilePixel const& place, int32_t point)
{
    if (place.image < 0)
        return noTaps<Acc>();
    int32_t const og = point / geo.kernelPoints;
    BilinearTaps<Acc> taps = kernelPointTaps<Acc>(geo, offset, mask, n0 + place.image, og,
        point - og * geo.kernelPoints, place.y, place.x);
    for (int t = 0; t < 4; ++t)
        taps.index[t] *= geo.d.in_channels;
    return taps;
}

// The index of an outside neighbour where the zero vector is reached by a pointer of its own (GemmPlan::channelsLast:
// the input is not in the workspace, so no 32-bit offset from it is known to reach the zero vector). An inside
// index is an element offset within one image, never negative.
constexpr int32_t kTapOutside = INT32_MIN;

// The taps of point `point` of a tile pixel (placeTaps), as element offsets from the pixel's image, each outside
// neighbour redirected to the zero vector, zeroOffset elements from the chunk's first image, or marked kTapOutside
// where zeroApart (the zero vector apart from the input: tileItem's ZeroApart).
template <typename Acc, typename T>
DCN_HD TileTaps<Acc> tileEntryTaps(DeformConvGeometry const& geo, T const* offset, T const* mask, int32_t n0,
    TilePixel const& place, int32_t point, int32_t zeroOffset, bool zeroApart = false)
{
    BilinearTaps<Acc> const taps = placeTaps<Acc>(geo, offset, mask, n0, place, point);
    TileTaps<Acc> out;
    for (int t = 0; t < 4; ++t)
    {
        bool const inside = (taps.valid >> t) & 1u;
        out.index[t] = inside ? taps.index[t] : (zeroApart ? kTapOutside : zeroOffset - place.start);
        out.weight[t] = inside ? taps.weight[t] : Acc(0);
    }
    return out;
}

// Whether a tap set has a neighbour marked outside (kTapOutside; only where the zero vector is apart): a tile with
// none reads no zero vector, and needs no select.
template <typename Acc>
DCN_HD bool tileHasOutsideTap(TileTaps<Acc> const& taps)
{
    return taps.index[0] == kTapOutside || taps.index[1] == kTapOutside || taps.index[2] == kTapOutside
        || taps.index[3] == kTapOutside;
}

// Item (row, r) of the tile into out, its column vector (at (row * rowVectors + r) * Vector in the tile's columns);
// pixelTable[row] is where tile pixel row is (tilePixel). All four neighbours are loaded before any is
// used and blended unconditionally (an outside one is the zero vector), in blendVector's order, so the result is
// bit for bit the per-thread sampler's (which skips an outside neighbour: adding 0 * 0 to a sum that started at +0
// changes nothing). Offsets are summed in 32 bits (planTile), so each load address is one multiply-add. ZeroApart
// (GemmPlan::channelsLast): an outside neighbour (kTapOutside) reads `zero`, the zero vector, by its own pointer
// instead, a select per neighbour; otherwise `zero` is unused.
template <typename T, int Vector, bool ZeroApart = false, typename Acc>
DCN_HD void tileItem(T const* nhwc, T const* zero, TileTaps<Acc> const* taps, TileRowVector const* rowVectorTable,
    TilePixel const* pixelTable, int32_t tilePixels, int32_t row, int32_t r, T* out)
{
    using Pack = ChannelPack<T, Vector>;
    TileRowVector const rv = rowVectorTable[r];
    TileTaps<Acc> const& tap = taps[rv.point * tilePixels + row];
    uint32_t const start = uint32_t(pixelTable[row].start + rv.channel);
    Pack packs[4];
DCN_UNROLL
    for (int t = 0; t < 4; ++t)
    {
        T const* source = ZeroApart && tap.index[t] == kTapOutside ? zero + rv.channel
                                                                    : nhwc + (start + uint32_t(tap.index[t]));
        packs[t] = *reinterpret_cast<Pack const*>(source);
    }
    T result[Vector];
    blendVector<T, Vector>(packs, tap.weight, 0xFu, result);
    storeVector<T, Vector>(out, result);
}

// A value of the staging scratch in the accumulation type. The scratch holds accumulators (Staged = Acc), or, for a
// half type without a bias, the product already rounded to T by cuBLAS (Staged = T: half the bytes to write and
// read, and still one rounding, since no bias is added after it).
template <typename T, typename Staged>
DCN_HD typename ElementTraits<T>::Acc stagedAcc(Staged value)
{
    if constexpr (std::is_same<Staged, typename ElementTraits<T>::Acc>::value)
        return value;
    else
        return ElementTraits<T>::toAcc(value);
}

// Whether the staging scratch holds T (a half type without a bias, or whose bias the product adds: biasInProduct;
// stagedAcc) rather than accumulators. Not when the product is split (splitK slices, GemmPlan::splitK): the slices
// are partial sums, added in the accumulation type and rounded once by the transpose.
template <typename T>
DCN_HD bool stagesNarrow(T const* bias, int32_t splitK, bool biasInProduct = false)
{
    return (bias == nullptr || biasInProduct) && splitK == 1
        && !std::is_same<T, typename ElementTraits<T>::Acc>::value;
}

// The staged value at `at` summed over the split-K slices (GemmPlan::splitK) `sliceStride` elements apart, in slice
// order, in the accumulation type: the one order the CUDA transpose and the host build both follow.
template <typename T, typename Staged>
DCN_HD typename ElementTraits<T>::Acc stagedSum(Staged const* at, int32_t slices, int64_t sliceStride)
{
    typename ElementTraits<T>::Acc sum = stagedAcc<T>(at[0]);
    for (int32_t s = 1; s < slices; ++s)
        sum += stagedAcc<T>(at[s * sliceStride]);
    return sum;
}

// rows[idx] = the split-K slices' sum at idx (stagedSum) + bias[idx % oC], rounded to T, for element idx of a
// chunk of a channels-last output (images * pixels rows of oC, in the staging scratch's order: no transpose). As
// stagedOutputElement, but for the place it writes.
template <typename T, typename Staged>
DCN_HD void channelsLastSumElement(DeformConvGeometry const& geo, Staged const* staging, T const* bias, T* rows,
    int64_t idx, int32_t slices, int64_t sliceStride)
{
    using Acc = typename ElementTraits<T>::Acc;
    int32_t const o = int32_t(idx % geo.d.out_channels);
    Acc const value = stagedSum<T>(staging + idx, slices, sliceStride)
        + (bias ? ElementTraits<T>::toAcc(bias[o]) : Acc(-0.0));
    rows[idx] = ElementTraits<T>::fromAcc(value);
}

// output[n0 + img][o][p0 + p] = staging[img][p][o] (+ bias[o]), rounded to T, for element idx of a chunk's
// images * oC * pixels in output order; with split-K, the sum of the slices' staging[s][img][p][o] (stagedSum)
// before the bias. The CUDA path does the same through shared-memory tiles.
template <typename T, typename Staged>
DCN_HD void stagedOutputElement(DeformConvGeometry const& geo, Staged const* staging, T const* bias, T* output,
    int32_t n0, int64_t p0, int32_t pixels, int64_t idx, int32_t slices = 1, int64_t sliceStride = 0)
{
    int32_t const oc = geo.d.out_channels;
    int32_t const p = int32_t(idx % pixels);
    int64_t const row = idx / pixels; // img * oC + o
    int32_t const o = int32_t(row % oc);
    int64_t const img = row / oc;
    // Without a bias, -0 is added: x + (-0) is x for every x, where + 0 would turn a staged -0 into +0.
    using Acc = typename ElementTraits<T>::Acc;
    Acc const value = stagedSum<T>(staging + (img * pixels + p) * oc + o, slices, sliceStride)
        + (bias ? ElementTraits<T>::toAcc(bias[o]) : Acc(-0.0));
    output[(int64_t(n0) * oc + row) * int64_t(geo.outH) * geo.outW + p0 + p] = ElementTraits<T>::fromAcc(value);
}

} // namespace dcn

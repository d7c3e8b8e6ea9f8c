// The GEMM path's kernels (deformConvGemm.cu launches them; plan and layouts: deformConvGemmPlan.h, per-thread work:
// deformConvColumns.h): the two samplers, the bias fills of the direct and the channels-last output, and the staged
// output's transpose.
// Also run on the CPU by plugins/tests/gemmKernelsEmulation.cpp (each block's threads as threads), so CI checks
// these sources against the host functions they are built from. Compiled by nvcc it includes what it uses from
// CUDA; the emulation provides, before including it, threadIdx / blockIdx / blockDim / gridDim, __syncthreads,
// __shared__ as block-shared static storage, the CUDA function qualifiers and dcn::dynamicShared().
#pragma once

#include "dcnGridStride.h"
#include "deformConvColumns.h"
#include "deformConvRelayout.cuh"

#if defined(__CUDACC__)
#include "dcnCudaDtype.cuh"
#include "dcnDynamicShared.cuh"
#endif

namespace dcn
{
namespace
{

template <typename T, int Vector, typename Index>
__global__ void __launch_bounds__(kGridStrideThreads) columnsKernel(DeformConvGeometry const geo, T const* __restrict__ nhwc,
    T const* __restrict__ offset, T const* __restrict__ mask, T* __restrict__ columns, int32_t const n0,
    int64_t const p0, int32_t const pixels, Index const total)
{
    for (Index idx = Index(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += Index(gridDim.x) * blockDim.x)
        columnVector<T, Vector>(geo, nhwc, offset, mask, columns, n0, p0, pixels, idx);
}

// (outer, inner) of the flat index outer * width + inner, for a thread that starts at `start` and steps `step` at a
// time: each step adds and carries instead of dividing.
struct SteppedIndex
{
    int32_t outer, inner;
    int32_t const width, stepOuter, stepInner;

    __device__ SteppedIndex(int32_t start, int32_t step, int32_t width_)
        : outer(start / width_), inner(start - outer * width_), width(width_), stepOuter(step / width_),
          stepInner(step - stepOuter * width_)
    {
    }

    __device__ void advance()
    {
        outer += stepOuter;
        inner += stepInner;
        if (inner >= width)
        {
            inner -= width;
            ++outer;
        }
    }
};

// The tiled sampler (deformConvColumns.h): block b samples the tile of chunk pixels b * tilePixels.., its tables
// in dynamic shared memory (plan.tileShared bytes: taps, pixel places, row vectors copied from rowTable, which
// weightsKernel wrote). nhwc is the chunk's first channels-last image, and the zero vector is zeroOffset elements
// from it (tileZeroOffset), or, ZeroApart (GemmPlan::channelsLast: nhwc is the input itself), at `zero`: then only a
// tile with an outside neighbour (the block finds out at the barrier after the taps, __syncthreads_or) runs the
// items that select the zero vector's pointer; the others (the interior tiles) run the plain items. Each thread
// steps through the tile's entries and items blockDim.x apart (SteppedIndex).
template <typename T, int Vector, bool ZeroApart = false>
__global__ void __launch_bounds__(kGridStrideThreads) tiledColumnsKernel(DeformConvGeometry const geo,
    T const* __restrict__ nhwc, T const* __restrict__ offset, T const* __restrict__ mask,
    TileRowVector const* __restrict__ rowTable, T* __restrict__ columns, int32_t const n0, int64_t const p0,
    int32_t const pixels, int32_t const chunkPixels, int32_t const tilePixels, int32_t const zeroOffset,
    T const* __restrict__ zero)
{
    using Acc = typename ElementTraits<T>::Acc;
    unsigned char* tileTables = dynamicShared();
    int32_t const points = geo.kernelPoints * geo.d.offset_group;
    int32_t const entries = points * tilePixels;
    int32_t const rowVectors = columnRowVectors(geo, Vector);
    auto* taps = reinterpret_cast<TileTaps<Acc>*>(tileTables);
    auto* pixelTable = reinterpret_cast<TilePixel*>(taps + entries);
    auto* rowVectorTable = reinterpret_cast<TileRowVector*>(pixelTable + tilePixels);
    int32_t const first = int32_t(blockIdx.x) * tilePixels;
    for (int32_t row = threadIdx.x; row < tilePixels; row += blockDim.x)
        pixelTable[row] = tilePixel(geo, p0, pixels, chunkPixels, first + row);
    for (int32_t r = threadIdx.x; r < rowVectors; r += blockDim.x)
        rowVectorTable[r] = rowTable[r];
    __syncthreads();
    // Entry (point, row) = point * tilePixels + row.
    bool sawOutside = false;
    for (SteppedIndex e(int32_t(threadIdx.x), int32_t(blockDim.x), tilePixels); e.outer < points; e.advance())
    {
        TileTaps<Acc> const entry
            = tileEntryTaps<Acc>(geo, offset, mask, n0, pixelTable[e.inner], e.outer, zeroOffset, ZeroApart);
        sawOutside = sawOutside || tileHasOutsideTap(entry);
        taps[e.outer * tilePixels + e.inner] = entry;
    }
    bool selectZero = false;
    if constexpr (ZeroApart)
        selectZero = __syncthreads_or(sawOutside) != 0; // the block's one choice: no divergence between the loops
    else
        __syncthreads();
    int32_t const rows = min(tilePixels, chunkPixels - first);
    // Item (row, r) = row * rowVectors + r; items are consecutive vectors of the tile's columns. `select`: whether
    // the items select the zero vector's pointer (tileItem's ZeroApart).
    auto sampleItems = [&](auto select) {
        T* out = columns + (int64_t(first) * geo.d.in_channels * geo.kernelPoints + int64_t(threadIdx.x) * Vector);
        for (SteppedIndex item(int32_t(threadIdx.x), int32_t(blockDim.x), rowVectors); item.outer < rows;
             item.advance())
        {
            tileItem<T, Vector, decltype(select)::value>(nhwc, zero, taps, rowVectorTable, pixelTable, tilePixels,
                item.outer, item.inner, out);
            out += blockDim.x * Vector;
        }
    };
    if (selectZero) // never without ZeroApart
        sampleItems(std::integral_constant<bool, ZeroApart>{});
    else
        sampleItems(std::false_type{});
}

// output[n0 + img][o][p0 + p] = bias[o] for the chunk (the product then adds to it): a block per output row
// (img * oC + o; blocks gridDim.x apart), its threads writing 16-byte vectors along the row, single elements before
// the row's first 16-byte boundary and after its last vector. (One grid-stride loop with a 64-bit division per
// element took 62 us at res4 batch 8 on an H200; a thread per element in blocks of 512 bytes, 41 us on an H100.)
// Elements of T in one 16-byte store (1 for types of 16 bytes or more): the bias fills' vector.
template <typename T>
constexpr int kStoreVector = sizeof(T) < 16 ? int(16 / sizeof(T)) : 1;

template <typename T>
__global__ void __launch_bounds__(kGridStrideThreads) fillBiasKernel(T* __restrict__ output, T const* __restrict__ bias,
    int32_t const outChannels, int64_t const plane, int32_t const n0, int64_t const rows, int64_t const p0,
    int32_t const pixels)
{
    constexpr int kVector = kStoreVector<T>;
    int32_t const threads = int32_t(blockDim.x);
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x)
    {
        T values[kVector];
DCN_UNROLL
        for (int v = 0; v < kVector; ++v)
            values[v] = bias[row % outChannels];
        T* target = output + (int64_t(n0) * outChannels + row) * plane + p0;
        int32_t const misalignment = int32_t(reinterpret_cast<uintptr_t>(target) % 16 / sizeof(T));
        int32_t const head = std::min(pixels, misalignment == 0 ? 0 : kVector - misalignment);
        int32_t const vectors = (pixels - head) / kVector;
        for (int32_t p = int32_t(threadIdx.x); p < head; p += threads)
            target[p] = values[0];
        for (int32_t v = int32_t(threadIdx.x); v < vectors; v += threads)
            storeVector<T, kVector>(target + head + v * kVector, values);
        for (int32_t p = head + vectors * kVector + int32_t(threadIdx.x); p < pixels; p += threads)
            target[p] = values[0];
    }
}

// How fillBiasRowsKernel shares out rows of oC among a block's `threads`: `width` items a row (16-byte vectors
// where `vectors`, else elements), `rowsPerStep` rows a step (several where a row has fewer items than the block
// has threads, one item a thread; else one, looped over). The launch sizes its grid from the same.
struct BiasRowsShape
{
    int32_t width, rowsPerStep;
};

template <typename T>
DCN_HD BiasRowsShape biasRowsShape(int32_t outChannels, bool vectors, int32_t threads)
{
    int32_t const width = vectors ? outChannels / kStoreVector<T> : outChannels;
    return BiasRowsShape{width, width < threads ? threads / width : 1};
}

// rows[row][o] = bias[o] for `count` rows of oC (a chunk of a channels-last output, GemmPlan::channelsLast: the
// product then adds to it). Threads of a block share out the rows of a step (biasRowsShape), each row's items
// (16-byte vectors where `vectors`: oC a whole number of them and rows 16-byte aligned; else elements) to
// consecutive threads, so that a block's stores of a step are one contiguous run.
template <typename T>
__global__ void __launch_bounds__(kGridStrideThreads) fillBiasRowsKernel(T* __restrict__ rows,
    T const* __restrict__ bias, int32_t const outChannels, int64_t const count, bool const vectors)
{
    constexpr int kVector = kStoreVector<T>;
    int32_t const threads = int32_t(blockDim.x);
    BiasRowsShape const shape = biasRowsShape<T>(outChannels, vectors, threads);
    int32_t const width = shape.width, rowsPerStep = shape.rowsPerStep;
    bool const several = width < threads;
    int32_t const rowInStep = several ? int32_t(threadIdx.x) / width : 0;
    int32_t const firstItem = several ? int32_t(threadIdx.x) - rowInStep * width : int32_t(threadIdx.x);
    int32_t const itemStep = several ? width : threads;
    if (rowInStep >= rowsPerStep)
        return;
    for (int64_t row = int64_t(blockIdx.x) * rowsPerStep + rowInStep; row < count;
         row += int64_t(gridDim.x) * rowsPerStep)
    {
        T* target = rows + row * outChannels;
        for (int32_t item = firstItem; item < width; item += itemStep)
        {
            if (vectors)
            {
                T values[kVector];
DCN_UNROLL
                for (int v = 0; v < kVector; ++v)
                    values[v] = bias[item * kVector + v];
                storeVector<T, kVector>(target + item * kVector, values);
            }
            else
                target[item] = bias[item];
        }
    }
}

// rows[idx] for the count elements of a chunk of a channels-last output: the split-K slices summed, with the bias
// (channelsLastSumElement), element by element along the rows (reads and writes coalesced, no transpose).
template <typename T>
__global__ void __launch_bounds__(kGridStrideThreads) channelsLastSumKernel(DeformConvGeometry const geo,
    typename ElementTraits<T>::Acc const* __restrict__ staging, T const* __restrict__ bias, T* __restrict__ rows,
    int64_t const count, int32_t const slices, int64_t const sliceStride)
{
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < count;
         idx += int64_t(gridDim.x) * blockDim.x)
        channelsLastSumElement<T>(geo, staging, bias, rows, idx, slices, sliceStride);
}

// output[n0 + img][o][p0 + p] = staging[img][p][o] (+ bias[o]) for the chunk (stagedOutputElement's mapping, its
// Staged types), through 64x64 shared tiles of accumulators: reads run along o, writes along p, both coalesced.
// Blocks loop over channel tiles. Each thread loads its 16 values before using any (as the channels-last transpose
// does) and its two channels' bias once per channel tile. With split-K (slices > 1) it adds the other slices'
// values, sliceStride elements apart, in slice order (stagedSum's order), slice after slice so that each slice's
// 16 loads are in flight together.
template <typename T, typename Staged>
__global__ void __launch_bounds__(kTileThreads) stagedOutputKernel(DeformConvGeometry const geo,
    Staged const* __restrict__ staging, T const* __restrict__ bias, T* __restrict__ output, int32_t const n0,
    int64_t const p0, int32_t const pixels, int32_t const slices, int64_t const sliceStride)
{
    using Acc = typename ElementTraits<T>::Acc;
    constexpr int kColumnsPerThread = kTile / kTileThreadsX;
    __shared__ Acc tile[kTile][kTile + 1];
    int32_t const oc = geo.d.out_channels;
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    int32_t const img = blockIdx.z;
    int32_t const pix0 = int32_t(blockIdx.x) * kTile;
    Staged const* source = staging + (int64_t(img) * pixels + pix0) * oc;
    T* target = output + (int64_t(n0) + img) * oc * plane + p0 + pix0;
    for (int32_t o0 = blockIdx.y * kTile; o0 < oc; o0 += gridDim.y * kTile)
    {
        Acc values[kTilePlaces];
        forTilePlaces([&](int k, int r, int x) { // r: pixel within the tile; x: channel
            values[k] = pix0 + r < pixels && o0 + x < oc ? stagedAcc<T>(source[int64_t(r) * oc + o0 + x]) : Acc(0);
        });
        for (int32_t s = 1; s < slices; ++s)
        {
            Staged const* slice = source + s * sliceStride;
            forTilePlaces([&](int k, int r, int x) {
                if (pix0 + r < pixels && o0 + x < oc)
                    values[k] += stagedAcc<T>(slice[int64_t(r) * oc + o0 + x]);
            });
        }
        Acc channelBias[kColumnsPerThread];
DCN_UNROLL
        for (int xStep = 0; xStep < kColumnsPerThread; ++xStep)
        {
            int32_t const o = o0 + int32_t(threadIdx.x) + kTileThreadsX * xStep;
            channelBias[xStep] = bias && o < oc ? ElementTraits<T>::toAcc(bias[o]) : Acc(-0.0); // stagedOutputElement
        }
        forTilePlaces([&](int k, int r, int x) { tile[r][x] = values[k] + channelBias[k % kColumnsPerThread]; });
        __syncthreads();
        forTilePlaces([&](int, int r, int x) { // r: channel within the tile; x: pixel
            if (pix0 + x < pixels && o0 + r < oc)
                target[int64_t(o0 + r) * plane + x] = ElementTraits<T>::fromAcc(tile[x][r]);
        });
        __syncthreads(); // the tile is refilled by the next channel tile
    }
}

} // namespace
} // namespace dcn

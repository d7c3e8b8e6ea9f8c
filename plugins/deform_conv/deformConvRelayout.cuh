// The re-layouts both matrix-product paths start with: the input to channels-last, so a bilinear tap's channels
// are contiguous, and the weights with the kernel point outer (weights[o][kp][c], weightRow in deformConvColumns.h),
// so a kernel point's channels are contiguous. Used by the GEMM path (deformConvGemm.cu) and the implicit-GEMM
// kernel (deformConvImplicit.cu); the kernels also run under the CPU emulation of plugins/tests, the launchers only
// with nvcc.
#pragma once

#include "dcnGridStride.h"
#include "deformConvColumns.h"

#if defined(__CUDACC__)
#include "dcnCudaStatus.h"

#include <cuda_runtime.h>
#endif

#include <algorithm>

namespace dcn
{

// The transposes below move 64x64 tiles through shared memory with 32x8 threads, 16 places per thread. Each thread
// first loads its 16 values into registers, all in flight together, and only then stores them: written as one loop
// of load-and-store, the compiler waited for each load before the next pair (SASS on sm_90, 2026-11-26), and with
// 32x32 tiles and 4 loads each the 2-byte transposes ran at about 1 TB/s on an H200: too few bytes in flight. Rows
// are padded so that reading a tile column hits 32 different banks.
constexpr int kTile = 64;
constexpr int kTileThreadsX = 32, kTileThreadsY = 8; // the block of every tiled transpose
constexpr int kTileThreads = kTileThreadsX * kTileThreadsY;
constexpr int kTilePlaces = kTile * kTile / kTileThreads; // per thread
template <typename T>
constexpr int kTilePad = sizeof(T) == 2 ? 2 : 1;

// body(k, r, x) for the kTilePlaces (row, column) places of a 64x64 tile that this thread of the 32x8 block moves,
// k = 0.. numbering them.
template <typename Body>
__device__ __forceinline__ void forTilePlaces(Body&& body)
{
DCN_UNROLL
    for (int rStep = 0; rStep < kTile / kTileThreadsY; ++rStep)
DCN_UNROLL
        for (int xStep = 0; xStep < kTile / kTileThreadsX; ++xStep)
            body(rStep * (kTile / kTileThreadsX) + xStep, int(threadIdx.y) + kTileThreadsY * rStep,
                int(threadIdx.x) + kTileThreadsX * xStep);
}

// NCHW -> NHWC for images n0..n0+gridDim.z-1. Blocks loop over channel tiles, so gridDim.y (at most 65535) need not
// cover them all. A place outside the tensor is staged as zero and never written out.
template <typename T>
__global__ void __launch_bounds__(kTileThreads) nhwcKernel(
    DeformConvGeometry const geo, T const* __restrict__ input, T* __restrict__ nhwc, int32_t const n0)
{
    __shared__ T tile[kTile][kTile + kTilePad<T>];
    int64_t const plane = int64_t(geo.d.height) * geo.d.width;
    int32_t const channels = geo.d.in_channels;
    int32_t const img = blockIdx.z;
    int64_t const pix0 = int64_t(blockIdx.x) * kTile;
    T const* source = input + int64_t(n0 + img) * channels * plane + pix0;
    T* target = nhwc + (int64_t(img) * plane + pix0) * channels;
    for (int32_t c0 = blockIdx.y * kTile; c0 < channels; c0 += gridDim.y * kTile)
    {
        T values[kTilePlaces];
        forTilePlaces([&](int k, int r, int x) { // r: channel within the tile; x: pixel
            values[k] = c0 + r < channels && pix0 + x < plane ? source[int64_t(c0 + r) * plane + x] : T();
        });
        forTilePlaces([&](int k, int r, int x) { tile[r][x] = values[k]; });
        __syncthreads();
        forTilePlaces([&](int, int r, int x) { // r: pixel within the tile; x: channel
            if (c0 + x < channels && pix0 + r < plane)
                target[int64_t(r) * channels + c0 + x] = tile[x][r];
        });
        __syncthreads(); // the tile is refilled by the next channel tile
    }
}

// The weights re-laid out (weightRow, `total` rows; or, outputMajor, weightElementOutputMajor, `total` elements) and,
// where rowTable is given, in the same launch, the GEMM path's tiled sampler's row vectors for vector width
// `vector` (tileRowVector, rowVectors of them): the table every tile copies into shared memory instead of computing
// it (three divisions per entry, a quarter of a tile's instructions at C = 512 on sm_90).
template <typename T>
__global__ void __launch_bounds__(kGridStrideThreads) weightsKernel(DeformConvGeometry const geo,
    T const* __restrict__ weight, T* __restrict__ weights, int64_t const total, bool const outputMajor,
    TileRowVector* __restrict__ rowTable, int32_t const vector, int32_t const rowVectors)
{
    int64_t const first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    int64_t const stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t idx = first; idx < total; idx += stride)
        if (outputMajor)
            weightElementOutputMajor<T>(geo, weight, weights, idx);
        else
            weightRow<T>(geo, weight, weights, idx);
    if (rowTable)
        for (int64_t r = first; r < rowVectors; r += stride)
            rowTable[r] = tileRowVector(geo, vector, int32_t(r));
}

#if defined(__CUDACC__)
// The chunk's channels-last input: nhwc[img][pix][c] = input[n0 + img][c][pix] for img < images.
template <typename T>
Status launchChannelsLast(DeformConvGeometry const& geo, T const* input, T* nhwc, int32_t n0, int32_t images,
    cudaStream_t stream)
{
    int64_t const inPlane = int64_t(geo.d.height) * geo.d.width;
    dim3 const tiles(unsigned((inPlane + kTile - 1) / kTile),
        unsigned(std::min((geo.d.in_channels + kTile - 1) / kTile, 65535)), unsigned(images));
    nhwcKernel<T><<<tiles, dim3(kTileThreadsX, kTileThreadsY), 0, stream>>>(geo, input, nhwc, n0);
    return launchStatus("the channels-last transpose kernel");
}

// weights[o][kp][c] (or, outputMajor, weights[g][kp][c][o]) from the ONNX layout weight[o][c][kp], and, where
// rowTable is given, the tiled sampler's row vectors for vector width `vector`.
template <typename T>
Status launchWeightsRelayout(DeformConvGeometry const& geo, T const* weight, T* weights, cudaStream_t stream,
    TileRowVector* rowTable = nullptr, int32_t vector = 1, bool outputMajor = false)
{
    int64_t const rows = int64_t(geo.d.out_channels) * geo.channelsPerGroup;
    int64_t const total = outputMajor ? rows * geo.kernelPoints : rows;
    int32_t const rowVectors = rowTable ? columnRowVectors(geo, vector) : 0;
    weightsKernel<T><<<gridStrideBlocks(std::max<int64_t>(total, rowVectors)), kGridStrideThreads, 0, stream>>>(geo,
        weight, weights, total, outputMajor, rowTable, vector, rowVectors);
    return launchStatus("the weight re-layout kernel");
}
#endif

} // namespace dcn

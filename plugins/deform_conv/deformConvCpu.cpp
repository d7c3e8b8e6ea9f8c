// The fast CPU forward of deformable convolution (dcn_deform_conv2d_forward_cpu), for PyTorch inference on the
// CPU. Same per-sample arithmetic as the CUDA kernels and the host reference (deformConvMath.h); organised for
// speed instead of clarity:
//
//   1. the input is copied once to channels-last (N, H*W, C), so the channels of one offset group at one pixel are
//      contiguous;
//   2. for a tile of output pixels of one row, each kernel point's four bilinear corners are computed once per
//      offset group, and the corners' channel rows are blended into a sampled column (pixel, kernel point, C),
//      a loop over contiguous channels that the compiler vectorises;
//   3. the column is contracted with the weights, repacked once per call so that the innermost loop runs over
//      contiguous output channels of a group (grouped layers) or over contiguous groups (depth-wise layers).
//
// OpenMP (when CMake finds it) splits the (image, output row) pairs between threads. The hot loops are compiled
// twice (AVX2+FMA and the x86-64 baseline) and picked at load time, so the library runs on any x86-64 CPU.
#include "dcnCpu.h"
#include "dcnDtype.h"
#include "dcnStatus.h"
#include "deformConvMath.h"
#include "deformConvShapes.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace dcn
{
namespace
{

// The largest NCHW output row (oC x oW elements: 2 MiB of float) a thread buffers before writing it out channel by
// channel (rowForwardImpl); a larger one is written tile by tile.
constexpr size_t kRowBufferElements = size_t(1) << 19;

template <typename T>
struct CpuProblem
{
    DeformConvGeometry geo;
    T const* table;   // (N, H*W, C): the input, channels-last
    T const* offset;  // as in the C ABI
    T const* mask;    // or nullptr
    T const* packed;  // repacked weights, see packWeights
    T const* bias;    // or nullptr
    T* output;        // (N, oC, oH, oW), or (N, oH, oW, oC) where channelsLastOutput
    int32_t tile;     // output pixels per tile
    int32_t outLanes; // padded output channels per group (grouped path)
    bool depthwise;   // one input channel per group
    bool channelsLastOutput = false;
};

// Depth-wise (one input channel per group, multiplier m = oC/groups): packed[j][k][g] = weight[g*m + j][0][k].
// Otherwise: packed[g][k][c'][o'] = weight[g*oCg + o'][c'][k], o' padded with zeros to outLanes.
template <typename T>
std::vector<T> packWeights(DeformConvGeometry const& geo, T const* weight, bool depthwise, int32_t outLanes)
{
    int32_t const groups = geo.d.group, kp = geo.kernelPoints, cpg = geo.channelsPerGroup;
    int32_t const ocpg = geo.outChannelsPerGroup;
    if (depthwise)
    {
        std::vector<T> packed(size_t(ocpg) * kp * groups);
        for (int32_t g = 0; g < groups; ++g)
            for (int32_t j = 0; j < ocpg; ++j)
                for (int32_t k = 0; k < kp; ++k)
                    packed[(size_t(j) * kp + k) * groups + g] = weight[int64_t(g * ocpg + j) * kp + k];
        return packed;
    }
    // Written in order (the reads stay within a group's weights): the loop order that writes with a stride of
    // outLanes took 13 % of ResNeXt c5's forward (perf, session 40).
    std::vector<T> packed(size_t(groups) * kp * cpg * outLanes);
    T* __restrict out = packed.data();
    for (int32_t g = 0; g < groups; ++g)
        for (int32_t k = 0; k < kp; ++k)
            for (int32_t c = 0; c < cpg; ++c)
            {
                T const* __restrict from = weight + (int64_t(g) * ocpg * cpg + c) * kp + k;
                for (int32_t o = 0; o < ocpg; ++o)
                    out[o] = from[int64_t(o) * cpg * kp];
                for (int32_t o = ocpg; o < outLanes; ++o)
                    out[o] = T(0);
                out += outLanes;
            }
    return packed;
}

// The sampled column of `count` pixels of row y from x0: col[p][k][c], times the mask.
template <typename T>
DCN_CPU_INLINE void sampleTile(CpuProblem<T> const& pb, int32_t n, int32_t y, int32_t x0, int32_t count, T* col)
{
    DeformConvGeometry const& geo = pb.geo;
    int32_t const channels = geo.d.in_channels, kp = geo.kernelPoints, cpog = geo.channelsPerOffsetGroup;
    T const* image = pb.table + int64_t(n) * geo.d.height * geo.d.width * channels;
    for (int32_t p = 0; p < count; ++p)
        for (int32_t og = 0; og < geo.d.offset_group; ++og)
        {
            T const* base = image + int64_t(og) * cpog;
            for (int32_t k = 0; k < kp; ++k)
            {
                BilinearTaps<T> const taps = kernelPointTaps<T>(geo, pb.offset, pb.mask, n, og, k, y, x0 + p);
                T* __restrict dst = col + (int64_t(p) * kp + k) * channels + int64_t(og) * cpog;
                if (taps.valid == 15u)
                {
                    // The common case, all four corners inside: one fused pass, corners summed in the reference's order.
                    T const* __restrict r0 = base + int64_t(taps.index[0]) * channels;
                    T const* __restrict r1 = base + int64_t(taps.index[1]) * channels;
                    T const* __restrict r2 = base + int64_t(taps.index[2]) * channels;
                    T const* __restrict r3 = base + int64_t(taps.index[3]) * channels;
                    T const w0 = taps.weight[0], w1 = taps.weight[1], w2 = taps.weight[2], w3 = taps.weight[3];
                    for (int32_t c = 0; c < cpog; ++c)
                        dst[c] = w0 * r0[c] + w1 * r1[c] + w2 * r2[c] + w3 * r3[c];
                    continue;
                }
                // At the border: only the corners inside are read (a corner outside contributes zero).
                for (int32_t c = 0; c < cpog; ++c)
                    dst[c] = T(0);
                for (int corner = 0; corner < 4; ++corner)
                {
                    if (!(taps.valid & (1u << corner)))
                        continue;
                    T const* __restrict row = base + int64_t(taps.index[corner]) * channels;
                    T const w = taps.weight[corner];
                    for (int32_t c = 0; c < cpog; ++c)
                        dst[c] += w * row[c];
                }
            }
        }
}

// Bytes of T as one GCC/Clang vector: 32 (an AVX register) or 16 (an SSE register). Written explicitly because the
// auto-vectoriser picks the wrong loop of the grouped contraction. Loads from memory go through memcpy: the packed
// weights are only element-aligned.
template <typename T, int Bytes>
struct VectorOf
{
    typedef T type __attribute__((vector_size(Bytes)));
    static constexpr int32_t lanes = Bytes / int32_t(sizeof(T));
};

// Output channels of a group are padded to a multiple of this (a "vector" of the layout: 32 bytes, whatever the
// instruction set's registers hold).
template <typename T>
constexpr int32_t kLayoutLanes = 32 / int32_t(sizeof(T));

// Grouped contraction: outTile[g*oCg + o'][p] = sum_{k, c'} packed[g][k][c'][o'] * col[p][k][g*Cg + c'], in
// register blocks of Pixels pixels x Vecs vectors (of VecBytes) of output channels: each load of the weights (Vecs
// vectors) serves Pixels pixels, and each pixel's sample (one broadcast) Vecs vectors. The block's Pixels x Vecs
// accumulators are independent chains of FMAs; with 4 of them (4 pixels x 8 channels, before session 40) the FMAs'
// latency, not the loads, bounded the loop to half of the CPU's FMA rate (perf, ResNeXt c5: 80 % of the forward's
// time in that loop). pb.outLanes (the padded output channels per group) is a multiple of Vecs vectors.
template <typename T, int Pixels, int Vecs, int VecBytes>
DCN_CPU_INLINE void contractGroupedBlocks(CpuProblem<T> const& pb, int32_t count, T const* col, T* outTile)
{
    using V = typename VectorOf<T, VecBytes>::type;
    constexpr int32_t kLanes = VectorOf<T, VecBytes>::lanes;
    constexpr int32_t kBlockLanes = Vecs * kLanes;
    DeformConvGeometry const& geo = pb.geo;
    int32_t const channels = geo.d.in_channels, kp = geo.kernelPoints, cpg = geo.channelsPerGroup;
    int32_t const ocpg = geo.outChannelsPerGroup, lanes = pb.outLanes, tile = pb.tile;
    for (int32_t g = 0; g < geo.d.group; ++g)
    {
        T const* wg = pb.packed + int64_t(g) * kp * cpg * lanes;
        for (int32_t p0 = 0; p0 < count; p0 += Pixels)
        {
            // The last block may be short: its missing pixels repeat the last one and are not stored.
            T const* cols[Pixels];
            for (int32_t b = 0; b < Pixels; ++b)
                cols[b] = col + int64_t(std::min(p0 + b, count - 1)) * kp * channels + int64_t(g) * cpg;
            for (int32_t ob = 0; ob < lanes; ob += kBlockLanes)
            {
                V acc[Pixels][Vecs]; // indexed by constants only once unrolled: registers
#pragma GCC unroll 16
                for (int32_t b = 0; b < Pixels; ++b)
#pragma GCC unroll 4
                    for (int32_t v = 0; v < Vecs; ++v)
                        acc[b][v] = V{};
                for (int32_t k = 0; k < kp; ++k)
                    for (int32_t c = 0; c < cpg; ++c)
                    {
                        T const* w = wg + (int64_t(k) * cpg + c) * lanes + ob;
                        int64_t const at = int64_t(k) * channels + c;
                        V wv[Vecs];
#pragma GCC unroll 4
                        for (int32_t v = 0; v < Vecs; ++v)
                            __builtin_memcpy(&wv[v], w + v * kLanes, sizeof(V)); // unaligned load
#pragma GCC unroll 16
                        for (int32_t b = 0; b < Pixels; ++b)
                        {
                            T const sample = cols[b][at];
#pragma GCC unroll 4
                            for (int32_t v = 0; v < Vecs; ++v)
                                acc[b][v] += wv[v] * sample;
                        }
                    }
                int32_t const valid = std::min(kBlockLanes, ocpg - ob);
                for (int32_t b = 0; b < Pixels && p0 + b < count; ++b)
                {
                    T lane[kBlockLanes];
                    __builtin_memcpy(lane, acc[b], sizeof lane);
                    for (int32_t l = 0; l < valid; ++l)
                        outTile[int64_t(g * ocpg + ob + l) * tile + p0 + b] = lane[l];
                }
            }
        }
    }
}

// The register blocks of the grouped contraction, by the instruction set's vector registers. Where a group's output
// channels fill whole pairs of layout vectors (float32 groups of 16 and 32: ResNeXt's c4 and c5; every float64
// group, padded to a pair), 16 (float32) or 8 (float64) channels, else 8 (float32, padded). With AVX2's 16 32-byte
// registers: 6 and 8 pixels, 12 and 8 accumulators beside the weights and a broadcast sample. With the x86-64
// baseline's 16 16-byte SSE registers: 16-byte vectors, 3 and 4 pixels, again 12 and 8 (32-byte vectors there went
// through the stack: each broadcast stored and loaded back, ResNeXt c5 8x slower).
template <typename T>
constexpr bool groupedBlockIsWide(int32_t outChannelsPerGroup)
{
    return sizeof(T) == 8 || outChannelsPerGroup % (2 * kLayoutLanes<T>) == 0;
}

template <bool Avx2>
constexpr int32_t groupedBlockPixels(bool wide)
{
    return (wide ? 3 : 4) * (Avx2 ? 2 : 1);
}

// A tile's pixels are a multiple of this (whole register blocks of either instruction set's).
template <typename T>
constexpr int32_t groupedTileMultiple(int32_t outChannelsPerGroup)
{
    return groupedBlockPixels<true>(groupedBlockIsWide<T>(outChannelsPerGroup));
}

// A group's output channels padded to whole register blocks (CpuProblem::outLanes).
template <typename T>
constexpr int32_t groupedOutLanes(int32_t outChannelsPerGroup)
{
    int32_t const block = (groupedBlockIsWide<T>(outChannelsPerGroup) ? 2 : 1) * kLayoutLanes<T>;
    return (outChannelsPerGroup + block - 1) / block * block;
}

template <typename T, bool Avx2>
DCN_CPU_INLINE void contractGroupedImpl(CpuProblem<T> const& pb, int32_t count, T const* col, T* outTile)
{
    constexpr int kVecBytes = Avx2 ? 32 : 16;
    constexpr int kPerLayoutVector = 32 / kVecBytes; // registers a layout vector of channels takes
    if (groupedBlockIsWide<T>(pb.geo.outChannelsPerGroup))
        contractGroupedBlocks<T, groupedBlockPixels<Avx2>(true), 2 * kPerLayoutVector, kVecBytes>(
            pb, count, col, outTile);
    else
        contractGroupedBlocks<T, groupedBlockPixels<Avx2>(false), kPerLayoutVector, kVecBytes>(
            pb, count, col, outTile);
}

// Out of line (a call per tile), so that the register blocks' code does not crowd the sampling loop's registers in
// rowForwardImpl: inlined there, it made the depth-wise forward 4 % slower (pointers reloaded from the stack in
// sampleTile's loop). One version per instruction set (DCN_CPU_VERSIONS), else the blocks of the one compiled for.
#if DCN_CPU_VERSIONS
DCN_CPU_VERSION_AVX2 __attribute__((noinline)) void contractGrouped(
    CpuProblem<float> const& pb, int32_t count, float const* col, float* outTile)
{
    contractGroupedImpl<float, true>(pb, count, col, outTile);
}

DCN_CPU_VERSION_BASELINE __attribute__((noinline)) void contractGrouped(
    CpuProblem<float> const& pb, int32_t count, float const* col, float* outTile)
{
    contractGroupedImpl<float, false>(pb, count, col, outTile);
}

DCN_CPU_VERSION_AVX2 __attribute__((noinline)) void contractGrouped(
    CpuProblem<double> const& pb, int32_t count, double const* col, double* outTile)
{
    contractGroupedImpl<double, true>(pb, count, col, outTile);
}

DCN_CPU_VERSION_BASELINE __attribute__((noinline)) void contractGrouped(
    CpuProblem<double> const& pb, int32_t count, double const* col, double* outTile)
{
    contractGroupedImpl<double, false>(pb, count, col, outTile);
}
#else
#if defined(__AVX2__) && defined(__FMA__)
constexpr bool kCompiledForAvx2 = true;
#else
constexpr bool kCompiledForAvx2 = false;
#endif

template <typename T>
__attribute__((noinline)) void contractGrouped(CpuProblem<T> const& pb, int32_t count, T const* col, T* outTile)
{
    contractGroupedImpl<T, kCompiledForAvx2>(pb, count, col, outTile);
}
#endif

// Depth-wise contraction: outTile[g*m + j][p] = sum_k packed[j][k][g] * col[p][k][g], vectorised over groups.
template <typename T>
DCN_CPU_INLINE void contractDepthwise(CpuProblem<T> const& pb, int32_t count, T const* col, T* outTile, T* acc)
{
    DeformConvGeometry const& geo = pb.geo;
    int32_t const groups = geo.d.group, kp = geo.kernelPoints, multiplier = geo.outChannelsPerGroup;
    for (int32_t p = 0; p < count; ++p)
        for (int32_t j = 0; j < multiplier; ++j)
        {
            T* __restrict a = acc;
            for (int32_t g = 0; g < groups; ++g)
                a[g] = T(0);
            for (int32_t k = 0; k < kp; ++k)
            {
                T const* __restrict w = pb.packed + (int64_t(j) * kp + k) * groups;
                T const* __restrict c = col + (int64_t(p) * kp + k) * groups;
                for (int32_t g = 0; g < groups; ++g)
                    a[g] += w[g] * c[g];
            }
            for (int32_t g = 0; g < groups; ++g)
                outTile[int64_t(g * multiplier + j) * pb.tile + p] = a[g];
        }
}

// One tile: sample, contract, add the bias and store. Channels-last output: a pixel's output channels side by
// side, straight into the output. NCHW: into `rows`, output channel o's row at rows + o * rowStride, from x0 (the
// caller's row buffer, or the output itself).
template <typename T>
DCN_CPU_INLINE void tileForward(CpuProblem<T> const& pb, int32_t n, int32_t y, int32_t x0, T* col, T* outTile,
    T* acc, T* rows, int64_t rowStride)
{
    DeformConvGeometry const& geo = pb.geo;
    int32_t const count = std::min(pb.tile, geo.outW - x0);
    sampleTile(pb, n, y, x0, count, col);
    if (pb.depthwise)
        contractDepthwise(pb, count, col, outTile, acc);
    else
        contractGrouped(pb, count, col, outTile);
    int32_t const oc = geo.d.out_channels;
    if (pb.channelsLastOutput)
    {
        int64_t const outPlane = int64_t(geo.outH) * geo.outW;
        T* __restrict dst = pb.output + (int64_t(n) * outPlane + int64_t(y) * geo.outW + x0) * oc;
        for (int32_t p = 0; p < count; ++p)
            for (int32_t o = 0; o < oc; ++o)
                dst[int64_t(p) * oc + o] = outTile[int64_t(o) * pb.tile + p] + (pb.bias ? pb.bias[o] : T(0));
        return;
    }
    for (int32_t o = 0; o < oc; ++o)
    {
        T const b = pb.bias ? pb.bias[o] : T(0);
        T* __restrict dst = rows + int64_t(o) * rowStride + x0;
        T const* __restrict src = outTile + int64_t(o) * pb.tile;
        for (int32_t p = 0; p < count; ++p)
            dst[p] = src[p] + b;
    }
}

// One output row of one image, tile by tile. An NCHW output row goes through `rowBuffer` (oC x oW, or nullptr:
// straight into the output) and then out channel by channel: a tile of few pixels (4 for 256 channels) would
// otherwise write 16-byte pieces into oC planes far apart, which cost depth-wise res4 at 64x64 1.2 of its 5.9 ms.
template <typename T>
DCN_CPU_INLINE void rowForwardImpl(
    CpuProblem<T> const& pb, int32_t n, int32_t y, T* col, T* outTile, T* acc, T* rowBuffer)
{
    DeformConvGeometry const& geo = pb.geo;
    int64_t const outPlane = int64_t(geo.outH) * geo.outW;
    T* const outputRow = pb.output + int64_t(n) * geo.d.out_channels * outPlane + int64_t(y) * geo.outW;
    bool const buffered = rowBuffer != nullptr && !pb.channelsLastOutput;
    T* const rows = buffered ? rowBuffer : outputRow;
    int64_t const rowStride = buffered ? geo.outW : outPlane;
    for (int32_t x0 = 0; x0 < geo.outW; x0 += pb.tile)
        tileForward(pb, n, y, x0, col, outTile, acc, rows, rowStride);
    if (buffered)
        for (int32_t o = 0; o < geo.d.out_channels; ++o)
            std::copy_n(rowBuffer + int64_t(o) * geo.outW, geo.outW, outputRow + int64_t(o) * outPlane);
}

// Non-template, so that they can carry target_clones.
DCN_CPU_CLONES void rowForwardFloat(
    CpuProblem<float> const& pb, int32_t n, int32_t y, float* col, float* outTile, float* acc, float* rowBuffer)
{
    rowForwardImpl(pb, n, y, col, outTile, acc, rowBuffer);
}

DCN_CPU_CLONES void rowForwardDouble(
    CpuProblem<double> const& pb, int32_t n, int32_t y, double* col, double* outTile, double* acc, double* rowBuffer)
{
    rowForwardImpl(pb, n, y, col, outTile, acc, rowBuffer);
}

inline void rowForward(
    CpuProblem<float> const& pb, int32_t n, int32_t y, float* col, float* outTile, float* acc, float* rowBuffer)
{
    rowForwardFloat(pb, n, y, col, outTile, acc, rowBuffer);
}
inline void rowForward(
    CpuProblem<double> const& pb, int32_t n, int32_t y, double* col, double* outTile, double* acc, double* rowBuffer)
{
    rowForwardDouble(pb, n, y, col, outTile, acc, rowBuffer);
}

// channelsLast: the input and the output are channels-last in memory (DCN_FORWARD_CHANNELS_LAST); the input is
// then the table itself.
template <typename T>
void forwardCpu(DeformConvGeometry const& geo, T const* input, T const* offset, T const* weight, T const* bias,
    T const* mask, T* output, int32_t threads, bool channelsLast)
{
    dcn_deform_conv_desc const& d = geo.d;
    int64_t const plane = int64_t(d.height) * d.width;
    ScratchArray<T> table(channelsLast ? 0 : size_t(d.batch) * d.in_channels * plane);
    if (!channelsLast)
        toChannelsLast(input, table.data(), d.batch, d.in_channels, plane, threads);

    CpuProblem<T> pb;
    pb.geo = geo;
    pb.table = channelsLast ? input : table.data();
    pb.channelsLastOutput = channelsLast;
    pb.offset = offset;
    pb.mask = mask;
    pb.bias = bias;
    pb.output = output;
    prefaultForWriting(output, size_t(d.batch) * d.out_channels * geo.outH * geo.outW * sizeof(T)); // written whole
    pb.depthwise = geo.channelsPerGroup == 1;
    pb.outLanes = groupedOutLanes<T>(geo.outChannelsPerGroup);
    std::vector<T> packed = packWeights(geo, weight, pb.depthwise, pb.outLanes);
    pb.packed = packed.data();
    // A tile's column of about 16K elements (64 KiB of float) stays in the L2 cache beside the weights.
    int64_t const columnPerPixel = int64_t(geo.kernelPoints) * d.in_channels;
    // The grouped contraction's tile holds whole register blocks; the depth-wise one's at least 4 pixels.
    int64_t const block = pb.depthwise ? 4 : groupedTileMultiple<T>(geo.outChannelsPerGroup);
    int64_t const tile = std::max<int64_t>(block, (16384 / columnPerPixel) / block * block);
    pb.tile = int32_t(std::min<int64_t>(tile, geo.outW));

    // Every thread's scratch (column, output tile, depth-wise accumulators, an NCHW output row where it stays
    // within kRowBufferElements) allocated here, outside the parallel region, where an allocation failure is still
    // an exception the C ABI reports.
    int64_t const rows = int64_t(d.batch) * geo.outH;
    threads = int32_t(std::max<int64_t>(1, std::min<int64_t>(threads, rows)));
    size_t const colSize = size_t(pb.tile) * columnPerPixel;
    size_t const outSize = size_t(pb.tile) * d.out_channels;
    size_t const accSize = size_t(d.group);
    size_t const rowSize = int64_t(d.out_channels) * geo.outW;
    bool const buffered = !channelsLast && rowSize <= kRowBufferElements;
    size_t const perThread = colSize + outSize + accSize + (buffered ? rowSize : 0);
    std::vector<T> scratch(perThread * threads);
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
    {
#if defined(_OPENMP)
        T* mine = scratch.data() + perThread * size_t(omp_get_thread_num());
#else
        T* mine = scratch.data();
#endif
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t row = 0; row < rows; ++row)
            rowForward(pb, int32_t(row / geo.outH), int32_t(row % geo.outH), mine, mine + colSize,
                mine + colSize + outSize, buffered ? mine + colSize + outSize + accSize : nullptr);
    }
}

// Sampled columns for a run of output pixels of one image, (pixels, kH*kW, C) times the mask: the dense path's
// first half. The caller multiplies them with the weights in one BLAS product (faster than contractGrouped at
// groups == 1) and keeps the run short enough that the columns stay in cache and their buffer is reused.
DCN_CPU_CLONES void pixelColumnsFloat(CpuProblem<float> const& pb, int32_t n, int64_t pixel, float* column)
{
    int32_t const y = int32_t(pixel / pb.geo.outW);
    sampleTile(pb, n, y, int32_t(pixel - int64_t(y) * pb.geo.outW), 1, column);
}

DCN_CPU_CLONES void pixelColumnsDouble(CpuProblem<double> const& pb, int32_t n, int64_t pixel, double* column)
{
    int32_t const y = int32_t(pixel / pb.geo.outW);
    sampleTile(pb, n, y, int32_t(pixel - int64_t(y) * pb.geo.outW), 1, column);
}

inline void pixelColumns(CpuProblem<float> const& pb, int32_t n, int64_t pixel, float* column)
{
    pixelColumnsFloat(pb, n, pixel, column);
}
inline void pixelColumns(CpuProblem<double> const& pb, int32_t n, int64_t pixel, double* column)
{
    pixelColumnsDouble(pb, n, pixel, column);
}

template <typename T>
void columnsCpu(DeformConvGeometry const& geo, T const* inputNhwc, T const* offset, T const* mask, int32_t image,
    int64_t pixelBegin, int64_t pixelCount, T* columns, int32_t threads)
{
    CpuProblem<T> pb{};
    pb.geo = geo;
    pb.table = inputNhwc;
    pb.offset = offset;
    pb.mask = mask;
    int64_t const columnPerPixel = int64_t(geo.kernelPoints) * geo.d.in_channels;
    threads = int32_t(std::max<int64_t>(1, std::min<int64_t>(threads, pixelCount / 16)));
#if defined(_OPENMP)
#pragma omp parallel for schedule(static, 16) num_threads(threads)
#else
    (void) threads;
#endif
    for (int64_t p = 0; p < pixelCount; ++p)
        pixelColumns(pb, image, pixelBegin + p, columns + p * columnPerPixel);
}

} // namespace
} // namespace dcn

DCN_API int32_t dcn_deform_conv2d_forward_cpu(const dcn_deform_conv_desc* desc, int32_t dtype, const void* input,
    const void* offset, const void* weight, const void* bias, const void* mask, void* output, int32_t num_threads,
    int32_t flags)
{
    return dcn::guarded([&] {
        if (!desc)
            return dcn::Status::invalid("dcn_deform_conv2d_forward_cpu: desc must not be NULL");
        dcn::DeformConvGeometry geo;
        int32_t threads = 1;
        dcn::Status const status
            = dcn::cpuEntryChecks("dcn_deform_conv2d_forward_cpu", dcn::makeGeometry(*desc, geo), num_threads, dtype, threads);
        if (!status.ok())
            return status;
        if (desc->batch > 0 && (!input || !offset || !weight || !output))
            return dcn::Status::invalid("dcn_deform_conv2d_forward_cpu: input, offset, weight and output must not be NULL "
                                        "(bias and mask may be)");
        if (flags != 0 && flags != DCN_FORWARD_CHANNELS_LAST)
            return dcn::Status::invalid("dcn_deform_conv2d_forward_cpu: flags must be 0 or DCN_FORWARD_CHANNELS_LAST (2), "
                                        "got " + std::to_string(flags));
        if (desc->batch == 0)
            return dcn::Status::success();
        dcn::withCpuElementType(dtype, [&](auto tag) {
            using T = decltype(tag);
            dcn::forwardCpu<T>(geo, dcn::typed<T>(input), dcn::typed<T>(offset), dcn::typed<T>(weight),
                dcn::typed<T>(bias), dcn::typed<T>(mask), dcn::typed<T>(output), threads,
                flags == DCN_FORWARD_CHANNELS_LAST);
        });
        return dcn::Status::success();
    });
}

DCN_API int32_t dcn_deform_conv2d_columns_cpu(const dcn_deform_conv_desc* desc, int32_t dtype, const void* input_nhwc,
    const void* offset, const void* mask, int32_t image, int64_t pixel_begin, int64_t pixel_count, void* columns,
    int32_t num_threads)
{
    return dcn::guarded([&] {
        char const* const name = "dcn_deform_conv2d_columns_cpu: ";
        if (!desc)
            return dcn::Status::invalid(std::string(name) + "desc must not be NULL");
        dcn::DeformConvGeometry geo;
        int32_t threads = 1;
        dcn::Status const status
            = dcn::cpuEntryChecks("dcn_deform_conv2d_columns_cpu", dcn::makeGeometry(*desc, geo), num_threads, dtype, threads);
        if (!status.ok())
            return status;
        int64_t const plane = int64_t(geo.outH) * geo.outW;
        if (image < 0 || image >= desc->batch)
            return dcn::Status::invalid(std::string(name) + "image " + std::to_string(image) + " is outside the batch [0, "
                + std::to_string(desc->batch) + ")");
        if (pixel_begin < 0 || pixel_count < 0 || pixel_begin > plane || pixel_count > plane - pixel_begin) // no overflow
            return dcn::Status::invalid(std::string(name) + "pixel_begin " + std::to_string(pixel_begin) + " and pixel_count "
                + std::to_string(pixel_count) + " must lie inside the output plane [0, " + std::to_string(plane) + ")");
        if (pixel_count == 0)
            return dcn::Status::success();
        if (!input_nhwc || !offset || !columns)
            return dcn::Status::invalid(std::string(name) + "input_nhwc, offset and columns must not be NULL (mask may be)");
        dcn::withCpuElementType(dtype, [&](auto tag) {
            using T = decltype(tag);
            dcn::columnsCpu<T>(geo, dcn::typed<T>(input_nhwc), dcn::typed<T>(offset), dcn::typed<T>(mask), image,
                pixel_begin, pixel_count, dcn::typed<T>(columns), threads);
        });
        return dcn::Status::success();
    });
}

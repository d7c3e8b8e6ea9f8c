// The GEMM path's CUDA kernel sources (deformConvGemmKernels.cuh, deformConvRelayout.cuh) run on the CPU, block
// after block, each block's threads as threads at a real barrier (cudaBlockEmulation.h), against the host functions
// they are built from: the channels-last transpose against nhwcElement, the weight re-layout against weightRow, both
// samplers against the per-thread sampler's columnVector (bit for bit; the tiled one also with the zero vector apart
// from the input, as for channels-last tensors), the direct and channels-last outputs' bias fills, and the
// staged output's transpose against stagedOutputElement; split-K (stagedProduct's slices through a plain product,
// the transpose summing them) against a double reference and the plan's rule for where it applies; and the rule for
// which of the two outputs auto takes. Grids are cut smaller than the launchers' where a kernel
// loops over what its grid does not cover, so those loops run too. Prints one "ok"/"FAIL" line per check and
// "<n> failure(s)"; the exit code is the failure count.
#include "dcnDtype.h"
#include "dcn_kernels.h"
#include "deformConvColumns.h"
#include "deformConvGemmReference.h"
#include "deformConvShapes.h"

#include "cudaBlockEmulation.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "deformConvGemmKernels.cuh" // after the emulation: the kernels use its CUDA stand-ins

namespace
{

using namespace dcn;

using emulation::check;
using emulation::kSharedRoom;

template <typename T>
std::vector<T> randomValues(std::mt19937& rng, size_t count, double scale = 1.0, double shift = 0.0)
{
    std::normal_distribution<double> normal(0.0, 1.0);
    std::vector<T> values(count);
    for (T& v : values)
        v = ElementTraits<T>::fromAcc(typename ElementTraits<T>::Acc(shift + scale * normal(rng)));
    return values;
}

// Bit-for-bit equality of two buffers of T (the kernels and the host functions do the same arithmetic).
template <typename T>
bool sameBits(std::vector<T> const& a, std::vector<T> const& b)
{
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <typename T>
void checkTransposes(DeformConvGeometry const& geo, std::string const& name, std::mt19937& rng)
{
    dcn_deform_conv_desc const& d = geo.d;
    size_t const image = size_t(inputImageElements(geo));
    std::vector<T> const input = randomValues<T>(rng, size_t(d.batch) * image);
    int32_t const n0 = d.batch > 1 ? 1 : 0;
    int32_t const images = d.batch - n0;
    std::vector<T> expected(size_t(images) * image), got(expected.size());
    for (int64_t idx = 0; idx < int64_t(expected.size()); ++idx)
        nhwcElement<T>(geo, input.data(), expected.data(), n0, idx);
    int64_t const plane = int64_t(d.height) * d.width;
    for (unsigned channelTiles : {1u, unsigned((d.in_channels + kTile - 1) / kTile)}) // 1: blocks loop over tiles
    {
        std::fill(got.begin(), got.end(), ElementTraits<T>::fromAcc(typename ElementTraits<T>::Acc(NAN)));
        std::string const failure = emulation::runGrid(
            dim3{unsigned((plane + kTile - 1) / kTile), channelTiles, unsigned(images)},
            dim3{unsigned(kTileThreadsX), unsigned(kTileThreadsY), 1},
            [&] { nhwcKernel<T>(geo, input.data(), got.data(), n0); });
        check(failure.empty() && sameBits(got, expected),
            name + ": channels-last transpose, " + std::to_string(channelTiles) + " channel-tile block(s) " + failure);
    }

    size_t const weightCount = size_t(d.out_channels) * geo.channelsPerGroup * geo.kernelPoints;
    std::vector<T> const weight = randomValues<T>(rng, weightCount);
    std::vector<T> weightsExpected(weightCount), weightsGot(weightCount);
    int64_t const rows = int64_t(d.out_channels) * geo.channelsPerGroup;
    for (int64_t row = 0; row < rows; ++row)
        weightRow<T>(geo, weight.data(), weightsExpected.data(), row);
    std::string failure = emulation::runGrid(dim3{2, 1, 1}, dim3{unsigned(kGridStrideThreads), 1, 1},
        [&] { weightsKernel<T>(geo, weight.data(), weightsGot.data(), rows, false, nullptr, 1, 0); });
    check(failure.empty() && sameBits(weightsGot, weightsExpected), name + ": weight re-layout (2 blocks) " + failure);

    // output-major (the staged product as NN): every weight moved once, to its place in [g][kp][c][o]
    std::vector<T> outputMajorExpected(weightCount), outputMajorGot(weightCount);
    for (int64_t idx = 0; idx < int64_t(weightCount); ++idx)
        weightElementOutputMajor<T>(geo, weight.data(), outputMajorExpected.data(), idx);
    int32_t const ocg = geo.outChannelsPerGroup, cg = geo.channelsPerGroup, kps = geo.kernelPoints;
    bool placed = true;
    for (int32_t o = 0; o < d.out_channels; ++o)
        for (int32_t c = 0; c < cg; ++c)
            for (int32_t kp = 0; kp < kps; ++kp)
                placed = placed
                    && std::memcmp(&outputMajorExpected[((size_t(o / ocg) * kps + kp) * cg + c) * ocg + o % ocg],
                           &weight[(size_t(o) * cg + c) * kps + kp], sizeof(T)) == 0;
    failure = emulation::runGrid(dim3{2, 1, 1}, dim3{unsigned(kGridStrideThreads), 1, 1}, [&] {
        weightsKernel<T>(geo, weight.data(), outputMajorGot.data(), int64_t(weightCount), true, nullptr, 1, 0);
    });
    check(failure.empty() && placed && sameBits(outputMajorGot, outputMajorExpected),
        name + ": output-major weight re-layout (2 blocks) " + failure);

    // with the tiled sampler's row-vector table in the same launch (one block: its threads loop over both)
    int32_t const vector = columnVectorWidth(geo, sizeof(T));
    int32_t const rowVectors = columnRowVectors(geo, vector);
    std::vector<TileRowVector> tableExpected(static_cast<size_t>(rowVectors)), tableGot(tableExpected.size());
    for (int32_t r = 0; r < rowVectors; ++r)
        tableExpected[size_t(r)] = tileRowVector(geo, vector, r);
    std::fill(weightsGot.begin(), weightsGot.end(), T{});
    failure = emulation::runGrid(dim3{1, 1, 1}, dim3{unsigned(kGridStrideThreads), 1, 1}, [&] {
        weightsKernel<T>(geo, weight.data(), weightsGot.data(), rows, false, tableGot.data(), vector, rowVectors);
    });
    bool const sameTable = std::memcmp(tableGot.data(), tableExpected.data(), tableGot.size() * sizeof(TileRowVector))
        == 0;
    check(failure.empty() && sameBits(weightsGot, weightsExpected) && sameTable,
        name + ": weight re-layout with the row-vector table (1 block) " + failure);
}

// The tiled sampler run by `run` (into `tiled`) with NaN where it should find the zero vector: every column value
// with a neighbour outside the image turns NaN (so those neighbours are read from there), and no other.
template <typename T, typename Run>
void checkPoisonedZero(DeformConvGeometry const& geo, std::string const& name, std::vector<T> const& offset,
    std::vector<T> const& mask, std::vector<T> const& expected, Run const& run, std::vector<T> const& tiled)
{
    using Acc = typename ElementTraits<T>::Acc;
    dcn_deform_conv_desc const& d = geo.d;
    int32_t const plane = geo.outH * geo.outW;
    std::string const failure = run();
    size_t poisoned = 0, outside = 0;
    bool agree = failure.empty() && tiled.size() == expected.size();
    for (size_t i = 0; agree && i < expected.size(); ++i)
    {
        bool const isNan = std::isnan(double(ElementTraits<T>::toAcc(tiled[i])));
        bool const wasNan = std::isnan(double(ElementTraits<T>::toAcc(expected[i])));
        poisoned += isNan && !wasNan;
        agree = agree && (isNan || std::memcmp(&tiled[i], &expected[i], sizeof(T)) == 0);
    }
    for (int64_t idx = 0; idx < int64_t(d.batch) * plane * geo.kernelPoints * d.offset_group; ++idx)
    {
        // (image, pixel, offset group, kernel point) with an outside neighbour: channelsPerOffsetGroup values
        int32_t const kp = int32_t(idx % geo.kernelPoints);
        int64_t rest = idx / geo.kernelPoints;
        int32_t const og = int32_t(rest % d.offset_group);
        rest /= d.offset_group;
        int32_t const p = int32_t(rest % plane);
        int32_t const img = int32_t(rest / plane);
        BilinearTaps<Acc> const taps = kernelPointTaps<Acc>(geo, offset.data(), mask.data(), img, og, kp,
            p / geo.outW, p % geo.outW);
        outside += taps.valid != 0xFu ? size_t(geo.channelsPerOffsetGroup) : 0;
    }
    check(agree && outside > 0 && poisoned == outside,
        name + ": tiled sampler reads outside neighbours from the zero vector (" + std::to_string(poisoned)
            + " values poisoned through it, " + std::to_string(outside) + " with an outside neighbour) " + failure);
}

// Both samplers over one chunk of the whole batch, against columnVector run for every item.
template <typename T, int Vector>
void checkSamplers(DeformConvGeometry const& geo, std::string const& name, std::mt19937& rng)
{
    using Acc = typename ElementTraits<T>::Acc;
    dcn_deform_conv_desc const& d = geo.d;
    int32_t const plane = geo.outH * geo.outW;
    size_t const image = size_t(inputImageElements(geo));
    std::vector<T> const nhwc = randomValues<T>(rng, size_t(d.batch) * image);
    size_t const points = size_t(d.offset_group) * geo.kernelPoints;
    std::vector<T> const offset = randomValues<T>(rng, size_t(d.batch) * 2 * points * plane, 3.0);
    std::vector<T> const mask = randomValues<T>(rng, size_t(d.batch) * points * plane, 0.3, 0.5);
    size_t const columnCount = size_t(d.batch) * plane * d.in_channels * geo.kernelPoints;
    int64_t const items = columnThreads(geo, d.batch, plane, Vector);
    std::vector<T> expected(columnCount);
    for (int64_t idx = 0; idx < items; ++idx)
        columnVector<T, Vector>(geo, nhwc.data(), offset.data(), mask.data(), expected.data(), 0, 0, plane, idx);
    std::vector<T> got(columnCount);
    std::string failure = emulation::runGrid(dim3{2, 1, 1}, dim3{unsigned(kGridStrideThreads), 1, 1}, [&] {
        columnsKernel<T, Vector, int64_t>(geo, nhwc.data(), offset.data(), mask.data(), got.data(), 0, 0, plane,
            items);
    });
    check(failure.empty() && sameBits(got, expected), name + ": per-thread sampler (2 blocks) " + failure);

    int32_t const rowVectors = columnRowVectors(geo, Vector);
    for (int32_t tileItems : {1, 7 * rowVectors, 0}) // 1 pixel, 7 (across images and cut short), the default
    {
        GemmOptions options;
        options.tileItems = tileItems;
        GemmPlan const plan = planGemm(geo, sizeof(T), options);
        if (plan.tilePixels == 0 || plan.tileShared > kSharedRoom)
        {
            check(false, name + ": no tiled sampler for this layer (tile tables " + std::to_string(plan.tileShared)
                + " bytes)");
            continue;
        }
        std::vector<T> tiled(columnCount + size_t(plan.tilePixels) * d.in_channels * geo.kernelPoints);
        int32_t const chunkPixels = d.batch * plane;
        // The chunk's images, then C zeros (the zero vector), then NaN: the kernel must read the zeros, and nothing
        // past them, for every neighbour outside the image.
        std::vector<T> nhwcZero(nhwc);
        nhwcZero.resize(nhwc.size() + size_t(d.in_channels), ElementTraits<T>::fromAcc(Acc(0)));
        nhwcZero.resize(nhwcZero.size() + 16, ElementTraits<T>::fromAcc(Acc(NAN)));
        int32_t const zeroOffset = int32_t(nhwc.size());
        std::vector<TileRowVector> rowTable(static_cast<size_t>(rowVectors));
        for (int32_t r = 0; r < rowVectors; ++r)
            rowTable[size_t(r)] = tileRowVector(geo, Vector, r);
        // Zero apart (GemmPlan::channelsLast, the input read where it is): the images alone, NaN after them, and
        // the zero vector in a buffer of its own (C zeros, then NaN).
        std::vector<T> imagesAlone(nhwc);
        imagesAlone.resize(nhwc.size() + 16, ElementTraits<T>::fromAcc(Acc(NAN)));
        std::vector<T> zeroApart(size_t(d.in_channels), ElementTraits<T>::fromAcc(Acc(0)));
        zeroApart.resize(zeroApart.size() + 16, ElementTraits<T>::fromAcc(Acc(NAN)));
        auto const runTiled = [&](bool apart) {
            return emulation::runGrid(dim3{unsigned((chunkPixels + plan.tilePixels - 1) / plan.tilePixels), 1, 1},
                dim3{unsigned(kGridStrideThreads), 1, 1}, [&] {
                    if (apart)
                        tiledColumnsKernel<T, Vector, true>(geo, imagesAlone.data(), offset.data(), mask.data(),
                            rowTable.data(), tiled.data(), 0, 0, plane, chunkPixels, plan.tilePixels, 0,
                            zeroApart.data());
                    else
                        tiledColumnsKernel<T, Vector>(geo, nhwcZero.data(), offset.data(), mask.data(),
                            rowTable.data(), tiled.data(), 0, 0, plane, chunkPixels, plan.tilePixels, zeroOffset,
                            static_cast<T const*>(nullptr));
                });
        };
        for (bool apart : {false, true})
        {
            tiled.assign(columnCount + size_t(plan.tilePixels) * d.in_channels * geo.kernelPoints, T{});
            emulation::prepareShared(plan.tileShared);
            failure = runTiled(apart);
            bool const canary = emulation::sharedUntouchedPast(plan.tileShared);
            tiled.resize(columnCount);
            check(failure.empty() && canary && sameBits(tiled, expected),
                name + ": tiled sampler, " + std::to_string(plan.tilePixels) + "-pixel tiles"
                    + (apart ? ", the zero vector apart" : "")
                    + (canary ? "" : ", wrote shared memory past its tables") + " " + failure);
        }
        if (tileItems != 0)
            continue;
        // The same with NaN where the zero vector was (after the room, or apart): every column value with a
        // neighbour outside the image turns NaN (so those neighbours are read from there), and no other.
        std::fill(nhwcZero.begin() + zeroOffset, nhwcZero.end(), ElementTraits<T>::fromAcc(Acc(NAN)));
        std::fill(zeroApart.begin(), zeroApart.end(), ElementTraits<T>::fromAcc(Acc(NAN)));
        for (bool apart : {false, true})
            checkPoisonedZero<T>(geo, name + (apart ? ", the zero vector apart" : ""), offset, mask, expected,
                [&] {
                    tiled.assign(columnCount + size_t(plan.tilePixels) * d.in_channels * geo.kernelPoints, T{});
                    std::string const ran = runTiled(apart);
                    tiled.resize(columnCount);
                    return ran;
                },
                tiled);
    }
}

// The zero vector apart (channels-last tensors) with zero offsets and one-pixel tiles: a tile of an interior pixel
// has no outside neighbour and runs the plain items (the block's __syncthreads_or), a border pixel's tile the
// selecting ones; both against columnVector bit for bit, the zero vector apart NaN after its C zeros.
template <typename T, int Vector>
void checkZeroApartTileKinds(DeformConvGeometry const& geo, std::string const& name, std::mt19937& rng)
{
    using Acc = typename ElementTraits<T>::Acc;
    dcn_deform_conv_desc const& d = geo.d;
    int32_t const plane = geo.outH * geo.outW;
    size_t const points = size_t(d.offset_group) * geo.kernelPoints;
    std::vector<T> const nhwc = randomValues<T>(rng, size_t(d.batch) * size_t(inputImageElements(geo)));
    std::vector<T> const offset(size_t(d.batch) * 2 * points * plane, ElementTraits<T>::fromAcc(Acc(0)));
    std::vector<T> const mask = randomValues<T>(rng, size_t(d.batch) * points * plane, 0.3, 0.5);
    size_t const columnCount = size_t(d.batch) * plane * d.in_channels * geo.kernelPoints;
    std::vector<T> expected(columnCount);
    int64_t const items = columnThreads(geo, d.batch, plane, Vector);
    for (int64_t idx = 0; idx < items; ++idx)
        columnVector<T, Vector>(geo, nhwc.data(), offset.data(), mask.data(), expected.data(), 0, 0, plane, idx);
    GemmOptions options;
    options.tileItems = 1;
    options.channelsLastTensors = true;
    GemmPlan const plan = planGemm(geo, sizeof(T), options);
    int32_t const rowVectors = columnRowVectors(geo, Vector);
    std::vector<TileRowVector> rowTable(static_cast<size_t>(rowVectors));
    for (int32_t r = 0; r < rowVectors; ++r)
        rowTable[size_t(r)] = tileRowVector(geo, Vector, r);
    std::vector<T> zero(size_t(d.in_channels), ElementTraits<T>::fromAcc(Acc(0)));
    zero.resize(zero.size() + 16, ElementTraits<T>::fromAcc(Acc(NAN)));
    int32_t const chunkPixels = d.batch * plane;
    int32_t interior = 0, border = 0;
    for (int32_t flat = 0; flat < chunkPixels; ++flat) // one-pixel tiles: the kind of each, as the block finds it
    {
        TilePixel const place = tilePixel(geo, 0, plane, chunkPixels, flat);
        bool outside = false;
        for (int32_t point = 0; point < int32_t(points); ++point)
            outside = outside || tileHasOutsideTap(tileEntryTaps<Acc>(geo, offset.data(), mask.data(), 0, place,
                point, 0, true));
        (outside ? border : interior) += 1;
    }
    std::vector<T> got(columnCount + size_t(d.in_channels) * geo.kernelPoints);
    emulation::prepareShared(plan.tileShared);
    std::string const failure = emulation::runGrid(dim3{unsigned(chunkPixels), 1, 1},
        dim3{unsigned(kGridStrideThreads), 1, 1}, [&] {
            tiledColumnsKernel<T, Vector, true>(geo, nhwc.data(), offset.data(), mask.data(), rowTable.data(),
                got.data(), 0, 0, plane, chunkPixels, 1, 0, zero.data());
        });
    got.resize(columnCount);
    bool const bothKinds = border > 0 && (interior > 0 || geo.outH <= 2 || geo.outW <= 2);
    check(plan.tilePixels == 1 && failure.empty() && bothKinds && sameBits(got, expected),
        name + ": the zero vector apart, one-pixel tiles of zero offsets: " + std::to_string(interior)
            + " interior tiles (plain items), " + std::to_string(border) + " border tiles (selecting items) " + failure);
}

template <typename T>
void checkOutputs(DeformConvGeometry const& geo, std::string const& name, std::mt19937& rng)
{
    using Acc = typename ElementTraits<T>::Acc;
    dcn_deform_conv_desc const& d = geo.d;
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    // a slice of the output pixels (p0 > 0) of images n0.. of the batch
    int32_t const n0 = d.batch > 1 ? 1 : 0;
    int32_t const images = d.batch - n0;
    int64_t const p0 = plane > 3 ? 2 : 0;
    int32_t const pixels = int32_t(plane - p0);
    std::vector<T> const bias = randomValues<T>(rng, size_t(d.out_channels));
    std::vector<T> const before = randomValues<T>(rng, size_t(d.batch) * d.out_channels * plane);
    std::vector<T> expected = before, got = before;
    for (int32_t img = 0; img < images; ++img)
        for (int32_t o = 0; o < d.out_channels; ++o)
            for (int32_t p = 0; p < pixels; ++p)
                expected[(size_t(n0 + img) * d.out_channels + o) * plane + p0 + p] = bias[size_t(o)];
    int64_t const rows = int64_t(images) * d.out_channels;
    std::string failure = emulation::runGrid(dim3{3, 1, 1}, dim3{unsigned(kGridStrideThreads), 1, 1},
        [&] { fillBiasKernel<T>(got.data(), bias.data(), d.out_channels, plane, n0, rows, p0, pixels); });
    check(failure.empty() && sameBits(got, expected), name + ": bias fill (3 blocks looping over rows) " + failure);

    // The channels-last output's bias fill (GemmPlan::channelsLast): the chunk's rows of oC from (n0, p0), element
    // by element and (where oC allows) in vectors, with blocks of several rows a step (256 threads) and of a row
    // looped over (32 threads: fewer than a row's items at oC 130).
    constexpr int kVector = sizeof(T) < 16 ? int(16 / sizeof(T)) : 1;
    for (bool vectors : {false, true})
    {
        if (vectors && d.out_channels % kVector != 0)
            continue;
        for (unsigned threads : {256u, 32u})
        {
            expected = before;
            got = before;
            int64_t const first = (int64_t(n0) * plane + p0) * d.out_channels;
            int64_t const count = int64_t(images) * pixels;
            for (int64_t row = 0; row < count; ++row)
                std::copy(bias.begin(), bias.end(), expected.begin() + first + row * d.out_channels);
            failure = emulation::runGrid(dim3{3, 1, 1}, dim3{threads, 1, 1},
                [&] { fillBiasRowsKernel<T>(got.data() + first, bias.data(), d.out_channels, count, vectors); });
            check(failure.empty() && sameBits(got, expected),
                name + ": channels-last bias fill, " + (vectors ? "vectors" : "elements") + ", 3 blocks of "
                    + std::to_string(threads) + " threads " + failure);
        }
    }

    std::vector<Acc> const staging = randomValues<Acc>(rng, size_t(images) * pixels * d.out_channels);
    for (T const* withBias : {bias.data(), static_cast<T const*>(nullptr)})
    {
        expected = before;
        got = before;
        for (int64_t idx = 0; idx < int64_t(images) * d.out_channels * pixels; ++idx)
            stagedOutputElement<T, Acc>(geo, staging.data(), withBias, expected.data(), n0, p0, pixels, idx);
        failure = emulation::runGrid(dim3{unsigned((pixels + kTile - 1) / kTile), 1, unsigned(images)},
            dim3{unsigned(kTileThreadsX), unsigned(kTileThreadsY), 1},
            [&] { stagedOutputKernel<T, Acc>(geo, staging.data(), withBias, got.data(), n0, p0, pixels, 1, 0); });
        check(failure.empty() && sameBits(got, expected), name + ": staged output" + (withBias ? "" : " without bias")
            + ", blocks looping over channel tiles " + failure);
    }
    if constexpr (!std::is_same<T, Acc>::value) // a half type without a bias stages T (stagesNarrow)
    {
        std::vector<T> const narrow = randomValues<T>(rng, size_t(images) * pixels * d.out_channels);
        expected = before;
        got = before;
        for (int64_t idx = 0; idx < int64_t(images) * d.out_channels * pixels; ++idx)
            stagedOutputElement<T, T>(geo, narrow.data(), static_cast<T const*>(nullptr), expected.data(), n0, p0,
                pixels, idx);
        failure = emulation::runGrid(dim3{unsigned((pixels + kTile - 1) / kTile), 1, unsigned(images)},
            dim3{unsigned(kTileThreadsX), unsigned(kTileThreadsY), 1}, [&] {
                stagedOutputKernel<T, T>(geo, narrow.data(), static_cast<T const*>(nullptr), got.data(), n0, p0,
                    pixels, 1, 0);
            });
        // The output is the scratch's values moved: every element of the chunk equal, bit for bit, to its staged one.
        bool moved = true;
        for (int32_t img = 0; img < images; ++img)
            for (int32_t o = 0; o < d.out_channels; ++o)
                for (int32_t p = 0; p < pixels; ++p)
                    moved = moved
                        && std::memcmp(&expected[(size_t(n0 + img) * d.out_channels + o) * plane + p0 + p],
                               &narrow[(size_t(img) * pixels + p) * d.out_channels + o], sizeof(T)) == 0;
        check(failure.empty() && sameBits(got, expected) && moved,
            name + ": staged output of a T scratch (no bias), a plain transpose " + failure);
    }
}

// One split-K configuration of a staged chunk (images n0.. of the batch, pixels p0..): the plan's slices
// (gemmSplitK), stagedProduct's call through gemmHost into a scratch of NaN (every slice must be written, and
// nothing past the last read), then the staged output kernel summing the slices; against stagedOutputElement bit
// for bit and against a double product within the type's rounding. `expectSlices`: what the plan must choose.
template <typename T>
void checkSplitK(dcn_deform_conv_desc const& desc, int32_t splitK, int32_t expectSlices, bool withBias,
    bool outputMajor, std::string const& name, std::mt19937& rng)
{
    using Acc = typename ElementTraits<T>::Acc;
    DeformConvGeometry geo;
    if (!makeGeometry(desc, geo).ok())
    {
        check(false, name + ": bad geometry");
        return;
    }
    GemmOptions options;
    options.output = kGemmOutputStaged;
    options.splitK = splitK;
    options.product = outputMajor ? kGemmProductNN : kGemmProductTN;
    GemmPlan const plan = planGemm(geo, sizeof(T), options);
    int32_t const oc = desc.out_channels;
    int64_t const k = int64_t(desc.in_channels) * geo.kernelPoints;
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    int32_t const n0 = desc.batch > 1 ? 1 : 0;
    int32_t const images = desc.batch - n0;
    int64_t const p0 = plane > 3 ? 2 : 0;
    int32_t const pixels = int32_t(plane - p0);
    int64_t const chunkPixels = int64_t(images) * pixels;
    int64_t const sliceStride = stagingSliceElements(chunkPixels * oc, sizeof(Acc));
    std::vector<T> const weights = randomValues<T>(rng, size_t(oc) * size_t(k)); // [o][k], or [k][o] (NN)
    std::vector<T> const columns = randomValues<T>(rng, size_t(chunkPixels) * size_t(k));
    std::vector<T> const bias = randomValues<T>(rng, size_t(oc));
    T const* biasOrNull = withBias ? bias.data() : nullptr;
    std::vector<Acc> staging(size_t(plan.splitK * sliceStride + 64), std::numeric_limits<Acc>::quiet_NaN());
    gemmHost<T, Acc>(stagedProduct(geo, images, pixels, plan.outputMajorWeights, plan.splitK, sliceStride),
        weights.data(), columns.data(), staging.data(), false);
    std::vector<T> const before = randomValues<T>(rng, size_t(desc.batch) * oc * plane);
    std::vector<T> expected = before, got = before;
    for (int64_t idx = 0; idx < int64_t(images) * oc * pixels; ++idx)
        stagedOutputElement<T, Acc>(geo, staging.data(), biasOrNull, expected.data(), n0, p0, pixels, idx,
            plan.splitK, sliceStride);
    std::string const failure = emulation::runGrid(dim3{unsigned((pixels + kTile - 1) / kTile), 1, unsigned(images)},
        dim3{unsigned(kTileThreadsX), unsigned(kTileThreadsY), 1}, [&] {
            stagedOutputKernel<T, Acc>(geo, staging.data(), biasOrNull, got.data(), n0, p0, pixels, plan.splitK,
                sliceStride);
        });
    // The reference: the whole sum in double, plus the bias; the tolerance scales with sum |w * x|.
    double const tolerance = sizeof(T) == 2 ? 2e-3 : sizeof(T) == 4 ? 1e-5 : 1e-12;
    double worst = 0;
    bool untouched = true;
    for (int32_t img = 0; img < desc.batch; ++img)
        for (int32_t o = 0; o < oc; ++o)
            for (int64_t p = 0; p < plane; ++p)
            {
                size_t const at = (size_t(img) * oc + size_t(o)) * size_t(plane) + size_t(p);
                if (img < n0 || p < p0)
                {
                    untouched = untouched && std::memcmp(&got[at], &before[at], sizeof(T)) == 0;
                    continue;
                }
                int64_t const pixel = int64_t(img - n0) * pixels + (p - p0);
                double sum = withBias ? double(ElementTraits<T>::toAcc(bias[size_t(o)])) : 0.0, scale = std::abs(sum);
                for (int64_t l = 0; l < k; ++l)
                {
                    size_t const w = outputMajor ? size_t(l) * oc + size_t(o) : size_t(o) * size_t(k) + size_t(l);
                    double const term = double(ElementTraits<T>::toAcc(weights[w]))
                        * double(ElementTraits<T>::toAcc(columns[size_t(pixel * k + l)]));
                    sum += term;
                    scale += std::abs(term);
                }
                worst = std::max(worst, std::abs(double(ElementTraits<T>::toAcc(got[at])) - sum) / (scale + 1e-30));
            }
    bool allWritten = true; // each slice's chunkPixels * oC values (the rest of its stride is padding)
    for (int32_t slice = 0; slice < plan.splitK; ++slice)
        allWritten = allWritten && std::none_of(staging.begin() + slice * sliceStride,
            staging.begin() + slice * sliceStride + chunkPixels * oc, [](Acc v) { return std::isnan(double(v)); });
    check(failure.empty() && plan.splitK == expectSlices && allWritten && untouched && sameBits(got, expected)
            && worst <= tolerance,
        name + ": split-K " + std::to_string(splitK) + " -> " + std::to_string(plan.splitK) + " slice(s) (expected "
            + std::to_string(expectSlices) + "), " + (outputMajor ? "NN" : "TN") + (withBias ? ", bias" : ", no bias")
            + ", worst relative error " + std::to_string(worst) + " " + failure);

    // The same slices summed into a channels-last output's rows (channelsLastSumKernel, 3 blocks looping over the
    // elements): each the value the NCHW transpose wrote for that (pixel, channel), bit for bit.
    options.channelsLastTensors = true;
    GemmPlan const lastPlan = planGemm(geo, sizeof(T), options);
    std::vector<T> rows(size_t(chunkPixels) * oc + 8, ElementTraits<T>::fromAcc(Acc(NAN)));
    std::string const rowsFailure = emulation::runGrid(dim3{3, 1, 1}, dim3{unsigned(kGridStrideThreads), 1, 1}, [&] {
        channelsLastSumKernel<T>(geo, staging.data(), biasOrNull, rows.data(), chunkPixels * oc, plan.splitK,
            sliceStride);
    });
    // the plan stages the slices of a split layer only (an unsplit one's product writes the output)
    bool const room = plan.splitK > 1 ? lastPlan.stagingBytes >= size_t(plan.splitK * sliceStride) * sizeof(Acc)
                                      : lastPlan.stagingBytes == 0;
    bool same = rowsFailure.empty() && lastPlan.splitK == plan.splitK && !lastPlan.staged && room;
    for (int64_t pixel = 0; same && pixel < chunkPixels; ++pixel)
        for (int32_t o = 0; o < oc; ++o)
        {
            int64_t const img = pixel / pixels, p = pixel % pixels;
            size_t const at = (size_t(n0 + img) * oc + size_t(o)) * size_t(plane) + size_t(p0 + p);
            same = same && std::memcmp(&rows[size_t(pixel) * oc + size_t(o)], &got[at], sizeof(T)) == 0;
        }
    for (size_t past = size_t(chunkPixels) * oc; same && past < rows.size(); ++past)
        same = std::isnan(double(ElementTraits<T>::toAcc(rows[past])));
    check(same, name + ": split-K " + std::to_string(plan.splitK) + " slice(s) summed into channels-last rows, "
        "the NCHW transpose's values " + rowsFailure);
}

// Random split-K configurations, each type: S of 2, 4 or 8, with and without a bias, TN and NN, batch 1 to 3,
// output planes that are not multiples of the 64-pixel tile; K = C * kH*kW a multiple of S * 8 (split) or not
// (S = 1: the plan falls back).
void checkSplitKConfigurations()
{
    std::mt19937 rng(2024);
    int32_t const splits[] = {2, 4, 8};
    for (int32_t trial = 0; trial < 12; ++trial)
    {
        int32_t const splitK = splits[trial % 3];
        bool const valid = trial % 4 != 3;
        // C * 9 a multiple of S * 8 where valid: C a multiple of S * 8 (9 is odd); else C = S * 8 + 4
        int32_t const channels = valid ? splitK * 8 * int32_t(1 + rng() % 2) : splitK * 8 + 4;
        int32_t const height = 3 + int32_t(rng() % 7), width = 5 + int32_t(rng() % 11);
        int32_t const batch = 1 + int32_t(rng() % 3);
        int32_t const outChannels = 8 + int32_t(rng() % 3) * 36; // 8, 44 or 80: one or two channel tiles
        dcn_deform_conv_desc const desc{batch, channels, height, width, outChannels, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1,
            1, 1};
        std::string const name = "split-K trial " + std::to_string(trial) + " (batch " + std::to_string(batch)
            + ", C " + std::to_string(channels) + ", " + std::to_string(height) + "x" + std::to_string(width) + ", oC "
            + std::to_string(outChannels) + ")";
        int32_t const expect = valid ? splitK : 1;
        bool const withBias = trial % 2 == 0;
        bool const outputMajor = trial % 5 == 1;
        checkSplitK<float>(desc, splitK, expect, withBias, outputMajor, name + ", float32", rng);
        checkSplitK<HostHalf>(desc, splitK, expect, !withBias, outputMajor, name + ", float16", rng);
        if (trial % 3 == 0)
            checkSplitK<double>(desc, splitK, expect, withBias, outputMajor, name + ", float64", rng);
    }
    // det res5-like, float32 at batch 1: 512 channels, 512 out, 25x42 (K 4608 = 8 * 576)
    dcn_deform_conv_desc const res5{1, 512, 25, 42, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    checkSplitK<float>(res5, 8, 8, true, false, "split-K det res5-like (oC cut to 64), float32", rng);
}

// Where split-K applies in the plan (gemmSplitK): staged, one group, K a multiple of S * 8; its staging room is S
// rooms whether or not this shape is staged (a plugin's largest shape may go direct), and never shrinks as the
// batch or the image grows; an invalid request is 1.
void checkSplitKPlan()
{
    struct Case
    {
        char const* name;
        dcn_deform_conv_desc desc;
        int32_t output, splitK;
        int32_t slices;   // the plan's splitK
        int32_t reserved; // staging rooms reserved
    };
    Case const cases[] = {
        {"dense K 576, staged, S 4", {1, 64, 7, 9, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, kGemmOutputStaged, 4, 4, 4},
        {"dense K 576, staged, S 8", {1, 64, 7, 9, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, kGemmOutputStaged, 8, 8, 8},
        {"dense K 576, direct, S 4: 1, 4 rooms", {1, 64, 8, 8, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
            kGemmOutputDirect, 4, 1, 4},
        {"dense K 576, auto (direct rows), S 2", {1, 64, 8, 8, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, kGemmOutputAuto,
            2, 1, 2},
        {"K 144 (16 * 9), S 4: 144 % 32, 1", {1, 16, 7, 9, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, kGemmOutputStaged,
            4, 1, 1},
        {"K 144, S 2: 144 % 16 == 0", {1, 16, 7, 9, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, kGemmOutputStaged, 2, 2,
            2},
        {"two groups, S 2: 1", {1, 64, 7, 9, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1}, kGemmOutputStaged, 2, 1, 1},
        {"S 3 (invalid): 1", {1, 64, 7, 9, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, kGemmOutputStaged, 3, 1, 1},
        {"default: 1", {1, 64, 7, 9, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, kGemmOutputStaged, 1, 1, 1},
    };
    for (Case const& c : cases)
        for (size_t elementBytes : {size_t(2), size_t(4), size_t(8)})
        {
            DeformConvGeometry geo;
            bool const made = makeGeometry(c.desc, geo).ok();
            GemmOptions options;
            options.output = c.output;
            GemmPlan const single = planGemm(geo, elementBytes, options);
            options.splitK = c.splitK;
            GemmPlan const plan = planGemm(geo, elementBytes, options);
            GemmCall const call = stagedProduct(geo, 1, geo.outH * geo.outW, false, plan.splitK, 1000);
            bool const callRight = plan.splitK == 1
                ? call.batch == c.desc.group && call.k == c.desc.in_channels / c.desc.group * 9
                : call.batch == plan.splitK && call.k * plan.splitK == c.desc.in_channels * 9
                    && call.a.stride == call.k && call.b.stride == call.k && call.c.stride == 1000;
            check(made && plan.splitK == c.slices && plan.stagingBytes == size_t(c.reserved) * single.stagingBytes
                    && plan.totalBytes == single.totalBytes + size_t(c.reserved - 1) * single.stagingBytes && callRight,
                std::string("split-K plan, ") + c.name + ", " + std::to_string(elementBytes) + "-byte elements");
        }
    // Never shrinks as N, H or W grow (with a small budget, so that chunks and slices of images are planned too).
    bool grows = true;
    size_t last = 0;
    for (int32_t batch : {1, 2, 3, 8})
        for (int32_t side : {5, 17, 40, 120})
        {
            DeformConvGeometry geo;
            grows = grows && makeGeometry({batch, 64, side, side, 96, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, geo).ok();
            GemmOptions options;
            options.splitK = 4;
            options.columnBudget = size_t(1) << 20;
            GemmPlan const plan = planGemm(geo, 4, options);
            int64_t const chunk = int64_t(plan.images) * plan.pixels;
            grows = grows && plan.stagingBytes >= last
                && size_t(4 * stagingSliceElements(chunk * 96, 4)) * 4 <= plan.stagingBytes;
            last = side == 120 ? 0 : plan.stagingBytes;
        }
    check(grows, "split-K staging room: S slices of every chunk fit, and it never shrinks as H and W grow");
}

// Auto's split-K (GemmOptions::splitK 0, autoSplitK): 4 slices, staged, for float32 layers of one group with
// K >= 2048 whose whole product has at most 264 output tiles of 64x64 (det res5 and res4 at batch 1, as measured on
// an H100), 1 elsewhere; its staging room (kAutoSplitK slices of at most kAutoSplitMaxValues) reserved for every
// shape of such a layer and never shrinking as N, H or W grow.
void checkAutoSplitKPlan()
{
    struct Case
    {
        char const* name;
        dcn_deform_conv_desc desc;
        size_t elementBytes;
        int32_t output;
        int32_t slices;
        bool staged;
    };
    Case const cases[] = {
        {"det res5 batch 1, float32", {1, 512, 25, 42, 512, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 4, kGemmOutputAuto, 4,
            true},
        {"det res4 batch 1, float32 (direct rows, 264 tiles)", {1, 256, 50, 84, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
            4, kGemmOutputAuto, 4, true},
        {"det res4 batch 1, float32, direct forced", {1, 256, 50, 84, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 4,
            kGemmOutputDirect, 1, false},
        {"det res4 batch 2, float32 (528 tiles)", {2, 256, 50, 84, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 4,
            kGemmOutputAuto, 1, false},
        {"det res4 batch 1, float16", {1, 256, 50, 84, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 2, kGemmOutputAuto, 1,
            false},
        {"det res5 batch 1, float64 (direct rows)", {1, 512, 25, 42, 512, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 8,
            kGemmOutputAuto, 1, false},
        {"det res3 batch 1, float32 (K 1152)", {1, 128, 100, 167, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 4,
            kGemmOutputAuto, 1, false},
        {"det res5 batch 1, float32, two groups", {1, 512, 25, 42, 512, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1}, 4,
            kGemmOutputAuto, 1, true},
    };
    for (Case const& c : cases)
    {
        DeformConvGeometry geo;
        bool const made = makeGeometry(c.desc, geo).ok();
        GemmOptions options;
        options.output = c.output;
        GemmPlan const plan = planGemm(geo, c.elementBytes, options);
        options.splitK = 1;
        bool const forcedOff = planGemm(geo, c.elementBytes, options).splitK == 1;
        check(made && plan.splitK == c.slices && plan.staged == c.staged && forcedOff,
            std::string("auto split-K plan, ") + c.name + ": " + std::to_string(plan.splitK) + " slice(s), "
                + (plan.staged ? "staged" : "direct"));
    }
    // The room: never shrinks as N, H or W grow, and holds the slices of every chunk that splits (default and small
    // budgets: chunks of images and slices of one image).
    for (size_t budget : {kGemmDefaultColumnBudget, size_t(1) << 20})
    {
        bool ok = true;
        int32_t splitShapes = 0;
        size_t last = 0;
        for (int32_t batch : {1, 2, 4})
            for (int32_t side : {4, 9, 17, 25, 40, 64})
            {
                DeformConvGeometry geo;
                ok = ok && makeGeometry({batch, 256, side, side + 3, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, geo).ok();
                GemmOptions options;
                options.columnBudget = budget;
                GemmPlan const plan = planGemm(geo, 4, options);
                int64_t const chunk = int64_t(plan.images) * plan.pixels;
                splitShapes += plan.splitK > 1;
                ok = ok && plan.stagingBytes >= last
                    && size_t(plan.splitK * stagingSliceElements(chunk * 256, 4)) * 4 <= plan.stagingBytes;
                last = side == 64 ? 0 : plan.stagingBytes;
            }
        check(ok && splitShapes > 0 && splitShapes < 18,
            "auto split-K staging room, " + std::to_string(budget >> 20) + " MiB budget: never shrinks, fits ("
                + std::to_string(splitShapes) + " of 18 shapes split)");
    }
}

template <typename T>
void checkLayer(dcn_deform_conv_desc const& desc, char const* layerName, char const* typeName, unsigned seed)
{
    DeformConvGeometry geo;
    Status const status = makeGeometry(desc, geo);
    std::string const name = std::string(layerName) + ", " + typeName;
    if (!status.ok())
    {
        check(false, name + ": " + status.message);
        return;
    }
    std::mt19937 rng(seed);
    checkTransposes<T>(geo, name, rng);
    withVectorWidth(columnVectorWidth(geo, sizeof(T)), [&](auto width) {
        checkSamplers<T, decltype(width)::value>(geo, name, rng);
        checkZeroApartTileKinds<T, decltype(width)::value>(geo, name, rng);
    });
    checkOutputs<T>(geo, name, rng);
}

} // namespace

// Which way auto sends the product (directOutputByDefault, planGemm): straight into NCHW for one group where the
// output rows are whole 16-byte vectors, through the staging scratch elsewhere; and a forced way is kept.
void checkOutputRule()
{
    struct Case
    {
        char const* name;
        dcn_deform_conv_desc desc;
        size_t elementBytes;
        bool staged;
    };
    Case const cases[] = {
        {"8x8 float16 rows (128 bytes), one group: direct", {1, 16, 8, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 2, false},
        {"25x42 float16 rows (2100 bytes): staged", {1, 16, 25, 42, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 2, true},
        {"8x8 float16 rows (128 bytes), two groups: staged", {1, 16, 8, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1}, 2, true},
        {"3x3 float64 rows (72 bytes): staged", {1, 4, 3, 3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 8, true},
        {"2x2 float64 rows (32 bytes): direct", {1, 4, 2, 2, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 8, false},
    };
    for (Case const& c : cases)
    {
        DeformConvGeometry geo;
        bool const made = makeGeometry(c.desc, geo).ok();
        GemmOptions options;
        bool const autoStaged = made && planGemm(geo, c.elementBytes, options).staged;
        options.output = c.staged ? kGemmOutputDirect : kGemmOutputStaged; // the other way, forced
        bool const forcedStaged = made && planGemm(geo, c.elementBytes, options).staged;
        check(made && autoStaged == c.staged && forcedStaged == !c.staged,
            std::string("auto output, ") + c.name + " (and the other way when forced)");
    }
}

// The launches' grid limits in the plan: a huge batch of tiny images must still transpose at most 65535 images per
// launch (the grid's z), the whole batch or a whole number of chunks, and chunk at most 65535 images (the staged
// output's z).
void checkGridLimits()
{
    for (int32_t batch : {65535, 70000, 200001})
    {
        DeformConvGeometry geo;
        bool const made = makeGeometry({batch, 8, 4, 4, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, geo).ok();
        GemmPlan const plan = planGemm(geo, sizeof(float), GemmOptions{});
        check(made && plan.inputImages <= 65535 && plan.images <= 65535
                && (plan.inputImages == batch || plan.inputImages % plan.images == 0),
            "batch " + std::to_string(batch) + " of 8x4x4: " + std::to_string(plan.images) + " images per chunk, "
                + std::to_string(plan.inputImages) + " per transpose (grid z at most 65535)");
    }
    // One image of more output pixels than kChunkPixelsMax, under a budget that would hold it whole (4 GiB, which
    // DCN_DEPLOY_GEMM_CHUNK_MB allows): sliced, so that the chunk arithmetic (pixels + tile - 1) stays in int32.
    DeformConvGeometry wide;
    bool const made = makeGeometry({1, 1, 1, 2147483637, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1}, wide).ok();
    GemmOptions options;
    options.columnBudget = size_t(4) << 30;
    GemmPlan const plan = planGemm(wide, 2, options);
    check(made && plan.images == 1 && plan.pixels <= kChunkPixelsMax,
        "an image of 2147483637 pixels under a 4 GiB budget: " + std::to_string(plan.pixels) + " pixels per chunk");
}

// Where the product adds a layer's bias (GemmBias, GemmPlan::biasInProduct): auto on channels-last tensors only,
// epilogue wherever the product is staged or writes channels-last, fill never; only for half types, one group,
// unsplit; and only epilogue requires cuBLASLt (auto falls back to the fill).
void checkBiasRule()
{
    struct Case
    {
        char const* name;
        int32_t bias;
        bool channelsLast;
        int32_t output;
        int32_t group;
        int32_t splitK;
        size_t elementBytes;
        bool inProduct;
    };
    Case const cases[] = {
        {"auto, channels-last, fp16", kGemmBiasAuto, true, kGemmOutputAuto, 1, 0, 2, true},
        {"auto, NCHW staged, fp16", kGemmBiasAuto, false, kGemmOutputStaged, 1, 0, 2, false},
        {"auto, channels-last, float32", kGemmBiasAuto, true, kGemmOutputAuto, 1, 0, 4, false},
        {"auto, channels-last, two groups", kGemmBiasAuto, true, kGemmOutputAuto, 2, 0, 2, false},
        {"auto, channels-last, split in 2", kGemmBiasAuto, true, kGemmOutputAuto, 1, 2, 2, false},
        {"epilogue, NCHW staged, fp16", kGemmBiasEpilogue, false, kGemmOutputStaged, 1, 0, 2, true},
        {"epilogue, NCHW direct, fp16", kGemmBiasEpilogue, false, kGemmOutputDirect, 1, 0, 2, false},
        {"epilogue, channels-last, fp16", kGemmBiasEpilogue, true, kGemmOutputAuto, 1, 0, 2, true},
        {"fill, channels-last, fp16", kGemmBiasFill, true, kGemmOutputAuto, 1, 0, 2, false},
        {"fill, NCHW staged, fp16", kGemmBiasFill, false, kGemmOutputStaged, 1, 0, 2, false},
    };
    for (Case const& c : cases)
    {
        DeformConvGeometry geo;
        bool const made = makeGeometry({2, 64, 7, 9, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, c.group, 1}, geo).ok();
        GemmOptions options;
        options.bias = c.bias;
        options.channelsLastTensors = c.channelsLast;
        options.output = c.output;
        options.splitK = c.splitK;
        GemmPlan const plan = planGemm(geo, c.elementBytes, options);
        check(made && plan.biasInProduct == c.inProduct && plan.biasInProductRequired == (c.bias == kGemmBiasEpilogue),
            std::string("bias rule: ") + c.name);
    }
}

int main()
{
    checkOutputRule();
    checkBiasRule();
    checkGridLimits();
    checkSplitKPlan();
    checkAutoSplitKPlan();
    checkSplitKConfigurations();
    // desc: batch, C, H, W, oC, kH, kW, stride h/w, pad top/left/bottom/right, dilation h/w, group, offset group
    struct Layer
    {
        char const* name;
        dcn_deform_conv_desc desc;
    };
    Layer const layers[] = {
        // 80 channels: two channel tiles, 16-byte vectors; 130 output channels: three output tiles
        {"dense", {2, 80, 9, 11, 130, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
        // groups and offset groups, asymmetric stride, padding and dilation, a non-square kernel
        {"grouped", {3, 48, 7, 5, 24, 2, 3, 1, 2, 0, 1, 2, 1, 2, 1, 2, 3}},
        // odd channel counts (one channel per vector), H of 1
        {"odd channels", {2, 6, 1, 13, 6, 1, 3, 1, 1, 0, 1, 0, 1, 1, 2, 3, 3}},
    };
    unsigned seed = 1;
    for (Layer const& layer : layers)
    {
        checkLayer<float>(layer.desc, layer.name, "float32", seed++);
        checkLayer<HostHalf>(layer.desc, layer.name, "float16", seed++);
        checkLayer<double>(layer.desc, layer.name, "float64", seed++);
    }
    std::printf("%d failure(s)\n", emulation::failures);
    return emulation::failures;
}

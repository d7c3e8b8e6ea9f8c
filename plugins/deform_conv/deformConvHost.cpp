// The host (CPU) build of the deformable-convolution forward, from the same arithmetic as the CUDA kernels
// (deformConvMath.h). It exists so that machines without a GPU check the indexing and the math against the
// PyTorch reference through the C ABI; it is written for clarity, not speed.
#include "dcnDtype.h"
#include "dcnStatus.h"
#include "deformConvColumns.h"
#include "deformConvDirectBlock.h"
#include "deformConvDirectChannelsLast.h"
#include "deformConvDirectSharedTaps.h"
#include "deformConvGemmReference.h"
#include "deformConvImplicit.h"
#include "deformConvMath.h"
#include "deformConvShapes.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace dcn
{
namespace
{

// The direct kernel's work items (deformConvDirectBlock.h) one after another, in the CUDA kernel's index order.
template <typename T>
void forwardHost(DeformConvGeometry const& geo, T const* input, T const* offset, T const* weight, T const* bias,
    T const* mask, T* output)
{
    int32_t const blocks = directBlocks(geo);
    for (int32_t n = 0; n < geo.d.batch; ++n)
        for (int32_t block = 0; block < blocks; ++block)
            for (int32_t y = 0; y < geo.outH; ++y)
                for (int32_t x = 0; x < geo.outW; ++x)
                    directOutputBlock<T>(geo, input, offset, weight, bias, mask, output, n, block, y, x);
}

template <typename T>
void forwardTyped(DeformConvGeometry const& geo, void const* input, void const* offset, void const* weight,
    void const* bias, void const* mask, void* output)
{
    forwardHost<T>(geo, static_cast<T const*>(input), static_cast<T const*>(offset), static_cast<T const*>(weight),
        static_cast<T const*>(bias), static_cast<T const*>(mask), static_cast<T*>(output));
}

// The CUDA GEMM path step by step on the host (deformConvGemmPlan.h, deformConvColumns.h): same chunks, same
// layouts, same sampling, and the cuBLAS calls' arguments (stagedProduct, directProduct) run through gemmHost
// (deformConvGemmReference.h).
template <typename T, int Vector>
void columnsHost(DeformConvGeometry const& geo, T const* nhwc, T const* offset, T const* mask, T* columns, int32_t n0,
    int32_t images, int64_t p0, int32_t pixels)
{
    int64_t const total = columnThreads(geo, images, pixels, Vector);
    if (columnIndexFits32(geo, total)) // the index type the CUDA launch picks
        for (uint32_t idx = 0; idx < uint32_t(total); ++idx)
            columnVector<T, Vector>(geo, nhwc, offset, mask, columns, n0, p0, pixels, idx);
    else
        for (int64_t idx = 0; idx < total; ++idx)
            columnVector<T, Vector>(geo, nhwc, offset, mask, columns, n0, p0, pixels, idx);
}

// The tiled sampler as the CUDA kernel runs it, one tile (block) after another.
// With plan.channelsLast, nhwc is the input itself and the zero vector is at `zero` (ZeroApart).
template <typename T, int Vector>
void tiledColumnsHost(GemmPlan const& plan, DeformConvGeometry const& geo, T const* nhwc, T const* zero,
    T const* offset, T const* mask, T* columns, int32_t n0, int32_t images, int64_t p0, int32_t pixels)
{
    using Acc = typename ElementTraits<T>::Acc;
    int32_t const chunkPixels = images * pixels;
    int32_t const tilePixels = plan.tilePixels;
    int32_t const entries = geo.kernelPoints * geo.d.offset_group * tilePixels;
    int32_t const rowVectors = columnRowVectors(geo, Vector);
    int32_t const zeroOffset = plan.channelsLast ? 0 : tileZeroOffset(plan, geo, n0);
    std::vector<TileTaps<Acc>> taps(static_cast<size_t>(entries));
    std::vector<TileRowVector> rowVectorTable(static_cast<size_t>(rowVectors));
    std::vector<TilePixel> pixelTable(static_cast<size_t>(tilePixels));
    for (int32_t r = 0; r < rowVectors; ++r)
        rowVectorTable[size_t(r)] = tileRowVector(geo, Vector, r);
    for (int32_t first = 0; first < chunkPixels; first += tilePixels)
    {
        for (int32_t row = 0; row < tilePixels; ++row)
            pixelTable[size_t(row)] = tilePixel(geo, p0, pixels, chunkPixels, first + row);
        bool selectZero = false; // the CUDA block's choice (tiledColumnsKernel): select only where a tap is outside
        for (int32_t e = 0; e < entries; ++e)
        {
            taps[size_t(e)] = tileEntryTaps<Acc>(geo, offset, mask, n0, pixelTable[size_t(e % tilePixels)],
                e / tilePixels, zeroOffset, plan.channelsLast);
            selectZero = selectZero || tileHasOutsideTap(taps[size_t(e)]);
        }
        int32_t const rows = std::min(tilePixels, chunkPixels - first);
        T* tileColumns = columns + int64_t(first) * geo.d.in_channels * geo.kernelPoints;
        for (int32_t row = 0; row < rows; ++row)
            for (int32_t r = 0; r < rowVectors; ++r)
            {
                T* out = tileColumns + (int64_t(row) * rowVectors + r) * Vector;
                if (selectZero)
                    tileItem<T, Vector, true>(nhwc, zero, taps.data(), rowVectorTable.data(), pixelTable.data(),
                        tilePixels, row, r, out);
                else
                    tileItem<T, Vector>(nhwc, zero, taps.data(), rowVectorTable.data(), pixelTable.data(), tilePixels,
                        row, r, out);
            }
    }
}

template <typename T, int Vector>
void sampleColumnsHost(GemmPlan const& plan, DeformConvGeometry const& geo, T const* nhwc, T const* zero,
    T const* offset, T const* mask, T* columns, int32_t n0, int32_t images, int64_t p0, int32_t pixels)
{
    if (plan.tilePixels > 0)
        tiledColumnsHost<T, Vector>(plan, geo, nhwc, zero, offset, mask, columns, n0, images, p0, pixels);
    else
        columnsHost<T, Vector>(geo, nhwc, offset, mask, columns, n0, images, p0, pixels);
}

// The staged output of one chunk (runStagedChunk's steps): the product into the staging scratch (split-K: a slice
// of it per slice of K), then each output element from it (the slices summed).
template <typename T, typename Staged>
void stagedChunkHost(DeformConvGeometry const& geo, GemmPlan const& plan, T const* weights, T const* columns,
    Staged* staging, T const* bias, T* output, int32_t n0, int32_t images, int64_t p0, int32_t pixels)
{
    int64_t const sliceStride = stagingSliceElements(int64_t(images) * pixels * geo.d.out_channels, sizeof(Staged));
    // biasInProduct (which stages T: stagesNarrow): the product adds the bias before its one rounding (cuBLASLt's
    // epilogue on the GPU; here the scratch holds the bias and the product accumulates into it, the same sums), the
    // transpose none
    bool inProduct = false;
    if constexpr (std::is_same<Staged, T>::value)
    {
        inProduct = bias && plan.biasInProduct;
        if (inProduct)
            for (int64_t pixel = 0; pixel < int64_t(images) * pixels; ++pixel)
                for (int32_t o = 0; o < geo.d.out_channels; ++o)
                    staging[pixel * geo.d.out_channels + o] = bias[o];
    }
    gemmHost<T, Staged>(stagedProduct(geo, images, pixels, plan.outputMajorWeights, plan.splitK, sliceStride),
        weights, columns, staging, inProduct);
    int64_t const outCount = int64_t(images) * geo.d.out_channels * pixels;
    for (int64_t idx = 0; idx < outCount; ++idx)
        stagedOutputElement<T, Staged>(geo, staging, inProduct ? nullptr : bias, output, n0, p0, pixels, idx,
            plan.splitK, sliceStride);
}

// A chunk of a channels-last output (runChannelsLastChunk's steps) at `rows`: the bias written first (or, with
// biasInProduct, added by the product: here the same sums), then the staged product's call accumulated into it;
// split into slices of K, the slices into the staging scratch, then summed with the bias into the rows.
template <typename T>
void channelsLastChunkHost(DeformConvGeometry const& geo, GemmPlan const& plan, T const* weights, T const* columns,
    T const* bias, T* rows, int32_t images, int32_t pixels, typename ElementTraits<T>::Acc* staging)
{
    using Acc = typename ElementTraits<T>::Acc;
    int64_t const count = int64_t(images) * pixels;
    if (plan.splitK > 1)
    {
        int64_t const values = count * geo.d.out_channels;
        int64_t const sliceStride = stagingSliceElements(values, sizeof(Acc));
        gemmHost<T, Acc>(stagedProduct(geo, images, pixels, plan.outputMajorWeights, plan.splitK, sliceStride),
            weights, columns, staging, false);
        for (int64_t idx = 0; idx < values; ++idx)
            channelsLastSumElement<T>(geo, staging, bias, rows, idx, plan.splitK, sliceStride);
        return;
    }
    if (bias)
        for (int64_t row = 0; row < count; ++row)
            std::copy_n(bias, geo.d.out_channels, rows + row * geo.d.out_channels);
    gemmHost<T, T>(stagedProduct(geo, images, pixels, plan.outputMajorWeights), weights, columns, rows,
        bias != nullptr);
}

template <typename T>
void forwardHostGemm(DeformConvGeometry const& geo, GemmOptions const& options, T const* input, T const* offset,
    T const* weight, T const* bias, T const* mask, T* output)
{
    using Acc = typename ElementTraits<T>::Acc;
    dcn_deform_conv_desc const& d = geo.d;
    GemmPlan const plan = planGemm(geo, sizeof(T), options);
    // Every buffer starts as NaN, as a reused workspace would hold anything: what the path reads before writing it
    // (the zero vector) must be cleared by the path itself, as the CUDA launch clears it.
    T const garbage = ElementTraits<T>::fromAcc(std::numeric_limits<Acc>::quiet_NaN());
    std::vector<T> columns(plan.columnsBytes / sizeof(T), garbage), nhwc(plan.nhwcBytes / sizeof(T), garbage),
        weights(plan.weightsBytes / sizeof(T), garbage);
    // The staging scratch: accumulators, or T for a half type without a bias or whose bias the product adds,
    // unsplit (stagesNarrow), as the CUDA path.
    bool const narrow = stagesNarrow<T>(bias, plan.splitK, plan.biasInProduct);
    std::vector<Acc> staging((plan.staged && !narrow) || plan.splitK > 1 ? plan.stagingBytes / sizeof(Acc) : 0,
        std::numeric_limits<Acc>::quiet_NaN());
    std::vector<T> narrowStaging(plan.staged && narrow ? plan.stagingBytes / sizeof(T) : 0, garbage);
    int64_t const weightRows = int64_t(d.out_channels) * geo.channelsPerGroup;
    if (plan.outputMajorWeights)
        for (int64_t idx = 0; idx < weightRows * geo.kernelPoints; ++idx)
            weightElementOutputMajor<T>(geo, weight, weights.data(), idx);
    else
        for (int64_t idx = 0; idx < weightRows; ++idx)
            weightRow<T>(geo, weight, weights.data(), idx);
    std::fill_n(nhwc.begin() + plan.zeroVector, d.in_channels, ElementTraits<T>::fromAcc(Acc(0)));
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    T const* zero = nhwc.data() + plan.zeroVector;
    for (int32_t n0 = 0; n0 < d.batch; n0 += plan.images)
    {
        int32_t const images = std::min(plan.images, d.batch - n0);
        if (!plan.channelsLast && n0 == channelsLastFirst(plan, n0))
            channelsLastHost<T>(geo, input, nhwc.data(), n0, std::min(plan.inputImages, d.batch - n0));
        T const* chunkInput = plan.channelsLast ? input + int64_t(n0) * inputImageElements(geo)
                                                : nhwc.data() + channelsLastChunkStart(plan, geo, n0);
        for (int64_t p0 = 0; p0 < plane; p0 += plan.pixels)
        {
            int32_t const pixels = int32_t(std::min<int64_t>(plan.pixels, plane - p0));
            withVectorWidth(plan.vector, [&](auto width) {
                sampleColumnsHost<T, decltype(width)::value>(plan, geo, chunkInput, zero, offset, mask,
                    columns.data(), n0, images, p0, pixels);
            });
            if (plan.channelsLast)
            {
                channelsLastChunkHost<T>(geo, plan, weights.data(), columns.data(), bias,
                    output + (int64_t(n0) * plane + p0) * d.out_channels, images, pixels, staging.data());
                continue;
            }
            if (plan.staged)
            {
                if (narrow)
                    stagedChunkHost<T>(geo, plan, weights.data(), columns.data(), narrowStaging.data(), bias, output,
                        n0, images, p0, pixels);
                else
                    stagedChunkHost<T>(geo, plan, weights.data(), columns.data(), staging.data(), bias, output, n0,
                        images, p0, pixels);
                continue;
            }
            if (bias)
                for (int32_t img = 0; img < images; ++img)
                    for (int32_t o = 0; o < d.out_channels; ++o)
                        for (int32_t p = 0; p < pixels; ++p)
                            output[(int64_t(n0 + img) * d.out_channels + o) * plane + p0 + p] = bias[o];
            for (int32_t g = 0; g < d.group; ++g)
                gemmHost<T, T>(directProduct(geo, g, n0, images, p0, pixels), columns.data(), weights.data(),
                    output, bias != nullptr);
        }
    }
}

// The implicit-GEMM kernel as the CUDA launch runs it, one block after another (deformConvImplicit.h): the same
// chunks, pixel and taps tables, reduction steps, gathers and rounding of the weights and column tiles; the tensor
// cores' product of each step as a plain loop in the accumulation type.
template <typename T>
void forwardHostImplicit(DeformConvGeometry const& geo, T const* input, T const* offset, T const* weight,
    T const* bias, T const* mask, T* output)
{
    using Acc = typename ElementTraits<T>::Acc;
    using Pack = ImplicitPack<T>;
    dcn_deform_conv_desc const& d = geo.d;
    ImplicitPlan const plan = planImplicit(geo, sizeof(T));
    ImplicitHostWorkspace<T> workspace(geo, plan, weight);
    T* nhwc = workspace.nhwc();
    T* weights = workspace.weights();
    int32_t const plane = geo.outH * geo.outW;
    int32_t const tileM = implicitTileM(geo);
    int32_t const steps = implicitSteps(geo);
    int32_t const tapsEntries = implicitTapsRows(geo) * kImplicitTileN;
    constexpr int32_t kVectors = kImplicitTileK / kImplicitVector;
    std::vector<ImplicitTaps<Acc>> taps(static_cast<size_t>(tapsEntries));
    std::vector<int64_t> inputBase(kImplicitTileN), outputBase(kImplicitTileN);
    std::vector<Pack> weightTile(size_t(tileM) * kVectors), columnTile(size_t(kImplicitTileN) * kVectors);
    std::vector<Acc> acc(size_t(tileM) * kImplicitTileN);
    for (int32_t n0 = 0; n0 < d.batch; n0 += plan.images)
    {
        int32_t const images = std::min(plan.images, d.batch - n0);
        workspace.loadChunk(geo, input, n0, images);
        int32_t const chunkPixels = images * plane;
        for (int32_t g = 0; g < d.group; ++g)
            for (int32_t m0 = 0; m0 < geo.outChannelsPerGroup; m0 += tileM)
                for (int32_t first = 0; first < chunkPixels; first += kImplicitTileN)
                {
                    for (int32_t col = 0; col < kImplicitTileN; ++col)
                    {
                        inputBase[size_t(col)] = tileRowImage(geo, first + col, plane, chunkPixels);
                        outputBase[size_t(col)] = implicitOutputBase(geo, n0, chunkPixels, first, col);
                    }
                    for (int32_t e = 0; e < tapsEntries; ++e)
                        taps[size_t(e)] = implicitTapEntry<Acc>(geo, offset, mask, n0, chunkPixels, first, g, e);
                    std::fill(acc.begin(), acc.end(), Acc(0));
                    ImplicitStep step = implicitStep(geo, g, 0);
                    int32_t const firstOffsetGroupChannel = step.offsetGroupChannel;
                    for (int32_t s = 0; s < steps; ++s)
                    {
                        if (s > 0) // counted as the kernel counts, checked against the step computed outright
                            step = implicitNextStep(geo, firstOffsetGroupChannel, step);
                        ImplicitStep const direct = implicitStep(geo, g, s);
                        if (step.kp != direct.kp || step.channel != direct.channel || step.tapsRow != direct.tapsRow
                            || step.spanGroup != direct.spanGroup
                            || step.offsetGroupChannel != direct.offsetGroupChannel)
                            throw std::logic_error("implicitNextStep disagrees with implicitStep at step "
                                + std::to_string(s) + " of group " + std::to_string(g));
                        T const* stepWeights = weights + implicitStepWeights(geo, step);
                        for (int32_t e = 0; e < tileM * kVectors; ++e) // each vector where the kernel's copy puts it
                        {
                            int32_t row, vector;
                            implicitTileVector(e, row, vector);
                            weightTile[size_t(row) * kVectors + size_t(vector)]
                                = loadPack<T>(stepWeights + implicitWeightSource(geo, g, m0, e));
                        }
                        for (int32_t e = 0; e < kImplicitTileN * kVectors; ++e)
                        {
                            int32_t col, vector;
                            implicitTileVector(e, col, vector);
                            ImplicitTaps<Acc> const& tap = taps[size_t(step.tapsRow) * kImplicitTileN + size_t(col)];
                            Pack corners[4];
                            implicitGather<T, Acc>(nhwc + step.channel
                                    + implicitColumnSource(geo, inputBase[size_t(col)], g, vector), tap, corners);
                            columnTile[size_t(col) * kVectors + size_t(vector)] = implicitBlend<T, Acc>(tap, corners);
                        }
                        for (int32_t m = 0; m < tileM; ++m)
                            for (int32_t col = 0; col < kImplicitTileN; ++col)
                            {
                                Acc sum = Acc(0);
                                for (int32_t kk = 0; kk < kImplicitTileK; ++kk)
                                    sum += ElementTraits<T>::toAcc(vectorElement(
                                               weightTile[size_t(m) * kVectors + size_t(kk / kImplicitVector)],
                                               kk % kImplicitVector))
                                        * ElementTraits<T>::toAcc(vectorElement(
                                            columnTile[size_t(col) * kVectors + size_t(kk / kImplicitVector)],
                                            kk % kImplicitVector));
                                acc[size_t(m) * kImplicitTileN + size_t(col)] += sum;
                            }
                    }
                    for (int32_t m = 0; m < tileM && m0 + m < geo.outChannelsPerGroup; ++m)
                        for (int32_t col = 0; col < kImplicitTileN; ++col)
                        {
                            if (outputBase[size_t(col)] < 0)
                                continue;
                            int32_t const o = g * geo.outChannelsPerGroup + m0 + m;
                            Acc const value = acc[size_t(m) * kImplicitTileN + size_t(col)]
                                + (bias ? ElementTraits<T>::toAcc(bias[o]) : Acc(0));
                            output[outputBase[size_t(col)] + int64_t(o) * plane] = ElementTraits<T>::fromAcc(value);
                        }
                }
    }
}

// The shared-taps kernel's blocks of `count` images from n0 (deformConvDirectSharedTaps.h), as the CUDA kernel runs
// them: each block's tables filled by its threads' shares (over NaN: an entry the shares miss shows), then its
// threads' items one by one.
template <typename T, int Vector, int Cpg, bool ChannelsLastOut>
void sharedTapsHost(DeformConvGeometry const& geo, T const* nhwc, T const* offset, T const* weight, T const* bias,
    T const* mask, T* output, int32_t n0, int32_t count)
{
    using Acc = typename ElementTraits<T>::Acc;
    Acc const nan = std::numeric_limits<Acc>::quiet_NaN();
    size_t const entries = size_t(sharedTapEntries(geo));
    // the tables as the kernel's shared memory holds them: the taps, then the weights in Acc
    size_t const tapBytes = entries * sizeof(SharedTap<Acc>);
    std::vector<SharedTap<Acc>> tables((sharedTapsTablesBytes(geo, sizeof(T)) + sizeof(SharedTap<Acc>) - 1)
        / sizeof(SharedTap<Acc>));
    Acc* const weights = reinterpret_cast<Acc*>(reinterpret_cast<unsigned char*>(tables.data()) + tapBytes);
    size_t const weightEntries = size_t(geo.kernelPoints) * kSharedTapsItems * Vector * Cpg;
    int32_t const channelBlocks = geo.d.in_channels / (Vector * kSharedTapsItems);
    for (int32_t img = 0; img < count; ++img)
        for (int32_t channelBlock = 0; channelBlock < channelBlocks; ++channelBlock)
        {
            int32_t const og = channelBlock * kSharedTapsItems * Vector / geo.channelsPerOffsetGroup;
            for (int64_t pixelBlock = 0; pixelBlock < sharedTapsPixelBlocks(geo); ++pixelBlock)
            {
                for (size_t e = 0; e < entries; ++e)
                {
                    BilinearTaps<Acc>& taps = tables[e].taps;
                    taps.valid = 0xFu;
                    for (int t = 0; t < 4; ++t)
                    {
                        taps.index[t] = 0;
                        taps.weight[t] = nan;
                    }
                }
                std::fill(weights, weights + weightEntries, nan);
                for (int32_t thread = 0; thread < kSharedTapsThreads; ++thread) // each thread's share, as on the GPU
                {
                    fillSharedTapsOfPixel<T>(geo, offset, mask, n0 + img, og, pixelBlock * kSharedTapsPixels,
                        thread % kSharedTapsPixels, tables.data(), thread / kSharedTapsPixels,
                        kSharedTapsThreads / kSharedTapsPixels);
                    fillSharedTapsWeights<T, Vector, Cpg>(geo, weight, channelBlock * kSharedTapsItems * Vector,
                        weights, thread, kSharedTapsThreads);
                }
                for (int32_t thread = 0; thread < kSharedTapsThreads; ++thread)
                    sharedTapsItem<T, Vector, Cpg, ChannelsLastOut>(geo, nhwc, bias, tables.data(), output, n0, img,
                        pixelBlock, channelBlock, thread);
            }
        }
}

// The channels-last direct kernel as the CUDA launch runs it (deformConvDirectBlock.h): the same chunks of images,
// each transposed element by element (as the transpose kernel moves them) into a NaN-filled room, then every item;
// with channelsLastTensors (input and output channels-last themselves) the items of the whole batch from the input.
// sharedTaps: the items in the shared-taps kernel's blocks (sharedTapsRefusal passed).
template <typename T>
void forwardHostDirectChannelsLast(DeformConvGeometry const& geo, size_t budget, bool channelsLastTensors,
    bool sharedTaps, T const* input, T const* offset, T const* weight, T const* bias, T const* mask, T* output)
{
    using Acc = typename ElementTraits<T>::Acc;
    int32_t const images = channelsLastTensors ? geo.d.batch : directChannelsLastImages(geo, sizeof(T), budget);
    T const garbage = ElementTraits<T>::fromAcc(std::numeric_limits<Acc>::quiet_NaN());
    std::vector<T> nhwc(
        channelsLastTensors ? 0 : directChannelsLastWorkspaceBytes(geo, sizeof(T), budget) / sizeof(T), garbage);
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    // directChannelsLastRefusal turned away the layers without an instance, as for the CUDA launch
    withChannelsLastDirectInstance<T>(geo, [&](auto width, auto group) {
        constexpr int kVector = decltype(width)::value;
        constexpr int kCpg = decltype(group)::value;
        std::vector<Acc> table(kCpg > 1 ? size_t(geo.kernelPoints) * kVector * kCpg : 0);
        for (int32_t n0 = 0; n0 < geo.d.batch; n0 += images)
        {
            int32_t const count = std::min(images, geo.d.batch - n0);
            if (!channelsLastTensors)
                channelsLastHost<T>(geo, input, nhwc.data(), n0, count);
            T const* source = channelsLastTensors ? input : nhwc.data();
            if (sharedTaps)
            {
                if (channelsLastTensors)
                    sharedTapsHost<T, kVector, kCpg, true>(geo, source, offset, weight, bias, mask, output, n0, count);
                else
                    sharedTapsHost<T, kVector, kCpg, false>(geo, source, offset, weight, bias, mask, output, n0,
                        count);
                continue;
            }
            if constexpr (kCpg == 1)
            {
                int64_t const items = depthwiseItems(geo, count, kVector);
                for (int64_t idx = 0; idx < items; ++idx)
                    if (channelsLastTensors)
                        depthwiseItem<T, kVector, true>(geo, source, offset, weight, bias, mask, output, n0, idx);
                    else
                        depthwiseItem<T, kVector>(geo, source, offset, weight, bias, mask, output, n0, idx);
            }
            else // as the grouped kernel: each vector's weight table, then its items
                for (int32_t c = 0; c < geo.d.in_channels; c += kVector)
                {
                    fillDirectWeightTable<T, kVector, kCpg>(geo, weight, c, table.data(), 0, 1);
                    for (int32_t img = 0; img < count; ++img)
                        for (int64_t pixel = 0; pixel < plane; ++pixel)
                        {
                            int32_t const y = int32_t(pixel / geo.outW);
                            int32_t const x = int32_t(pixel % geo.outW);
                            if (channelsLastTensors)
                                channelsLastDirectItem<T, kVector, kCpg, true>(geo, source, offset, weight,
                                    table.data(), bias, mask, output, n0, img, c, y, x);
                            else
                                channelsLastDirectItem<T, kVector, kCpg>(geo, source, offset, weight, table.data(),
                                    bias, mask, output, n0, img, c, y, x);
                        }
                }
        }
    });
}

// The checks every host entry makes, then body<T>() for the dtype (tag: a T value). refusal(geo): "" or why this
// entry cannot take the layer, asked once the geometry is made. Empty batches succeed at once.
template <typename Refusal, typename Body>
Status hostEntry(char const* entry, dcn_deform_conv_desc const* desc, int32_t dtype, void const* input,
    void const* offset, void const* weight, void* output, DeformConvGeometry& geo, Refusal&& refusal, Body&& body)
{
    if (!desc)
        return Status::invalid(std::string(entry) + ": desc must not be NULL");
    Status status = makeGeometry(*desc, geo);
    if (!status.ok())
        return status;
    std::string const refused = refusal(geo);
    if (!refused.empty())
        return Status::error(DCN_ERROR_UNSUPPORTED, std::string(entry) + ": " + refused);
    if (desc->batch > 0 && (!input || !offset || !weight || !output))
        return Status::invalid(std::string(entry) + ": input, offset, weight and output must not be NULL "
                                                    "(bias and mask may be)");
    if (desc->batch == 0)
        return Status::success();
    switch (dtype)
    {
    case DCN_FLOAT32: body(float{}); break;
    case DCN_FLOAT64: body(double{}); break;
    case DCN_FLOAT16: body(HostHalf{}); break;
    case DCN_BFLOAT16: body(HostBFloat16{}); break;
    default:
        return Status::unsupportedDtype(dtype);
    }
    return Status::success();
}

// An entry that takes every layer the geometry allows.
template <typename Body>
Status hostEntry(char const* entry, dcn_deform_conv_desc const* desc, int32_t dtype, void const* input,
    void const* offset, void const* weight, void* output, DeformConvGeometry& geo, Body&& body)
{
    return hostEntry(entry, desc, dtype, input, offset, weight, output, geo,
        [](DeformConvGeometry const&) { return std::string(); }, body);
}

// As the CUDA launch (deformConvLaunch.cu): with channels-last tensors the kernels read the input where it is, and
// write the output, in channel vectors of up to 16 bytes (ChannelPack, aligned as such), so a misaligned input or
// output is refused rather than read (a misaligned vector load faults on the host too).
Status channelsLastAlignment(char const* entry, void const* input, void const* output)
{
    std::string const misaligned = channelsLastAlignmentRefusal(input, output);
    return misaligned.empty() ? Status::success() : Status::invalid(std::string(entry) + ": " + misaligned);
}

} // namespace
} // namespace dcn

DCN_API int32_t dcn_deform_conv2d_forward_host(const dcn_deform_conv_desc* desc, int32_t dtype, const void* input,
    const void* offset, const void* weight, const void* bias, const void* mask, void* output)
{
    return dcn::guarded([&] {
        dcn::DeformConvGeometry geo;
        return dcn::hostEntry("dcn_deform_conv2d_forward_host", desc, dtype, input, offset, weight, output, geo,
            [&](auto tag) { dcn::forwardTyped<decltype(tag)>(geo, input, offset, weight, bias, mask, output); });
    });
}

DCN_API int32_t dcn_deform_conv2d_forward_host_direct_channels_last(const dcn_deform_conv_desc* desc, int32_t dtype,
    const void* input, const void* offset, const void* weight, const void* bias, const void* mask, void* output,
    size_t column_budget_bytes, int32_t flags)
{
    return dcn::guarded([&] {
        if (flags & ~(DCN_FORWARD_CHANNELS_LAST | DCN_FORWARD_SHARED_TAPS))
            return dcn::Status::invalid("dcn_deform_conv2d_forward_host_direct_channels_last: flags must be a sum of "
                                        "DCN_FORWARD_CHANNELS_LAST (2) and DCN_FORWARD_SHARED_TAPS (4), got "
                + std::to_string(flags));
        bool const channelsLast = (flags & DCN_FORWARD_CHANNELS_LAST) != 0;
        bool const sharedTaps = (flags & DCN_FORWARD_SHARED_TAPS) != 0;
        if (channelsLast)
        {
            dcn::Status const aligned = dcn::channelsLastAlignment(
                "dcn_deform_conv2d_forward_host_direct_channels_last", input, output);
            if (!aligned.ok())
                return aligned;
        }
        dcn::DeformConvGeometry geo;
        return dcn::hostEntry("dcn_deform_conv2d_forward_host_direct_channels_last", desc, dtype, input, offset,
            weight, output, geo,
            [&](dcn::DeformConvGeometry const& made) {
                if (!dcn::validDtype(dtype))
                    return std::string();
                return sharedTaps ? dcn::sharedTapsRefusal(made, dcn::dtypeBytes(dtype))
                                  : dcn::directChannelsLastRefusal(made, dcn::dtypeBytes(dtype));
            },
            [&](auto tag) {
                using T = decltype(tag);
                dcn::forwardHostDirectChannelsLast<T>(geo,
                    column_budget_bytes ? column_budget_bytes : dcn::kGemmDefaultColumnBudget, channelsLast,
                    sharedTaps, static_cast<T const*>(input), static_cast<T const*>(offset),
                    static_cast<T const*>(weight), static_cast<T const*>(bias), static_cast<T const*>(mask),
                    static_cast<T*>(output));
            });
    });
}

DCN_API int32_t dcn_deform_conv2d_forward_host_gemm(const dcn_deform_conv_desc* desc, int32_t dtype,
    const void* input, const void* offset, const void* weight, const void* bias, const void* mask, void* output,
    size_t column_budget_bytes, int32_t output_mode, int32_t sampler, int32_t tile_items, int32_t chunks,
    int32_t product, int32_t split_k, int32_t flags)
{
    return dcn::guarded([&] {
        // The first option out of range, as "NAME must be ALLOWED, got VALUE".
        std::string problem;
        auto require = [&problem](bool valid, char const* name, char const* allowed, int32_t value) {
            if (!valid && problem.empty())
                problem = std::string("dcn_deform_conv2d_forward_host_gemm: ") + name + " must be " + allowed
                    + ", got " + std::to_string(value);
        };
        // output_mode 3: staged, a half type's bias added by the product (kGemmBiasEpilogue)
        bool const biasInProduct = output_mode == 3;
        require(dcn::validGemmOutput(output_mode) || biasInProduct, "output_mode",
            "0 (auto), 1 (direct), 2 (staged) or 3 (staged, the bias added by the product)", output_mode);
        require(dcn::validGemmSampler(sampler), "sampler", "0 (auto), 1 (tiled) or 2 (per thread)", sampler);
        require(tile_items >= 0, "tile_items", "0 (the default) or positive", tile_items);
        require(dcn::validGemmChunks(chunks), "chunks", "0 (even) or 1 (full)", chunks);
        require(dcn::validGemmProduct(product), "product", "0 (TN) or 1 (NN)", product);
        require(dcn::validGemmSplitK(split_k), "split_k", "0 (auto), 1, 2, 4 or 8", split_k);
        require(flags == 0 || flags == DCN_FORWARD_CHANNELS_LAST, "flags", "0 or DCN_FORWARD_CHANNELS_LAST (2)", flags);
        bool const channelsLast = flags == DCN_FORWARD_CHANNELS_LAST;
        require(!channelsLast || output_mode == 0 || biasInProduct, "output_mode with DCN_FORWARD_CHANNELS_LAST",
            "0 (the product writes the channels-last output) or 3 (and adds a half type's bias)", output_mode);
        if (!problem.empty())
            return dcn::Status::invalid(problem);
        if (channelsLast)
        {
            dcn::Status const aligned
                = dcn::channelsLastAlignment("dcn_deform_conv2d_forward_host_gemm", input, output);
            if (!aligned.ok())
                return aligned;
        }
        dcn::DeformConvGeometry geo;
        dcn::GemmOptions options;
        if (column_budget_bytes)
            options.columnBudget = column_budget_bytes;
        // with channels-last tensors the product writes the output whatever the mode (auto's, 0)
        options.output = biasInProduct ? (channelsLast ? dcn::kGemmOutputAuto : dcn::kGemmOutputStaged) : output_mode;
        options.channelsLastTensors = channelsLast;
        options.bias = biasInProduct ? dcn::kGemmBiasEpilogue : dcn::kGemmBiasAuto;
        options.sampler = sampler;
        options.chunks = chunks;
        options.product = product;
        options.splitK = split_k;
        if (tile_items)
            options.tileItems = tile_items;
        return dcn::hostEntry("dcn_deform_conv2d_forward_host_gemm", desc, dtype, input, offset, weight, output, geo,
            [&](auto tag) {
                using T = decltype(tag);
                dcn::forwardHostGemm<T>(geo, options, static_cast<T const*>(input), static_cast<T const*>(offset),
                    static_cast<T const*>(weight), static_cast<T const*>(bias), static_cast<T const*>(mask),
                    static_cast<T*>(output));
            });
    });
}

DCN_API int32_t dcn_deform_conv2d_forward_host_implicit(const dcn_deform_conv_desc* desc, int32_t dtype,
    const void* input, const void* offset, const void* weight, const void* bias, const void* mask, void* output)
{
    return dcn::guarded([&] {
        dcn::DeformConvGeometry geo;
        return dcn::hostEntry("dcn_deform_conv2d_forward_host_implicit", desc, dtype, input, offset, weight, output,
            geo, [&](dcn::DeformConvGeometry const& made) {
                return dcn::implicitKernelRefusal(made, dtype, /*hostBuild=*/true);
            },
            [&](auto tag) {
                using T = decltype(tag);
                dcn::forwardHostImplicit<T>(geo, static_cast<T const*>(input), static_cast<T const*>(offset),
                    static_cast<T const*>(weight), static_cast<T const*>(bias), static_cast<T const*>(mask),
                    static_cast<T*>(output));
            });
    });
}

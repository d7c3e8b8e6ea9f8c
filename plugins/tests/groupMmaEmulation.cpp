// The tensor-core group kernel's CUDA source (deformConvGroupMma.cuh) run on the CPU, block after block, each
// block's threads as threads (cudaBlockEmulation.h), its warps' mma.m16n8k16 products by the emulation, which lays
// the fragments out as PTX documents them. Checked against two references:
// - the kernel's own samples (the wide item's taps, gathers and float32 blend, by the same host functions), rounded
//   to the element type, times the weights summed in double: equal but for the float32 sums' order, so within one
//   rounding of the output; this checks the tiles, the fragments and the epilogue exactly;
// - the host library's forward in float64: within the rounding of the samples to the element type (the GEMM path's
//   precision); this checks the sampling's semantics (offsets past the image, masks, asymmetric everything).
// On layers of 16 channels a group in and out, of 8, 4, 2 and 1 (blocks of 16 channels of whole groups, their
// weights block-diagonal) and of 32 (blocks of 32): several groups and offset groups, images whose pixels end inside a
// warp and inside a block (warps wholly past them), a row or a column of one pixel, non-square kernels; float16 and
// bfloat16; NCHW and channels-last outputs. Shared memory starts as NaN and past the block's size as a canary, the
// output as NaN. Also groupMmaRefusal's rule. Prints one "ok"/"FAIL" line per check and "<n> failure(s)"; the exit
// code is the failure count.
#include "dcnDtype.h"
#include "dcn_kernels.h"
#include "deformConvGroupMma.h"
#include "deformConvShapes.h"

#include "cudaBlockEmulation.h"
#include "emulationLayers.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "deformConvGroupMma.cuh" // after the emulation: the kernel uses its CUDA stand-ins

namespace
{

using namespace dcn;

using emulation::check;
using emulation::Layer;
using emulation::Tensors;

// The input of all images channels-last, (N, H, W, C), as the launch reads it (the host builds' transpose).
template <typename T>
std::vector<T> channelsLast(DeformConvGeometry const& geo, std::vector<T> const& nchw)
{
    std::vector<T> nhwc(nchw.size());
    channelsLastHost<T>(geo, nchw.data(), nhwc.data(), 0, geo.d.batch);
    return nhwc;
}

// out[n, o, y, x] (NCHW) in double from the samples as the kernel makes them (rounded to T) and the weights, each
// output channel over its own group's input channels.
template <typename T>
std::vector<double> roundedSamplesReference(DeformConvGeometry const& geo, Tensors<T> const& t,
    std::vector<T> const& nhwc)
{
    dcn_deform_conv_desc const& d = geo.d;
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    std::vector<double> out(size_t(d.batch) * d.out_channels * plane, 0.0);
    T const* mask = t.mask.empty() ? nullptr : t.mask.data();
    int32_t const cpg = geo.channelsPerGroup;
    int32_t const channels = groupMmaBlockChannels(cpg);
    for (int32_t n = 0; n < d.batch; ++n)
        for (int32_t c = 0; c < d.in_channels; c += channels) // a block: one group of 16 or 32, or smaller ones
        {
            int32_t const og = c / geo.channelsPerOffsetGroup;
            T const* image = nhwc.data() + int64_t(n) * inputImageElements(geo) + c;
            int64_t const firstPoint = (int64_t(n) * d.offset_group + og) * geo.kernelPoints;
            for (int64_t pixel = 0; pixel < plane; ++pixel)
            {
                int32_t const y = int32_t(pixel / geo.outW);
                int32_t const x = int32_t(pixel % geo.outW);
                double sums[kGroupMmaMaxChannels] = {};
                for (int32_t i = 0; i < d.kernel_h; ++i)
                    for (int32_t j = 0; j < d.kernel_w; ++j)
                    {
                        int32_t const kp = i * d.kernel_w + j;
                        T const* dyAt = t.offset.data() + 2 * (firstPoint + kp) * plane + pixel;
                        T const* scaleAt = mask ? mask + (firstPoint + kp) * plane + pixel : nullptr;
                        BilinearTaps<float> const taps
                            = offsetTaps<float>(d, dyAt, plane, scaleAt, baseRow(d, y, i), baseCol(d, x, j));
                        float sample[kGroupMmaMaxChannels];
                        for (int32_t half = 0; half < channels / 16; ++half) // as the kernel: 16 at a time
                        {
                            ChannelPack<T, 16> packs[4];
                            gatherNeighbours<T, 16, float, uint32_t>(image + 16 * half, taps, d.in_channels, packs);
                            float blended[16];
                            blendInAcc<T, 16, true>(packs, taps.weight, taps.valid, blended);
                            std::copy(blended, blended + 16, sample + 16 * half);
                        }
                        for (int32_t o = 0; o < channels; ++o)
                            for (int32_t l = o / cpg * cpg; l < (o / cpg + 1) * cpg; ++l) // output o's group
                            {
                                double const rounded = ElementTraits<T>::toAcc(ElementTraits<T>::fromAcc(sample[l]));
                                double const w = ElementTraits<T>::toAcc(
                                    t.weight[(int64_t(c + o) * cpg + l % cpg) * geo.kernelPoints + kp]);
                                sums[o] += w * rounded;
                            }
                    }
                for (int32_t o = 0; o < channels; ++o)
                    out[(size_t(n) * d.out_channels + c + o) * plane + pixel]
                        = sums[o] + (t.bias.empty() ? 0.0 : double(ElementTraits<T>::toAcc(t.bias[c + o])));
            }
        }
    return out;
}

// Every block of the launch (deformConvGroupMma.cu's grid over all images, n0 = 0), emulated; "" or the first
// failure.
template <typename T, bool ChannelsLastOut>
std::string emulate(DeformConvGeometry const& geo, Tensors<T> const& t, std::vector<T> const& nhwc,
    std::vector<T>& output)
{
    int32_t const channels = groupMmaBlockChannels(geo.channelsPerGroup);
    size_t const shared = groupMmaSharedBytes(channels, geo.kernelPoints);
    dim3 const grid{unsigned(groupMmaPixelBlocks(geo)), unsigned(geo.d.in_channels / channels), unsigned(geo.d.batch)};
    gridDim = grid;
    blockDim = dim3{unsigned(kGroupMmaThreads), 1, 1};
    T const* bias = t.bias.empty() ? nullptr : t.bias.data();
    T const* mask = t.mask.empty() ? nullptr : t.mask.data();
    auto body = [&] {
        if (channels == 32)
            groupMmaKernel<T, 32, ChannelsLastOut>(geo, nhwc.data(), t.offset.data(), t.weight.data(), bias, mask,
                output.data(), 0);
        else
            groupMmaKernel<T, 16, ChannelsLastOut>(geo, nhwc.data(), t.offset.data(), t.weight.data(), bias, mask,
                output.data(), 0);
    };
    return emulation::runGridPoisoned(grid, shared, body);
}

// "<layer>, <type>, NCHW out" (or NHWC): a check's name.
std::string caseName(Layer const& layer, char const* typeName, bool channelsLastOut)
{
    return std::string(layer.name) + ", " + typeName + (channelsLastOut ? ", NHWC out" : ", NCHW out");
}

// The output element of (n, o, pixel) in an NCHW or channels-last output.
size_t outputIndex(DeformConvGeometry const& geo, bool channelsLastOut, size_t n, size_t o, size_t pixel)
{
    size_t const plane = size_t(geo.outH) * geo.outW;
    return channelsLastOut ? (n * plane + pixel) * geo.d.out_channels + o
                           : (n * geo.d.out_channels + o) * plane + pixel;
}

// The layer's float64 reference (the host library) into `expected` and the kernel's output, NaN where never
// written, into `output`; "" or the first failure.
template <typename T, bool ChannelsLastOut>
std::string referenceAndKernel(Layer const& layer, DeformConvGeometry const& geo, Tensors<T> const& t,
    std::vector<T> const& nhwc, std::vector<double>& expected, std::vector<T>& output)
{
    std::string const failed = emulation::referenceForward(layer, geo, t, expected);
    if (!failed.empty())
        return failed;
    output.assign(expected.size(), ElementTraits<T>::fromAcc(float(NAN)));
    return emulate<T, ChannelsLastOut>(geo, t, nhwc, output);
}

template <typename T, bool ChannelsLastOut>
void runLayer(Layer const& layer, char const* typeName, int32_t dtype, double samplesTolerance,
    double referenceTolerance)
{
    std::string const what = caseName(layer, typeName, ChannelsLastOut);
    DeformConvGeometry geo;
    Status const status = makeGeometry(layer.desc, geo);
    std::string const refusal = status.ok() ? groupMmaRefusal(geo, dtype) : status.message;
    if (!refusal.empty())
    {
        check(false, what + " refused: " + refusal);
        return;
    }
    Tensors<T> const t = emulation::makeTensors<T>(layer, geo, 29);
    std::vector<T> const nhwc = channelsLast(geo, t.input);
    std::vector<double> expected;
    std::vector<T> output;
    std::string const failure = referenceAndKernel<T, ChannelsLastOut>(layer, geo, t, nhwc, expected, output);
    if (!failure.empty())
    {
        check(false, what + ": " + failure);
        return;
    }
    std::vector<double> const rounded = roundedSamplesReference(geo, t, nhwc);
    double peak = 0;
    for (double v : expected)
        peak = std::max(peak, std::fabs(v));
    size_t const plane = size_t(geo.outH) * geo.outW;
    size_t unwritten = 0, pastRounding = 0;
    double error = 0;
    for (size_t n = 0; n < size_t(layer.desc.batch); ++n)
        for (size_t o = 0; o < size_t(layer.desc.out_channels); ++o)
            for (size_t p = 0; p < plane; ++p)
            {
                size_t const nchw = (n * layer.desc.out_channels + o) * plane + p;
                double const got = ElementTraits<T>::toAcc(output[outputIndex(geo, ChannelsLastOut, n, o, p)]);
                if (std::isnan(got))
                {
                    ++unwritten;
                    continue;
                }
                if (std::fabs(got - rounded[nchw]) > samplesTolerance * std::fabs(rounded[nchw]) + 1e-5 * peak)
                    ++pastRounding;
                error = std::max(error, std::fabs(got - expected[nchw]));
            }
    char detail[200];
    std::snprintf(detail, sizeof(detail),
        ": %zu element(s) never written, %zu past one rounding of its own samples' sum, peak-relative error against "
        "the float64 reference %.2e (< %.0e)",
        unwritten, pastRounding, error / peak, referenceTolerance);
    check(unwritten == 0 && pastRounding == 0 && peak > 0 && error / peak < referenceTolerance, what + detail);
}

template <typename T>
void runLayers(std::vector<Layer> const& layers, char const* typeName, int32_t dtype, double samplesTolerance,
    double referenceTolerance)
{
    for (Layer const& layer : layers)
    {
        runLayer<T, false>(layer, typeName, dtype, samplesTolerance, referenceTolerance);
        runLayer<T, true>(layer, typeName, dtype, samplesTolerance, referenceTolerance);
    }
}

DeformConvGeometry geometryOf(dcn_deform_conv_desc const& desc)
{
    DeformConvGeometry geo{};
    Status const status = makeGeometry(desc, geo);
    if (!status.ok())
        std::printf("bad test layer: %s\n", status.message.c_str());
    return geo;
}

// Values the tile cannot hold, put into a layer's random tensors: infinities and a NaN in the input (the
// non-finite layer), or masks of about 3e4 with weights of about 1e-3 (samples past float16's 65504, outputs of the
// usual size).
enum class Extremes
{
    nonFinite,
    largeMasks,
};

template <typename T>
void setElement(std::vector<T>& values, std::vector<double>& wide, size_t i, double value)
{
    values[i] = ElementTraits<T>::fromAcc(float(value));
    wide[i] = double(ElementTraits<T>::toAcc(values[i]));
}

template <typename T>
void putExtremes(Tensors<T>& t, Extremes extremes)
{
    if (extremes == Extremes::nonFinite)
    {
        double const inf = std::numeric_limits<double>::infinity();
        size_t const n = t.input.size();
        setElement(t.input, t.input64, n / 7, inf);
        setElement(t.input, t.input64, n / 3, -inf);
        setElement(t.input, t.input64, n / 2 + 5, std::numeric_limits<double>::quiet_NaN());
        return;
    }
    for (size_t i = 0; i < t.mask.size(); ++i)
        setElement(t.mask, t.mask64, i, 3e4 * t.mask64[i]);
    for (size_t i = 0; i < t.weight.size(); ++i)
        setElement(t.weight, t.weight64, i, 1e-3 * t.weight64[i]);
}

// The layer with extreme values against the float64 reference rounded to T: the same NaNs and infinities (each
// group's outputs by its own samples, as the reference), the finite outputs within `tolerance` of the finite peak.
template <typename T, bool ChannelsLastOut>
void runExtremeLayer(Layer const& layer, Extremes extremes, char const* typeName, double tolerance)
{
    std::string const what = caseName(layer, typeName, ChannelsLastOut);
    DeformConvGeometry const geo = geometryOf(layer.desc);
    Tensors<T> t = emulation::makeTensors<T>(layer, geo, 31);
    putExtremes(t, extremes);
    std::vector<T> const nhwc = channelsLast(geo, t.input);
    std::vector<double> expected;
    std::vector<T> output;
    std::string const failure = referenceAndKernel<T, ChannelsLastOut>(layer, geo, t, nhwc, expected, output);
    if (!failure.empty())
    {
        check(false, what + ": " + failure);
        return;
    }
    size_t const plane = size_t(geo.outH) * geo.outW;
    double peak = 0;
    size_t nonFinite = 0;
    for (double v : expected)
    {
        double const rounded = ElementTraits<T>::toAcc(ElementTraits<T>::fromAcc(float(v)));
        if (std::isfinite(rounded))
            peak = std::max(peak, std::fabs(v));
        else
            ++nonFinite;
    }
    size_t wrongClass = 0;
    double error = 0;
    for (size_t n = 0; n < size_t(layer.desc.batch); ++n)
        for (size_t o = 0; o < size_t(layer.desc.out_channels); ++o)
            for (size_t p = 0; p < plane; ++p)
            {
                double const want = expected[(n * layer.desc.out_channels + o) * plane + p];
                double const rounded = ElementTraits<T>::toAcc(ElementTraits<T>::fromAcc(float(want)));
                double const got = ElementTraits<T>::toAcc(output[outputIndex(geo, ChannelsLastOut, n, o, p)]);
                if (std::isnan(rounded) || std::isinf(rounded))
                    wrongClass += std::isnan(rounded) ? !std::isnan(got) : got != rounded;
                else if (!std::isfinite(got))
                    ++wrongClass;
                else
                    error = std::max(error, std::fabs(got - want));
            }
    char detail[200];
    std::snprintf(detail, sizeof(detail),
        ": %zu non-finite outputs expected, %zu of all outputs of another kind (NaN, infinite, finite) than the "
        "reference's; peak-relative error of the finite ones %.2e (< %.0e)",
        nonFinite, wrongClass, error / peak, tolerance);
    check(wrongClass == 0 && peak > 0 && error / peak < tolerance
            && (extremes == Extremes::largeMasks || nonFinite > 0),
        what + detail);
}

template <typename T>
void runExtremeLayers(char const* typeName, double tolerance)
{
    // desc: batch, C, H, W, oC, kH, kW, stride h/w, pad top/left/bottom/right, dilation h/w, group, offset group.
    Layer const fours{"groups of 4, non-finite inputs", {2, 32, 9, 17, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 8, 1}, true,
        true, 2.0};
    Layer const sixteens{"groups of 16, non-finite inputs", {1, 32, 9, 17, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2},
        true, false, 2.0};
    Layer const large{"groups of 8, masks of 3e4", {1, 32, 9, 17, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4, 1}, true, true,
        2.0};
    Layer const thirtyTwos{"groups of 32, non-finite inputs", {1, 64, 9, 17, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1},
        true, true, 2.0};
    Layer const largeThirtyTwos{"groups of 32, masks of 3e4", {1, 64, 7, 9, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2},
        true, false, 2.0};
    for (Layer const* layer : {&fours, &sixteens, &thirtyTwos})
    {
        runExtremeLayer<T, false>(*layer, Extremes::nonFinite, typeName, tolerance);
        runExtremeLayer<T, true>(*layer, Extremes::nonFinite, typeName, tolerance);
    }
    for (Layer const* layer : {&large, &largeThirtyTwos})
    {
        runExtremeLayer<T, false>(*layer, Extremes::largeMasks, typeName, tolerance);
        runExtremeLayer<T, true>(*layer, Extremes::largeMasks, typeName, tolerance);
    }
}


void checkRefusals()
{
    // desc: batch, C, H, W, oC, kH, kW, stride h/w, pad top/left/bottom/right, dilation h/w, group, offset group.
    DeformConvGeometry const sixteens = geometryOf({1, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4, 1});
    DeformConvGeometry const twos = geometryOf({1, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 32, 2});
    DeformConvGeometry const depthwise = geometryOf({1, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 64, 1});
    DeformConvGeometry const thirtyTwos = geometryOf({1, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1});
    DeformConvGeometry const threes = geometryOf({1, 48, 8, 8, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 16, 1});
    DeformConvGeometry const wider = geometryOf({1, 64, 8, 8, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4, 1});
    DeformConvGeometry const eleven = geometryOf({1, 64, 12, 12, 64, 11, 11, 1, 1, 5, 5, 5, 5, 1, 1, 4, 1});
    DeformConvGeometry const thirty = geometryOf({1, 64, 8, 8, 64, 6, 5, 1, 1, 2, 2, 3, 2, 1, 1, 2, 1});
    DeformConvGeometry const split = geometryOf({1, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 16, 8});
    DeformConvGeometry const splitThirtyTwos = geometryOf({1, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, 4});
    std::string const float32 = groupMmaRefusal(sixteens, DCN_FLOAT32);
    std::string const three = groupMmaRefusal(threes, DCN_FLOAT16);
    std::string const more = groupMmaRefusal(wider, DCN_FLOAT16);
    std::string const big = groupMmaRefusal(eleven, DCN_BFLOAT16);
    std::string const bigThirtyTwos = groupMmaRefusal(thirty, DCN_FLOAT16);
    std::string const across = groupMmaRefusal(split, DCN_FLOAT16);
    std::string const acrossThirtyTwos = groupMmaRefusal(splitThirtyTwos, DCN_FLOAT16);
    check(groupMmaRefusal(sixteens, DCN_FLOAT16).empty() && groupMmaRefusal(sixteens, DCN_BFLOAT16).empty()
            && groupMmaRefusal(twos, DCN_FLOAT16).empty() && groupMmaRefusal(depthwise, DCN_BFLOAT16).empty()
            && groupMmaRefusal(thirtyTwos, DCN_FLOAT16).empty()
            && float32.find("float16 and bfloat16") != std::string::npos
            && three.find("groups of 1, 2, 4, 8, 16 or 32 channels in and out, got 3 and 3") != std::string::npos
            && more.find("got 16 and 32") != std::string::npos
            && big.find("121 kernel points need") != std::string::npos
            && bigThirtyTwos.find("30 kernel points need") != std::string::npos
            && across.find("blocks of 16 within offset groups, got 8") != std::string::npos
            && acrossThirtyTwos.find("blocks of 32 within offset groups, got 16") != std::string::npos,
        "groupMmaRefusal: takes half groups of 16, of 2, of 1 and of 32 at 3x3; refuses float32 (" + float32
            + "), groups of 3 (" + three + "), 32 outputs a group of 16 (" + more + "), 11x11 (" + big
            + "), 6x5 in groups of 32 (" + bigThirtyTwos + "), offset groups of 8 channels (" + across
            + "), groups of 32 in offset groups of 16 (" + acrossThirtyTwos + ")");
}

// desc: batch, C, H, W, oC, kH, kW, stride h/w, pad top/left/bottom/right, dilation h/w, group, offset group.
std::vector<Layer> layers()
{
    return {
        // 153 pixels: the second block's first warp cut short, its other three wholly past the image
        {"3 groups, 3x3", {2, 48, 9, 17, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3, 1}, true, true, 2.0},
        // an offset group per group, asymmetric stride, padding and dilation, a 2x3 kernel, far offsets, v1
        {"asymmetric, far offsets", {1, 32, 7, 12, 32, 2, 3, 2, 1, 0, 2, 1, 0, 1, 2, 2, 2}, false, false, 12.0},
        // two groups to an offset group
        {"4 groups, 2 offset groups", {1, 64, 5, 7, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4, 2}, true, true, 3.0},
        {"5x5", {1, 48, 6, 6, 48, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 3, 3}, true, true, 3.0},
        // smaller groups, block-diagonal weights: 8 groups of 8 (4 offset groups, grouped res4's structure), 16 of
        // 4, 16 of 2 (one offset group per block of 16 channels)
        {"groups of 8", {2, 64, 9, 17, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 8, 4}, true, true, 2.0},
        {"groups of 4", {1, 64, 7, 12, 64, 2, 3, 2, 1, 0, 2, 1, 0, 1, 2, 16, 1}, true, false, 12.0},
        {"groups of 2", {1, 32, 6, 9, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 16, 2}, false, true, 3.0},
        {"depth-wise", {2, 32, 9, 5, 32, 3, 3, 1, 1, 1, 1, 1, 1, 2, 1, 32, 1}, true, true, 4.0},
        {"one row", {2, 16, 1, 40, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, true, true, 3.0},
        {"one column", {1, 32, 37, 1, 32, 3, 1, 1, 1, 2, 0, 1, 0, 2, 1, 2, 1}, true, false, 1.5},
        // blocks of 32 channels (groups of 32, ResNeXt's c5): two groups, the second block's warps cut short; an
        // offset group per group with everything asymmetric, far offsets; 5x5, past the default 48 KiB of shared
        // memory (the launch opts in)
        {"groups of 32", {2, 64, 9, 17, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1}, true, true, 2.0},
        {"groups of 32, asymmetric", {1, 64, 7, 12, 64, 2, 3, 2, 1, 0, 2, 1, 0, 1, 2, 2, 2}, false, true, 12.0},
        {"groups of 32, 5x5", {1, 96, 6, 6, 96, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 3, 1}, true, true, 3.0},
    };
}

} // namespace

// The negative controls of the sanitizer builds (CMakeLists.txt, dcn_add_sanitized_emulation), which
// tests/test_plugin_host.py expects to be reported: they show that a clean run of the kernel above is not clean only
// because the tool sees nothing. For ThreadSanitizer, one emulated block in which thread 0 writes a shared-memory
// word and thread 1 reads it with no barrier between; for AddressSanitizer, an emulated block whose thread reads one
// element past a tensor's end, as a gather past the image would. Each: one emulated block of one warp running
// `body`, then a line saying `what` it did (and the emulation's failure, if any).
int runControl(char const* what, std::function<void()> const& body)
{
    gridDim = dim3{1, 1, 1};
    blockDim = dim3{32, 1, 1};
    std::string const failure = emulation::runGridPoisoned(dim3{1, 1, 1}, 16, body);
    std::printf("%s%s\n", what, failure.empty() ? "" : (": " + failure).c_str());
    return 0;
}

int raceControl()
{
    static std::atomic<int> seen{0};
    return runControl("race control: thread 0 wrote a shared word that thread 1 read, with no barrier between", [] {
        unsigned char* const shared = dcn::dynamicShared();
        if (threadIdx.x == 0)
            shared[0] = 1;
        else if (threadIdx.x == 1)
            seen.store(shared[0], std::memory_order_relaxed);
    });
}

int overflowControl()
{
    static std::atomic<float> seen{0.0f};
    std::vector<float> const tensor(7, 1.0f);
    float const* const data = tensor.data();
    size_t const pastTheEnd = tensor.size();
    return runControl("overflow control: a thread read one element past a tensor's end", [data, pastTheEnd] {
        if (threadIdx.x == 0)
            seen.store(data[pastTheEnd], std::memory_order_relaxed);
    });
}

int main(int argc, char** argv)
{
    std::string const control = argc > 1 ? argv[1] : "";
    if (control == "--race-control")
        return raceControl();
    if (control == "--overflow-control")
        return overflowControl();
    checkRefusals();
    // One rounding of the output: 2^-11 relative in float16, 2^-8 in bfloat16 (twice that, for the float32 sums).
    // Against float64: the samples' rounding, summed over 16 x kernel points terms.
    runLayers<HostHalf>(layers(), "float16", DCN_FLOAT16, 1.0 / 1024, 4e-3);
    runLayers<HostBFloat16>(layers(), "bfloat16", DCN_BFLOAT16, 1.0 / 128, 3e-2);
    runExtremeLayers<HostHalf>("float16", 4e-3);
    runExtremeLayers<HostBFloat16>("bfloat16", 3e-2);
    std::printf("%d failure(s)\n", emulation::failures);
    return emulation::failures;
}

// One work item of the direct deformable-convolution kernel: a block of up to kDirectBlock consecutive output
// channels at one output pixel. Shared by the CUDA kernel (deformConvDirect.cu, one thread per item) and the host
// build (deformConvHost.cpp, a loop over the items), so that CI checks the kernel's own code on the CPU.
//
// Why a block: the taps of a (kernel point, offset group) are computed once per item and each sampled input value
// feeds every output of the block in its group, instead of once per output channel. For a depth-wise layer the
// block spans kDirectBlock groups of one channel each, which share their offset group's taps.
#pragma once

#include "deformConvColumns.h"
#include "deformConvMath.h"

#include <string>

namespace dcn
{

constexpr int32_t kDirectBlock = 8;

// Output-channel blocks per (image, pixel).
DCN_HD int32_t directBlocks(DeformConvGeometry const& geo)
{
    return (geo.d.out_channels + kDirectBlock - 1) / kDirectBlock;
}

// out[n, o, y, x] for o in [block * kDirectBlock, min(out_channels, (block + 1) * kDirectBlock)). Each output sums
// kernel point by kernel point, channel by channel within (the order of the one-output-per-thread kernel before
// it), in Acc from its bias.
template <typename T>
DCN_HD void directOutputBlock(DeformConvGeometry const& geo, T const* input, T const* offset, T const* weight,
    T const* bias, T const* mask, T* output, int32_t n, int32_t block, int32_t y, int32_t x)
{
    using Acc = typename ElementTraits<T>::Acc;
    dcn_deform_conv_desc const& d = geo.d;
    int64_t const plane = int64_t(d.height) * d.width;
    int32_t const kernelPoints = geo.kernelPoints;
    int32_t const cg = geo.channelsPerGroup;
    int32_t const firstOut = block * kDirectBlock;
    int32_t const count = d.out_channels - firstOut < kDirectBlock ? d.out_channels - firstOut : kDirectBlock;
    int32_t const firstGroup = firstOut / geo.outChannelsPerGroup;
    int32_t const lastGroup = (firstOut + count - 1) / geo.outChannelsPerGroup;

    Acc acc[kDirectBlock];
    int32_t groupOf[kDirectBlock]; // an output past the last one belongs to no group
DCN_UNROLL
    for (int32_t j = 0; j < kDirectBlock; ++j)
    {
        bool const real = j < count;
        groupOf[j] = real ? (firstOut + j) / geo.outChannelsPerGroup : -1;
        acc[j] = real && bias ? ElementTraits<T>::toAcc(bias[firstOut + j]) : Acc(0);
    }
    T const* imageInput = input + int64_t(n) * d.in_channels * plane;
    int32_t const firstChannel = firstGroup * cg;
    int32_t const endChannel = (lastGroup + 1) * cg;
    int32_t const firstOffsetGroup = firstChannel / geo.channelsPerOffsetGroup;
    int64_t const rowStride = int64_t(cg) * kernelPoints; // between the weights of consecutive output channels
    for (int32_t kp = 0; kp < kernelPoints; ++kp)
    {
        // Walk the block's input channels in order, keeping their group, their channel within it and their offset
        // group by counting (no division per channel); channels of one offset group share the sample position.
        int32_t og = firstOffsetGroup;
        int32_t offsetGroupEnd = (og + 1) * geo.channelsPerOffsetGroup;
        BilinearTaps<Acc> taps = kernelPointTaps<Acc>(geo, offset, mask, n, og, kp, y, x);
        T const* pointWeights = weight + int64_t(firstOut) * rowStride + kp;
        int32_t g = firstGroup;
        int32_t c = 0;
        for (int32_t cin = firstChannel; cin < endChannel; ++cin)
        {
            if (cin == offsetGroupEnd)
            {
                ++og;
                offsetGroupEnd += geo.channelsPerOffsetGroup;
                taps = kernelPointTaps<Acc>(geo, offset, mask, n, og, kp, y, x);
            }
            Acc const v = sampleTaps<Acc>(imageInput + int64_t(cin) * plane, taps);
            T const* w = pointWeights + int64_t(c) * kernelPoints; // weight[firstOut + j, c, kp] at w[j * rowStride]
DCN_UNROLL
            for (int32_t j = 0; j < kDirectBlock; ++j)
                if (groupOf[j] == g)
                    acc[j] += ElementTraits<T>::toAcc(w[j * rowStride]) * v;
            if (++c == cg)
            {
                c = 0;
                ++g;
            }
        }
    }
    int64_t const outPlane = int64_t(geo.outH) * geo.outW;
    T* out = output + (int64_t(n) * d.out_channels + firstOut) * outPlane + int64_t(y) * geo.outW + x;
DCN_UNROLL
    for (int32_t j = 0; j < kDirectBlock; ++j)
        if (j < count)
            out[int64_t(j) * outPlane] = ElementTraits<T>::fromAcc(acc[j]);
}

} // namespace dcn

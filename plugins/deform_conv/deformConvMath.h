// The per-sample arithmetic of deformable convolution, shared by the CUDA kernels and the host build.
//
//   out[n, o, y, x] = bias[o] + sum_{c in group(o)} sum_{i,j} weight[o, c, i, j] * mask[n, g, i, j, y, x]
//                                                          * bilinear(input[n, c], py, px)
//   py = y*stride_h - pad_top  + i*dilation_h + offset[n, ((g*kH+i)*kW+j)*2,     y, x]
//   px = x*stride_w - pad_left + j*dilation_w + offset[n, ((g*kH+i)*kW+j)*2 + 1, y, x]
//
// g = c / (C / offset_group). Each of the four bilinear neighbours outside [0,H-1]x[0,W-1] contributes zero
// (so a sample at py <= -1 or py >= H is 0), exactly as the reference op (dcn_deploy.ops.deform_conv).
#pragma once

#include "dcnDtype.h"
#include "dcn_kernels.h"

#include <cmath>
#include <cstdint>

namespace dcn
{

// The descriptor with the derived sizes every kernel needs, computed once on the host.
struct DeformConvGeometry
{
    dcn_deform_conv_desc d;
    int32_t outH, outW;
    int32_t channelsPerGroup;       // C / group
    int32_t outChannelsPerGroup;    // oC / group
    int32_t channelsPerOffsetGroup; // C / offset_group
    int32_t kernelPoints;           // kH * kW
};

// Up to four bilinear neighbours of one sample, as indices into one HxW plane with their weights (mask folded
// in). valid bit k says neighbour k is inside the image; an invalid one has index 0 and weight 0, and its value
// must not be used (it may be read: index 0 is always inside).
// Aligned so that the tiled sampler reads a set from shared memory in 16-byte pieces.
template <typename Acc>
struct alignas(16) BilinearTaps
{
    int32_t index[4];
    Acc weight[4];
    uint32_t valid;
};

DCN_HD float floorOf(float v)
{
    return ::floorf(v);
}
DCN_HD double floorOf(double v)
{
    return ::floor(v);
}

// Where kernel point (i, j) of output pixel (y, x) samples before its learned offset is added.
DCN_HD int32_t baseRow(dcn_deform_conv_desc const& d, int32_t y, int32_t i)
{
    return y * d.stride_h - d.pad_top + i * d.dilation_h;
}
DCN_HD int32_t baseCol(dcn_deform_conv_desc const& d, int32_t x, int32_t j)
{
    return x * d.stride_w - d.pad_left + j * d.dilation_w;
}

// No neighbours: a sample that contributes zero.
template <typename Acc>
DCN_HD BilinearTaps<Acc> noTaps()
{
    BilinearTaps<Acc> taps;
    taps.valid = 0;
    for (int k = 0; k < 4; ++k)
    {
        taps.index[k] = 0;
        taps.weight[k] = Acc(0);
    }
    return taps;
}

// The bilinear neighbours of (py, px) in an HxW image, each weight multiplied by scale (the mask value).
template <typename Acc>
DCN_HD BilinearTaps<Acc> bilinearTaps(Acc py, Acc px, int32_t height, int32_t width, Acc scale)
{
    BilinearTaps<Acc> taps = noTaps<Acc>();
    // Outside (-1, H) x (-1, W) every neighbour is outside: also keeps huge offsets away from the int cast.
    // Written as a negated conjunction so a NaN position gives no taps.
    if (!(py > Acc(-1) && py < Acc(height) && px > Acc(-1) && px < Acc(width)))
        return taps;
    Acc const y0f = floorOf(py);
    Acc const x0f = floorOf(px);
    int32_t const y0 = int32_t(y0f);
    int32_t const x0 = int32_t(x0f);
    Acc const ly = py - y0f;
    Acc const lx = px - x0f;
    Acc const hy = Acc(1) - ly;
    Acc const hx = Acc(1) - lx;
    bool const top = y0 >= 0, bottom = y0 + 1 < height, left = x0 >= 0, right = x0 + 1 < width;
    if (top && left)
    {
        taps.index[0] = y0 * width + x0;
        taps.weight[0] = hy * hx * scale;
        taps.valid |= 1u;
    }
    if (top && right)
    {
        taps.index[1] = y0 * width + x0 + 1;
        taps.weight[1] = hy * lx * scale;
        taps.valid |= 2u;
    }
    if (bottom && left)
    {
        taps.index[2] = (y0 + 1) * width + x0;
        taps.weight[2] = ly * hx * scale;
        taps.valid |= 4u;
    }
    if (bottom && right)
    {
        taps.index[3] = (y0 + 1) * width + x0 + 1;
        taps.weight[3] = ly * lx * scale;
        taps.valid |= 8u;
    }
    return taps;
}

// The taps of a kernel point whose sample sits at (row, col) before its learned offset: dy at dyAt, dx `plane`
// elements on, the mask value at scaleAt (null: 1); kernelPointTaps's arithmetic, for kernels that walk the offsets
// with pointers (the channels-last direct kernel's items and its shared-taps blocks, which must agree bit for bit).
template <typename Acc, typename T>
DCN_HD BilinearTaps<Acc> offsetTaps(dcn_deform_conv_desc const& d, T const* dyAt, int64_t plane, T const* scaleAt,
    int32_t row, int32_t col)
{
    Acc const dy = ElementTraits<T>::toAcc(dyAt[0]);
    Acc const dx = ElementTraits<T>::toAcc(dyAt[plane]);
    Acc const scale = scaleAt ? ElementTraits<T>::toAcc(scaleAt[0]) : Acc(1);
    return bilinearTaps<Acc>(Acc(row) + dy, Acc(col) + dx, d.height, d.width, scale);
}

// The taps of kernel point kp = i*kW + j of output pixel (y, x), image n, offset group og.
// offset/mask point at the start of the tensors (mask may be null: all ones).
template <typename Acc, typename T>
DCN_HD BilinearTaps<Acc> kernelPointTaps(DeformConvGeometry const& geo, T const* offset, T const* mask, int32_t n,
    int32_t og, int32_t kp, int32_t y, int32_t x)
{
    dcn_deform_conv_desc const& d = geo.d;
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    int64_t const pixel = int64_t(y) * geo.outW + x;
    int64_t const pointChannel = int64_t(n) * d.offset_group * geo.kernelPoints + int64_t(og) * geo.kernelPoints + kp;
    Acc const dy = ElementTraits<T>::toAcc(offset[(2 * pointChannel) * plane + pixel]);
    Acc const dx = ElementTraits<T>::toAcc(offset[(2 * pointChannel + 1) * plane + pixel]);
    Acc const scale = mask ? ElementTraits<T>::toAcc(mask[pointChannel * plane + pixel]) : Acc(1);
    int32_t const i = kp / d.kernel_w;
    int32_t const j = kp - i * d.kernel_w;
    Acc const py = Acc(baseRow(d, y, i)) + dy;
    Acc const px = Acc(baseCol(d, x, j)) + dx;
    return bilinearTaps<Acc>(py, px, d.height, d.width, scale);
}

// Apply taps to one HxW plane of the input.
template <typename Acc, typename T>
DCN_HD Acc sampleTaps(T const* plane, BilinearTaps<Acc> const& taps)
{
    Acc value = Acc(0);
DCN_UNROLL
    for (int k = 0; k < 4; ++k)
    {
        if (taps.valid & (1u << k))
            value += taps.weight[k] * ElementTraits<T>::toAcc(plane[taps.index[k]]);
    }
    return value;
}

} // namespace dcn

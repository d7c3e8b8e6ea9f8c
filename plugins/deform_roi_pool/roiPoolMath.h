// Per-output-element arithmetic of the deformable RoI pooling ops, shared by the CUDA kernels and the host build.
// The formulas are those of dcn_deploy/ops/roi_pool.py (its module docstring), evaluated in Acc (float32 for
// float/half/bfloat16, double for double). Traits<T>::toAcc loads an element.
#pragma once

#include "dcnDtype.h"
#include "roi_pool_kernels.h"

#include <math.h>

namespace dcn
{

// Most samples per bin side: the bound on a fixed sampling_ratio or sample_per_part (checkRoiPool, checkPsroiPool:
// the kernels loop over a bin's samples, so an unbounded count would run for hours, not fail) and the cap of the
// adaptive sampling_ratio = 0 (a guard against malformed boxes). As dcn_deploy.ops.roi_spec.MAX_SAMPLES_PER_BIN_SIDE.
constexpr int32_t kMaxSamplesPerBinSide = 1024;

template <typename Acc>
DCN_HD Acc accFloor(Acc v) { return floor(v); }
template <>
DCN_HD float accFloor<float>(float v) { return floorf(v); }

// C's round(): halves away from zero.
template <typename Acc>
DCN_HD Acc accRound(Acc v) { return v < Acc(0) ? -accFloor<Acc>(-v + Acc(0.5)) : accFloor<Acc>(v + Acc(0.5)); }

// Bilinear value at (y, x), already inside [0, H-1] x [0, W-1], or NaN (a NaN offset, trans or box: the clamps
// keep NaN). A NaN position reads pixel 0 with NaN weights, so the value is NaN, as the reference gives; casting
// NaN to int instead is undefined (the host build read far outside the map, the GPU gives 0).
template <typename Traits, typename Acc, typename T>
DCN_HD Acc bilinearInside(T const* plane, int32_t height, int32_t width, Acc y, Acc x)
{
    Acc const yl = accFloor<Acc>(y), xl = accFloor<Acc>(x);
    int32_t const y0 = yl >= Acc(0) ? int32_t(yl) : 0, x0 = xl >= Acc(0) ? int32_t(xl) : 0; // false for NaN
    int32_t const y1 = y0 + 1 < height ? y0 + 1 : height - 1;
    int32_t const x1 = x0 + 1 < width ? x0 + 1 : width - 1;
    Acc const ly = y - yl, lx = x - xl, hy = Acc(1) - ly, hx = Acc(1) - lx;
    return hy * hx * Traits::toAcc(plane[int64_t(y0) * width + x0]) + hy * lx * Traits::toAcc(plane[int64_t(y0) * width + x1])
        + ly * hx * Traits::toAcc(plane[int64_t(y1) * width + x0]) + ly * lx * Traits::toAcc(plane[int64_t(y1) * width + x1]);
}

// Whether a RoI's batch index, truncated toward zero, lies in [0, batch). Decided before the cast to int, which is
// undefined for NaN and out-of-range values (the GPU turns NaN into 0: image 0 would have been pooled).
template <typename Acc>
DCN_HD bool batchIndexInside(Acc index, int32_t batch)
{
    return index > Acc(-1) && index < Acc(batch); // false for NaN
}

// RoIAlign's rule: 0 beyond one pixel outside the map, else clamped onto it.
template <typename Traits, typename Acc, typename T>
DCN_HD Acc roiAlignSample(T const* plane, int32_t height, int32_t width, Acc y, Acc x)
{
    if (y < Acc(-1) || y > Acc(height) || x < Acc(-1) || x > Acc(width))
        return Acc(0);
    y = y < Acc(0) ? Acc(0) : (y > Acc(height - 1) ? Acc(height - 1) : y);
    x = x < Acc(0) ? Acc(0) : (x > Acc(width - 1) ? Acc(width - 1) : x);
    return bilinearInside<Traits, Acc>(plane, height, width, y, x);
}

// Output element (k, c, ph, pw) of DeformRoIPool.
template <typename Traits, typename Acc, typename T>
DCN_HD Acc deformRoiPoolElement(dcn_deform_roi_pool_desc const& d, T const* input, T const* rois, T const* offset,
    int32_t k, int32_t c, int32_t ph, int32_t pw)
{
    T const* roi = rois + int64_t(k) * 5;
    if (!batchIndexInside<Acc>(Traits::toAcc(roi[0]), d.batch))
        return Acc(0);
    int32_t const b = int32_t(Traits::toAcc(roi[0])); // truncation toward zero
    Acc const scale = Acc(d.spatial_scale);
    Acc sx = Traits::toAcc(roi[1]) * scale - Acc(0.5);
    Acc sy = Traits::toAcc(roi[2]) * scale - Acc(0.5);
    Acc const rw = Traits::toAcc(roi[3]) * scale - Acc(0.5) - sx;
    Acc const rh = Traits::toAcc(roi[4]) * scale - Acc(0.5) - sy;
    Acc const binW = rw / Acc(d.pooled_width), binH = rh / Acc(d.pooled_height);
    int32_t gh = d.sampling_ratio, gw = d.sampling_ratio;
    if (d.sampling_ratio <= 0) // mmcv: ceilf of the single-precision quotient
    {
        // Capped at kMaxSamplesPerBinSide per side: an absurd box must not loop for ever. `q > 0` is false for NaN,
        // so a NaN box samples nothing instead of casting NaN.
        float const qh = ceilf(float(rh / Acc(d.pooled_height)));
        float const qw = ceilf(float(rw / Acc(d.pooled_width)));
        gh = qh > 0.f ? int32_t(fminf(qh, float(kMaxSamplesPerBinSide))) : 0;
        gw = qw > 0.f ? int32_t(fminf(qw, float(kMaxSamplesPerBinSide))) : 0;
    }
    if (offset)
    {
        int64_t const bins = int64_t(d.pooled_height) * d.pooled_width;
        int64_t const at = int64_t(k) * 2 * bins + int64_t(ph) * d.pooled_width + pw;
        sx += Acc(d.gamma) * rw * Traits::toAcc(offset[at]);
        sy += Acc(d.gamma) * rh * Traits::toAcc(offset[at + bins]);
    }
    T const* plane = input + (int64_t(b) * d.channels + c) * d.height * d.width;
    Acc sum = Acc(0);
    for (int32_t v = 0; v < gh; ++v)
    {
        Acc const y = sy + Acc(ph) * binH + (Acc(v) + Acc(0.5)) * binH / Acc(gh);
        for (int32_t u = 0; u < gw; ++u)
        {
            Acc const x = sx + Acc(pw) * binW + (Acc(u) + Acc(0.5)) * binW / Acc(gw);
            sum += roiAlignSample<Traits, Acc>(plane, d.height, d.width, y, x);
        }
    }
    int64_t const count = int64_t(gh) * gw; // a sampling_ratio above 46340 overflows an int32 product
    return sum / Acc(count > 1 ? count : 1);
}

// Output element (k, ctop, ph, pw) of DeformPSRoIPool.
template <typename Traits, typename Acc, typename T>
DCN_HD Acc deformPsroiPoolElement(dcn_deform_psroi_pool_desc const& d, T const* input, T const* rois, T const* trans,
    int32_t k, int32_t ctop, int32_t ph, int32_t pw)
{
    T const* roi = rois + int64_t(k) * 5;
    if (!batchIndexInside<Acc>(Traits::toAcc(roi[0]), d.batch))
        return Acc(0);
    int32_t const b = int32_t(Traits::toAcc(roi[0]));
    int32_t const p = d.pooled_size, s = d.sample_per_part, g = d.group_size;
    int32_t const part = d.part_size > 0 ? d.part_size : p;
    Acc const scale = Acc(d.spatial_scale);
    Acc const sx = accRound<Acc>(Traits::toAcc(roi[1])) * scale - Acc(0.5);
    Acc const sy = accRound<Acc>(Traits::toAcc(roi[2])) * scale - Acc(0.5);
    Acc const ex = (accRound<Acc>(Traits::toAcc(roi[3])) + Acc(1)) * scale - Acc(0.5);
    Acc const ey = (accRound<Acc>(Traits::toAcc(roi[4])) + Acc(1)) * scale - Acc(0.5);
    Acc const rw = ex - sx > Acc(0.1) ? ex - sx : Acc(0.1);
    Acc const rh = ey - sy > Acc(0.1) ? ey - sy : Acc(0.1);
    Acc const binW = rw / Acc(p), binH = rh / Acc(p);
    Acc const subW = binW / Acc(s), subH = binH / Acc(s);
    Acc wstart = Acc(pw) * binW + sx;
    Acc hstart = Acc(ph) * binH + sy;
    bool const useTrans = !d.no_trans && trans;
    int32_t const classes = useTrans ? d.num_classes : 1;
    if (useTrans)
    {
        int32_t const cls = ctop / (d.output_dim / classes);
        int32_t const partH = int32_t(int64_t(ph) * part / p), partW = int32_t(int64_t(pw) * part / p);
        int64_t const xAt = ((int64_t(k) * classes + cls) * 2 * part + partH) * part + partW;
        int64_t const yAt = xAt + int64_t(part) * part;
        wstart += Traits::toAcc(trans[xAt]) * Acc(d.trans_std) * rw;
        hstart += Traits::toAcc(trans[yAt]) * Acc(d.trans_std) * rh;
    }
    int32_t gi = int32_t(int64_t(ph) * g / p), gj = int32_t(int64_t(pw) * g / p); // ph < p: gi < g, no overflow
    gi = gi < g - 1 ? gi : g - 1;
    gj = gj < g - 1 ? gj : g - 1;
    int32_t const channel = (ctop * g + gi) * g + gj;
    T const* plane = input + (int64_t(b) * d.channels + channel) * d.height * d.width;
    Acc sum = Acc(0);
    int32_t count = 0;
    for (int32_t v = 0; v < s; ++v)
    {
        Acc y = hstart + Acc(v) * subH;
        if (y < Acc(-0.5) || y > Acc(d.height) - Acc(0.5))
            continue;
        y = y < Acc(0) ? Acc(0) : (y > Acc(d.height - 1) ? Acc(d.height - 1) : y);
        for (int32_t u = 0; u < s; ++u)
        {
            Acc x = wstart + Acc(u) * subW;
            if (x < Acc(-0.5) || x > Acc(d.width) - Acc(0.5))
                continue;
            x = x < Acc(0) ? Acc(0) : (x > Acc(d.width - 1) ? Acc(d.width - 1) : x);
            sum += bilinearInside<Traits, Acc>(plane, d.height, d.width, y, x);
            ++count;
        }
    }
    return count ? sum / Acc(count) : Acc(0);
}

} // namespace dcn

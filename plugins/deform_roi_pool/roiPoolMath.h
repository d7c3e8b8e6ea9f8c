// The arithmetic of the deformable RoI pooling ops: each op's bin geometry, the bilinear taps of a sample and one
// output element, shared by the CUDA kernels, the host build and the fast CPU forwards (roiPoolCpu.cpp).
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

// The four bilinear corners of a position (y, x) already inside [0, H-1] x [0, W-1], as pixel indices of a plane
// (y * W + x) and their weights, or of NaN (a NaN offset, trans or box: the clamps keep NaN): a NaN position takes
// pixel 0 with NaN weights, so the value is NaN, as the reference gives; casting NaN to int instead is undefined
// (the host build read far outside the map, the GPU gives 0). One tap serves every channel at that position.
template <typename Acc>
struct BilinearTap
{
    int64_t pixel[4]; // (y0, x0), (y0, x1), (y1, x0), (y1, x1)
    Acc weight[4];

    // The blended value of a plane whose pixel p holds its value at values[p * stride].
    template <typename Traits, typename T>
    DCN_HD Acc blend(T const* values, int64_t stride = 1) const
    {
        return weight[0] * Traits::toAcc(values[pixel[0] * stride])
            + weight[1] * Traits::toAcc(values[pixel[1] * stride])
            + weight[2] * Traits::toAcc(values[pixel[2] * stride])
            + weight[3] * Traits::toAcc(values[pixel[3] * stride]);
    }
};

template <typename Acc>
DCN_HD BilinearTap<Acc> bilinearTapInside(int32_t height, int32_t width, Acc y, Acc x)
{
    Acc const yl = accFloor<Acc>(y), xl = accFloor<Acc>(x);
    // At most size - 1: the callers clamp y onto Acc(height - 1), which in float32 rounds up past height - 1 for a
    // size above 2^24 (H = 2^25 + 4: a sample clamped there floored to row H, one row past the plane).
    int32_t const y0 = yl >= Acc(height - 1) ? height - 1 : (yl >= Acc(0) ? int32_t(yl) : 0); // 0 for NaN
    int32_t const x0 = xl >= Acc(width - 1) ? width - 1 : (xl >= Acc(0) ? int32_t(xl) : 0);
    int32_t const y1 = y0 + 1 < height ? y0 + 1 : height - 1;
    int32_t const x1 = x0 + 1 < width ? x0 + 1 : width - 1;
    Acc const ly = y - yl, lx = x - xl, hy = Acc(1) - ly, hx = Acc(1) - lx;
    return {{int64_t(y0) * width + x0, int64_t(y0) * width + x1, int64_t(y1) * width + x0, int64_t(y1) * width + x1},
        {hy * hx, hy * lx, ly * hx, ly * lx}};
}

// Whether a RoI's batch index, truncated toward zero, lies in [0, batch). Decided before the cast to int, which is
// undefined for NaN and out-of-range values (the GPU turns NaN into 0: image 0 would have been pooled).
template <typename Acc>
DCN_HD bool batchIndexInside(Acc index, int32_t batch)
{
    // batch > 0: for an empty batch an index in (-1, 0) truncates to image 0, which does not exist.
    return batch > 0 && index > Acc(-1) && index < Acc(batch); // false for NaN
}

// RoIAlign's rule: no tap (the sample is 0) beyond one pixel outside the map, else the tap of the position clamped
// onto it.
template <typename Acc>
DCN_HD bool roiAlignTap(int32_t height, int32_t width, Acc y, Acc x, BilinearTap<Acc>& tap)
{
    if (y < Acc(-1) || y > Acc(height) || x < Acc(-1) || x > Acc(width))
        return false;
    y = y < Acc(0) ? Acc(0) : (y > Acc(height - 1) ? Acc(height - 1) : y);
    x = x < Acc(0) ? Acc(0) : (x > Acc(width - 1) ? Acc(width - 1) : x);
    tap = bilinearTapInside<Acc>(height, width, y, x);
    return true;
}

// Bin (ph, pw) of RoI k of DeformRoIPool, the same for every channel: its image and its sample grid.
template <typename Acc>
struct RoiAlignBin
{
    int32_t image; // -1: the RoI's batch index is outside [0, N), the bin pools to 0
    int32_t samplesY, samplesX;
    Acc startY, startX, binH, binW;

    DCN_HD Acc y(int32_t v) const { return startY + (Acc(v) + Acc(0.5)) * binH / Acc(samplesY); }
    DCN_HD Acc x(int32_t u) const { return startX + (Acc(u) + Acc(0.5)) * binW / Acc(samplesX); }
    // The divisor of the bin's sum: its sample count, at least 1.
    DCN_HD Acc divisor() const
    {
        int64_t const count = int64_t(samplesY) * samplesX; // a sampling_ratio above 46340 overflows an int32 product
        return Acc(count > 1 ? count : 1);
    }
};

template <typename Traits, typename Acc, typename T>
DCN_HD RoiAlignBin<Acc> deformRoiPoolBin(dcn_deform_roi_pool_desc const& d, T const* rois, T const* offset,
    int32_t k, int32_t ph, int32_t pw)
{
    RoiAlignBin<Acc> bin{-1, 0, 0, Acc(0), Acc(0), Acc(0), Acc(0)};
    T const* roi = rois + int64_t(k) * 5;
    if (!batchIndexInside<Acc>(Traits::toAcc(roi[0]), d.batch))
        return bin;
    bin.image = int32_t(Traits::toAcc(roi[0])); // truncation toward zero
    Acc const scale = Acc(d.spatial_scale);
    Acc sx = Traits::toAcc(roi[1]) * scale - Acc(0.5);
    Acc sy = Traits::toAcc(roi[2]) * scale - Acc(0.5);
    Acc const rw = Traits::toAcc(roi[3]) * scale - Acc(0.5) - sx;
    Acc const rh = Traits::toAcc(roi[4]) * scale - Acc(0.5) - sy;
    bin.binW = rw / Acc(d.pooled_width);
    bin.binH = rh / Acc(d.pooled_height);
    bin.samplesY = bin.samplesX = d.sampling_ratio;
    if (d.sampling_ratio <= 0) // mmcv: ceilf of the single-precision quotient
    {
        // Capped at kMaxSamplesPerBinSide per side: an absurd box must not loop for ever. `q > 0` is false for NaN,
        // so a NaN box samples nothing instead of casting NaN.
        float const qh = ceilf(float(rh / Acc(d.pooled_height)));
        float const qw = ceilf(float(rw / Acc(d.pooled_width)));
        bin.samplesY = qh > 0.f ? int32_t(fminf(qh, float(kMaxSamplesPerBinSide))) : 0;
        bin.samplesX = qw > 0.f ? int32_t(fminf(qw, float(kMaxSamplesPerBinSide))) : 0;
    }
    if (offset)
    {
        int64_t const bins = int64_t(d.pooled_height) * d.pooled_width;
        int64_t const at = int64_t(k) * 2 * bins + int64_t(ph) * d.pooled_width + pw;
        sx += Acc(d.gamma) * rw * Traits::toAcc(offset[at]);
        sy += Acc(d.gamma) * rh * Traits::toAcc(offset[at + bins]);
    }
    bin.startY = sy + Acc(ph) * bin.binH;
    bin.startX = sx + Acc(pw) * bin.binW;
    return bin;
}

// Output element (k, c, ph, pw) of DeformRoIPool.
template <typename Traits, typename Acc, typename T>
DCN_HD Acc deformRoiPoolElement(dcn_deform_roi_pool_desc const& d, T const* input, T const* rois, T const* offset,
    int32_t k, int32_t c, int32_t ph, int32_t pw)
{
    RoiAlignBin<Acc> const bin = deformRoiPoolBin<Traits, Acc>(d, rois, offset, k, ph, pw);
    if (bin.image < 0)
        return Acc(0);
    T const* plane = input + (int64_t(bin.image) * d.channels + c) * d.height * d.width;
    Acc sum = Acc(0);
    for (int32_t v = 0; v < bin.samplesY; ++v)
    {
        Acc const y = bin.y(v);
        for (int32_t u = 0; u < bin.samplesX; ++u)
        {
            BilinearTap<Acc> tap;
            if (roiAlignTap<Acc>(d.height, d.width, y, bin.x(u), tap))
                sum += tap.template blend<Traits>(plane);
        }
    }
    return sum / bin.divisor();
}

// DeformPSRoIPool's rule for one coordinate of a sample: skipped (false) outside [-0.5, size - 0.5], else clamped
// onto [0, size - 1].
template <typename Acc>
DCN_HD bool psroiSampleCoordinate(Acc& p, int32_t size)
{
    if (p < Acc(-0.5) || p > Acc(size) - Acc(0.5))
        return false;
    p = p < Acc(0) ? Acc(0) : (p > Acc(size - 1) ? Acc(size - 1) : p);
    return true;
}

// Bin (ph, pw) of RoI k of DeformPSRoIPool for offset class cls, the same for each of the class's channels: its
// image, its position-sensitive group (the channel of output channel ctop is ctop * group_size^2 + group), and
// its sample grid.
template <typename Acc>
struct PsroiBin
{
    int32_t image; // -1: the RoI's batch index is outside [0, N), the bin pools to 0
    int32_t group; // gi * group_size + gj
    Acc startY, startX, stepY, stepX;

    DCN_HD Acc y(int32_t v) const { return startY + Acc(v) * stepY; }
    DCN_HD Acc x(int32_t u) const { return startX + Acc(u) * stepX; }
};

// Offset classes in use: num_classes with offsets, else 1.
DCN_HD int32_t psroiClasses(dcn_deform_psroi_pool_desc const& d, bool haveTrans)
{
    return !d.no_trans && haveTrans ? d.num_classes : 1;
}

template <typename Traits, typename Acc, typename T>
DCN_HD PsroiBin<Acc> deformPsroiPoolBin(dcn_deform_psroi_pool_desc const& d, T const* rois, T const* trans,
    int32_t k, int32_t cls, int32_t ph, int32_t pw)
{
    PsroiBin<Acc> bin{-1, 0, Acc(0), Acc(0), Acc(0), Acc(0)};
    T const* roi = rois + int64_t(k) * 5;
    if (!batchIndexInside<Acc>(Traits::toAcc(roi[0]), d.batch))
        return bin;
    bin.image = int32_t(Traits::toAcc(roi[0]));
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
    bin.stepX = binW / Acc(s);
    bin.stepY = binH / Acc(s);
    bin.startX = Acc(pw) * binW + sx;
    bin.startY = Acc(ph) * binH + sy;
    if (!d.no_trans && trans)
    {
        int32_t const classes = d.num_classes;
        int32_t const partH = int32_t(int64_t(ph) * part / p), partW = int32_t(int64_t(pw) * part / p);
        int64_t const xAt = ((int64_t(k) * classes + cls) * 2 * part + partH) * part + partW;
        int64_t const yAt = xAt + int64_t(part) * part;
        bin.startX += Traits::toAcc(trans[xAt]) * Acc(d.trans_std) * rw;
        bin.startY += Traits::toAcc(trans[yAt]) * Acc(d.trans_std) * rh;
    }
    int32_t gi = int32_t(int64_t(ph) * g / p), gj = int32_t(int64_t(pw) * g / p); // ph < p: gi < g, no overflow
    gi = gi < g - 1 ? gi : g - 1;
    gj = gj < g - 1 ? gj : g - 1;
    bin.group = gi * g + gj;
    return bin;
}

// Output element (k, ctop, ph, pw) of DeformPSRoIPool.
template <typename Traits, typename Acc, typename T>
DCN_HD Acc deformPsroiPoolElement(dcn_deform_psroi_pool_desc const& d, T const* input, T const* rois, T const* trans,
    int32_t k, int32_t ctop, int32_t ph, int32_t pw)
{
    int32_t const classes = psroiClasses(d, trans != nullptr);
    int32_t const cls = ctop / (d.output_dim / classes);
    PsroiBin<Acc> const bin = deformPsroiPoolBin<Traits, Acc>(d, rois, trans, k, cls, ph, pw);
    if (bin.image < 0)
        return Acc(0);
    int32_t const g2 = d.group_size * d.group_size;
    T const* plane = input + (int64_t(bin.image) * d.channels + int64_t(ctop) * g2 + bin.group) * d.height * d.width;
    Acc sum = Acc(0);
    int32_t count = 0;
    for (int32_t v = 0; v < d.sample_per_part; ++v)
    {
        Acc y = bin.y(v);
        if (!psroiSampleCoordinate<Acc>(y, d.height))
            continue;
        for (int32_t u = 0; u < d.sample_per_part; ++u)
        {
            Acc x = bin.x(u);
            if (!psroiSampleCoordinate<Acc>(x, d.width))
                continue;
            sum += bilinearTapInside<Acc>(d.height, d.width, y, x).template blend<Traits>(plane);
            ++count;
        }
    }
    return count ? sum / Acc(count) : Acc(0);
}

} // namespace dcn

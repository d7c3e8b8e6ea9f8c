// Random layers for the kernel emulations (plugins/tests/*Emulation.cpp): a layer's descriptor and options, its
// tensors in the element type T and the same values widened to double, and the host library's float64 reference.
#pragma once

#include "dcnDtype.h"
#include "dcn_kernels.h"
#include "deformConvMath.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace emulation
{

using dcn::DeformConvGeometry;
using dcn::ElementTraits;

struct Layer
{
    char const* name;
    dcn_deform_conv_desc desc;
    bool mask, bias;
    double offsetScale;
};

// One layer's random tensors in T, and the same values widened to double for the reference.
template <typename T>
struct Tensors
{
    std::vector<T> input, offset, weight, bias, mask;
    std::vector<double> input64, offset64, weight64, bias64, mask64;
};

template <typename T>
void fill(std::mt19937& rng, size_t count, double scale, bool uniform, std::vector<T>& values,
    std::vector<double>& wide)
{
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    values.resize(count);
    wide.resize(count);
    for (size_t i = 0; i < count; ++i)
    {
        values[i]
            = ElementTraits<T>::fromAcc(typename ElementTraits<T>::Acc(uniform ? unit(rng) : normal(rng) * scale));
        wide[i] = double(ElementTraits<T>::toAcc(values[i]));
    }
}

template <typename T>
Tensors<T> makeTensors(Layer const& layer, DeformConvGeometry const& geo, unsigned seed)
{
    dcn_deform_conv_desc const& d = layer.desc;
    std::mt19937 rng(seed);
    size_t const plane = size_t(geo.outH) * size_t(geo.outW);
    size_t const points = size_t(d.offset_group) * size_t(geo.kernelPoints);
    Tensors<T> t;
    fill(rng, size_t(d.batch) * d.in_channels * d.height * d.width, 1.0, false, t.input, t.input64);
    fill(rng, size_t(d.batch) * 2 * points * plane, layer.offsetScale, false, t.offset, t.offset64);
    fill(rng, size_t(d.out_channels) * geo.channelsPerGroup * geo.kernelPoints, 1.0, false, t.weight, t.weight64);
    if (layer.bias)
        fill(rng, size_t(d.out_channels), 1.0, false, t.bias, t.bias64);
    if (layer.mask)
        fill(rng, size_t(d.batch) * points * plane, 1.0, true, t.mask, t.mask64);
    return t;
}

// The host library's float64 forward of the layer (dcn_deform_conv2d_forward_host) into `expected`; "" or why not.
template <typename T>
std::string referenceForward(Layer const& layer, DeformConvGeometry const& geo, Tensors<T> const& t,
    std::vector<double>& expected)
{
    expected.assign(size_t(layer.desc.batch) * layer.desc.out_channels * geo.outH * geo.outW, 0.0);
    int32_t const rc = dcn_deform_conv2d_forward_host(&layer.desc, DCN_FLOAT64, t.input64.data(), t.offset64.data(),
        t.weight64.data(), t.bias64.empty() ? nullptr : t.bias64.data(), t.mask64.empty() ? nullptr : t.mask64.data(),
        expected.data());
    return rc == DCN_OK ? std::string() : std::string("the reference failed: ") + dcn_last_error();
}

} // namespace emulation

#include "deformConvShapes.h"

#include "deformConvGemmPlan.h"

#include <cstring>
#include <initializer_list>
#include <limits>
#include <sstream>

namespace dcn
{
namespace
{

std::string joined(int32_t const* values, int32_t count)
{
    std::ostringstream s;
    s << "[";
    for (int32_t k = 0; k < count; ++k)
        s << (k ? ", " : "") << values[k];
    s << "]";
    return s.str();
}

std::string shapeText(TensorShape const& shape)
{
    std::ostringstream s;
    s << "(";
    for (int32_t k = 0; k < shape.rank; ++k)
        s << (k ? ", " : "") << shape.d[k];
    s << ")";
    return s.str();
}

bool known(int64_t v)
{
    return v >= 0;
}

// Fits an int32 index (the kernels index planes with int32 and tensors with int64).
bool fitsInt32(int64_t v)
{
    return v <= std::numeric_limits<int32_t>::max();
}

} // namespace

Status makeGeometry(dcn_deform_conv_desc const& d, DeformConvGeometry& geo)
{
    if (d.batch < 0)
        return Status::invalid("batch must be >= 0, got " + std::to_string(d.batch));
    if (d.in_channels < 1 || d.height < 1 || d.width < 1)
        return Status::invalid("input must have C, H and W >= 1, got C=" + std::to_string(d.in_channels) + " H="
            + std::to_string(d.height) + " W=" + std::to_string(d.width));
    if (d.out_channels < 1 || d.kernel_h < 1 || d.kernel_w < 1)
        return Status::invalid("weight must have out_channels, kernel_h and kernel_w >= 1, got out_channels="
            + std::to_string(d.out_channels) + " kernel " + std::to_string(d.kernel_h) + "x" + std::to_string(d.kernel_w));
    if (d.stride_h < 1 || d.stride_w < 1)
        return Status::invalid("strides must be >= 1, got (" + std::to_string(d.stride_h) + ", " + std::to_string(d.stride_w) + ")");
    if (d.dilation_h < 1 || d.dilation_w < 1)
        return Status::invalid(
            "dilations must be >= 1, got (" + std::to_string(d.dilation_h) + ", " + std::to_string(d.dilation_w) + ")");
    if (d.pad_top < 0 || d.pad_left < 0 || d.pad_bottom < 0 || d.pad_right < 0)
        return Status::invalid("pads must be >= 0, got (" + std::to_string(d.pad_top) + ", " + std::to_string(d.pad_left)
            + ", " + std::to_string(d.pad_bottom) + ", " + std::to_string(d.pad_right) + ")");
    if (d.group < 1 || d.in_channels % d.group || d.out_channels % d.group)
        return Status::invalid("group (" + std::to_string(d.group) + ") must be >= 1 and divide both in_channels ("
            + std::to_string(d.in_channels) + ") and out_channels (" + std::to_string(d.out_channels) + ")");
    if (d.offset_group < 1 || d.in_channels % d.offset_group)
        return Status::invalid("offset_group (" + std::to_string(d.offset_group) + ") must be >= 1 and divide in_channels ("
            + std::to_string(d.in_channels) + ")");
    // The kernels compute sample rows and columns (y*stride - pad + i*dilation) in int32: each term and every
    // partial sum lies within [-pad, padded size], so the padded sizes must fit int32.
    if (!fitsInt32(int64_t(d.height) + d.pad_top + d.pad_bottom) || !fitsInt32(int64_t(d.width) + d.pad_left + d.pad_right))
        return Status::invalid("padded input too large: H + pad_top + pad_bottom and W + pad_left + pad_right must each "
            "be below 2^31, got " + std::to_string(int64_t(d.height) + d.pad_top + d.pad_bottom) + " and "
            + std::to_string(int64_t(d.width) + d.pad_left + d.pad_right) + "; check the pads");
    int64_t const outH = convOutputExtent<int64_t>(d.height, d.kernel_h, d.stride_h, d.pad_top, d.pad_bottom, d.dilation_h);
    int64_t const outW = convOutputExtent<int64_t>(d.width, d.kernel_w, d.stride_w, d.pad_left, d.pad_right, d.dilation_w);
    if (outH < 1 || outW < 1)
        return Status::invalid("the output would be empty (" + std::to_string(outH) + "x" + std::to_string(outW) + "): input "
            + std::to_string(d.height) + "x" + std::to_string(d.width) + " is smaller than the dilated kernel; add padding");
    if (!fitsInt32(int64_t(d.height) * d.width) || !fitsInt32(outH * outW)
        || !fitsInt32(int64_t(d.batch) * outH * outW) || !fitsInt32(int64_t(d.kernel_h) * d.kernel_w * d.in_channels))
        return Status::invalid("tensor too large: H*W, N*oH*oW and C*kH*kW must each be below 2^31; split the batch");
    geo.d = d;
    geo.outH = int32_t(outH);
    geo.outW = int32_t(outW);
    geo.channelsPerGroup = d.in_channels / d.group;
    geo.outChannelsPerGroup = d.out_channels / d.group;
    geo.channelsPerOffsetGroup = d.in_channels / d.offset_group;
    geo.kernelPoints = d.kernel_h * d.kernel_w;
    return Status::success();
}

dcn_deform_conv_attrs defaultAttrs()
{
    dcn_deform_conv_attrs a{};
    a.strides[0] = a.strides[1] = 1;
    a.dilations[0] = a.dilations[1] = 1;
    a.group = 1;
    a.offset_group = 1;
    return a;
}

Status checkAttrs(dcn_deform_conv_attrs const& a)
{
    if (a.strides[0] < 1 || a.strides[1] < 1)
        return Status::invalid(std::string("field '") + kFieldStrides + "' must hold 2 values >= 1 (stride_h, stride_w), got "
            + joined(a.strides, 2));
    if (a.pads[0] < 0 || a.pads[1] < 0 || a.pads[2] < 0 || a.pads[3] < 0)
        return Status::invalid(std::string("field '") + kFieldPads
            + "' must hold 4 values >= 0 (top, left, bottom, right), got " + joined(a.pads, 4));
    if (a.dilations[0] < 1 || a.dilations[1] < 1)
        return Status::invalid(std::string("field '") + kFieldDilations
            + "' must hold 2 values >= 1 (dilation_h, dilation_w), got " + joined(a.dilations, 2));
    if (a.group < 1)
        return Status::invalid(std::string("field '") + kFieldGroup + "' must be >= 1, got " + std::to_string(a.group));
    if (a.offset_group < 1)
        return Status::invalid(
            std::string("field '") + kFieldOffsetGroup + "' must be >= 1, got " + std::to_string(a.offset_group));
    return Status::success();
}

namespace
{

// The serialised engine's kernels revision (kFieldKernelsRevision) must be this library's.
Status checkKernelsRevision(RawField const& field)
{
    if (field.type != kFieldTypeInt32 || field.length != 1 || field.data == nullptr)
        return Status::invalid(std::string("field '") + kFieldKernelsRevision + "' must be one INT32 value");
    int32_t revision = 0;
    std::memcpy(&revision, field.data, sizeof(revision));
    if (revision == kKernelsRevision)
        return Status::success();
    return Status::invalid("this engine was built by a dcn_deploy plugin library of kernels revision "
        + std::to_string(revision) + ", and this library is revision " + std::to_string(kKernelsRevision)
        + ": their algorithm choice or workspace sizes differ, so the engine's workspace may be too small. Rebuild "
          "the engine with this library (dcn-deploy build), or load the library it was built with");
}

// kFieldAllowTf32: one INT32, 0 or 1.
Status parseAllowTf32(RawField const& field, bool& allowTf32)
{
    if (field.type != kFieldTypeInt32)
        return Status::invalid(std::string("field '") + kFieldAllowTf32 + "' must be INT32 (PluginFieldType "
            + std::to_string(kFieldTypeInt32) + "), got type " + std::to_string(field.type));
    if (field.length != 1 || field.data == nullptr)
        return Status::invalid(std::string("field '") + kFieldAllowTf32 + "' must hold 1 value (0 or 1), got "
            + std::to_string(field.length));
    int32_t value = 0;
    std::memcpy(&value, field.data, sizeof(value));
    if (value != 0 && value != 1)
        return Status::invalid(std::string("field '") + kFieldAllowTf32
            + "' must be 0 (IEEE float32) or 1 (float32 products on TF32 tensor cores), got " + std::to_string(value));
    allowTf32 = value == 1;
    return Status::success();
}

} // namespace

Status parseFields(std::vector<RawField> const& fields, dcn_deform_conv_attrs& attrs)
{
    bool unused = false;
    return parseFields(fields, attrs, unused);
}

Status parseFields(std::vector<RawField> const& fields, dcn_deform_conv_attrs& out, bool& allowTf32)
{
    dcn_deform_conv_attrs a = defaultAttrs();
    bool tf32 = false;
    struct Target
    {
        char const* name;
        int32_t* values;
        int32_t length;
        char const* meaning;
    };
    Target const targets[] = {
        {kFieldStrides, a.strides, 2, "(stride_h, stride_w)"},
        {kFieldPads, a.pads, 4, "(top, left, bottom, right)"},
        {kFieldDilations, a.dilations, 2, "(dilation_h, dilation_w)"},
        {kFieldGroup, &a.group, 1, "a scalar"},
        {kFieldOffsetGroup, &a.offset_group, 1, "a scalar"},
    };
    for (RawField const& field : fields)
    {
        if (field.name == nullptr)
            return Status::invalid("a plugin field has no name");
        if (std::strcmp(field.name, kFieldKernelsRevision) == 0)
        {
            Status const revision = checkKernelsRevision(field);
            if (!revision.ok())
                return revision;
            continue;
        }
        if (std::strcmp(field.name, kFieldAllowTf32) == 0)
        {
            Status const allow = parseAllowTf32(field, tf32);
            if (!allow.ok())
                return allow;
            continue;
        }
        for (Target const& target : targets)
        {
            if (std::strcmp(field.name, target.name) != 0)
                continue;
            if (field.type != kFieldTypeInt32)
                return Status::invalid(std::string("field '") + target.name + "' must be INT32 (PluginFieldType "
                    + std::to_string(kFieldTypeInt32) + "), got type " + std::to_string(field.type));
            if (field.length != target.length || field.data == nullptr)
                return Status::invalid(std::string("field '") + target.name + "' must hold " + std::to_string(target.length)
                    + " value(s) " + target.meaning + ", got " + std::to_string(field.length));
            std::memcpy(target.values, field.data, sizeof(int32_t) * size_t(target.length));
        }
    }
    Status const status = checkAttrs(a);
    if (status.ok())
    {
        out = a;
        allowTf32 = tf32;
    }
    return status;
}

std::vector<OwnedField> fieldsFromAttrs(dcn_deform_conv_attrs const& a)
{
    return {
        {kFieldStrides, {a.strides[0], a.strides[1]}},
        {kFieldPads, {a.pads[0], a.pads[1], a.pads[2], a.pads[3]}},
        {kFieldDilations, {a.dilations[0], a.dilations[1]}},
        {kFieldGroup, {a.group}},
        {kFieldOffsetGroup, {a.offset_group}},
        {kFieldKernelsRevision, {kKernelsRevision}},
    };
}

Status requireEngineFields(std::vector<RawField> const& fields)
{
    for (char const* required : {kFieldKernelsRevision, kFieldColumnBudget})
    {
        bool found = false;
        for (RawField const& field : fields)
            found = found || (field.name != nullptr && std::strcmp(field.name, required) == 0);
        if (!found)
            return Status::invalid(std::string("this engine has no field '") + required
                + "': it was built by an older dcn_deploy plugin library, whose workspace sizes differ from this "
                  "one's. Rebuild the engine with this library (dcn-deploy build), or load the library it was built "
                  "with");
    }
    return Status::success();
}

Status parseColumnBudgetField(std::vector<RawField> const& fields, size_t& columnBudget)
{
    columnBudget = kGemmDefaultColumnBudget;
    for (RawField const& field : fields)
    {
        if (field.name == nullptr || std::strcmp(field.name, kFieldColumnBudget) != 0)
            continue;
        int32_t mib = 0;
        if (field.type == kFieldTypeInt32 && field.length == 1 && field.data != nullptr)
            std::memcpy(&mib, field.data, sizeof(mib));
        if (mib < 1 || mib > 4096)
            return Status::invalid(std::string("field '") + kFieldColumnBudget
                + "' must be one INT32 from 1 to 4096 (MiB): the engine is damaged or was not written by this plugin; "
                  "rebuild it");
        columnBudget = size_t(mib) << 20;
    }
    return Status::success();
}

Status checkInputShapes(dcn_deform_conv_attrs const& a, std::vector<TensorShape> const& in, TensorShape& output)
{
    Status const attrsStatus = checkAttrs(a);
    if (!attrsStatus.ok())
        return attrsStatus;
    int32_t const nb = int32_t(in.size());
    if (nb < 3 || nb > 5)
        return Status::invalid("DeformConv2d takes 3 inputs (X, W, offset), 4 (+ B) or 5 (+ B, mask), got "
            + std::to_string(nb));
    char const* const names[] = {"X", "W", "offset", "B", "mask"};
    int32_t const ranks[] = {4, 4, 4, 1, 4};
    for (int32_t k = 0; k < nb; ++k)
    {
        if (in[k].rank != ranks[k])
            return Status::invalid(std::string("input ") + names[k] + " must be " + std::to_string(ranks[k]) + "-D, got shape "
                + shapeText(in[k]));
        for (int32_t r = 0; r < in[k].rank; ++r)
        {
            int64_t const dim = in[k].d[r];
            // the batch (dimension 0 of X, offset and mask) may be 0: the kernels then write nothing
            if (dim == 0 && !(r == 0 && (k == kInputX || k == kInputOffset || k == kInputMask)))
                return Status::invalid(std::string("input ") + names[k] + " has an empty dimension: " + shapeText(in[k]));
            if (dim < -1 || dim > INT32_MAX) // -1: not known yet (a dynamic dimension at build time)
                return Status::invalid(std::string("input ") + names[k] + " dimension " + std::to_string(r)
                    + " must be from 0 to 2^31-1 (or -1 while unknown), got " + std::to_string(dim) + ": "
                    + shapeText(in[k]));
        }
    }
    TensorShape const& x = in[kInputX];
    TensorShape const& w = in[kInputW];
    TensorShape const& off = in[kInputOffset];
    int64_t const n = x.d[0], c = x.d[1], oc = w.d[0], kh = w.d[2], kw = w.d[3];
    std::string const g = std::to_string(a.group), og = std::to_string(a.offset_group);

    if (known(c) && known(w.d[1]) && c != w.d[1] * a.group)
        return Status::invalid("X has " + std::to_string(c) + " channels but W.shape[1]*group = " + std::to_string(w.d[1])
            + "*" + g + "; check field 'group' and the weight");
    if (known(c) && c % a.offset_group)
        return Status::invalid("field 'offset_group' (" + og + ") must divide X's channels (" + std::to_string(c) + ")");
    if (known(oc) && oc % a.group)
        return Status::invalid("field 'group' (" + g + ") must divide W.shape[0] (" + std::to_string(oc) + " output channels)");

    int64_t oh = -1, ow = -1;
    if (known(x.d[2]) && known(kh))
        oh = convOutputExtent<int64_t>(x.d[2], kh, a.strides[0], a.pads[0], a.pads[2], a.dilations[0]);
    if (known(x.d[3]) && known(kw))
        ow = convOutputExtent<int64_t>(x.d[3], kw, a.strides[1], a.pads[1], a.pads[3], a.dilations[1]);
    if ((oh != -1 && oh < 1) || (ow != -1 && ow < 1))
        return Status::invalid("the output would be empty (" + std::to_string(oh) + "x" + std::to_string(ow) + ") for X "
            + shapeText(x) + " and W " + shapeText(w) + "; check fields 'pads', 'strides', 'dilations'");

    if (known(n) && known(off.d[0]) && off.d[0] != n)
        return Status::invalid("offset batch (" + std::to_string(off.d[0]) + ") must equal X's (" + std::to_string(n) + ")");
    // offset_group*kH*kW, refused before it is formed where 2*offset_group*kH*kW would pass 2^31 - 1 (no tensor
    // dimension can match it; the wrapped int32 product had skipped the mask check or printed a negative count).
    int64_t samples = -1; // per output pixel, -1 while kH or kW is unknown
    if (known(kh) && known(kw))
    {
        int64_t const points = kh * kw; // each at most 2^31 - 1: fits
        if (points > int64_t(INT32_MAX / 2) / a.offset_group)
            return Status::invalid("offset_group*kH*kW = " + og + "*" + std::to_string(kh) + "*" + std::to_string(kw)
                + " is too large: the offset's 2*offset_group*kH*kW channels must be below 2^31; check field "
                  "'offset_group' and the weight");
        samples = points * a.offset_group;
    }
    if (known(samples) && known(off.d[1]) && off.d[1] != 2 * samples)
        return Status::invalid("offset must have 2*offset_group*kH*kW = " + std::to_string(2 * samples)
            + " channels, got " + std::to_string(off.d[1]) + "; check field 'offset_group'");
    if ((oh != -1 && known(off.d[2]) && off.d[2] != oh) || (ow != -1 && known(off.d[3]) && off.d[3] != ow))
        return Status::invalid("offset spatial size " + std::to_string(off.d[2]) + "x" + std::to_string(off.d[3])
            + " must equal the output size " + std::to_string(oh) + "x" + std::to_string(ow)
            + "; check fields 'pads', 'strides', 'dilations'");
    if (nb >= 4 && known(oc) && known(in[kInputBias].d[0]) && in[kInputBias].d[0] != oc)
        return Status::invalid("B must have shape (" + std::to_string(oc) + ",), got " + shapeText(in[kInputBias]));
    if (nb == 5)
    {
        TensorShape const& m = in[kInputMask];
        int64_t const expected[4] = {n, samples, oh, ow};
        for (int32_t r = 0; r < 4; ++r)
            if (known(expected[r]) && known(m.d[r]) && expected[r] != m.d[r])
                return Status::invalid("mask must have shape (N, offset_group*kH*kW, oH, oW) = (" + std::to_string(expected[0])
                    + ", " + std::to_string(expected[1]) + ", " + std::to_string(expected[2]) + ", "
                    + std::to_string(expected[3]) + "), got " + shapeText(m));
    }
    output = TensorShape{};
    output.rank = 4;
    output.d[0] = n;
    output.d[1] = oc;
    output.d[2] = oh;
    output.d[3] = ow;
    return Status::success();
}

dcn_deform_conv_desc descFromShapes(dcn_deform_conv_attrs const& a, TensorShape const& x, TensorShape const& w)
{
    dcn_deform_conv_desc d{};
    d.batch = int32_t(x.d[0]);
    d.in_channels = int32_t(x.d[1]);
    d.height = int32_t(x.d[2]);
    d.width = int32_t(x.d[3]);
    d.out_channels = int32_t(w.d[0]);
    d.kernel_h = int32_t(w.d[2]);
    d.kernel_w = int32_t(w.d[3]);
    d.stride_h = a.strides[0];
    d.stride_w = a.strides[1];
    d.pad_top = a.pads[0];
    d.pad_left = a.pads[1];
    d.pad_bottom = a.pads[2];
    d.pad_right = a.pads[3];
    d.dilation_h = a.dilations[0];
    d.dilation_w = a.dilations[1];
    d.group = a.group;
    d.offset_group = a.offset_group;
    return d;
}

bool autoTakesMatrixPath(int64_t outChannelsPerGroup, int64_t channelsPerGroup, int64_t kernelPoints)
{
    return outChannelsPerGroup >= 8 && channelsPerGroup * kernelPoints >= 32;
}

bool fusedKernelAccepts(DeformConvGeometry const& geo, int32_t dtype)
{
    bool const typeOk = dtype == DCN_FLOAT32 || dtype == DCN_FLOAT16 || dtype == DCN_BFLOAT16;
    // The kernel's grid: y = tiles of 64 output channels per group, z = groups (each at most 65535).
    return typeOk && geo.d.group <= 65535 && (int64_t(geo.outChannelsPerGroup) + 63) / 64 <= 65535;
}

} // namespace dcn

// ---- C ABI over the logic above ----

DCN_API int32_t dcn_deform_conv2d_output_size(const dcn_deform_conv_desc* desc, int32_t* out_height, int32_t* out_width)
{
    return dcn::guarded([&] {
        if (!desc || !out_height || !out_width)
            return dcn::Status::invalid("dcn_deform_conv2d_output_size: desc, out_height and out_width must not be NULL");
        dcn::DeformConvGeometry geo;
        dcn::Status status = dcn::makeGeometry(*desc, geo);
        if (status.ok())
        {
            *out_height = geo.outH;
            *out_width = geo.outW;
        }
        return status;
    });
}

DCN_API int32_t dcn_plugin_deform_conv_parse_fields(int32_t count, const char* const* names, const void* const* data,
    const int32_t* lengths, const int32_t* types, dcn_deform_conv_attrs* attrs)
{
    return dcn::guarded([&] {
        if (count < 0 || (count > 0 && (!names || !data || !lengths || !types)) || !attrs)
            return dcn::Status::invalid("dcn_plugin_deform_conv_parse_fields: NULL array or negative count");
        std::vector<dcn::RawField> fields;
        for (int32_t k = 0; k < count; ++k)
            fields.push_back({names[k], data[k], lengths[k], types[k]});
        return dcn::parseFields(fields, *attrs);
    });
}

DCN_API int32_t dcn_plugin_deform_conv_roundtrip(const dcn_deform_conv_attrs* in, dcn_deform_conv_attrs* out)
{
    return dcn::guarded([&] {
        if (!in || !out)
            return dcn::Status::invalid("dcn_plugin_deform_conv_roundtrip: NULL argument");
        std::vector<dcn::OwnedField> const owned = dcn::fieldsFromAttrs(*in);
        std::vector<dcn::RawField> raw;
        for (dcn::OwnedField const& f : owned)
            raw.push_back({f.name.c_str(), f.values.data(), int32_t(f.values.size()), dcn::kFieldTypeInt32});
        return dcn::parseFields(raw, *out);
    });
}

DCN_API int32_t dcn_plugin_deform_conv_output_dims(const dcn_deform_conv_attrs* attrs, int32_t nb_inputs,
    const int32_t* ranks, const int64_t* dims, int64_t* out_dims)
{
    return dcn::guarded([&] {
        if (!attrs || !ranks || !dims || !out_dims || nb_inputs < 0 || nb_inputs > 8)
            return dcn::Status::invalid("dcn_plugin_deform_conv_output_dims: NULL argument or nb_inputs outside 0..8");
        std::vector<dcn::TensorShape> shapes(static_cast<size_t>(nb_inputs));
        for (int32_t k = 0; k < nb_inputs; ++k)
        {
            if (ranks[k] < 0 || ranks[k] > 4)
                return dcn::Status::invalid("input " + std::to_string(k) + " has rank " + std::to_string(ranks[k])
                    + "; ranks above 4 are never valid here");
            shapes[k].rank = ranks[k];
            for (int32_t r = 0; r < ranks[k]; ++r)
                shapes[k].d[r] = dims[4 * k + r];
        }
        dcn::TensorShape output;
        dcn::Status status = dcn::checkInputShapes(*attrs, shapes, output);
        if (status.ok())
            for (int32_t r = 0; r < 4; ++r)
                out_dims[r] = output.d[r];
        return status;
    });
}

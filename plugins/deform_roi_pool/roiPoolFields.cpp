#include "roiPoolFields.h"
#include "roiPoolShapes.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace dcn
{
namespace
{

// Where a named field lands in the descriptor.
struct Slot
{
    char const* name;
    int32_t* intTarget;
    float* floatTarget;
};

Status parseInto(char const* op, std::vector<RawField> const& fields, std::vector<Slot> const& slots)
{
    for (RawField const& field : fields)
    {
        if (!field.name)
            continue;
        for (Slot const& slot : slots)
        {
            if (std::strcmp(field.name, slot.name) != 0)
                continue;
            std::string const who = std::string(op) + ": field '" + slot.name + "'";
            if (field.length != 1 || !field.data)
                return Status::invalid(who + " must hold one value, got " + std::to_string(field.length));
            if (slot.intTarget)
            {
                if (field.type == kFieldTypeInt32)
                    *slot.intTarget = *static_cast<int32_t const*>(field.data);
                else if (field.type == kFieldTypeInt64)
                {
                    int64_t const value = *static_cast<int64_t const*>(field.data);
                    if (value < INT32_MIN || value > INT32_MAX)
                        return Status::invalid(who + " must fit 32 bits, got " + std::to_string(value));
                    *slot.intTarget = int32_t(value);
                }
                else
                    return Status::invalid(who + " must be an INT32 (or INT64), got field type " + std::to_string(field.type));
            }
            else
            {
                if (field.type == kFieldTypeFloat32)
                    *slot.floatTarget = *static_cast<float const*>(field.data);
                else if (field.type == kFieldTypeFloat64)
                {
                    // A finite double beyond float's range has no float value (the conversion is undefined).
                    double const value = *static_cast<double const*>(field.data);
                    if (std::isfinite(value) && std::fabs(value) > double(std::numeric_limits<float>::max()))
                        return Status::invalid(who + " must fit float32, got " + std::to_string(value));
                    *slot.floatTarget = float(value);
                }
                else
                    return Status::invalid(who + " must be a FLOAT32 (or FLOAT64), got field type " + std::to_string(field.type));
            }
        }
    }
    return Status::success();
}

// Known dimension d of an input must equal want (when both known).
Status dimIs(char const* op, char const* input, int32_t axis, int64_t got, int64_t want, char const* meaning)
{
    if (got < 0 || want < 0 || got == want)
        return Status::success();
    return Status::invalid(std::string(op) + ": input " + input + " dim " + std::to_string(axis) + " must be "
        + std::to_string(want) + " (" + meaning + "), got " + std::to_string(got));
}

Status ranksAre(char const* op, int32_t const* ranks, char const* third)
{
    int32_t const want[3] = {4, 2, 4};
    char const* names[3] = {"X", "rois", third};
    for (int32_t k = 0; k < 3; ++k)
        if (ranks[k] != want[k])
            return Status::invalid(std::string(op) + ": input " + names[k] + " must be " + std::to_string(want[k])
                + "-D, got rank " + std::to_string(ranks[k]));
    return Status::success();
}

#define DCN_RETURN_IF_ERROR(expr)                                                                                      \
    do                                                                                                                 \
    {                                                                                                                  \
        Status _s = (expr);                                                                                            \
        if (!_s.ok())                                                                                                  \
            return _s;                                                                                                 \
    } while (0)

} // namespace

dcn_deform_roi_pool_desc defaultRoiPoolAttrs()
{
    dcn_deform_roi_pool_desc d{};
    d.pooled_height = d.pooled_width = 1;
    d.sampling_ratio = 2;
    d.spatial_scale = 1.0f;
    d.gamma = 0.1f;
    return d;
}

dcn_deform_psroi_pool_desc defaultPsroiPoolAttrs()
{
    dcn_deform_psroi_pool_desc d{};
    d.output_dim = d.group_size = d.pooled_size = d.sample_per_part = 1;
    d.num_classes = 1;
    d.spatial_scale = 1.0f;
    return d;
}

Status parseRoiPoolFields(std::vector<RawField> const& fields, dcn_deform_roi_pool_desc& a)
{
    char const* op = "DeformRoIPool";
    a = defaultRoiPoolAttrs();
    DCN_RETURN_IF_ERROR(parseInto(op, fields,
        {{"pooled_height", &a.pooled_height, nullptr}, {"pooled_width", &a.pooled_width, nullptr},
            {"sampling_ratio", &a.sampling_ratio, nullptr}, {"spatial_scale", nullptr, &a.spatial_scale},
            {"gamma", nullptr, &a.gamma}}));
    DCN_RETURN_IF_ERROR(inRange(op, "pooled_height", a.pooled_height, 1));
    DCN_RETURN_IF_ERROR(inRange(op, "pooled_width", a.pooled_width, 1));
    DCN_RETURN_IF_ERROR(inRange(op, "sampling_ratio", a.sampling_ratio, 0, kMaxSamplesPerBinSide));
    DCN_RETURN_IF_ERROR(checkRoiPoolFloats(op, a.spatial_scale, "gamma", a.gamma));
    return Status::success();
}

Status parsePsroiPoolFields(std::vector<RawField> const& fields, dcn_deform_psroi_pool_desc& a)
{
    char const* op = "DeformPSRoIPool";
    a = defaultPsroiPoolAttrs();
    DCN_RETURN_IF_ERROR(parseInto(op, fields,
        {{"output_dim", &a.output_dim, nullptr}, {"group_size", &a.group_size, nullptr},
            {"pooled_size", &a.pooled_size, nullptr}, {"part_size", &a.part_size, nullptr},
            {"sample_per_part", &a.sample_per_part, nullptr}, {"no_trans", &a.no_trans, nullptr},
            {"spatial_scale", nullptr, &a.spatial_scale}, {"trans_std", nullptr, &a.trans_std}}));
    DCN_RETURN_IF_ERROR(inRange(op, "output_dim", a.output_dim, 1));
    DCN_RETURN_IF_ERROR(inRange(op, "group_size", a.group_size, 1));
    DCN_RETURN_IF_ERROR(inRange(op, "pooled_size", a.pooled_size, 1));
    DCN_RETURN_IF_ERROR(inRange(op, "part_size", a.part_size, 0));
    DCN_RETURN_IF_ERROR(inRange(op, "sample_per_part", a.sample_per_part, 1, kMaxSamplesPerBinSide));
    DCN_RETURN_IF_ERROR(checkRoiPoolFloats(op, a.spatial_scale, "trans_std", a.trans_std));
    if (a.part_size == 0)
        a.part_size = a.pooled_size;
    a.no_trans = a.no_trans ? 1 : 0;
    return Status::success();
}

std::vector<RoiOwnedField> roiPoolFields(dcn_deform_roi_pool_desc const& a)
{
    return {{"pooled_height", false, a.pooled_height, 0.f}, {"pooled_width", false, a.pooled_width, 0.f},
        {"sampling_ratio", false, a.sampling_ratio, 0.f}, {"spatial_scale", true, 0, a.spatial_scale},
        {"gamma", true, 0, a.gamma}};
}

std::vector<RoiOwnedField> psroiPoolFields(dcn_deform_psroi_pool_desc const& a)
{
    return {{"output_dim", false, a.output_dim, 0.f}, {"group_size", false, a.group_size, 0.f},
        {"pooled_size", false, a.pooled_size, 0.f}, {"part_size", false, a.part_size, 0.f},
        {"sample_per_part", false, a.sample_per_part, 0.f}, {"no_trans", false, a.no_trans, 0.f},
        {"spatial_scale", true, 0, a.spatial_scale}, {"trans_std", true, 0, a.trans_std}};
}

Status roiPoolDescFromShapes(dcn_deform_roi_pool_desc const& attrs, int32_t const* ranks, int64_t const* const* dims,
    dcn_deform_roi_pool_desc& d)
{
    char const* op = "DeformRoIPool";
    DCN_RETURN_IF_ERROR(ranksAre(op, ranks, "offset"));
    int64_t const* x = dims[0];
    int64_t const* rois = dims[1];
    int64_t const* off = dims[2];
    DCN_RETURN_IF_ERROR(dimIs(op, "rois", 1, rois[1], 5, "(batch index, x1, y1, x2, y2)"));
    DCN_RETURN_IF_ERROR(dimIs(op, "offset", 0, off[0], rois[0], "the number of RoIs"));
    DCN_RETURN_IF_ERROR(dimIs(op, "offset", 1, off[1], 2, "(dx, dy)"));
    DCN_RETURN_IF_ERROR(dimIs(op, "offset", 2, off[2], attrs.pooled_height, "pooled_height"));
    DCN_RETURN_IF_ERROR(dimIs(op, "offset", 3, off[3], attrs.pooled_width, "pooled_width"));
    d = attrs;
    d.batch = int32_t(x[0]);
    d.channels = int32_t(x[1]);
    d.height = int32_t(x[2]);
    d.width = int32_t(x[3]);
    d.num_rois = int32_t(rois[0]);
    return Status::success();
}

Status psroiPoolDescFromShapes(dcn_deform_psroi_pool_desc const& attrs, int32_t const* ranks,
    int64_t const* const* dims, dcn_deform_psroi_pool_desc& d)
{
    char const* op = "DeformPSRoIPool";
    DCN_RETURN_IF_ERROR(ranksAre(op, ranks, "trans"));
    int64_t const* x = dims[0];
    int64_t const* rois = dims[1];
    int64_t const* trans = dims[2];
    // output_dim*group_size^2 in int64 without wrapping (it could wrap onto a valid channel count); a product above
    // 2^31 - 1 fits no input, and is refused as such even while X's channels are unknown.
    int64_t const groups = int64_t(attrs.group_size) * attrs.group_size;
    if (groups > INT32_MAX || int64_t(attrs.output_dim) * groups > INT32_MAX)
        return Status::invalid(std::string(op) + ": output_dim*group_size^2 = " + std::to_string(attrs.output_dim) + "*"
            + std::to_string(attrs.group_size) + "^2 input channels must be below 2^31; check output_dim and "
              "group_size");
    int64_t const channels = int64_t(attrs.output_dim) * groups;
    DCN_RETURN_IF_ERROR(dimIs(op, "X", 1, x[1], channels, "output_dim*group_size^2"));
    DCN_RETURN_IF_ERROR(dimIs(op, "rois", 1, rois[1], 5, "(batch index, x1, y1, x2, y2)"));
    DCN_RETURN_IF_ERROR(dimIs(op, "trans", 0, trans[0], rois[0], "the number of RoIs"));
    DCN_RETURN_IF_ERROR(dimIs(op, "trans", 2, trans[2], attrs.part_size, "part_size"));
    DCN_RETURN_IF_ERROR(dimIs(op, "trans", 3, trans[3], attrs.part_size, "part_size"));
    if (trans[1] >= 0 && (trans[1] < 2 || trans[1] % 2 || attrs.output_dim % (trans[1] / 2)))
        return Status::invalid(std::string(op) + ": input trans must have 2*num_classes channels with output_dim ("
            + std::to_string(attrs.output_dim) + ") divisible by num_classes, got " + std::to_string(trans[1]));
    // d is written only once every check passed (it is the plugin's state for the next enqueue).
    d = attrs;
    d.num_classes = trans[1] >= 0 && !attrs.no_trans ? int32_t(trans[1] / 2) : 1;
    d.batch = int32_t(x[0]);
    d.channels = int32_t(x[1]);
    d.height = int32_t(x[2]);
    d.width = int32_t(x[3]);
    d.num_rois = int32_t(rois[0]);
    return Status::success();
}

} // namespace dcn

namespace
{

std::vector<dcn::RawField> rawFields(int32_t count, const char* const* names, const void* const* data,
    const int32_t* lengths, const int32_t* types)
{
    std::vector<dcn::RawField> fields;
    for (int32_t k = 0; k < count; ++k)
        fields.push_back({names[k], data[k], lengths[k], types[k]});
    return fields;
}

} // namespace

DCN_API int32_t dcn_plugin_deform_roi_pool_parse_fields(int32_t count, const char* const* names,
    const void* const* data, const int32_t* lengths, const int32_t* types, dcn_deform_roi_pool_desc* attrs)
{
    return dcn::guarded([&] {
        if (!attrs || count < 0 || (count > 0 && (!names || !data || !lengths || !types)))
            return dcn::Status::invalid("dcn_plugin_deform_roi_pool_parse_fields: NULL argument or negative count");
        return dcn::parseRoiPoolFields(rawFields(count, names, data, lengths, types), *attrs);
    });
}

DCN_API int32_t dcn_plugin_deform_psroi_pool_parse_fields(int32_t count, const char* const* names,
    const void* const* data, const int32_t* lengths, const int32_t* types, dcn_deform_psroi_pool_desc* attrs)
{
    return dcn::guarded([&] {
        if (!attrs || count < 0 || (count > 0 && (!names || !data || !lengths || !types)))
            return dcn::Status::invalid("dcn_plugin_deform_psroi_pool_parse_fields: NULL argument or negative count");
        return dcn::parsePsroiPoolFields(rawFields(count, names, data, lengths, types), *attrs);
    });
}

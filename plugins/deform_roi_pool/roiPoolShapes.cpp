#include "roiPoolShapes.h"

#include <cmath>
#include <limits>
#include <string>
#include <tuple>

namespace dcn
{

Status inRange(char const* op, char const* name, int64_t value, int64_t minimum, int64_t maximum)
{
    if (value >= minimum && value <= maximum)
        return Status::success();
    return Status::invalid(std::string(op) + ": " + name + " must be "
        + (maximum == INT32_MAX ? ">= " + std::to_string(minimum)
                                : "from " + std::to_string(minimum) + " to " + std::to_string(maximum))
        + ", got " + std::to_string(value));
}

Status checkRoiPoolFloats(char const* op, float spatialScale, char const* shiftName, float shift)
{
    // NaN fails both comparisons; a scale of 0 or below pools every box onto one point, a NaN one pools NaN.
    if (!(spatialScale > 0.f && spatialScale <= std::numeric_limits<float>::max()))
        return Status::invalid(std::string(op) + ": spatial_scale must be a finite number > 0 (feature-map pixels per "
            "image pixel, e.g. 1/16 = 0.0625 for a stride-16 map), got " + std::to_string(spatialScale));
    if (!std::isfinite(shift))
        return Status::invalid(std::string(op) + ": " + shiftName + " must be a finite number, got " + std::to_string(shift));
    return Status::success();
}

Status checkRoiPool(dcn_deform_roi_pool_desc const& d)
{
    char const* op = "DeformRoIPool";
    for (auto const& [name, value, minimum, maximum] :
        {std::tuple<char const*, int64_t, int64_t, int64_t>{"batch", d.batch, 0, INT32_MAX},
            {"channels", d.channels, 1, INT32_MAX}, {"height", d.height, 1, INT32_MAX},
            {"width", d.width, 1, INT32_MAX}, {"num_rois", d.num_rois, 0, INT32_MAX},
            {"pooled_height", d.pooled_height, 1, INT32_MAX}, {"pooled_width", d.pooled_width, 1, INT32_MAX},
            {"sampling_ratio", d.sampling_ratio, 0, kMaxSamplesPerBinSide}})
    {
        Status s = inRange(op, name, value, minimum, maximum);
        if (!s.ok())
            return s;
    }
    return checkRoiPoolFloats(op, d.spatial_scale, "gamma", d.gamma);
}

Status checkPsroiPool(dcn_deform_psroi_pool_desc const& d)
{
    char const* op = "DeformPSRoIPool";
    for (auto const& [name, value, minimum, maximum] :
        {std::tuple<char const*, int64_t, int64_t, int64_t>{"batch", d.batch, 0, INT32_MAX},
            {"channels", d.channels, 1, INT32_MAX}, {"height", d.height, 1, INT32_MAX},
            {"width", d.width, 1, INT32_MAX}, {"num_rois", d.num_rois, 0, INT32_MAX},
            {"output_dim", d.output_dim, 1, INT32_MAX}, {"group_size", d.group_size, 1, INT32_MAX},
            {"pooled_size", d.pooled_size, 1, INT32_MAX}, {"part_size", d.part_size, 0, INT32_MAX},
            {"sample_per_part", d.sample_per_part, 1, kMaxSamplesPerBinSide}})
    {
        Status s = inRange(op, name, value, minimum, maximum);
        if (!s.ok())
            return s;
    }
    // group_size^2 fits int64, and output_dim times it once that is below 2^31; a larger one wrapped, and could wrap
    // onto the channel count (output_dim 5, group_size 1920767767 gave 2^64 + 21279829 and was accepted).
    int64_t const groups = int64_t(d.group_size) * d.group_size;
    bool const fits = groups <= INT32_MAX;
    if (!fits || int64_t(d.output_dim) * groups != d.channels)
        return Status::invalid(std::string(op) + ": input must have output_dim*group_size^2 = "
            + (fits ? std::to_string(int64_t(d.output_dim) * groups)
                    : std::to_string(d.output_dim) + "*" + std::to_string(d.group_size) + "^2")
            + " channels, got " + std::to_string(d.channels));
    Status const floats = checkRoiPoolFloats(op, d.spatial_scale, "trans_std", d.trans_std);
    if (!floats.ok())
        return floats;
    if (!d.no_trans)
    {
        if (d.num_classes < 1 || d.output_dim % d.num_classes)
            return Status::invalid(std::string(op) + ": num_classes (trans channels / 2) must be >= 1 and divide "
                "output_dim (" + std::to_string(d.output_dim) + "), got " + std::to_string(d.num_classes));
    }
    return Status::success();
}

} // namespace dcn

DCN_API int32_t dcn_deform_roi_pool_check(const dcn_deform_roi_pool_desc* desc)
{
    return dcn::guarded([&] {
        return desc ? dcn::checkRoiPool(*desc) : dcn::Status::invalid("dcn_deform_roi_pool_check: desc must not be NULL");
    });
}

DCN_API int32_t dcn_deform_psroi_pool_check(const dcn_deform_psroi_pool_desc* desc)
{
    return dcn::guarded([&] {
        return desc ? dcn::checkPsroiPool(*desc) : dcn::Status::invalid("dcn_deform_psroi_pool_check: desc must not be NULL");
    });
}

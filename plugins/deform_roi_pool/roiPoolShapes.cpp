#include "roiPoolShapes.h"

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
    return Status::success();
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
    int64_t const expected = int64_t(d.output_dim) * d.group_size * d.group_size;
    if (d.channels != expected)
        return Status::invalid(std::string(op) + ": input must have output_dim*group_size^2 = " + std::to_string(expected)
            + " channels, got " + std::to_string(d.channels));
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

// dcn_channels_last_cpu and dcn_prefault_cpu: the channels-last copy and the prefault of the fast CPU forwards
// (dcnCpu.h) for callers that keep their buffers themselves (the dense CPU forward's Python side, which samples the
// table slice by slice and writes a torch output).
#include "dcnCpu.h"
#include "dcnDtype.h"
#include "dcnStatus.h"

#include <cstdint>
#include <string>

namespace
{

// The copy moves elements, not values: one unsigned type per element size.
template <typename Bits>
void copyChannelsLast(void const* input, void* output, int32_t batch, int32_t channels, int64_t plane, int32_t threads)
{
    dcn::prefaultForWriting(output, size_t(batch) * channels * plane * sizeof(Bits));
    dcn::toChannelsLast(static_cast<Bits const*>(input), static_cast<Bits*>(output), batch, channels, plane, threads);
}

} // namespace

DCN_API int32_t dcn_channels_last_cpu(int32_t dtype, const void* input, void* output, int32_t batch, int32_t channels,
    int64_t plane, int32_t num_threads)
{
    return dcn::guarded([&] {
        char const* const name = "dcn_channels_last_cpu";
        int32_t threads = 1;
        dcn::Status status = dcn::cpuThreads(name, num_threads, threads);
        if (!status.ok())
            return status;
        if (!dcn::validDtype(dtype))
            return dcn::Status::unsupportedDtype(dtype);
        if (batch < 0 || channels < 0 || plane < 0)
            return dcn::Status::invalid(std::string(name) + ": batch, channels and plane must be >= 0, got "
                + std::to_string(batch) + ", " + std::to_string(channels) + ", " + std::to_string(plane));
        int64_t const rows = int64_t(batch) * channels; // fits: both below 2^31
        if (rows == 0 || plane == 0)
            return dcn::Status::success();
        // The byte count must fit: batch*channels*plane wrapped (4 * 1 * 2^62 gave 0 and a silent success).
        if (plane > INT64_MAX / int64_t(dcn::dtypeBytes(dtype)) / rows)
            return dcn::Status::invalid(std::string(name) + ": batch*channels*plane = " + std::to_string(batch) + "*"
                + std::to_string(channels) + "*" + std::to_string(plane) + " elements do not fit in memory");
        if (!input || !output)
            return dcn::Status::invalid(std::string(name) + ": input and output must not be NULL");
        switch (dcn::dtypeBytes(dtype))
        {
        case 8: copyChannelsLast<uint64_t>(input, output, batch, channels, plane, threads); break;
        case 4: copyChannelsLast<uint32_t>(input, output, batch, channels, plane, threads); break;
        default: copyChannelsLast<uint16_t>(input, output, batch, channels, plane, threads); break;
        }
        return dcn::Status::success();
    });
}

DCN_API int32_t dcn_prefault_cpu(void* data, int64_t bytes)
{
    return dcn::guarded([&] {
        if (bytes < 0 || (bytes > 0 && !data))
            return dcn::Status::invalid("dcn_prefault_cpu: bytes must be >= 0 and data not NULL, got "
                + std::to_string(bytes) + " bytes");
        dcn::prefaultForWriting(data, size_t(bytes));
        return dcn::Status::success();
    });
}

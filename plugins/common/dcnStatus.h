// Error codes and the per-thread last-error message behind dcn_last_error().
#pragma once

#include "dcn_kernels.h"

#include <new>
#include <string>

namespace dcn
{

// A result with a message that names what went wrong; the C ABI turns it into a code + dcn_last_error().
struct Status
{
    int32_t code = DCN_OK;
    std::string message;

    bool ok() const { return code == DCN_OK; }
    static Status success() { return Status{}; }
    static Status error(int32_t code, std::string message) { return Status{code, std::move(message)}; }
    static Status invalid(std::string message) { return error(DCN_ERROR_INVALID_ARGUMENT, std::move(message)); }
    // A dtype code outside dcn_dtype (every kernel's and host entry's switch ends here).
    static Status unsupportedDtype(int32_t dtype)
    {
        return error(DCN_ERROR_UNSUPPORTED,
            "dtype " + std::to_string(dtype) + " is not one of float32 (0), float16 (1), bfloat16 (2), float64 (3)");
    }
};

// Record status as this thread's last error (or clear it) and return its code.
int32_t publish(Status const& status);

// Run body, turning any C++ exception into DCN_ERROR_INTERNAL: nothing escapes through the C ABI.
template <typename Body>
int32_t guarded(Body&& body) noexcept
{
    try
    {
        return publish(body());
    }
    catch (std::bad_alloc const&)
    {
        return publish(Status::error(DCN_ERROR_INTERNAL,
            "out of memory: a scratch buffer (a channels-last copy of the input, columns, weights) could not be "
            "allocated; pass fewer images or RoIs per call"));
    }
    catch (std::exception const& e)
    {
        return publish(Status::error(DCN_ERROR_INTERNAL, std::string("internal error: ") + e.what()));
    }
    catch (...)
    {
        return publish(Status::error(DCN_ERROR_INTERNAL, "internal error: unknown exception"));
    }
}

} // namespace dcn

#include "dcnStatus.h"

namespace dcn
{
namespace
{
thread_local std::string lastError;
}

int32_t publish(Status const& status)
{
    lastError = status.ok() ? std::string() : status.message;
    return status.code;
}

} // namespace dcn

DCN_API int32_t dcn_abi_version(void)
{
    return DCN_ABI_VERSION;
}

DCN_API const char* dcn_last_error(void)
{
    return dcn::lastError.c_str();
}

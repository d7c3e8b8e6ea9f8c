// The CUDA runtime's error after a kernel launch, as a Status (CUDA sources only).
#pragma once

#include "dcnStatus.h"

#include <cuda_runtime_api.h>

#include <string>

namespace dcn
{

// Call right after a launch: the launch's error, if any, as DCN_ERROR_CUDA naming what was launched.
inline Status launchStatus(std::string const& what)
{
    cudaError_t const error = cudaGetLastError();
    if (error == cudaSuccess)
        return Status::success();
    return Status::error(DCN_ERROR_CUDA,
        "launching " + what + ": " + cudaGetErrorName(error) + " (" + cudaGetErrorString(error) + ")");
}

} // namespace dcn

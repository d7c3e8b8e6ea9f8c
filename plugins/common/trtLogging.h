// Logging for the TensorRT plugins: through the logger TensorRT hands over in setLoggerFinder, else stderr.
#pragma once

#include <NvInferRuntime.h>

#include <exception>
#include <string>

namespace dcn
{

void setTrtLoggerFinder(nvinfer1::ILoggerFinder* finder);

// TensorRT 11 re-based ILoggerFinder and ILogger on IVersionedInterface, which moved their virtual functions: a
// finder handed over by a TensorRT of another major version than these headers' cannot be called safely (with 11's
// headers under TensorRT 10 the call reads past the vtable). The library entry point setLoggerFinder installs a
// finder only when this is true: libnvinfer.so.N (or its lean/dispatch runtime) of the headers' major N is loaded.
bool headersTensorRTLoaded();
// Whether a shared library with this file name or soname is already loaded in the process (dlopen RTLD_NOLOAD).
bool sharedLibraryLoaded(char const* name);
void logTrt(nvinfer1::ILogger::Severity severity, std::string const& message);
inline void logTrtError(std::string const& message)
{
    logTrt(nvinfer1::ILogger::Severity::kERROR, message);
}

// Runs body() for a TensorRT entry point, which is noexcept: an exception (std::bad_alloc while building a message
// or a vector) is logged as "dcn_deploy::<plugin>: <what> failed: ..." and `fallback` returned, instead of ending
// the process. Nothing is allocated before the try.
template <typename Result, typename Body>
Result guardTrtCall(char const* plugin, char const* what, Result fallback, Body&& body) noexcept
{
    try
    {
        return body();
    }
    catch (std::exception const& e)
    {
        try
        {
            logTrtError(std::string("dcn_deploy::") + plugin + ": " + what + " failed: " + e.what());
        }
        catch (...) // out of memory for the message too
        {
        }
    }
    catch (...)
    {
    }
    return fallback;
}

} // namespace dcn

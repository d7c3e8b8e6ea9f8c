#include "trtLogging.h"

#include <NvInferVersion.h>

#include <atomic>
#include <cstdio>
#include <dlfcn.h>

namespace dcn
{
namespace
{
std::atomic<nvinfer1::ILoggerFinder*> loggerFinder{nullptr};
}

void setTrtLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    loggerFinder.store(finder);
}

bool sharedLibraryLoaded(char const* name)
{
    void* handle = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
    if (handle)
        dlclose(handle); // drops only the reference RTLD_NOLOAD added
    return handle != nullptr;
}

bool headersTensorRTLoaded()
{
    std::string const major = std::to_string(NV_TENSORRT_MAJOR);
    for (char const* base : {"libnvinfer.so.", "libnvinfer_lean.so.", "libnvinfer_dispatch.so."})
        if (sharedLibraryLoaded((base + major).c_str()))
            return true;
    return false;
}

void logTrt(nvinfer1::ILogger::Severity severity, std::string const& message)
{
    std::string const text = "[dcn_deploy] " + message;
    nvinfer1::ILoggerFinder* finder = loggerFinder.load();
    nvinfer1::ILogger* logger = finder ? finder->findLogger() : nullptr;
    if (logger)
        logger->log(severity, text.c_str());
    else if (severity <= nvinfer1::ILogger::Severity::kWARNING)
        std::fprintf(stderr, "%s\n", text.c_str());
}

} // namespace dcn

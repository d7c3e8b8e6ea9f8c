#include "trtLogging.h"

#include <atomic>
#include <cstdio>

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

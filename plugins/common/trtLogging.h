// Logging for the TensorRT plugins: through the logger TensorRT hands over in setLoggerFinder, else stderr.
#pragma once

#include <NvInferRuntime.h>

#include <string>

namespace dcn
{

void setTrtLoggerFinder(nvinfer1::ILoggerFinder* finder);
void logTrt(nvinfer1::ILogger::Severity severity, std::string const& message);
inline void logTrtError(std::string const& message)
{
    logTrt(nvinfer1::ILogger::Severity::kERROR, message);
}

} // namespace dcn

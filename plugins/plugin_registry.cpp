// The entry points TensorRT looks up when it loads this library (registry load_library, trtexec --dynamicPlugins).
#include "dcn_kernels.h"
#include "deformConvPlugin.h"
#include "roiPoolPlugin.h"
#include "trtLogging.h"

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <string>

extern "C" __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    // A finder from another TensorRT major version than the headers this library was compiled against has another
    // vtable layout (trtLogging.h): keep it out, and say so on stderr. No exception may cross this C entry point.
    try
    {
        if (finder && !dcn::headersTensorRTLoaded())
        {
            dcn::setTrtLoggerFinder(nullptr);
            dcn::logTrt(nvinfer1::ILogger::Severity::kWARNING,
                "this plugin library was compiled against TensorRT " + std::to_string(NV_TENSORRT_MAJOR)
                    + " headers, but no libnvinfer.so." + std::to_string(NV_TENSORRT_MAJOR)
                    + " is loaded: its messages go to stderr instead of TensorRT's logger. Rebuild it against the "
                      "headers of the TensorRT you run (dcn-deploy plugin build)");
            return;
        }
        dcn::setTrtLoggerFinder(finder);
    }
    catch (...) // out of memory for the message: the finder stays as it was
    {
    }
}

extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators)
{
    // One creator object per plugin for the lifetime of the library. Add new plugins' creators here. Their
    // constructors allocate (field lists): a failure is reported as no creators, never as an exception through C.
    try
    {
        static dcn::DeformConvPluginCreator deformConvCreator;
        static dcn::DeformRoiPoolPluginCreator deformRoiPoolCreator;
        static dcn::DeformPsroiPoolPluginCreator deformPsroiPoolCreator;
        static nvinfer1::IPluginCreatorInterface* const creators[]
            = {&deformConvCreator, &deformRoiPoolCreator, &deformPsroiPoolCreator};
        nbCreators = int32_t(sizeof(creators) / sizeof(creators[0]));
        return creators;
    }
    catch (...)
    {
        nbCreators = 0;
        return nullptr;
    }
}

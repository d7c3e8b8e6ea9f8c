// The entry points TensorRT looks up when it loads this library (registry load_library, trtexec --dynamicPlugins).
#include "dcn_kernels.h"
#include "deformConvPlugin.h"
#include "roiPoolPlugin.h"
#include "trtLogging.h"

#include <NvInferRuntime.h>

extern "C" __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    dcn::setTrtLoggerFinder(finder);
}

extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators)
{
    // One creator object per plugin for the lifetime of the library. Add new plugins' creators here.
    static dcn::DeformConvPluginCreator deformConvCreator;
    static dcn::DeformRoiPoolPluginCreator deformRoiPoolCreator;
    static dcn::DeformPsroiPoolPluginCreator deformPsroiPoolCreator;
    static nvinfer1::IPluginCreatorInterface* const creators[]
        = {&deformConvCreator, &deformRoiPoolCreator, &deformPsroiPoolCreator};
    nbCreators = int32_t(sizeof(creators) / sizeof(creators[0]));
    return creators;
}

// What the plugin shell tests share: a check counter, a logger that keeps the last error, and stand-ins for the
// two TensorRT classes a plugin's getOutputShapes talks to (IExprBuilder, IDimensionExpr): constants fold, anything
// else stays symbolic. They check our shells' logic and use of the interfaces, not TensorRT's own behaviour.
#pragma once

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <vector>

namespace shelltest
{

using namespace nvinfer1;

inline int failures = 0; // the exit code: main returns it

inline void check(bool condition, std::string const& what)
{
    std::printf("%s %s\n", condition ? "ok  " : "FAIL", what.c_str());
    if (!condition)
        ++failures;
}

// ---- a logger that keeps the last error ----
class CaptureLogger : public ILogger
{
public:
    void log(Severity severity, char const* msg) noexcept override
    {
        if (severity <= Severity::kERROR)
            lastError = msg;
        else if (severity == Severity::kINFO)
            lastInfo = msg;
    }
    std::string lastError;
    std::string lastInfo;
};

class Finder : public ILoggerFinder
{
public:
    explicit Finder(ILogger* logger)
        : mLogger(logger)
    {
    }
    ILogger* findLogger() override { return mLogger; }

private:
    ILogger* mLogger;
};

// ---- stand-ins for TensorRT's dimension expressions: constants fold, anything else stays symbolic ----
class DimImpl : public apiv::VDimensionExpr
{
public:
    DimImpl(bool constant, int64_t value)
        : mConstant(constant)
        , mValue(value)
    {
    }
    bool isConstant() const override { return mConstant; }
    int64_t getConstantValue() const override { return mConstant ? mValue : -1; }
    bool isSizeTensor() const override { return false; }

private:
    bool mConstant;
    int64_t mValue;
};

class Dim : public IDimensionExpr
{
public:
    Dim(bool constant, int64_t value)
        : mStorage(constant, value)
    {
        mImpl = &mStorage;
    }

private:
    DimImpl mStorage;
};

inline int64_t floorDivide(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

class BuilderImpl : public apiv::VExprBuilder
{
public:
    IDimensionExpr const* constant(int64_t value) override { return make(true, value); }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a, IDimensionExpr const& b) override
    {
        if (!a.isConstant() || !b.isConstant())
            return make(false, 0);
        int64_t const x = a.getConstantValue(), y = b.getConstantValue();
        switch (op)
        {
        case DimensionOperation::kSUM: return make(true, x + y);
        case DimensionOperation::kPROD: return make(true, x * y);
        case DimensionOperation::kMAX: return make(true, x > y ? x : y);
        case DimensionOperation::kMIN: return make(true, x < y ? x : y);
        case DimensionOperation::kSUB: return make(true, x - y);
        case DimensionOperation::kEQUAL: return make(true, x == y);
        case DimensionOperation::kLESS: return make(true, x < y);
        case DimensionOperation::kFLOOR_DIV: return make(true, floorDivide(x, y));
        case DimensionOperation::kCEIL_DIV: return make(true, -floorDivide(-x, y));
        }
        return make(false, 0);
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return nullptr;
    }
    IDimensionExpr const* make(bool constant, int64_t value)
    {
        mPool.push_back(std::make_unique<Dim>(constant, value));
        return mPool.back().get();
    }

private:
    std::deque<std::unique_ptr<Dim>> mPool;
};

class Builder : public IExprBuilder
{
public:
    Builder() { mImpl = &mStorage; }
    IDimensionExpr const* make(bool constant, int64_t value) { return mStorage.make(constant, value); }

private:
    BuilderImpl mStorage;
};


// Dimension expressions for a shape; -1 marks a dynamic (symbolic) dimension.
inline DimsExprs dimsExprs(Builder& builder, std::vector<int64_t> const& shape)
{
    DimsExprs e{};
    e.nbDims = int32_t(shape.size());
    for (size_t k = 0; k < shape.size(); ++k)
        e.d[k] = builder.make(shape[k] >= 0, shape[k]);
    return e;
}

// A build-time tensor description with min = opt = max = shape.
inline DynamicPluginTensorDesc tensorDesc(std::vector<int64_t> const& shape, DataType type = DataType::kFLOAT,
    TensorFormat format = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc d{};
    d.desc.dims.nbDims = int32_t(shape.size());
    for (size_t k = 0; k < shape.size(); ++k)
        d.desc.dims.d[k] = shape[k];
    d.desc.type = type;
    d.desc.format = format;
    d.min = d.opt = d.max = d.desc.dims;
    return d;
}

// ---- with a GPU: the plugins' enqueue on real device memory ----
inline bool cudaDevicePresent()
{
    int devices = 0;
    return cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0;
}

// float32 device buffers uploaded from host vectors; freed with the object. ok() is false after any CUDA failure.
class DeviceBuffers
{
public:
    ~DeviceBuffers()
    {
        for (void* ptr : mPointers)
            cudaFree(ptr);
    }
    void* upload(std::vector<float> const& host)
    {
        void* ptr = allocate(host.size());
        mOk = mOk && ptr && cudaMemcpy(ptr, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess;
        return ptr;
    }
    void* allocate(size_t count)
    {
        void* ptr = nullptr;
        mOk = mOk && cudaMalloc(&ptr, count == 0 ? 1 : count * sizeof(float)) == cudaSuccess;
        if (ptr)
            mPointers.push_back(ptr);
        return ptr;
    }
    std::vector<float> download(void const* ptr, size_t count)
    {
        std::vector<float> host(count);
        mOk = mOk && cudaDeviceSynchronize() == cudaSuccess
            && cudaMemcpy(host.data(), ptr, count * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess;
        return host;
    }
    bool ok() const { return mOk; }

private:
    std::vector<void*> mPointers;
    bool mOk = true;
};

} // namespace shelltest

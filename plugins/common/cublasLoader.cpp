#include "cublasLoader.h"

#include <dlfcn.h>
#include <mutex>
#include <string>
#include <vector>

namespace dcn
{
namespace
{

// cublasMath_t (cublas_api.h): CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION. The default
// mode lets a product whose output is half or bfloat16 reduce partial sums (split-K) in the output type; this makes
// cuBLAS reduce in the compute type (float32), so that every output is rounded once, as our products promise.
constexpr int kCublasMathFloatReductions = 0 | 16;

struct Loaded
{
    CublasApi api{};
    bool ok = false;
    std::string reason;
};

template <typename Fn>
bool resolve(void* library, char const* name, Fn& fn, std::string& reason)
{
    bool const found = resolveSymbol(library, name, fn);
    if (!found)
        reason = std::string("libcublas has no symbol ") + name;
    return found;
}

Loaded const& loaded()
{
    static Loaded state;
    static std::once_flag once;
    std::call_once(once, [] {
        void* library = nullptr;
        for (char const* name : {"libcublas.so.13", "libcublas.so.12"}) // the v2 API these declarations match
            if ((library = dlopen(name, RTLD_NOW | RTLD_LOCAL)) != nullptr)
                break;
        if (!library)
        {
            char const* error = dlerror();
            state.reason = std::string("cuBLAS could not be loaded (libcublas.so.13 or .12 on the library path): ")
                + (error ? error : "not found");
            return;
        }
        CublasApi& api = state.api;
        state.ok = resolve(library, "cublasCreate_v2", api.create, state.reason)
            && resolve(library, "cublasDestroy_v2", api.destroy, state.reason)
            && resolve(library, "cublasSetStream_v2", api.setStream, state.reason)
            && resolve(library, "cublasSetWorkspace_v2", api.setWorkspace, state.reason)
            && resolve(library, "cublasSetMathMode", api.setMathMode, state.reason)
            && resolve(library, "cublasGemmStridedBatchedEx", api.gemmStridedBatchedEx, state.reason);
    });
    return state;
}

} // namespace

bool resolveSymbol(void* library, char const* name, void*& fn)
{
    fn = dlsym(library, name);
    return fn != nullptr;
}

CublasApi const* cublasApi()
{
    return loaded().ok ? &loaded().api : nullptr;
}

char const* cublasUnavailableReason()
{
    return loaded().reason.c_str();
}

CublasHandle::~CublasHandle()
{
    CublasApi const* api = cublasApi();
    if (!mHandle || !api)
        return;
    int current = -1;
    bool const switchDevice = cudaGetDevice(&current) == cudaSuccess && current != mDevice;
    if (switchDevice)
        cudaSetDevice(mDevice);
    api->destroy(mHandle);
    if (switchDevice)
        cudaSetDevice(current);
}

Status CublasHandle::prepare()
{
    CublasApi const* api = cublasApi();
    if (!api)
        return Status::error(DCN_ERROR_UNSUPPORTED, cublasUnavailableReason());
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess)
        return Status::error(DCN_ERROR_CUDA, "cudaGetDevice failed before creating the cuBLAS handle");
    if (mHandle && device != mDevice)
        return Status::error(DCN_ERROR_UNSUPPORTED, "a cuBLAS handle made for device " + std::to_string(mDevice)
            + " was used on device " + std::to_string(device) + "; each device needs its own plugin instance");
    if (!mCreateFailure.empty())
        return Status::error(DCN_ERROR_CUDA, mCreateFailure);
    if (!mHandle)
    {
        int rc = api->create(&mHandle);
        if (rc == 0 && (rc = api->setMathMode(mHandle, kCublasMathFloatReductions)) != 0)
            api->destroy(mHandle);
        if (rc != 0)
        {
            mHandle = nullptr;
            std::string const failure = "creating the cuBLAS handle (cublasCreate, cublasSetMathMode) failed with "
                "cuBLAS status " + std::to_string(rc);
            if (mRememberFailure)
                mCreateFailure = failure;
            return Status::error(DCN_ERROR_CUDA, failure);
        }
        mDevice = device;
    }
    return Status::success();
}

Status CublasHandle::bind(cudaStream_t stream, void* workspace, size_t workspaceBytes, CublasHandleT& handle)
{
    Status const ready = prepare();
    if (!ready.ok())
        return ready;
    CublasApi const* api = cublasApi();
    // setStream resets the workspace to cuBLAS's own pool, so the workspace comes second.
    int rc = api->setStream(mHandle, stream);
    if (rc == 0 && workspace && workspaceBytes)
        rc = api->setWorkspace(mHandle, workspace, workspaceBytes);
    if (rc != 0)
        return Status::error(DCN_ERROR_CUDA, "binding the cuBLAS handle to the stream failed with cuBLAS status "
            + std::to_string(rc));
    handle = mHandle;
    return Status::success();
}

CublasHandle& threadCublasHandle()
{
    // One per thread and device in use. Never destroyed: a thread-local destructor can run while the process
    // tears CUDA down (after main returns), when cublasDestroy may crash; a handle per thread is the cost.
    thread_local std::vector<CublasHandle*>* handles = new std::vector<CublasHandle*>();
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess || device < 0)
        device = 0; // the handle's own device check (prepare) then reports the problem
    if (size_t(device) >= handles->size())
        handles->resize(size_t(device) + 1, nullptr);
    CublasHandle*& slot = (*handles)[size_t(device)];
    if (slot == nullptr)
        slot = new CublasHandle();
    return *slot;
}

} // namespace dcn

#include "cublasLtLoader.h"

#include "cublasLoader.h" // resolveSymbol

#include <cstdlib>
#include <dlfcn.h>
#include <mutex>
#include <string>
#include <vector>

namespace dcn
{
namespace
{

struct LoadedLt
{
    CublasLtApi api{};
    bool ok = false;
    int32_t code = DCN_ERROR_UNSUPPORTED; // why not ok: DCN_ERROR_INVALID_ARGUMENT for a bad kCublasLtSwitch
    std::string reason = "cuBLASLt could not be loaded (libcublasLt.so.13 or .12 on the library path)";
};

LoadedLt const& loadedLt()
{
    static LoadedLt state;
    static std::once_flag once;
    std::call_once(once, [] {
        char const* setting = std::getenv(kCublasLtSwitch);
        std::string const value = setting ? setting : "";
        if (value == "off")
        {
            state.reason = std::string("cuBLASLt is switched off (") + kCublasLtSwitch + "=off)";
            return;
        }
        if (!value.empty() && value != "on")
        {
            state.code = DCN_ERROR_INVALID_ARGUMENT;
            state.reason = std::string(kCublasLtSwitch) + " must be one of on, off, got '" + value
                + "': unset it or set one of those";
            return;
        }
        void* library = nullptr;
        for (char const* name : {"libcublasLt.so.13", "libcublasLt.so.12"}) // the API these declarations match
            if ((library = dlopen(name, RTLD_NOW | RTLD_LOCAL)) != nullptr)
                break;
        if (!library)
            return;
        CublasLtApi& api = state.api;
        state.reason = "libcublasLt lacks an entry point this library uses (cublasLtMatmul and its descriptors)";
        state.ok = resolveSymbol(library, "cublasLtCreate", api.create)
            && resolveSymbol(library, "cublasLtMatmulDescCreate", api.descCreate)
            && resolveSymbol(library, "cublasLtMatmulDescDestroy", api.descDestroy)
            && resolveSymbol(library, "cublasLtMatmulDescSetAttribute", api.descSetAttribute)
            && resolveSymbol(library, "cublasLtMatrixLayoutCreate", api.layoutCreate)
            && resolveSymbol(library, "cublasLtMatrixLayoutDestroy", api.layoutDestroy)
            && resolveSymbol(library, "cublasLtMatmulPreferenceCreate", api.preferenceCreate)
            && resolveSymbol(library, "cublasLtMatmulPreferenceDestroy", api.preferenceDestroy)
            && resolveSymbol(library, "cublasLtMatmulPreferenceSetAttribute", api.preferenceSetAttribute)
            && resolveSymbol(library, "cublasLtMatmulAlgoGetHeuristic", api.algoGetHeuristic)
            && resolveSymbol(library, "cublasLtMatmul", api.matmul);
    });
    return state;
}

} // namespace

CublasLtApi const* cublasLtApi()
{
    return loadedLt().ok ? &loadedLt().api : nullptr;
}

Status threadCublasLtHandle(CublasLtHandleT& handle)
{
    CublasLtApi const* api = cublasLtApi();
    if (!api)
        return Status::error(loadedLt().code, loadedLt().reason);
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess)
        return Status::error(DCN_ERROR_CUDA, "cudaGetDevice failed before creating the cuBLASLt handle");
    // One per thread and device; never destroyed (a thread-local destructor may run while CUDA is torn down).
    thread_local std::vector<CublasLtHandleT>* handles = new std::vector<CublasLtHandleT>();
    if (handles->size() <= size_t(device))
        handles->resize(size_t(device) + 1, nullptr);
    CublasLtHandleT& mine = (*handles)[size_t(device)];
    if (!mine)
    {
        int const rc = api->create(&mine);
        if (rc != 0)
        {
            mine = nullptr;
            return Status::error(DCN_ERROR_CUDA, "cublasLtCreate failed with cuBLAS status " + std::to_string(rc));
        }
    }
    handle = mine;
    return Status::success();
}

} // namespace dcn

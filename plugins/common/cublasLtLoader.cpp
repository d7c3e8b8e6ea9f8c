#include "cublasLtLoader.h"

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
};

template <typename Fn>
bool resolveLt(void* library, char const* name, Fn& fn)
{
    fn = reinterpret_cast<Fn>(dlsym(library, name));
    return fn != nullptr;
}

LoadedLt const& loadedLt()
{
    static LoadedLt state;
    static std::once_flag once;
    std::call_once(once, [] {
        void* library = nullptr;
        for (char const* name : {"libcublasLt.so.13", "libcublasLt.so.12"}) // the API these declarations match
            if ((library = dlopen(name, RTLD_NOW | RTLD_LOCAL)) != nullptr)
                break;
        if (!library)
            return;
        CublasLtApi& api = state.api;
        state.ok = resolveLt(library, "cublasLtCreate", api.create)
            && resolveLt(library, "cublasLtMatmulDescCreate", api.descCreate)
            && resolveLt(library, "cublasLtMatmulDescDestroy", api.descDestroy)
            && resolveLt(library, "cublasLtMatmulDescSetAttribute", api.descSetAttribute)
            && resolveLt(library, "cublasLtMatrixLayoutCreate", api.layoutCreate)
            && resolveLt(library, "cublasLtMatrixLayoutDestroy", api.layoutDestroy)
            && resolveLt(library, "cublasLtMatmulPreferenceCreate", api.preferenceCreate)
            && resolveLt(library, "cublasLtMatmulPreferenceDestroy", api.preferenceDestroy)
            && resolveLt(library, "cublasLtMatmulPreferenceSetAttribute", api.preferenceSetAttribute)
            && resolveLt(library, "cublasLtMatmulAlgoGetHeuristic", api.algoGetHeuristic)
            && resolveLt(library, "cublasLtMatmul", api.matmul);
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
        return Status::error(DCN_ERROR_UNSUPPORTED, "cuBLASLt could not be loaded (libcublasLt.so.13 or .12)");
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

#include "cublasLtLoader.h"

#include "cublasLoader.h" // resolveSymbol

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

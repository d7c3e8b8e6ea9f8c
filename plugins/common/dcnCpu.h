// What the fast CPU forwards (deformConvCpu.cpp, roiPoolCpu.cpp) and the layout helpers (dcnCpuLayout.cpp) share:
// per-CPU code selection, OpenMP threads, the argument checks of their C entries, ScratchArray for a large scratch
// table, prefaultForWriting, and the copy of an input to channels-last.
#pragma once

#include "dcnDtype.h"
#include "dcnStatus.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#if defined(_OPENMP)
#include <omp.h>
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(DCN_CPU_NO_CLONES)
// One AVX2+FMA clone and one baseline clone, chosen by the dynamic loader (ifunc) on the CPU at hand.
#define DCN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
// The same choice between two versions of a function whose bodies differ (GCC's function multiversioning): each
// is defined twice, once DCN_CPU_VERSION_AVX2 and once DCN_CPU_VERSION_BASELINE.
#define DCN_CPU_VERSIONS 1
#define DCN_CPU_VERSION_AVX2 __attribute__((target("arch=x86-64-v3")))
#define DCN_CPU_VERSION_BASELINE __attribute__((target("default")))
#else
#define DCN_CPU_CLONES
#define DCN_CPU_VERSIONS 0
#endif
// Inlined into each clone, so compiled for that clone's instruction set.
#define DCN_CPU_INLINE inline __attribute__((always_inline))

namespace dcn
{

// OpenMP's default thread count, or 1 without OpenMP.
inline int32_t defaultCpuThreads()
{
#if defined(_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// The thread count a CPU entry runs on: num_threads, or OpenMP's default for 0; a negative count is refused.
inline Status cpuThreads(char const* entry, int32_t numThreads, int32_t& threads)
{
    if (numThreads < 0)
        return Status::invalid(std::string(entry) + ": num_threads must be >= 0 (0: OpenMP's default), got "
            + std::to_string(numThreads));
    threads = numThreads > 0 ? numThreads : defaultCpuThreads();
    return Status::success();
}

// The CPU entries compute in float32 or float64 only; callers upcast half types.
inline Status cpuDtype(char const* entry, int32_t dtype)
{
    if (dtype == DCN_FLOAT32 || dtype == DCN_FLOAT64)
        return Status::success();
    return Status::error(DCN_ERROR_UNSUPPORTED, std::string(entry) + ": dtype " + dtypeName(dtype) + " ("
        + std::to_string(dtype) + ") is not supported; use float32 (0) or float64 (3) (upcast half types to float32)");
}

// Runs f(float{}) for DCN_FLOAT32, else f(double{}), and returns what f returns. For a dtype that cpuDtype
// (cpuEntryChecks) has already accepted: each entry then writes its kernel call once, in a generic lambda
// (`using T = decltype(tag);`, as the host entries' hostEntry), instead of once per type.
template <typename F>
auto withCpuElementType(int32_t dtype, F&& f)
{
    if (dtype == DCN_FLOAT32)
        return f(float{});
    return f(double{});
}

// A C entry's untyped buffer as the kernel's element pointer: typed<T>(input) is a T const*, typed<T>(output) a T*.
template <typename T>
T const* typed(void const* p)
{
    return static_cast<T const*>(p);
}

template <typename T>
T* typed(void* p)
{
    return static_cast<T*>(p);
}

#if defined(__linux__)
// Advice for [p, p + bytes), p on a page: transparent huge pages where the kernel allows them on request, then every
// page faulted in by one call (ScratchArray, prefaultForWriting). Where the kernel refuses either, nothing changes.
inline void populateWithHugePages(void* p, size_t bytes)
{
#if defined(MADV_HUGEPAGE)
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
#if defined(MADV_POPULATE_WRITE)
    madvise(p, bytes, MADV_POPULATE_WRITE);
#endif
}
#endif

// An uninitialised array of n T for a large scratch copy (a channels-last table). Why not std::vector: glibc maps
// an allocation of this size afresh on every call, and faulting its 4 KiB pages in one by one, from every thread
// that first writes them, cost more than the work (26 of 37 ms for a 35 MB table, benchmarks/cpu_roi_pool.py's
// rfcn_offsets case). Here an array of 2 MiB or more is mapped directly, marked for transparent huge pages where
// the kernel allows them on request, and populated by one call before any thread writes it (Linux; elsewhere, and
// where the kernel refuses either piece of advice, the mapping works as it is).
template <typename T>
class ScratchArray
{
public:
    explicit ScratchArray(size_t n)
        : mBytes(std::max<size_t>(n * sizeof(T), 1))
    {
#if defined(__linux__)
        constexpr size_t kHugePage = size_t(2) << 20;
        if (mBytes >= kHugePage)
        {
            void* p = mmap(nullptr, mBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                throw std::bad_alloc();
            populateWithHugePages(p, mBytes);
            mData = static_cast<T*>(p);
            mMapped = true;
            return;
        }
#endif
        mData = static_cast<T*>(std::malloc(mBytes));
        if (!mData)
            throw std::bad_alloc();
    }

    ~ScratchArray()
    {
#if defined(__linux__)
        if (mMapped)
        {
            munmap(mData, mBytes);
            return;
        }
#endif
        std::free(mData);
    }

    ScratchArray(ScratchArray const&) = delete;
    ScratchArray& operator=(ScratchArray const&) = delete;

    T* data() { return mData; }

private:
    size_t mBytes;
    T* mData = nullptr;
    bool mMapped = false;
};

// Faults in [data, data + bytes) at once, with huge pages where the kernel allows them on request: for a buffer
// from malloc (a torch tensor, say) that is about to be written whole. Only from 32 MiB: glibc maps an allocation
// that large afresh every time, to be faulted in anew; a smaller one mostly comes back from its heap already
// faulted in, with nothing to gain. Advice only: without it (another system, an older kernel) the buffer faults in
// as it is written.
inline void prefaultForWriting(void* data, size_t bytes)
{
#if defined(__linux__)
    constexpr uintptr_t kFreshMapping = uintptr_t(32) << 20;
    if (bytes < kFreshMapping)
        return;
    // The kernel's page (16 or 64 KiB on some arm64 and ppc64 kernels): madvise refuses a start that is not on one
    // and rounds the length up to one, past the buffer's end, where another allocation may lie.
    static uintptr_t const kPage = [] {
        long const page = sysconf(_SC_PAGESIZE);
        return page > 0 ? uintptr_t(page) : uintptr_t(4096);
    }();
    uintptr_t const begin = (reinterpret_cast<uintptr_t>(data) + kPage - 1) / kPage * kPage; // whole pages only
    uintptr_t const end = (reinterpret_cast<uintptr_t>(data) + bytes) / kPage * kPage;
    if (end <= begin)
        return;
    populateWithHugePages(reinterpret_cast<void*>(begin), end - begin);
#else
    (void) data;
    (void) bytes;
#endif
}

// The checks every float-computing CPU entry makes after its descriptor's own (descStatus): the thread count and
// the dtype; the first failure, else success with threads set.
inline Status cpuEntryChecks(char const* entry, Status descStatus, int32_t numThreads, int32_t dtype, int32_t& threads)
{
    if (!descStatus.ok())
        return descStatus;
    Status status = cpuThreads(entry, numThreads, threads);
    return status.ok() ? cpuDtype(entry, dtype) : status;
}

// (N, C, P) -> (N, P, C): afterwards the channels of one pixel are contiguous. Blocks of 64 pixels x 64 channels,
// and in them tiles of a cache line of channels (16 float, 32 half, 8 double) x 8 pixels, read into a local tile
// row by row (8 consecutive pixels of a channel) and written out a pixel's whole cache line at a time, which the
// compiler turns into vector loads, shuffles and stores. Element by element instead (blocks of 64 x 16), the reads
// a plane apart (a power-of-two stride) made it about 2x slower: C=256 at 64x64 in float, 1.91 against 0.96 ns an
// element (benchmarks/cpu_channels_last.py, one thread, session 40). Fewer channels than a tile (an RGB image) go
// element by element.
template <typename T>
void toChannelsLast(T const* input, T* table, int32_t batch, int32_t channels, int64_t plane, int32_t threads)
{
    constexpr int64_t kBlock = 64;
    constexpr int32_t kTilePixels = 8;
    constexpr int32_t kTile = int32_t(64 / sizeof(T)) < 8 ? 8 : int32_t(64 / sizeof(T)); // channels: a cache line
    int64_t const pixelBlocks = (plane + kBlock - 1) / kBlock;
    int64_t const jobs = int64_t(batch) * pixelBlocks;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads)
#else
    (void) threads;
#endif
    for (int64_t job = 0; job < jobs; ++job)
    {
        int64_t const n = job / pixelBlocks;
        int64_t const p0 = (job % pixelBlocks) * kBlock;
        int64_t const p1 = std::min(plane, p0 + kBlock);
        T const* src = input + n * channels * plane;
        T* dst = table + n * channels * plane;
        if (channels < kTile)
        {
            for (int64_t q = p0; q < p1; ++q)
                for (int32_t k = 0; k < channels; ++k)
                    dst[q * channels + k] = src[int64_t(k) * plane + q];
            continue;
        }
        for (int32_t c0 = 0; c0 < channels; c0 += kBlock)
        {
            int32_t const c1 = std::min<int32_t>(channels, c0 + int32_t(kBlock));
            for (int32_t c = c0; c < c1; c += kTile)
                for (int64_t p = p0; p < p1; p += kTilePixels)
                {
                    if (c + kTile <= c1 && p + kTilePixels <= p1)
                    {
                        T tile[kTile][kTilePixels];
                        for (int32_t i = 0; i < kTile; ++i)
                            for (int32_t j = 0; j < kTilePixels; ++j)
                                tile[i][j] = src[int64_t(c + i) * plane + p + j];
                        for (int32_t j = 0; j < kTilePixels; ++j)
                            for (int32_t i = 0; i < kTile; ++i)
                                dst[(p + j) * channels + c + i] = tile[i][j];
                        continue;
                    }
                    int64_t const pEnd = std::min(p1, p + kTilePixels);
                    int32_t const cEnd = std::min(c1, c + kTile);
                    for (int64_t q = p; q < pEnd; ++q)
                        for (int32_t k = c; k < cEnd; ++k)
                            dst[q * channels + k] = src[int64_t(k) * plane + q];
                }
        }
    }
}

} // namespace dcn

// Just enough of CUDA to run a kernel's source on the CPU, for tests: one block at a time, its threads as
// std::threads meeting at __syncthreads (a real barrier), __shared__ variables as static storage (shared by the
// threads of the one block that runs), dcn::dynamicShared() as one buffer, and nvcuda::wmma as plain 16x16x16 tile
// products, cp.async as copies that land at the wait (copyAsync, copiesWait, or by groups: commitCopies,
// waitCopies), named barriers (bar.sync / bar.arrive with a thread count: namedBarrier), and a warp's __syncwarp
// (syncWarp) and mma.m16n8k16 with float32 accumulators (mmaM16N8K16: each lane's fragment registers as PTX lays them
// out, exchanged among the warp's 32 threads at a barrier of their own). What it checks of a kernel: its indexing,
// shared-memory layout, buffer protocol and barriers, the WMMA calls' documented preconditions (pointers 256-bit
// aligned, ldm a multiple of 16 bytes) and the mma fragments' layout. What it does not: WMMA's fragment layout
// (every thread holds a whole tile here, where a warp spreads it over its lanes), timing, and memory ordering
// beyond what the barriers give.
#pragma once

#include "dcnDtype.h" // ElementTraits, for the mma's elements

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define DCN_CUDA_EMULATION 1 // kernel sources pick the emulation's stand-ins for warp-level PTX by this

using std::max;
using std::min;

struct dim3
{
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;

namespace emulation
{

// Thrown out of __syncthreads in every thread of a block once one thread failed, so the block ends instead of
// waiting forever.
struct BlockAborted
{
};

class BlockBarrier
{
public:
    explicit BlockBarrier(int threads) : mThreads(threads) {}

    // __syncthreads, or __syncthreads_or(predicate): every thread gets whether any thread's predicate was non-zero
    // (the result of a phase is read before any thread can reach the next one: that needs every thread to arrive).
    int wait(int predicate = 0)
    {
        std::unique_lock<std::mutex> lock(mMutex);
        if (mAborted)
            throw BlockAborted{};
        uint64_t const generation = mGeneration;
        mAnyPredicate = mAnyPredicate || predicate != 0;
        if (++mArrived == mThreads)
        {
            mArrived = 0;
            mPhaseResult = mAnyPredicate ? 1 : 0;
            mAnyPredicate = false;
            ++mGeneration;
            mChanged.notify_all();
            return mPhaseResult;
        }
        mChanged.wait(lock, [&] { return mGeneration != generation || mAborted; });
        if (mAborted)
            throw BlockAborted{};
        return mPhaseResult;
    }

    // PTX bar.sync id, count (wait) or bar.arrive id, count (no wait) on named barrier id (1 to 15; 0 is
    // __syncthreads'): the barrier completes when `count` threads have arrived. Refuses a count that is not a whole
    // number of warps, or that differs from the count of the threads already waiting there; a wait of over 60 s is
    // reported as a deadlock.
    void named(int id, int count, bool wait)
    {
        std::unique_lock<std::mutex> lock(mMutex);
        if (mAborted)
            throw BlockAborted{};
        std::string const which = "named barrier " + std::to_string(id);
        if (id < 1 || id > 15)
            throw std::logic_error(which + ": ids 1 to 15 (0 is __syncthreads')");
        if (count <= 0 || count % 32 != 0 || count > mThreads)
            throw std::logic_error(which + ": a count of " + std::to_string(count)
                + " threads (whole warps, at most the block's)");
        Named& barrier = mNamed[size_t(id)];
        if (barrier.arrived == 0)
            barrier.count = count;
        else if (barrier.count != count)
            throw std::logic_error(which + ": counts " + std::to_string(barrier.count) + " and "
                + std::to_string(count) + " in one phase");
        uint64_t const generation = barrier.generation;
        if (++barrier.arrived == count)
        {
            barrier.arrived = 0;
            ++barrier.generation;
            mChanged.notify_all();
            return;
        }
        if (!wait)
            return;
        if (!mChanged.wait_for(lock, std::chrono::seconds(60),
                [&] { return barrier.generation != generation || mAborted; }))
            throw std::logic_error(which + ": waited 60 s for " + std::to_string(count - barrier.arrived)
                + " more threads (a deadlock)");
        if (mAborted)
            throw BlockAborted{};
    }

    // Whether no named barrier has threads arrived in an unfinished phase (true at the end of a correct block).
    bool namedIdle()
    {
        std::lock_guard<std::mutex> lock(mMutex);
        for (Named const& barrier : mNamed)
            if (barrier.arrived != 0)
                return false;
        return true;
    }

    void abort()
    {
        std::lock_guard<std::mutex> lock(mMutex);
        mAborted = true;
        mChanged.notify_all();
    }

private:
    struct Named
    {
        int arrived = 0;
        int count = 0;
        uint64_t generation = 0;
    };

    int const mThreads;
    std::mutex mMutex;
    std::condition_variable mChanged;
    int mArrived = 0;
    uint64_t mGeneration = 0;
    bool mAnyPredicate = false; // __syncthreads_or's OR over the threads arrived in this phase
    int mPhaseResult = 0;       // and its result for the phase just completed
    bool mAborted = false;
    std::array<Named, 16> mNamed{};
};

inline BlockBarrier*& currentBarrier()
{
    static BlockBarrier* barrier = nullptr;
    return barrier;
}

// A warp's meeting place: a barrier of its 32 threads and the fragment registers its lanes exchange there.
struct WarpRoom
{
    BlockBarrier barrier{32};
    uint32_t a[32][4] = {};
    uint32_t b[32][2] = {};
};

inline std::vector<std::unique_ptr<WarpRoom>>& warpRooms()
{
    static std::vector<std::unique_ptr<WarpRoom>> rooms;
    return rooms;
}

// The calling thread's warp (threadIdx.x / 32: warp-level calls need one-dimensional blocks of whole warps).
inline WarpRoom& currentWarpRoom()
{
    std::vector<std::unique_ptr<WarpRoom>>& rooms = warpRooms();
    size_t const warp = threadIdx.x / 32;
    if (blockDim.y != 1 || blockDim.z != 1 || blockDim.x % 32 != 0 || warp >= rooms.size())
        throw std::logic_error("a warp-level call in a block that is not one-dimensional whole warps");
    return *rooms[warp];
}

// Run body() as the threads of each of `blocks` in turn (blockDim of them, x fastest), on one set of threads that
// meet at a barrier after each block (so a large grid does not start a thread per item, and a block's shared
// storage is free when the next one starts); the first failure (naming its block and thread) or "".
inline std::string runBlocks(std::vector<dim3> const& blocks, std::function<void()> const& body)
{
    dim3 const shape = blockDim;
    int const threads = int(shape.x * shape.y * shape.z);
    BlockBarrier barrier(threads);
    currentBarrier() = &barrier;
    warpRooms().clear();
    for (int w = 0; w < (threads + 31) / 32; ++w)
        warpRooms().push_back(std::make_unique<WarpRoom>());
    std::mutex failureMutex;
    std::string failure;
    std::vector<std::thread> pool;
    pool.reserve(size_t(threads));
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            threadIdx = dim3{unsigned(t) % shape.x, unsigned(t) / shape.x % shape.y, unsigned(t) / (shape.x * shape.y)};
            try
            {
                for (dim3 const& block : blocks)
                {
                    blockIdx = block;
                    body();
                    barrier.wait();
                    if (t == 0 && !barrier.namedIdle())
                        throw std::logic_error("the block ended with threads arrived at a named barrier whose phase "
                                               "never completed");
                }
            }
            catch (BlockAborted const&)
            {
            }
            catch (std::exception const& error)
            {
                {
                    std::lock_guard<std::mutex> lock(failureMutex);
                    if (failure.empty())
                        failure = "block (" + std::to_string(blockIdx.x) + ", " + std::to_string(blockIdx.y) + ", "
                            + std::to_string(blockIdx.z) + "), thread " + std::to_string(t) + ": " + error.what();
                }
                barrier.abort();
                for (std::unique_ptr<WarpRoom>& room : warpRooms())
                    room->barrier.abort();
            }
        });
    for (std::thread& thread : pool)
        thread.join();
    currentBarrier() = nullptr;
    warpRooms().clear();
    return failure;
}

// One block of the launch whose gridDim and blockDim are set.
inline std::string runBlock(dim3 block, std::function<void()> const& body)
{
    return runBlocks({block}, body);
}

// Every block of a `grid` of `block`-shaped blocks, one after another.
inline std::string runGrid(dim3 grid, dim3 block, std::function<void()> const& body)
{
    gridDim = grid;
    blockDim = block;
    std::vector<dim3> blocks;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x)
                blocks.push_back(dim3{x, y, z});
    return runBlocks(blocks, body);
}

// The block's dynamic shared memory (dcn::dynamicShared() below), as much as an sm_90 block may have.
constexpr size_t kSharedRoom = size_t(232) << 10;
alignas(128) inline unsigned char sharedMemory[kSharedRoom];

// Before a launch that uses `bytes` of dynamic shared memory: those bytes NaN in every float and half type (a
// read before a write shows), the rest a canary that sharedUntouchedPast checks after the launch.
constexpr unsigned char kCanary = 0xA5;

inline void prepareShared(size_t bytes)
{
    std::memset(sharedMemory, 0xFF, bytes);
    std::memset(sharedMemory + bytes, kCanary, kSharedRoom - bytes);
}

inline bool sharedUntouchedPast(size_t bytes)
{
    for (size_t i = bytes; i < kSharedRoom; ++i)
        if (sharedMemory[i] != kCanary)
            return false;
    return true;
}

// Every block of `grid` (gridDim and blockDim set) in turn with `shared` bytes of dynamic shared memory, poisoned
// anew for each block (prepareShared) and checked untouched past those bytes after it; "" or the first failure.
inline std::string runGridPoisoned(dim3 grid, size_t shared, std::function<void()> const& body)
{
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x)
            {
                prepareShared(shared);
                std::string const failure = runBlock(dim3{x, y, z}, body);
                if (!failure.empty())
                    return failure;
                if (!sharedUntouchedPast(shared))
                    return "block (" + std::to_string(x) + ", " + std::to_string(y) + ", " + std::to_string(z)
                        + ") wrote shared memory past the " + std::to_string(shared) + " bytes it is given";
            }
    return "";
}

// A test's checks: one "ok"/"FAIL" line each; the count of failures is the program's exit code.
inline int failures = 0;

inline void check(bool condition, std::string const& what)
{
    std::printf("%s %s\n", condition ? "ok  " : "FAIL", what.c_str());
    std::fflush(stdout);
    if (!condition)
        ++failures;
}

inline void requireAligned(void const* pointer, size_t bytes, char const* what)
{
    if (reinterpret_cast<uintptr_t>(pointer) % bytes != 0)
        throw std::logic_error(std::string(what) + ": pointer not " + std::to_string(bytes) + "-byte aligned");
}

// cp.async as a kernel relies on it: the copy lands some time before the thread's wait. Here it lands exactly at the
// wait, and until then its target holds NaN bytes, so a read of the target before the wait (and the barrier after
// it) shows up as NaN in the result.
// Copies are grouped as by cp.async.commit_group: a copy joins the thread's open group, which commitCopies closes.
struct PendingCopy
{
    void* target;
    void const* source;
    size_t bytes;
    uint64_t group;
    size_t sourceBytes; // the bytes read; the rest of the target is zero-filled
};
inline thread_local std::vector<PendingCopy> pendingCopies;
inline thread_local uint64_t openCopyGroup = 0;

// cp.async of `bytes`, of which only the first sourceBytes are read from `source` (PTX's src-size operand) and the
// rest are zeros.
inline void copyAsync(void* target, void const* source, size_t bytes, size_t sourceBytes)
{
    requireAligned(target, bytes, "cp.async target");
    requireAligned(source, bytes, "cp.async source");
    if (sourceBytes > bytes)
        throw std::logic_error("cp.async: src-size larger than the copy");
    std::memset(target, 0xFF, bytes);
    pendingCopies.push_back(PendingCopy{target, source, bytes, openCopyGroup, sourceBytes});
}

inline void copyAsync(void* target, void const* source, size_t bytes)
{
    copyAsync(target, source, bytes, bytes);
}

// Land the copies that satisfy `done`, keep the others pending.
template <typename Done>
void landCopies(Done done)
{
    std::vector<PendingCopy> kept;
    for (PendingCopy const& copy : pendingCopies)
        if (done(copy))
        {
            std::memcpy(copy.target, copy.source, copy.sourceBytes);
            std::memset(static_cast<unsigned char*>(copy.target) + copy.sourceBytes, 0, copy.bytes - copy.sourceBytes);
        }
        else
            kept.push_back(copy);
    pendingCopies.swap(kept);
}

// cp.async.wait_all: every copy lands (committed or not).
inline void copiesWait()
{
    landCopies([](PendingCopy const&) { return true; });
}

// cp.async.commit_group.
inline void commitCopies()
{
    ++openCopyGroup;
}

// cp.async.wait_group n: the copies of every committed group but the newest n land; the newest n committed groups
// and the open one stay pending.
inline void waitCopies(int n)
{
    uint64_t const committed = openCopyGroup; // groups below this are committed
    landCopies([&](PendingCopy const& copy) { return copy.group + uint64_t(n) < committed; });
}

} // namespace emulation

namespace dcn
{
inline unsigned char* dynamicShared()
{
    return emulation::sharedMemory;
}
} // namespace dcn

inline void __syncthreads()
{
    emulation::currentBarrier()->wait();
}

inline int __syncthreads_or(int predicate)
{
    return emulation::currentBarrier()->wait(predicate);
}

namespace emulation
{
// PTX bar.sync / bar.arrive on a named barrier (BlockBarrier::named).
inline void namedBarrier(int id, int count, bool wait)
{
    currentBarrier()->named(id, count, wait);
}

// __syncwarp() of a full warp: its 32 threads meet.
inline void syncWarp()
{
    currentWarpRoom().barrier.wait();
}

// One 2-byte element of T (dcn::HostHalf or dcn::HostBFloat16) from the low (high = false) or high half of a
// fragment register, as float.
template <typename T>
float fragmentElement(uint32_t reg, bool high)
{
    uint16_t const bits = uint16_t(high ? reg >> 16 : reg & 0xffffu);
    T value;
    std::memcpy(&value, &bits, 2);
    return dcn::ElementTraits<T>::toAcc(value);
}

// PTX mma.sync.aligned.m16n8k16.row.col.f32.<T>.<T>.f32 d, a, b, d of the calling thread's warp: D (16 x 8) += A
// (16 x 16) B (16 x 8), each lane holding the fragments PTX documents (g = lane / 4, t = lane % 4): a[0] = A[g][2t,
// 2t+1], a[1] = A[g+8][2t, 2t+1], a[2] = A[g][2t+8, 2t+9], a[3] = A[g+8][2t+8, 2t+9] (the lower column in the low
// half); b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g]; d[0..1] = D[g][2t, 2t+1], d[2..3] = D[g+8][2t, 2t+1].
// Each lane's registers are exchanged at the warp's barrier; the products (exact in float) are summed in float, k by
// k, onto d (the hardware's order and internal precision are its own: tests allow for that).
template <typename T>
void mmaM16N8K16(float (&d)[4], uint32_t const (&a)[4], uint32_t const (&b)[2])
{
    WarpRoom& room = currentWarpRoom();
    int const lane = int(threadIdx.x % 32);
    std::memcpy(room.a[lane], a, sizeof a);
    std::memcpy(room.b[lane], b, sizeof b);
    room.barrier.wait();
    int const g = lane / 4;
    int const t = lane % 4;
    for (int e = 0; e < 4; ++e)
    {
        int const row = g + (e / 2) * 8;
        int const col = 2 * t + e % 2;
        float sum = d[e];
        for (int k = 0; k < 16; ++k)
        {
            int const aLane = (row % 8) * 4 + (k % 8) / 2;
            uint32_t const aReg = room.a[aLane][(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)];
            int const bLane = col * 4 + (k % 8) / 2;
            uint32_t const bReg = room.b[bLane][k >= 8 ? 1 : 0];
            sum += fragmentElement<T>(aReg, k % 2 == 1) * fragmentElement<T>(bReg, k % 2 == 1);
        }
        d[e] = sum;
    }
    room.barrier.wait(); // every lane has read the registers before any lane's next call overwrites them
}
} // namespace emulation

namespace nvcuda
{
namespace wmma
{

struct matrix_a
{
};
struct matrix_b
{
};
struct accumulator
{
};
struct row_major
{
};
struct col_major
{
};
enum layout_t
{
    mem_row_major,
    mem_col_major
};

// The whole 16x16 tile, element (row, column) at x[row * 16 + column]; for matrix_b, row = k and column = n.
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment
{
    T x[16 * 16];
};

template <typename Use, typename T, typename Layout, typename V>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, V value)
{
    for (T& element : f.x)
        element = T(value);
}

template <typename T>
void checkLoad(T const* pointer, unsigned ldm)
{
    emulation::requireAligned(pointer, 32, "wmma::load_matrix_sync");
    if ((ldm * sizeof(T)) % 16 != 0)
        throw std::logic_error("wmma::load_matrix_sync: ldm * sizeof(T) must be a multiple of 16 bytes");
}

// A (row-major): element (m, k) at pointer[m * ldm + k]. B (column-major): element (k, n) at pointer[n * ldm + k].
template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, T const* pointer, unsigned ldm)
{
    static_assert(std::is_same<Use, matrix_a>::value == std::is_same<Layout, row_major>::value,
        "emulated: matrix_a row-major and matrix_b column-major only");
    checkLoad(pointer, ldm);
    bool const rowMajor = std::is_same<Layout, row_major>::value;
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c)
            f.x[r * 16 + c] = pointer[rowMajor ? size_t(r) * ldm + size_t(c) : size_t(c) * ldm + size_t(r)];
}

// D = A B + C, summed in float from elements widened by ToFloat (the element type's conversion).
template <typename T>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, fragment<matrix_a, 16, 16, 16, T, row_major> const& a,
    fragment<matrix_b, 16, 16, 16, T, col_major> const& b, fragment<accumulator, 16, 16, 16, float> const& c)
{
    float result[16 * 16];
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 16; ++n)
        {
            float sum = c.x[m * 16 + n];
            for (int k = 0; k < 16; ++k)
                sum += dcn::ElementTraits<T>::toAcc(a.x[m * 16 + k]) * dcn::ElementTraits<T>::toAcc(b.x[k * 16 + n]);
            result[m * 16 + n] = sum;
        }
    std::memcpy(d.x, result, sizeof(result));
}

inline void store_matrix_sync(float* pointer, fragment<accumulator, 16, 16, 16, float> const& f, unsigned ldm,
    layout_t layout)
{
    emulation::requireAligned(pointer, 32, "wmma::store_matrix_sync");
    if ((ldm * sizeof(float)) % 16 != 0 || layout != mem_row_major)
        throw std::logic_error("wmma::store_matrix_sync: ldm * 4 must be a multiple of 16 bytes (row-major here)");
    if (threadIdx.x % 32 != 0) // one store per warp, as the warp's collective store (all lanes hold the same tile)
        return;
    for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 16; ++n)
            pointer[size_t(m) * ldm + size_t(n)] = f.x[m * 16 + n];
}

} // namespace wmma
} // namespace nvcuda

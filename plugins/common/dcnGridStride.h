// The launch shape of the grid-stride kernels (CUDA sources only): 256 threads per block and enough blocks for the
// work items, up to a cap past which each thread's loop takes several items.
#pragma once

#include <algorithm>
#include <cstdint>

namespace dcn
{

constexpr int kGridStrideThreads = 256;

inline unsigned gridStrideBlocks(int64_t items, int64_t maxBlocks = int64_t(1) << 30)
{
    int64_t const blocks = (items + kGridStrideThreads - 1) / kGridStrideThreads;
    return unsigned(std::min(std::max<int64_t>(blocks, 1), maxBlocks));
}

} // namespace dcn

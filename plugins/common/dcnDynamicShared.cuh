// The block's dynamic shared memory (CUDA sources only): one declaration for every kernel that carves it up, so that
// kernel sources written against dynamicShared() also run under the CPU emulation of plugins/tests, which provides
// its own.
#pragma once

namespace dcn
{

// The launch's dynamic shared memory, 128-byte aligned.
__device__ __forceinline__ unsigned char* dynamicShared()
{
    extern __shared__ __align__(128) unsigned char dcnDynamicShared[];
    return dcnDynamicShared;
}

} // namespace dcn

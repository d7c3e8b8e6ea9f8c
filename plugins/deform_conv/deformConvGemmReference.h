// cuBLAS's strided-batched product (GemmCall: stagedProduct, directProduct) as a plain column-major loop, with C in
// the output type (direct) or the staging type (staged), as the CUDA GEMM path asks cuBLAS for: the host build's
// product (deformConvHost.cpp) and the GPU kernels' emulation's reference for the calls' arguments (split-K slices
// included: a wrong stride or k shows against it).
#pragma once

#include "deformConvColumns.h"
#include "deformConvGemmPlan.h"

#include <cstdint>
#include <type_traits>

namespace dcn
{

template <typename In, typename Out>
inline void gemmHost(GemmCall const& call, In const* a, In const* b, Out* c, bool accumulate)
{
    using Acc = typename ElementTraits<In>::Acc;
    for (int32_t batch = 0; batch < call.batch; ++batch)
        for (int32_t j = 0; j < call.n; ++j)
            for (int32_t i = 0; i < call.m; ++i)
            {
                // C(i, j) (+)= sum_l op(A)(i, l) * B(l, j); TN: A is k x m column-major, op(A)(i, l) = A[l + i*lda];
                // NN: A is m x k, op(A)(i, l) = A[i + l*lda].
                Acc acc = Acc(0);
                In const* aBatch = a + call.a.offset + batch * call.a.stride;
                In const* bColumn = b + call.b.offset + batch * call.b.stride + int64_t(j) * call.b.ld;
                int64_t const aRow = call.transposeA ? int64_t(i) * call.a.ld : i;
                int64_t const aStep = call.transposeA ? 1 : call.a.ld;
                for (int32_t l = 0; l < call.k; ++l)
                    acc += ElementTraits<In>::toAcc(aBatch[aRow + l * aStep]) * ElementTraits<In>::toAcc(bColumn[l]);
                Out& target = c[call.c.offset + batch * call.c.stride + i + int64_t(j) * call.c.ld];
                if constexpr (std::is_same<Out, Acc>::value)
                    target = accumulate ? target + acc : acc;
                else
                    target = ElementTraits<Out>::fromAcc(accumulate ? ElementTraits<Out>::toAcc(target) + acc : acc);
            }
}

} // namespace dcn

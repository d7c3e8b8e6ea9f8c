// Element types and their conversion to the accumulation type, for host (g++) and device (nvcc) code alike.
//
// ElementTraits<T>::Acc is float for float/half/bfloat16 (half types accumulate in float32) and double for
// double. The host build stores half types as raw bits (HostHalf, HostBFloat16) so it needs no CUDA headers;
// the CUDA build adds traits for __half and __nv_bfloat16 in dcnCudaDtype.cuh.
#pragma once

#include "dcn_kernels.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define DCN_HD __host__ __device__ __forceinline__
#else
#define DCN_HD inline
#endif

#if defined(__CUDA_ARCH__)
#define DCN_UNROLL _Pragma("unroll")
#define DCN_NO_UNROLL _Pragma("unroll 1") // a rare path kept small
#else
#define DCN_UNROLL
#define DCN_NO_UNROLL
#endif

namespace dcn
{

// Whether dtype is one of the dcn_dtype values.
inline bool validDtype(int32_t dtype)
{
    return dtype == DCN_FLOAT32 || dtype == DCN_FLOAT16 || dtype == DCN_BFLOAT16 || dtype == DCN_FLOAT64;
}

// Bytes per element of a dcn_dtype.
inline size_t dtypeBytes(int32_t dtype)
{
    return dtype == DCN_FLOAT64 ? 8 : dtype == DCN_FLOAT32 ? 4 : 2;
}

template <typename T>
struct ElementTraits;

template <>
struct ElementTraits<float>
{
    using Acc = float;
    static DCN_HD float toAcc(float v) { return v; }
    static DCN_HD float fromAcc(float v) { return v; }
};

template <>
struct ElementTraits<double>
{
    using Acc = double;
    static DCN_HD double toAcc(double v) { return v; }
    static DCN_HD double fromAcc(double v) { return v; }
};

// IEEE binary16 and bfloat16 as raw bits, with round-to-nearest-even conversions (host only).
struct HostHalf
{
    uint16_t bits;
};
struct HostBFloat16
{
    uint16_t bits;
};

inline float floatFromBits(uint32_t bits)
{
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

inline uint32_t bitsFromFloat(float f)
{
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    return bits;
}

inline float halfToFloat(uint16_t h)
{
    uint32_t const sign = uint32_t(h & 0x8000u) << 16;
    uint32_t const exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1f) // inf / nan
        return floatFromBits(sign | 0x7f800000u | (mantissa << 13));
    if (exponent == 0)
    {
        if (mantissa == 0)
            return floatFromBits(sign);
        // subnormal: value = mantissa * 2^-24
        float const value = float(mantissa) * 5.9604644775390625e-8f;
        return sign ? -value : value;
    }
    return floatFromBits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline uint16_t floatToHalf(float f)
{
    uint32_t const bits = bitsFromFloat(f);
    uint16_t const sign = uint16_t((bits >> 16) & 0x8000u);
    uint32_t const absBits = bits & 0x7fffffffu;
    if (absBits >= 0x7f800000u) // inf / nan
        return uint16_t(sign | 0x7c00u | (absBits > 0x7f800000u ? 0x200u : 0u));
    if (absBits >= 0x477ff000u) // rounds to >= 65520: overflow to inf
        return uint16_t(sign | 0x7c00u);
    if (absBits < 0x38800000u) // below the smallest normal half (2^-14): subnormal or zero
    {
        // Adding 0.5 (2^-1) puts the half-subnormal ULP (2^-24) at the float's last mantissa bits, rounded RNE by
        // the FPU; the low bits then hold the half mantissa.
        float const shifted = floatFromBits(absBits) + 0.5f;
        return uint16_t(sign | uint16_t(bitsFromFloat(shifted) - 0x3f000000u));
    }
    uint32_t const mantissaOdd = (absBits >> 13) & 1u;
    uint32_t rounded = absBits + 0xc8000fffu + mantissaOdd; // rebias exponent (-112 << 23) and round to nearest even
    return uint16_t(sign | uint16_t(rounded >> 13));
}

inline float bfloat16ToFloat(uint16_t b)
{
    return floatFromBits(uint32_t(b) << 16);
}

inline uint16_t floatToBFloat16(float f)
{
    uint32_t const bits = bitsFromFloat(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) // nan: keep it a (quiet) nan
        return uint16_t((bits >> 16) | 0x40u);
    uint32_t const roundingBias = 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t((bits + roundingBias) >> 16);
}

template <>
struct ElementTraits<HostHalf>
{
    using Acc = float;
    static inline float toAcc(HostHalf v) { return halfToFloat(v.bits); }
    static inline HostHalf fromAcc(float v) { return HostHalf{floatToHalf(v)}; }
};

template <>
struct ElementTraits<HostBFloat16>
{
    using Acc = float;
    static inline float toAcc(HostBFloat16 v) { return bfloat16ToFloat(v.bits); }
    static inline HostBFloat16 fromAcc(float v) { return HostBFloat16{floatToBFloat16(v)}; }
};

inline char const* dtypeName(int32_t dtype)
{
    switch (dtype)
    {
    case DCN_FLOAT32: return "float32";
    case DCN_FLOAT16: return "float16";
    case DCN_BFLOAT16: return "bfloat16";
    case DCN_FLOAT64: return "float64";
    default: return "unknown";
    }
}

} // namespace dcn

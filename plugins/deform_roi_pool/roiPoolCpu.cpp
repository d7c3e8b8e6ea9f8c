// The fast CPU forwards of the deformable RoI pooling ops (dcn_deform_roi_pool_forward_cpu,
// dcn_deform_psroi_pool_forward_cpu), for PyTorch inference on the CPU. Same arithmetic as the CUDA kernels and the
// host reference (roiPoolMath.h), organised so that the work that does not depend on the channel is done once:
//
//   1. the input is copied once to channels-last, so the channels that a bin pools from one pixel are contiguous:
//      (N, H*W, C) for DeformRoIPool; (N, group, H*W, output_dim) for DeformPSRoIPool, whose bin reads channel
//      ctop * group_size^2 + group for each output channel ctop;
//   2. each bin's sample grid, and each sample's four bilinear corners and weights, are computed once per bin (per
//      bin and offset class for DeformPSRoIPool), not once per channel;
//   3. the corners' channel rows are blended into the bin's sums, a loop over contiguous channels that the compiler
//      vectorises, and written once to the output, which is faulted in first when large (prefaultForWriting).
//
// DeformPSRoIPool visits a RoI's bins in the outer loops and the offset classes inside: with class-specific offsets
// (R-FCN's classification head, one channel per class) the classes of one bin then read neighbouring table entries.
// On benchmarks/cpu_roi_pool.py's rfcn_cls case that order over this table took 41 ms, classes outside and the
// input read in place 87 ms (one thread).
// OpenMP (when CMake finds it) splits the RoIs between threads; the sampling loops are compiled for AVX2+FMA and for
// the x86-64 baseline, picked at load time.
#include "dcnCpu.h"
#include "dcnDtype.h"
#include "dcnStatus.h"
#include "roiPoolMath.h"
#include "roiPoolShapes.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace dcn
{
namespace
{

// sums[m] += the tap's blend of channel m, for `channels` contiguous channels at each pixel of a channels-last
// plane (pixel p's channels start at plane[p * pixelStride]): the loop that the compiler vectorises.
template <typename T>
DCN_CPU_INLINE void accumulateTap(
    BilinearTap<T> const& tap, T const* plane, int64_t pixelStride, int32_t channels, T* __restrict sums)
{
    T const w0 = tap.weight[0], w1 = tap.weight[1], w2 = tap.weight[2], w3 = tap.weight[3];
    T const* __restrict r0 = plane + tap.pixel[0] * pixelStride;
    T const* __restrict r1 = plane + tap.pixel[1] * pixelStride;
    T const* __restrict r2 = plane + tap.pixel[2] * pixelStride;
    T const* __restrict r3 = plane + tap.pixel[3] * pixelStride;
    for (int32_t m = 0; m < channels; ++m)
        sums[m] += w0 * r0[m] + w1 * r1[m] + w2 * r2[m] + w3 * r3[m]; // BilinearTap::blend's order
}

// Writes sums[m] / divisor (0 for a zero divisor: no valid sample) to out[m * stride].
template <typename T>
void writeBin(T const* sums, int32_t channels, T divisor, T* out, int64_t stride)
{
    for (int32_t m = 0; m < channels; ++m)
        out[m * stride] = divisor != T(0) ? sums[m] / divisor : T(0);
}

// ---- DeformRoIPool ----

template <typename T>
struct RoiPoolProblem
{
    dcn_deform_roi_pool_desc d;
    T const* table; // (N, H*W, C)
    T const* rois;
    T const* offset; // or nullptr
    T* output;       // (K, C, pooled_height, pooled_width)
};

template <typename T>
DCN_CPU_INLINE void roiPoolRoi(RoiPoolProblem<T> const& pb, int32_t k, T* sums)
{
    dcn_deform_roi_pool_desc const& d = pb.d;
    int64_t const bins = int64_t(d.pooled_height) * d.pooled_width;
    for (int32_t ph = 0; ph < d.pooled_height; ++ph)
        for (int32_t pw = 0; pw < d.pooled_width; ++pw)
        {
            T* out = pb.output + int64_t(k) * d.channels * bins + int64_t(ph) * d.pooled_width + pw;
            RoiAlignBin<T> const bin = deformRoiPoolBin<ElementTraits<T>, T>(d, pb.rois, pb.offset, k, ph, pw);
            std::fill(sums, sums + d.channels, T(0));
            if (bin.image >= 0)
            {
                T const* plane = pb.table + int64_t(bin.image) * d.height * d.width * d.channels;
                for (int32_t v = 0; v < bin.samplesY; ++v)
                {
                    T const y = bin.y(v);
                    for (int32_t u = 0; u < bin.samplesX; ++u)
                    {
                        BilinearTap<T> tap;
                        if (roiAlignTap<T>(d.height, d.width, y, bin.x(u), tap))
                            accumulateTap(tap, plane, d.channels, d.channels, sums);
                    }
                }
            }
            writeBin(sums, d.channels, bin.divisor(), out, bins);
        }
}

DCN_CPU_CLONES void roiPoolRoiFloat(RoiPoolProblem<float> const& pb, int32_t k, float* sums)
{
    roiPoolRoi(pb, k, sums);
}
DCN_CPU_CLONES void roiPoolRoiDouble(RoiPoolProblem<double> const& pb, int32_t k, double* sums)
{
    roiPoolRoi(pb, k, sums);
}
inline void poolRoi(RoiPoolProblem<float> const& pb, int32_t k, float* sums) { roiPoolRoiFloat(pb, k, sums); }
inline void poolRoi(RoiPoolProblem<double> const& pb, int32_t k, double* sums) { roiPoolRoiDouble(pb, k, sums); }

// ---- DeformPSRoIPool ----

template <typename T>
struct PsroiPoolProblem
{
    dcn_deform_psroi_pool_desc d;
    T const* table;   // (N, groups * H*W, output_dim): input channel ctop * groups + group, pixel p at
                      // [group * H*W + p][ctop]
    int32_t perClass; // output channels per offset class
    T const* rois;
    T const* trans; // or nullptr (no_trans)
    T* output;      // (K, output_dim, P, P)
};

template <typename T>
DCN_CPU_INLINE void psroiPoolRoi(PsroiPoolProblem<T> const& pb, int32_t k, T* sums)
{
    dcn_deform_psroi_pool_desc const& d = pb.d;
    int32_t const p = d.pooled_size, s = d.sample_per_part;
    int32_t const classes = psroiClasses(d, pb.trans != nullptr);
    int64_t const bins = int64_t(p) * p, groups = int64_t(d.group_size) * d.group_size;
    for (int32_t ph = 0; ph < p; ++ph)
        for (int32_t pw = 0; pw < p; ++pw)
            for (int32_t cls = 0; cls < classes; ++cls)
            {
                T* out = pb.output + (int64_t(k) * d.output_dim + int64_t(cls) * pb.perClass) * bins
                    + int64_t(ph) * p + pw;
                PsroiBin<T> const bin = deformPsroiPoolBin<ElementTraits<T>, T>(d, pb.rois, pb.trans, k, cls, ph, pw);
                std::fill(sums, sums + pb.perClass, T(0));
                int32_t count = 0;
                if (bin.image >= 0)
                {
                    T const* plane = pb.table + ((int64_t(bin.image) * groups + bin.group) * d.height * d.width)
                        * d.output_dim + int64_t(cls) * pb.perClass;
                    for (int32_t v = 0; v < s; ++v)
                    {
                        T y = bin.y(v);
                        if (!psroiSampleCoordinate<T>(y, d.height))
                            continue;
                        for (int32_t u = 0; u < s; ++u)
                        {
                            T x = bin.x(u);
                            if (!psroiSampleCoordinate<T>(x, d.width))
                                continue;
                            accumulateTap(bilinearTapInside<T>(d.height, d.width, y, x), plane, d.output_dim,
                                pb.perClass, sums);
                            ++count;
                        }
                    }
                }
                writeBin(sums, pb.perClass, T(count), out, bins);
            }
}

DCN_CPU_CLONES void psroiPoolRoiFloat(PsroiPoolProblem<float> const& pb, int32_t k, float* sums)
{
    psroiPoolRoi(pb, k, sums);
}
DCN_CPU_CLONES void psroiPoolRoiDouble(PsroiPoolProblem<double> const& pb, int32_t k, double* sums)
{
    psroiPoolRoi(pb, k, sums);
}
inline void poolRoi(PsroiPoolProblem<float> const& pb, int32_t k, float* sums) { psroiPoolRoiFloat(pb, k, sums); }
inline void poolRoi(PsroiPoolProblem<double> const& pb, int32_t k, double* sums) { psroiPoolRoiDouble(pb, k, sums); }

// Every RoI of pb, split between threads; channels: the length of one bin's sums.
template <typename Problem, typename T>
void poolRois(Problem const& pb, int32_t numRois, int32_t channels, int32_t threads)
{
    threads = std::max(1, std::min(threads, numRois));
    // Each thread's sums on cache lines of their own (with one channel per bin, shared lines made two threads
    // slower than one). Allocated here, outside the parallel region, where an allocation failure is still an
    // exception the C ABI reports.
    constexpr size_t kLine = 64 / sizeof(T);
    size_t const sumsPerThread = (size_t(channels) + kLine - 1) / kLine * kLine;
    std::vector<T> sums(sumsPerThread * threads + kLine);
    size_t const misaligned = reinterpret_cast<uintptr_t>(sums.data()) % 64; // malloc aligns to 16
    T* const first = sums.data() + (misaligned ? (64 - misaligned) / sizeof(T) : 0);
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
    {
#if defined(_OPENMP)
        T* mine = first + sumsPerThread * omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
#else
        T* mine = first;
#endif
        for (int32_t k = 0; k < numRois; ++k)
            poolRoi(pb, k, mine);
    }
}

// The two forwards, one overload per descriptor, so that roiPoolEntry names its kernel call once.
template <typename T>
void poolCpu(dcn_deform_roi_pool_desc const& d, T const* input, T const* rois, T const* offset, T* output,
    int32_t threads)
{
    int64_t const plane = int64_t(d.height) * d.width;
    ScratchArray<T> table(size_t(d.batch) * d.channels * plane);
    toChannelsLast(input, table.data(), d.batch, d.channels, plane, threads);
    RoiPoolProblem<T> const pb{d, table.data(), rois, offset, output};
    prefaultForWriting(output, size_t(d.num_rois) * d.channels * d.pooled_height * d.pooled_width * sizeof(T));
    poolRois<RoiPoolProblem<T>, T>(pb, d.num_rois, d.channels, threads);
}

template <typename T>
void poolCpu(dcn_deform_psroi_pool_desc const& d, T const* input, T const* rois, T const* trans, T* output,
    int32_t threads)
{
    if (d.no_trans)
        trans = nullptr;
    int32_t const classes = psroiClasses(d, trans != nullptr);
    int32_t const perClass = d.output_dim / classes;
    int64_t const plane = int64_t(d.height) * d.width, groups = int64_t(d.group_size) * d.group_size;
    // channel (ctop, group) of (N, output_dim, groups * H*W) -> (N, groups * H*W, output_dim)
    ScratchArray<T> table(size_t(d.batch) * d.channels * plane);
    toChannelsLast(input, table.data(), d.batch, d.output_dim, groups * plane, threads);
    PsroiPoolProblem<T> const pb{d, table.data(), perClass, rois, trans, output};
    prefaultForWriting(output, size_t(d.num_rois) * d.output_dim * d.pooled_size * d.pooled_size * sizeof(T));
    poolRois<PsroiPoolProblem<T>, T>(pb, d.num_rois, perClass, threads);
}

// Whether the entry's fourth tensor must be given: DeformRoIPool's offset never (NULL: no offsets), DeformPSRoIPool's
// trans unless no_trans.
bool extraRequired(dcn_deform_roi_pool_desc const&)
{
    return false;
}

bool extraRequired(dcn_deform_psroi_pool_desc const& d)
{
    return !d.no_trans;
}

// Both RoI entries: a NULL desc, then the descriptor's own checks (checkDesc) and the CPU ones, nothing to do for no
// RoIs, the data pointers (refused in the entry's own words, missingData), and the pool in the dtype's element type.
// The order and the messages are those each entry had on its own, which callers and tests match.
template <typename Desc>
Status roiPoolEntry(char const* name, Status (*checkDesc)(Desc const&), char const* missingData, Desc const* desc,
    int32_t dtype, void const* input, void const* rois, void const* extra, void* output, int32_t numThreads)
{
    if (!desc)
        return Status::invalid(std::string(name) + ": desc must not be NULL");
    int32_t threads = 1;
    Status const status = cpuEntryChecks(name, checkDesc(*desc), numThreads, dtype, threads);
    if (!status.ok())
        return status;
    if (desc->num_rois == 0)
        return Status::success();
    if (!input || !rois || !output || (extraRequired(*desc) && !extra))
        return Status::invalid(std::string(name) + ": " + missingData);
    withCpuElementType(dtype, [&](auto tag) {
        using T = decltype(tag);
        poolCpu<T>(*desc, typed<T>(input), typed<T>(rois), typed<T>(extra), typed<T>(output), threads);
    });
    return Status::success();
}

} // namespace
} // namespace dcn

DCN_API int32_t dcn_deform_roi_pool_forward_cpu(const dcn_deform_roi_pool_desc* desc, int32_t dtype,
    const void* input, const void* rois, const void* offset, void* output, int32_t num_threads)
{
    return dcn::guarded([&] {
        return dcn::roiPoolEntry("dcn_deform_roi_pool_forward_cpu", dcn::checkRoiPool,
            "input, rois and output must not be NULL (offset may be)", desc, dtype, input, rois, offset, output,
            num_threads);
    });
}

DCN_API int32_t dcn_deform_psroi_pool_forward_cpu(const dcn_deform_psroi_pool_desc* desc, int32_t dtype,
    const void* input, const void* rois, const void* trans, void* output, int32_t num_threads)
{
    return dcn::guarded([&] {
        return dcn::roiPoolEntry("dcn_deform_psroi_pool_forward_cpu", dcn::checkPsroiPool,
            "input, rois, output (and trans unless no_trans) must not be NULL", desc, dtype, input, rois, trans,
            output, num_threads);
    });
}

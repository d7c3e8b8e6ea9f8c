// The implicit-GEMM kernels' CUDA source (deformConvImplicitKernel.cuh, the stepwise kernel, and
// deformConvImplicitSpecialised.cuh, the warp-specialised one) run on the CPU, block after block, each block's
// threads as threads meeting at real barriers (cudaBlockEmulation.h), against the host library's
// reference forward in float64. It checks what the host build of that kernel (forwardHostImplicit), which shares
// only the per-thread helpers, cannot: each kernel's own shared-memory carve-up and size, its buffers and barriers
// (the stepwise kernel's two buffers and one barrier a step; the specialised kernel's ring of stages, named
// barriers and grouped copies, with every copy waited for and every barrier phase completed by the block's end),
// the warp layout over the tile, the epilogue's passes, and the WMMA calls' alignment rules. Every
// tile height is run (64, 128, 256 output channels per block) on layers with several pixel tiles, row blocks,
// groups and offset groups. Shared memory starts as NaN, the output as NaN, and past the block's size as a canary.
// Prints one "ok"/"FAIL" line per check and "<n> failure(s)"; the exit code is the failure count.
#include "dcnDtype.h"
#include "dcn_kernels.h"
#include "deformConvImplicit.h"
#include "deformConvShapes.h"

#include "cudaBlockEmulation.h"
#include "emulationLayers.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "deformConvImplicitKernel.cuh" // after the emulation: the kernels use its CUDA stand-ins
#include "deformConvImplicitSpecialised.cuh"

namespace
{

using namespace dcn;

using emulation::check;
using emulation::kSharedRoom;
using emulation::Layer;
using emulation::Tensors;

// A block's launch shape: which kernel (an ImplicitKernel), output channels per block and threads per block (as
// implicitThreads allows; specialisedThreads(tileM) for the specialised kernel).
struct LaunchShape
{
    int32_t kernel, tileM, threads;
};

LaunchShape stepwise(int32_t tileM, int32_t threads)
{
    return {kImplicitStepwise, tileM, threads};
}

LaunchShape specialised(int32_t tileM)
{
    return {kImplicitSpecialised, tileM, specialisedThreads(tileM)};
}

// The forward as deformConvImplicit.cu launches it (same plan, chunks and grid), every block emulated. "" or the
// first failure.
template <typename T>
std::string emulate(DeformConvGeometry const& geo, LaunchShape launch, Tensors<T> const& t, std::vector<T>& output)
{
    int32_t const tileM = launch.tileM;
    dcn_deform_conv_desc const& d = geo.d;
    ImplicitPlan const plan = planImplicit(geo, sizeof(T));
    ImplicitHostWorkspace<T> workspace(geo, plan, t.weight.data());
    T const* nhwc = workspace.nhwc();
    T const* weights = workspace.weights();
    bool const isSpecialised = launch.kernel == kImplicitSpecialised;
    size_t const shared = isSpecialised ? specialisedSharedBytes(geo, tileM, sizeof(T))
                                        : implicitSharedBytes(geo, tileM, sizeof(T));
    if (shared > kSharedRoom)
        return "shared memory " + std::to_string(shared) + " bytes: more than any device gives a block";
    T const* bias = t.bias.empty() ? nullptr : t.bias.data();
    T const* mask = t.mask.empty() ? nullptr : t.mask.data();
    int32_t const plane = geo.outH * geo.outW;
    for (int32_t n0 = 0; n0 < d.batch; n0 += plan.images)
    {
        int32_t const images = std::min(plan.images, d.batch - n0);
        workspace.loadChunk(geo, t.input.data(), n0, images);
        int32_t const chunkPixels = images * plane;
        dim3 const grid{unsigned((chunkPixels + kImplicitTileN - 1) / kImplicitTileN),
            unsigned((geo.outChannelsPerGroup + tileM - 1) / tileM), unsigned(d.group)};
        gridDim = grid;
        blockDim = dim3{unsigned(launch.threads), 1, 1};
        auto body = [&] {
            auto run = [&](auto kernel) {
                kernel(geo, nhwc, t.offset.data(), weights, bias, mask, output.data(), n0, chunkPixels);
            };
            if (!(isSpecialised ? withSpecialisedKernel<T>(tileM, run) : withImplicitKernel<T>(tileM, launch.threads, run)))
                throw std::logic_error("no kernel instance for this launch shape");
            if (!emulation::pendingCopies.empty())
                throw std::logic_error("the block ended with cp.async copies never waited for");
        };
        std::string const failure = emulation::runGridPoisoned(grid, shared, body);
        if (!failure.empty())
            return failure;
    }
    return "";
}

template <typename T>
void runLayer(Layer const& layer, char const* typeName, double tolerance, std::vector<LaunchShape> const& launches)
{
    DeformConvGeometry geo;
    Status const status = makeGeometry(layer.desc, geo);
    if (!status.ok())
    {
        check(false, std::string(layer.name) + ": " + status.message);
        return;
    }
    std::string const refusal = implicitKernelRefusal(geo, DCN_FLOAT16);
    if (!refusal.empty())
    {
        check(false, std::string(layer.name) + " refused: " + refusal);
        return;
    }
    Tensors<T> const t = emulation::makeTensors<T>(layer, geo, 17);
    size_t const count = size_t(layer.desc.batch) * layer.desc.out_channels * geo.outH * geo.outW;
    std::vector<double> expected;
    std::string const failed = emulation::referenceForward(layer, geo, t, expected);
    if (!failed.empty())
    {
        check(false, std::string(layer.name) + ": " + failed);
        return;
    }
    double peak = 0;
    for (double v : expected)
        peak = std::max(peak, std::fabs(v));
    for (LaunchShape const launch : launches)
    {
        std::vector<T> output(count, ElementTraits<T>::fromAcc(typename ElementTraits<T>::Acc(NAN)));
        std::string const what = std::string(layer.name) + ", " + typeName + ", "
            + (launch.kernel == kImplicitSpecialised ? "specialised, " : "stepwise, ") + std::to_string(launch.tileM)
            + "-row tiles, " + std::to_string(launch.threads) + " threads";
        std::string const failure = emulate<T>(geo, launch, t, output);
        if (!failure.empty())
        {
            check(false, what + ": " + failure);
            continue;
        }
        double error = 0;
        size_t unwritten = 0;
        for (size_t i = 0; i < count; ++i)
        {
            double const got = double(ElementTraits<T>::toAcc(output[i]));
            if (std::isnan(got))
                ++unwritten;
            else
                error = std::max(error, std::fabs(got - expected[i]));
        }
        char detail[160];
        std::snprintf(detail, sizeof(detail), ": %zu element(s) never written, peak-relative error %.2e (< %.0e)",
            unwritten, error / peak, tolerance);
        check(unwritten == 0 && peak > 0 && error / peak < tolerance, what + detail);
    }
}

// desc: batch, C, H, W, oC, kH, kW, stride h/w, pad top/left/bottom/right, dilation h/w, group, offset group.
std::vector<Layer> layers()
{
    return {
        // two images in one 128-pixel tile, one 64-row tile
        {"dense 3x3", {2, 32, 5, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, true, true, 2.0},
        // 128-row tiles, three pixel tiles across images, two offset groups, asymmetric everything, far offsets
        {"two offset groups", {3, 64, 9, 11, 70, 2, 3, 1, 2, 0, 1, 1, 0, 2, 1, 1, 2}, true, false, 12.0},
        // groups starting inside an offset group (C/group = 64, C/offset_group = 96): a taps row never read
        {"groups across offset groups", {1, 192, 6, 7, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3, 2}, true, true, 1.5},
        // 260 output channels: two 256-row blocks (the second mostly empty), a 1x3 kernel, v1 (no mask)
        {"two row blocks", {2, 64, 4, 5, 260, 1, 3, 1, 1, 0, 1, 0, 1, 1, 1, 1, 1}, false, true, 1.0},
    };
}

} // namespace

// --specialised: only the warp-specialised kernel, float16, its three tile heights on the two small layers of one
// and of two offset groups: its ring of stages, named barriers and cp.async copies, quickly enough to run under
// ThreadSanitizer in CI (dcn_implicit_kernel_emulation_tsan). The GPU's racecheck reports hazards in the 128- and
// 64-row instances that a barrier both sides reach orders (benchmarks/gpu_notes.md); ThreadSanitizer sees every
// access and every barrier of the emulated block.
int specialisedOnly()
{
    std::vector<Layer> const all = layers();
    for (size_t i = 0; i < 2; ++i)
        runLayer<HostHalf>(all[i], "float16", 5e-3, {specialised(64), specialised(128), specialised(256)});
    std::printf("%d failure(s)\n", emulation::failures);
    return emulation::failures;
}

int main(int argc, char** argv)
{
    if (argc > 1 && std::string(argv[1]) == "--specialised")
        return specialisedOnly();
    std::vector<Layer> const all = layers();
    for (Layer const& layer : all)
    {
        // every launch shape on the small layers (each instantiation of both kernels), the layer's own and 64 rows
        // on the wide one
        std::vector<LaunchShape> launches{stepwise(64, 256)};
        bool const small = layer.desc.out_channels <= 70;
        DeformConvGeometry geo;
        if (makeGeometry(layer.desc, geo).ok())
        {
            int32_t const own = implicitTileM(geo);
            launches = small ? std::vector<LaunchShape>{stepwise(64, 256), stepwise(128, 256), stepwise(128, 512),
                                   stepwise(256, 256), stepwise(256, 512), specialised(64), specialised(128),
                                   specialised(256)}
                             : std::vector<LaunchShape>{stepwise(own, implicitThreads(own, DCN_FLOAT16, 0)),
                                   stepwise(64, 256), specialised(own)};
        }
        runLayer<HostHalf>(layer, "float16", 5e-3, launches);
        runLayer<HostBFloat16>(layer, "bfloat16", 4e-2, {launches.front(), launches.back()});
        // not a GPU type: the stepwise kernel's indexing to float precision (the specialised kernel's ring does not
        // fit a block's shared memory in float32)
        runLayer<float>(layer, "float32", 1e-5, {launches.front()});
    }
    std::printf("%d failure(s)\n", emulation::failures);
    return emulation::failures;
}

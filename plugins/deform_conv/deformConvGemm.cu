// The GEMM path of deformable convolution: sample, then multiply with cuBLAS.
//
// The plan is in deformConvGemmPlan.h, the per-thread work in deformConvColumns.h (both shared with the host build
// that CI checks). The input is transposed to channels-last (64x64 tiles) for as many chunks at once as the room
// holds; per chunk of the batch the tiled sampler writes the columns (each tile's taps computed once into shared
// memory; 16-byte channel vectors, coalesced across a warp), then the cuBLAS product (float32 accumulation for every
// type but float64). Staged: one strided-batched call over the groups into a pixel-major float scratch, then a tiled
// transpose writes NCHW with the bias. Direct (auto's choice for one group where the output rows are whole 16-byte
// vectors, GemmOutput): the bias is written into the output and one call per group adds columns x weights into
// NCHW. Channels-last tensors (GemmOptions::channelsLastTensors): no transposes, the sampler reads the input where
// it is and the staged product's call writes the output, whose rows of output channels are its pixels. The
// weights (and the tiled sampler's row table) are re-laid out once per launch.
//
// Measured on an H200 and an H100 (benchmarks/RESULTS.md, 2026-11-26): 0.70x to 1.36x torchvision's speed in fp16;
// benchmarks/gpu_notes.md says where the time goes and what is next.
#include "cublasLoader.h"
#include "cublasLtLoader.h"
#include "dcnCudaDtype.cuh"
#include "dcnCudaStatus.h"
#include "dcnGridStride.h"
#include "deformConvColumns.h"
#include "deformConvGemmKernels.cuh"
#include "deformConvKernel.h"
#include "deformConvRelayout.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <type_traits>

namespace dcn
{
namespace
{

// cublasOperation_t, cublasComputeType_t and cublasGemmAlgo_t values (cublas_api.h).
constexpr int kCublasOpN = 0;
constexpr int kCublasOpT = 1;
constexpr int kCublasCompute32F = 68;
constexpr int kCublasCompute32FFastTf32 = 77;
constexpr int kCublasCompute64F = 70;
constexpr int kCublasGemmDefault = -1;

// cuBLAS's name for element type T.
template <typename T>
constexpr cudaDataType cudaTypeOf()
{
    if constexpr (std::is_same<T, double>::value)
        return CUDA_R_64F;
    else if constexpr (std::is_same<T, __half>::value)
        return CUDA_R_16F;
    else if constexpr (std::is_same<T, __nv_bfloat16>::value)
        return CUDA_R_16BF;
    else
        return CUDA_R_32F;
}

template <typename T, typename Index>
void launchColumnsIndexed(int32_t vector, DeformConvGeometry const& geo, T const* nhwc, T const* offset,
    T const* mask, T* columns, int32_t n0, int64_t p0, int32_t pixels, Index total, cudaStream_t stream)
{
    unsigned const blocks = gridStrideBlocks(int64_t(total));
    withVectorWidth(vector, [&](auto width) {
        columnsKernel<T, decltype(width)::value, Index><<<blocks, kGridStrideThreads, 0, stream>>>(geo, nhwc, offset,
            mask, columns, n0, p0, pixels, total);
    });
}

// The tiled sampler over the chunk at nhwc; where plan.channelsLast that is the input itself and the zero vector
// is `zero` (ZeroApart), else the room, which the zero vector follows.
template <typename T>
void launchTiledColumns(GemmPlan const& plan, DeformConvGeometry const& geo, T const* nhwc, T const* zero,
    T const* offset, T const* mask, TileRowVector const* rowTable, T* columns, int32_t n0, int64_t p0, int32_t pixels,
    int32_t chunkPixels, cudaStream_t stream)
{
    unsigned const tiles = unsigned((int64_t(chunkPixels) + plan.tilePixels - 1) / plan.tilePixels);
    size_t const shared = plan.tileShared;
    int32_t const zeroOffset = plan.channelsLast ? 0 : tileZeroOffset(plan, geo, n0);
    withVectorWidth(plan.vector, [&](auto width) {
        constexpr int kWidth = decltype(width)::value;
        if (plan.channelsLast)
            tiledColumnsKernel<T, kWidth, true><<<tiles, kGridStrideThreads, shared, stream>>>(geo, nhwc, offset,
                mask, rowTable, columns, n0, p0, pixels, chunkPixels, plan.tilePixels, zeroOffset, zero);
        else
            tiledColumnsKernel<T, kWidth><<<tiles, kGridStrideThreads, shared, stream>>>(geo, nhwc, offset, mask,
                rowTable, columns, n0, p0, pixels, chunkPixels, plan.tilePixels, zeroOffset, zero);
    });
}

template <typename T>
void launchColumns(GemmPlan const& plan, DeformConvGeometry const& geo, T const* nhwc, T const* zero,
    T const* offset, T const* mask, TileRowVector const* rowTable, T* columns, int32_t n0, int32_t images, int64_t p0,
    int32_t pixels, cudaStream_t stream)
{
    if (plan.tilePixels > 0)
        return launchTiledColumns<T>(plan, geo, nhwc, zero, offset, mask, rowTable, columns, n0, p0, pixels,
            images * pixels, stream);
    int32_t const vector = plan.vector;
    int64_t const total = columnThreads(geo, images, pixels, vector);
    if (columnIndexFits32(geo, total))
        launchColumnsIndexed<T, uint32_t>(vector, geo, nhwc, offset, mask, columns, n0, p0, pixels, uint32_t(total), stream);
    else
        launchColumnsIndexed<T, int64_t>(vector, geo, nhwc, offset, mask, columns, n0, p0, pixels, total, stream);
}

// One cuBLAS strided-batched product (stagedProduct, directProduct; "TN", or "NN" for output-major weights): A and
// B of type T, C of type Out (T into NCHW, Acc or T into the scratch); float32 on TF32 tensor cores where tf32.
template <typename T, typename Out>
Status runProduct(GemmCall const& call, T const* a, T const* b, Out* c, bool accumulate, bool tf32,
    CublasHandleT handle)
{
    using Scalar = typename std::conditional<std::is_same<T, double>::value, double, float>::type;
    Scalar const one = 1, zero = 0;
    int const compute = std::is_same<T, double>::value ? kCublasCompute64F
        : (tf32 && std::is_same<T, float>::value ? kCublasCompute32FFastTf32 : kCublasCompute32F);
    int const rc = cublasApi()->gemmStridedBatchedEx(handle, call.transposeA ? kCublasOpT : kCublasOpN, kCublasOpN,
        call.m, call.n, call.k, &one, a + call.a.offset, cudaTypeOf<T>(), int(call.a.ld), call.a.stride,
        b + call.b.offset, cudaTypeOf<T>(), int(call.b.ld), call.b.stride, accumulate ? &one : &zero,
        c + call.c.offset, cudaTypeOf<Out>(), int(call.c.ld), call.c.stride, call.batch, compute, kCublasGemmDefault);
    if (rc != 0)
        return Status::error(DCN_ERROR_CUDA, "cublasGemmStridedBatchedEx failed with cuBLAS status " + std::to_string(rc));
    return Status::success();
}

// The staged product with the bias in cuBLASLt's epilogue (GemmPlan::biasInProduct: a half type, one group,
// unsplit): d = round(weights x columns + bias), the bias along the product's rows (the output channels), partial
// sums never reduced in T (only the compute type's reduction scheme allowed, as kCublasMathFloatReductions asks of
// cuBLAS). Where cuBLASLt does not load or offers no algorithm, DCN_ERROR_UNSUPPORTED saying so: the caller falls
// back to the fill unless the plan requires the epilogue (the host build runs the same sums as a bias-filled
// scratch accumulated into).
template <typename T>
Status runLtBiasProduct(GemmCall const& call, T const* a, T const* b, T const* bias, T* d, void* workspace,
    size_t workspaceBytes, cudaStream_t stream)
{
    CublasLtApi const* lt = cublasLtApi();
    CublasLtHandleT handle = nullptr;
    Status status = threadCublasLtHandle(handle);
    if (!status.ok())
        return status;
    CublasLtMatmulDescT desc = nullptr;
    CublasLtLayoutT aLayout = nullptr, bLayout = nullptr, dLayout = nullptr;
    CublasLtPreferenceT preference = nullptr;
    int32_t const transA = call.transposeA ? kCublasOpT : kCublasOpN, transB = kCublasOpN;
    uint32_t const epilogue = kLtEpilogueBias;
    int32_t const biasType = int32_t(cudaTypeOf<T>());
    void const* biasPointer = bias;
    uint64_t const maxWorkspace = workspaceBytes;
    uint32_t const reductions = 2; // CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE (and none): never in the output type
    CublasLtHeuristicResult chosen{};
    int found = 0;
    // Each step only after the previous one succeeded (operands of | are unsequenced: a create and a set on the
    // object it creates must not share one expression), and the first failing step named.
    char const* failed = nullptr;
    int rc = 0;
    auto step = [&](char const* name, int status) {
        if (rc == 0 && status != 0)
        {
            rc = status;
            failed = name;
        }
        return rc == 0;
    };
    step("cublasLtMatmulDescCreate", lt->descCreate(&desc, kCublasCompute32F, CUDA_R_32F))
        && step("TRANSA", lt->descSetAttribute(desc, kLtDescTransA, &transA, sizeof(transA)))
        && step("TRANSB", lt->descSetAttribute(desc, kLtDescTransB, &transB, sizeof(transB)))
        && step("EPILOGUE", lt->descSetAttribute(desc, kLtDescEpilogue, &epilogue, sizeof(epilogue)))
        && step("BIAS_POINTER", lt->descSetAttribute(desc, kLtDescBiasPointer, &biasPointer, sizeof(biasPointer)))
        && step("BIAS_DATA_TYPE", lt->descSetAttribute(desc, kLtDescBiasDataType, &biasType, sizeof(biasType)))
        // the stored matrices (column-major, before op): A k x m (TN) or m x k (NN), B k x n, D m x n
        && step("A layout", lt->layoutCreate(&aLayout, cudaTypeOf<T>(), call.transposeA ? call.k : call.m,
               call.transposeA ? call.m : call.k, call.a.ld))
        && step("B layout", lt->layoutCreate(&bLayout, cudaTypeOf<T>(), call.k, call.n, call.b.ld))
        && step("D layout", lt->layoutCreate(&dLayout, cudaTypeOf<T>(), call.m, call.n, call.c.ld))
        && step("cublasLtMatmulPreferenceCreate", lt->preferenceCreate(&preference))
        && step("MAX_WORKSPACE_BYTES",
               lt->preferenceSetAttribute(preference, kLtPreferenceMaxWorkspace, &maxWorkspace, sizeof(maxWorkspace)))
        && step("REDUCTION_SCHEME_MASK", lt->preferenceSetAttribute(preference, kLtPreferenceReductionSchemeMask,
               &reductions, sizeof(reductions)))
        && step("cublasLtMatmulAlgoGetHeuristic",
               lt->algoGetHeuristic(handle, desc, aLayout, bLayout, dLayout, dLayout, preference, 1, &chosen, &found));
    constexpr int kCublasStatusNotSupported = 15; // CUBLAS_STATUS_NOT_SUPPORTED (cublas_api.h)
    if (rc == 0 && found > 0 && chosen.state == 0)
    {
        float const one = 1.0f, zero = 0.0f;
        rc = lt->matmul(handle, desc, &one, a + call.a.offset, aLayout, b + call.b.offset, bLayout, &zero,
            d + call.c.offset, dLayout, d + call.c.offset, dLayout, &chosen.algo, workspace, workspaceBytes, stream);
        status = rc == 0 ? Status::success()
                         : Status::error(DCN_ERROR_CUDA, "cublasLtMatmul failed with cuBLAS status " + std::to_string(rc));
    }
    else if (rc == 0 || (failed == std::string("cublasLtMatmulAlgoGetHeuristic") && rc == kCublasStatusNotSupported))
        status = Status::error(DCN_ERROR_UNSUPPORTED, "cuBLASLt offers no algorithm for the bias epilogue");
    else // a descriptor cuBLASLt refused (a wrong attribute size or value here) or could not allocate: not hidden
        status = Status::error(DCN_ERROR_CUDA, std::string("cuBLASLt's bias epilogue: ") + failed
            + " failed with cuBLAS status " + std::to_string(rc));
    for (CublasLtLayoutT layout : {aLayout, bLayout, dLayout})
        if (layout)
            lt->layoutDestroy(layout);
    if (preference)
        lt->preferenceDestroy(preference);
    if (desc)
        lt->descDestroy(desc);
    return status;
}

// The staged output of one chunk: the product into the staging scratch (with split-K, plan.splitK slices of K as
// the call's batch entries, each into its own slice of the scratch; with biasInProduct, the bias added by the
// product), then its transpose into NCHW with the bias where the product did not add it (summing the slices).
template <typename T, typename Staged>
Status runStagedChunk(DeformConvGeometry const& geo, GemmPlan const& plan, T const* weights, T const* columns,
    Staged* staging, T const* bias, T* output, int32_t n0, int32_t images, int64_t p0, int32_t pixels,
    void* cublasWorkspace, cudaStream_t stream, CublasHandleT handle)
{
    int64_t const sliceStride = stagingSliceElements(int64_t(images) * pixels * geo.d.out_channels, sizeof(Staged));
    GemmCall const call = stagedProduct(geo, images, pixels, plan.outputMajorWeights, plan.splitK, sliceStride);
    bool const inProduct = std::is_same<Staged, T>::value && bias && plan.biasInProduct; // stagesNarrow: T
    Status const status = inProduct
        ? runLtBiasProduct<T>(call, weights, columns, bias, reinterpret_cast<T*>(staging), cublasWorkspace,
            plan.cublasBytes, stream)
        : runProduct<T, Staged>(call, weights, columns, staging, false, plan.tf32, handle);
    if (!status.ok())
        return status;
    dim3 const outTiles(unsigned((pixels + kTile - 1) / kTile),
        unsigned(std::min((geo.d.out_channels + kTile - 1) / kTile, 65535)), unsigned(images));
    stagedOutputKernel<T, Staged><<<outTiles, dim3(kTileThreadsX, kTileThreadsY), 0, stream>>>(geo, staging,
        inProduct ? nullptr : bias, output, n0, p0, pixels, plan.splitK, sliceStride);
    return launchStatus("the staged output kernel");
}

// A chunk of a channels-last output (GemmPlan::channelsLast), at `rows` (the chunk's first pixel, images * pixels
// rows of oC): the staged product's call writes it, its rows being the output's pixels. With a bias: added by the
// product (biasInProduct: cuBLASLt's epilogue), or written first and the product added to it (beta = 1: one
// rounding either way, as the direct output).
// Split into slices of K (plan.splitK), the slices go to the staging scratch and one pass sums them, with the bias,
// into the rows (channelsLastSumKernel).
template <typename T>
Status runChannelsLastChunk(DeformConvGeometry const& geo, GemmPlan const& plan, T const* weights, T const* columns,
    T const* bias, T* rows, int32_t images, int32_t pixels, typename ElementTraits<T>::Acc* staging,
    void* cublasWorkspace, cudaStream_t stream, CublasHandleT handle)
{
    using Acc = typename ElementTraits<T>::Acc;
    int32_t const oc = geo.d.out_channels;
    int64_t const rowCount = int64_t(images) * pixels;
    if (plan.splitK > 1)
    {
        int64_t const values = rowCount * oc;
        int64_t const sliceStride = stagingSliceElements(values, sizeof(Acc));
        Status const product = runProduct<T, Acc>(
            stagedProduct(geo, images, pixels, plan.outputMajorWeights, plan.splitK, sliceStride), weights, columns,
            staging, false, plan.tf32, handle);
        if (!product.ok())
            return product;
        channelsLastSumKernel<T><<<gridStrideBlocks(values), kGridStrideThreads, 0, stream>>>(geo, staging, bias,
            rows, values, plan.splitK, sliceStride);
        return launchStatus("the channels-last split-K sum kernel");
    }
    GemmCall const call = stagedProduct(geo, images, pixels, plan.outputMajorWeights);
    if (bias && plan.biasInProduct)
    {
        Status const added
            = runLtBiasProduct<T>(call, weights, columns, bias, rows, cublasWorkspace, plan.cublasBytes, stream);
        // auto's epilogue gives way to the fill where cuBLASLt cannot add the bias; a required one says why
        if (added.ok() || plan.biasInProductRequired || added.code != DCN_ERROR_UNSUPPORTED)
            return added;
    }
    if (bias)
    {
        bool const vectors = oc % kStoreVector<T> == 0 && reinterpret_cast<uintptr_t>(rows) % 16 == 0;
        int64_t const rowsPerBlock = biasRowsShape<T>(oc, vectors, kGridStrideThreads).rowsPerStep;
        unsigned const blocks
            = unsigned(std::min<int64_t>((rowCount + rowsPerBlock - 1) / rowsPerBlock, 65535 * 16));
        fillBiasRowsKernel<T><<<blocks, kGridStrideThreads, 0, stream>>>(rows, bias, oc, rowCount, vectors);
        Status const filled = launchStatus("the channels-last bias kernel");
        if (!filled.ok())
            return filled;
    }
    return runProduct<T, T>(call, weights, columns, rows, bias != nullptr, plan.tf32, handle);
}

template <typename T>
Status runGemmPath(DeformConvGeometry const& geo, GemmPlan const& plan, T const* input, T const* offset,
    T const* weight, T const* bias, T const* mask, T* output, void* workspace, cudaStream_t stream, CublasHandleT handle)
{
    using Acc = typename ElementTraits<T>::Acc;
    dcn_deform_conv_desc const& d = geo.d;
    char* base = static_cast<char*>(workspace);
    T* columns = reinterpret_cast<T*>(base + plan.at.columns);
    T* nhwc = reinterpret_cast<T*>(base + plan.at.nhwc);
    T* weights = reinterpret_cast<T*>(base + plan.at.weights);
    auto* rowTable = reinterpret_cast<TileRowVector*>(base + plan.at.rowTable);
    Acc* staging = reinterpret_cast<Acc*>(base + plan.at.staging);
    int64_t const plane = int64_t(geo.outH) * geo.outW;

    Status status = launchWeightsRelayout<T>(geo, weight, weights, stream, plan.tilePixels > 0 ? rowTable : nullptr,
        plan.vector, plan.outputMajorWeights);
    if (status.ok())
    {
        cudaMemsetAsync(nhwc + plan.zeroVector, 0, size_t(d.in_channels) * sizeof(T), stream);
        status = launchStatus("the zero vector's memset");
    }
    T const* zero = nhwc + plan.zeroVector;
    void* cublasWorkspace = base + plan.at.cublas;
    for (int32_t n0 = 0; status.ok() && n0 < d.batch; n0 += plan.images)
    {
        int32_t const images = std::min(plan.images, d.batch - n0);
        if (!plan.channelsLast && n0 == channelsLastFirst(plan, n0))
            status = launchChannelsLast<T>(geo, input, nhwc, n0, std::min(plan.inputImages, d.batch - n0), stream);
        T const* chunkInput = plan.channelsLast ? input + int64_t(n0) * inputImageElements(geo)
                                                : nhwc + channelsLastChunkStart(plan, geo, n0);
        for (int64_t p0 = 0; status.ok() && p0 < plane; p0 += plan.pixels)
        {
            int32_t const pixels = int32_t(std::min<int64_t>(plan.pixels, plane - p0));
            launchColumns<T>(plan, geo, chunkInput, zero, offset, mask, rowTable, columns, n0, images, p0, pixels,
                stream);
            status = launchStatus("the deformable sampling kernel");
            if (status.ok() && plan.channelsLast)
            {
                status = runChannelsLastChunk<T>(geo, plan, weights, columns, bias,
                    output + (int64_t(n0) * plane + p0) * d.out_channels, images, pixels, staging, cublasWorkspace,
                    stream, handle);
                continue;
            }
            if (status.ok() && plan.staged)
            {
                // A half type without a bias (or whose bias the product adds: biasInProduct) stages the product as
                // T (stagedAcc): rounded once, as the transpose would have (unsplit only: stagesNarrow).
                if (stagesNarrow<T>(bias, plan.splitK, plan.biasInProduct))
                    status = runStagedChunk<T, T>(geo, plan, weights, columns, reinterpret_cast<T*>(staging), bias,
                        output, n0, images, p0, pixels, cublasWorkspace, stream, handle);
                else
                    status = runStagedChunk<T, Acc>(geo, plan, weights, columns, staging, bias, output, n0, images,
                        p0, pixels, cublasWorkspace, stream, handle);
                continue;
            }
            if (status.ok() && bias)
            {
                int64_t const rows = int64_t(images) * d.out_channels;
                fillBiasKernel<T><<<unsigned(std::min<int64_t>(rows, INT32_MAX)), kGridStrideThreads, 0, stream>>>(
                    output, bias, d.out_channels, plane, n0, rows, p0, pixels);
                status = launchStatus("the bias kernel");
            }
            for (int32_t g = 0; status.ok() && g < d.group; ++g)
                status = runProduct<T, T>(directProduct(geo, g, n0, images, p0, pixels), columns, weights,
                    output, bias != nullptr, plan.tf32, handle);
        }
    }
    return status;
}

} // namespace

bool gemmPathAvailable()
{
    return cublasApi() != nullptr;
}

size_t gemmWorkspaceBytes(DeformConvGeometry const& geo, int32_t dtype, GemmOptions const& gemm)
{
    return planGemm(geo, dtypeBytes(dtype), gemm).totalBytes;
}

Status bindGemmHandle(DeformConvGeometry const& geo, int32_t dtype, GemmOptions const& gemm, void* workspace,
    cudaStream_t stream, CublasHandle* cublas, CublasHandleT& handle)
{
    GemmPlan const plan = planGemm(geo, dtypeBytes(dtype), gemm);
    void* cublasWorkspace = static_cast<char*>(workspace) + plan.at.cublas;
    return (cublas ? *cublas : threadCublasHandle()).bind(stream, cublasWorkspace, plan.cublasBytes, handle);
}

Status launchGemmPath(DeformConvGeometry const& geo, int32_t dtype, GemmOptions const& gemm, void const* input,
    void const* offset, void const* weight, void const* bias, void const* mask, void* output, void* workspace,
    cudaStream_t stream, CublasHandleT handle)
{
    GemmPlan const plan = planGemm(geo, dtypeBytes(dtype), gemm);
    auto const refuse = [dtype] {
        return Status::error(DCN_ERROR_UNSUPPORTED, "dtype " + std::to_string(dtype) + " has no GEMM path");
    };
    return withElementType(
        dtype,
        [&](auto tag) {
            using T = decltype(tag);
            return runGemmPath<T>(geo, plan, static_cast<T const*>(input), static_cast<T const*>(offset),
                static_cast<T const*>(weight), static_cast<T const*>(bias), static_cast<T const*>(mask),
                static_cast<T*>(output), workspace, stream, handle);
        },
        refuse);
}

} // namespace dcn

// The GEMM path's plan, shared by the CUDA launcher (deformConvGemm.cu), the host build (deformConvHost.cpp) and the
// workspace sizing of the plugin: its tunables (GemmOptions), how the batch is cut into chunks and where each buffer
// sits in the workspace (planGemm), the layouts of the tiled sampler's shared-memory tables, the order of the
// transposes, and the arguments of the cuBLAS products. What runs per element is in deformConvColumns.h.
//
// For a chunk of the batch (whole images, or a slice of one image's output pixels), with K = C*kH*kW:
//   nhwc[image][y][x][c]                      the chunk's input, channels last, so the channels of one bilinear
//                                             tap are contiguous and load as 16-byte vectors;
//   columns[image][pixel][g][kp][c % (C/g)]   the sampled columns (mask folded in), K contiguous per pixel;
//   weights[o][kp][c % (C/g)]                 the weights with the kernel point outer, matching the columns;
//   out(pixels x oC/g) = columns_g (pixels x K/g) * weights_g^T, one product per group, through a pixel-major
//                                             scratch (staged) or straight into NCHW (direct; GemmOutput says which).
#pragma once

#include "deformConvMath.h"

#include <algorithm>
#include <cstddef>
#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

namespace dcn
{

// The most bytes one chunk's columns take, by default. Larger chunks are fewer, larger products: 256 MiB against 64
// was 3-11% faster at batch 8 on an H100 (bf7556d) and 6-20% on an H200 (fbf73a9; seg res5, whose image is 75 MiB
// of fp16 columns, also 19% at batch 1, one product instead of 7168 + 1024 pixels). The price is the workspace, in
// fp16 at batch 8: 354 MiB instead of 119 at det res3, 389 instead of 155 at seg res5 (benchmarks/RESULTS.md).
constexpr size_t kGemmDefaultColumnBudget = size_t(256) << 20;
// Handed to cuBLAS (it never allocates in enqueue). cuBLAS's documentation recommends 32 MiB on Hopper and 4 MiB
// elsewhere; a product's algorithm may need workspace (its own split-K), so the heuristic's choice can depend on
// it. The C ABI's DCN_DEPLOY_CUBLAS_WORKSPACE_MB sets another size (GemmOptions::cublasWorkspaceBytes) to time that.
constexpr size_t kCublasWorkspaceBytes = size_t(8) << 20;

DCN_HD size_t alignUp256(size_t bytes)
{
    return (bytes + 255) / 256 * 256;
}

inline int64_t ceilDiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

// Where the product writes. Straight into the NCHW output (direct), its rows start every oH*oW elements, so for
// sizes such as 25x42 or 100x167 the rows are not 16-byte aligned and cuBLAS cannot use its aligned kernels, and the
// bias must be written first (a pass over the output) for the product to add to; and it is one product per group.
// Staged, the product goes to a pixel-major scratch in the accumulation type, staging[image][pixel][oC] (rows of
// oC), and one more pass transposes it into NCHW with the bias added (a half type without a bias: a scratch of T,
// rounded once by cuBLAS, half the bytes to write and read; stagesNarrow). With the vector bias fill, direct was
// 4-12% faster than staged in fp16 where the rows are aligned, and up to 2.3x slower where not
// (benchmarks/RESULTS.md, H100, 2026-11-26): auto takes direct where directOutputByDefault says.
enum GemmOutput : int32_t
{
    kGemmOutputAuto = 0,   // directOutputByDefault: direct or staged
    kGemmOutputDirect = 1, // into NCHW: the bias written first, the product added (beta = 1)
    kGemmOutputStaged = 2, // through the scratch, rounded to the output type once, with the bias
};

// Where a half type's product gets a layer's bias, in one group and unsplit (GemmOptions::bias; the C ABI's
// DCN_DEPLOY_GEMM_BIAS). The epilogue is cuBLASLt's bias epilogue: the product adds the bias before its one rounding,
// so nothing writes the bias first (a channels-last output) or adds it in the transpose (a staged one, which then
// stages T: half the scratch bytes). On an H100 (session 34, benchmarks/RESULTS.md) it made the channels-last rows
// 5-10% faster in fp16 at batch 8 (det res3 0.306 -> 0.289 ms) and moved the staged NCHW rows by 2% at most.
enum GemmBias : int32_t
{
    kGemmBiasAuto = 0,     // the epilogue on channels-last tensors, falling back to the fill where cuBLASLt does not
                           // load or offers no algorithm; the fill otherwise
    kGemmBiasEpilogue = 1, // the epilogue wherever the product is staged or channels-last; where cuBLASLt cannot,
                           // DCN_ERROR_UNSUPPORTED saying so (no fallback: a run shows it ran)
    kGemmBiasFill = 2,     // never the epilogue: the bias written first (beta = 1) or added by the transpose
};

// How the columns are sampled.
//   Tiled: a block samples the columns of a tile of consecutive pixels. It first computes the bilinear taps of
//     every (pixel, offset group, kernel point) of the tile once, reading the offsets and the mask coalesced along
//     the pixels, into shared memory; then its threads sample the tile's channel vectors in column order, each
//     reading its taps from shared memory, so the tile's columns (one contiguous block) are written front to back.
//   Per thread: every thread computes its own taps (one channel vector of one pixel and kernel point), so the taps
//     are recomputed C / vector times and each gather waits for the thread's own offset loads. Used where a tile's
//     tables would not fit in shared memory or the channels-last room holds 2^31 elements or more, or when forced.
enum GemmSampler : int32_t
{
    kGemmSamplerAuto = 0,   // tiled where it fits
    kGemmSamplerTiled = 1,  // tiled where it fits (else per thread)
    kGemmSamplerThread = 2, // per thread
};

// How the batch (or one image's pixels) is cut into chunks whose columns fit the budget.
//   Even (the default): as few chunks as fit, of equal size but the last (4 + 4 images), so no product is a small
//     remainder. Measured on an H100 (2026-11-26, session 22, RESULTS.md): float32 det res4 at batch 8 (6 + 2
//     images under full chunks, 4 + 4 even) 1.185 -> 0.995 ms; float16 det res3 at batch 8 (also 6 + 2 against
//     4 + 4) 0-2% slower, within the spread between runs; the other issue layers, cut alike by both rules or into one
//     chunk, within 1-2%. A chunk's product can still be a fraction of a wave of cuBLAS's tiles where the full one
//     was a whole wave.
//   Full: as many images (or pixels) per chunk as fit, and the remainder last. Under the old 64 MiB budget seg
//     res5's 8192 pixels an image went as 7168 + 1024, and cuBLAS's product of the 1024 took 1.8x the time per pixel
//     of the 7168's (H100, 09f36e1).
enum GemmChunks : int32_t
{
    kGemmChunksEven = 0,
    kGemmChunksFull = 1,
};

// The operand layout of the staged product (kGemmOutputStaged), in BLAS's terms.
//   TN: weights[o][kp][c], so that both operands run along K (the columns always do: columns[pixel][K]). cuBLAS's
//     tensor-core kernels for half types are TN ones (nvjet ..._TNT / _TNN on an H100).
//   NN: weights[g][kp][c][o], the output channels contiguous, so that cuBLAS gets an N,N call as torchvision's
//     product does (A along M, B along K). Not torchvision's layout itself: there A is its pixel-contiguous columns
//     and M the pixels, which would need a sampler writing columns[K][pixel]. In float32 our TN products ran
//     cuBLAS's FFMA kernels at 36-38 TFLOP/s on an H100 (09f36e1), while torchvision's whole layer was 1.3x-1.5x
//     faster than ours: benchmarks/gemm_layouts.py times all four calls. Timed in the layer on an H100 (session 22,
//     benchmarks/RESULTS.md): 0-10% slower than TN on every row in both types, so not the default. Staged only: the
//     direct product stays TN.
enum GemmProduct : int32_t
{
    kGemmProductTN = 0,
    kGemmProductNN = 1,
};

// Split-K of the staged product: the product as S slices of K, each its own batch entry of the one strided-batched
// call (weights and columns from s * K/S along K, the result into slice s of the staging scratch), and the staged
// output's transpose sums the S slices in order (in the accumulation type) before adding the bias. For products of
// few output tiles, where cuBLAS leaves most SMs idle: float32 det res5 at batch 1 (512 x 1050 pixels x K = 4608)
// ran a 32x32-tile FFMA kernel at 22 TFLOP/s on an H100. Applies where valid (gemmSplitK): one group, staged
// output, K a multiple of S * 8 (every slice starts 16-byte aligned in any type); elsewhere S is 1.
//
// Auto (GemmOptions::splitK 0, the default) takes kAutoSplitK slices for float32 layers whose whole product has
// few output tiles and a long K (autoSplitK), staging them where the output would otherwise go direct. Measured on
// an H100 (session 25, RESULTS.md; forced slices, batch 1): float32 det res5 (512 x 1050 pixels x K 4608) 0.259 ->
// 0.203 ms with 4 slices (0.195 with 8), det res4 (256 x 4200 x 2304, staged) 0.177 -> 0.157; slower or equal where
// the product has more tiles (det res3 float32 staged 0.183 -> 0.220, seg res5 0.870 -> 0.935) and in float16
// (det res3 0.056 -> 0.080: cuBLAS's half kernels already fill the GPU there).
constexpr int32_t kGemmSplitKMax = 8;
constexpr int32_t kAutoSplitK = 4;
constexpr int64_t kAutoSplitMinK = 2048;       // C * kH*kW: det res4's 2304 and res5's 4608 gained, res3's 1152 not
constexpr int64_t kAutoSplitMaxTiles = 264;    // 64x64 tiles of the output (oC x N*oH*oW): two waves of 132 SMs
constexpr int64_t kAutoSplitMaxValues = kAutoSplitMaxTiles * 64 * 64; // so at most this many outputs

// Which implicit-GEMM kernel runs (DCN_ALGO_IMPLICIT_GEMM; deformConvImplicit.h).
//   Stepwise: every warp gathers, blends and multiplies, one barrier a step (deformConvImplicitKernel.cuh): measured
//     on an H100 (2026-11-26), 1.3x-1.8x slower than the GEMM path at batch 8.
//   Specialised: producer warps gather and blend into a ring of stages while consumer warps multiply, the two meeting
//     at named barriers (deformConvImplicitSpecialised.cuh; sm_80 and newer). Measured on an H100 (sessions 22 and
//     25): correct, 1.1x-1.3x faster than stepwise at batch 8, but slower than the GEMM path on every layer (det res3
//     at batch 8: 0.377 ms against 0.359), its producer warps latency-bound. Opt-in.
enum ImplicitKernel : int32_t
{
    kImplicitStepwise = 0,
    kImplicitSpecialised = 1,
};

// The default tile: this many column elements, so tile pixels = this / (C * kH*kW), whatever the type. On an H200
// (2026-11-26, fp16, 3x3, benchmarks/RESULTS.md) the best tiles measured were 14, 7 and 3 pixels for C = 128, 256
// and 512: about 16K elements, 2048 channel vectors of 8 halves, 8 per thread of a 256-thread block. Smaller tiles
// spend more of the block on its tables, larger ones leave part of the last wave of blocks idle. (Counted in
// elements, not vectors, so that float32's half-width vectors do not shrink its tiles to one pixel at C = 512.)
constexpr int32_t kTileDefaultElements = 16384;
constexpr int32_t kTileMaxPixels = 64;
constexpr int32_t kChunkPixelsMax = INT32_MAX - kTileMaxPixels; // a chunk's pixels, so that first + row fits int32
constexpr size_t kTileSharedBytes = size_t(40) << 10; // at most this much shared memory per tile (48 KiB per block)

// The GEMM path's and the implicit kernels' tunables. The TensorRT plugin uses the defaults but for the column
// budget, which it fits to the builder's workspace limit (configurePlugin, the engine's field); the C ABI reads
// DCN_DEPLOY_GEMM_CHUNK_MB, DCN_DEPLOY_GEMM_CHUNKS, DCN_DEPLOY_GEMM_OUTPUT, DCN_DEPLOY_GEMM_PRODUCT,
// DCN_DEPLOY_GEMM_SPLIT_K, DCN_DEPLOY_GEMM_TF32, DCN_DEPLOY_GEMM_SAMPLER, DCN_DEPLOY_GEMM_TILE_ITEMS,
// DCN_DEPLOY_IMPLICIT_TILE_M, DCN_DEPLOY_IMPLICIT_THREADS and DCN_DEPLOY_IMPLICIT_KERNEL (benchmarks, tests); the
// host build takes them as arguments. (The plugin's split-K is the default, auto, in both its workspace sizing and
// its runs; its TF32 is the engine's field allow_tf32, which changes no size.)
struct GemmOptions
{
    size_t columnBudget = kGemmDefaultColumnBudget; // the most bytes one chunk's columns take
    int32_t output = kGemmOutputAuto;               // a GemmOutput
    int32_t sampler = kGemmSamplerAuto;             // a GemmSampler
    int32_t chunks = kGemmChunksEven;               // a GemmChunks
    int32_t product = kGemmProductTN;               // a GemmProduct
    int32_t splitK = 0; // slices of K in the staged product (1, 2, 4 or 8; kGemmSplitKMax); 0: auto (autoSplitK)
    int32_t tileItems = 0; // the tiled sampler's channel vectors per tile (a target); 0: kTileDefaultElements' worth
    int32_t implicitTileM = 0; // the implicit-GEMM kernel's output channels per block (64, 128, 256); 0: by layer
    int32_t implicitThreads = 0; // its threads per block (256, 512); 0: by tile height (implicitThreads)
    int32_t implicitKernel = kImplicitStepwise; // an ImplicitKernel
    // float32 products on TF32 tensor cores (cuBLAS's CUBLAS_COMPUTE_32F_FAST_TF32: inputs rounded to 10 mantissa
    // bits, float32 accumulation), as torch lets cuDNN's convolutions do by default. Off: IEEE float32. Set by the
    // C ABI's forward flag DCN_FORWARD_ALLOW_TF32 (the PyTorch op passes torch's
    // torch.backends.cuda.matmul.allow_tf32, off by default, as for torchvision's products) or DCN_DEPLOY_GEMM_TF32=1
    // (benchmarks), and by the TensorRT plugin's field allow_tf32 (`dcn-deploy build` sets it unless --no-tf32).
    // On an H100 (session 28, benchmarks/RESULTS.md) it made our float32 layers 1.6x-4.1x faster (errors about
    // 1e-4), 1.2x-2.7x cuDNN's TF32 convolution's time.
    bool tf32 = false;
    size_t cublasWorkspaceBytes = kCublasWorkspaceBytes; // cuBLAS's slice of the workspace (a multiple of 256)
    // The direct kernel (depth-wise layers, and small groups: directChannelsLastRefusal) over a channels-last copy
    // of the input in the workspace
    // (deformConvDirectChannelsLast.h) instead of NCHW. The default since kernels revision 7: on an H200 (session 31,
    // benchmarks/RESULTS.md) 3.3x-3.4x faster than over NCHW in fp16 and 1.9x in float32 on depth-wise res4. Off
    // (NCHW, no workspace) with the C ABI's DCN_DEPLOY_DIRECT_LAYOUT=nchw.
    bool directChannelsLast = true;
    // The channels-last direct kernel's items with their taps computed once per block of 32 pixels x 8 items into
    // shared memory (deformConvDirectSharedTaps.h) instead of once per item, where sharedTapsRefusal passes. Opt-in
    // (the C ABI's DCN_FORWARD_SHARED_TAPS and DCN_DEPLOY_DIRECT_TAPS=shared; the TensorRT plugin never sets it):
    // on an H100 (session 38) no faster than the per-item kernels (depth-wise -8 % to +6 %, groups 2-15 % slower).
    bool directSharedTaps = false;
    // The tensor-core group kernel (deformConvGroupMma.h) on the half types' groups of 1 to 16 channels where the
    // channels-last direct kernel would run them, on sm_80 and newer GPUs: a warp's 32 pixels of 16 channels sampled
    // into shared memory and multiplied on tensor cores. Built without a GPU (session 38): opt-in until timed (the C ABI's
    // DCN_FORWARD_GROUP_MMA and DCN_DEPLOY_DIRECT_MMA=on; the TensorRT plugin never sets it).
    bool directGroupMma = false;
    // Where a half type's product adds a layer's bias (GemmBias; GemmPlan::biasInProduct). The host build runs the
    // epilogue's sums as the scratch or the output filled with the bias and accumulated into.
    int32_t bias = kGemmBiasAuto;
    // The input and the output are channels-last tensors in memory, (N, H, W, C) and (N, oH, oW, oC) (torch's
    // channels_last, TensorRT's HWC formats), the offsets, mask and weights as always (the C ABI's forward flag
    // DCN_FORWARD_CHANNELS_LAST). Then the sampler reads the input where it is (no transpose, no room for it; an
    // outside neighbour reads the zero vector by a pointer of its own: GemmPlan::channelsLast) and the product writes
    // the output itself, since its rows of output channels are the output's pixels (no staging, no transpose): the
    // bias written first and the product added (beta = 1), or added by cuBLASLt's epilogue (GemmBias). Split
    // into slices of K where the staged product would be (splitK): the slices staged, then summed into the output
    // with the bias (channelsLastSumElement), no transpose.
    bool channelsLastTensors = false;
};

// Why channels-last tensors (GemmOptions::channelsLastTensors) at these addresses cannot be read and written where
// they are, or "" where they can: the kernels move 16-byte channel vectors (ChannelPack, aligned as such), so the
// input and the output must start 16-byte aligned. The CUDA launch and the host entries both ask this.
inline std::string channelsLastAlignmentRefusal(void const* input, void const* output)
{
    if (reinterpret_cast<uintptr_t>(input) % 16 == 0 && reinterpret_cast<uintptr_t>(output) % 16 == 0)
        return std::string();
    return "channels-last tensors (DCN_FORWARD_CHANNELS_LAST): the input and the output must start 16-byte aligned "
           "(the kernels read and write 16-byte channel vectors); copy a misaligned view into a fresh tensor";
}

inline bool validGemmOutput(int32_t output)
{
    return output == kGemmOutputAuto || output == kGemmOutputDirect || output == kGemmOutputStaged;
}

inline bool validGemmBias(int32_t bias)
{
    return bias == kGemmBiasAuto || bias == kGemmBiasEpilogue || bias == kGemmBiasFill;
}

inline bool validGemmSampler(int32_t sampler)
{
    return sampler == kGemmSamplerAuto || sampler == kGemmSamplerTiled || sampler == kGemmSamplerThread;
}

inline bool validGemmChunks(int32_t chunks)
{
    return chunks == kGemmChunksEven || chunks == kGemmChunksFull;
}

inline bool validGemmProduct(int32_t product)
{
    return product == kGemmProductTN || product == kGemmProductNN;
}

inline bool validGemmSplitK(int32_t splitK)
{
    return splitK == 0 || splitK == 1 || splitK == 2 || splitK == 4 || splitK == kGemmSplitKMax;
}

// Bytes of one element of the accumulation type (float, or double for float64), which the staging scratch holds
// (or, for a half type without a bias, T: stagesNarrow in deformConvColumns.h; the room is the same).
inline size_t accumulatorBytes(size_t elementBytes)
{
    return elementBytes == 8 ? 8 : 4;
}

// Where each buffer of the GEMM path starts, in bytes from the workspace's start (layOutGemmWorkspace).
struct GemmWorkspaceLayout
{
    size_t columns, nhwc, weights, rowTable, staging, cublas;
};

// How the batch is cut and where each buffer sits in the workspace.
//
// The buffer sizes (the workspace) never shrink when N, H or W grow: a TensorRT plugin sizes its workspace for
// the largest profile shape and then runs smaller ones in it. So each buffer is sized by a cap that only grows
// with the shape, min(whole batch, max(budget, one unit)), and the chunks are chosen to fit the caps.
struct GemmPlan
{
    int32_t images;      // whole images per chunk (1 when slicing pixels)
    int32_t inputImages; // images per channels-last transpose: the batch, or as many chunks' images as the room holds
    int64_t pixels;      // output pixels per chunk of one image (all of them unless slicing)
    int32_t vector;      // channels per sampling thread: 16 bytes' worth where the channel counts allow, else 1
    bool staged;         // the product goes through the staging scratch (GemmOutput)
    bool outputMajorWeights; // staged as NN: the weights re-laid out [g][kp][c][o] (GemmProduct)
    int32_t splitK;      // slices of K of the staged product (1 unless staged or channelsLast and gemmSplitK allows more)
    bool tf32;           // float32 products on TF32 tensor cores (GemmOptions::tf32; float32 layers only)
    bool biasInProduct;  // a bias, where the layer has one, is added by the product (GemmOptions::bias: half
                         // types, one group, unsplit; staged under kGemmBiasEpilogue, channelsLast under it or auto)
    bool biasInProductRequired; // kGemmBiasEpilogue: where cuBLASLt cannot add it, an error rather than the fill
    bool channelsLast;   // channels-last input and output (GemmOptions::channelsLastTensors): the input is sampled
                         // where it is (nhwcBytes holds only the zero vector, at zeroVector 0, reached by a pointer
                         // of its own), and the product (stagedProduct's call) writes the output, not staged (but
                         // for split-K's slices, summed into it)
    int32_t tilePixels;  // pixels per tile of the tiled sampler; 0: the per-thread sampler
    size_t tileShared;   // the tiled sampler's shared memory per block (its taps and tables)
    size_t columnsBytes; // room for one chunk's columns: min(N * image, max(budget, 256 pixels' columns))
    size_t nhwcBytes;    // room for the channels-last input, min(N * image, max(budget, one image)), then the zero
                         // vector (only the zero vector where channelsLast)
    int64_t zeroVector;  // where the zero vector starts, in elements from the room's start: C zeros, which the tiled
                         // sampler reads for a neighbour outside the image
    size_t weightsBytes; // weights, kernel point outer (output channel last where outputMajorWeights)
    size_t rowTableBytes; // the tiled sampler's row vectors (one TileRowVector per vector of a column row)
    size_t stagingBytes; // room for the product of as many pixels as the columns room holds, oC accumulators each,
                         // once per split-K slice (stagingSliceElements apart)
    size_t cublasBytes;  // cuBLAS's workspace (GemmOptions::cublasWorkspaceBytes)
    GemmWorkspaceLayout at; // where each buffer starts (layOutGemmWorkspace)
    size_t totalBytes;   // the buffers + cublasBytes
};

// Elements of one image of the input (C * H * W): the stride between images of the channels-last input.
DCN_HD int64_t inputImageElements(DeformConvGeometry const& geo)
{
    return int64_t(geo.d.in_channels) * geo.d.height * geo.d.width;
}

// Channel vectors of one pixel's column row (C * kH*kW / vector): the items of a tile row, and the entries of the
// tiled sampler's row table.
DCN_HD int32_t columnRowVectors(DeformConvGeometry const& geo, int32_t vector)
{
    return geo.d.in_channels * geo.kernelPoints / vector;
}

// The widest channel vector, from 16 bytes' worth of elements down to 2, whose width divides both counts; 1 where
// none does.
inline int32_t vectorWidthDividing(size_t elementBytes, int32_t channels, int32_t moreChannels)
{
    for (int32_t vector = int32_t(16 / elementBytes); vector > 1; vector /= 2)
        if (channels % vector == 0 && moreChannels % vector == 0)
            return vector;
    return 1;
}

// Channels per sampling thread: a vector must not straddle a group or an offset group.
inline int32_t columnVectorWidth(DeformConvGeometry const& geo, size_t elementBytes)
{
    return vectorWidthDividing(elementBytes, geo.channelsPerGroup, geo.channelsPerOffsetGroup);
}

// f(std::integral_constant<int, V>{}) with V = vector (8, 4 or 2; else 1): the samplers are instantiated per width,
// and a launch picks its instance here.
template <typename F>
void withVectorWidth(int32_t vector, F&& f)
{
    switch (vector)
    {
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    default: f(std::integral_constant<int, 1>{});
    }
}

// The tiled sampler's four neighbours of one (pixel, offset group, kernel point): element offsets from the pixel's
// channels-last image, and weights (mask folded in). A neighbour outside the image points at the zero vector
// (GemmPlan::zeroVector) with weight 0, so every item loads and blends all four unconditionally: no branches, the
// four loads in flight together, and 0 * 0 adds exactly nothing (where reading a real pixel could be 0 * infinity).
template <typename Acc>
struct alignas(16) TileTaps
{
    int32_t index[4];
    Acc weight[4];
};

// Bytes of one tap set in shared memory (float weights, or double for float64).
inline size_t tapsBytes(size_t elementBytes)
{
    return elementBytes == 8 ? sizeof(TileTaps<double>) : sizeof(TileTaps<float>);
}

// One channel vector of a column row, in column order (group, kernel point, channel vector): its first channel,
// and its point (offset group * kernel points + kernel point), which names its taps in a tile.
struct TileRowVector
{
    int32_t channel, point;
};

// Where a tile pixel is: its image within the chunk (-1 past the chunk's end), its output row and column, and where
// its channels-last image starts, in elements from the chunk's first (0 past the chunk's end: no item reads it).
struct TilePixel
{
    int32_t image, y, x, start;
};

// The tiled sampler's shared memory, in this order: the taps of every (point, tile pixel), where each tile pixel
// is (TilePixel), and one TileRowVector per vector of a column row.
inline size_t tileSharedBytes(DeformConvGeometry const& geo, size_t elementBytes, int32_t vector, int32_t tilePixels)
{
    size_t const points = size_t(geo.kernelPoints) * size_t(geo.d.offset_group);
    return points * size_t(tilePixels) * tapsBytes(elementBytes) + size_t(tilePixels) * sizeof(TilePixel)
        + size_t(columnRowVectors(geo, vector)) * sizeof(TileRowVector);
}

// Pixels per tile of the tiled sampler (GemmSampler), or 0 for the per-thread sampler: options.tileItems channel
// vectors per tile (or kTileDefaultElements' worth), at least one pixel and at most kTileMaxPixels, within
// kTileSharedBytes. The tiled sampler keeps every offset within the channels-last room (its images and the zero
// vector after them, or with channelsLast a chunk's images) in 32 bits; plan.nhwcBytes, images and channelsLast must
// be set.
inline void planTile(DeformConvGeometry const& geo, size_t elementBytes, GemmOptions const& options, GemmPlan& plan)
{
    plan.tilePixels = 0;
    plan.tileShared = 0;
    // What the tiles' 32-bit offsets reach: the room and its zero vector, or (channelsLast) a chunk's images of the
    // input, the zero vector being reached by a pointer of its own.
    size_t const reach = plan.channelsLast ? size_t(plan.images) * size_t(inputImageElements(geo))
                                           : plan.nhwcBytes / elementBytes;
    if (options.sampler == kGemmSamplerThread || tileSharedBytes(geo, elementBytes, plan.vector, 1) > kTileSharedBytes
        || reach > size_t(INT32_MAX))
        return;
    int64_t const rowVectors = columnRowVectors(geo, plan.vector);
    int64_t const items = options.tileItems > 0 ? options.tileItems : kTileDefaultElements / plan.vector;
    int32_t pixels = int32_t(std::clamp<int64_t>(items / rowVectors, 1, kTileMaxPixels));
    while (pixels > 1 && tileSharedBytes(geo, elementBytes, plan.vector, pixels) > kTileSharedBytes)
        pixels /= 2;
    plan.tilePixels = pixels;
    plan.tileShared = tileSharedBytes(geo, elementBytes, plan.vector, pixels);
}

// Bytes of one image of the input.
inline size_t inputImageBytes(DeformConvGeometry const& geo, size_t elementBytes)
{
    return size_t(inputImageElements(geo)) * elementBytes;
}

// Room for a chunk's channels-last input, for chunks that hold at most max(budget, one image) of it: never smaller
// for a larger batch or image (a TensorRT plugin sizes its workspace for the largest profile shape).
inline size_t channelsLastRoomBytes(DeformConvGeometry const& geo, size_t elementBytes, size_t budget)
{
    size_t const image = inputImageBytes(geo, elementBytes);
    return alignUp256(std::min(size_t(std::max<int64_t>(geo.d.batch, 1)) * image, std::max(budget, image)));
}

// Bytes of the zero vector after the channels-last room: C elements, rounded up to 256 bytes.
inline size_t zeroVectorBytes(DeformConvGeometry const& geo, size_t elementBytes)
{
    return alignUp256(size_t(geo.d.in_channels) * elementBytes);
}

// Room for the weights re-laid out with the kernel point outer (weights[o][kp][c], weightRow).
inline size_t relaidWeightsBytes(DeformConvGeometry const& geo, size_t elementBytes)
{
    return alignUp256(size_t(geo.d.out_channels) * size_t(geo.channelsPerGroup) * size_t(geo.kernelPoints)
        * elementBytes);
}

// Whether auto writes the product straight into NCHW: one group (direct runs a product per group) and output rows
// of whole 16-byte vectors (so that with a 256-byte aligned output, cuBLAS's aligned kernels write every row; a
// chunk that slices an image starts at a multiple of 256 pixels).
inline bool directOutputByDefault(DeformConvGeometry const& geo, size_t elementBytes)
{
    return geo.d.group == 1 && int64_t(geo.outH) * geo.outW * int64_t(elementBytes) % 16 == 0;
}

// Whether a layer's staged product can be cut into `slices` slices of K: one group (the staged product's batch
// entries are then free for the slices) and K = C * kH*kW a multiple of slices * 8 (every slice of the weights and
// columns starts 16-byte aligned whatever the type, as cuBLAS's vector loads want).
inline bool splitKFits(DeformConvGeometry const& geo, int32_t slices)
{
    int64_t const k = int64_t(geo.d.in_channels) * geo.kernelPoints;
    return geo.d.group == 1 && k % (int64_t(slices) * 8) == 0;
}

// Whether auto may ever split this layer, whatever its N, H and W (the staging room is reserved from this): float32
// (elementBytes 4), a long K that kAutoSplitK slices fit.
inline bool autoSplitKCandidate(DeformConvGeometry const& geo, size_t elementBytes)
{
    return elementBytes == 4 && int64_t(geo.d.in_channels) * geo.kernelPoints >= kAutoSplitMinK
        && splitKFits(geo, kAutoSplitK);
}

// Auto's slices for this shape: kAutoSplitK for a candidate whose whole product (oC x N*oH*oW) has at most
// kAutoSplitMaxTiles output tiles of 64x64, else 1.
inline int32_t autoSplitK(DeformConvGeometry const& geo, size_t elementBytes)
{
    int64_t const pixels = int64_t(std::max(geo.d.batch, 1)) * geo.outH * geo.outW;
    int64_t const tiles = ceilDiv(int64_t(geo.d.out_channels), int64_t(64)) * ceilDiv(pixels, int64_t(64));
    return autoSplitKCandidate(geo, elementBytes) && tiles <= kAutoSplitMaxTiles ? kAutoSplitK : 1;
}

// The split-K slices a layer's staged product takes (GemmOptions::splitK): auto's (0), or the requested S where it
// fits (splitKFits), else 1.
inline int32_t gemmSplitK(DeformConvGeometry const& geo, size_t elementBytes, GemmOptions const& options)
{
    if (options.splitK == 0)
        return autoSplitK(geo, elementBytes);
    return validGemmSplitK(options.splitK) && splitKFits(geo, options.splitK) ? options.splitK : 1;
}

// Staging room, in bytes, for `roomValues` accumulators a chunk (pixels * oC) and the split-K slices any shape of
// this layer may take: a requested S reserves S rooms whether or not this shape is staged; auto reserves
// kAutoSplitK slices of at most kAutoSplitMaxValues each for a candidate (its shapes above that do not split). Both
// only grow with N, H and W, so that a plugin's smaller shapes never need more room than its largest.
inline size_t stagingRoomBytes(DeformConvGeometry const& geo, size_t elementBytes, GemmOptions const& options,
    size_t roomValues)
{
    size_t const accBytes = accumulatorBytes(elementBytes);
    size_t const room = alignUp256(roomValues * accBytes);
    if (options.splitK != 0)
        return size_t(gemmSplitK(geo, elementBytes, options)) * room;
    if (!autoSplitKCandidate(geo, elementBytes))
        return room;
    size_t const slice = alignUp256(std::min(roomValues, size_t(kAutoSplitMaxValues)) * accBytes);
    return std::max(room, size_t(kAutoSplitK) * slice);
}

// Elements from one split-K slice of the staging scratch to the next, for a chunk's `values` (pixels * oC): rounded
// up to 256 bytes of accumulators, so that every slice starts as aligned as the scratch itself.
DCN_HD int64_t stagingSliceElements(int64_t values, size_t accBytes)
{
    return int64_t(alignUp256(size_t(values) * accBytes) / accBytes);
}

// The workspace's buffers one after another, in the one order the launcher and the sizing both follow (every
// size is a multiple of 256 bytes, so every buffer starts 256-byte aligned), and the total.
inline void layOutGemmWorkspace(GemmPlan& plan)
{
    size_t end = 0;
    auto place = [&end](size_t bytes) {
        size_t const start = end;
        end += bytes;
        return start;
    };
    plan.at.columns = place(plan.columnsBytes);
    plan.at.nhwc = place(plan.nhwcBytes);
    plan.at.weights = place(plan.weightsBytes);
    plan.at.rowTable = place(plan.rowTableBytes);
    plan.at.staging = place(plan.stagingBytes);
    plan.at.cublas = place(plan.cublasBytes);
    plan.totalBytes = end;
}

inline GemmPlan planGemm(DeformConvGeometry const& geo, size_t elementBytes, GemmOptions const& options)
{
    size_t const columnBudget = options.columnBudget;
    int64_t const batch = std::max<int64_t>(geo.d.batch, 1);
    size_t const rowBytes = size_t(geo.d.in_channels) * size_t(geo.kernelPoints) * elementBytes; // one pixel's column
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    size_t const imageBytes = rowBytes * size_t(plane);
    size_t const inputImage = inputImageBytes(geo, elementBytes);
    GemmPlan plan{};
    plan.images = 1;
    plan.pixels = plane;
    // Whole images, as many as both budgets allow, at most 65535 (a grid dimension) and with images * pixels within
    // int32 (the staged product's n), with room for the tiled sampler's last tile past the end; then, for even
    // chunks (GemmChunks), as few chunks as that allows, of equal size but the last.
    bool const even = options.chunks == kGemmChunksEven;
    // An image of more than kChunkPixelsMax output pixels is sliced whatever the budget: a whole one would make
    // int32 chunk arithmetic (the staged output's grid, `pixels + kTile - 1`) overflow under budgets of 4 GiB or more.
    if (imageBytes <= columnBudget && plane <= int64_t(kChunkPixelsMax))
    {
        int64_t const most = std::min<int64_t>({batch, int64_t(columnBudget / std::max<size_t>(imageBytes, 1)),
            std::max<int64_t>(1, int64_t(columnBudget / std::max<size_t>(inputImage, 1))), int64_t(65535),
            std::max<int64_t>(1, int64_t(kChunkPixelsMax) / std::max<int64_t>(plane, 1))});
        plan.images = int32_t(even ? ceilDiv(batch, ceilDiv(batch, most)) : most);
    }
    else // a slice of one image: a multiple of 256 pixels, at least 256
    {
        int64_t const fit = std::max<int64_t>(256, int64_t(columnBudget / rowBytes) / 256 * 256);
        int64_t const most = std::min<int64_t>({plane, fit, int64_t(kChunkPixelsMax) / 256 * 256});
        plan.pixels = even ? std::min(plane, ceilDiv(ceilDiv(plane, ceilDiv(plane, most)), 256) * 256) : most;
    }
    plan.vector = columnVectorWidth(geo, elementBytes);
    // Caps (see above). What a chunk uses fits: images * image <= budget and <= N * image; a slice uses at most
    // max(budget, 256 pixels); images * input image <= max(budget, one input image) and <= N * input image.
    size_t const columnsRoom = std::min(size_t(batch) * imageBytes, std::max(columnBudget, 256 * rowBytes));
    plan.columnsBytes = alignUp256(columnsRoom);
    plan.channelsLast = options.channelsLastTensors;
    size_t const nhwcRoom = plan.channelsLast ? 0 : channelsLastRoomBytes(geo, elementBytes, columnBudget);
    plan.nhwcBytes = nhwcRoom + zeroVectorBytes(geo, elementBytes);
    plan.zeroVector = int64_t(nhwcRoom / elementBytes);
    // One transpose covers the whole batch, or as many whole chunks as the room holds (at least one: images * input
    // image <= the room), so that it runs as one launch over several images where a chunk holds few (one image per
    // chunk at det res3 gave it half a wave of blocks).
    // At most 65535 images, the transpose's grid z (plan.images is already within it).
    int64_t const roomImages = std::min<int64_t>(int64_t(nhwcRoom / std::max<size_t>(inputImage, 1)), 65535);
    plan.inputImages = roomImages >= batch ? int32_t(batch)
                                           : int32_t(std::max<int64_t>(1, roomImages / plan.images) * plan.images);
    plan.weightsBytes = relaidWeightsBytes(geo, elementBytes);
    int32_t const slices = gemmSplitK(geo, elementBytes, options);
    bool const autoSplits = options.splitK == 0 && slices > 1; // auto's split: staged, where it goes direct
    plan.staged = !plan.channelsLast
        && (options.output == kGemmOutputStaged
            || (options.output == kGemmOutputAuto && (autoSplits || !directOutputByDefault(geo, elementBytes))));
    // The staged product's operands serve the channels-last output too (stagedProduct's call, into the output).
    bool const stagedCall = plan.staged || plan.channelsLast;
    plan.outputMajorWeights = stagedCall && options.product == kGemmProductNN;
    planTile(geo, elementBytes, options, plan);
    // Reserved whether or not this shape is staged: a plugin sizes the workspace for its largest shape, which may
    // go direct where a smaller shape of the same profile is staged (and the C ABI can force either way). A chunk
    // has at most columnsRoom / rowBytes pixels, and that grows with the shape like the columns room. Likewise the
    // split-K slices (stagingRoomBytes; a slice of a smaller chunk, stagingSliceElements, is never larger).
    // Channels-last tensors split as the staged product does (the slices staged, then summed into the output), and
    // reserve the staging only for a layer that may split: none for the others (their product writes the output).
    plan.splitK = stagedCall ? slices : 1;
    plan.tf32 = options.tf32 && elementBytes == 4;
    bool const epilogueHere = options.bias == kGemmBiasEpilogue ? stagedCall
        : options.bias == kGemmBiasAuto && plan.channelsLast;
    plan.biasInProduct = epilogueHere && elementBytes == 2 && geo.d.group == 1 && plan.splitK == 1;
    plan.biasInProductRequired = options.bias == kGemmBiasEpilogue;
    bool const maySplit = options.splitK != 0 ? slices > 1 : autoSplitKCandidate(geo, elementBytes);
    plan.stagingBytes = plan.channelsLast && !maySplit
        ? 0
        : stagingRoomBytes(geo, elementBytes, options,
            columnsRoom / std::max<size_t>(rowBytes, 1) * size_t(geo.d.out_channels));
    plan.rowTableBytes = alignUp256(size_t(columnRowVectors(geo, plan.vector)) * sizeof(TileRowVector));
    plan.cublasBytes = alignUp256(options.cublasWorkspaceBytes);
    layOutGemmWorkspace(plan);
    return plan;
}

// The transposes and the tiled sampler's zero vector, per chunk. Chunks start at multiples of plan.images, and a
// transpose covers plan.inputImages (a multiple of them) from a multiple of that: chunk n0 transposes its range
// when it is the range's first chunk (n0 == channelsLastFirst), and its images start (n0 - first) images into it.
inline int32_t channelsLastFirst(GemmPlan const& plan, int32_t n0)
{
    return n0 / plan.inputImages * plan.inputImages;
}

// Elements from chunk n0's first channels-last image to its transpose's room start (its nhwc pointer is that far in).
inline int64_t channelsLastChunkStart(GemmPlan const& plan, DeformConvGeometry const& geo, int32_t n0)
{
    return int64_t(n0 - channelsLastFirst(plan, n0)) * inputImageElements(geo);
}

// Elements from chunk n0's first channels-last image to the zero vector (within int32 where planTile tiles).
inline int32_t tileZeroOffset(GemmPlan const& plan, DeformConvGeometry const& geo, int32_t n0)
{
    return int32_t(plan.zeroVector - channelsLastChunkStart(plan, geo, n0));
}

// The strided-batched products of the GEMM path, in BLAS's column-major terms, "TN" but for the staged product with
// output-major weights ("NN", GemmProduct): for each batch entry b, C_b (m x n, ldc) = op(A_b) B_b [+ C_b when beta
// is 1], where B_b is k x n (ldb), running along K, and A_b is k x m (lda) with op = transpose (TN: along K), or
// m x k (lda) as it is (NN: along M).
// Staged (stagedProduct, one call per chunk): A = weights, B = columns, C = the staging scratch (rows of output
// channels), one batch entry per group,
//   staging[pixel][g * oC/g + o] = sum_k weights[g][o][k] * columns[pixel][g][k]   (NN: weights[g][k][o]),
// with the chunk's images side by side (n = images * pixels): the columns and the scratch both hold the chunk's
// pixels image after image. A grouped layer is one call, not one per group. Split into S slices of K (one group,
// plan.splitK), one batch entry per slice instead, each into its own slice of the scratch `sliceStride` apart:
//   staging[s][pixel][o] = sum_{k in slice s} weights[o][k] * columns[pixel][k].
// Direct (directProduct, one call per group): A = columns, B = weights, C = the NCHW output (rows of pixels), one
// batch entry per image,
//   out[o][pixel] = sum_k columns[pixel][k] * weights[o][k].
// Offsets are in elements from each buffer's start; a batch stride of 0 shares the operand across the batch. The
// CUDA path passes these to cublasGemmStridedBatchedEx; the host build runs the same call through a plain loop.
struct GemmOperand
{
    int64_t offset, ld, stride;
};

struct GemmCall
{
    int32_t m, n, k;
    GemmOperand a, b, c;
    int32_t batch;
    bool transposeA; // TN (A along K) or NN (A along M)
};

inline GemmCall stagedProduct(DeformConvGeometry const& geo, int32_t images, int32_t pixels, bool outputMajorWeights,
    int32_t splitK = 1, int64_t sliceStride = 0)
{
    int64_t const rows = int64_t(geo.d.in_channels) * geo.kernelPoints;
    int64_t const rowsPerGroup = int64_t(geo.channelsPerGroup) * geo.kernelPoints;
    int32_t const ocg = geo.outChannelsPerGroup;
    GemmCall call{};
    call.m = ocg;
    call.n = images * pixels;
    call.k = int32_t(rowsPerGroup);
    call.batch = geo.d.group;
    call.transposeA = !outputMajorWeights;
    call.a = GemmOperand{0, outputMajorWeights ? ocg : rowsPerGroup, int64_t(ocg) * rowsPerGroup};
    call.b = GemmOperand{0, rows, rowsPerGroup};
    call.c = GemmOperand{0, geo.d.out_channels, ocg};
    if (splitK > 1) // one group (gemmSplitK): the batch entries are the slices of K instead
    {
        int64_t const slice = rowsPerGroup / splitK;
        call.k = int32_t(slice);
        call.batch = splitK;
        call.a.stride = outputMajorWeights ? slice * ocg : slice; // TN: along a weight row; NN: rows of oC
        call.b.stride = slice;
        call.c.stride = sliceStride;
    }
    return call;
}

inline GemmCall directProduct(DeformConvGeometry const& geo, int32_t g, int32_t n0, int32_t images, int64_t p0,
    int32_t pixels)
{
    int64_t const rows = int64_t(geo.d.in_channels) * geo.kernelPoints;
    int64_t const rowsPerGroup = int64_t(geo.channelsPerGroup) * geo.kernelPoints;
    int64_t const plane = int64_t(geo.outH) * geo.outW;
    int32_t const ocg = geo.outChannelsPerGroup;
    int32_t const oc = geo.d.out_channels;
    GemmCall call{};
    call.m = pixels;
    call.transposeA = true;
    call.n = ocg;
    call.k = int32_t(rowsPerGroup);
    call.batch = images;
    call.a = GemmOperand{int64_t(g) * rowsPerGroup, rows, rows * pixels};
    call.b = GemmOperand{int64_t(g) * ocg * rowsPerGroup, rowsPerGroup, 0};
    call.c = GemmOperand{(int64_t(n0) * oc + int64_t(g) * ocg) * plane + p0, plane, int64_t(oc) * plane};
    return call;
}

} // namespace dcn

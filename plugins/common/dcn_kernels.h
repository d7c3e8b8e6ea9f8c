/*
 * dcn_deploy's plain C ABI over the deformable-convolution kernels.
 *
 * Two shared libraries export it:
 *   libdcn_deploy_kernels.so  the CUDA kernels: device pointers and a cudaStream_t (passed as void*).
 *   libdcn_deploy_host.so     the same arithmetic compiled for the CPU (host pointers, no stream), so the
 *                             indexing and math are checked on machines without a GPU.
 * Both also export the shape/field logic of the TensorRT plugin (dcn_plugin_*), which has no TensorRT types.
 *
 * Every function but the queries (dcn_abi_version, dcn_cuda_available, dcn_gemm_path_available, dcn_last_error)
 * returns a dcn_status; on failure dcn_last_error() returns a message (per thread) that names the argument, the
 * expected and the actual value.
 *
 * Layout: NCHW, contiguous (the CUDA forward and the fast CPU forward also take a channels-last input and output:
 * DCN_FORWARD_CHANNELS_LAST).
 * Offsets (N, 2*offset_group*kH*kW, oH, oW), channel ((g*kH+i)*kW+j)*2 is dy, +1 is dx.
 * Mask (N, offset_group*kH*kW, oH, oW), or NULL for all ones (v1). Bias (out_channels,) or NULL.
 */
#ifndef DCN_KERNELS_H
#define DCN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define DCN_EXTERN_C extern "C"
#else
#define DCN_EXTERN_C
#endif
#define DCN_API DCN_EXTERN_C __attribute__((visibility("default")))

#define DCN_ABI_VERSION 14

typedef enum dcn_status
{
    DCN_OK = 0,
    DCN_ERROR_INVALID_ARGUMENT = 1, /* a shape, attribute or pointer does not fit */
    DCN_ERROR_UNSUPPORTED = 2,      /* a valid request this build cannot serve (dtype, device) */
    DCN_ERROR_CUDA = 3,             /* the CUDA runtime reported an error */
    DCN_ERROR_WORKSPACE = 4,        /* the workspace given is smaller than dcn_deform_conv2d_workspace_size */
    DCN_ERROR_INTERNAL = 5
} dcn_status;

typedef enum dcn_dtype
{
    DCN_FLOAT32 = 0,
    DCN_FLOAT16 = 1,
    DCN_BFLOAT16 = 2,
    DCN_FLOAT64 = 3 /* for tests: the host library, and the direct and GEMM CUDA paths */
} dcn_dtype;

typedef enum dcn_algo
{
    DCN_ALGO_AUTO = 0,       /* depth-wise-like layers, and groups of 2-8 channels in and out of up to 16 bytes:
                              * direct; other dense layers: GEMM where cuBLAS loads, else fused */
    DCN_ALGO_DIRECT = 1,     /* one thread per output element; simple, the correctness baseline */
    DCN_ALGO_FUSED_GEMM = 2, /* sampling straight into shared-memory tiles of an implicit GEMM (tensor cores for half types) */
    DCN_ALGO_GEMM = 3,       /* sampled columns in the workspace (batch in chunks), then cuBLAS (loaded at run time) */
    DCN_ALGO_IMPLICIT_GEMM = 4 /* columns sampled into shared memory, multiplied there on tensor cores (float16,
                                  bfloat16; channels per group and per offset group multiples of 32). Experimental:
                                  neither AUTO nor TensorRT's tactics choose it until it is measured on a GPU */
} dcn_algo;

/* Bits of dcn_deform_conv2d_forward_cuda's flags (and dcn_deform_conv2d_workspace_size's, which sizes for them). */
typedef enum dcn_forward_flag
{
    DCN_FORWARD_ALLOW_TF32 = 1,
    /* The input and the output are channels-last in memory: (N, H, W, C) and (N, oH, oW, oC), as torch's
     * channels_last tensors; offset, mask, weight and bias as always. The input and output 16-byte aligned. Served
     * by the GEMM path (algo 3, or algo 0 on a dense layer), which samples the input where it is and whose product
     * writes the output, with no transposes and no staging, and by the channels-last direct kernel (algo 1 or 0 on
     * the layers it takes: depth-wise, or as many output as input channels per group, 2 to 16 and at most 32 bytes,
     * with channels in items of whole groups within offset groups; algo 0 not on the dense ones of 32 bytes, float32
     * groups of 8 and half groups of 16, which it leaves to the GEMM path), reading and writing them
     * where they are, with no workspace; else DCN_ERROR_UNSUPPORTED. */
    DCN_FORWARD_CHANNELS_LAST = 2,
    /* Experimental: where the channels-last direct kernel runs a layer (depth-wise, or small groups) whose offset
     * groups hold whole blocks of 8 of its items and whose tables fit 48 KiB (3x3 in float16: 15.75 KiB depth-wise,
     * 31.5 KiB for groups of 8), a block of 32 pixels x 8 items computes its taps once into shared memory, with its
     * weights, instead of each item its own; other layers run as without it. The same
     * results. DCN_DEPLOY_DIRECT_TAPS=shared turns it on for every call. The host entry
     * dcn_deform_conv2d_forward_host_direct_channels_last refuses the layers it does not take. On an H100 no
     * faster than without it (benchmarks/RESULTS.md, session 38). */
    DCN_FORWARD_SHARED_TAPS = 4,
    /* Experimental, not yet timed on a GPU: where the channels-last direct kernel runs a float16 or bfloat16 layer of
     * 1 (depth-wise), 2, 4, 8 or 16 channels per group in and out, in blocks of 16 channels within offset groups, with at most 45
     * kernel points, on an sm_80 or newer GPU, the tensor-core group kernel runs it instead (a warp's 32 pixels of 16
     * channels sampled into shared memory, rounded to the element type, and multiplied by their weights on tensor
     * cores, float32 sums: the GEMM path's precision); other layers run as without it. DCN_DEPLOY_DIRECT_MMA=on turns it on for every call. CUDA entries only. */
    DCN_FORWARD_GROUP_MMA = 8
} dcn_forward_flag;

/* Every integer of one deformable convolution. Padding is per side, ONNX order (top, left, bottom, right). */
typedef struct dcn_deform_conv_desc
{
    int32_t batch, in_channels, height, width;
    int32_t out_channels, kernel_h, kernel_w;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left, pad_bottom, pad_right;
    int32_t dilation_h, dilation_w;
    int32_t group, offset_group;
} dcn_deform_conv_desc;

/* The TensorRT plugin's fields (docs/ops.md), already parsed. */
typedef struct dcn_deform_conv_attrs
{
    int32_t strides[2];   /* (h, w) */
    int32_t pads[4];      /* (top, left, bottom, right) */
    int32_t dilations[2]; /* (h, w) */
    int32_t group;
    int32_t offset_group;
} dcn_deform_conv_attrs;

/* ---- both libraries ---- */
DCN_API int32_t dcn_abi_version(void);
DCN_API const char* dcn_last_error(void);
/* Check a descriptor; on success write the output size. */
DCN_API int32_t dcn_deform_conv2d_output_size(const dcn_deform_conv_desc* desc, int32_t* out_height, int32_t* out_width);

/* ---- libdcn_deploy_host.so ---- */
DCN_API int32_t dcn_deform_conv2d_forward_host(const dcn_deform_conv_desc* desc, int32_t dtype, const void* input,
    const void* offset, const void* weight, const void* bias, const void* mask, void* output);
/* The direct kernel over a channels-last copy of the input (the CUDA side's default for the layers it takes) step by
 * step on the host: depth-wise layers, and layers of as many output as input channels per group, 2 to 16 and at most
 * 32 bytes, with channels in items of 2 or more within offset groups, each item whole groups (others are
 * DCN_ERROR_UNSUPPORTED), the input transposed in chunks of the images that
 * column_budget_bytes holds (at least one; 0 = the CUDA default, 256 MiB); flags DCN_FORWARD_CHANNELS_LAST: the
 * input and output channels-last themselves (no transpose); DCN_FORWARD_SHARED_TAPS: the shared-taps kernel's blocks
 * (layers it does not take are DCN_ERROR_UNSUPPORTED). For tests. */
DCN_API int32_t dcn_deform_conv2d_forward_host_direct_channels_last(const dcn_deform_conv_desc* desc, int32_t dtype,
    const void* input, const void* offset, const void* weight, const void* bias, const void* mask, void* output,
    size_t column_budget_bytes, int32_t flags);
/* The CUDA GEMM path (DCN_ALGO_GEMM) step by step on the host: the same chunks (column_budget_bytes per chunk,
 * 0 = the CUDA default), layouts and sampling, with cuBLAS's product as a plain loop. output_mode: where the product
 * writes, 0 as the CUDA path chooses, 1 straight into NCHW, 2 through the staging scratch (GemmOutput in
 * plugins/deform_conv/deformConvGemmPlan.h), 3 through it with a half type's bias added by the product
 * (DCN_DEPLOY_GEMM_BIAS=epilogue on the CUDA side; kGemmBiasEpilogue). sampler: 0 as the CUDA path chooses, 1 tiled,
 * 2 one thread per channel vector (GemmSampler); tile_items: the tiled sampler's channel vectors per tile, 0 = the CUDA default; chunks: 0 as
 * few chunks as fit, of equal size (the CUDA default), 1 as many images or pixels per chunk as fit, then the
 * remainder (GemmChunks);
 * product: the staged product's layout, 0 TN (the CUDA default), 1 NN with output-major weights (GemmProduct);
 * split_k: the staged product in slices of K: 0 as the CUDA path chooses (4 for float32 layers of few output tiles
 * and a long K, else 1; autoSplitK), or 1, 2, 4 or 8 where one group and K a multiple of split_k * 8 (else 1;
 * GemmOptions::splitK); flags: 0, or DCN_FORWARD_CHANNELS_LAST (channels-last input and output; output_mode 0, or
 * 3 for a half type's bias added by the product; split_k as above, the slices summed into the output). For tests. */
DCN_API int32_t dcn_deform_conv2d_forward_host_gemm(const dcn_deform_conv_desc* desc, int32_t dtype,
    const void* input, const void* offset, const void* weight, const void* bias, const void* mask, void* output,
    size_t column_budget_bytes, int32_t output_mode, int32_t sampler, int32_t tile_items, int32_t chunks,
    int32_t product, int32_t split_k, int32_t flags);
/* The CUDA implicit-GEMM kernel (DCN_ALGO_IMPLICIT_GEMM) step by step on the host: the same chunks, tiles, reduction
 * steps, taps tables, gathers and rounding of the column tiles, with the tensor cores' product as a plain loop.
 * Takes float32 and float64 too (the CUDA kernel: half types only), for exact checks of the indexing. For tests. */
DCN_API int32_t dcn_deform_conv2d_forward_host_implicit(const dcn_deform_conv_desc* desc, int32_t dtype,
    const void* input, const void* offset, const void* weight, const void* bias, const void* mask, void* output);
/* The fast CPU forward (float32 or float64; same arithmetic as the reference above, organised for speed: a
 * channels-last copy of the input, vectorised channel loops, OpenMP over images x output rows when built with it).
 * num_threads: 0 = OpenMP's default; ignored in a build without OpenMP. flags: 0, or DCN_FORWARD_CHANNELS_LAST: the
 * input and the output are channels-last in memory, (N, H, W, C) and (N, oH, oW, oC); the input is then read where
 * it is (no copy), with the same sums. */
DCN_API int32_t dcn_deform_conv2d_forward_cpu(const dcn_deform_conv_desc* desc, int32_t dtype, const void* input,
    const void* offset, const void* weight, const void* bias, const void* mask, void* output, int32_t num_threads,
    int32_t flags);
/* The first half of that forward for dense layers: the sampled columns of output pixels
 * [pixel_begin, pixel_begin + pixel_count) of one image (pixel = y * out_width + x), times the mask, as
 * (pixel_count, kernel_h*kernel_w, in_channels) into `columns`. input_nhwc is the input channels-last,
 * (N, H, W, C); offset and mask as above. The caller multiplies the columns with the weights (a BLAS product). */
DCN_API int32_t dcn_deform_conv2d_columns_cpu(const dcn_deform_conv_desc* desc, int32_t dtype, const void* input_nhwc,
    const void* offset, const void* mask, int32_t image, int64_t pixel_begin, int64_t pixel_count, void* columns,
    int32_t num_threads);
/* The input of that call: (batch, channels, plane) -> (batch, plane, channels), any dtype, in cache-sized blocks,
 * into `output` (not overlapping `input`). An output of 32 MiB or more is first faulted in at once, as by
 * dcn_prefault_cpu. About 5x faster than torch's permuted copy on one thread. */
DCN_API int32_t dcn_channels_last_cpu(int32_t dtype, const void* input, void* output, int32_t batch, int32_t channels,
    int64_t plane, int32_t num_threads);
/* Fault in a buffer of `bytes` of private anonymous memory from malloc (32 MiB or more, which glibc maps afresh on
 * every allocation; smaller ones are left alone) at once, with huge pages where the kernel allows them, before it
 * is written whole (a torch tensor the caller is about to fill). The contents do not change. Not for a file
 * mapping: populating a shared one would dirty every page and allocate the file's holes. */
DCN_API int32_t dcn_prefault_cpu(void* data, int64_t bytes);

/* ---- libdcn_deploy_kernels.so (and the TensorRT plugin library) ---- */
DCN_API int32_t dcn_cuda_available(void);
/* 1 when cuBLAS loads, so DCN_ALGO_GEMM (and AUTO's choice of it) is available; else 0 with the reason in
 * dcn_last_error(). Needs no GPU. */
DCN_API int32_t dcn_gemm_path_available(void);
/* The workspace: at least dcn_deform_conv2d_workspace_size bytes (for the same flags as the forward's),
 * 256-byte aligned (cudaMalloc's are). */
DCN_API int32_t dcn_deform_conv2d_workspace_size(
    const dcn_deform_conv_desc* desc, int32_t dtype, int32_t algo, int32_t flags, size_t* bytes);
/* flags: 0, or DCN_FORWARD_ALLOW_TF32 (float32 layers: the GEMM path's products on TF32 tensor cores, inputs
 * rounded to 10 mantissa bits, float32 sums; what torch.backends.cuda.matmul.allow_tf32 allows PyTorch's own float32
 * products; the op passes it from there), DCN_FORWARD_CHANNELS_LAST, DCN_FORWARD_SHARED_TAPS and
 * DCN_FORWARD_GROUP_MMA (see above). Other bits are an error. */
DCN_API int32_t dcn_deform_conv2d_forward_cuda(const dcn_deform_conv_desc* desc, int32_t dtype, int32_t algo,
    int32_t flags, const void* input, const void* offset, const void* weight, const void* bias, const void* mask,
    void* output, void* workspace, size_t workspace_bytes, void* stream);

/* ---- the plugin's plain logic (both libraries) ---- */
/* Parse TensorRT-style fields: names[i], data[i] (int32 values), lengths[i], types[i] (PluginFieldType codes,
 * 5 = INT32). Unknown fields are ignored; missing ones keep their defaults (docs/ops.md). The plugin's allow_tf32
 * field has no place in attrs: it is checked (one INT32, 0 or 1) like the others, and its value dropped. */
DCN_API int32_t dcn_plugin_deform_conv_parse_fields(int32_t count, const char* const* names,
    const void* const* data, const int32_t* lengths, const int32_t* types, dcn_deform_conv_attrs* attrs);
/* Serialise attrs into fields (as getFieldsToSerialize does) and parse them back. */
DCN_API int32_t dcn_plugin_deform_conv_roundtrip(const dcn_deform_conv_attrs* in, dcn_deform_conv_attrs* out);
/* Check the input shapes against attrs and compute the output shape. dims: nb_inputs rows of 4 (rank in ranks[i]);
 * a dimension of -1 is unknown (dynamic) and is skipped by the checks; unknown output dimensions are -1. */
DCN_API int32_t dcn_plugin_deform_conv_output_dims(const dcn_deform_conv_attrs* attrs, int32_t nb_inputs,
    const int32_t* ranks, const int64_t* dims, int64_t* out_dims);

#endif /* DCN_KERNELS_H */

"""A short run of every CUDA kernel on small random cases, for compute-sanitizer (not collected by pytest).

    compute-sanitizer --tool memcheck  --error-exitcode 3 python tests/sanitizer_cases.py
    compute-sanitizer --tool racecheck --error-exitcode 3 python tests/sanitizer_cases.py --quick

Small on purpose: the sanitizer slows kernels by orders of magnitude. Every result is also checked against the
reference (so a kernel that skips work under the sanitizer fails here too); exit code 1 on a wrong result.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # plugin_configs

import torch  # noqa: E402

from dcn_deploy.plugin.native import (DCN_ERROR_UNSUPPORTED, NativeError, deform_conv2d_cuda,  # noqa: E402
                                      load_library)
from plugin_configs import (Case, make_tensors, max_relative_error, random_case, random_depthwise_case,  # noqa: E402
                            random_small_groups_case, reference)

TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 4e-2}
DENSE = Case(2, 1, 2, 40, 72, 7, 9, (3, 3), (1, 2), (1, 0, 2, 1), (1, 1), True, True, 3.0, False)
# The implicit-GEMM kernel's (half types; 32-channel multiples): a 256-row tile over two row blocks, two offset
# groups, pixels of two images in one 128-pixel tile and a tile cut short.
# The last case's groups start inside an offset group (C/group = 64, C/offset_group = 96): its taps table has a row
# for an offset group past the last, which must never be read from the offsets.
# The second case has 96 output channels: 128-row tiles (the specialised kernel's 512-thread instance).
IMPLICIT = [Case(2, 1, 2, 64, 260, 9, 11, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 3.0, False),
            Case(2, 1, 1, 64, 96, 7, 9, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 4.0, False),
            Case(3, 2, 1, 64, 24, 5, 7, (2, 3), (1, 2), (0, 1, 1, 0), (2, 1), False, True, 1.5, False),
            Case(1, 3, 2, 192, 24, 6, 7, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 2.0, False)]
# The shared-taps direct kernel's (DCN_FORWARD_SHARED_TAPS; offset groups of 8 items in every dtype): its taps and
# weights tables filled, a barrier, then read by 256 threads; depth-wise layers, and groups of 4 (two a vector in the
# half types, one in float32, a wide item in float64); the 40-pixel rows are two blocks of pixels, the second cut
# short, at offsets of 25 pixels.
SHARED_TAPS = [Case(2, 64, 1, 64, 64, 7, 9, (3, 3), (1, 2), (1, 0, 2, 1), (1, 2), True, True, 3.0, False),
               Case(1, 128, 2, 128, 128, 5, 40, (3, 2), (2, 1), (1, 1, 1, 1), (1, 1), True, False, 25.0, False),
               Case(2, 16, 1, 64, 64, 6, 40, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 25.0, False)]
# The tensor-core group kernel's (DCN_FORWARD_GROUP_MMA; half types, blocks of 16 channels): groups of 16 on a
# 161-pixel image (a second block whose first warp is cut short and whose other warps end at once), 2 offset groups;
# groups of 4 on a row of 40 pixels.
GROUP_MMA = [Case(2, 4, 2, 64, 64, 7, 23, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 3.0, False),
             Case(1, 8, 1, 32, 32, 1, 40, (3, 2), (1, 2), (1, 0, 1, 1), (1, 1), False, True, 25.0, False)]
# Its blocks of 32 (groups of 32, from NCHW tensors only: on channels-last ones no direct kernel takes them): two
# groups on the 161-pixel image.
GROUP_MMA_32 = [Case(2, 2, 1, 64, 64, 7, 23, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), True, True, 3.0, False)]
ALGOS = ("direct", "fused", "gemm", "gemm-nhwc", "direct-nhwc", "direct-taps", "direct-taps-nhwc", "direct-mma",
         "direct-mma-nhwc", "implicit")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer cases (for the slower racecheck tool)")
    parser.add_argument("--algos", default=",".join(ALGOS),
                        help="comma-separated kernels to run (default: all; gemm-nhwc and direct-nhwc are the GEMM "
                             "path and the direct kernel on channels-last tensors, the latter on the depth-wise "
                             "and small-group cases; direct-taps and direct-taps-nhwc the shared-taps direct kernel "
                             "on its own cases, direct-mma and direct-mma-nhwc the tensor-core group kernel on its "
                             "own cases in the half types); e.g. implicit with "
                             "DCN_DEPLOY_IMPLICIT_KERNEL=specialised for that kernel alone")
    args = parser.parse_args()
    algos = [name.strip() for name in args.algos.split(",") if name.strip()]
    unknown = sorted(set(algos) - set(ALGOS))
    if unknown or not algos:
        parser.error(f"--algos: {', '.join(unknown) or 'nothing'} is not one of {', '.join(ALGOS)}")
    kernels = load_library("kernels")
    cases = [random_case(random.Random(seed), max_channels_per_group=5, max_size=8) for seed in range(3 if args.quick else 8)]
    cases.append(DENSE)
    # depth-wise layers: the direct kernel's channels-last items (its default; over NCHW under
    # DCN_DEPLOY_DIRECT_LAYOUT=nchw)
    cases += [random_depthwise_case(random.Random(1300 + seed)) for seed in range(1 if args.quick else 3)]
    # groups of 2 or 4 channels in and out: its grouped instance, the weight tables in shared memory (what float32
    # takes; the half types take these too)
    cases += [random_small_groups_case(random.Random(1600 + seed), 4) for seed in range(1 if args.quick else 3)]
    # groups of 8 and 16 channels: the wide items of float32 (8 and 16: two and four 16-byte gathers a neighbour), the
    # half types (16: two; their groups of 8 fit one) and float64 (8: four; its groups of 16 run the NCHW kernel);
    # asked for as direct (auto keeps dense layers of groups of 16 on the GEMM path)
    cases += [Case(2, 2, 1, 2 * cpg, 2 * cpg, 7, 9, (3, 2), (2, 1), (1, 0, 2, 1), (1, 2), True, True, 3.0, False)
              for cpg in (8, 16)]
    failures = 0
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        for algo in algos:
            group_mma = "-mma" in algo
            half_only = algo == "implicit" or group_mma
            if (dtype == torch.float64 and algo == "fused") or (half_only and dtype.itemsize != 2):
                continue
            shared_taps = "-taps" in algo
            own = {"implicit": IMPLICIT, "direct-mma": GROUP_MMA + GROUP_MMA_32}.get(
                algo, SHARED_TAPS if shared_taps else GROUP_MMA if group_mma else cases)
            for index, case in enumerate(own):
                tensors = make_tensors(case, dtype, device="cuda", seed=index)
                x, off, w, b, m = tensors
                channels_last = algo.endswith("-nhwc")
                layout = torch.channels_last if channels_last else torch.contiguous_format
                out = torch.full((case.batch, case.out_channels, *case.out_size), float("nan"), dtype=dtype,
                                 device="cuda").contiguous(memory_format=layout)
                try:
                    deform_conv2d_cuda(x.contiguous(memory_format=layout), off, w, b, case.stride, case.pads,
                                       case.dilation, m, algo=algo.split("-")[0], channels_last=channels_last,
                                       shared_taps=shared_taps, group_mma=group_mma, out=out, library=kernels)
                except NativeError as exc:
                    if algo == "direct-nhwc" and exc.code == DCN_ERROR_UNSUPPORTED:
                        continue  # the channels-last direct kernel takes depth-wise layers and small groups
                    raise
                torch.cuda.synchronize()
                expected = reference(case, *[None if t is None else t.double() for t in tensors])
                error = max_relative_error(out, expected)
                if not error < TOLERANCE[dtype]:
                    failures += 1
                    print(f"FAIL {dtype} {algo} case {index}: error {error:.2e} ({case})")
    print(f"deform_conv2d kernels: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

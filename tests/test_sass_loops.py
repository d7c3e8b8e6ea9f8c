"""benchmarks/sass_loops.py: reading cuobjdump's SASS listing (no CUDA tools needed for these)."""
import pytest
from benchmark_scripts import load_benchmark_script

sass_loops = load_benchmark_script("sass_loops")

# The shape of `cuobjdump -sass` output: a function header, then one instruction per line with its address.
LISTING = """
        Function : _Z6kernelPf
        .headerflags    @"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                 /* 0x00000a00ff017b82 */
        /*0010*/                   S2R R0, SR_TID.X ;                     /* 0x0000000000007919 */
        /*0020*/                   LDG.E.128.CONSTANT R4, desc[UR6][R2.64] ;
        /*0030*/              @!P0 HADD2.F32 R5, -RZ, R4.H0_H0 ;
        /*0040*/                   FFMA R6, R5, R5, RZ ;
        /*0050*/                   ISETP.GE.AND P1, PT, R0, UR4, PT ;
        /*0060*/              @!P1 BRA 0x20 ;
        /*0070*/                   STG.E.128 desc[UR6][R8.64], R4 ;
        /*0080*/                   EXIT ;
        /*0090*/                   BRA 0x90;
        Function : _Z5otherv
        /*0000*/                   EXIT ;
"""


def test_opcode_drops_predicate_and_modifiers():
    assert sass_loops.opcode("@!P0 LDG.E.128.CONSTANT R4, desc[UR6][R2.64]") == "LDG"
    assert sass_loops.opcode("HADD2.F32 R5, -RZ, R4.H0_H0") == "HADD2"


def test_loops_are_backward_branches_with_their_mix():
    functions = sass_loops.kernels(LISTING)
    assert set(functions) == {"_Z6kernelPf", "_Z5otherv"}
    loops = sass_loops.loops(functions["_Z6kernelPf"])
    # the self-branch at 0x90 (the end-of-function trap) and the loop 0x20..0x60
    assert [(loop.start, loop.end, loop.count) for loop in loops] == [(0x90, 0x90, 1), (0x20, 0x60, 5)]
    line = sass_loops.describe(loops[1])
    assert "5 instructions" in line and "global load 1" in line and "half arith / convert 1" in line
    assert "float fma/mul/add 1" in line and "branch / sync 1" in line


def test_report_filters_kernels_by_pattern():
    lines = sass_loops.report(LISTING, "kernel")
    assert lines[0] == "_Z6kernelPf: 10 instructions" and not any("_Z5otherv" in line for line in lines)
    assert sass_loops.report(LISTING, "other")[1] == "  no loops"


def test_missing_tools_are_named(monkeypatch):
    monkeypatch.setattr(sass_loops.shutil, "which", lambda tool: None)
    with pytest.raises(SystemExit, match="cuobjdump is not on PATH"):
        sass_loops.run_cuobjdump("anything.o")

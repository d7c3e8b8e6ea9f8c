"""Static instruction counts of the loops in compiled CUDA kernels, from their SASS: what a kernel change did to
the work per iteration when no GPU is at hand to time it (an issue-bound loop runs about as much faster as it has
fewer instructions; a memory-bound one does not, so this never replaces a measurement).

    python benchmarks/sass_loops.py build/gpu/CMakeFiles/dcn_cuda.dir/plugins/deform_conv/deformConvGemm.cu.o \\
        --kernel 'tiledColumnsKernelI6__halfLi8E'

For every kernel whose mangled name matches ``--kernel`` (a regular expression), each loop, found as a backward
branch, is printed with its address range, its instruction count and its mix (global loads and stores, shared
memory, float arithmetic, conversions, integer work, branches). A loop with branches inside counts every
instruction between its head and its back branch, taken or not. Needs ``cuobjdump`` and ``nvdisasm`` on PATH (CUDA's
binutils, also on PyPI as nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm); the object must hold SASS for one
architecture (build with ``--cuda-archs 90``).
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, Iterable, List, Tuple

_FUNCTION = re.compile(r"^\s*Function : (\S+)")
_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?);")
_BRANCH_TARGET = re.compile(r"\bBRA\s+(?:`\(\.L_x_\d+\)|0x([0-9a-f]+))")

# Opcode families reported per loop, in this order; anything else counts as "other".
FAMILIES: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("global load", ("LDG",)),
    ("global store", ("STG",)),
    ("shared load", ("LDS", "LDSM")),
    ("shared store", ("STS",)),
    ("async copy", ("LDGSTS", "LDGDEPBAR", "DEPBAR")),
    ("tensor core", ("HMMA", "HGMMA")),
    ("float fma/mul/add", ("FFMA", "FMUL", "FADD", "FMNMX", "FSEL", "FSETP")),
    ("half arith / convert", ("HADD2", "HFMA2", "HMUL2", "F2FP", "F2F", "I2F", "F2I")),
    ("integer / address", ("IMAD", "IADD3", "LEA", "SHF", "LOP3", "ISETP", "SEL", "IABS", "VIADD", "IMNMX", "PRMT",
                           "MOV", "UMOV", "IADD", "SHL", "SHR", "IMUL")),
    ("branch / sync", ("BRA", "BSSY", "BSYNC", "BAR", "WARPSYNC", "EXIT", "CALL", "RET")),
)


@dataclass
class Loop:
    start: int
    end: int
    opcodes: List[str]

    @property
    def count(self) -> int:
        return len(self.opcodes)


def opcode(text: str) -> str:
    """The opcode of one SASS instruction, without its predicate and modifiers ("@!P0 LDG.E.128" -> "LDG")."""
    words = text.split()
    if words and words[0].startswith("@"):
        words = words[1:]
    return words[0].split(".")[0] if words else ""


def family(name: str) -> str:
    for label, members in FAMILIES:
        if name in members:
            return label
    return "other"


def kernels(sass: str) -> Dict[str, List[Tuple[int, str]]]:
    """Each function's instructions as (address, text), from cuobjdump -sass output."""
    found: Dict[str, List[Tuple[int, str]]] = {}
    current = None
    for line in sass.splitlines():
        match = _FUNCTION.match(line)
        if match:
            current = found.setdefault(match.group(1), [])
            continue
        match = _INSTRUCTION.match(line)
        if match and current is not None:
            current.append((int(match.group(1), 16), match.group(2).strip()))
    return found


def loops(instructions: List[Tuple[int, str]]) -> List[Loop]:
    """Every backward branch's range [target, branch], innermost (shortest) first."""
    found = []
    for address, text in instructions:
        match = _BRANCH_TARGET.search(text)
        if not match or match.group(1) is None:
            continue
        target = int(match.group(1), 16)
        if target <= address:
            body = [opcode(t) for a, t in instructions if target <= a <= address]
            found.append(Loop(target, address, body))
    return sorted(found, key=lambda loop: loop.count)


def describe(loop: Loop) -> str:
    mix = collections.Counter(family(name) for name in loop.opcodes)
    order = [label for label, _ in FAMILIES] + ["other"]
    parts = [f"{label} {mix[label]}" for label in order if mix[label]]
    return f"  loop 0x{loop.start:04x}-0x{loop.end:04x}: {loop.count} instructions ({', '.join(parts)})"


def report(sass: str, pattern: str) -> List[str]:
    lines = []
    for name, instructions in kernels(sass).items():
        if not re.search(pattern, name):
            continue
        lines.append(f"{name}: {len(instructions)} instructions")
        found = loops(instructions)
        lines.extend(describe(loop) for loop in found)
        if not found:
            lines.append("  no loops")
    return lines


def run_cuobjdump(path: str) -> str:
    for tool in ("cuobjdump", "nvdisasm"):
        if shutil.which(tool) is None:
            raise SystemExit(f"sass_loops: {tool} is not on PATH; install CUDA's binutils (pip install "
                             f"nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm, then add their bin folder to PATH)")
    done = subprocess.run(["cuobjdump", "-sass", path], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"sass_loops: cuobjdump -sass {path} failed: {done.stderr.strip()}")
    return done.stdout


def main(argv: Iterable[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("object", help="an object file or shared library holding SASS (cuobjdump reads it)")
    parser.add_argument("--kernel", default=".", help="regular expression on the mangled kernel names")
    args = parser.parse_args(list(argv) if argv is not None else None)
    lines = report(run_cuobjdump(args.object), args.kernel)
    if not lines:
        print(f"sass_loops: no kernel in {args.object} matches {args.kernel!r}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""TensorRT optimisation profiles as plain data: parse ``--shapes`` strings, fill in defaults, check a call's shapes.

No TensorRT import: the builder turns a :class:`Profile` into ``IOptimizationProfile.set_shape`` calls and the
runner uses :func:`select_profile` (which of the engine's profiles a call's shapes fit) before ``set_input_shape``,
so both are tested without a GPU.

Shape strings follow trtexec: ``name:1x3x224x224``, several joined by commas
(``x:1x3x224x224,offset:1x18x224x224``). Ours also accept ``name:MIN/OPT/MAX`` for one input's whole range
(``x:1x3x64x64/4x3x64x64/8x3x64x64``).

Defaults for dimensions the user leaves open: a dynamic dimension 0 (the batch) gets min 1, opt 1,
max :data:`DEFAULT_MAX_BATCH`; every other dynamic dimension takes the size of the example input the file was
exported with (``examples``: ``dcn_deploy.export`` stores them, see ``dcn_deploy.feeds.stored_example_shapes``),
fixed (min = opt = max), with a note saying so; without an example it must be given, because no size is a safe
guess for an image's height or width. Dimensions that share a symbolic name in the ONNX file (``N``, ``batch``,
...) get the same range, so giving the input image's shape is usually enough.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ..wording import argument, for_reader

__all__ = [
    "DEFAULT_MAX_BATCH", "DEFAULT_MAX_ROIS", "Dim", "InputShape", "Profile", "ProfileError", "TensorRange",
    "check_shapes_in_profile", "compute_profile", "format_profile_shape", "onnx_input_shapes", "parse_profile_shape",
    "parse_shape_specs", "parse_range_specs", "profile_from_json", "profile_to_json", "select_profile",
]

DEFAULT_MAX_BATCH = 8
# Boxes per call a RoI input (dimension 0 of an (R, 5) box list) allows when the user gives no range: more than
# detectors keep after NMS (R-FCN 300, mmdetection 1000).
DEFAULT_MAX_ROIS = 1000
Shape = Tuple[int, ...]
Dim = Union[int, str, None]  # fixed size, symbolic name, or unknown


class ProfileError(ValueError):
    """A shape string, a profile or an input shape is wrong; the message names the tensor and the fix."""


@dataclass(frozen=True)
class InputShape:
    """A network input as the ONNX file declares it: fixed sizes are ints, dynamic ones a name or None."""

    name: str
    dims: Tuple[Dim, ...]

    def is_dynamic(self, axis: int) -> bool:
        return not isinstance(self.dims[axis], int) or self.dims[axis] < 0


@dataclass(frozen=True)
class TensorRange:
    """The shapes one input may take: ``min <= opt <= max`` dimension by dimension."""

    min: Shape
    opt: Shape
    max: Shape

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))

    def to_json(self) -> Dict[str, List[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: Mapping[str, Sequence[int]]) -> "TensorRange":
        return cls(tuple(int(v) for v in data["min"]), tuple(int(v) for v in data["opt"]),
                   tuple(int(v) for v in data["max"]))


Profile = Dict[str, TensorRange]  # input name -> its range (one TensorRT optimisation profile)


# parsing -----------------------------------------------------------------------------------------------------------
_SHAPE_RE = re.compile(r"^\d+(x\d+)*$")


def parse_profile_shape(text: str, what: str = "shape") -> Shape:
    """``"1x3x224x224"`` -> ``(1, 3, 224, 224)``."""
    text = text.strip().lower()
    if not _SHAPE_RE.match(text):
        raise ProfileError(f"{what}: {text!r} is not a shape; write the sizes joined by 'x', e.g. 1x3x224x224")
    return tuple(int(v) for v in text.split("x"))


def format_profile_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _spec_text(name: str, value) -> str:
    """One ``{name: value}`` entry as trtexec's text: a shape ``(1, 3, 64, 64)`` -> ``1x3x64x64``, a (min, opt, max)
    triple of shapes -> ``MIN/OPT/MAX``, a string as it is."""
    if isinstance(value, str):
        return value
    items = list(value) if hasattr(value, "__iter__") else None
    if items and all(hasattr(d, "__index__") and not isinstance(d, bool) for d in items):
        return format_profile_shape(items)
    if items and len(items) == 3 and all(hasattr(v, "__iter__") and not isinstance(v, str) for v in items):
        return "/".join(format_profile_shape(v) for v in items)
    raise ProfileError(f"shapes[{name!r}] must be a shape such as (1, 3, 64, 64), a (min, opt, max) triple of shapes, "
                       f"or trtexec's text '1x3x64x64', got {value!r}")


def _split_specs(specs: Union[str, Iterable[str], None]) -> List[Tuple[str, str]]:
    """``"a:1x2,b:3x4"`` (or several such strings) -> ``[("a", "1x2"), ("b", "3x4")]``."""
    if specs is None:
        return []
    if isinstance(specs, Mapping):  # {name: shape}, as compare_runners/benchmark take shapes: trtexec's text
        specs = [f"{name}:{_spec_text(name, value)}" for name, value in specs.items()]
    if isinstance(specs, str):
        specs = [specs]
    pairs = []
    for spec in specs:
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            name, sep, shape = item.rpartition(":")  # names may contain ':'; shapes never do
            if not sep:  # NAME=SHAPE, as verify's and bench's --shape take it
                name, sep, shape = item.rpartition("=")
            name = name.strip().strip("'\"")
            if not sep or not name:
                raise ProfileError(f"shape spec {item!r} must be NAME:SHAPE (or NAME=SHAPE), e.g. input:1x3x224x224 "
                                   "(NAME is the ONNX input's name)")
            pairs.append((name, shape))
    return pairs


def parse_shape_specs(specs: Union[str, Iterable[str], None], option: str = "--shapes") -> Dict[str, Shape]:
    """trtexec's ``name:1x3x224x224[,name2:...]`` -> ``{name: shape}``. Repeated names are an error."""
    out: Dict[str, Shape] = {}
    for name, shape in _split_specs(specs):
        if name in out:
            raise ProfileError(f"{option}: input {name!r} is given twice")
        out[name] = parse_profile_shape(shape, f"{option}, input {name!r}")
    return out


def parse_range_specs(specs: Union[str, Iterable[str], None], option: str = "--shapes") -> Dict[str, TensorRange]:
    """``name:SHAPE`` (min = opt = max) or ``name:MIN/OPT/MAX`` -> ``{name: TensorRange}`` (not yet validated)."""
    out: Dict[str, TensorRange] = {}
    for name, text in _split_specs(specs):
        if name in out:
            raise ProfileError(f"{option}: input {name!r} is given twice")
        parts = text.split("/")
        if len(parts) == 1:
            shape = parse_profile_shape(parts[0], f"{option}, input {name!r}")
            out[name] = TensorRange(shape, shape, shape)
        elif len(parts) == 3:
            lo, opt, hi = (parse_profile_shape(p, f"{option}, input {name!r}") for p in parts)
            out[name] = TensorRange(lo, opt, hi)
        else:
            raise ProfileError(f"{option}, input {name!r}: write one shape (fixed) or three joined by '/' "
                               f"(MIN/OPT/MAX), got {text!r}")
    return out


# profile computation ----------------------------------------------------------------------------------------------
def _validate_range(inp: InputShape, rng: TensorRange, option: str) -> None:
    rank = len(inp.dims)
    for label, shape in (("min", rng.min), ("opt", rng.opt), ("max", rng.max)):
        if len(shape) != rank:
            raise ProfileError(f"{option}: input {inp.name!r} has {rank} dimensions {_describe(inp)}, "
                               f"the {label} shape {format_profile_shape(shape)} has {len(shape)}")
        for axis, (declared, size) in enumerate(zip(inp.dims, shape)):
            if size < 1:
                raise ProfileError(f"{option}: input {inp.name!r} {label} shape {format_profile_shape(shape)} has size "
                                   f"{size} at dimension {axis}; sizes must be >= 1")
            if not inp.is_dynamic(axis) and size != declared:
                raise ProfileError(f"{option}: input {inp.name!r} dimension {axis} is fixed to {declared} in the "
                                   f"model {_describe(inp)}, the {label} shape {format_profile_shape(shape)} has "
                                   f"{size}")
    for axis, (lo, opt, hi) in enumerate(zip(rng.min, rng.opt, rng.max)):
        if not lo <= opt <= hi:
            raise ProfileError(f"{option}: input {inp.name!r} dimension {axis} needs min <= opt <= max, got "
                               f"{lo} / {opt} / {hi} (shapes {format_profile_shape(rng.min)} / "
                               f"{format_profile_shape(rng.opt)} / {format_profile_shape(rng.max)})")


def _describe(inp: InputShape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in inp.dims) + ")"


def _suggestion(inp: InputShape, batch: int = 1) -> str:
    sizes = []
    for axis, d in enumerate(inp.dims):
        if not inp.is_dynamic(axis):
            sizes.append(str(d))
        elif axis == 0:
            sizes.append(str(batch))
        else:
            sizes.append("<" + (d if isinstance(d, str) else f"dim{axis}") + ">")
    return f"{inp.name}:{'x'.join(sizes)}"


# How compute_profile's errors name its arguments: the library argument, then the CLI option (`dcn-deploy build`),
# or the option alone while the CLI runs (dcn_deploy.wording).
def _shapes_argument() -> str:
    return argument("shapes", "--shapes")


_TRIPLE = (("min_shapes", "--min-shapes"), ("opt_shapes", "--opt-shapes"), ("max_shapes", "--max-shapes"))


def compute_profile(inputs: Sequence[InputShape], *,
                    shapes: Union[str, Iterable[str], None] = None,
                    min_shapes: Union[str, Iterable[str], None] = None,
                    opt_shapes: Union[str, Iterable[str], None] = None,
                    max_shapes: Union[str, Iterable[str], None] = None,
                    max_batch: int = DEFAULT_MAX_BATCH,
                    examples: Optional[Mapping[str, Sequence[int]]] = None,
                    note: Optional[Callable[[str], None]] = None, rois: Sequence[str] = ()) -> Profile:
    """One optimisation profile covering every input.

    ``shapes`` are ``name:SHAPE`` or ``name:MIN/OPT/MAX`` specs; ``min_shapes``/``opt_shapes``/``max_shapes`` are
    trtexec's three separate lists (all three must name the same inputs). Static inputs need nothing; a dynamic
    batch dimension (dimension 0) defaults to 1/1/``max_batch``; other dynamic dimensions come from the specs,
    directly or through a symbolic name shared with a specified input, or else from ``examples`` ({input name:
    the example shape the file was exported with}, e.g. ``dcn_deploy.feeds.stored_example_shapes``), fixed to the
    example's size: ``note`` is then called with one line per such input saying so and how to give a range.
    ``rois``: inputs that are RoI box lists (R, 5): their dimension 0 counts boxes, not images, so it defaults to
    1..:data:`DEFAULT_MAX_ROIS` (opt: the example's count) instead of the batch range, with a note saying so.
    Raises :class:`ProfileError` naming every input that is still open, with a ``shapes=`` suggestion.
    """
    if max_batch < 1:
        raise ProfileError(f"{argument('max_batch', '--max-batch')} must be >= 1, got {max_batch}")
    by_name = {inp.name: inp for inp in inputs}
    given = _given_ranges(shapes, min_shapes, opt_shapes, max_shapes)
    shapes_names = set(parse_range_specs(shapes, _shapes_argument()))  # the rest came from the trtexec triple
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        option = (_shapes_argument() if set(unknown) & shapes_names
                  else argument("min_shapes/opt_shapes/max_shapes", "--min-shapes/--opt-shapes/--max-shapes"))
        raise ProfileError(f"{option}: shape given for {unknown}, which the model does not have as input; "
                           f"its inputs are {sorted(by_name)}")
    for name, rng in given.items():
        option = (_shapes_argument() if name in shapes_names
                  else argument("min_shapes/opt_shapes/max_shapes", "--min-shapes/--opt-shapes/--max-shapes"))
        _validate_range(by_name[name], rng, option)
    symbols = _symbol_ranges(given, by_name)

    profile: Profile = {}
    open_inputs: List[str] = []
    # A RoI input whose dimension 0 shares its name with an image's batch (a .pt2 program, another tool's file) must
    # keep that range: TensorRT requires dimensions of one name to be equal.
    batch_names = {inp.dims[0] for inp in inputs if inp.name not in rois and inp.dims and isinstance(inp.dims[0], str)}
    for inp in inputs:
        if inp.name in given:
            profile[inp.name] = given[inp.name]
            continue
        example = _usable_example(inp, (examples or {}).get(inp.name))
        is_roi = (inp.name in rois and bool(inp.dims) and inp.is_dynamic(0) and inp.dims[0] not in symbols
                  and inp.dims[0] not in batch_names)
        rng, from_example = _derived_range(inp, symbols, max_batch, example, is_roi)
        if rng is None:
            open_inputs.append(inp.name)
            continue
        profile[inp.name] = rng
        if note is not None and is_roi:
            note(_roi_note(inp, rng))
        if from_example and note is not None:
            note(_example_note(inp, rng, from_example))
    if open_inputs:
        examples_text = ",".join(_suggestion(by_name[n]) for n in open_inputs)
        raise ProfileError(
            f"input(s) {open_inputs} have dynamic dimensions other than the batch "
            f"({'; '.join(n + ' ' + _describe(by_name[n]) for n in open_inputs)}) and no example shape stored "
            f"for them, so they need a size range: give "
            + for_reader(f"shapes=\"{examples_text}\" (one fixed shape) or NAME:MIN/OPT/MAX (CLI: --shapes "
                         f"{examples_text}), or trtexec-style min_shapes=, opt_shapes=, max_shapes= (CLI: "
                         "--min-shapes/--opt-shapes/--max-shapes)",
                         f"--shapes {examples_text} (one fixed shape) or NAME:MIN/OPT/MAX, or trtexec-style "
                         "--min-shapes/--opt-shapes/--max-shapes"))
    return profile


def _given_ranges(shapes, min_shapes, opt_shapes, max_shapes) -> Dict[str, TensorRange]:
    """The ranges the user gave, by input name: ``shapes`` specs merged with trtexec's three lists."""
    given: Dict[str, TensorRange] = dict(parse_range_specs(shapes, _shapes_argument()))
    triple = [parse_shape_specs(s, argument(arg, option))
              for s, (arg, option) in zip((min_shapes, opt_shapes, max_shapes), _TRIPLE)]
    if any(triple):
        names = [set(t) for t in triple]
        if not names[0] == names[1] == names[2]:
            triple_argument = argument("min_shapes, opt_shapes and max_shapes",
                                       "--min-shapes, --opt-shapes, --max-shapes")
            raise ProfileError(f"{triple_argument} must name the same inputs, got "
                               f"{sorted(names[0])}, {sorted(names[1])} and {sorted(names[2])}")
        for name in triple[0]:
            if name in given:
                raise ProfileError(f"input {name!r} is given both in "
                                   + for_reader("shapes and in min_shapes/opt_shapes/max_shapes (CLI: --shapes and "
                                                "--min/opt/max-shapes)", "--shapes and in --min/opt/max-shapes")
                                   + "; give it in one of them")
            given[name] = TensorRange(triple[0][name], triple[1][name], triple[2][name])
    return given


def _symbol_ranges(given: Mapping[str, TensorRange],
                   by_name: Mapping[str, InputShape]) -> Dict[str, Tuple[int, int, int]]:
    """Symbolic dimension name -> (min, opt, max), taken from the inputs the user specified."""
    symbols: Dict[str, Tuple[int, int, int]] = {}
    for name, rng in given.items():
        for axis, d in enumerate(by_name[name].dims):
            if isinstance(d, str) and d:
                value = (rng.min[axis], rng.opt[axis], rng.max[axis])
                if symbols.setdefault(d, value) != value:
                    raise ProfileError(f"dimension {d!r} is shared by several inputs but given different ranges: "
                                       f"{symbols[d]} and {value} (min, opt, max); make them agree")
    return symbols


def _usable_example(inp: InputShape, example: Optional[Sequence[int]]) -> Optional[Shape]:
    """``example`` as a shape if it still fits ``inp`` (same rank, the fixed sizes, every size >= 1), else None: a
    file edited after export may store a shape that no longer describes its input."""
    if example is None:
        return None
    shape = tuple(int(s) for s in example)
    if len(shape) != len(inp.dims) or min(shape, default=1) < 1:
        return None
    if any(not inp.is_dynamic(axis) and size != inp.dims[axis] for axis, size in enumerate(shape)):
        return None
    return shape


def _derived_range(inp: InputShape, symbols: Mapping[str, Tuple[int, int, int]], max_batch: int,
                   example: Optional[Shape] = None, is_roi: bool = False) -> Tuple[Optional[TensorRange], List[int]]:
    """The range of an input the user did not specify: fixed sizes, shared symbols, a batch of 1/1/``max_batch``,
    then the example's size for other dynamic dimensions. Returns (range, the axes fixed from the example); the
    range is None when some dynamic dimension is still unknown."""
    lo, opt, hi = [], [], []
    from_example: List[int] = []
    for axis, d in enumerate(inp.dims):
        if not inp.is_dynamic(axis):
            value = (d, d, d)
        elif isinstance(d, str) and d in symbols:
            value = symbols[d]
        elif axis == 0 and is_roi:  # a box count: the example's as opt, up to DEFAULT_MAX_ROIS
            opt_boxes = example[0] if example is not None else 1
            value = (1, opt_boxes, max(DEFAULT_MAX_ROIS, opt_boxes))
        elif axis == 0:
            value = (1, 1, max_batch)
        elif example is not None:
            value = (example[axis],) * 3
            from_example.append(axis)
        else:
            return None, []
        lo.append(value[0]), opt.append(value[1]), hi.append(value[2])
    return TensorRange(tuple(lo), tuple(opt), tuple(hi)), from_example


def _roi_note(inp: InputShape, rng: TensorRange) -> str:
    """The line saying how many boxes a RoI input's default range allows, and how to give another."""
    spec = f"{inp.name}:{format_profile_shape(rng.min)}/{format_profile_shape(rng.opt)}/{format_profile_shape(rng.max)}"
    return (f"no shapes for RoI input {inp.name!r}: {rng.min[0]} to {rng.max[0]} boxes per call (tuned for "
            f"{rng.opt[0]}); for another range give "
            + for_reader(f"shapes=\"{spec}\" with your counts (CLI: --shapes {spec})",
                         f"--shapes {spec} with your counts"))


def _example_note(inp: InputShape, rng: TensorRange, axes: Sequence[int]) -> str:
    """The line saying which dimensions of ``inp`` were fixed to the exported example and how to give a range
    (the suggested one spans half to twice the example's sizes, and the profile's batch range)."""
    names = [inp.dims[a] if isinstance(inp.dims[a], str) and inp.dims[a] else f"dimension {a}" for a in axes]
    which = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    sizes = "x".join(str(rng.opt[a]) for a in axes)
    lo, hi = list(rng.min), list(rng.max)
    for a in axes:
        lo[a], hi[a] = max(1, rng.opt[a] // 2), rng.opt[a] * 2
    suggestion = f"{inp.name}:{format_profile_shape(lo)}/{format_profile_shape(rng.opt)}/{format_profile_shape(hi)}"
    batch = (f" (batch {rng.min[0]}..{rng.max[0]})" if inp.dims and inp.is_dynamic(0) and 0 not in axes
             and rng.min[0] != rng.max[0] else "")
    return (f"no shapes for input {inp.name!r}: {which} fixed to the exported example {sizes}{batch}; for a range "
            "give " + argument(f"shapes=\"{inp.name}:MIN/OPT/MAX\"", f"--shapes {suggestion}"))


# checking a call ---------------------------------------------------------------------------------------------------
def check_shapes_in_profile(shapes: Mapping[str, Sequence[int]], profile: Mapping[str, TensorRange]) -> None:
    """Raise :class:`ProfileError` if an input shape lies outside the engine's profile (names the input and range)."""
    for name, shape in shapes.items():
        rng = profile.get(name)
        if rng is None:
            raise ProfileError(f"input {name!r} is not in the engine's profile; its inputs are {sorted(profile)}")
        shape = tuple(int(s) for s in shape)
        if not rng.contains(shape):
            if len(shape) != len(rng.min):
                detail = f"it has {len(shape)} dimensions, the engine expects {len(rng.min)}"
            else:
                bad = [a for a, (lo, s, hi) in enumerate(zip(rng.min, shape, rng.max)) if not lo <= s <= hi]
                detail = "dimension(s) " + ", ".join(f"{a} ({shape[a]} not in {rng.min[a]}..{rng.max[a]})"
                                                     for a in bad)
            raise ProfileError(
                f"input {name!r} has shape {format_profile_shape(shape)}, outside the engine's profile "
                f"min {format_profile_shape(rng.min)} .. max {format_profile_shape(rng.max)}: {detail}. Rebuild the "
                f"engine with a wider range (dcn-deploy build ... --shapes {name}:{format_profile_shape(rng.min)}/"
                f"{format_profile_shape(rng.opt)}/<MAX>) or change the input")


def _outside_detail(shape: Shape, rng: TensorRange) -> str:
    """Which dimensions of ``shape`` lie outside ``rng`` (or that the rank differs), for error messages."""
    if len(shape) != len(rng.min):
        return f"it has {len(shape)} dimensions, the profile {len(rng.min)}"
    bad = [a for a, (lo, s, hi) in enumerate(zip(rng.min, shape, rng.max)) if not lo <= s <= hi]
    return "dimension(s) " + ", ".join(f"{a} ({shape[a]} not in {rng.min[a]}..{rng.max[a]})" for a in bad)


def select_profile(shapes: Mapping[str, Sequence[int]], profiles: Sequence[Mapping[str, TensorRange]]) -> int:
    """The index of the first optimisation profile whose ranges contain every input shape of a call.

    ``profiles`` are the engine's profiles in index order (input name -> :class:`TensorRange`). An engine with one
    profile gets :func:`check_shapes_in_profile`'s message; with several, a shape that fits none raises
    :class:`ProfileError` listing every profile's ranges and, per profile, the dimensions outside it. The first
    fitting profile (not the one in use) is chosen, so the same shapes always run with the same profile's kernels.
    """
    if not profiles:
        raise ProfileError("the engine has no optimisation profile; rebuild it (dcn-deploy build)")
    if len(profiles) == 1:
        check_shapes_in_profile(shapes, profiles[0])
        return 0
    shapes = {name: tuple(int(s) for s in shape) for name, shape in shapes.items()}
    for name in shapes:
        if name not in profiles[0]:
            raise ProfileError(f"input {name!r} is not in the engine's profiles; its inputs are {sorted(profiles[0])}")
    for index, profile in enumerate(profiles):
        if all(profile[name].contains(shape) for name, shape in shapes.items()):
            return index
    given = ", ".join(f"{name} {format_profile_shape(shape)}" for name, shape in shapes.items())
    lines = [f"input shape(s) {given} fit none of the engine's {len(profiles)} optimisation profiles:"]
    for index, profile in enumerate(profiles):
        ranges = "; ".join(f"{name} min {format_profile_shape(rng.min)} .. max {format_profile_shape(rng.max)}"
                           for name, rng in profile.items())
        outside = "; ".join(f"{name}: {_outside_detail(shape, profile[name])}" for name, shape in shapes.items()
                            if not profile[name].contains(shape))
        lines.append(f"  profile {index}: {ranges} (outside: {outside})")
    lines.append("Change the input to fit one of them, or rebuild the engine with a profile that covers it "
                 "(dcn-deploy build ... --shapes NAME:MIN/OPT/MAX)")
    raise ProfileError("\n".join(lines))


def profile_to_json(profile: Mapping[str, TensorRange]) -> Dict[str, Dict[str, List[int]]]:
    return {name: rng.to_json() for name, rng in profile.items()}


def profile_from_json(data: Mapping[str, Mapping[str, Sequence[int]]]) -> Profile:
    return {name: TensorRange.from_json(rng) for name, rng in data.items()}



def onnx_input_shapes(model) -> List[InputShape]:
    """The graph inputs of an ``onnx.ModelProto`` (initialisers excluded) as :class:`InputShape`."""
    from ..feeds.onnx_file_inputs import fed_inputs

    out = []
    for vi in fed_inputs(model.graph):
        dims: List[Dim] = []
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        out.append(InputShape(vi.name, tuple(dims)))
    return out


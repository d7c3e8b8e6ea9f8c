"""What :func:`dcn_deploy.onnx.model_loading.load_model` returns: :class:`LoadedModel`, the model and the example
inputs it is exported and verified at.

Example inputs are random tensors of the ``--input-shape`` sizes (:func:`parse_input_shape`), the model's own (a
:class:`dcn_deploy.onnx.example_samplers.Sampler`: a zoo entry, or a module with an ``example_inputs`` method), or
a .pt2 program's stored inputs; floating ones are cast to the ``--dtype`` (:data:`DTYPES`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..feeds.feed_files import read_input_files
from ..feeds.random_feeds import box_image, random_boxes
from ..feeds.shapes import FeedError, format_shape, parse_shape
from ..ops.convert import ConvertedModules
from ..wording import argument, for_reader
from .example_samplers import Sampler
from .program_shapes import program_input_shapes, program_shape_mismatch

# --dtype's choices (commands/export.py keeps a copy of the names, so that the CLI starts without torch)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def parse_input_shape(text: str) -> Tuple[int, ...]:
    """``"1x3x64x64"`` -> ``(1, 3, 64, 64)``; every size must be a positive integer."""
    name, sep, _ = str(text).partition("=") if "=" in str(text) else str(text).rpartition(":")
    if sep and name:  # NAME=SHAPE, as verify's --shape takes it: here the model's inputs have no names yet
        raise ValueError(f"--input-shape {text!r}: give the sizes alone, one --input-shape per model input in the "
                         f"order of its forward's arguments (the exported inputs are named from them, or by "
                         f"--input-names), e.g. --input-shape 1x3x64x64")
    try:
        shape = parse_shape(str(text))
    except FeedError as exc:
        raise ValueError(f"--input-shape: {exc}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"--input-shape {text!r}: every size must be >= 1, e.g. 1x3x64x64")
    return shape


def _cast(inputs: Sequence[torch.Tensor], dtype: Optional[torch.dtype]) -> Tuple[torch.Tensor, ...]:
    if dtype is None:
        return tuple(inputs)
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)


def _shapes_of(inputs: Sequence[torch.Tensor]) -> list:
    return [tuple(int(d) for d in t.shape) for t in inputs]


@dataclass
class LoadedModel:
    """A model ready for :func:`dcn_deploy.export`, and where it came from.

    ``model`` is an ``nn.Module`` in eval mode or a ``torch.export.ExportedProgram``; ``kind`` is ``"file"``,
    ``"module"``, ``"pt2"`` or ``"zoo"``; ``sampler`` (a :class:`Sampler`) makes inputs the model defines itself.
    """

    model: Union[torch.nn.Module, "torch.export.ExportedProgram"]
    reference: str
    kind: str
    sampler: Optional[Sampler] = None
    input_names: Optional[Tuple[str, ...]] = None  # names the model's source gives its inputs (the zoo's), if any
    output_names: Optional[Tuple[str, ...]] = None
    # the torchvision/mmcv layers load_model swapped for ours, and those it left (converted.skipped)
    converted: ConvertedModules = field(default_factory=ConvertedModules)

    @property
    def name(self) -> str:
        return type(self.model).__name__

    def example_inputs(self, shapes: Sequence[Sequence[int]] = (), dtype: Optional[torch.dtype] = None,
                       seed: int = 0) -> Tuple[torch.Tensor, ...]:
        """Inputs for export or verification.

        ``shapes`` (one per input, e.g. from ``--input-shape``) gives random normal tensors of those shapes,
        except for models that make their own inputs: one whose sampler takes a size (zoo entries) reads one 4-D
        shape (N, C, H, W) as the batch and image size; one whose sampler takes no size gives its own inputs when
        they have exactly the shapes asked for, else random tensors of those shapes. Without shapes the model's
        own inputs are used. Floating tensors are cast to ``dtype`` when given.
        """
        shapes = [tuple(int(d) for d in s) for s in shapes]
        if self.sampler is not None and shapes and self.sampler.takes_size:
            if len(shapes) != 1 or len(shapes[0]) != 4:
                raise ValueError(f"{self.reference} makes its own inputs; {argument('shapes', '--input-shape')} may "
                                 "give only the image shape "
                                 f"N x C x H x W (one 4-D shape), got {['x'.join(map(str, s)) for s in shapes]}")
            inputs = self.sampler(shapes[0][0], (shapes[0][2], shapes[0][3]), seed)
            if inputs[0].shape[1] != shapes[0][1]:
                raise ValueError(f"{self.reference} takes {inputs[0].shape[1]} input channels, "
                                 f"{argument('shapes', '--input-shape')} gives "
                                 f"{shapes[0][1]}: use {inputs[0].shape[1]}x... ")
        elif self.sampler is not None and shapes:
            own = self.sampler(shapes[0][0] if shapes[0] else 1, None, seed)
            inputs = own if _shapes_of(own) == shapes else self._random(shapes, seed)
        elif shapes:
            if self.kind == "pt2":
                self._check_program_shapes(shapes)
            inputs = self._random(shapes, seed)
        elif self.sampler is not None:
            inputs = self.sampler(1, None, seed)
        elif self.kind == "pt2" and self.model.example_inputs:
            args, kwargs = self.model.example_inputs
            if kwargs:
                raise ValueError(f"{self.reference} was exported with keyword inputs {sorted(kwargs)}; "
                                 "export from the Python model instead")
            inputs = tuple(args)
        else:
            raise ValueError(f"{self.reference} does not say what inputs it takes: "
                             + for_reader("give shapes, one per model input, e.g. shapes=[(1, 3, 224, 224)] (CLI: "
                                          "--input-shape)", "give one --input-shape per model input, e.g. "
                                          "--input-shape 1x3x224x224")
                             + " (or give the module an example_inputs(batch) method)")
        return _cast(inputs, dtype)

    def inputs_from_files(self, items: Sequence[str], dtype: Optional[torch.dtype] = None,
                          note: Optional[Callable[[str], None]] = None) -> Tuple[torch.Tensor, ...]:
        """Example inputs read from ``NAME=file.npy`` / ``file.npz`` items (``--input``), in the order of the
        module's ``forward`` arguments (NAME is an argument's name; those with a default may be left out, from the
        last one back). Floating arrays are cast to ``dtype``, else to the model's floating dtype; ``note`` is told
        of each cast."""
        if not isinstance(self.model, torch.nn.Module):
            raise ValueError(f"{self.reference} is a saved torch.export program, which carries its own example "
                             f"inputs; drop {argument('input files', '--input')}")
        names, required = _forward_arguments(self.model)
        files = read_input_files(items, names, required)
        given = names[:max(names.index(n) for n in files) + 1]
        gap = [n for n in given if n not in files]
        if gap:
            raise FeedError(f"no file gives input(s) {gap}, which come before {given[-1]!r} in {self.reference}'s "
                            f"forward({', '.join(names)}); give them too")
        target = dtype or next((p.dtype for p in self.model.parameters() if p.is_floating_point()), None)
        tensors = []
        for name in given:
            array, source = files[name]
            tensor = torch.from_numpy(np.ascontiguousarray(array))
            if tensor.is_floating_point() and target is not None and tensor.dtype != target:
                if note is not None:
                    note(f"input {name!r} from {source} was {tensor.dtype}, cast to the model's {target}")
                tensor = tensor.to(target)
            tensors.append(tensor)
        return tuple(tensors)

    def verification_inputs(self, example: Sequence[torch.Tensor], dynamic: bool,
                            dtype: Optional[torch.dtype] = None) -> Optional[list]:
        """Input tuples to verify an export on, for models that make their own inputs (random values could be
        invalid for them, e.g. boxes): the model's own inputs at the shapes of ``example`` from another seed and,
        for a dynamic export, at batch + 1 (and height/width x2 when the sampler takes a size).

        None (verify on random inputs, :func:`dcn_deploy.export`'s default, which also varies height/width) when
        the model makes no inputs, or when ``example`` is not what it makes (an --input-shape of another size).
        """
        if self.sampler is None or not example:
            return None
        first = tuple(example[0].shape)
        if self.sampler.takes_size:
            runs = [self.example_inputs([first], dtype, seed=1)]
            if dynamic and len(first) == 4:
                runs.append(self.example_inputs([(first[0] + 1, first[1], first[2] * 2, first[3] * 2)], dtype, seed=2))
            return runs
        batch = first[0] if first else 1
        own = self.sampler(batch, None, 1)
        if _shapes_of(own) != _shapes_of(example):
            return None
        runs = [_cast(own, dtype)]
        if dynamic and first and self.sampler.takes_batch:
            runs.append(_cast(self.sampler(batch + 1, None, 2), dtype))
        return runs

    def _check_program_shapes(self, shapes: Sequence[Tuple[int, ...]]) -> None:
        """A saved program runs only at the shapes it was exported with: an --input-shape outside them is bad
        input, named here (the exporter would write a file at the program's shapes, which then fails to run)."""
        problem = program_shape_mismatch(self.model, shapes)
        if problem is None:
            return
        accepted = program_input_shapes(self.model)
        fixed = all(isinstance(d, int) for shape in accepted for d in shape)
        given = " ".join(f"--input-shape {format_shape(s)}" for s in shapes)
        raise ValueError(f"{self.reference} was exported with {'fixed ' if fixed else ''}input shape"
                         f"{'s' if len(accepted) > 1 else ''} {', '.join(map(format_shape, accepted))}; {given} "
                         f"cannot change it ({problem}; a saved program keeps its shapes): re-export the program "
                         "with dynamic_shapes, or drop --input-shape")

    def _random(self, shapes: Sequence[Tuple[int, ...]], seed: int) -> Tuple[torch.Tensor, ...]:
        """Random normal tensors of ``shapes``; for a model with deformable RoI pooling layers, each (K, 5) input
        gets valid random boxes in the first image input instead (random numbers are no boxes: a batch index of
        -1 or 2, x2 < x1, which the RoI ops refuse)."""
        generator = torch.Generator().manual_seed(seed)
        tensors = [torch.randn(s, generator=generator) for s in shapes]
        is_roi = [len(s) == 2 and s[1] == 5 for s in shapes]
        image = box_image(shapes, is_roi) if any(is_roi) and _has_roi_pooling(self.model) else None
        if image is None:
            return tuple(tensors)
        rng = np.random.default_rng(seed)
        return tuple(torch.from_numpy(random_boxes(s, np.float32, image, rng)) if roi else t
                     for s, roi, t in zip(shapes, is_roi, tensors))

    def cast(self, dtype: Optional[torch.dtype]) -> "LoadedModel":
        """Cast the module's floating parameters and buffers to ``dtype`` (in place); None leaves it unchanged."""
        if dtype is None:
            return self
        if isinstance(self.model, torch.nn.Module):
            self.model.to(dtype)
            return self
        current = {t.dtype for t in self.model.state_dict.values() if t.is_floating_point()}
        if current and current != {dtype}:
            raise ValueError(f"{self.reference} is a saved torch.export program in {sorted(map(str, current))}; it cannot "
                             f"be cast to {dtype}: export it again in that dtype or drop --dtype")
        return self


def _has_roi_pooling(model) -> bool:
    from ..ops.roi_modules import DeformPSRoIPool, DeformRoIPool

    return isinstance(model, torch.nn.Module) and any(isinstance(m, (DeformRoIPool, DeformPSRoIPool))
                                                      for m in model.modules())


def _forward_arguments(model: torch.nn.Module) -> Tuple[List[str], List[str]]:
    """The names of ``model.forward``'s positional arguments, and those of them without a default."""
    import inspect

    params = [p for p in inspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [p.name for p in params], [p.name for p in params if p.default is p.empty]

"""Turn what a user has into a PyTorch model and example inputs for export.

A model reference is one of:

- ``path/to/file.py:factory`` — the file is imported and ``factory()`` (a function or class, no arguments)
  must return an ``nn.Module``; optionally a ``state_dict`` checkpoint (``weights``) is loaded into it;
- ``package.module:factory`` — the same with an importable module;
- ``path/to/program.pt2`` — a program saved with ``torch.export.save`` (it carries its weights and example
  inputs);
- a zoo name — ``dcn_deploy.models.zoo.get(name)``, an entry with ``.build()`` and ``.example_inputs(batch,
  size, seed)``; ``weights`` go through ``dcn_deploy.models.checkpoint.load_checkpoint`` (torchvision /
  mmdetection key names understood).

Example inputs come from ``--input-shape`` (random, seeded), or from the model itself: a zoo entry, a module
with an ``example_inputs`` method, or a .pt2 program's stored inputs. A module's ``example_inputs`` may take a
``batch`` (first positional argument), a ``size`` (height, width) and a ``seed``, each optional: its signature is
read once (:class:`Sampler`) and only the arguments it names are passed.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import logging
import re
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from ..io_utils import file_format

__all__ = ["LoadedModel", "ModelCodeError", "Sampler", "describe_exception", "load_model", "parse_input_shape",
           "program_input_shapes", "program_shape_mismatch", "unreadable_weights_reason", "DTYPES"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
_REFERENCE_FORMS = ("FILE.py:FACTORY, package.module:FACTORY, a torch.export program FILE.pt2, "
                    "or a zoo name (python -c 'from dcn_deploy.models import zoo; print(zoo.names())')")


@dataclass(frozen=True)
class Sampler:
    """A model's own input maker: ``sampler(batch, size, seed)`` -> tuple of tensors.

    ``takes_size``: it can make images of a given (height, width); otherwise ``size`` must be None and it makes
    its own size. ``takes_batch``: it can make a given batch size; otherwise ``batch`` is ignored.
    """

    make: Callable[[int, Optional[Tuple[int, int]], int], Tuple[torch.Tensor, ...]]
    takes_size: bool = True
    takes_batch: bool = True

    def __call__(self, batch: int, size: Optional[Tuple[int, int]], seed: int) -> Tuple[torch.Tensor, ...]:
        if size is not None and not self.takes_size:
            raise ValueError("this model's example_inputs takes no size")  # callers check takes_size first
        try:
            inputs = self.make(batch, size, seed)
        except Exception as exc:  # the model's own example_inputs (or a zoo sampler) raised
            raise ModelCodeError(f"the model's example_inputs raised {describe_exception(exc)}") from exc
        return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


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
                raise ValueError(f"{self.reference} makes its own inputs; --input-shape may give only the image shape "
                                 f"N x C x H x W (one 4-D shape), got {['x'.join(map(str, s)) for s in shapes]}")
            inputs = self.sampler(shapes[0][0], (shapes[0][2], shapes[0][3]), seed)
            if inputs[0].shape[1] != shapes[0][1]:
                raise ValueError(f"{self.reference} takes {inputs[0].shape[1]} input channels, --input-shape gives "
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
            raise ValueError(f"{self.reference} does not say what inputs it takes: give one --input-shape per "
                             "model input, e.g. --input-shape 1x3x224x224 (or give the module an "
                             "example_inputs(batch) method)")
        return _cast(inputs, dtype)

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
        from ..feeds import format_shape

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

    @staticmethod
    def _random(shapes: Sequence[Tuple[int, ...]], seed: int) -> Tuple[torch.Tensor, ...]:
        generator = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(s, generator=generator) for s in shapes)

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


def program_input_shapes(program: "torch.export.ExportedProgram") -> List[Tuple[object, ...]]:
    """The shapes a saved program's user inputs take: an int for a fixed size, the program's symbol (a sympy
    expression, e.g. ``s0``) for a dynamic one; ``()`` for an input that is no tensor."""
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    shapes = []
    for name in program.graph_signature.user_inputs:
        value = placeholders[name].meta.get("val") if name in placeholders else None
        dims = getattr(value, "shape", ())
        shapes.append(tuple(d if isinstance(d, int) else d.node.expr for d in dims))
    return shapes


def program_shape_mismatch(program: "torch.export.ExportedProgram",
                           shapes: Sequence[Sequence[int]]) -> Optional[str]:
    """Why inputs of ``shapes`` do not fit the saved ``program`` (e.g. "input 1, dimension 0 is fixed at 1"),
    or None when they fit: fixed sizes must match, a dynamic one lie in its range and equal every other
    dimension with the same symbol. Sizes derived from a symbol (``2*s0``) are left to the program's own check."""
    accepted = program_input_shapes(program)
    if len(shapes) != len(accepted):
        return f"it takes {len(accepted)} input{'s' if len(accepted) != 1 else ''}, {len(shapes)} given"
    seen = {}
    for index, (want, got) in enumerate(zip(accepted, shapes), start=1):
        if len(want) != len(got):
            return f"input {index} has {len(want)} dimensions, {len(got)} given"
        for axis, (dim, size) in enumerate(zip(want, got)):
            where = f"input {index}, dimension {axis}"
            if isinstance(dim, int):
                if dim != size:
                    return f"{where} is fixed at {dim}"
                continue
            bounds = program.range_constraints.get(dim)
            if bounds is not None and not bounds.lower <= size <= bounds.upper:
                upper = str(bounds.upper)  # "int_oo" (torch's integer infinity) without a maximum
                return f"{where} ranges over {bounds.lower}..{upper if upper.isdigit() else '(no limit)'}"
            if getattr(dim, "is_Symbol", False) and seen.setdefault(dim, (size, where))[0] != size:
                return f"{where} must equal {seen[dim][1]} ({seen[dim][0]})"
    return None


def parse_input_shape(text: str) -> Tuple[int, ...]:
    """``"1x3x64x64"`` -> ``(1, 3, 64, 64)``; every size must be a positive integer."""
    from ..feeds import FeedError, parse_shape

    try:
        shape = parse_shape(str(text))
    except FeedError as exc:
        raise ValueError(f"--input-shape: {exc}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"--input-shape {text!r}: every size must be >= 1, e.g. 1x3x64x64")
    return shape


def load_model(reference: Union[str, Path], weights: Optional[Union[str, Path]] = None) -> LoadedModel:
    """Resolve ``reference`` (see the module docstring) into a :class:`LoadedModel` in eval mode.

    Raises FileNotFoundError for a missing file, ValueError/TypeError for a reference that does not resolve
    to a model (the message lists the accepted forms), and errors raised by the user's own code unchanged.
    """
    text = str(reference)
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"--weights {weights}: no such file; give a state_dict saved with torch.save")
    if text.endswith(".pt2"):
        if weights is not None:
            raise ValueError(f"{text} is a torch.export program that carries its own weights; drop --weights")
        return _load_program(Path(text))
    factory_ref, sep, factory_name = text.rpartition(":")
    if sep and factory_ref and not _is_windows_drive(text):
        if factory_ref.endswith(".py") or "/" in factory_ref or "\\" in factory_ref:
            owner, kind = _import_file(Path(factory_ref)), "file"
        else:
            owner, kind = _import_module(factory_ref), "module"
        model = _call_factory(owner, factory_name, text)
        if weights is not None:
            _load_state_dict(model, Path(weights), text)
        sampler = _module_sampler(model)
        return LoadedModel(model.eval(), text, kind, sampler)
    if text.endswith(".py"):
        raise ValueError(f"{text}: name the function or class that builds the model, e.g. {text}:build_model")
    if "/" in text or "\\" in text or Path(text).suffix in (".pt", ".pth", ".onnx", ".ckpt"):
        if not Path(text).exists():
            raise FileNotFoundError(f"model {text}: no such file; give {_REFERENCE_FORMS}")
        raise ValueError(f"model {text}: not a model reference; give {_REFERENCE_FORMS} "
                         "(a state_dict goes to --weights, next to the FILE.py:FACTORY that builds the model)")
    return _load_zoo(text, weights)


def _is_windows_drive(text: str) -> bool:
    return len(text) > 2 and text[1] == ":" and text[0].isalpha() and text[2] in "\\/"


def _load_program(path: Path) -> LoadedModel:
    if not path.is_file():
        raise FileNotFoundError(f"torch.export program {path}: no such file")
    from dcn_deploy.ops import register_torch_ops

    register_torch_ops()  # the program may call torch.ops.dcn_deploy.*, which must exist before it loads
    with _held_log("torch.export") as logged:
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # torch raises several types for a bad archive
            cause = _load_failure(exc, logged)
            raise ValueError(f"{path} is not a program saved with torch.export.save: "
                             f"{describe_exception(cause, path)}") from cause  # path: no torch/zipfile line
    return LoadedModel(program, str(path), "pt2")


class _Records(logging.Handler):
    """Keeps the log records it is given, in a list, instead of printing them."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _held_log(name: str):
    """Hold back what the logger ``name`` logs (torch.export.load logs a failed archive's traceback at WARNING
    before it raises): the caller reports the failure in one line. Yields the held records; the logger's
    handlers and propagation are restored afterwards."""
    logger = logging.getLogger(name)
    held = _Records()
    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers[:] = [held]
    logger.propagate = False
    try:
        yield held.records
    finally:
        logger.handlers[:] = handlers
        logger.propagate = propagate


def _load_failure(raised: BaseException, records: Sequence[logging.LogRecord]) -> BaseException:
    """The exception that says why torch.export.load failed: the one it raised, unless that only points at
    "the warnings above" (held back by :func:`_held_log`): then the first cause of the one it logged."""
    logged = next((r.exc_info[1] for r in reversed(records) if r.exc_info and r.exc_info[1] is not None), None)
    if logged is None or "warnings above" not in str(raised):
        return raised
    while logged.__cause__ is not None:
        logged = logged.__cause__
    return logged


class ModelCodeError(ValueError):
    """The user's model code (its file or module, or the factory) raised while being loaded: a bad --model for the
    CLI (exit 2), with the reference, the exception and where in the user's file it was raised."""


def describe_exception(exc: BaseException, user_file=None) -> str:
    """``RuntimeError: boom (at my_model.py:2)``: an exception from the user's code, in one line, and where it was
    raised: the last line of ``user_file`` on its way, or without one the last line outside the installed
    packages and dcn_deploy (a SyntaxError names its own file and line)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if isinstance(exc, SyntaxError):
        return text
    if user_file is not None:
        target = Path(user_file).resolve()
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == target]
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if "site-packages" not in f.filename and "/dcn_deploy/" not in f.filename.replace("\\", "/")]
    return text + (f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else "")


def _import_file(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"model file {path}: no such file")
    module_name = f"_dcn_deploy_user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.parent.resolve()))  # the file may import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code may raise anything
        sys.modules.pop(module_name, None)
        raise ModelCodeError(f"importing {path} raised {describe_exception(exc, path)}; fix {path} (or the module "
                             "it imports)") from exc
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    finally:
        sys.path.remove(str(path.parent.resolve()))
    return module


def _import_module(name: str):
    try:
        return importlib.import_module(name)
    except Exception as exc:  # the module's own code raised, or the module itself does not exist
        if isinstance(exc, ModuleNotFoundError) and exc.name and name.startswith(exc.name):
            raise ValueError(f"cannot import module {name!r} (no module {exc.name!r}); give {_REFERENCE_FORMS}") from None
        raise ModelCodeError(f"importing module {name!r} raised {describe_exception(exc)}") from exc


def _call_factory(owner, factory_name: str, reference: str) -> torch.nn.Module:
    factory = getattr(owner, factory_name, None) if factory_name.isidentifier() else None
    if factory is None or not callable(factory):
        here = getattr(owner, "__file__", None) or owner.__name__
        candidates = sorted(n for n, v in vars(owner).items()
                            if not n.startswith("_") and callable(v) and getattr(v, "__module__", None) == owner.__name__)
        raise ValueError(f"{reference}: {here} defines no function or class {factory_name!r}"
                         + (f"; it defines {', '.join(candidates)}" if candidates else ""))
    try:
        model = factory()
    except Exception as exc:  # the user's code may raise anything
        raise ModelCodeError(f"{reference} raised {describe_exception(exc, getattr(owner, '__file__', None))}; "
                             "the factory is called with no arguments and must return the torch.nn.Module") from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelCodeError(f"{reference} returned a {type(model).__name__}, not a torch.nn.Module; the factory "
                             "must build and return the model (called with no arguments)")
    return model


def _module_sampler(model: torch.nn.Module) -> Optional[Sampler]:
    """The module's ``example_inputs`` method as a :class:`Sampler`; its signature is read here, once."""
    method = getattr(model, "example_inputs", None)
    if not callable(method):
        return None
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):  # no readable signature (e.g. a builtin): assume example_inputs(batch)
        params = None
    if params is None:
        batch_by_position, takes_batch, takes_size, takes_seed = True, True, False, False
    else:
        positional = [n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        batch_by_position = bool(positional) and positional[0] not in ("size", "seed")
        takes_batch = batch_by_position or "batch" in params
        takes_size, takes_seed = "size" in params, "seed" in params

    def make(batch: int, size: Optional[Tuple[int, int]], seed: int):
        kwargs = {}
        if takes_size and size is not None:
            kwargs["size"] = size
        if takes_seed:
            kwargs["seed"] = seed
        if batch_by_position:
            return method(batch, **kwargs)
        if takes_batch:
            kwargs["batch"] = batch
        return method(**kwargs)

    return Sampler(make, takes_size=takes_size, takes_batch=takes_batch)


def unreadable_weights_reason(path: Path, exc: BaseException, trusted_argument: Optional[str] = None) -> str:
    """Why ``torch.load(path, weights_only=True)`` raised ``exc``, in words, and what to do: the one explanation for
    ``--weights`` of every model (FILE.py:FACTORY here, zoo models in :mod:`dcn_deploy.models.checkpoint`).

    torch's own texts can be a bare number (a KeyError from its unpickler on a text file), empty (EOFError), or a
    page on ``weights_only`` whose advice only works in Python. ``trusted_argument``: the library argument that
    allows a full unpickle (``"trusted=True"``), named in the advice; the CLI has none on purpose (a shell option
    that runs a file's pickled code is too easy to pass by habit), so its way is to re-save the tensors once.
    """
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        return "the file is empty; give the file written by torch.save(model.state_dict(), PATH)"
    if file_format(path) not in ("zip", "pickle"):  # what torch.save writes (a zip since torch 1.6, else a pickle)
        return (f"not a file written by torch.save (it starts with {head!r}, neither a zip archive nor a pickle); "
                "give the file written by torch.save(model.state_dict(), PATH)")
    refused = _refused_global(exc)
    if refused is None:
        return f"{describe_exception(exc)}; give the file written by torch.save(model.state_dict(), PATH)"
    saved = path.with_name(f"{path.stem}_state_dict.pt")
    if _pickles_a_module(path) or refused.startswith("torch.nn.modules."):
        return (f"it holds a pickled module (torch.save(model, PATH), with classes such as {refused}), not a "
                "state_dict. Where the model's class can be imported, and only if you trust the file (loading it "
                f"runs its pickled code), save its weights: torch.save(torch.load({str(path)!r}, "
                f"weights_only=False).state_dict(), {str(saved)!r}), then give {saved}")
    allow = f"pass {trusted_argument}, or (CLI: --weights never runs pickled code) " if trusted_argument else ""
    return (f"it stores Python objects besides tensors ({refused}; e.g. the 'meta' of an mmdetection checkpoint), "
            "which torch.load(weights_only=True) does not unpickle because unpickling can run code. If you trust the "
            f"file, {allow}re-save its tensors once as a plain state_dict: python -c \"import torch; from "
            "dcn_deploy.models.checkpoint import read_state_dict; "
            f"torch.save(read_state_dict({str(path)!r}, trusted=True), {str(saved)!r})\", then give {saved}")


_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _refused_global(exc: BaseException) -> Optional[str]:
    """The class or function (``numpy._core.multiarray._reconstruct``) that torch.load's weights-only unpickler
    refused, or None when ``exc`` is another failure."""
    match = _REFUSED_GLOBAL.search(str(exc))
    return match.group(1) if match else None


def _pickles_a_module(path: Path) -> bool:
    """Whether the torch.save file at ``path`` names a ``torch.nn`` module class in its pickle (a whole model saved
    with torch.save(model, PATH)). The opcodes are read, never run; False when the file cannot be read so."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
                data = archive.read(name) if name is not None else b""
        else:
            data = path.read_bytes()
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL" and str(arg).startswith("torch.nn.modules."):
                return True
    except Exception:  # noqa: BLE001 - a damaged pickle: fall back to the refused class's name
        return False
    return False


def _state_dict_from(path: Path) -> Mapping[str, torch.Tensor]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise ValueError(f"--weights {path} cannot be read as a state_dict saved with torch.save: "
                         f"{unreadable_weights_reason(path, exc)}") from exc
    if isinstance(state, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping):
        raise ValueError(f"--weights {path} holds a {type(state).__name__}, not a state_dict; save model.state_dict()")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _load_state_dict(model: torch.nn.Module, path: Path, reference: str) -> None:
    """Load the state_dict in ``path`` into ``model`` exactly: a missing, unexpected or differently shaped tensor
    is a ValueError naming a few of each (load_state_dict(strict=False) still raises on shapes, in torch's words)."""
    from ..feeds import format_shape

    state = _state_dict_from(path)
    own = model.state_dict()
    resized = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
               if k in own and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(own[k].shape)]
    skipped = {k for k, _, _ in resized}
    result = model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    problems = []
    if resized:
        shown = ", ".join(f"{k} (checkpoint {format_shape(a)} vs model {format_shape(b)})" for k, a, b in resized[:3])
        problems.append(f"{len(resized)} with another shape (e.g. {shown})")
    missing = [k for k in result.missing_keys if k not in skipped]
    if missing:
        problems.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
    if result.unexpected_keys:
        problems.append(f"unexpected {len(result.unexpected_keys)} (e.g. {', '.join(result.unexpected_keys[:3])})")
    if problems:
        raise ValueError(f"--weights {path} does not fit the model built by {reference}: " + "; ".join(problems)
                         + ". Check that the factory builds the architecture the checkpoint was saved from")


def _load_zoo(name: str, weights: Optional[Union[str, Path]]) -> LoadedModel:
    try:
        zoo = importlib.import_module("dcn_deploy.models.zoo")
    except ModuleNotFoundError as exc:
        if exc.name not in ("dcn_deploy.models", "dcn_deploy.models.zoo"):
            raise
        raise ValueError(f"{name!r} is not a file reference and this installation has no model zoo "
                         f"(dcn_deploy.models.zoo); give {_REFERENCE_FORMS}") from None
    try:
        entry = zoo.get(name)
    except KeyError as exc:
        message = exc.args[0] if exc.args else f"no zoo model named {name!r}"
        raise ValueError(f"{message} (or give FILE.py:FACTORY or a .pt2 file)") from None
    model = entry.build()
    if weights is not None:
        from dcn_deploy.models.checkpoint import load_checkpoint

        # Not strict: ImageNet backbone weights for a segmentation/detection model leave its new head at its
        # initialisation, which is what the user asked for; the report says what was and was not loaded.
        print(load_checkpoint(model, weights, strict=False), file=sys.stderr)

    def make(batch: int, size: Optional[Tuple[int, int]], seed: int):
        return tuple(entry.example_inputs(batch=batch, size=size, seed=seed))

    return LoadedModel(model.eval(), name, "zoo", Sampler(make), tuple(entry.input_names), tuple(entry.output_names))

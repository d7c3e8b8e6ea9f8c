"""Turn what a user has into a PyTorch model for export: :func:`load_model` resolves a model reference.

A model reference is one of:

- ``path/to/file.py:factory`` — the file is imported and ``factory()`` (a function or class, no arguments)
  must return an ``nn.Module``; optionally a ``state_dict`` checkpoint (``weights``) is loaded into it
  (:mod:`dcn_deploy.onnx.weights_loading`);
- ``package.module:factory`` — the same with an importable module;
- ``path/to/program.pt2`` — a program saved with ``torch.export.save`` (it carries its weights and example
  inputs);
- a zoo name — ``dcn_deploy.models.zoo.get(name)``, an entry with ``.build()`` and ``.example_inputs(batch,
  size, seed)``; ``weights`` go through ``dcn_deploy.models.checkpoint.load_checkpoint`` (torchvision /
  mmdetection key names understood).

The result is a :class:`dcn_deploy.onnx.loaded_model.LoadedModel`, which makes the example inputs: from
``--input-shape`` (random, seeded), or from the model itself: a zoo entry, a module with an ``example_inputs``
method (:mod:`dcn_deploy.onnx.example_samplers`), or a .pt2 program's stored inputs. This module's ``__all__``
also names what those modules define, so one import serves a caller.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import sys
import traceback
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch

from ..wording import argument, for_reader
from .example_samplers import Sampler, module_sampler, zoo_sampler
from .loaded_model import DTYPES, LoadedModel, parse_input_shape
from .program_shapes import program_input_shapes, program_shape_mismatch
from .user_code_errors import ModelCodeError, describe_exception
from .weights_loading import load_weights, shape_mismatches, unreadable_weights_reason

__all__ = ["LoadedModel", "ModelCodeError", "Sampler", "describe_exception", "load_model", "parse_input_shape",
           "program_input_shapes", "program_shape_mismatch", "unreadable_weights_reason", "DTYPES"]

_FILE_FORMS = "FILE.py:FACTORY, package.module:FACTORY, or a torch.export program FILE.pt2"
_REFERENCE_FORMS = ("FILE.py:FACTORY, package.module:FACTORY, a torch.export program FILE.pt2, "
                    "or a zoo name (list them: dcn-deploy zoo list)")

# Packages whose deformable layers a model may be written with; a model file importing one of them needs it
# installed even though its layers are converted to ours (:func:`_with_our_layers`).
_LAYER_PACKAGES = ("mmcv", "mmdet", "mmengine", "torchvision")


def load_model(reference: Union[str, Path], weights: Optional[Union[str, Path]] = None) -> LoadedModel:
    """Resolve ``reference`` (see the module docstring) into a :class:`LoadedModel` in eval mode.

    Raises FileNotFoundError for a missing file, ValueError/TypeError for a reference that does not resolve
    to a model (the message lists the accepted forms), and errors raised by the user's own code unchanged.
    """
    text = str(reference)
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"{argument('weights', '--weights')} {weights}: no such file; give a state_dict "
                                "saved with torch.save")
    if text.endswith(".pt2"):
        if weights is not None:
            raise ValueError(f"{text} is a torch.export program that carries its own weights; drop "
                             f"{argument('weights', '--weights')}")
        return _load_program(Path(text))
    factory_ref, sep, factory_name = text.rpartition(":")
    if sep and factory_ref and not _is_windows_drive(text):
        if _names_file(factory_ref):
            owner, kind = _import_file(Path(factory_ref)), "file"
        else:
            owner, kind = _import_module(factory_ref), "module"
        model = _call_factory(owner, factory_name, text)
        if weights is not None:
            load_weights(model, Path(weights), text)
        model, converted = _with_our_layers(model)
        sampler = module_sampler(model)
        return LoadedModel(model.eval(), text, kind, sampler, converted=converted)
    if text.endswith(".py"):
        raise ValueError(f"{text}: name the function or class that builds the model, e.g. {text}:build_model")
    if ("/" in text or "\\" in text or Path(text).suffix.lower() in (".pt", ".pth", ".onnx", ".ckpt")
            or (Path(text).suffix and Path(text).is_file())):  # any file, e.g. notes.txt: no zoo name has a suffix
        if not Path(text).exists():
            raise FileNotFoundError(f"model {text}: no such file; give {_REFERENCE_FORMS}")
        if Path(text).suffix.lower() == ".onnx":
            raise ValueError(f"model {text}: an ONNX file, where the PyTorch model is wanted: give "
                             f"{_REFERENCE_FORMS} (an ONNX file is the MODEL of inspect, verify, bench, infer "
                             "and build)")
        raise ValueError(f"model {text}: not a model reference; give {_REFERENCE_FORMS} "
                         "(a state_dict goes to --weights, next to the FILE.py:FACTORY that builds the model)")
    return _load_zoo(text, weights)


def reference_file(reference: Union[str, Path]) -> Optional[Path]:
    """The file :func:`load_model` reads for ``reference``: FILE.pt2, or FILE of FILE.py:FACTORY; None for
    package.module:FACTORY and zoo names (its weights file is not counted)."""
    text = str(reference)
    if text.endswith(".pt2"):
        return Path(text)
    factory_ref, sep, _ = text.rpartition(":")
    if sep and factory_ref and not _is_windows_drive(text) and _names_file(factory_ref):
        return Path(factory_ref)
    return None


def _names_file(factory_ref: str) -> bool:
    """Whether the part before ``:FACTORY`` is a file (FILE.py, a path) rather than an importable module."""
    return factory_ref.endswith(".py") or "/" in factory_ref or "\\" in factory_ref


def _with_our_layers(model: torch.nn.Module):
    """``model`` with its torchvision/mmcv deformable layers swapped for ours (:func:`dcn_deploy.convert_modules`),
    so that it exports; the :class:`ConvertedModules` report lists what was swapped and what was left, and the
    caller shows it (convert_modules' own warning about the layers left is not repeated)."""
    from ..ops.convert import convert_modules

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="convert_modules left these", category=UserWarning)
        return convert_modules(model)


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
            if _is_torch_save_archive(path):
                raise ValueError(f"{path} was written by torch.save (a state_dict or a pickled model), not by "
                                 "torch.export.save: give the model's code and the weights, as FILE.py:FACTORY "
                                 f"--weights {path} (or a zoo name --weights {path})") from exc
            cause = _load_failure(exc, logged)
            raise ValueError(f"{path} is not a program saved with torch.export.save: "
                             f"{describe_exception(cause, path)}") from cause  # path: no torch/zipfile line
    return LoadedModel(program, str(path), "pt2")


def _is_torch_save_archive(path: Path) -> bool:
    """Whether ``path`` is torch.save's zip archive (``<name>/data.pkl`` and no ``archive_format``, which
    torch.export.save's archives hold)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return (any(n.endswith("/data.pkl") for n in names)
            and not any(n.endswith("/archive_format") for n in names))


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
        raise ModelCodeError(f"importing {path} raised {describe_exception(exc, path)}; "
                             + (_missing_layer_package_hint(exc) or f"fix {path} (or the module it imports)")) from exc
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
        hint = _missing_layer_package_hint(exc)
        if isinstance(exc, ModuleNotFoundError) and exc.name and name.startswith(exc.name):
            raise ValueError(f"cannot import module {name!r} (no module {exc.name!r}); "
                             + (hint or f"give {_REFERENCE_FORMS}")) from None
        raise ModelCodeError(f"importing module {name!r} raised {describe_exception(exc)}"
                             + (f"; {hint}" if hint else "")) from exc


def _missing_layer_package_hint(exc: BaseException) -> str:
    """For a model's import that failed on a missing or broken mmcv/mmdet/mmengine/torchvision: the two ways out
    (that package's environment, or our layers of the same names); "" for any other failure."""
    package = _failing_layer_package(exc)
    if package is None:
        return ""
    ours = ("or, if the model needs {package} only for its deformable layers, build it with dcn_deploy's layers of the "
            "same names (same arguments and state_dict keys): dcn_deploy.DeformConv2d, DeformConv2dPack, "
            "ModulatedDeformConv2dPack, dcn_deploy.ops.roi_modules.*").format(package=package)
    converted = "(deformable layers of torchvision and mmcv are then converted to dcn_deploy's automatically)"
    if isinstance(exc, ModuleNotFoundError) and (exc.name == package or _package_spec(package) is None):
        where = for_reader(f"load the model in the Python environment that has {package}",
                           f"run dcn-deploy in the environment that has {package}")
        return f"{package} is not installed here: {where} {converted}; {ours}"
    # Installed, but its own import failed: mmcv without its compiled ops (No module named 'mmcv._ext'), or a
    # torchvision built for another torch ("operator torchvision::nms does not exist").
    return (f"{package} is installed here but fails to import, typically a build without its compiled ops or one made "
            f"for another torch than this one ({torch.__version__}): install the {package} built for this torch "
            f"{converted}; {ours}")


def _failing_layer_package(exc: BaseException) -> Optional[str]:
    """The layer package (:data:`_LAYER_PACKAGES`) whose import raised ``exc``: the missing module's package, or
    the package whose own module-level code was running (one of its modules being imported); None for other
    failures, such as a call into the package from the model's code that raised."""
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] in _LAYER_PACKAGES:
        return exc.name.split(".")[0]
    files = [frame.filename for frame in traceback.extract_tb(exc.__traceback__) if frame.name == "<module>"]
    for package in _LAYER_PACKAGES:
        spec = _package_spec(package)
        places = [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []
        if any(Path(f).resolve().is_relative_to(place) for f in files for place in places):
            return package
    return None


def _package_spec(package: str):
    """importlib's spec of a top-level package, found without importing it; None where it is not installed."""
    try:
        return importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a module left in sys.modules without a spec
        return None


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
        raise ModelCodeError(f"{reference} returned {_a(type(model).__name__)}, not a torch.nn.Module; the factory "
                             "must build and return the model (called with no arguments)")
    return model


def _load_zoo(name: str, weights: Optional[Union[str, Path]]) -> LoadedModel:
    try:
        zoo = importlib.import_module("dcn_deploy.models.zoo")
    except ModuleNotFoundError as exc:
        if exc.name not in ("dcn_deploy.models", "dcn_deploy.models.zoo"):
            raise
        raise ValueError(f"{name!r} is not a file reference, and this installation has no model zoo: the zoo "
                         "(dcn_deploy.models, the repository's models/ folder) is installed by `pip install -e .` "
                         "from a checkout; running from a source tree with PYTHONPATH alone lacks it. Install it "
                         f"so, or give {_FILE_FORMS}") from None
    try:
        entry = zoo.get(name)
    except KeyError as exc:
        message = exc.args[0] if exc.args else f"no zoo model named {name!r}"
        raise ValueError(f"{message} (or give FILE.py:FACTORY or a .pt2 file)") from None
    model = entry.build()
    if weights is not None:
        from dcn_deploy.models.checkpoint import IncompleteCheckpointError, load_checkpoint

        # Not strict: ImageNet backbone weights for a segmentation/detection model leave its new head at its
        # initialisation, which is what the user asked for; the report says what was and was not loaded. But a
        # checkpoint that misses backbone tensors is of another architecture: exporting it would give a file of
        # random (even NaN) outputs that "verifies" against an equally random PyTorch model.
        try:
            report = load_checkpoint(model, weights, strict=False, require_backbone=True)
            if report.mismatched:  # only the head's may differ here: another class count, or refused
                model, report = _rebuild_for_checkpoint_classes(entry, model, weights, report)
        except IncompleteCheckpointError as exc:
            required = exc.report.missing_required
            raise ValueError(
                f"{argument('weights', '--weights')} {weights} does not fit zoo model {name}: "
                f"{len(exc.report.loaded)} tensors loaded, {len(required)} missing or of another shape that a "
                f"checkpoint of {name} holds (e.g. {', '.join(required[:3])}); they "
                "would keep their random initial values and the outputs would mean nothing. The checkpoint belongs "
                f"to another architecture: check the zoo name (dcn-deploy zoo list) or give the checkpoint "
                f"saved from {name}") from None
        print(report, file=sys.stderr)
    return LoadedModel(model.eval(), name, "zoo", zoo_sampler(entry), tuple(entry.input_names),
                       tuple(entry.output_names))


def _rebuild_for_checkpoint_classes(entry, model: torch.nn.Module, weights: Union[str, Path], report):
    """The zoo model ``entry`` built with the class count of the checkpoint's head (a fine-tuned checkpoint: a
    10-class ``fc`` against the zoo's 1000), loaded again; a head that differs in another way is refused, as its
    tensors would keep their random values."""
    from dcn_deploy.models.checkpoint import head_class_count, load_checkpoint

    classes = head_class_count(report, model.num_classes)
    if classes is None:
        raise ValueError(f"{argument('weights', '--weights')} {weights} does not fit zoo model {entry.name}'s head: "
                         f"{shape_mismatches(report.mismatched)}; those tensors would keep their random initial "
                         "values and the outputs would mean nothing, and the shapes are not those of another class "
                         "count. Give the checkpoint "
                         f"saved from {entry.name}, or export your own model as FILE.py:FACTORY")
    print(f"note: the checkpoint's head is for {classes} classes, not {model.num_classes}: built {entry.name} with "
          f"num_classes={classes}", file=sys.stderr)
    model = entry.build(num_classes=classes)
    return model, load_checkpoint(model, weights, strict=False, require_backbone=True)


def _a(noun: str) -> str:
    """``noun`` with its indefinite article: "an int", "a tuple"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"

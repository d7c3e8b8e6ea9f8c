"""A model's own input makers (:class:`Sampler`): ``sampler(batch, size, seed)`` -> tuple of tensors.

:func:`module_sampler` wraps a module's ``example_inputs`` method, which may take a ``batch`` (first positional
argument), a ``size`` (height, width) and a ``seed``, each optional: its signature is read once and only the
arguments it names are passed. :func:`zoo_sampler` wraps a zoo entry's ``example_inputs(batch=, size=, seed=)``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from .user_code_errors import ModelCodeError, describe_exception


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


def module_sampler(model: torch.nn.Module) -> Optional[Sampler]:
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


def zoo_sampler(entry) -> Sampler:
    """A zoo entry's ``example_inputs(batch=, size=, seed=)`` as a :class:`Sampler` (it takes a size and a batch)."""

    def make(batch: int, size: Optional[Tuple[int, int]], seed: int):
        return tuple(entry.example_inputs(batch=batch, size=size, seed=seed))

    return Sampler(make)

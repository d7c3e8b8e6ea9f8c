"""Lazy attributes for packages whose names would otherwise import torch at ``import dcn_deploy``."""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Tuple


def lazy_attributes(package: str, table: Dict[str, str], namespace: dict) -> Tuple[Callable, Callable]:
    """Return ``(__getattr__, __dir__)`` for a package: each name in ``table`` is imported from its module on
    first use and then cached in ``namespace`` (the package's globals)."""

    def __getattr__(name: str):
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> List[str]:
        return sorted(set(table) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__

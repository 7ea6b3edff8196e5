"""Lazy exports: a package's public names imported from their modules on first use, so that importing the package
(and its torch-free parts, such as ONNX inference) does not import torch."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package`` that imports each name of ``exports`` (name -> module, absolute or
    relative to ``package``) from its module on first use, then keeps it in the package."""
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)  # later lookups find it without calling __getattr__
        return value

    return __getattr__

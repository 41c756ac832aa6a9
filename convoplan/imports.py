"""Plugging in by import path: `package.module:Name` -> the object. No registry, just Python's import system."""

from __future__ import annotations

import importlib

__all__ = ["import_object"]


def import_object(spec: str) -> object:
    """Import `package.module:Name` (or `package.module.Name`) and return the named object."""
    module_name, sep, attribute = spec.partition(":")
    if not sep:
        module_name, _, attribute = spec.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"{spec!r}: expected an import path like 'my_pkg.module:MyClass'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{spec!r}: cannot import module {module_name!r} ({error})") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"{spec!r}: module {module_name!r} has no attribute {attribute!r}") from None

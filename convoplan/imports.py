"""Plugging in by import path: `package.module:Name` -> the object. No registry, just Python's import system.

A plug-in module is found where `python -m convoplan.cli` would find it: on sys.path, and in the working directory
(the `convoplan` console script does not put it on sys.path by itself; it is searched after the installed packages,
so a local folder never shadows one of them).
"""

from __future__ import annotations

import importlib
import os
import sys

__all__ = ["import_object"]


def import_object(spec: str) -> object:
    """Import `package.module:Name` (or `package.module.Name`) and return the named object."""
    module_name, sep, attribute = spec.partition(":")
    if not sep:
        module_name, _, attribute = spec.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"{spec!r}: expected an import path like 'my_pkg.module:MyClass'")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{spec!r}: cannot import module {module_name!r} ({error})") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"{spec!r}: module {module_name!r} has no attribute {attribute!r}") from None

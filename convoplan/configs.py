"""Config dataclasses on the command line: `--set field.subfield=value` overrides, and a listing of every field.

Each trainable thing has one dataclass config whose fields carry a docstring and the default; rather than restate
them as CLI options, commands accept `--set q.gamma=0.95` (parsed by the field's type) and `--show-config` prints
every field path with its value and docstring, read from the source.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import textwrap
import typing
from functools import cache
from typing import Any, TypeVar

__all__ = ["apply_overrides", "describe"]

T = TypeVar("T")


@cache
def _field_docs(cls: type[Any]) -> dict[str, str]:
    """Attribute docstrings (a string literal right after a field) of a dataclass, from its source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def describe(config: Any, prefix: str = "") -> list[tuple[str, str, str]]:
    """(field path, current value as JSON, docstring) for every leaf field of a (nested) dataclass config."""
    rows = []
    docs = _field_docs(type(config))  # type: ignore[arg-type]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            rows.extend(describe(value, f"{prefix}{f.name}."))
        else:
            rows.append((f"{prefix}{f.name}", json.dumps(value), docs.get(f.name, "")))
    return rows


def _parse(raw: str, annotation: Any, path: str) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        annotation = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        if raw not in [str(a) for a in args]:
            raise ValueError(f"{path}: expected one of {', '.join(map(str, args))}, got {raw!r}")
        return next(a for a in args if str(a) == raw)
    if annotation is bool:
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{path}: expected true or false, got {raw!r}")
        return raw.lower() in ("true", "1", "yes")
    if origin in (tuple, list):
        return origin(_parse(part.strip(), args[0], path) for part in raw.split(",") if part.strip())
    try:
        return annotation(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: cannot read {raw!r} as {getattr(annotation, '__name__', annotation)}") from None


def apply_overrides(config: T, overrides: list[str]) -> T:
    """A copy of `config` with each `path=value` applied (dotted paths into nested dataclasses)."""
    for override in overrides:
        path, sep, raw = override.partition("=")
        if not sep:
            raise ValueError(f"--set {override!r}: expected field=value, e.g. q.gamma=0.95")
        config = _set(config, path.strip().split("."), raw.strip(), path.strip())
    return config


def _set(config: Any, parts: list[str], raw: str, path: str) -> Any:
    hints = typing.get_type_hints(type(config))
    name = parts[0]
    if name not in {f.name for f in dataclasses.fields(config)}:
        known = ", ".join(row[0] for row in describe(config))
        raise ValueError(f"--set {path}: no field {name!r} here; known fields: {known}")
    if len(parts) > 1:
        return dataclasses.replace(config, **{name: _set(getattr(config, name), parts[1:], raw, path)})
    return dataclasses.replace(config, **{name: _parse(raw, hints[name], path)})

"""Config dataclasses on the command line: `--set field.subfield=value` overrides, and a listing of every field.

Each trainable thing has one dataclass config whose fields carry a docstring and the default; rather than restate
them as CLI options, commands accept `--set q.gamma=0.95` (parsed by the field's type) and `--show-config` prints
every field path with its value and docstring, read from the source. A saved model's config comes back from its
JSON with `config_from_dict`, which checks every value against the field's type.
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

__all__ = ["apply_overrides", "config_from_dict", "describe"]

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
            raise ValueError(f"--set {override!r}: expected field=value (the fields: --show-config)")
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


def config_from_dict(cls: type[T], data: Any, where: str = "config", name: str = "") -> T:
    """The dataclass `cls` from its `asdict` form as JSON gives it back (tuples as lists), every value checked
    against its field's type; fields left out keep their defaults. ValueError naming `where` (the file) and the
    field, under `name` where the config sits in the file: "config.json: network.hidden: expected an integer,
    got \"200\""."""
    return typing.cast(T, _convert(data, cls, where, name))


def _convert(value: Any, annotation: Any, where: str, path: str) -> Any:
    def wrong(expected: str) -> ValueError:
        return ValueError(f"{where}: {path or 'config'}: expected {expected}, got {json.dumps(value)[:60]}")

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, dict):
            raise wrong("an object")
        hints = typing.get_type_hints(annotation)
        names = {f.name for f in dataclasses.fields(annotation) if f.init}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"{where}: {f'{path}.' if path else ''}{unknown[0]}: no such field")
        fields = {
            name: _convert(v, hints[name], where, f"{path}.{name}" if path else name) for name, v in value.items()
        }
        return annotation(**fields)
    if annotation is Any:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, where, path)
            except ValueError:
                continue
        raise wrong(" or ".join(getattr(a, "__name__", str(a)) for a in args))
    if origin is typing.Literal:
        if value not in args:
            raise wrong("one of " + ", ".join(json.dumps(a) for a in args))
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise wrong("a list")
        items = [_convert(v, args[0], where, f"{path}[{i}]") for i, v in enumerate(value)]
        return origin(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong("an object")
        return {k: _convert(v, args[1], where, f"{path}.{k}") for k, v in value.items()}
    if annotation is bool:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong("a number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    raise TypeError(f"config_from_dict cannot read a field of type {annotation!r} ({path})")

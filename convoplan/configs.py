"""Config dataclasses on the command line: `--set field.subfield=value` overrides, and a listing of every field.

Each trainable thing has one dataclass config whose fields carry a docstring and the default; rather than restate
them as CLI options, commands accept `--set q.gamma=0.95` (parsed by the field's type) and `--show-config` prints
every field path with its value, range and docstring, read from the source. A saved model's config comes back from
its JSON with `config_from_dict`, which checks every value against the field's type.

Every numeric field declares its valid range in its annotation with annotated_types, `steps: Annotated[int, Ge(1)]`,
`top_p: Annotated[float, Interval(gt=0, le=1)]` (`UNBOUNDED` where any finite value will do), and every config
derives from `Config`, whose `__post_init__` checks them: a config out of range cannot be built, whether by code, by
`--set` or from a saved file, and NaN and infinities are refused in every float field. `reference` renders every
config as the markdown of docs/config.md.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import itertools
import json
import math
import pkgutil
import textwrap
import types
import typing
from collections.abc import Iterable, Sequence
from functools import cache
from numbers import Real
from typing import Annotated, Any, NamedTuple, TypeVar, cast

from annotated_types import BaseMetadata, Ge, GroupedMetadata, Gt, Interval, Le, Lt

__all__ = [
    "UNBOUNDED",
    "Config",
    "FieldRow",
    "Range",
    "RangeError",
    "apply_overrides",
    "check_ranges",
    "config_classes",
    "config_from_dict",
    "describe",
    "reference",
    "unranged_fields",
]

T = TypeVar("T")

UNBOUNDED = Interval()
"""The declared range of a number that may take any finite value (a reward, a Q-value threshold): every numeric
field names a range, so that a field without one is an omission the tests catch, never a silent choice."""


class RangeError(ValueError):
    """A config value outside its field's declared range: `field` is the field's (dotted) path, `reason` what is
    wrong with the value ("must be >= 1, got -5"); the message is both, "q.steps: must be >= 1, got -5"."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason

    def under(self, prefix: str) -> RangeError:
        """The same error for the config sitting at `prefix` in a larger one ("q" -> "q.steps")."""
        return RangeError(f"{prefix}.{self.field}" if prefix else self.field, self.reason)


@dataclasses.dataclass(frozen=True)
class Range:
    """The interval a number must lie in: each bound optional, closed or open (no bound at all: any finite value)."""

    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False

    @classmethod
    def declared(cls, metadata: Iterable[object]) -> Range | None:
        """The range that the annotated_types constraints among `metadata` declare (the tightest bounds where
        several are given); None when they declare none, `Range()` for `UNBOUNDED`."""
        found, bounds = False, cls()
        for item in metadata:
            if isinstance(item, GroupedMetadata):  # Interval(...): found even with no bound (UNBOUNDED)
                found = True
                for bound in item:
                    bounds = bounds.tightened(bound)
            elif isinstance(item, BaseMetadata):
                found, bounds = True, bounds.tightened(item)
        return bounds if found else None

    def tightened(self, bound: object) -> Range:
        """This range with one more bound (Ge, Gt, Le or Lt): the tighter of it and the one there wins."""
        if isinstance(bound, Ge | Gt):
            value = float(cast(Any, bound.ge if isinstance(bound, Ge) else bound.gt))
            is_open = isinstance(bound, Gt)
            if self.low is None or value > self.low or (value == self.low and is_open):
                return dataclasses.replace(self, low=value, low_open=is_open)
        elif isinstance(bound, Le | Lt):
            value = float(cast(Any, bound.le if isinstance(bound, Le) else bound.lt))
            is_open = isinstance(bound, Lt)
            if self.high is None or value < self.high or (value == self.high and is_open):
                return dataclasses.replace(self, high=value, high_open=is_open)
        else:  # MultipleOf, MinLen...: a config's range says where a number lies, nothing else
            raise TypeError(f"{bound!r}: a config range is declared with Ge, Gt, Le, Lt or Interval")
        return self

    def __contains__(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        """One of `>= 1`, `> 0`, `<= 20`, `[0, 1]`, `(0, 1]`, or `any` (no bound)."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{left}{_number(self.low)}, {_number(self.high)}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_number(self.high)}"
        return "any"

    def phrase(self) -> str:
        """What a value must be, after "must be": ">= 1", "in [0, 1]"."""
        text = str(self)
        return f"in {text}" if text[0] in "[(" else text


def _number(value: float) -> str:
    """A bound as written in the source: 1 rather than 1.0, 1e-05 as Python prints it."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _is_union(origin: Any) -> bool:
    return origin is typing.Union or origin is types.UnionType


def _unwrap(annotation: Any) -> tuple[Any, Range | None]:
    """The type under `Annotated[...]` and the range its metadata declares (None: none)."""
    if typing.get_origin(annotation) is Annotated:
        base, *metadata = typing.get_args(annotation)
        return base, Range.declared(metadata)
    return annotation, None


def _items(annotation: Any, count: int) -> list[Any]:
    """The annotation of each of `count` items of a tuple or list annotation."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list or (len(args) == 2 and args[1] is Ellipsis):
        return [args[0]] * count
    return [args[i] if i < len(args) else Any for i in range(count)]


def _check_value(value: Any, annotation: Any, path: str, inherited: Range | None = None) -> None:
    """RangeError naming `path` if `value` (or an item of it) is a number outside the range `annotation` declares
    (a range on a tuple or list applies to each item), or a float that is NaN or infinite."""
    base, declared = _unwrap(annotation)
    bounds = declared or inherited
    origin = typing.get_origin(base)
    if value is None:
        return
    if _is_union(origin):
        for option in typing.get_args(base):
            _check_value(value, option, path, bounds)
    elif origin in (tuple, list) and isinstance(value, tuple | list):
        for i, (item, item_annotation) in enumerate(zip(value, _items(base, len(value)), strict=True)):
            _check_value(item, item_annotation, f"{path}[{i}]", bounds)
    elif origin is dict and isinstance(value, dict):
        for key, item in value.items():
            _check_value(item, typing.get_args(base)[1], f"{path}.{key}", bounds)
    elif base in (int, float) and isinstance(value, Real) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise RangeError(path, f"must be a finite number, got {value}")
        if bounds is not None and float(value) not in bounds:
            raise RangeError(path, f"must be {bounds.phrase()}, got {value}")


def _has_unranged_number(annotation: Any, ranged: bool = False) -> bool:
    """Whether `annotation` holds an int or float that no `Annotated` range covers."""
    base, declared = _unwrap(annotation)
    ranged = ranged or declared is not None
    if base in (int, float):
        return not ranged
    origin = typing.get_origin(base)
    if _is_union(origin) or origin in (tuple, list, dict):
        return any(_has_unranged_number(arg, ranged) for arg in typing.get_args(base) if arg is not Ellipsis)
    return False


def _range_text(annotation: Any, inherited: Range | None = None) -> str:
    """The range column of a field: ">= 1", "(0, 1]", "each >= 1", ">= 0, or none"; "" for no number."""
    base, declared = _unwrap(annotation)
    bounds = declared or inherited
    origin, args = typing.get_origin(base), typing.get_args(base)
    if base in (int, float):
        return str(bounds) if bounds is not None else ""
    if _is_union(origin):
        texts = [text for arg in args if arg is not type(None) and (text := _range_text(arg, bounds))]
        return ", or ".join([*dict.fromkeys(texts), *(["none"] if texts and type(None) in args else [])])
    if origin in (tuple, list):
        texts = list(dict.fromkeys(text for arg in args if arg is not Ellipsis if (text := _range_text(arg, bounds))))
        return f"each {texts[0]}" if len(texts) == 1 else ", ".join(texts)
    return ""


_HINTS: dict[type, dict[str, Any]] = {}
"""The annotations of each config class read so far (a config is built often: in loops, by every `replace`)."""


def _hints(cls: type[Any]) -> dict[str, Any]:
    """The annotations of a dataclass's fields with their `Annotated` metadata (a config's annotations must name
    what its module imports at run time, not only under TYPE_CHECKING)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    return _HINTS[cls]


def check_ranges(config: Any) -> None:
    """RangeError naming the field if a numeric field of the dataclass `config` is outside its declared range or
    a float field is NaN or infinite (nested configs check themselves when they are built)."""
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        if f.name in hints:
            _check_value(getattr(config, f.name), hints[f.name], f.name)


def unranged_fields(cls: type[Any]) -> list[str]:
    """The fields of the dataclass `cls` that hold a number (int, float, optional, in a tuple or list) and declare
    no range: what the tests refuse."""
    hints = _hints(cls)
    return [f.name for f in dataclasses.fields(cls) if f.name in hints and _has_unranged_number(hints[f.name])]


class Config:
    """Base of every config dataclass: building one, by code, by `--set` (`apply_overrides`) or from a saved file
    (`config_from_dict`), checks each numeric field against the range its annotation declares and refuses NaN and
    infinities in float fields (RangeError naming the field). A subclass with a `__post_init__` of its own calls
    `super().__post_init__()` first, then checks what no range says (a field that depends on another)."""

    def __post_init__(self) -> None:
        check_ranges(self)


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


class FieldRow(NamedTuple):
    """One leaf field of a config as `--show-config` lists it."""

    path: str
    """Dotted path, as `--set` names it."""
    value: str
    """Current value as JSON."""
    range: str
    """Valid range of a number (">= 1", "(0, 1]", "each >= 1", "any"); "" for a field that holds none."""
    meaning: str
    """The field's docstring."""


def describe(config: Any, prefix: str = "") -> list[FieldRow]:
    """Path, current value, range and docstring of every leaf field of a (nested) dataclass config."""
    rows = []
    docs = _field_docs(type(config))  # type: ignore[arg-type]
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            rows.extend(describe(value, f"{prefix}{f.name}."))
        else:
            bounds = _range_text(hints[f.name]) if f.name in hints else ""
            rows.append(FieldRow(f"{prefix}{f.name}", json.dumps(value), bounds, docs.get(f.name, "")))
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
    """A copy of `config` with each `path=value` applied (dotted paths into nested dataclasses). A value out of its
    field's range is a ValueError naming the override and the field: "--set q.steps=-5: q.steps: must be >= 1,
    got -5"."""
    for override in overrides:
        path, sep, raw = override.partition("=")
        if not sep:
            raise ValueError(f"--set {override!r}: expected field=value (the fields: --show-config)")
        try:
            config = _set(config, path.strip().split("."), raw.strip(), path.strip())
        except RangeError as error:
            raise ValueError(f"--set {path.strip()}={raw.strip()}: {error}") from None
    return config


def _set(config: Any, parts: list[str], raw: str, path: str, at: str = "") -> Any:
    """`config` with the field at `parts` set to `raw`; `at` is where `config` sits in the one being overridden."""
    hints = typing.get_type_hints(type(config))
    name = parts[0]
    if name not in {f.name for f in dataclasses.fields(config)}:
        known = ", ".join(row.path for row in describe(config))
        raise ValueError(f"--set {path}: no field {name!r} here; known fields: {known}")
    if len(parts) > 1:
        value = _set(getattr(config, name), parts[1:], raw, path, f"{at}.{name}" if at else name)
    else:
        value = _parse(raw, hints[name], path)
    try:  # building the copy checks its ranges (Config.__post_init__)
        return dataclasses.replace(config, **{name: value})
    except RangeError as error:
        raise error.under(at) from None


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
        required = [
            f.name
            for f in dataclasses.fields(annotation)
            if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in value]
        if missing:  # (a TypeError from the constructor otherwise, a traceback)
            raise ValueError(f"{where}: {f'{path}.' if path else ''}{missing[0]}: missing")
        try:  # building it checks its ranges (Config.__post_init__), and what else its class checks
            return annotation(**fields)
        except RangeError as error:
            raise ValueError(f"{where}: {error.under(path)}") from None
        except ValueError as error:
            raise ValueError(f"{where}: {f'{path}: ' if path else ''}{error}") from None
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


# --- the reference of every config (docs/config.md) -----------------------------------------------------------------


def config_classes(package: str = "convoplan", private: bool = False) -> list[type[Config]]:
    """Every `Config` subclass defined in `package` (each of its modules imported, `__main__` ones left out, since
    importing those runs them), ordered by module and by place in the source; those named `_...` with `private`."""
    root = importlib.import_module(package)
    for module in pkgutil.walk_packages(root.__path__, f"{package}."):
        if module.name.rsplit(".", 1)[-1] != "__main__":
            importlib.import_module(module.name)
    found: list[type[Config]] = []
    pending: list[type[Config]] = [Config]
    while pending:
        for sub in pending.pop().__subclasses__():
            pending.append(sub)
            inside = sub.__module__ == package or sub.__module__.startswith(f"{package}.")
            if inside and (private or not sub.__name__.startswith("_")):
                found.append(sub)
    return sorted(set(found), key=lambda cls: (cls.__module__, inspect.getsourcelines(cls)[1]))


def _default(f: dataclasses.Field[Any]) -> Any:
    """The default of a field (a factory's result; `metadata["default"]` where the factory depends on the machine)."""
    if "default" in f.metadata:
        return f.metadata["default"]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _class_doc(cls: type[Any]) -> str:
    """The docstring written in a class's source, on one line ("" for none: not the signature that dataclass puts
    in `__doc__` then, nor a base class's)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return ""
    node = tree.body[0] if tree.body else None
    return " ".join((ast.get_docstring(node) or "").split()) if isinstance(node, ast.ClassDef) else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference(classes: Sequence[type[Any]]) -> str:
    """Markdown of every field of `classes`: default, range and meaning, one table per class; a nested config's
    default names where it differs from that config's own defaults."""
    names = {cls: cls.__name__ for cls in classes}
    lines = [
        "# Every config: fields, defaults and ranges",
        "",
        "Generated by `.venv/bin/python bench/config_reference.py` from the config dataclasses (`convoplan.configs."
        "reference`); `tests/test_configs.py` fails when it is out of date. Commands take `--set path=value` on "
        "these fields (`--show-config` lists a command's config with its current values), and saved models record "
        "them. A value outside its range is refused wherever a config is built (`--set`, a saved file, code), with "
        "one line naming the field; a float is also refused when it is NaN or infinite, whatever its range. Ranges "
        "read as intervals: `[0, 1)` holds 0 and not 1; `any` is any finite number; `each` applies to every item of "
        "a list.",
        "",
    ]
    for cls in classes:
        docs, hints = _field_docs(cls), _hints(cls)  # type: ignore[arg-type]  # mypy: type[Any] is hashable
        lines += [f"## {cls.__name__}", "", f"`{cls.__module__}.{cls.__qualname__}`"]
        summary = _class_doc(cls)
        lines += ["", summary] if summary else []
        lines += ["", "| field | default | range | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            default = _default(f)
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                kind = type(default)
                changed = [
                    f"{row.path}={row.value}"
                    for row, own in zip(describe(default), describe(kind()), strict=True)
                    if row.value != own.value
                ]
                link = f"[{kind.__name__}](#{kind.__name__.lower()})" if kind in names else kind.__name__
                shown = link + (f" with {', '.join(f'`{c}`' for c in changed)}" if changed else "")
            elif default is dataclasses.MISSING:
                shown = "(required)"
            elif isinstance(default, str) and "default" in f.metadata:
                shown = default
            else:
                shown = f"`{json.dumps(default)}`"
            bounds = _range_text(hints[f.name]) if f.name in hints else ""
            cells = [f"`{f.name}`", shown, f"`{bounds}`" if bounds else "", docs.get(f.name, "")]
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
        lines.append("")
    return "\n".join(lines)

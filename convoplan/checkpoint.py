"""One way to put a trained model on disk and read it back: a folder holding a JSON config that names its format
and the model's weights in safetensors.

Every trained thing of convoplan (dialogue managers, next-best-action models, labellers, language models) is such a
folder. It appears whole: `write_folder` fills a temp folder beside the target and renames it into place
(`convoplan.atomic.atomic_folder`), so a crash mid-write leaves the previous folder intact. Reading never unpickles
anything, and every failure is one ValueError naming the file: `read_config` checks the format tag, `load_weights`
loads the weights into a module built from that config.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convoplan.atomic import atomic_folder

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CONFIG_FILE", "check_replaceable", "load_weights", "read_config", "training_record", "write_folder"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def _plain(value: Any) -> Any:
    """`value` as strict JSON: numpy scalars as Python numbers, NaN and infinities as null, tuples as lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy and torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_folder(
    folder: str | Path,
    format: str,
    config: Mapping[str, Any],
    module: nn.Module | None = None,
    *,
    extra: Callable[[Path], None] | None = None,
    config_file: str = CONFIG_FILE,
) -> Path:
    """Write a model folder as a whole: `module`'s weights (if given), whatever `extra(temp folder)` adds (a
    tokenizer, optimiser state, ...), then the config, `{"format": format, **config}` as strict JSON; the folder
    replaces `folder` only once complete."""
    with atomic_folder(folder) as temp:
        if module is not None:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in module.state_dict().items()}, temp / WEIGHTS_FILE)
        if extra is not None:
            extra(temp)
        text = json.dumps(_plain({"format": format, **config}), indent=2, allow_nan=False)
        (temp / config_file).write_text(text + "\n")
    return Path(folder)


def _formats(folder: Path) -> set[str]:
    """The format tags of the model configs in `folder` and its direct subfolders (`config.json`, or a
    `convoplan-*.json` such as the language model's): what kind of model(s) it holds."""
    tags = set()
    for place in (folder, *(child for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))):
        for path in (place / CONFIG_FILE, *sorted(place.glob("convoplan-*.json"))):
            try:
                config = json.loads(path.read_text("utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(config, dict) and isinstance(config.get("format"), str):
                tags.add(config["format"])
    return tags


def check_replaceable(folder: str | Path, format: str, what: str) -> None:
    """Refuse, before any training, to write a `format` model over `folder` unless it is missing, empty or holds that
    kind of model (in it, or in a subfolder: a run's checkpoint): ValueError naming the folder and what it holds.
    Writing replaces the folder whole, so a labeller, a user's files or a folder of several models would be lost.
    `what` names the kind of model being written ("DM", "labeller", ...)."""
    path = Path(folder)
    if not path.is_dir() or not any(not child.name.startswith(".") for child in path.iterdir()):
        return  # (dot files: leftovers of a write in progress)
    formats = _formats(path)
    others = sorted(formats - {format})
    if others:
        kinds = ", ".join(f"{tag.removeprefix('convoplan-').split('/')[0]} ({tag})" for tag in others)
        raise ValueError(f"{path} holds another kind of model: {kinds}; the {what} would replace it, choose another")
    if format not in formats:
        raise ValueError(f"{path} exists and is not a {what} folder: the {what} would replace it, choose another")


def read_config(folder: str | Path, format: str, what: str, *, config_file: str = CONFIG_FILE) -> dict[str, Any]:
    """A model folder's config; ValueError naming the file if it is missing, unreadable, or of another format
    (`what` names the kind of model in the message: "DM checkpoint", "labeller", ...)."""
    path = Path(folder) / config_file
    try:
        config = json.loads(path.read_text("utf-8"))
        if not isinstance(config, dict) or config.get("format") != format:
            found = config.get("format") if isinstance(config, dict) else None
            raise ValueError(f"format {found!r}, expected {format!r}")
    except FileNotFoundError:
        raise ValueError(f"{path}: not a convoplan {what} (no such file)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"{path}: not a convoplan {what} ({error})") from None
    return config


def load_weights(folder: str | Path, module: nn.Module, *, file: str = WEIGHTS_FILE) -> None:
    """Load `folder/file` into `module` (strictly: every tensor, the right shapes); ValueError naming the file."""
    from safetensors.torch import load_file

    path = Path(folder) / file
    try:
        module.load_state_dict(load_file(path))
    except Exception as error:  # safetensors raises several types for missing, truncated or foreign files
        raise ValueError(f"{path}: cannot load the weights ({error})") from None


def training_record(config: Any, losses: list[float], seconds: float, **extra: Any) -> dict[str, Any]:
    """What a model folder says about how it was trained: the same keys for every model, then `extra` (the data
    used, throughput, validation results, ...). `config` is the training config dataclass."""
    return {
        "config": asdict(config),
        "steps": len(losses),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "seconds": seconds,
        **extra,
    }

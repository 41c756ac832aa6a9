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

__all__ = ["CONFIG_FILE", "load_weights", "read_config", "training_record", "write_folder"]

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

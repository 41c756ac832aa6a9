"""Resumable training checkpoints of the language model.

A checkpoint is a folder written as a whole (a temp folder renamed into place, so a kill mid-write leaves the
previous checkpoint intact): the model folder of the current weights (`convoplan.lm.model.save_model`; in a LoRA
run, the adapter: `convoplan.lm.lora`), the trainable parameters at the best validation loss (`best.safetensors`),
the optimiser and scheduler state (`optimizer.pt`, loaded back with `torch.load(weights_only=True)`: tensors and
plain values only, no code), and `trainer_state.json`: where the loop is (step, epoch, batch within the epoch),
early-stopping state, loss history, the run's config and a fingerprint of its data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from convoplan.lm.lora import ADAPTER_FILE, load_adapter
from convoplan.lm.model import LanguageModel, load_base, load_model, read_info, save_model
from convoplan.lm.tokenizer import Codec

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = []

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
BEST_FILE = "best.safetensors"


@dataclass
class LoopState:
    """Where the training loop is; everything else it needs is recomputed from the config and the seed."""

    step: int = 0
    """Optimiser steps taken."""
    epoch: int = 0
    """Current epoch (passes over the training blocks), from 0."""
    batch: int = 0
    """Next batch within the current epoch."""
    best: float | None = None
    """Best validation loss so far."""
    bad_epochs: int = 0
    """Epochs since the validation loss last improved (early stopping at `patience`)."""
    stopped: bool = False
    """Early stopping ended the run."""
    out_of_time: bool = False
    """The time budget (`max_seconds`) ended the run."""
    losses: list[float] = field(default_factory=list)
    """Training loss (mean per target token over the whole global batch) of every step."""
    validation: list[float] = field(default_factory=list)
    """Validation loss after every epoch."""
    tokens: int = 0
    """Target tokens trained on, over all processes."""
    seconds: float = 0.0
    """Time spent in training steps (validation and checkpoints excluded)."""


@dataclass
class Snapshot:
    """The training state a checkpoint holds besides the model and its tokenizer."""

    state: LoopState
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    best: dict[str, torch.Tensor] | None
    """Trainable parameters at the best validation loss so far (None before the first validation)."""


def save_checkpoint(
    folder: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    snapshot: Snapshot,
    info: dict[str, Any],
    run: dict[str, Any],
) -> None:
    """Write a checkpoint folder as a whole; `info` as for a model folder, `run` what resuming must check (config,
    data fingerprint, base model), stored beside the loop state."""
    from safetensors.torch import save_file

    def write_state(temp: Path) -> None:
        if snapshot.best is not None:
            save_file({name: tensor.contiguous() for name, tensor in snapshot.best.items()}, temp / BEST_FILE)
        torch.save({"optimizer": snapshot.optimizer, "scheduler": snapshot.scheduler}, temp / OPTIMIZER_FILE)
        (temp / STATE_FILE).write_text(json.dumps({"state": asdict(snapshot.state), **run}, indent=1) + "\n")

    save_model(folder, model, tokenizer, info, extra=write_state)


def load_checkpoint(folder: Path) -> tuple[LanguageModel, Snapshot, dict[str, Any]]:
    """(the model at the checkpoint, the training state, the `run` entries); ValueError naming what is wrong."""
    from safetensors.torch import load_file

    try:
        saved = json.loads((folder / STATE_FILE).read_text())
        if (folder / ADAPTER_FILE).exists():  # a LoRA run: the base, rebuilt as it started, plus the adapter
            info = read_info(folder)
            notes = info.get("grounding") is not None  # a grounded model's tokenizer has the notes' tags
            tokenizer, base = load_base(saved["base_model"], info["actions"], notes=notes)
            model = load_adapter(base, folder)
            lm = LanguageModel(model, tokenizer, Codec(tokenizer, vanilla=bool(info["vanilla"])), info)
        else:
            lm = load_model(folder)
        state = LoopState(**saved.pop("state"))
        optimiser = torch.load(folder / OPTIMIZER_FILE, weights_only=True)
        best = load_file(folder / BEST_FILE) if (folder / BEST_FILE).exists() else None
    except (OSError, json.JSONDecodeError, KeyError, TypeError, RuntimeError) as error:
        raise ValueError(f"{folder}: not a complete training checkpoint ({error})") from None
    return lm, Snapshot(state, optimiser["optimizer"], optimiser["scheduler"], best), saved

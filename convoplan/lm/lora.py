"""LoRA fine-tuning of a pretrained base with peft (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language
Models"): every chosen linear layer W0 [d_out, d_in] is frozen and learns a low-rank update instead,

    h = W0 x + (alpha / r) * B A x,        A [r, d_in] random, B [d_out, r] zero at the start,

so training starts from the base exactly and moves r * (d_in + d_out) numbers per layer. The format's tags are new
tokens the base has never seen: their embedding rows train too (peft's trainable tokens: the rows only, not the
49k-row table; with tied input and output embeddings, the output rows follow).

A LoRA run is saved **merged**: W0 + (alpha / r) B A written into the base weights, an ordinary model folder.
`suggest`, `serve` and `lm eval` then load it like any other (no peft at inference, so serving imports no training
code), and it runs at the base model's speed; the price is disk, the whole model (540 MB for SmolLM2 in fp32)
rather than an adapter of a few MB. Checkpoints of a run in progress hold the adapter instead of the model
(`adapter_model.safetensors`, with the resized embedding table peft keeps beside it): resuming rebuilds the base
and puts the adapter back on it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from annotated_types import Ge, Interval

from convoplan.configs import Config

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["LoraConfig"]

ADAPTER_FILE = "adapter_config.json"
"""What peft writes beside the adapter weights; a checkpoint folder that has it holds an adapter."""


@dataclass
class LoraConfig(Config):
    """LoRA on a pretrained base (rank 0 = full fine-tuning: every weight trains)."""

    rank: Annotated[int, Ge(0)] = 0
    """Rank r of each layer's update; 0 = no LoRA, full fine-tuning. 8-16 is usual."""
    alpha: Annotated[int, Ge(1)] = 32
    """Scale of the update: (alpha / r) B A."""
    dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.05
    """Dropout on the input of the low-rank branch."""
    targets: str = "all-linear"
    """Layers that learn an update: "all-linear" (every linear layer but the output head), or module names
    separated by commas ("q_proj,v_proj")."""


def add_lora(model: PreTrainedModel, config: LoraConfig, tag_ids: list[int]) -> PreTrainedModel:
    """`model` wrapped by peft: base weights frozen, LoRA updates and the tags' embedding rows trainable (none when
    `tag_ids` is empty: the embedding and output head stay plain modules)."""
    import peft

    targets: str | list[str] = config.targets if config.targets == "all-linear" else config.targets.split(",")
    settings = peft.LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        trainable_token_indices=tag_ids or None,  # the input embedding's rows (and, tied, the output head's)
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft asks transformers' deprecated is_gradient_checkpointing
        warnings.simplefilter("ignore", FutureWarning)
        return peft.get_peft_model(model, settings)  # type: ignore[return-value]


def merge(model: PreTrainedModel) -> PreTrainedModel:
    """The plain model with the updates added into its weights (W0 + (alpha / r) B A); a model without an adapter
    (whole-model fine-tuning) as it is."""
    merge_and_unload = getattr(model, "merge_and_unload", None)  # peft's models have it, transformers' do not
    return merge_and_unload() if merge_and_unload is not None else model


def load_adapter(model: PreTrainedModel, folder: Path) -> PreTrainedModel:
    """The adapter a checkpoint saved, put back on the base `model`, trainable."""
    import peft

    return peft.PeftModel.from_pretrained(model, str(folder), is_trainable=True)  # type: ignore[return-value]

"""Preference tuning on the agents' choices: DPO (Rafailov et al., 2023, "Direct Preference Optimization: Your
Language Model is Secretly a Reward Model") through TRL's `DPOTrainer`, with a LoRA adapter (peft) on a model
folder, merged into a new model folder when done.

    L(θ) = -E_(x, y_w, y_l) [ log σ( β (log π_θ(y_w | x) / π_ref(y_w | x) - log π_θ(y_l | x) / π_ref(y_l | x)) ) ]

x is the prompt the model reads at suggest time for the pair's context and action (built by the same `Grounder`:
history, events, passages, exemplars, cut to the same budget), y_w the message the agent preferred and y_l the one
it passed over (`convoplan.lm.preferences`), each as the model writes a message: its text, then `<|end|>`. π_ref
is the model before tuning: the same network with the adapter switched off, so no second copy is held. TRL takes
text: the prompts are decoded from their ids, and `DPOTrainer` tokenises them again; a pair whose prompt does not
come back as the same ids (a tokenizer that does not round-trip) is left out and counted.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from annotated_types import Ge, Gt, Interval

from convoplan.checkpoint import training_record
from convoplan.configs import Config
from convoplan.lm.base import quiet
from convoplan.lm.generate import SamplingConfig, prompt_budget
from convoplan.lm.grounding import Grounder, grounding_config
from convoplan.lm.lora import LoraConfig, add_lora, merge
from convoplan.lm.model import LanguageModel, load_model, save_model
from convoplan.lm.preferences import PreferencePair
from convoplan.lm.text import END
from convoplan.progress import Progress, Update

if TYPE_CHECKING:
    from convoplan.retrieval.knowledge import KnowledgeIndex

__all__ = ["DPOConfig", "DPOResult", "train_dpo"]


@dataclass
class DPOConfig(Config):
    """Preference tuning of an LM folder on preference pairs (`convoplan lm dpo`)."""

    beta: Annotated[float, Gt(0)] = 0.1
    """β: the strength of the pull back to the reference model (smaller lets the tuned model move further)."""
    lr: Annotated[float, Gt(0)] = 5e-5
    """AdamW's learning rate for the adapter (linear decay to 0)."""
    epochs: Annotated[float, Gt(0)] = 2.0
    """Passes over the pairs."""
    batch_size: Annotated[int, Ge(1)] = 4
    """Pairs per optimiser step."""
    max_message_tokens: Annotated[int, Ge(1)] = 40
    """Tokens of a chosen or rejected message (longer ones are cut); the prompt gets the rest of the context, as at
    suggest time with `max_new_tokens` of the same value."""
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(rank=16))
    """The adapter trained (rank 0: every weight trains, and the reference is a second copy of the model)."""
    label_smoothing: Annotated[float, Interval(ge=0, lt=0.5)] = 0.0
    """Probability that a pair's preference is the wrong way round (conservative DPO, Mitchell 2023); 0 = plain."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of the batches' order and of the adapter's initialisation."""


@dataclass(frozen=True)
class DPOResult:
    folder: Path
    pairs: int
    """Pairs trained on."""
    left_out: int
    """Pairs left out: their prompt does not tokenise back to its ids."""
    losses: list[float]
    """The loss logged at each step."""
    accuracies: list[float]
    """The share of each step's pairs whose chosen message the model prefers (its implicit reward is higher)."""


def preference_rows(
    lm: LanguageModel, grounder: Grounder, pairs: Sequence[PreferencePair], budget: int
) -> tuple[dict[str, list[str]], int]:
    """TRL's columns (prompt, chosen, rejected) as text, and how many pairs were left out (see the module
    docstring). The prompt is what suggestions read for (context, action); a message is its text with the leading
    space the format gives it, then `<|end|>`."""
    tokenizer = lm.tokenizer
    prompts = grounder.prompts([p.context for p in pairs], [p.action for p in pairs], budget)
    rows: dict[str, list[str]] = {"prompt": [], "chosen": [], "rejected": []}
    left_out = 0
    for pair, prompt in zip(pairs, prompts, strict=True):
        text = str(tokenizer.decode(prompt.ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))
        if tokenizer(text, add_special_tokens=False)["input_ids"] != prompt.ids:
            left_out += 1
            continue
        rows["prompt"].append(text)
        rows["chosen"].append(f" {pair.chosen}{END}")
        rows["rejected"].append(f" {pair.rejected}{END}")
    return rows, left_out


def train_dpo(
    model: str | Path,
    pairs: Sequence[PreferencePair],
    out: str | Path,
    config: DPOConfig | None = None,
    *,
    knowledge: KnowledgeIndex | None = None,
    progress: Progress | None = None,
) -> DPOResult:
    """Tune the LM folder `model` on `pairs` (the module docstring) and write the tuned model to the folder `out`,
    with the exemplar index it reads and this round appended to the `dpo` records of its convoplan-lm.json;
    ValueError naming what is wrong (an exported folder, a model that reads knowledge without `knowledge`, no pair
    left)."""
    import torch
    import transformers
    from datasets import Dataset
    from datasets.utils import logging as datasets_logging
    from trl.trainer.dpo_config import DPOConfig as TRLConfig
    from trl.trainer.dpo_trainer import DPOTrainer

    config = config or DPOConfig()
    lm = load_model(model)
    if lm.network is None:
        raise ValueError(f"{model}: an exported folder cannot be trained; tune the PyTorch folder it came from")
    from convoplan.retrieval.exemplars import EXEMPLARS, load_exemplars

    grounding = grounding_config(lm.info)
    exemplars = load_exemplars(Path(model) / EXEMPLARS) if grounding.exemplars else None
    grounder = Grounder(lm.codec, grounding, knowledge=knowledge, exemplars=exemplars)
    budget = prompt_budget(lm, SamplingConfig(max_new_tokens=config.max_message_tokens))
    unknown = sorted({p.action for p in pairs} - set(lm.codec.actions))
    if unknown and not lm.codec.vanilla:
        raise ValueError(f"pairs with actions the model does not know: {', '.join(unknown)}")
    rows, left_out = preference_rows(lm, grounder, pairs, budget)
    if not rows["prompt"]:
        raise ValueError("no preference pair left to train on")
    data = Dataset.from_dict(rows)  # (the trainer draws the batches in an order of its seed)
    datasets_logging.disable_progress_bar()  # TRL's passes over the pairs: `progress` shows the training

    # TRL ends each message with the tokenizer's end-of-sequence text unless it ends so already: here that is the
    # format's end of message, which the messages carry (a copy: the model folder keeps its own tokenizer).
    tokenizer = lm.tokenizer.__class__.from_pretrained(str(model))
    tokenizer.eos_token = END
    tokenizer.pad_token = tokenizer.pad_token or END
    network = lm.model
    network.train()
    # The tags' embedding rows stay as supervised training left them (TRL's fused log-probabilities read the output
    # head's weight directly, which a wrapper of trainable rows would hide): the adapter alone learns.
    network = add_lora(network, config.lora, []) if config.lora.rank else network
    before = {name: p.detach().clone() for name, p in network.named_parameters() if p.requires_grad}
    losses: list[float] = []
    accuracies: list[float] = []

    class Report(transformers.TrainerCallback):  # TRL's logs -> the job's progress (one line or bar per task)
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                accuracies.append(float(logs.get("rewards/accuracies", float("nan"))))
                if progress is not None:
                    metrics = {"loss": losses[-1], "accuracy": accuracies[-1]}
                    progress(Update("preference tuning", state.global_step, state.max_steps, metrics=metrics))

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="convoplan-dpo-") as scratch, quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' renamed checkpointing calls, made by TRL
        arguments = TRLConfig(
            output_dir=scratch,  # TRL's: nothing is saved there
            beta=config.beta,
            label_smoothing=config.label_smoothing,
            learning_rate=config.lr,
            num_train_epochs=config.epochs,
            per_device_train_batch_size=config.batch_size,
            max_length=lm.context,  # prompts fit in `budget`; a message past the rest loses its end
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            seed=config.seed,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True,
        )
        trainer = DPOTrainer(
            model=network, args=arguments, train_dataset=data, processing_class=tokenizer, callbacks=[Report()]
        )
        trainer.remove_callback(transformers.PrinterCallback)  # its dict per step on stdout: `progress` shows it
        trainer.train()
    seconds = time.perf_counter() - started
    moved = sum(
        float((p.detach() - before[name]).abs().sum()) for name, p in network.named_parameters() if name in before
    )
    merged = merge(network)
    merged.eval()  # type: ignore[no-untyped-call]
    record = training_record(
        config,
        losses,
        seconds,
        pairs=len(data),
        left_out=left_out,
        final_accuracy=accuracies[-1] if accuracies else None,
        parameter_change=moved,
        base_folder=str(model),
    )

    def with_index(folder: Path) -> None:  # the exemplars the prompts read travel with the model
        if exemplars is not None:
            exemplars.save(folder / EXEMPLARS)

    info = {key: value for key, value in lm.info.items() if key not in ("format", "actions")}
    rounds = [*info.get("dpo", []), record]  # a tuned model tuned again keeps the earlier rounds' records
    folder = save_model(out, merged, lm.tokenizer, {**info, "dpo": rounds}, extra=with_index)
    return DPOResult(folder, len(data), left_out, losses, accuracies)

"""Training the language model on rendered conversations: packed blocks, AdamW with linear warm-up and decay,
gradient clipping, validation every epoch with early stopping, and resumable checkpoints.

The same code runs in one process or under `torchrun --nproc_per_node N` (gloo on CPU, DistributedDataParallel):
every process holds the whole packed data, draws the same global batch and trains on its share of the blocks
(rows rank, rank + N, ...). Each process scales its summed loss by N / (target tokens in the global batch), so
that the gradient DDP averages is the gradient of the whole batch's mean loss, as in one process. Batch order is a
function of (seed, epoch) and dropout masks of (seed, step, rank), so a run resumed from a checkpoint takes the
same steps as one that was never interrupted.

The vanilla baseline is the same call with `vanilla=True`: same architecture, data and budget, no action tags.

**Grounding** (`TrainConfig.grounding`, `convoplan.lm.grounding`). With events only, the packed stream renders each
conversation's events at their places, as inputs without targets. With knowledge passages or exemplars, training
renders exactly what inference renders: one sample per agent message, its prompt built by the same `Grounder` as
suggestions (the passages retrieved for its history, the exemplars of its action never from its own conversation,
cut to the same budgets) then the message, and only the message is learnt (`convoplan.lm.data.samples`). Each
history is read once per message rather than once per conversation: the price of every message seeing its own
grounding (packed blocks would cut prompts from their messages). Batches of such rows are cut to their longest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
import torch.distributed as dist
from annotated_types import Ge, Gt, Interval
from torch import nn

from convoplan.checkpoint import training_record
from convoplan.configs import Config, config_from_dict
from convoplan.distributed import all_sum, barrier, process_group
from convoplan.lm.checkpoint import STATE_FILE, LoopState, Snapshot, load_checkpoint, save_checkpoint
from convoplan.lm.data import IGNORE, Blocks, pack, samples, split
from convoplan.lm.grounding import Grounder, GroundingConfig, passage_note
from convoplan.lm.lora import LoraConfig, add_lora, merge
from convoplan.lm.model import INFO_FILE, ModelConfig, load_base, new_model, save_model
from convoplan.lm.text import Note, with_events
from convoplan.lm.tokenizer import Codec, train_tokenizer, wrap_tokenizer
from convoplan.progress import Progress, Update
from convoplan.schema import Conversation

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from convoplan.embed import SentenceEmbedder
    from convoplan.retrieval.exemplars import ExemplarIndex
    from convoplan.retrieval.knowledge import KnowledgeIndex

__all__ = ["TrainConfig", "TrainResult", "fit", "lm_loss", "train"]

CHECKPOINT = "checkpoint"
"""Sub-folder of the output folder that holds the resumable state while a run is in progress."""


@dataclass
class TrainConfig(Config):
    """Training of the action-directed (or vanilla) language model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """Architecture of a model trained from scratch (a base model brings its own)."""
    vanilla: bool = False
    """Train the vanilla baseline: the same conversations rendered without action tags."""
    vocab_size: Annotated[int, Ge(260)] = 8000
    """Entries of a from-scratch byte-level BPE tokenizer, format tags included (action tags come on top): at least
    the 256 bytes and the 4 format tags, below which it learns no merge."""
    block_size: Annotated[int, Ge(1)] = 256
    """Tokens per training block, capped at the model's context; recorded with the model, whose prompts at inference
    then fit in it too. A pretrained base's context (8,192 tokens for SmolLM2) would take gigabytes per block."""
    batch_size: Annotated[int, Ge(1)] = 16
    """Blocks per optimiser step, over all processes."""
    lr: Annotated[float, Gt(0)] | None = None
    """Peak AdamW learning rate; None = by what trains: 1e-3 from scratch, 5e-5 a whole base, 1e-3 LoRA (short CPU
    budgets: 2e-4, the usual LoRA rate, left SmolLM2 far behind after 60 steps; BENCHMARKS.md)."""
    weight_decay: Annotated[float, Ge(0)] = 0.1
    """AdamW weight decay of the weight matrices (not of biases, layer norms)."""
    warmup: Annotated[float, Interval(ge=0, le=1)] = 0.05
    """Share of the steps over which the learning rate rises linearly from 0; it then decays linearly to 0."""
    epochs: Annotated[int, Ge(1)] = 10
    """Passes over the training blocks (the budget; early stopping may end sooner)."""
    max_steps: Annotated[int, Ge(0)] = 0
    """Cap on optimiser steps; 0 = no cap."""
    max_seconds: Annotated[float, Ge(0)] = 0.0
    """Cap on the seconds of training steps (validation and checkpoints not counted): past it the epoch ends, is
    validated, and the run stops with its best weights; 0 = no cap. A slow machine then trains fewer steps instead
    of taking longer (the steps taken then depend on the machine; the learning rate schedule does not shrink)."""
    grad_clip: Annotated[float, Gt(0)] = 1.0
    """Largest global gradient norm; larger gradients are scaled down to it."""
    patience: Annotated[int, Ge(1)] = 2
    """Epochs without a better validation loss before training stops; the best weights are kept."""
    min_delta: Annotated[float, Ge(0)] = 0.0
    """Least decrease of the validation loss that counts as better."""
    validation_fraction: Annotated[float, Interval(ge=0, lt=1)] = 0.1
    """Share of training conversations held out for validation when the data has no validation split."""
    max_train_rows: Annotated[int, Ge(0)] = 0
    """Most training blocks (rows), a seeded sample; 0 = all. A grounded run builds one prompt per agent message,
    retrieval included, before the first step: a budget of a few hundred rows need not pay for thousands."""
    max_validation_blocks: Annotated[int, Ge(0)] = 256
    """Most validation blocks (rows) scored after each epoch, a seeded sample; 0 = all. A grounded run has one row
    per agent message: SmolLM2 scored 1.5 rows/s on a loaded 2-core CPU, so the animals world's 2,141 validation
    messages took 24 minutes a pass, and 256 take 3."""
    eval_batch_size: Annotated[int, Ge(1)] = 8
    """Blocks per forward pass when computing the validation loss (memory grows with it: SmolLM2's logits alone
    take 50 MB per 256-token block)."""
    checkpoint_every: Annotated[int, Ge(0)] = 200
    """Optimiser steps between checkpoints (one is also written after every epoch); 0 = only after epochs."""
    micro_batch_size: Annotated[int, Ge(0)] = 4
    """Most blocks in one forward-backward pass: a process's share of a batch that holds more takes several passes,
    their gradients accumulated (the same gradient; memory grows with this, not with batch_size: SmolLM2 needs
    about 1 GB per 256-token block). 0 = the whole share in one pass."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass instead of keeping them (less memory, ~30% slower)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA on a pretrained base (rank 0 = full fine-tuning)."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of initialisation, batch order, dropout and the validation hold-out."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: auto = CUDA when available, else CPU."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Arithmetic of forward passes: bf16 = autocast to bfloat16 (weights and optimiser stay fp32); auto = bf16 on a
    CUDA device that supports it, else fp32 (CPU autocast is slower than fp32 on most CPUs)."""
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    """What the prompts hold besides the messages (events, knowledge passages, exemplars), recorded with the model
    so that suggestions, evaluation and serving build the same prompts; all off by default."""


@dataclass
class TrainResult:
    model: PreTrainedModel
    """The trained model with the best validation weights, in eval mode."""
    tokenizer: PreTrainedTokenizerBase
    state: LoopState
    """Steps, losses and timing of the whole run (resumed parts included)."""
    parameters: int
    train_tokens: int
    """Tokens in the packed training data (one epoch)."""
    steps_per_epoch: int
    """Optimiser steps of one pass over the training blocks."""

    @property
    def epochs(self) -> float:
        """Passes over the training data really made (a budget of steps may end one part way: 1.1, not 2)."""
        return self.state.step / self.steps_per_epoch

    @property
    def tokens_per_second(self) -> float:
        """Target tokens trained per second of training steps, over all processes."""
        return self.state.tokens / self.state.seconds if self.state.seconds else float("nan")


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(summed next-token cross-entropy, number of targets); logits [B, T, V], targets [B, T] with IGNORE where a
    position has no target. Summed rather than averaged so that shares of a batch add up across processes."""
    loss = nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="sum"
    )
    return loss, int((targets != IGNORE).sum())


# --- the loop --------------------------------------------------------------------------------------------------


def _optimiser(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    # Decay the weight matrices only: decaying biases and layer-norm gains towards 0 only hurts.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # fused: one kernel updates every parameter (CPU and CUDA), the Trainer's default too
    assert config.lr is not None, "train() resolves the default learning rate"
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), fused=True)


def learning_rate(config: TrainConfig, pretrained: bool) -> float:
    """The peak learning rate: the config's, or the default for what trains (see `TrainConfig.lr`)."""
    if config.lr is not None:
        return config.lr
    return 1e-3 if not pretrained or config.lora.rank > 0 else 5e-5


def _bf16(config: TrainConfig, device: torch.device) -> bool:
    """Whether forward passes autocast to bfloat16 (`TrainConfig.precision`)."""
    if config.precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return config.precision == "bf16"


def _forward(model: nn.Module, inputs: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Logits [b, T, V] of input ids [b, T], under bf16 autocast when asked (the loss is taken in fp32)."""
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits: torch.Tensor = model(input_ids=inputs, use_cache=False).logits
    return logits


def validation_loss(
    model: nn.Module,
    blocks: Blocks,
    config: TrainConfig,
    world: int,
    rank: int,
    device: torch.device,
    progress: Progress | None = None,
) -> float:
    """Mean validation loss per target token over all blocks (each process evaluates its share; `progress`, given
    on rank 0, follows this process's share: a pass over large data on a pretrained base takes many minutes)."""
    model.eval()
    total, count = 0.0, 0
    mine = torch.arange(len(blocks))[rank::world]
    bf16 = _bf16(config, device)
    with torch.no_grad():
        for start in range(0, len(mine), config.eval_batch_size):
            rows = mine[start : start + config.eval_batch_size]
            width = blocks.width(rows)  # rows of samples: cut to the longest, the rest is padding
            logits = _forward(model, blocks.inputs[rows, :width].to(device), bf16)  # [b, W, V]
            loss, n = lm_loss(logits, blocks.targets[rows, :width].to(device))
            total, count = total + float(loss), count + n
            if progress is not None:
                progress(Update("validating", start + len(rows), len(mine), "blocks"))
    model.train()
    summed, tokens = all_sum([total, count], world, device)
    return summed / tokens


def _steps_per_epoch(blocks: Blocks, config: TrainConfig) -> int:
    """Optimiser steps of one pass over `blocks`: the last partial batch of an epoch is left out."""
    return len(blocks) // min(config.batch_size, len(blocks))


def fit(
    model: PreTrainedModel,
    train_blocks: Blocks,
    validation_blocks: Blocks,
    config: TrainConfig,
    *,
    resume: Snapshot | None = None,
    checkpoint: Callable[[Snapshot], None] | None = None,
    progress: Progress | None = None,
) -> LoopState:
    """Train `model` in place on packed blocks; leave it with the best validation weights. `resume` continues from a
    checkpoint's state; `checkpoint(snapshot)` is called every `checkpoint_every` steps and after every epoch (on
    every process: the caller writes on rank 0); `progress` is called on rank 0 only."""
    rank, world, device = process_group(config.device)
    batch_size = min(config.batch_size, len(train_blocks))
    if batch_size < world:
        raise ValueError(f"a batch of {batch_size} block(s) cannot be shared by {world} processes")
    steps_per_epoch = _steps_per_epoch(train_blocks, config)
    total = config.epochs * steps_per_epoch
    if config.max_steps > 0:
        total = min(total, config.max_steps)
    if total < 1:
        raise ValueError(f"the budget allows no training step (epochs {config.epochs}, max_steps {config.max_steps})")

    from transformers import get_linear_schedule_with_warmup

    model.to(device)  # type: ignore[arg-type]
    model.train()
    if config.gradient_checkpointing:  # non-reentrant: works with frozen inputs (LoRA) and needs no input grads
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # type: ignore[no-untyped-call]
    bf16 = _bf16(config, device)
    optimiser = _optimiser(model, config)
    scheduler = get_linear_schedule_with_warmup(optimiser, round(config.warmup * total), total)  # type: ignore[no-untyped-call]
    state, best = LoopState(), None
    if resume is not None:
        state, best = dataclasses.replace(resume.state), resume.best
        optimiser.load_state_dict(resume.optimizer)
        scheduler.load_state_dict(resume.scheduler)
    network: nn.Module = nn.parallel.DistributedDataParallel(model) if world > 1 else model

    def snapshot() -> Snapshot:
        return Snapshot(dataclasses.replace(state), optimiser.state_dict(), scheduler.state_dict(), best)

    while state.step < total and not state.stopped and not state.out_of_time:
        order = torch.randperm(
            len(train_blocks), generator=torch.Generator().manual_seed(config.seed * 7919 + state.epoch)
        )
        while state.batch < steps_per_epoch and state.step < total and not state.out_of_time:
            started = time.perf_counter()
            rows = order[state.batch * batch_size : (state.batch + 1) * batch_size]  # the global batch
            mine = rows[rank::world]  # this process's share
            if train_blocks.lengths is not None:  # rows of samples: passes of alike lengths, each cut to its longest
                mine = mine[torch.argsort(train_blocks.lengths[mine], descending=True, stable=True)]
            count = train_blocks.tokens(rows)  # targets in the global batch: every process knows it
            torch.manual_seed(config.seed + 1_000_003 * (state.step + 1) + rank)  # dropout masks
            micro = torch.split(mine, config.micro_batch_size or len(mine))  # forward-backward passes of this step
            loss_sum = 0.0
            for i, part in enumerate(micro):
                last = i == len(micro) - 1  # DDP averages gradients over processes on the last pass only
                width = train_blocks.width(part)  # T for packed blocks
                with network.no_sync() if world > 1 and not last else contextlib.nullcontext():  # type: ignore[operator]
                    logits = _forward(network, train_blocks.inputs[part, :width].to(device), bf16)  # [b, W, V]
                    loss, _ = lm_loss(logits, train_blocks.targets[part, :width].to(device))
                    # summed loss scaled by N / (targets in the global batch): the passes add up to the mean's gradient
                    (loss * (world / count)).backward()  # type: ignore[no-untyped-call]
                loss_sum += float(loss.detach())
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimiser.step()
            scheduler.step()
            optimiser.zero_grad(set_to_none=True)
            (summed,) = all_sum([loss_sum], world, device)
            state.step, state.batch = state.step + 1, state.batch + 1
            state.tokens += count
            state.seconds += time.perf_counter() - started
            state.losses.append(summed / count)
            if config.max_seconds > 0:  # every process stops at the same step: rank 0's clock decides
                (over,) = all_sum([float(rank == 0 and state.seconds >= config.max_seconds)], world, device)
                state.out_of_time = over > 0
            due = config.checkpoint_every > 0 and state.step % config.checkpoint_every == 0
            if checkpoint is not None and due and state.batch < steps_per_epoch:  # an epoch's end writes its own
                checkpoint(snapshot())
            if progress is not None and rank == 0:
                metrics = {"loss": state.losses[-1], "tokens/s": state.tokens / state.seconds}
                progress(Update("training", state.step, total, "steps", metrics))

        if len(validation_blocks):
            shown = progress if rank == 0 else None
            loss_now = validation_loss(model, validation_blocks, config, world, rank, device, shown)
            state.validation.append(loss_now)
            if state.best is None or loss_now < state.best - config.min_delta:
                state.best, state.bad_epochs = loss_now, 0
                best = _trainable(model)
            else:
                state.bad_epochs += 1
                state.stopped = state.bad_epochs >= config.patience
        state.epoch, state.batch = state.epoch + 1, 0
        if checkpoint is not None:
            checkpoint(snapshot())
        if progress is not None and rank == 0 and state.validation:
            metrics = {"loss": state.validation[-1]}
            progress(Update("validation", state.epoch, config.epochs, "epochs", metrics))

    if best is not None:
        unexpected = model.load_state_dict(best, strict=False).unexpected_keys  # frozen weights are not in it
        assert not unexpected, f"best weights of unknown parameters {unexpected[:3]}"
    if config.gradient_checkpointing:
        model.gradient_checkpointing_disable()  # type: ignore[no-untyped-call]
    model.eval()  # type: ignore[no-untyped-call]
    return state


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the parameters that train (all of them, or LoRA's and the tag rows), by state-dict name."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def peak_memory() -> dict[str, float]:
    """Peak memory of this process so far in MB: resident set (`peak_rss_mb`, Linux/macOS) and, where CUDA was
    used, the most ever allocated on the device (`peak_cuda_mb`)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
    peaks = {"peak_rss_mb": rss / (2**20 if sys.platform == "darwin" else 2**10)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        peaks["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peaks


# --- the whole job ---------------------------------------------------------------------------------------------


def _actions(conversations: Sequence[Conversation]) -> list[str]:
    return sorted({turn.action for c in conversations for turn in c.turns if turn.action is not None})


def _fingerprint(*blocks: Blocks) -> str:
    digest = hashlib.sha256()
    for packed in blocks:
        digest.update(packed.inputs.numpy().tobytes())
    return digest.hexdigest()[:16]


def _note_texts(
    train_set: Sequence[Conversation], grounding: GroundingConfig, knowledge: KnowledgeIndex | None
) -> list[str]:
    """The texts of the notes a grounded model reads besides messages (events, passages): a from-scratch tokenizer
    learns its merges from them too. Exemplars are messages already."""
    texts: list[str] = []
    if grounding.events:
        for c in train_set:
            blocks = with_events([], c.events, grounding.skip_keys, grounding.event_chars)
            texts.extend(block.text for block in blocks if isinstance(block, Note))
    if grounding.knowledge and knowledge is not None:
        texts.extend(passage_note(passage).text for passage in knowledge.passages)
    return texts


def _start(
    train_set: Sequence[Conversation],
    actions: Sequence[str],
    config: TrainConfig,
    base_model: str | None,
    world: int,
    note_texts: Sequence[str] = (),
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """A new tokenizer and model: from a base checkpoint, or trained from scratch (the tokenizer on rank 0, sent to
    the others, so every process has the very same one). A grounded model's tokenizer has the notes' tags."""
    torch.manual_seed(config.seed)  # LoRA's A matrices, a from-scratch model: drawn from the seed
    notes = config.grounding.active
    if base_model is not None:
        tokenizer, model = load_base(base_model, actions, notes=notes)
        if config.lora.rank > 0:
            model = add_lora(model, config.lora, Codec(tokenizer).tag_ids())
        return tokenizer, model
    if config.lora.rank > 0:
        raise ValueError("LoRA (lora.rank > 0) adapts a pretrained base: give --base-model, or set lora.rank=0")
    texts = [" " + turn.text for conversation in train_set for turn in conversation.turns]
    texts += [" " + text for text in note_texts]
    if world == 1:
        tokenizer = train_tokenizer(texts, config.vocab_size, actions, notes=notes)
    else:  # rank 0 trains it and sends it as JSON: every process then has the very same tokenizer
        message: list[Any] = [None]
        if dist.get_rank() == 0:
            message = [train_tokenizer(texts, config.vocab_size, actions, notes=notes).backend_tokenizer.to_str()]
        dist.broadcast_object_list(message, src=0)
        tokenizer = wrap_tokenizer(message[0], actions, notes=notes)
    return tokenizer, new_model(config.model, tokenizer)


def training_blocks(
    codec: Codec,
    conversations: Sequence[Conversation],
    block_size: int,
    grounder: Grounder | None = None,
    max_rows: int = 0,
    seed: int = 0,
) -> Blocks:
    """The training data of `conversations`: packed blocks (events, where the grounding renders them, as inputs
    without targets), or with retrieved grounding one sample per agent message (`grounded_samples`); at most
    `max_rows` rows (a seeded sample; 0 = all), which for samples are drawn before their prompts are built."""
    if grounder is not None and grounder.config.retrieves:
        return grounded_samples(codec, grounder, conversations, block_size, max_rows, seed)
    if grounder is None or not grounder.config.events:
        blocks = pack(codec.encode_conversations(conversations), block_size, codec.eos)
    else:
        sequences: list[list[int]] = []
        trained: list[list[bool]] = []
        for conversation in conversations:
            parts = grounder.blocks(conversation)
            encoded = codec.encode_blocks(parts)
            sequences.append([codec.eos, *(i for ids in encoded for i in ids)])
            flags = (not isinstance(b, Note) for b, ids in zip(parts, encoded, strict=True) for _ in ids)
            trained.append([True, *flags])
        blocks = pack(sequences, block_size, codec.eos, trained)
    return blocks.sample(max_rows, seed) if max_rows else blocks


def grounded_samples(
    codec: Codec,
    grounder: Grounder,
    conversations: Sequence[Conversation],
    block_size: int,
    max_rows: int = 0,
    seed: int = 0,
) -> Blocks:
    """One sample per agent message: the prompt that inference would build for it (its history with the events
    before it, the passages retrieved for that history, the exemplars of its action from other conversations,
    `<|agent|>` and its action's tag) in `block_size` less the message's tokens, then the message and `<|end|>`,
    the targets. A message keeps at most half the block (its end then cut off), so every prompt has room. With
    `max_rows`, a seeded sample of that many messages (in corpus order): retrieval runs for them only."""
    places = [(c, i) for c in conversations for i, turn in enumerate(c.turns) if turn.speaker == "agent"]
    if 0 < max_rows < len(places):
        keep = torch.randperm(len(places), generator=torch.Generator().manual_seed(seed))[:max_rows]
        places = [places[i] for i in sorted(keep.tolist())]
    texts = codec.encode_texts([c.turns[i].text for c, i in places])
    messages = [[*text, codec.end][: max(1, block_size // 2)] for text in texts]
    histories = [
        Conversation(
            id=c.id, domain=c.domain, turns=c.turns[:i], events=[e for e in c.events if e.position <= i], meta=c.meta
        )
        for c, i in places
    ]
    prompts = grounder.prompts(
        histories,
        [c.turns[i].action for c, i in places],
        [block_size - len(message) for message in messages],
        [c.id for c, _ in places],
    )
    return samples([(p.ids + m, len(p.ids)) for p, m in zip(prompts, messages, strict=True)], codec.eos)


def train(
    conversations: Sequence[Conversation],
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    base_model: str | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    knowledge: KnowledgeIndex | None = None,
    exemplars: ExemplarIndex | None = None,
    embedder: SentenceEmbedder | None = None,
) -> TrainResult:
    """Train on the train split of `conversations` (validation split for early stopping; test never used) and write
    the model folder `out`. While training, `out/checkpoint/` holds the resumable state; `resume=True` continues
    from it with the run's own config (a different `config` is an error) and must see the same data.

    A config whose grounding reads knowledge needs `knowledge` (on resume too); one that carries exemplars uses
    `exemplars`, or else builds the index of the train split with `embedder` (default: the shared one), and saves it
    in the model folder (`out/exemplars`), where suggestions find it."""
    out = Path(out)
    folder = out / CHECKPOINT
    snapshot: Snapshot | None = None
    if resume:
        if not folder.is_dir():
            raise ValueError(f"{out}: no interrupted run to resume (no {CHECKPOINT}/ folder)")
        lm, snapshot, interrupted = load_checkpoint(folder)
        saved = config_from_dict(TrainConfig, interrupted.get("config"), str(folder / STATE_FILE), "config")
        if config is not None and config != saved:
            changed = [f.name for f in dataclasses.fields(saved) if getattr(config, f.name) != getattr(saved, f.name)]
            raise ValueError(f"{out}: a resumed run keeps its own config; this one differs in {', '.join(changed)}")
        config, base_model, tokenizer, model = saved, interrupted["base_model"], lm.tokenizer, lm.model
    else:
        if folder.exists():
            raise ValueError(f"{out} holds an interrupted run: resume it, or remove the folder to start again")
        kept = [path for path in out.iterdir() if not path.name.startswith(".")] if out.is_dir() else []
        if kept and not (out / INFO_FILE).exists():  # (dot files: leftovers of a checkpoint being written)
            raise ValueError(f"{out} exists and is not a model folder: the model would replace it, choose another")
        config = config or TrainConfig()
    rank, world, _ = process_group(config.device)
    train_set, validation_set = split(conversations, config.validation_fraction, config.seed)
    if not train_set:
        raise ValueError("no training conversations (meta.split 'train' or none)")
    grounding = config.grounding
    if grounding.knowledge and knowledge is None:
        raise ValueError("this model reads knowledge (grounding.knowledge > 0): give --knowledge FILE")
    if not resume:
        actions = [] if config.vanilla else _actions([*train_set, *validation_set])
        note_texts = _note_texts(train_set, grounding, knowledge)
        tokenizer, model = _start(train_set, actions, config, base_model, world, note_texts)

    codec = Codec(tokenizer, vanilla=config.vanilla)
    context = int(getattr(model.config, "n_positions", 0) or model.config.max_position_embeddings)
    block_size = min(config.block_size, context)
    grounder = None
    if grounding.active:
        if grounding.exemplars and exemplars is None:  # the train split's messages, as `convoplan lm index` builds
            from convoplan.embed import shared_embedder
            from convoplan.retrieval.exemplars import ExemplarIndex

            exemplars = ExemplarIndex.build(conversations, embedder or shared_embedder())
        grounder = Grounder(codec, grounding, knowledge=knowledge, exemplars=exemplars, embedder=embedder)
    train_blocks = training_blocks(codec, train_set, block_size, grounder, config.max_train_rows, config.seed)
    validation_blocks = training_blocks(
        codec, validation_set, block_size, grounder, config.max_validation_blocks, config.seed
    )
    fingerprint = _fingerprint(train_blocks, validation_blocks)
    run = {"config": dataclasses.asdict(config), "base_model": base_model, "data": fingerprint}
    if resume and interrupted["data"] != fingerprint:
        raise ValueError(f"{out}: these conversations are not the ones the interrupted run was training on")
    info: dict[str, Any] = {"vanilla": config.vanilla, "base_model": base_model, "block_size": block_size}
    if grounding.active:
        info["grounding"] = dataclasses.asdict(grounding)

    def write_checkpoint(snap: Snapshot) -> None:
        if rank == 0:
            save_checkpoint(folder, model, tokenizer, snap, info, run)
        barrier(world)

    config = dataclasses.replace(config, lr=learning_rate(config, base_model is not None))  # (run keeps None)
    state = fit(
        model, train_blocks, validation_blocks, config, resume=snapshot, checkpoint=write_checkpoint, progress=progress
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model = merge(model)  # a LoRA run is saved merged: an ordinary model folder (convoplan.lm.lora)
    parameters = sum(p.numel() for p in model.parameters())
    result = TrainResult(
        model, tokenizer, state, parameters, train_blocks.tokens(), _steps_per_epoch(train_blocks, config)
    )
    if rank == 0:
        training = training_record(
            config,
            state.losses,
            state.seconds,
            processes=world,
            parameters=result.parameters,
            train_tokens=result.train_tokens,
            tokens_trained=state.tokens,
            validation_tokens=validation_blocks.tokens(),
            epochs=round(result.epochs, 3),
            stopped_early=state.stopped,
            out_of_time=state.out_of_time,
            best_validation_loss=state.best,
            tokens_per_second=result.tokens_per_second,
            trainable_parameters=trainable,
            **peak_memory(),
        )
        if base_model is not None:  # the base brings its own architecture: the from-scratch one was not used
            del training["config"]["model"], training["config"]["vocab_size"]
            training["base"] = {
                "model": base_model,
                "architecture": model.config.architectures,
                "parameters": parameters,
            }
        else:
            del training["config"]["lora"]
        index = grounder.exemplars if grounder is not None else None

        def with_index(folder: Path) -> None:  # the exemplars the prompts read travel with the model
            if index is not None:
                from convoplan.retrieval.exemplars import EXEMPLARS

                index.save(folder / EXEMPLARS)

        # replaces out/ and its checkpoint/
        save_model(out, model, tokenizer, {**info, "training": training}, extra=with_index)
    barrier(world)
    return result

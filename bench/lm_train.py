"""LM training throughput: our loop (`convoplan.lm.train.fit`) against the transformers `Trainer` (issues 6, 15).

Both train copies of the same model (a freshly initialised GPT-2, or with --base-model a pretrained base, whole or
with --lora-rank LoRA) on the same packed blocks of PersuasionForGood's training split (a from-scratch byte-level
BPE, or the base's tokenizer), with the same batch size and passes per step (gradient accumulation), AdamW settings,
linear warm-up and decay, and gradient clipping, for the same number of steps, on the CPU. The rounds alternate
which loop goes first, so that load on a shared machine hits both alike. Throughput = target tokens per second of
training steps: for our loop the gap between consecutive progress callbacks (one step, batch slicing included), for
the Trainer the time from its `on_step_begin` to its `on_step_end` callback (data loading excluded, in its favour).
The headline uses the median step after the first (robust to load spikes on a shared machine); the rate over all
steps of each round and the wall time of each whole call are shown beside it.

    .venv/bin/python bench/lm_train.py --data runs/data/persuasion.jsonl
    .venv/bin/python bench/lm_train.py --base-model runs/smollm2 --lora-rank 16 --steps 6 --rounds 2 --micro-batch 4
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
import transformers

from convoplan.lm.data import Blocks, pack, split
from convoplan.lm.lora import LoraConfig, add_lora
from convoplan.lm.model import ModelConfig, load_base, new_model
from convoplan.lm.tokenizer import Codec, train_tokenizer
from convoplan.lm.train import TrainConfig, fit
from convoplan.schema import read_jsonl


class BlockDataset(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """The packed blocks as the Trainer wants them: the model shifts `labels` itself, so labels = input ids."""

    def __init__(self, blocks: Blocks) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks.inputs[i], "labels": self.blocks.inputs[i]}


class StepTimer(transformers.TrainerCallback):
    """Seconds of every Trainer step, from on_step_begin to on_step_end."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.started = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seconds.append(time.perf_counter() - self.started)


@dataclass
class Run:
    steps: list[float]
    """Seconds of each step after the first (the first pays for allocations)."""
    total: float
    """Seconds of all steps."""
    wall: float
    """Seconds of the whole call."""
    loss: float
    """Mean training loss over the steps."""


def run_ours(model: Any, blocks: Blocks, validation: Blocks, config: TrainConfig) -> Run:
    # The progress callback runs right after every step: the gaps between its calls are the steps' durations.
    ticks: list[float] = []
    start = time.perf_counter()
    state = fit(model, blocks, validation, config, progress=lambda report: ticks.append(time.perf_counter()))
    wall = time.perf_counter() - start
    steps = [b - a for a, b in itertools.pairwise(ticks[: config.max_steps])]
    return Run(steps, state.seconds, wall, statistics.mean(state.losses))


def run_trainer(model: Any, blocks: Blocks, config: TrainConfig) -> Run:
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as folder:
        arguments = transformers.TrainingArguments(
            output_dir=folder,
            per_device_train_batch_size=config.micro_batch_size or config.batch_size,
            gradient_accumulation_steps=config.batch_size // (config.micro_batch_size or config.batch_size),
            max_steps=config.max_steps,
            learning_rate=config.lr,
            weight_decay=config.weight_decay,
            adam_beta2=0.95,
            warmup_steps=round(config.warmup * config.max_steps),
            lr_scheduler_type="linear",
            max_grad_norm=config.grad_clip,
            logging_steps=config.max_steps,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=config.seed,
        )
        trainer = transformers.Trainer(model=model, args=arguments, train_dataset=BlockDataset(blocks))
        trainer.add_callback(timer)
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)  # no log lines in the table
        start = time.perf_counter()
        output = trainer.train()
        wall = time.perf_counter() - start
    return Run(timer.seconds[1:], sum(timer.seconds), wall, float(output.training_loss))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="runs/data/persuasion.jsonl")
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps per timed run")
    parser.add_argument("--rounds", type=int, default=4, help="timed runs of each, alternating")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--context", type=int, default=256, help="block size = context length")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--base-model", default=None, help="a pretrained base (e.g. a `lm base smollm2` folder)")
    parser.add_argument("--lora-rank", type=int, default=0, help="LoRA on the base (0: every weight trains)")
    parser.add_argument("--micro-batch", type=int, default=0, help="blocks per pass (0: the whole batch)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()

    train_set, _ = split(read_jsonl(args.data), 0.1, 0)
    texts = [" " + turn.text for conversation in train_set for turn in conversation.turns]
    actions = sorted({t.action for c in train_set for t in c.turns if t.action is not None})
    if args.base_model is not None:
        tokenizer, base = load_base(args.base_model, actions)
    else:
        tokenizer = train_tokenizer(texts, args.vocab, actions)
    codec = Codec(tokenizer)
    # Only full blocks, so both sides train on exactly steps * batch * context target tokens.
    packed = pack(codec.encode_conversations(train_set), args.context, codec.eos)
    full = args.steps * args.batch_size
    blocks = Blocks(packed.inputs[:full], packed.targets[:full])
    validation = Blocks(packed.inputs[full : full + 1], packed.targets[full : full + 1])  # a token validation pass
    model_config = ModelConfig(n_layer=args.layers, n_head=4, n_embd=args.width, n_positions=args.context)
    config = TrainConfig(model=model_config, batch_size=args.batch_size, epochs=1, max_steps=args.steps)
    lora = LoraConfig(rank=args.lora_rank)
    config = replace(config, lr=5e-4, warmup=0.1, device="cpu", micro_batch_size=args.micro_batch, lora=lora)
    torch.manual_seed(0)
    initial = new_model(model_config, codec.tokenizer) if args.base_model is None else base
    if args.lora_rank > 0:
        initial = add_lora(initial, lora, codec.tag_ids())
    initial.config.use_cache = False  # a training step needs no KV cache, in either loop
    parameters = sum(p.numel() for p in initial.parameters())
    trainable = sum(p.numel() for p in initial.parameters() if p.requires_grad)
    described = f"GPT-2, {args.layers} layers x {args.width}" if args.base_model is None else args.base_model
    if args.lora_rank:
        described += f" with LoRA rank {args.lora_rank}"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch "
        f"{torch.__version__}, transformers {transformers.__version__} ({args.threads} thread(s)); "
        f"{time.strftime('%Y-%m-%d')}\nmodel: {described}, block {args.context}, "
        f"vocabulary {len(codec.tokenizer):,}, {parameters:,} parameters ({trainable:,} trainable); {args.steps} steps "
        f"of {args.batch_size} blocks in passes of {args.micro_batch or args.batch_size} = {blocks.tokens():,} target "
        f"tokens per run, {args.rounds} rounds each\n"
    )
    tokens_per_step = args.batch_size * args.context
    runs: dict[str, list[Run]] = {"ours": [], "Trainer": []}
    for round_ in range(args.rounds):  # alternate which goes first, so that neither always meets the same load
        for name in ("ours", "Trainer") if round_ % 2 == 0 else ("Trainer", "ours"):
            model = copy.deepcopy(initial)
            run = run_ours(model, blocks, validation, config) if name == "ours" else run_trainer(model, blocks, config)
            runs[name].append(run)
    print("| loop | tokens/s, median step | tokens/s, all steps (each round) | wall s per run (median) | mean loss |")
    print("|---|---|---|---|---|")
    median_rate = {}
    for name, label in (("ours", "convoplan `fit`"), ("Trainer", "transformers `Trainer`")):
        median_rate[name] = tokens_per_step / statistics.median(s for run in runs[name] for s in run.steps)
        each = ", ".join(f"{blocks.tokens() / run.total:,.0f}" for run in runs[name])
        wall = statistics.median(run.wall for run in runs[name])
        loss = statistics.mean(run.loss for run in runs[name])
        print(f"| {label} | {median_rate[name]:,.0f} | {each} | {wall:.1f} | {loss:.3f} |")
    print(f"\nours / Trainer (median step): {median_rate['ours'] / median_rate['Trainer']:.2f}x")


if __name__ == "__main__":
    main()

"""Action-directed LM against the vanilla LM (issue 6): corpus BLEU overall and per action, and action adherence,
for (a) vanilla, (b) action-directed with the true next action, (c) action-directed with the predicted one.

Both LMs are trained here on the same conversations with the same config and budget (`convoplan.lm.train`; the
vanilla one without action tags), unless given as folders; then `convoplan.lm.evaluate.evaluate_lm` writes every
labelled agent message of the test split again from its true history (greedy decoding, at most 40 tokens) and
scores it. Adherence asks the labeller (`convoplan label train`) which action each written message carries. The
next action comes from a next-best-action folder (`--nba`, `convoplan nba train`), or else from the frequency
baseline (the most frequent successor of the previous action) fitted on the training split.

Writes OUT/lm and OUT/lm-vanilla (the models), OUT/report.{md,json,png}, OUT/messages.jsonl (every message
written) and OUT/models.md, and prints the report with the models' sizes, token counts and training times.

    # smoke test: a tiny budget, proves the path end to end
    .venv/bin/python bench/lm_eval.py --data runs/data/persuasion-labelled.jsonl --labeller runs/labeller-p4g \\
        --out runs/bench-lm/persuasion-smoke --epochs 1 --max-messages 200
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import transformers

from convoplan.actions.evaluate import FrequencyBaseline
from convoplan.actions.labeller import load_labeller
from convoplan.actions.load import load_nba
from convoplan.actions.protocols import NextActionModel
from convoplan.atomic import atomic_write
from convoplan.lm.evaluate import EvalConfig, evaluate_lm
from convoplan.lm.generate import SamplingConfig
from convoplan.lm.model import LanguageModel, ModelConfig, load_model
from convoplan.lm.train import TrainConfig, train
from convoplan.progress import ProgressDisplay
from convoplan.report import write_report
from convoplan.schema import Conversation, read_jsonl


def trained(
    name: str, folder: str | None, out: Path, conversations: list[Conversation], config: TrainConfig, base: str | None
) -> LanguageModel:
    """The model in `folder`, or one trained now into `out` (same config for both models but `vanilla`)."""
    if folder is None:
        started = time.perf_counter()
        print(f"training the {name} model into {out} ...", flush=True)
        with ProgressDisplay() as progress:
            train(conversations, out, config, base_model=base, progress=progress)
        print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
        folder = str(out)
    return load_model(folder)


def model_row(name: str, lm: LanguageModel) -> str:
    training: dict[str, Any] = lm.info.get("training") or {}
    parameters = sum(p.numel() for p in lm.model.parameters())

    def value(key: str, spec: str) -> str:
        return "n/a" if training.get(key) is None else format(training[key], spec)

    return (
        f"| {name} | {parameters:,} | {value('train_tokens', ',')} | {value('epochs', '.3g')} | {value('steps', 'd')} "
        f"| {value('seconds', '.0f')} | {value('tokens_per_second', ',.0f')} | {value('best_validation_loss', '.3f')} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="canonical conversations with meta.split and actions")
    parser.add_argument("--labeller", required=True, help="labeller folder (adherence)")
    parser.add_argument("--nba", default=None, help="next-best-action folder (default: frequency baseline)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--title", default=None)
    parser.add_argument("--model", default=None, help="an action-directed model folder (no training)")
    parser.add_argument("--vanilla-model", default=None, help="a vanilla model folder (no training)")
    parser.add_argument("--base-model", default=None, help="fine-tune this checkpoint (e.g. gpt2) instead")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=0, help="cap on optimiser steps (0: none)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=16, help="training blocks per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-messages", type=int, default=0, help="evaluate a seeded sample (0: all)")
    parser.add_argument("--all-labels", action="store_true", help="also messages labelled by a labeller")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--generation-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]

    started = time.perf_counter()
    conversations = read_jsonl(args.data)
    model = ModelConfig(n_layer=args.layers, n_head=args.heads, n_embd=args.width, n_positions=args.context)
    config = TrainConfig(
        model=model,
        vocab_size=args.vocab,
        batch_size=args.batch_size,
        lr=args.lr,
        epochs=args.epochs,
        max_steps=args.max_steps,
        device=args.device,
    )
    action_lm = trained("action-directed", args.model, args.out / "lm", conversations, config, args.base_model)
    vanilla_config = replace(config, vanilla=True)
    vanilla_lm = trained(
        "vanilla", args.vanilla_model, args.out / "lm-vanilla", conversations, vanilla_config, args.base_model
    )
    for lm in (action_lm, vanilla_lm):
        lm.model.to(args.device)

    labeller = load_labeller(args.labeller)
    nba: NextActionModel
    if args.nba is not None:
        nba, nba_name = load_nba(args.nba), args.nba
    else:
        train_split = [c for c in conversations if c.meta.get("split") == "train"]
        nba, nba_name = FrequencyBaseline(order=1).fit(train_split), "frequency baseline (order 1, train split)"
    evaluation = EvalConfig(
        sampling=SamplingConfig(do_sample=False, max_new_tokens=args.max_new_tokens),
        batch_size=args.generation_batch,
        human_labels_only=not args.all_labels,
        max_messages=args.max_messages,
    )
    title = args.title or f"Action-directed LM on {Path(args.data).name}"
    print("evaluating ...", flush=True)
    evaluating = time.perf_counter()
    report = evaluate_lm(conversations, action_lm, vanilla_lm, labeller, nba, evaluation, title=title)
    evaluation_seconds = time.perf_counter() - evaluating
    paths = write_report(report, args.out, extra={"messages.jsonl": report.messages_jsonl()})

    models = [
        "| model | parameters | train tokens per epoch | epochs | steps | training s | tokens/s | best val. loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        model_row("action-directed", action_lm),
        model_row("vanilla", vanilla_lm),
    ]
    header = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} torch thread(s), device {args.device}; "
        f"torch {torch.__version__}, transformers {transformers.__version__}",
        f"labeller: {args.labeller} ({labeller.version}); next action: {nba_name}",
        f"evaluation: {evaluation_seconds:.0f} s; whole run: {time.perf_counter() - started:.0f} s",
    ]
    print("\n".join(header) + "\n\n" + "\n".join(models) + "\n\n" + report.markdown())
    with atomic_write(args.out / "models.md") as stream:
        stream.write("\n".join(header) + "\n\n" + "\n".join(models) + "\n")
    print(f"wrote {', '.join(str(p) for p in paths.values())}, {args.out / 'models.md'}")


if __name__ == "__main__":
    main()

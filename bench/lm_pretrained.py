"""Pretrained against from-scratch LMs (issue 15): each system writes the same seeded sample of human-labelled test
messages again from their true histories (greedy, at most 40 tokens), with the message's true action where the
system is action-directed, beside the two retrieval baselines (the most frequent train message of the true action,
and the nearest exemplar by context: `convoplan.lm.evaluate.baseline_messages`); corpus BLEU overall and per action,
adherence (the labeller's verdict on the written message against the true action), the generated/reference length
ratio, and what each system cost to train.

Systems are model folders (`--system NAME=FOLDER`, written by `convoplan lm train`: directed or vanilla, as the
folder says) and, with `--untuned BASE`, the base before fine-tuning (its tags initialised from their meaning as
training would start, `convoplan.lm.model.init_tags`), prompted with the action tag. The first system is the one
the others are compared with per action.

    .venv/bin/python bench/lm_pretrained.py --data runs/data/persuasion.jsonl --labeller runs/labeller-p4g \\
        --system "SmolLM2 directed=runs/p15/persuasion-smollm2-directed" \\
        --system "SmolLM2 vanilla=runs/p15/persuasion-smollm2-vanilla" \\
        --system "5M directed=runs/p15/persuasion-5m-directed" --untuned runs/smollm2 --out runs/p15/eval-persuasion

Grounded systems (`convoplan lm train --set grounding...`, docs/lm.md "Grounding") write from the prompts they were
trained on: their folder's exemplar index, and `--knowledge FILE`'s passages. With `--knowledge` every system's
claims are also checked against the file (the grounding check: the share of messages whose statements and numbers
a passage of the entity in focus supports), and on data with items an API returned (STAR) slot precision and recall
are reported. `--actions fact,attribute` evaluates only messages of those actions (the seeded sample drawn from them).

With `--int8` every system is also evaluated with its linear layers quantised to int8 (`load_model(...,
"int8")`, torch's dynamic quantisation), as "NAME int8": the quality cost of serving quantised (issue 16).

Writes OUT/report.{md,json,png}, OUT/messages.jsonl (every message written, with the labeller's verdict) and
prints the report with a table of the systems' training cost (from their folders' training records).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import transformers

from convoplan.actions.labeller import load_labeller
from convoplan.embed import SentenceEmbedder, default_cache_dir
from convoplan.lm.evaluate import FREQUENT, NEAREST, EvalConfig, LMWriter, baseline_messages, score_systems, targets
from convoplan.lm.generate import SamplingConfig
from convoplan.lm.grounding import Grounder, grounding_config
from convoplan.lm.model import LanguageModel, load_base, load_model
from convoplan.lm.tokenizer import Codec
from convoplan.progress import ProgressDisplay
from convoplan.report import write_report
from convoplan.retrieval.exemplars import EXEMPLARS, ExemplarIndex, load_exemplars
from convoplan.retrieval.knowledge import KnowledgeIndex
from convoplan.retrieval.support import item_vocabulary
from convoplan.schema import read_jsonl


def untuned(base: str, actions: list[str], block_size: int) -> LanguageModel:
    """The base as fine-tuning starts from it: the tags added and initialised, no step taken."""
    tokenizer, model = load_base(base, actions)
    model.eval()  # type: ignore[no-untyped-call]
    info = {"vanilla": False, "actions": actions, "base_model": base, "block_size": block_size}
    return LanguageModel(model, tokenizer, Codec(tokenizer), info)


def cost_row(name: str, lm: LanguageModel, seconds: float) -> str:
    """What the system cost: parameters, tokens and time of training, peak memory, and writing time here."""
    training: dict[str, Any] = lm.info.get("training") or {}
    parameters = (
        (training.get("parameters") or 0) if lm.network is None else sum(p.numel() for p in lm.model.parameters())
    )
    tokens = training.get("tokens_trained")
    if tokens is None and "epochs" in training:  # records written before tokens_trained was
        tokens = round(training["epochs"] * training["train_tokens"])

    def value(key: str, spec: str) -> str:
        return "n/a" if training.get(key) is None else format(training[key], spec)

    kind = "vanilla" if lm.codec.vanilla else "directed"
    base = (training.get("base") or {}).get("model") or lm.info.get("base_model") or "from scratch"
    return (
        f"| {name} | {kind} | {base} | {parameters:,} | {value('trainable_parameters', ',')} "
        f"| {'n/a' if tokens is None else format(tokens, ',')} | {value('steps', 'd')} | {value('seconds', ',.0f')} "
        f"| {value('tokens_per_second', ',.0f')} | {value('peak_rss_mb', ',.0f')} | {seconds:,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="canonical conversations with meta.split and actions")
    parser.add_argument("--labeller", required=True, help="labeller folder (adherence)")
    parser.add_argument("--system", action="append", required=True, help="NAME=MODEL_FOLDER (repeat)")
    parser.add_argument("--untuned", default=None, help="also the base before fine-tuning (a base folder)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--title", default=None)
    parser.add_argument("--max-messages", type=int, default=300, help="seeded sample of test messages (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--generation-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--int8", action="store_true", help="also every PyTorch system with int8 linear layers")
    parser.add_argument("--knowledge", type=Path, default=None, help="knowledge file: grounded prompts and the check")
    parser.add_argument("--actions", default=None, help="only messages of these actions (comma-separated)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]

    conversations = read_jsonl(args.data)
    config = EvalConfig(
        sampling=SamplingConfig(do_sample=False, max_new_tokens=args.max_new_tokens),
        batch_size=args.generation_batch,
        max_messages=args.max_messages,
        seed=args.seed,
    )
    if args.actions is None:
        found = targets(conversations, config)
    else:  # the seeded sample is drawn from the messages of these actions
        wanted = set(args.actions.split(","))
        every = [t for t in targets(conversations, replace(config, max_messages=0)) if t.action in wanted]
        keep = list(range(len(every)))
        if 0 < args.max_messages < len(every):
            keep = sorted(random.Random(args.seed).sample(keep, args.max_messages))
        found = [every[i] for i in keep]
    sentences = SentenceEmbedder(cache_dir=default_cache_dir())
    knowledge = None if args.knowledge is None else KnowledgeIndex.from_file(args.knowledge, embedder=sentences)
    histories, true = [t.history for t in found], [t.action for t in found]
    systems: dict[str, LanguageModel] = {}
    grounders: dict[str, Grounder] = {}
    for spec in args.system:
        name, sep, folder = spec.partition("=")
        if not sep:
            parser.error(f"--system {spec!r}: expected NAME=FOLDER")
        systems[name] = load_model(folder)
        grounding = grounding_config(systems[name].info)
        own = load_exemplars(Path(folder) / EXEMPLARS) if grounding.exemplars else None
        grounders[name] = Grounder(
            systems[name].codec, grounding, knowledge=knowledge, exemplars=own, embedder=sentences
        )
        if args.int8 and systems[name].network is not None:  # (an exported folder is quantised as exported)
            systems[f"{name} int8"] = load_model(folder, "int8")
            grounders[f"{name} int8"] = grounders[name]
    if args.untuned is not None:
        directed = next(lm for lm in systems.values() if not lm.codec.vanilla)
        systems["SmolLM2 untuned" if "smollm2" in args.untuned.lower() else "base untuned"] = untuned(
            args.untuned, sorted(directed.codec.actions), directed.context
        )

    written: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    grounded: list[str] = []
    with ProgressDisplay() as progress:
        for name, lm in systems.items():
            actions = [None if lm.codec.vanilla else a for a in true]
            started = time.perf_counter()
            writer = LMWriter(lm, config.sampling, config.batch_size, grounders.get(name))
            written[name] = writer.write(histories, actions, progress)
            seconds[name] = time.perf_counter() - started
            print(f"{name}: {len(found)} messages in {seconds[name]:.0f} s", flush=True)
            if writer.grounder.config.active:
                reads = {k: v for k, v in dataclasses.asdict(writer.grounder.config).items() if k != "skip_keys"}
                grounded.append(f"{name} reads {reads}; {writer.prompts_cut} prompts cut: {writer.cut.describe()}")
    # The retrieval baselines, told the true action: what copying a past message scores (no LM).
    index = ExemplarIndex.build(conversations, sentences)
    written |= baseline_messages(found, index, sentences)
    notes = [
        f"{len(found)} human-labelled agent messages of the test split (seeded sample, seed {args.seed}), "
        f"{len(set(true))} actions; greedy decoding, at most {args.max_new_tokens} tokens; directed systems get "
        "the true action, vanilla ones none; adherence counts the labeller's verdict = the true action",
    ]
    report = score_systems(
        found,
        written,
        dict.fromkeys(written, true),
        load_labeller(args.labeller),
        title=args.title or f"Pretrained and from-scratch LMs on {Path(args.data).name}",
        notes=[
            *notes,
            f"{FREQUENT} and {NEAREST}: train messages of the true action, no LM ({len(index)} indexed)",
            *grounded,
        ],
        knowledge=knowledge,
        vocabulary=item_vocabulary(c for c in conversations if c.meta.get("split") == "train"),
    )
    first = next(iter(systems))
    comparisons = [(name, first) for name in systems if name != first]
    report = replace(report, comparisons=(*comparisons, (first, FREQUENT), (first, NEAREST)))
    machine = (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{args.threads} thread(s)"
    )
    costs = "\n".join(
        [
            "| system | kind | base | parameters | trainable | tokens trained | steps | training s | tokens/s "
            "| peak RSS MB | writing s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *(cost_row(name, lm, seconds[name]) for name, lm in systems.items()),
        ]
    )
    paths = write_report(report, args.out, {"messages.jsonl": report.messages_jsonl(), "costs.md": costs + "\n"})
    print(report.markdown())
    print(costs)
    print(machine)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    main()

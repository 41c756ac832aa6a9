"""`convoplan label`: train an action classifier on labelled agent messages, evaluate it, label unlabelled ones."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from convoplan.cli.common import (
    EmbeddingCache,
    FileArg,
    ShowConfig,
    SkipInvalid,
    console,
    embedder,
    errors,
    fail,
    load,
    model_folder,
    output_file,
    progress_display,
    say,
    set_option,
)
from convoplan.corpora.splits import in_split
from convoplan.progress import Progress, Update

if TYPE_CHECKING:
    from convoplan.actions.labeller import ActionClassifier

label_app = typer.Typer(
    help="Action labelling: train a classifier of agent messages, evaluate it, label the unlabelled ones.",
    no_args_is_help=True,
)

ModelArg = Annotated[Path, typer.Argument(help="A labeller folder written by `convoplan label train`.")]


def _labeller(model: Path, cache: Path | None, progress: Progress | None = None) -> ActionClassifier:
    from convoplan.actions.labeller import load_labeller

    try:
        return load_labeller(model, embedder(cache, progress))
    except ValueError as error:
        fail(str(error))


@label_app.command("train")
def label_train(
    file: FileArg,
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for the trained labeller.", callback=model_folder("convoplan.actions.labeller", "labeller")
        ),
    ],
    embedding_cache: EmbeddingCache = None,
    overrides: Annotated[list[str] | None, set_option("epochs=30")] = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Train on the human-labelled agent messages of the train split; select and calibrate on the validation split.

    Example (the published PersuasionForGood set: 10 strategies, the rest as one class):

        convoplan label train runs/data/persuasion.jsonl --out runs/labeller-p4g
          --set labels=logical-appeal,emotion-appeal,... --set other_label=non-strategy
    """
    from convoplan.actions.train_labeller import LabellerConfig, save_labeller, train_labeller
    from convoplan.cli.common import configured

    config = configured(LabellerConfig(), overrides, show_config)
    conversations = load(file, skip_invalid)
    train, validation = in_split(conversations, "train"), in_split(conversations, "validation")
    with progress_display() as progress:
        try:
            classifier, record = train_labeller(
                train, validation, config, embedder(embedding_cache, progress), out.name, progress
            )
        except ValueError as error:
            fail(f"{file}: {error}")
    save_labeller(out, classifier, config, record | {"file": str(file)})
    unseen = record["validation_unseen_labels"]
    if unseen:
        listed = ", ".join(f"{label} ({count})" for label, count in sorted(unseen.items()))
        say(f"left out of validation, labels the train split never has: {listed}", to=errors)
    say(
        f"trained {classifier.version} on {record['messages']} messages, {len(classifier.labels)} labels: "
        f"validation macro-F1 {record['validation_macro_f1']:.3f}, temperature {record['temperature']:.2f}; wrote {out}"
    )


@label_app.command("eval")
def label_eval(
    model: ModelArg,
    file: FileArg,
    split: Annotated[str, typer.Option(help="Which split to evaluate on ('all' for every conversation).")] = "test",
    embedding_cache: EmbeddingCache = None,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json", help="Also write the metrics, per-label F1 included, as JSON here.", callback=output_file
        ),
    ] = None,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Accuracy, macro-F1 and calibration on the human-labelled agent messages of a split, labelled as `apply`
    would label them (every previous action predicted). The F1 of every label is in the --json file."""
    from dataclasses import asdict

    from convoplan.actions.train_labeller import evaluate_labeller
    from convoplan.atomic import atomic_write

    classifier = _labeller(model, embedding_cache)
    conversations = load(file, skip_invalid)
    chosen = conversations if split == "all" else in_split(conversations, split)
    try:
        metrics = evaluate_labeller(classifier, chosen)
    except ValueError as error:
        fail(f"{file} ({split} split): {error}")
    table = Table(title=f"{classifier.version} on {file.name} ({split}: {len(chosen)} conversations)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in ("messages", "accuracy", "macro_f1", "expected_calibration_error", "coverage", "accuracy_covered"):
        value = getattr(metrics, name)
        table.add_row(name.replace("_", " "), f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    if json_out is not None:
        with atomic_write(json_out) as handle:
            json.dump(asdict(metrics), handle, indent=2)


class Engine(StrEnum):
    local = "local"
    ray = "ray"


@label_app.command("apply")
def label_apply(
    model: ModelArg,
    file: FileArg,
    out: Annotated[
        Path, typer.Option(help="Where to write the labelled conversations (.jsonl).", callback=output_file)
    ],
    engine: Annotated[Engine, typer.Option(help="local, or ray: a Ray Data job (pip install 'convoplan\\[ray]').")] = (
        Engine.local
    ),
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start a local one).")] = None,
    cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray cluster (default: all).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Conversations per labelling batch.")] = 64,
    embedding_cache: EmbeddingCache = None,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Label the agent messages that have no human label, recording action, confidence and the labeller's version.

    Human labels are never overwritten; the output is written atomically (the input is never modified).
    """
    from convoplan.actions.labeller import apply_labels
    from convoplan.schema import write_jsonl

    if out.resolve() == file.resolve():
        fail(f"--out {out} is the input file; write the labelled copy elsewhere")
    conversations = load(file, skip_invalid)
    if engine is Engine.ray:
        from convoplan.actions.ray_engine import apply_labels_ray

        try:
            labelled, count = apply_labels_ray(conversations, model, batch_size, address=address, cpus=cpus)
        except (ValueError, ImportError) as error:
            fail(str(error))
    else:
        labelled, count = [], 0
        with progress_display() as progress:
            classifier = _labeller(model, embedding_cache, progress)
            for start in range(0, len(conversations), batch_size):
                chunk, added = apply_labels(conversations[start : start + batch_size], classifier)
                labelled.extend(chunk)
                count += added
                progress(Update("labelling", len(labelled), len(conversations), "conversations"))
    write_jsonl(out, labelled)
    say(f"labelled {count} agent messages in {len(labelled)} conversations; wrote {out}", to=errors)

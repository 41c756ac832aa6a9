"""`convoplan nba`: train and evaluate next-best-action models (supervised, or outcome-driven Q-learning)."""

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
    configured,
    console,
    embedder,
    errors,
    fail,
    load,
    model_folder,
    progress_display,
    say,
    set_option,
)
from convoplan.schema import Conversation

if TYPE_CHECKING:
    from convoplan.actions.nba import SupervisedNBA
    from convoplan.actions.outcome import OutcomeNBA

nba_app = typer.Typer(
    help="Next-best-action: predict the agent's next action (supervised) or pick it for the outcome (Q-learning).",
    no_args_is_help=True,
)


class Kind(StrEnum):
    supervised = "supervised"
    outcome = "outcome"


def _split(conversations: list[Conversation], split: str) -> list[Conversation]:
    return [c for c in conversations if c.meta.get("split") == split]


def _labelled(conversations: list[Conversation]) -> list[Conversation]:
    return [c for c in conversations if any(t.speaker == "agent" and t.action for t in c.turns)]


@nba_app.command("train")
def nba_train(
    logs: FileArg,
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for the trained model.", callback=model_folder("convoplan.actions.nba", "next-action model")
        ),
    ],
    kind: Annotated[Kind, typer.Option(help="supervised: classify the next action; outcome: Q-learning.")] = (
        Kind.supervised
    ),
    train_split: Annotated[str, typer.Option(help="meta.split of the training conversations.")] = "train",
    validation_split: Annotated[
        str, typer.Option(help="meta.split of the early-stopping conversations (supervised).")
    ] = "validation",
    overrides: Annotated[list[str] | None, set_option("epochs=20")] = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
    embedding_cache: EmbeddingCache = None,
) -> None:
    """Train on the conversations of one split whose agent turns carry actions; write config.json +
    model.safetensors to OUT. The outcome kind uses only conversations with an outcome."""
    from convoplan.actions.nba import NBAConfig
    from convoplan.actions.outcome import OutcomeConfig
    from convoplan.actions.train_nba import train_nba
    from convoplan.actions.train_outcome import train_outcome
    from convoplan.progress import renamed

    config: NBAConfig | OutcomeConfig = NBAConfig() if kind is Kind.supervised else OutcomeConfig()
    config = configured(config, overrides, show_config)
    conversations = load(logs, skip_invalid)
    train = _labelled(_split(conversations, train_split))
    if not train:
        fail(f"{logs}: no conversations with meta.split == {train_split!r} whose agent turns carry actions")
    validation = _labelled(_split(conversations, validation_split))
    if isinstance(config, NBAConfig) and not validation:  # as label train: no early stopping on nothing
        fail(
            f"{logs}: the validation split is empty (no conversations with meta.split == {validation_split!r} whose "
            "agent turns carry actions), and early stopping needs it: mark some conversations with that split, or "
            "name another with --validation-split"
        )
    model: SupervisedNBA | OutcomeNBA
    try:
        with progress_display() as progress:
            sentences = embedder(embedding_cache, progress)
            track = renamed(progress, f"training {kind.value}")
            if isinstance(config, NBAConfig):
                result = train_nba(train, sentences, config, validation, track)
                model = result.model
                summary = (
                    f"best epoch {result.best_epoch}: validation loss {model.training['best_validation_loss']:.3f}, "
                    f"top-1 {model.training['best_validation_top1']:.3f} on {len(validation)} conversations"
                )
            else:
                outcome = train_outcome(train, sentences, config, track)
                model = outcome.model
                summary = f"{outcome.steps} steps of {outcome.conversations} conversations with an outcome"
    except ValueError as error:
        fail(str(error))
    model.save(out)
    say(f"trained {kind.value} next-best-action on {len(train)} conversations ({summary}); wrote {out}")


@nba_app.command("eval")
def nba_eval(
    model_folder: Annotated[Path, typer.Argument(help="A trained next-best-action model folder.", show_default=False)],
    logs: FileArg,
    split: Annotated[str, typer.Option(help="meta.split of the conversations to evaluate on ('all': every one).")] = (
        "test"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    skip_invalid: SkipInvalid = False,
    embedding_cache: EmbeddingCache = None,
) -> None:
    """Top-1 and top-3 accuracy of the model's ranking against the logged action of every labelled agent message
    of the split, each predicted from the conversation before it, beside two baselines fitted on the train split:
    the majority action, and the action that most often followed the previous one."""
    from convoplan.actions.evaluate import FrequencyBaseline, evaluate_next_actions
    from convoplan.actions.load import load_nba

    try:
        model = load_nba(model_folder, embedder(embedding_cache))
    except ValueError as error:
        fail(str(error))
    conversations = load(logs, skip_invalid)
    chosen = _labelled(conversations if split == "all" else _split(conversations, split))
    if not chosen:
        fail(f"{logs}: no conversations with meta.split == {split!r} whose agent turns carry actions")
    train = _labelled(_split(conversations, "train"))
    if not train:
        fail(f"{logs}: no train split to fit the baselines on (conversations with meta.split == 'train')")
    systems = {
        f"{model.kind} model": model,
        "majority action": FrequencyBaseline(order=0).fit(train),
        "most frequent after the previous action": FrequencyBaseline(order=1).fit(train),
    }
    with errors.status("predicting"):
        scores = {name: evaluate_next_actions(system, chosen) for name, system in systems.items()}
    accuracy = scores[f"{model.kind} model"]
    if as_json:
        rows = {name: score.to_dict() for name, score in scores.items()}
        say(json.dumps({"model": str(model_folder), "kind": model.kind, "split": split, "systems": rows}))
        return
    table = Table(
        title=f"next action on {accuracy.targets} labelled agent messages of {accuracy.conversations} "
        f"conversations ({split})"
    )
    for column in ("system", "top-1", "top-3"):
        table.add_column(column, justify="left" if column == "system" else "right")
    for name, score in scores.items():
        table.add_row(name, f"{score.top1:.3f}", f"{score.top3:.3f}")
    console.print(table)
    if accuracy.unseen:
        say(f"{accuracy.unseen} of them carry an action unknown to the model (always a miss)", to=errors)

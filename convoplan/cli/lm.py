"""`convoplan lm`: train the action-directed language model (or its vanilla baseline) on canonical conversations."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from convoplan.cli.common import SetOption, ShowConfig, SkipInvalid, configured, errors, fail, load, progress_bar, say

if TYPE_CHECKING:
    from convoplan.lm.train import Progress

__all__ = ["lm_app"]

lm_app = typer.Typer(
    help="The action-directed language model: train it, or its vanilla baseline, on canonical conversations.",
    no_args_is_help=True,
)


@lm_app.callback()
def lm() -> None:
    """The action-directed language model (see docs/lm.md)."""


@lm_app.command("train")
def lm_train(
    conversations: Annotated[Path, typer.Argument(help="Canonical conversations (.jsonl) with meta.split.")],
    out: Annotated[Path, typer.Option(help="Model folder to write (holds checkpoint/ while training).")],
    vanilla: Annotated[bool, typer.Option(help="Train the vanilla baseline: no action tags.")] = False,
    base_model: Annotated[
        str | None,
        typer.Option(help="Fine-tune this causal LM (a Hugging Face name such as gpt2, or a local folder)."),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run in --out with its own settings.")] = False,
    overrides: SetOption = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Train on the train split (validation split for early stopping; test is never used) and write a model folder.

    Runs unchanged under `torchrun --nproc_per_node N -m convoplan.cli.lm train ...` (gloo, DDP): each process
    trains on its share of every batch, and the averaged gradient equals the single-process one.
    """
    from convoplan.lm.train import TrainConfig, train

    config = configured(TrainConfig(vanilla=vanilla), overrides, show_config)
    if resume and (overrides or vanilla or base_model):
        fail("--resume continues the run with its own settings: leave out --set, --vanilla and --base-model")
    data = load(conversations, skip_invalid)
    with progress_bar() as bar:
        task = bar.add_task("training", total=None)

        def report(progress: Progress) -> None:
            bar.update(
                task,
                total=progress.total,
                completed=progress.step,
                description=f"training (loss {progress.loss:.3f}, {progress.tokens_per_second:,.0f} tokens/s)",
            )
            if progress.validation is not None:
                bar.console.print(f"epoch {progress.epoch}: validation loss {progress.validation:.3f}", highlight=False)

        try:
            result = train(data, out, None if resume else config, base_model=base_model, resume=resume, progress=report)
        except ValueError as error:
            fail(str(error))
        except KeyboardInterrupt:
            fail(f"interrupted: continue from the last checkpoint with --resume --out {out}", code=130)
    state = result.state
    if not _is_main_process():
        return
    stopped = ", stopped early" if state.stopped else ""
    best = f", best validation loss {state.best:.3f}" if state.best is not None else ""
    epochs = f"{state.epoch} epoch{'' if state.epoch == 1 else 's'}{stopped}"
    say(
        f"trained {state.step} steps ({epochs}): {state.tokens:,} tokens of {result.train_tokens:,} per epoch",
        to=errors,
    )
    say(
        f"loss {state.losses[0]:.3f} -> {state.losses[-1]:.3f}{best}; "
        f"{result.tokens_per_second:,.0f} tokens/s; {result.parameters:,} parameters; wrote {out}"
    )


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


if __name__ == "__main__":  # `python -m convoplan.cli.lm` (and torchrun ... -m convoplan.cli.lm)
    lm_app()

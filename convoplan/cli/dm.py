"""`convoplan dm`: train dialogue managers on rated logs (the paper's pipeline, or one DM at a time)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from convoplan.cli.common import (
    EmbeddingCache,
    RaterOption,
    ShowConfig,
    SimulatorOption,
    SkipInvalid,
    build_world,
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
)

dm_app = typer.Typer(help="Train dialogue managers on rated logs: supervised, SAQL, CAQL, CQL.", no_args_is_help=True)


@dm_app.command("pipeline")
def dm_pipeline(
    out: Annotated[Path, typer.Option(help="Folder for the logs and the trained DMs.", callback=output_folder)] = Path(
        "runs/dm"
    ),
    conversations: Annotated[int, typer.Option(min=2, help="Simulated conversations per collection round.")] = 400,
    seed: Annotated[int, typer.Option(help="Seed of the whole pipeline.")] = 0,
    resume: Annotated[
        bool, typer.Option(help="Reuse the logs and DMs a cut-off run left in --out; go on from the first stage left.")
    ] = False,
    overrides: Annotated[list[str] | None, set_option("q.gamma=0.95")] = None,
    show_config: ShowConfig = False,
    simulator: SimulatorOption = None,
    rater: RaterOption = None,
    embedding_cache: EmbeddingCache = None,
) -> None:
    """Collect logs with a first DM, train the supervised RNN DM, collect its logs, train the RL DMs on them."""
    from convoplan.sim.pipeline import PipelineConfig, run_pipeline

    config = configured(
        from_options(lambda: PipelineConfig(conversations=conversations, seed=seed)), overrides, show_config
    )
    world = build_world(simulator, rater)
    with progress_display() as progress:
        try:
            sentences = embedder(embedding_cache, progress)
            report = lambda m: say(m, to=errors)  # noqa: E731
            checkpoints = run_pipeline(world, out, config, sentences, report, progress, resume)
        except ValueError as error:
            fail(str(error))
    for name, folder in checkpoints.items():
        say(f"{name}: {folder}")


class Algorithm(StrEnum):
    supervised = "supervised"
    saql = "saql"
    caql = "caql"


@dm_app.command("train")
def dm_train(
    logs: Annotated[Path, typer.Argument(help="Rated logs (canonical JSONL with candidates and ratings).")],
    out: Annotated[
        Path, typer.Option(help="Folder for the trained DM.", callback=model_folder("convoplan.dm.checkpoint", "DM"))
    ],
    algorithm: Annotated[Algorithm, typer.Option(help="What to train.")] = Algorithm.saql,
    init: Annotated[Path | None, typer.Option(help="Warm-start from this trained DM (same feature space).")] = None,
    behaviour: Annotated[
        Path | None, typer.Option(help="The supervised DM used as CQL behaviour policy (with --set cql_alpha=...).")
    ] = None,
    overrides: Annotated[list[str] | None, set_option("steps=3000")] = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
    embedding_cache: EmbeddingCache = None,
) -> None:
    """Train one DM on rated logs and write it as a checkpoint folder (config.json + model.safetensors).

    Runs unchanged under `torchrun --nproc_per_node N -m convoplan.cli dm train ...` (gloo, DDP): each process
    trains on its share of every batch, and the averaged gradient equals the single-process one.
    """
    from convoplan.distributed import process_group
    from convoplan.dm.checkpoint import load_network
    from convoplan.dm.configs import QConfig, SupervisedConfig
    from convoplan.dm.train import prepare, train_q, train_supervised
    from convoplan.progress import renamed

    config: SupervisedConfig | QConfig = (
        SupervisedConfig() if algorithm is Algorithm.supervised else QConfig(algorithm=algorithm.value)  # type: ignore[arg-type]
    )
    config = configured(config, overrides, show_config)
    conversations = load(logs, skip_invalid)
    try:
        warm = load_network(init) if init is not None else None
        guide = load_network(behaviour)[0] if behaviour is not None else None
        with progress_display() as progress:
            sentences = embedder(embedding_cache, progress)
            reward = config.reward if isinstance(config, QConfig) else None
            data = prepare(conversations, sentences, warm[1] if warm is not None else None, reward)
            track = renamed(progress, f"training {algorithm.value}")
            if isinstance(config, SupervisedConfig):
                result = train_supervised(data, config, track)
            else:
                result = train_q(data, config, supervised=guide, init=warm[0] if warm else None, progress=track)
    except ValueError as error:
        fail(str(error))
    if process_group()[0] != 0:
        return  # under torchrun every rank holds the same weights; two ranks replacing one folder at once would race
    result.save(out, algorithm.value, config, data.table.space, logs=str(logs))
    say(
        f"trained {algorithm.value} on {data.table.steps} steps of {len(conversations)} conversations: "
        f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}, {result.transitions_per_second:.0f} transitions/s; "
        f"wrote {out}"
    )
    if validation := result.validation:
        say(
            f"held-out rating error (RMSE, {validation['held_out_conversations']} conversations): "
            f"{validation['final_rmse']:.3f}, the best of {len(validation['rmse'])} measurements (step "
            f"{validation['best_step']}); {len(result.losses)} of {config.steps} steps run"
        )

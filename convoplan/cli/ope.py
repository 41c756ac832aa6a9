"""`convoplan ope`: how good would these DMs have been? Off-policy values from logs, ranked, with intervals."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from convoplan.cli.common import (
    EmbeddingCache,
    ShowConfig,
    SkipInvalid,
    configured,
    embedder,
    errors,
    fail,
    load,
    named_dm,
    output_folder,
    progress_display,
    resolve_dm,
    say,
    set_option,
    show_report,
)

if TYPE_CHECKING:
    import torch

    from convoplan.compose.loop import DialogueManager
    from convoplan.dm.checkpoint import RNNPolicy
    from convoplan.dm.train import Dataset
    from convoplan.embed import SentenceEmbedder
    from convoplan.ope import OPEConfig, OPEReport
    from convoplan.progress import Progress
    from convoplan.schema import Conversation
    from convoplan.sim.run import World


def ope(
    logs: Annotated[
        Path,
        typer.Argument(
            help="Logs with candidates (simulated, or live sessions from `data export --db`); the logging DM's "
            "propensities, where recorded, allow importance sampling.",
            show_default=False,
        ),
    ],
    dm: Annotated[
        list[str],
        typer.Option(
            "--dm",
            help="A DM to value, as \\[name=]SPEC: random, heuristic, greedy, a trained DM folder, or "
            "'pkg.module:Factory'; repeat it.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for report.md, report.json and report.png.", callback=output_folder)
    ],
    encoder: Annotated[
        Path | None,
        typer.Option(
            help="A trained RNN DM folder whose state encoder the estimators read (frozen) \\[default: the first "
            "--dm that is one]."
        ),
    ] = None,
    world: Annotated[
        str, typer.Option(help="The world whose NLU replays the logs for hand-written DMs (an import path).")
    ] = "convoplan.worlds.animals:animals_world",
    overrides: Annotated[list[str] | None, set_option("reward.source=reactions")] = None,
    show_config: ShowConfig = False,
    skip_invalid: SkipInvalid = False,
    embedding_cache: EmbeddingCache = None,
) -> None:
    """Estimate the value of every --dm from LOGS with FQE, DualDICE and weighted importance sampling, each with a
    bootstrap interval over conversations, and rank them (markdown, JSON, chart).

    The value is (1 - gamma) E\\[sum_t gamma^t r_t] per conversation, r_t the reward of composition step t (the mean
    rating, or with reward.source=reactions what the user did next: logs without raters). Trained RNN DMs score the
    logged steps in batches; any other DM is replayed through the logs and scores the candidates it is offered.
    """
    from convoplan.ope import OPEConfig

    config = configured(OPEConfig(), overrides, show_config)
    named = [named_dm(spec) for spec in dm]
    names = [name for name, _ in named]
    if len(set(names)) < len(names):
        fail("a --dm name is given twice; name DMs apart with name=SPEC")
    conversations = load(logs, skip_invalid)
    the_world = _world(world)
    dms = {name: resolve_dm(spec, the_world, random.Random(0)) for name, spec in named}
    state_dm = _encoder(encoder, dms)
    with progress_display() as progress:
        try:
            sentences = embedder(embedding_cache, progress)
            report = _evaluate(conversations, dms, state_dm, the_world, config, sentences, logs, progress)
        except ValueError as error:
            fail(str(error))
    show_report(report, out)


def _world(spec: str) -> World:
    from convoplan.sim.arms import load_world

    try:
        return load_world(spec)
    except (ValueError, ImportError) as error:
        fail(f"--world {error}")


def _encoder(folder: Path | None, dms: dict[str, DialogueManager]) -> RNNPolicy:
    from convoplan.dm.checkpoint import RNNPolicy, load_network

    if folder is None:
        found = next((d for d in dms.values() if isinstance(d, RNNPolicy)), None)
        if found is None:
            fail("no --dm is a trained RNN DM: give --encoder FOLDER (e.g. a `dm train --algorithm supervised` one)")
        return found
    try:
        network, space, _ = load_network(folder)
    except ValueError as error:
        fail(f"--encoder {error}")
    return RNNPolicy(network, space)


def _evaluate(
    conversations: list[Conversation],
    dms: dict[str, DialogueManager],
    state_dm: RNNPolicy,
    world: World,
    config: OPEConfig,
    sentences: SentenceEmbedder,
    logs: Path,
    progress: Progress,
) -> OPEReport:
    """Steps of the logs through the frozen encoder, every DM's probabilities on them, the estimates."""
    from convoplan.dm.train import prepare
    from convoplan.ope import encoded_steps, evaluate_policies

    data = prepare(conversations, sentences, state_dm.space, config.reward)
    steps = encoded_steps(data.table, data.embeddings, state_dm.network.state, config)
    say(f"{len(conversations)} conversations, {steps.steps} composition steps; valuing {len(dms)} DM(s)", to=errors)
    targets = {name: _probabilities(conversations, dm, world, data) for name, dm in dms.items()}
    return evaluate_policies(steps, targets, config, str(logs), progress)


def _probabilities(conversations: list[Conversation], dm: DialogueManager, world: World, data: Dataset) -> torch.Tensor:
    """pi(a | s) of `dm` at every logged step: a trained RNN DM scores them in batches, any other is replayed."""
    from convoplan.compose.loop import Bot
    from convoplan.dm.checkpoint import RNNPolicy
    from convoplan.dm.data import build_steps
    from convoplan.ope import GreedyPolicy, dm_probabilities, policy_probabilities

    if isinstance(dm, RNNPolicy):  # in its own feature space; the texts, so their embeddings, are the same
        table = data.table if dm.space == data.table.space else build_steps(conversations, dm.space)
        return policy_probabilities(table, data.embeddings, GreedyPolicy(dm.network))
    return dm_probabilities(conversations, lambda: Bot([], dm, world.fuser, world.lexicon, world.entity))

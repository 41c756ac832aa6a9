"""Run simulated conversations: a bot (providers + DM + fusion) against simulated users, rated by raters.

Each conversation gets its own random streams derived from (purpose, seed, index), so a run is reproducible byte
for byte and any conversation can be regenerated alone. The purpose keeps evaluation apart from training: an A/B
test simulates with purpose "evaluation", so its users are never the users of a collection run (purpose "") with
the same seed, from which a DM may have learnt. Every candidate of every step is rated by every rater; the logs are
canonical conversations (see docs/format.md), with the NLU's reading of each user message in the user turn's meta
and the simulator's hidden state under meta["sim"].
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated

from annotated_types import Ge
from pydantic import JsonValue

from convoplan.compose.fusion import Entity, Fuser
from convoplan.compose.loop import Bot, ComposerConfig, DialogueManager, DialogueState, Provider
from convoplan.compose.nlu import Lexicon
from convoplan.configs import Config
from convoplan.corpora.splits import split_of
from convoplan.dm.baselines import RandomDM
from convoplan.progress import Progress, Update
from convoplan.schema import Candidate, Conversation, Outcome
from convoplan.sim.protocols import RaterFactory, UserFactory

__all__ = ["SimulationConfig", "World", "simulate", "simulate_one"]


@dataclass
class World:
    """Everything a domain supplies to simulate and serve conversations."""

    name: str
    providers: Callable[[random.Random], list[Provider]]
    """Builds the content providers for one conversation."""
    lexicon: Lexicon
    entity: Callable[[str], Entity | None]
    """The focus entity of a name (its plural, article and synonyms), for fusion: the one lookup both the bot and
    the training of a fuser use."""
    new_user: UserFactory
    new_rater: RaterFactory
    fuser: Fuser
    dms: Mapping[str, Callable[[random.Random], DialogueManager]] = field(default_factory=lambda: {"random": RandomDM})
    """The DMs the world has built in, by name (`--dm heuristic`), each made from the arm's random stream."""
    populations: Mapping[str, UserFactory] = field(default_factory=dict)
    """The user populations the world has built in, by name (`--simulator scholars`); `new_user` is the default."""


@dataclass
class SimulationConfig(Config):
    conversations: Annotated[int, Ge(1)] = 100
    """How many conversations to simulate."""
    raters: Annotated[int, Ge(0)] = 3
    """Raters per conversation; each rates every candidate of every step."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of every random stream of the run."""
    purpose: str = ""
    """Mixed into every random stream: "" for collecting logs (pipelines, `simulate`), "evaluation" for A/B tests,
    so that evaluation users never repeat the users a DM was trained on, whatever the seeds."""
    max_turns: Annotated[int, Ge(1)] = 30
    """Bot responses after which a conversation is cut off."""
    composer: ComposerConfig = field(default_factory=ComposerConfig)


def _rng(config: SimulationConfig, index: int, stream: str) -> random.Random:
    prefix = f"{config.purpose}/" if config.purpose else ""  # "" keeps the streams every earlier run drew
    return random.Random(f"{prefix}{config.seed}:{index}:{stream}")  # str seeds hash deterministically (sha512)


def simulate_one(
    world: World, dm: DialogueManager, index: int, config: SimulationConfig, dm_name: str = "dm"
) -> Conversation:
    """Simulate conversation number `index` of a run."""
    user = world.new_user(_rng(config, index, "user"))
    raters = [world.new_rater(f"rater-{k}", _rng(config, index, f"rater-{k}")) for k in range(config.raters)]

    def rate(state: DialogueState, candidates: list[Candidate]) -> None:
        for rater in raters:
            for candidate, rating in zip(candidates, rater.rate(state, candidates), strict=True):
                candidate.ratings[rater.name] = rating

    bot_rng = _rng(config, index, "bot")
    bot = Bot(world.providers(bot_rng), dm, world.fuser, world.lexicon, world.entity, config.composer, bot_rng, rate)
    text, left = user.opening(), False
    hidden: dict[str, JsonValue] = {}
    while True:
        bot.hear(text)
        if hidden:
            bot.state.turns[-1].meta["sim"] = hidden
        if left:
            ended_by = "user"
            break
        if len(bot.state.responses) >= config.max_turns:
            ended_by = "max_turns"
            break
        response = bot.respond()
        if response.ends_conversation:
            ended_by = "bot"
            break
        reply = user.reply(response)
        text, hidden, left = reply.text, reply.meta, reply.left
    responses = len(bot.state.responses)
    run = f"{config.purpose}-{config.seed}" if config.purpose else str(config.seed)
    conversation_id = f"{world.name}-{run}-{index:06d}"
    return Conversation(
        id=conversation_id,
        domain=world.name,
        turns=bot.state.turns,
        outcome=Outcome(value=float(responses)),
        meta={
            "split": split_of(conversation_id, config.seed),
            "dm": dm_name,
            "seed": config.seed,
            "index": index,
            "ended_by": ended_by,
            **({"purpose": config.purpose} if config.purpose else {}),
        },
    )


def simulate(
    world: World,
    dm: DialogueManager,
    config: SimulationConfig,
    dm_name: str = "dm",
    progress: Progress | None = None,
) -> Iterator[Conversation]:
    """Yield `config.conversations` simulated conversations in order; `progress` after each."""
    for index in range(config.conversations):
        yield simulate_one(world, dm, index, config, dm_name)
        if progress is not None:
            progress(Update(f"simulating {dm_name}", index + 1, config.conversations, "conversations"))

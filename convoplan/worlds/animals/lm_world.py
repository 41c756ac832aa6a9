"""The two systems joined in the built-in world: an action-directed LM trained on the animals world's own logs
becomes a content provider of the composition loop (`convoplan.lm.provider`).

`lm_world_demo` runs the whole path on a CPU in two or three minutes:

1. simulate conversations of the animals world with a DM (default the hand-written planner); the logs' agent step
   messages carry the dialogue acts (`sound`, `fact`, `quiz`, ...) as their actions;
2. train a small action-directed LM on them (`lm_conversations`: user messages and step messages);
3. simulate a few more conversations with the `LMProvider` added to the world's providers, so that the DM chooses
   among the world's own candidates and one LM-written candidate per dialogue act.

It is a recipe of the animals world: it drives the simulator, the LM's training and the world, all below it in the
layer order. The LM provider comes first among the providers, so where the DM scores an LM candidate and a
template candidate alike (the hand-written DMs look at the act and features, not the words) the LM's is chosen.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from annotated_types import Ge

from convoplan.compose.loop import STOP, DialogueManager, Provider
from convoplan.configs import Config
from convoplan.lm.model import ModelConfig, load_model
from convoplan.lm.provider import LMProvider, LMProviderConfig, lm_conversations
from convoplan.lm.train import TrainConfig, train
from convoplan.progress import Progress, renamed
from convoplan.retrieval.knowledge import KnowledgeIndex
from convoplan.schema import Conversation, write_jsonl
from convoplan.sim.run import SimulationConfig, simulate
from convoplan.worlds.animals.knowledge import knowledge_passages

__all__ = ["LMWorldConfig", "LMWorldDemo", "lm_world_demo", "transcript"]


def _small_lm() -> TrainConfig:
    # The world's messages are templated: a 0.3M-parameter model gets their wording right in ~1,700 steps (about
    # 90 s on one CPU thread; validation loss ~1.0). A context of 128 tokens holds the last few messages.
    return TrainConfig(
        model=ModelConfig(n_layer=2, n_head=4, n_embd=96, n_positions=128, dropout=0.0),
        vocab_size=1000,
        batch_size=8,
        lr=3e-3,
        epochs=12,
        checkpoint_every=0,
        device="cpu",
    )


@dataclass
class LMWorldConfig(Config):
    """The LM-in-the-world demo."""

    conversations: Annotated[int, Ge(1)] = 200
    """Simulated conversations the LM is trained on."""
    dm: str = "heuristic"
    """DM of both simulations: random, heuristic, greedy, a trained DM folder, or 'pkg.module:Factory'."""
    demo_conversations: Annotated[int, Ge(1)] = 3
    """Conversations simulated with the LM provider added."""
    max_turns: Annotated[int, Ge(1)] = 30
    """Bot responses after which a demo conversation is cut off."""
    lm_only: bool = False
    """Demo with the LM provider alone: every candidate is LM-written (the DM chooses among acts only)."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of both simulations (the demo uses seed + 1, so its users are new) and of training."""
    lm: TrainConfig = field(default_factory=_small_lm)
    """The LM and its training."""
    provider: LMProviderConfig = field(default_factory=LMProviderConfig)
    """The LM provider (decoding, actions offered)."""


@dataclass
class LMWorldDemo:
    """What the demo wrote and how the LM's candidates fared."""

    model: Path
    """The trained LM folder."""
    logs: Path
    """The LM's training data (the world's logs as the LM reads them)."""
    demo: Path
    """The conversations simulated with the LM provider."""
    conversations: list[Conversation]
    offered: int
    """LM candidates offered over all composition steps of the demo."""
    chosen: int
    """LM candidates the DM chose."""
    steps: int
    """Utterances chosen over the demo (the closing stop decisions not counted)."""


def transcript(conversation: Conversation) -> str:
    """The conversation as the user saw it, each bot response followed by its chosen utterances and providers."""
    lines = []
    step_lines: list[str] = []
    for turn in conversation.turns:
        if turn.speaker == "user":
            lines.append(f"user: {turn.text}")
        elif turn.action == STOP:
            lines += [f"bot:  {turn.text}", *step_lines]
            step_lines = []
        else:
            provider = next((c.provider for c in turn.candidates if c.selected), None)
            step_lines.append(f"      [{turn.action} by {provider}] {turn.text}")
    return "\n".join(lines)


def lm_world_demo(
    out_dir: str | Path,
    config: LMWorldConfig | None = None,
    *,
    dm: DialogueManager | None = None,
    report: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> LMWorldDemo:
    """Simulate, train the LM on the logs, simulate again with the LM provider; write `out_dir/logs.jsonl`,
    `out_dir/lm/` and `out_dir/demo.jsonl`. `dm` replaces `config.dm`; `report` gets a line per stage, `progress`
    their progress."""
    from convoplan.sim.arms import load_arm
    from convoplan.worlds.animals import animals_world

    config = config or LMWorldConfig()
    out = Path(out_dir)
    say = report or (lambda line: None)
    world = animals_world()
    manager = dm or load_arm(config.dm, world, random.Random(config.seed))

    simulation = SimulationConfig(conversations=config.conversations, raters=1, seed=config.seed)
    logs = lm_conversations(list(simulate(world, manager, simulation, config.dm, progress)))
    write_jsonl(out / "logs.jsonl", logs)
    say(f"simulated {len(logs)} conversations with the {config.dm} DM: {out / 'logs.jsonl'}")

    lm_config = dataclasses.replace(config.lm, seed=config.seed)
    result = train(logs, out / "lm", lm_config, progress=renamed(progress, "training the LM"))
    say(
        f"trained the LM ({result.parameters:,} parameters, {result.train_tokens:,} tokens per epoch, "
        f"{result.epochs:.3g} epochs in {result.state.seconds:.0f} s): {out / 'lm'}"
    )

    # The animal guide checks what the LM writes: a candidate with a claim it does not support is not offered.
    guide = KnowledgeIndex(list(knowledge_passages()), "bm25")
    provider = LMProvider(load_model(out / "lm"), world.lexicon, config.provider, knowledge=guide)
    base = world.providers

    def providers(rng: random.Random) -> list[Provider]:
        return [provider] if config.lm_only else [provider, *base(rng)]

    with_lm = dataclasses.replace(world, providers=providers)
    demo = SimulationConfig(
        conversations=config.demo_conversations, raters=1, seed=config.seed + 1, max_turns=config.max_turns
    )
    conversations = list(simulate(with_lm, manager, demo, f"{config.dm}+lm"))
    write_jsonl(out / "demo.jsonl", conversations)
    # Every composition step's candidates sit on the message it produced (a chosen utterance, or the closing stop).
    agent = [t for c in conversations for t in c.turns if t.speaker == "agent"]
    lm_candidates = [c for t in agent for c in t.candidates if c.provider == provider.config.name]
    chosen = sum(c.selected for c in lm_candidates)
    steps = sum(t.action != STOP for t in agent)
    say(f"demo: the DM chose {chosen} of {len(lm_candidates)} LM candidates ({steps} utterances): {out / 'demo.jsonl'}")
    return LMWorldDemo(
        out / "lm", out / "logs.jsonl", out / "demo.jsonl", conversations, len(lm_candidates), chosen, steps
    )

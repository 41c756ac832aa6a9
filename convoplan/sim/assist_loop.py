"""The agent-assist learning loop, simulated: rounds of (suggestions shown to simulated agents -> their choices ->
preference pairs -> DPO -> the new model), then every round's model measured on conversations and agents no round
met (`convoplan experiment assist-loop`, BENCHMARKS.md "Learning from the agents' choices").

Round r replays its own slice of the train split (`train_conversations` of those with at least `min_labelled`
labelled agent messages) with agents seeded by r, builds the pairs (`convoplan.lm.preferences`), keeps a sample of
at most `max_pairs` (seeded by r) and tunes the last model on them (`convoplan.lm.dpo`), writing
`out/round-r/` (the model), `out/round-r-choices.jsonl` and `out/round-r-pairs.jsonl`. The evaluation replays the
first `eval_conversations` of the test split with agents seeded by `eval_seed`, once per model, and reports them as
arms (`AssistReport`, paired: the same conversations and agents), `model 0` the control.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from annotated_types import Ge

from convoplan.configs import Config
from convoplan.lm.dpo import DPOConfig, train_dpo
from convoplan.lm.preferences import build_pairs, write_pairs
from convoplan.lm.suggest import Suggester
from convoplan.progress import Progress
from convoplan.schema import Conversation, write_jsonl
from convoplan.sim.assist import (
    AssistConfig,
    AssistReport,
    AssistSummary,
    assist_report,
    assist_summary,
    json_ready,
    simulate_assist,
)
from convoplan.sim.protocols import AgentFactory

if TYPE_CHECKING:
    from convoplan.retrieval.knowledge import KnowledgeIndex

__all__ = ["AssistLoopConfig", "LoopRound", "assist_loop", "rounds_json"]


@dataclass
class AssistLoopConfig(Config):
    """Rounds of learning from simulated agents' choices (`convoplan experiment assist-loop`)."""

    rounds: Annotated[int, Ge(1)] = 2
    """Rounds of choices -> pairs -> DPO."""
    train_conversations: Annotated[int, Ge(1)] = 6
    """Train conversations replayed per round (each round its own)."""
    eval_conversations: Annotated[int, Ge(2)] = 8
    """Test conversations every model is measured on."""
    max_pairs: Annotated[int, Ge(1)] = 48
    """Pairs kept per round (a seeded sample): the DPO steps a round costs."""
    min_labelled: Annotated[int, Ge(0)] = 1
    """Conversations replayed hold at least this many agent messages with an action (corpora labelled in part)."""
    assist: AssistConfig = field(default_factory=lambda: AssistConfig(max_messages=12))
    """The replay: suggestions shown per message, messages per conversation (its seed is the round's)."""
    dpo: DPOConfig = field(default_factory=lambda: DPOConfig(lr=1e-4))
    """The tuning of each round."""
    eval_seed: Annotated[int, Ge(0)] = 1000
    """Seed of the evaluation's agents (apart from every round's, 1..rounds)."""


@dataclass(frozen=True)
class LoopRound:
    """What one round saw and made."""

    round: int
    model: Path
    """The model it wrote."""
    seen: AssistSummary
    """How the agents used the previous model's suggestions on the round's conversations."""
    pairs_built: int
    pairs_kept: int
    left_out: dict[str, int]
    """Turns and pairs `build_pairs` left out, by reason."""
    losses: tuple[float, float]
    """DPO loss at the first and the last step."""
    seconds: float


def assist_loop(
    conversations: Sequence[Conversation],
    model: str | Path,
    new_agent: AgentFactory,
    out: str | Path,
    config: AssistLoopConfig | None = None,
    *,
    knowledge: KnowledgeIndex | None = None,
    progress: Progress | None = None,
) -> tuple[list[LoopRound], AssistReport]:
    """Run the loop (the module docstring) from the LM folder `model`, writing into the folder `out`; the rounds and
    the evaluation's report. ValueError when the conversations are too few for the rounds."""
    config = config or AssistLoopConfig()
    out = Path(out)
    labelled = [c for c in conversations if sum(t.action is not None for t in c.agent_turns()) >= config.min_labelled]
    train = [c for c in labelled if c.meta.get("split") == "train"]
    test = [c for c in labelled if c.meta.get("split") == "test"][: config.eval_conversations]
    wanted = config.rounds * config.train_conversations
    if len(train) < wanted or len(test) < 2:
        raise ValueError(
            f"{len(train)} train and {len(test)} test conversations with {config.min_labelled}+ labelled agent "
            f"messages: the rounds need {wanted} and the evaluation 2"
        )
    out.mkdir(parents=True, exist_ok=True)
    models = [Path(model)]
    rounds: list[LoopRound] = []
    for r in range(1, config.rounds + 1):
        started = time.perf_counter()
        chunk = train[(r - 1) * config.train_conversations : r * config.train_conversations]
        suggester = Suggester.load(models[-1], knowledge=knowledge)
        seen = simulate_assist(chunk, suggester, new_agent, dataclasses.replace(config.assist, seed=r), progress)
        write_jsonl(out / f"round-{r}-choices.jsonl", seen)
        pairs, counts = build_pairs(seen)
        kept = random.Random(r).sample(pairs, min(len(pairs), config.max_pairs))
        write_pairs(out / f"round-{r}-pairs.jsonl", kept)
        result = train_dpo(models[-1], kept, out / f"round-{r}", config.dpo, knowledge=knowledge, progress=progress)
        models.append(result.folder)
        losses = (result.losses[0], result.losses[-1])
        left_out = dict(counts.dropped)
        seconds = time.perf_counter() - started
        rounds.append(
            LoopRound(r, result.folder, assist_summary(seen), len(pairs), len(kept), left_out, losses, seconds)
        )
    evaluation = dataclasses.replace(config.assist, seed=config.eval_seed)
    runs: dict[str, list[Conversation]] = {}
    for k, folder in enumerate(models):
        suggester = Suggester.load(folder, knowledge=knowledge)
        runs[f"model {k}"] = run = simulate_assist(test, suggester, new_agent, evaluation, progress)
        write_jsonl(out / f"eval-model-{k}.jsonl", run)
    return rounds, assist_report(runs, "model 0")


def rounds_json(rounds: Sequence[LoopRound]) -> list[dict[str, Any]]:
    """The rounds as JSON-ready dicts (NaN as null)."""

    return [json_ready({**dataclasses.asdict(r), "model": str(r.model)}) for r in rounds]

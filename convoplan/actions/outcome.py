"""Outcome-driven next-best-action: Q-learning over the action set, the conversation's outcome as terminal reward.

This is SAQL of the dialogue managers (`convoplan.dm`: `build_steps`, `QNetwork`, `train_q`) with actions as the
candidates (training: `convoplan.actions.train_outcome`):

- Steps. Every agent message that carries an action of the training action set is a step. Its candidates are
  actions, each a `Candidate` whose text is the action's name in words ("credibility-appeal" -> "credibility
  appeal"; the sentence embedding of the name places related actions near each other) and whose dialogue act is
  the action (one-hot in the `FeatureSpace`); the logged action is the selected one. The state is the DMs' state:
  a GRU over every earlier message (sentence embedding, speaker, action one-hot), the last user message and the
  position in the agent's turn. Messages without an action (STAR's free-text `utter` turns) are history only.
- Candidate sets (`candidates`): "actions" offers every training action at every step; "offered" (default) offers
  the actions the corpus recorded as offered at that turn where it did (STAR's `meta.action_options`, the wizard's
  suggestions, typically 2-6; the taken action is always among them), which is SAQL's realized candidate set, and
  every training action elsewhere (PersuasionForGood has no such record: all 27 actions). The max of the TD target
  runs over the next step's set. "actions" on STAR materialises 163 candidate rows per step (about 3 GB for its
  training split) and asks Q about actions no wizard was ever offered there.
- Reward: 0 on every step but the conversation's last labelled step, whose reward is the outcome: 1 if converted
  and 0 if not (`reward="converted"`), or `outcome.value` (`reward="value"`; PersuasionForGood: the donation in
  dollars, clipped to [0, 2]). Conversations without that outcome (a third of STAR: weather, trivia, unfinished
  dialogues) are skipped. The reward path is `build_steps(..., reward=...)`.

Q(s, a) then estimates gamma^(steps to the end) times the chance of conversion after taking action a, following
the greedy policy afterwards. The logs are fixed human conversations, so at every step only the logged action has
data; the default adds the CQL regulariser with the logged action as behaviour (`q.cql_alpha`,
`q.behaviour="logged"`), which keeps Q low on actions the logs did not take in similar states instead of trusting
the network's extrapolation there. `OutcomeNBA.next_actions` ranks every training action by Q. With "offered" sets
Q was fitted only on actions that were offered, so the ranking of the rest is extrapolation: where the live
candidate set is known, take the best of it (as `ActionSteps.greedy_probabilities` does) rather than the top of
the full ranking (BENCHMARKS.md, "Next best action", measures both on STAR).

`ActionSteps` (the step table of a set of conversations, with the action of every candidate) also gives the
probabilities of a greedy policy of any `NextActionModel` over each logged step's candidate set, for off-policy
evaluation with `convoplan.ope` (bench/nba.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from convoplan.actions.nba import FORMAT, rank_actions
from convoplan.actions.protocols import ActionScore, NextActionModel
from convoplan.checkpoint import load_weights, write_folder
from convoplan.configs import Config, config_from_dict
from convoplan.dm.configs import QConfig
from convoplan.dm.data import FeatureSpace, StepTable, build_steps
from convoplan.dm.networks import QModel, RNNConfig, q_model
from convoplan.embed import SentenceEmbedder, shared_embedder
from convoplan.schema import Candidate, Conversation, Turn

__all__ = ["OutcomeConfig", "OutcomeNBA"]


def _default_q() -> QConfig:
    # Smaller than the DMs' defaults: a PersuasionForGood batch of 8 conversations holds ~160 steps of 27 candidates.
    # A target copy every 25 steps gives the 40 backups that carry a terminal reward back over a 20-step dialogue.
    return QConfig(
        network=RNNConfig(hidden=128, head=(128,)),
        gamma=0.95,
        steps=1000,
        batch_size=8,
        target_every=25,
        cql_alpha=0.1,
        behaviour="logged",
    )


@dataclass
class OutcomeConfig(Config):
    """Outcome-driven next-best-action: SAQL over the action set with the outcome as terminal reward."""

    q: QConfig = field(default_factory=_default_q)
    """Q-learning: network, discount, optimisation and CQL (convoplan.dm.train.QConfig)."""
    reward: Literal["converted", "value"] = "converted"
    """Terminal reward: 1 if the conversation converted else 0, or the outcome's value."""
    candidates: Literal["actions", "offered"] = "offered"
    """A step's candidate set: every training action, or the turn's meta.action_options where recorded."""


def action_text(action: str) -> str:
    """The action's name in words, the text embedded as the candidate's sentence: "ask_name" -> "ask name"."""
    return " ".join(action.replace("_", " ").replace("-", " ").split()) or action


def outcome_reward(conversation: Conversation, kind: Literal["converted", "value"]) -> float | None:
    """The terminal reward of a conversation (None if it has no such outcome)."""
    outcome = conversation.outcome
    if outcome is None:
        return None
    if kind == "converted":
        return None if outcome.converted is None else float(outcome.converted)
    return outcome.value


def _candidate_actions(turn: Turn, actions: Sequence[str], known: dict[str, int], mode: str) -> list[str]:
    """The actions offered at `turn`, in the order of `actions` (the taken one always among them)."""
    options = turn.meta.get("action_options") if mode == "offered" else None
    if not isinstance(options, list):
        return list(actions)
    offered = {str(a) for a in options if str(a) in known} | {str(turn.action)}
    return sorted(offered, key=known.__getitem__)


@dataclass
class ActionSteps:
    """The steps of a set of conversations for Q-learning and off-policy evaluation (S steps, C widest set)."""

    conversations: list[Conversation]
    """The episodes: the conversations that have an outcome and a step, as given (without the action candidates)."""
    table: StepTable
    step_turns: list[tuple[int, int]]
    """(episode, turn index) of every step, in the table's order."""
    candidate_actions: list[list[str]]
    """The action of every candidate of every step, in the table's candidate order."""

    @property
    def width(self) -> int:
        """C: the most candidates of any step (the width of `convoplan.ope`'s tensors)."""
        return max(1, int(np.diff(self.table.candidate_offsets).max())) if self.table.steps else 1

    def history(self, step: int) -> Conversation:
        """The conversation before step `step` (no outcome, no events), as a live model would see it."""
        episode, turn = self.step_turns[step]
        conversation = self.conversations[episode]
        return replace(conversation, turns=conversation.turns[:turn], outcome=None, events=[])

    def logged_probabilities(self) -> torch.Tensor:
        """The logged policy: probability 1 on each step's logged action, [S, C]."""
        return torch.nn.functional.one_hot(torch.from_numpy(self.table.step_chosen), self.width).to(torch.float32)

    def greedy_probabilities(self, model: NextActionModel, chunk: int = 512) -> torch.Tensor:
        """The greedy policy of `model`: probability 1 on the candidate it ranks highest at each step, [S, C]
        (the first candidate where it ranks none of them)."""
        probabilities = torch.zeros(self.table.steps, self.width)
        for first in range(0, self.table.steps, chunk):
            steps = range(first, min(first + chunk, self.table.steps))
            rankings = model.next_actions([self.history(s) for s in steps])
            for s, ranking in zip(steps, rankings, strict=True):
                offered = {a: i for i, a in enumerate(self.candidate_actions[s])}
                best = next((offered[x.action] for x in ranking if x.action in offered), 0)
                probabilities[s, best] = 1.0
        return probabilities


def action_steps(conversations: Sequence[Conversation], space: FeatureSpace, config: OutcomeConfig) -> ActionSteps:
    """Steps of `conversations` over the actions of `space` (see the module docstring); conversations without the
    outcome `config.reward` needs, or without a labelled agent message of a known action, are skipped."""
    actions = space.actions
    known = {a: i for i, a in enumerate(actions)}
    episodes: list[Conversation] = []
    with_candidates: list[Conversation] = []
    step_turns: list[tuple[int, int]] = []
    candidate_actions: list[list[str]] = []
    terminal: dict[int, tuple[int, float]] = {}  # id(episode with candidates) -> (last step's turn, reward)
    for conversation in conversations:
        reward = outcome_reward(conversation, config.reward)
        if reward is None:
            continue
        turns, steps = [], []
        for t, turn in enumerate(conversation.turns):
            if turn.speaker == "agent" and turn.action in known:
                offered = _candidate_actions(turn, actions, known, config.candidates)
                candidates = [Candidate(text=action_text(a), action=a, selected=a == turn.action) for a in offered]
                turns.append(replace(turn, candidates=candidates))
                steps.append(t)
                candidate_actions.append(offered)
            else:
                turns.append(replace(turn, candidates=[]))
        if not steps:
            continue
        episode = replace(conversation, turns=turns)
        terminal[id(episode)] = (steps[-1], reward)
        step_turns += [(len(episodes), t) for t in steps]
        episodes.append(conversation)
        with_candidates.append(episode)

    def step_reward(episode: Conversation, turn: int) -> float:
        last, reward = terminal[id(episode)]
        return reward if turn == last else 0.0

    table = build_steps(with_candidates, space, reward=step_reward)
    return ActionSteps(episodes, table, step_turns, candidate_actions)


class OutcomeNBA:
    """A trained outcome-driven next-best-action model (a `NextActionModel`): every action ranked by Q."""

    kind = "outcome"

    def __init__(
        self,
        network: QModel,
        space: FeatureSpace,
        config: OutcomeConfig,
        embedder: SentenceEmbedder | None = None,
        training: dict[str, Any] | None = None,
    ) -> None:
        self.network = network.eval()
        self.space = space
        self.config = config
        self.embedder = embedder or shared_embedder()
        self.training = training or {}
        self._pending = Turn(
            speaker="agent",
            text="(pending)",
            candidates=[Candidate(text=action_text(a), action=a) for a in space.actions],
        )

    @property
    def actions(self) -> list[str]:
        return list(self.space.actions)

    def steps(self, conversations: Sequence[Conversation]) -> ActionSteps:
        """The steps of `conversations` in this model's feature space (e.g. held-out logs for evaluation)."""
        return action_steps(conversations, self.space, self.config)

    def q_values(self, histories: Sequence[Conversation], chunk: int = 128) -> torch.Tensor:
        """Q(history, action) for every training action, [len(histories), actions]."""
        parts = []
        self.network.eval()
        for first in range(0, len(histories), chunk):
            live = [
                Conversation(id=f"live-{first + i}", domain=h.domain, turns=[*h.turns, self._pending])
                for i, h in enumerate(histories[first : first + chunk])
            ]
            table = build_steps(live, self.space, live=True)
            embeddings = torch.from_numpy(self.embedder.embed(table.texts))
            with torch.no_grad():
                parts.append(self.network(table.batch(list(range(len(live))), embeddings)))  # [chunk, actions]
        return torch.cat(parts) if parts else torch.zeros(0, len(self.space.actions))

    def next_actions(self, histories: Sequence[Conversation]) -> list[list[ActionScore]]:
        """Every training action by Q(history, action), best first (see the module docstring on offered sets)."""
        return rank_actions(self.q_values(histories), self.space.actions)

    def save(self, folder: str | Path) -> Path:
        record = {
            "kind": self.kind,
            "actions": self.space.actions,
            "space": self.space.to_dict(),
            "config": asdict(self.config),
            "training": self.training,
        }
        return write_folder(folder, FORMAT, record, self.network)


def load_outcome(folder: Path, record: dict[str, Any], embedder: SentenceEmbedder | None = None) -> OutcomeNBA:
    """The outcome-driven model of a folder whose config.json is `record`; ValueError naming the file and field."""
    where = str(folder / "config.json")
    config = config_from_dict(OutcomeConfig, record.get("config"), where, "config")
    space = config_from_dict(FeatureSpace, record.get("space"), where, "space")
    network = q_model(space.utterance_dim, space.candidate_dim, config.q.network, config.q.ensemble)
    load_weights(folder, network)
    return OutcomeNBA(network, space, config, embedder, record.get("training", {}))

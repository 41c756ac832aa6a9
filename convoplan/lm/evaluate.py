"""Evaluation of the action-directed LM against the vanilla one: BLEU per action and action adherence.

For every agent message of a test split that carries an action (by default a human label), the message is written
again from its true history by three systems:

- **vanilla**: the vanilla LM (same architecture and data, no action tags);
- **true action**: the action-directed LM with the message's own action (the oracle next action);
- **predicted action**: the action-directed LM with a next-action model's top action for that history, falling
  back to no action as suggestions do (no ranking, a score under the threshold, or an action without a tag).

Beside them, two **retrieval baselines** that need no LM (given an exemplar index of the train split,
`convoplan.retrieval.exemplars`), both told the true action: the **most frequent message** of the action in the
train split, and the **nearest exemplar**, the train message of the action whose context (the previous turns,
embedded) is nearest to the target's. What a user could build in an afternoon: an LM that loses to them is seen
losing.

Each system is scored by corpus BLEU (sacrebleu, default settings: 13a tokenisation, one reference) against the
logged messages, overall and per action category (the category of a message is its true action), and by
**adherence**: the share of its messages that the labeller, reading them in their history, assigns to the
*intended* action, which is the true action for vanilla and true-action rows, and the predicted action (whether or
not it directed generation) for the predicted row.

Decoding is greedy by default (`EvalConfig.sampling.do_sample = False`), so a run is deterministic; with sampling
the seed in the sampling config makes it repeatable. Messages are generated in batches of prompts of similar
length (`generate_messages`), in one call per batch.

A grounded model (`convoplan.lm.grounding`) writes from the prompts it was trained on: the history's events, and
the passages and exemplars retrieved for each history (`evaluate_lm(knowledge=..., exemplars=...)`); the notes say
what the prompts had to leave out.

**The grounding check** (`convoplan.retrieval.support`) of every system's messages: given a knowledge file, every
statement and number a message makes must be supported by a passage of the entity in focus (the last one the
history names; all passages where none is named), and the report gives the share of messages that claim something
whose claims are all supported, overall and per action; where the conversations carry items an API returned
(STAR's `return_item` events), slot precision and recall of the messages whose reference states the latest item's
values (`check_slots`, against every value the train split's items carry).

The result (`LMEvalReport`) is a `convoplan.report.Report` (markdown tables, a JSON dump and a per-action bar
chart) that also lists every written message (`messages_jsonl`). The scoring (`score_systems`) only needs texts
and a labeller, so it can be checked by hand on a fixture.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, astuple, dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from annotated_types import Ge

from convoplan.actions.protocols import Labeller, NextActionModel
from convoplan.configs import UNBOUNDED, Config
from convoplan.lm.generate import SamplingConfig, generate_messages, prompt_budget
from convoplan.lm.grounding import Cut, Grounder, grounding_config
from convoplan.lm.model import LanguageModel
from convoplan.progress import Progress, Update, renamed
from convoplan.report import figure_png
from convoplan.retrieval.support import SupportConfig, check_slots, check_support, item_vocabulary, returned_item
from convoplan.schema import Conversation, Turn

if TYPE_CHECKING:
    from convoplan.embed import SentenceEmbedder
    from convoplan.retrieval.exemplars import ExemplarIndex
    from convoplan.retrieval.knowledge import KnowledgeIndex

__all__ = ["EvalConfig", "LMEvalReport", "baseline_messages", "evaluate_lm", "score_systems", "targets"]

VANILLA, TRUE, PREDICTED = "vanilla", "true action", "predicted action"
FREQUENT, NEAREST = "most frequent message", "nearest exemplar"
"""The retrieval baselines (true action, no LM)."""
ALL = "all"
"""The row over every message."""


@dataclass
class EvalConfig(Config):
    """Which messages are written again, and how."""

    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(do_sample=False))
    """Decoding of every system (default greedy: deterministic; with sampling, its seed makes runs repeatable)."""
    batch_size: Annotated[int, Ge(1)] = 16
    """Prompts per generate call."""
    split: str = "test"
    """The `meta.split` of the conversations whose messages are written again."""
    human_labels_only: bool = True
    """Only messages whose action is a human label (`action_source` None), not a labeller's guess."""
    max_messages: Annotated[int, Ge(0)] = 0
    """Evaluate a seeded random sample of this many messages; 0 = all."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of that sample."""
    threshold: Annotated[float, UNBOUNDED] = 0.0
    """Least next-action score for the predicted action to direct generation (as `SuggestConfig.threshold`)."""


@dataclass(frozen=True)
class Target:
    """One logged agent message to write again."""

    history: Conversation
    """The conversation up to the message (its turns before it)."""
    reference: str
    """The logged message."""
    action: str
    """Its true action."""


def targets(conversations: Sequence[Conversation], config: EvalConfig) -> list[Target]:
    """The agent messages with an action in `config.split`, in corpus order (a seeded sample if `max_messages`)."""
    found = []
    for conversation in conversations:
        if conversation.meta.get("split") != config.split:
            continue
        for index, turn in enumerate(conversation.turns):
            human = turn.action_source is None
            if turn.speaker == "agent" and turn.action is not None and (human or not config.human_labels_only):
                history = Conversation(
                    id=f"{conversation.id}#{index}",
                    domain=conversation.domain,
                    turns=conversation.turns[:index],
                    events=[event for event in conversation.events if event.position <= index],
                    meta=conversation.meta,
                )
                found.append(Target(history, turn.text, turn.action))
    if 0 < config.max_messages < len(found):
        keep = sorted(random.Random(config.seed).sample(range(len(found)), config.max_messages))
        found = [found[i] for i in keep]
    return found


class MessageWriter(Protocol):
    """Writes the next agent message after each history, for an action (None: without one)."""

    def write(
        self, histories: Sequence[Conversation], actions: Sequence[str | None], progress: Progress | None = None
    ) -> list[str]: ...


class LMWriter:
    """A `MessageWriter` from a loaded LM: batched generation over prompts sorted by length (less padding). The
    prompts are grounded as the model's folder says (`grounder`: built from it, with no index, when not given;
    ValueError when the model needs one)."""

    def __init__(
        self, lm: LanguageModel, sampling: SamplingConfig, batch_size: int = 16, grounder: Grounder | None = None
    ) -> None:
        self.lm = lm
        self.sampling = sampling
        self.batch_size = batch_size
        self.grounder = grounder or Grounder(lm.codec, grounding_config(lm.info))
        self.cut = Cut()
        """What the prompts written so far left out, added up."""
        self.prompts_cut = 0
        """How many of them left something out."""

    def write(
        self, histories: Sequence[Conversation], actions: Sequence[str | None], progress: Progress | None = None
    ) -> list[str]:
        codec, budget = self.lm.codec, prompt_budget(self.lm, self.sampling)
        # An action without a tag (or any action, for a vanilla model) is written without one: the fallback.
        directed = [action if action in codec.actions else None for action in actions]
        built = self.grounder.prompts(histories, directed, budget)
        for prompt in built:
            self.cut, self.prompts_cut = self.cut + prompt.cut, self.prompts_cut + bool(prompt.cut)
        prompts = [prompt.ids for prompt in built]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        texts = [""] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = generate_messages(self.lm, [prompts[r] for r in rows], self.sampling)
            for row, (message,) in zip(rows, batch, strict=True):
                texts[row] = message.text
            if progress is not None:
                progress(Update("writing", start + len(rows), len(order), "messages"))
        return texts


def predicted_actions(
    nba: NextActionModel, histories: Sequence[Conversation], threshold: float, known: Sequence[str] | Mapping[str, int]
) -> tuple[list[str | None], list[str | None]]:
    """(intended, directing) action per history: the model's top action, and the action that directs generation
    (None when there is no ranking, the top score is under `threshold`, or the action is not in `known`)."""
    intended: list[str | None] = []
    directing: list[str | None] = []
    for ranking in nba.next_actions(histories):
        top = ranking[0] if ranking else None
        intended.append(top.action if top is not None else None)
        ok = top is not None and top.score >= threshold and top.action in known
        directing.append(top.action if ok and top is not None else None)
    return intended, directing


@dataclass(frozen=True)
class Score:
    messages: int
    bleu: float
    """Corpus BLEU (0-100)."""
    adherence: float
    """Share of messages the labeller assigns to the intended action (0-1)."""
    length_ratio: float = math.nan
    """Words written / words of the references (BLEU's 13a tokens, summed over the messages): 1 = as long."""


@dataclass(frozen=True)
class GroundingCheck:
    """The grounding check of a group of one system's messages (zeros where there was nothing to check)."""

    claiming: int = 0
    """Messages that claim something (a statement or a number) checked against the knowledge."""
    supported: int = 0
    """Of those, the messages whose every claim a passage of the entity in focus supports."""
    slot_messages: int = 0
    """Messages whose reference states values of the item an API returned last."""
    expected: int = 0
    """The item's values those references state (slot recall's denominator)."""
    recalled: int = 0
    stated: int = 0
    """Values of the API's items the messages state (slot precision's denominator)."""
    correct: int = 0

    def __add__(self, other: GroundingCheck) -> GroundingCheck:
        return GroundingCheck(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def supported_share(self) -> float:
        return self.supported / self.claiming if self.claiming else math.nan

    @property
    def slot_precision(self) -> float:
        return self.correct / self.stated if self.stated else math.nan

    @property
    def slot_recall(self) -> float:
        return self.recalled / self.expected if self.expected else math.nan


def _cell(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


@dataclass(frozen=True)
class LMEvalReport:
    """Scores per system, overall (`ALL`) and per action: a `convoplan.report.Report`, and every written message."""

    title: str
    systems: tuple[str, ...]
    actions: tuple[str, ...]
    """Action categories, most frequent first."""
    scores: dict[str, dict[str, Score]]
    """system -> ALL or action -> Score."""
    notes: tuple[str, ...] = ()
    messages: tuple[dict[str, Any], ...] = ()
    """Every message: id, true action, reference, and per system the text, intended and assigned action."""
    chart_actions: int = 20
    """Action categories in the bar chart (the most frequent; the tables list all)."""
    comparisons: tuple[tuple[str, str], ...] = ()
    """(system, baseline) pairs whose per-action BLEU wins are stated; default: every system against the first."""
    grounding: dict[str, dict[str, GroundingCheck]] = field(default_factory=dict)
    """system -> ALL or action -> the grounding check of its messages (empty: nothing was checked)."""

    def markdown(self, level: int = 2) -> str:
        lines = [f"{'#' * level} {self.title}", "", *(f"- {note}" for note in self.notes)]
        lines += ["", "| system | messages | BLEU | adherence | length ratio |", "|---|---:|---:|---:|---:|"]
        for system in self.systems:
            s = self.scores[system][ALL]
            cells = f"{s.bleu:.2f} | {_cell(s.adherence, '.1%')} | {_cell(s.length_ratio, '.2f')}"
            lines.append(f"| {system} | {s.messages} | {cells} |")
        for system, baseline in self.comparisons or [(s, self.systems[0]) for s in self.systems[1:]]:
            won, of = self.wins(system, baseline)
            won_5, of_5 = self.wins(system, baseline, min_messages=5)
            lines.append(
                f"\n{system} over {baseline}, BLEU per action: higher in {won} of {of} actions "
                f"({won_5} of {of_5} with at least 5 messages)"
            )
        lines += self._grounding_lines()
        head = " | ".join(f"BLEU {s}" for s in self.systems) + " | " + " | ".join(f"adh. {s}" for s in self.systems)
        lines += ["", f"| action | messages | {head} |", "|---|---:|" + "---:|" * (2 * len(self.systems))]
        for action in self.actions:
            row = [self.scores[s][action] for s in self.systems]
            bleu = " | ".join(f"{r.bleu:.2f}" for r in row)
            adherence = " | ".join(_cell(r.adherence, ".0%") for r in row)
            lines.append(f"| {action} | {row[0].messages} | {bleu} | {adherence} |")
        return "\n".join(lines) + "\n"

    def _grounding_lines(self) -> list[str]:
        """The grounding check's tables: claims supported by the knowledge, and slot precision and recall."""
        if not self.grounding:
            return []
        overall = {system: self.grounding[system][ALL] for system in self.systems}
        lines = []
        if any(g.claiming for g in overall.values()):
            lines += ["", "Grounding check: messages whose claims (statements, numbers) the knowledge supports", ""]
            lines += ["| action | " + " | ".join(self.systems) + " |", "|---|" + "---:|" * len(self.systems)]
            for group in [*self.actions, ALL]:
                row = [self.grounding[system].get(group, GroundingCheck()) for system in self.systems]
                if any(g.claiming for g in row):
                    cells = " | ".join(f"{_cell(g.supported_share, '.1%')} of {g.claiming}" for g in row)
                    lines.append(f"| {group} | {cells} |")
        if any(g.slot_messages for g in overall.values()):
            lines += [
                "",
                "| system | messages with item values | slot precision | slot recall |",
                "|---|---:|---:|---:|",
            ]
            for system, g in overall.items():
                precision, recall = _cell(g.slot_precision, ".1%"), _cell(g.slot_recall, ".1%")
                lines.append(f"| {system} | {g.slot_messages} | {precision} ({g.correct}/{g.stated}) | {recall} |")
        return lines

    def wins(self, system: str, baseline: str, min_messages: int = 1) -> tuple[int, int]:
        """(actions where `system` has the higher BLEU, actions compared): the actions with at least
        `min_messages` messages."""
        compared = [a for a in self.actions if self.scores[system][a].messages >= min_messages]
        won = sum(self.scores[system][a].bleu > self.scores[baseline][a].bleu for a in compared)
        return won, len(compared)

    def to_dict(self) -> dict[str, Any]:
        def plain(values: dict[str, Any]) -> dict[str, Any]:  # NaN (nothing to score) as JSON null
            return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}

        def plain_grounding(g: GroundingCheck) -> dict[str, Any]:
            shares = {"supported_share": g.supported_share, "slot_precision": g.slot_precision}
            return plain(asdict(g) | shares | {"slot_recall": g.slot_recall})

        return {
            "title": self.title,
            "notes": list(self.notes),
            "systems": list(self.systems),
            "actions": list(self.actions),
            "scores": {
                s: {group: plain(asdict(score)) for group, score in self.scores[s].items()} for s in self.systems
            },
            "grounding": {
                s: {group: plain_grounding(g) for group, g in groups.items()} for s, groups in self.grounding.items()
            },
        }

    def png(self) -> bytes:
        """BLEU (top panel) and adherence (bottom) per action for every system: the `chart_actions` most frequent
        categories, then all messages."""
        import numpy as np
        from matplotlib.figure import Figure

        groups = [*self.actions[: self.chart_actions], ALL]
        width = 0.8 / len(self.systems)
        x = np.arange(len(groups))
        figure = Figure(figsize=(max(6.0, 0.55 * len(groups) + 2), 6.5), layout="constrained")
        panels = figure.subplots(2, 1, sharex=True)
        for k, system in enumerate(self.systems):
            scores = [self.scores[system][g] for g in groups]
            offset = x - 0.4 + width * (k + 0.5)
            panels[0].bar(offset, [s.bleu for s in scores], width, label=system, color=f"C{k}")
            panels[1].bar(offset, [100 * s.adherence for s in scores], width, label=system, color=f"C{k}")
        panels[0].set_ylabel("BLEU")
        panels[1].set_ylabel("adherence (%)")
        panels[1].set_ylim(0, 100)
        panels[0].legend(fontsize=8, frameon=False)
        panels[1].set_xticks(x, [f"{g} ({self.scores[self.systems[0]][g].messages})" for g in groups])
        panels[1].tick_params(axis="x", labelrotation=60, labelsize=7)
        figure.suptitle(self.title)
        return figure_png(figure, dpi=100)

    def messages_jsonl(self) -> str:
        """`messages` as JSON Lines (for messages.jsonl beside the report)."""
        return "".join(json.dumps(message, ensure_ascii=False) + "\n" for message in self.messages)


def _bleu(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, float]:
    """(corpus BLEU, hypothesis length / reference length in BLEU's tokens)."""
    import sacrebleu

    # force: sacrebleu's own warning about text that looks tokenized (" ." endings) would print at every call, one
    # per system and action; `score_systems` says it once, in the report's notes.
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)], force=True)
    return float(bleu.score), bleu.sys_len / bleu.ref_len if bleu.ref_len else math.nan


def _tokenized_note(found: Sequence[Target], written: Mapping[str, Sequence[str]]) -> list[str]:
    """A note when many texts end in a tokenized period (" ."), which 13a tokenisation scores as it is (sacrebleu
    warns the data may not be detokenized; that hurts scores, though every system alike)."""
    counts = {"references": sum(t.reference.endswith(" .") for t in found)}
    counts |= {system: sum(text.endswith(" .") for text in texts) for system, texts in written.items()}
    shown = ", ".join(f"{name} {n}" for name, n in counts.items() if n >= 100)
    return [f"texts ending in a tokenized period (' .'): {shown}; BLEU reads them as they are"] if shown else []


def _assigned(labeller: Labeller, histories: Sequence[Conversation], texts: Sequence[str]) -> list[str | None]:
    """The labeller's action for each text read as the agent message after its history (one batched call)."""
    read = [
        Conversation(id=h.id, domain=h.domain, turns=[*h.turns, Turn(speaker="agent", text=text or " ")])
        for h, text in zip(histories, texts, strict=True)
    ]
    verdicts = labeller.label(read)
    return [(v[-1].action if v[-1] is not None else None) for v in verdicts]


def grounding_checks(
    found: Sequence[Target],
    texts: Sequence[str],
    knowledge: KnowledgeIndex | None = None,
    vocabulary: Mapping[str, frozenset[str]] | None = None,
    config: SupportConfig | None = None,
) -> list[GroundingCheck]:
    """The grounding check of each message (one per target): its claims against the passages of the entity in
    focus after its history in `knowledge` (`KnowledgeIndex.for_claims`: a statement about another animal counts
    against it, however true), and its slots against the latest item the history's API returned (`vocabulary`:
    every value of each API's items, `item_vocabulary`)."""
    checks = []
    for target, text in zip(found, texts, strict=True):
        check = GroundingCheck()
        if knowledge is not None:
            support = check_support(text, knowledge.for_claims(text, target.history.turns), config)
            if support.claims:
                check = replace(check, claiming=1, supported=int(support.supported))
        item = returned_item(target.history)
        if item is not None and vocabulary is not None:
            slots = check_slots(text, target.reference, item, vocabulary)
            if slots.expected:
                check = replace(
                    check,
                    slot_messages=1,
                    expected=slots.expected,
                    recalled=slots.recalled,
                    stated=slots.stated,
                    correct=slots.correct,
                )
        checks.append(check)
    return checks


def score_systems(
    found: Sequence[Target],
    written: Mapping[str, Sequence[str]],
    intended: Mapping[str, Sequence[str | None]],
    labeller: Labeller,
    *,
    title: str = "Action-directed LM",
    notes: Sequence[str] = (),
    knowledge: KnowledgeIndex | None = None,
    vocabulary: Mapping[str, frozenset[str]] | None = None,
) -> LMEvalReport:
    """BLEU and adherence of each system's messages (`written[system]`, one per target) overall and per true
    action; `intended[system]` is the action each message should carry (adherence counts a match with the
    labeller's verdict; None never matches). With `knowledge` or `vocabulary`, the grounding check of every message
    too (`grounding_checks`)."""
    counts = Counter(t.action for t in found)
    actions = tuple(sorted(counts, key=lambda a: (-counts[a], a)))
    histories = [t.history for t in found]
    scores: dict[str, dict[str, Score]] = {}
    grounding: dict[str, dict[str, GroundingCheck]] = {}
    messages: list[dict[str, Any]] = [{"id": t.history.id, "action": t.action, "reference": t.reference} for t in found]
    for system, texts in written.items():
        assigned = _assigned(labeller, histories, texts)
        for message, text, goal, verdict in zip(messages, texts, intended[system], assigned, strict=True):
            message[system] = {"text": text, "intended": goal, "assigned": verdict}
        hits = [a is not None and a == i for a, i in zip(assigned, intended[system], strict=True)]
        rows = {ALL: list(range(len(found)))} | {a: [i for i, t in enumerate(found) if t.action == a] for a in actions}
        scores[system] = {}
        for group, members in rows.items():
            bleu, length = _bleu([texts[i] for i in members], [found[i].reference for i in members])
            adherence = sum(hits[i] for i in members) / len(members) if members else math.nan
            scores[system][group] = Score(len(members), bleu, adherence, length)
        if knowledge is not None or vocabulary:
            checks = grounding_checks(found, texts, knowledge, vocabulary)
            for message, check in zip(messages, checks, strict=True):
                message[system]["grounding"] = asdict(check)
            grounding[system] = {
                group: sum((checks[i] for i in members), GroundingCheck()) for group, members in rows.items()
            }
    notes = [*notes, *_tokenized_note(found, written)]
    return LMEvalReport(title, tuple(written), actions, scores, tuple(notes), tuple(messages), grounding=grounding)


def baseline_messages(
    found: Sequence[Target], index: ExemplarIndex, embedder: SentenceEmbedder
) -> dict[str, list[str]]:
    """The retrieval baselines' message for each target, told its true action: the most frequent indexed message of
    the action, and the indexed message of the action whose context is nearest ("" where the index has none)."""
    nearest = index.nearest([t.history.turns for t in found], [t.action for t in found], embedder, k=1)
    return {
        FREQUENT: [index.most_frequent(t.action) or "" for t in found],
        NEAREST: [hits[0].text if hits else "" for hits in nearest],
    }


def evaluate_lm(
    conversations: Sequence[Conversation],
    action_lm: LanguageModel,
    vanilla_lm: LanguageModel,
    labeller: Labeller,
    nba: NextActionModel,
    config: EvalConfig | None = None,
    *,
    title: str = "Action-directed LM",
    progress: Progress | None = None,
    exemplars: ExemplarIndex | None = None,
    embedder: SentenceEmbedder | None = None,
    knowledge: KnowledgeIndex | None = None,
) -> LMEvalReport:
    """The three systems on `config.split` of `conversations` (see the module docstring), and the two retrieval
    baselines where an exemplar index of the train split is given (searched with `embedder`, default the shared
    one); `progress` hears how many messages each system has written. A grounded LM's prompts read `knowledge`
    and `exemplars` as its folder says (ValueError naming the LM when it needs one not given)."""
    config = config or EvalConfig()
    found = targets(conversations, config)
    if not found:
        raise ValueError(f"no agent message with an action in split {config.split!r}")
    histories = [t.history for t in found]
    true = [t.action for t in found]
    guess, directing = predicted_actions(nba, histories, config.threshold, action_lm.codec.actions)
    writers: list[LMWriter] = []
    for name, lm in (("action-directed", action_lm), (VANILLA, vanilla_lm)):
        try:
            grounder = Grounder(
                lm.codec, grounding_config(lm.info), knowledge=knowledge, exemplars=exemplars, embedder=embedder
            )
        except ValueError as error:
            raise ValueError(f"the {name} LM: {error}") from None
        writers.append(LMWriter(lm, config.sampling, config.batch_size, grounder))
    directed, vanilla = writers
    written = {
        VANILLA: vanilla.write(histories, [None] * len(found), renamed(progress, f"writing ({VANILLA})")),
        TRUE: directed.write(histories, true, renamed(progress, f"writing ({TRUE})")),
        PREDICTED: directed.write(histories, directing, renamed(progress, f"writing ({PREDICTED})")),
    }
    intended: dict[str, Sequence[str | None]] = {VANILLA: true, TRUE: true, PREDICTED: guess}
    comparisons = [(TRUE, VANILLA), (PREDICTED, VANILLA)]
    if exemplars is not None:
        from convoplan.embed import shared_embedder

        written |= baseline_messages(found, exemplars, embedder or shared_embedder())
        intended |= {FREQUENT: true, NEAREST: true}
        comparisons += [(system, baseline) for system in (TRUE, PREDICTED) for baseline in (FREQUENT, NEAREST)]
    decoding = "greedy"
    if config.sampling.do_sample:
        sampling = config.sampling
        decoding = f"sampled (temperature {sampling.temperature}, top-p {sampling.top_p}, seed {sampling.seed})"
    which = " (human labels)" if config.human_labels_only else ""
    agree = sum(g == t for g, t in zip(guess, true, strict=True)) / len(found)
    notes = [
        f"{len(found)} messages of split {config.split!r}{which}, {len(set(true))} actions; decoding {decoding}, "
        f"at most {config.sampling.max_new_tokens} tokens",
        f"predicted action = true action for {agree:.1%} of messages; "
        f"{directing.count(None)} predicted-action messages fell back to no action",
    ]
    untagged = sum(a not in action_lm.codec.actions for a in true)
    if untagged:
        notes.append(f"{untagged} messages carry an action the LM has no tag for: written without an action")
    for name, writer in (("action-directed", directed), (VANILLA, vanilla)):
        grounding = writer.grounder.config
        if grounding.active:
            reads = [
                *(["events"] if grounding.events else []),
                *([f"{grounding.knowledge} passages"] if grounding.knowledge else []),
                *([f"{grounding.exemplars} exemplars"] if grounding.exemplars else []),
            ]
            notes.append(
                f"{name} LM's prompts read {', '.join(reads)} (at most {grounding.budget} tokens of passages and "
                f"exemplars); {writer.prompts_cut} prompts left something out: {writer.cut.describe()}"
            )
    if exemplars is not None:
        notes.append(
            f"baselines told the true action: the {FREQUENT} of the action and the {NEAREST} by context (the "
            f"previous {exemplars.config.context_turns} turns) among {len(exemplars)} messages of split "
            f"{exemplars.config.split!r}"
        )
    train = [c for c in conversations if c.meta.get("split") == "train"]
    vocabulary = item_vocabulary(train)
    if knowledge is not None:
        notes.append(f"grounding check: claims against the {len(knowledge)} passages of the knowledge file")
    report = score_systems(
        found, written, intended, labeller, title=title, notes=notes, knowledge=knowledge, vocabulary=vocabulary
    )
    return replace(report, comparisons=tuple(comparisons))

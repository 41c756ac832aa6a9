"""Does the next-action model answer a question about an attribute with the `attribute` action? (issue 28, item 6)

The demo's next-action model (`convoplan demo`: a supervised NBA saved as `OUT/artifacts/nba`, trained on the train
split of the SAQL arm's conversations, `OUT/lm-world/logs.jsonl`, and of the hand-written planner's with the same
users, `OUT/lm-world/planner.jsonl`; before issue 28 on the former alone, for 30 steps) is asked for the next action
after customer messages it never saw: as the **opening** message of a conversation (what the console sends after one
customer message), and **mid**-conversation, appended after a complete bot response of a held-out conversation of
the logs (validation and test splits: users the model did not train on) in place of the user's logged reply, about
the animal the bot was talking about or about another one, after a response that ends in a statement (`mid`) or in
a question (`mid-question`).

- attribute questions of five kinds (weight, size, speed, lifespan, diet), from templates over the 70 animals of
  the knowledge base; the issue's "how heavy is an elephant?" is one of them. `unseen wording` counts the questions
  worded in a way the simulated users never word them (`convoplan.worlds.animals.users.ASKING`);
- fact requests, as a control: they should get `fact`;
- the other turns: top-1 / top-3 of the logged next action on every labelled agent message of held-out logs, and on
  those whose previous message is not an attribute question; every model on every run's logs (and `--heldout`'s).

Each run is LABEL=LOGS[,NBA], LOGS one file or several joined by "+": without an NBA folder one is trained as the
demo trains it (`demo_nba_config`, early stopping on the logs' validation split, seed 0). Before/after a change: run
the demo on each version and give both runs to one call, so that the models are evaluated on the same machine,
probes and seeds; `--contexts` gives every run the mid contexts of one logs file (the worlds' conversation ids and
splits are the same, so either is held out).

    .venv/bin/python bench/nba_questions.py --run before=old/lm-world/logs.jsonl,old/artifacts/nba \\
        --run after=runs/demo/lm-world/logs.jsonl+runs/demo/lm-world/planner.jsonl,runs/demo/artifacts/nba \\
        --contexts runs/demo/lm-world/logs.jsonl --heldout planner=runs/demo/lm-world/planner.jsonl
    .venv/bin/python bench/nba_questions.py --run saql=runs/demo/lm-world/logs.jsonl   # trains an NBA on them
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from convoplan.actions.load import load_nba
from convoplan.actions.nba import history_prefixes
from convoplan.actions.protocols import NextActionModel
from convoplan.actions.train_nba import train_nba
from convoplan.cli.world import demo_nba_config
from convoplan.compose.loop import QUESTION_ACTIONS
from convoplan.compose.nlu import interpret
from convoplan.embed import SentenceEmbedder, default_cache_dir
from convoplan.schema import Conversation, Turn, read_jsonl
from convoplan.worlds.animals.knowledge import Animal, load_knowledge_base
from convoplan.worlds.animals.users import ASKING
from convoplan.worlds.animals.world import animals_lexicon

QUESTIONS: dict[str, tuple[str, ...]] = {
    "weight": (
        "how heavy is {a}?",
        "how much does {a} weigh?",
        "what's the weight of {a}?",
        "how many kilograms does {a} weigh?",
    ),
    "size": ("how big is {a}?", "how big do {plural} get?", "what size is {a}?", "how long is {a}?"),
    "speed": (
        "how fast is {a}?",
        "how fast can {plural} go?",
        "what's the top speed of {a}?",
        "how quick are {plural}?",
    ),
    "lifespan": ("how long do {plural} live?", "how old can {a} get?", "what's the lifespan of {a}?"),
    "diet": ("what does {a} eat?", "what do {plural} eat?", "what food do {plural} eat?", "what is the {name}'s diet?"),
}
"""Attribute questions by the attribute they ask about; {a} "an elephant", {plural} "elephants", {name} "elephant"."""
PRONOUN_QUESTIONS: dict[str, tuple[str, ...]] = {
    "weight": ("how heavy are they?", "how much does it weigh?"),
    "size": ("how big are they?", "how big does it get?"),
    "speed": ("how fast are they?", "how fast can it go?"),
    "lifespan": ("how long do they live?", "how old do they get?"),
    "diet": ("what do they eat?", "what does it eat?"),
}
"""Mid-conversation only: the same questions about the animal the bot was talking about."""
CONTEXTS = ("opening", "mid", "mid, another animal", "mid-question", "mid-question, another animal")
"""Where a probe is asked (`Probe.context`)."""
FACT_REQUESTS = (
    "tell me a fact about {plural}",
    "tell me something interesting about {plural}",
    "do you know any fun facts about {plural}?",
    "tell me more about {plural}",
)
"""The control: requests for a fact."""


@dataclass
class Probe:
    kind: str
    """weight, size, speed, lifespan, diet, or fact."""
    context: str
    """opening; mid (after a bot response that ends in a statement) or mid-question (after one that ends in a
    question), either about the animal the bot was talking about or (", another animal") about another one."""
    text: str
    history: Conversation
    unseen: bool
    """Worded in a way the simulated users never word it."""


def user_wordings() -> set[str]:
    """Every request the simulated users can word (`ASKING`, for `Probe.unseen`; before issue 28 they asked every
    attribute question as "how big are they?")."""
    kb = load_knowledge_base()
    forms = [("it", "its", "it", "is", "does"), ("they", "their", "them", "are", "do")]
    for animal in kb.animals:
        forms.append((animal.with_article, f"the {animal.name}'s", animal.plural, "is", "does"))
        forms.append((animal.plural, f"the {animal.name}'s", animal.plural, "are", "do"))
    return {
        template.format(it=it, its=its, them=them, are=are, do=do).lower()
        for templates in ASKING.values()
        for template in templates
        for it, its, them, are, do in forms
    }


@dataclass
class Context:
    history: Conversation
    focus: Animal
    """The animal the bot was talking about."""
    asked: bool
    """The bot's response ended in a question."""


def held_out_contexts(logs: Sequence[Conversation]) -> list[Context]:
    """Every held-out conversation cut after a complete bot response that a user message followed (the user's
    message left out) and in which the bot's last content or offer names an animal."""
    kb = load_knowledge_base()
    lexicon = animals_lexicon(kb)
    contexts = []
    for conversation in logs:
        if conversation.meta.get("split") not in ("validation", "test"):
            continue
        for t in range(1, len(conversation.turns)):
            turns = conversation.turns[:t]
            if conversation.turns[t].speaker != "user" or turns[-1].speaker != "agent":
                continue
            named = next(
                (
                    mentions[0]
                    for turn in reversed(turns)
                    if turn.speaker == "agent" and turn.action in FOCUSED
                    if (mentions := interpret(turn.text, lexicon, None, None).mentions)
                ),
                None,
            )
            if named is not None:
                history = Conversation(id=f"{conversation.id}@{t}", domain=conversation.domain, turns=turns)
                contexts.append(Context(history, kb[named], turns[-1].action in QUESTION_ACTIONS))
    return contexts


FOCUSED = ("fact", "sound", "attribute", "yes_no_question")
"""Agent actions whose text names the animal in focus (a yes/no question names the one it offers)."""


def probes(logs: Sequence[Conversation], seed: int) -> list[Probe]:
    """Every probe: each question template over the animals as the opening message; and in a seeded held-out
    context, about the animal the bot was talking about (named, or as "it"/"they") and about another one."""
    kb = load_knowledge_base()
    contexts = held_out_contexts(logs)
    if not contexts:
        raise SystemExit("the logs have no held-out conversation (meta.split validation or test)")
    rng = random.Random(seed)
    seen = user_wordings()
    out = []

    def probe(kind: str, text: str, context: str, turns: Sequence[Turn], domain: str) -> Probe:
        history = Conversation(id="probe", domain=domain, turns=[*turns, _user(text)])
        return Probe(kind, context, text, history, text.lower() not in seen)

    def mid(kind: str, template: str, animal: Animal | None) -> None:
        context = rng.choice(contexts)
        where = "mid-question" if context.asked else "mid"
        about = context.focus if animal is None else animal
        if about.name != context.focus.name:
            where = f"{where}, another animal"
        text = _fill(template, about)
        out.append(probe(kind, text, where, context.history.turns, context.history.domain))

    for animal in kb.animals:
        for kind, templates in (*QUESTIONS.items(), ("fact", FACT_REQUESTS)):
            for template in templates:
                out.append(probe(kind, _fill(template, animal), "opening", [], "animals"))
                mid(kind, template, None)  # about the animal in focus
                mid(kind, template, animal)  # most often another one
    for kind, templates in PRONOUN_QUESTIONS.items():
        for template in templates:
            for _ in range(len(kb.animals)):
                mid(kind, template, None)
    return out


def _fill(template: str, animal: Animal) -> str:
    return template.format(a=animal.with_article, plural=animal.plural, name=animal.name)


def _user(text: str) -> Turn:
    return Turn(speaker="user", text=text)


def check_probes(items: Sequence[Probe]) -> None:
    """The NLU must read every attribute probe as an attribute question of its kind, and every fact probe as a fact
    request, or the probe measures nothing the world could have taught."""
    lexicon = animals_lexicon(load_knowledge_base())
    for probe in items:
        heard = interpret(probe.text, lexicon, None, None)
        wanted = "fact" if probe.kind == "fact" else "attribute"
        if heard.request != wanted:
            raise SystemExit(f"the NLU reads {probe.text!r} as {heard.request!r}, not {wanted!r}")


@dataclass
class Row:
    top1: float
    top3: float
    probability: float
    n: int


def score(model: NextActionModel, histories: Sequence[Conversation], wanted: Sequence[str]) -> Row:
    """Share of the histories where the wanted action is the model's first, among its first three, and its mean
    probability."""
    if not histories:
        return Row(float("nan"), float("nan"), float("nan"), 0)
    top1 = top3 = 0
    probability = 0.0
    for first in range(0, len(histories), 512):
        rankings = model.next_actions(histories[first : first + 512])
        for action, ranking in zip(wanted[first : first + 512], rankings, strict=True):
            actions = [s.action for s in ranking]
            top1 += actions[:1] == [action]
            top3 += action in actions[:3]
            probability += next((s.score for s in ranking if s.action == action), 0.0)
    return Row(top1 / len(histories), top3 / len(histories), probability / len(histories), len(histories))


def score_probes(model: NextActionModel, items: Sequence[Probe], wanted: str) -> Row:
    return score(model, [p.history for p in items], [wanted] * len(items))


def other_turns(logs: Sequence[Conversation]) -> tuple[list[Conversation], list[str]]:
    """(history, logged action) of every labelled agent message of the held-out logs whose previous message is not
    an attribute question (the NLU's reading)."""
    lexicon = animals_lexicon(load_knowledge_base())
    held_out = [c for c in logs if c.meta.get("split") in ("validation", "test")]
    histories, actions = [], []
    for history, action in zip(*history_prefixes(held_out), strict=True):
        last = history.turns[-1] if history.turns else None
        if last is None or last.speaker != "user" or interpret(last.text, lexicon, None, None).request != "attribute":
            histories.append(history)
            actions.append(action)
    return histories, actions


def read_logs(paths: str) -> list[Conversation]:
    """The conversations of one or more files joined by "+"."""
    return [c for path in paths.split("+") for c in read_jsonl(path)]


def parse_logs(value: str) -> tuple[str, str]:
    label, _, path = value.partition("=")
    if not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=LOGS, got {value!r}")
    return label, path


def parse_run(value: str) -> tuple[str, str, Path | None]:
    label, _, rest = value.partition("=")
    parts = rest.split(",")
    if not label or not parts[0] or len(parts) > 2:
        raise argparse.ArgumentTypeError(f"expected LABEL=LOGS[,NBA], got {value!r}")
    return label, parts[0], Path(parts[1]) if len(parts) == 2 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=parse_run, action="append", required=True, help="LABEL=LOGS[,NBA], repeated")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mid-conversation contexts")
    parser.add_argument(
        "--heldout",
        type=parse_logs,
        action="append",
        help="LABEL=LOGS: more held-out logs to score every model's logged-action accuracy on, repeated",
    )
    parser.add_argument(
        "--contexts",
        type=str,
        default=None,
        help="logs whose held-out conversations give every run its mid contexts "
        "(default: each run's own logs; the worlds' conversation ids and splits are the same, so either is held out)",
    )
    parser.add_argument("--embedding-cache", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    embedder = SentenceEmbedder(cache_dir=args.embedding_cache or default_cache_dir())
    results: dict[str, dict[str, Row]] = {}
    chips: dict[str, str] = {}
    every_logs = {label: read_logs(path) for label, path, _ in args.run}
    every_logs |= {label: read_logs(path) for label, path in args.heldout or []}
    shared = read_logs(args.contexts) if args.contexts is not None else None
    for label, logs_path, nba_path in args.run:
        started = time.perf_counter()
        logs = every_logs[label]
        if nba_path is None:
            train = [c for c in logs if c.meta.get("split") == "train"]
            validation = [c for c in logs if c.meta.get("split") == "validation"]
            model: NextActionModel = train_nba(train, embedder, demo_nba_config(), validation).model
            how = f"trained here as the demo trains it, on {len(train)} train conversations"
        else:
            model = load_nba(nba_path, embedder)
            how = f"loaded from {nba_path}"
        items = probes(shared or logs, args.seed)
        check_probes(items)
        rows: dict[str, Row] = {}
        attribute = [p for p in items if p.kind != "fact"]
        for context in CONTEXTS:
            chosen = [p for p in attribute if p.context == context]
            rows[f"attribute questions, {context}"] = score_probes(model, chosen, "attribute")
        rows["attribute questions, unseen wording"] = score_probes(
            model, [p for p in attribute if p.unseen], "attribute"
        )
        for kind in QUESTIONS:
            rows[f"  {kind} (every context)"] = score_probes(
                model, [p for p in attribute if p.kind == kind], "attribute"
            )
        elephant = [p for p in attribute if p.text == "how heavy is an elephant?" and p.context == "opening"]
        rows["'how heavy is an elephant?', opening"] = score_probes(model, elephant, "attribute")
        for context in CONTEXTS:
            chosen = [p for p in items if p.kind == "fact" and p.context == context]
            rows[f"fact requests (control: fact), {context}"] = score_probes(model, chosen, "fact")
        for source, source_logs in every_logs.items():  # each model on every run's held-out logs
            held_out = [c for c in source_logs if c.meta.get("split") in ("validation", "test")]
            turns = history_prefixes(held_out)
            rows[f"held-out logs of {source}, every labelled turn (logged action)"] = score(model, *turns)
            rows[f"held-out logs of {source}, turns not after an attribute question"] = score(
                model, *other_turns(source_logs)
            )
        results[label] = rows
        (ranking,) = model.next_actions([elephant[0].history])
        chips[label] = ", ".join(f"{s.action} {s.score:.3f}" for s in ranking[:3])
        print(f"{label}: {logs_path}, NBA {how}; {time.perf_counter() - started:.0f} s", file=sys.stderr)

    labels = list(results)
    print(f"`{' '.join(['python', *sys.argv])}`\n")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__}, {args.threads} thread(s); "
        f"{time.strftime('%Y-%m-%d')}\n"
    )
    header = " | ".join(f"{label} top-1 | {label} top-3 | {label} p" for label in labels)
    print(f"| probes | n | {header} |")
    print("|---|---:|" + "---:|" * (3 * len(labels)))
    for name in results[labels[0]]:
        cells = []
        for label in labels:
            row = results[label][name]
            cells += [
                _percent(row.top1),
                _percent(row.top3),
                "" if row.probability != row.probability else f"{row.probability:.3f}",
            ]
        n = "/".join(str(results[label][name].n) for label in labels)
        print(f"| {name} | {n} | {' | '.join(cells)} |")
    print('\nThe first three chips after the opening message "how heavy is an elephant?":\n')
    for label in labels:
        print(f"- {label}: {chips[label]}")


def _percent(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}%"


if __name__ == "__main__":
    main()

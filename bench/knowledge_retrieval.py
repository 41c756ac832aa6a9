"""How well does a knowledge index find what a customer asks about? BM25 against sentence embeddings (issue 28).

The queries are user messages made from templates over the animals of the world's knowledge base, as a customer
would ask them: about an attribute ("how heavy is a lion?", "what do lions feed on?"), a sound, or anything
("tell me something about lions"). A "pronoun" question ("how heavy are they?") follows an agent turn that names the
animal, so the query is the last two turns (`query_from_turns`). A hit is right when it is about the animal asked
about and, for an attribute or sound question, states that attribute (a diet question also accepts a fact whose
topic is diet; a habitat question the habitat or the regions). Recall@k: the share of questions with a right
passage among the first k. Each method is measured without the entity (it must find the animal from the words) and
with it (the caller knows the animal in focus), with the index build time and the mean time of one search.

    .venv/bin/convoplan world knowledge --out runs/animals-kb.jsonl
    .venv/bin/python bench/knowledge_retrieval.py runs/animals-kb.jsonl
"""

from __future__ import annotations

import argparse
import platform
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from convoplan.embed import SentenceEmbedder
from convoplan.retrieval.knowledge import KnowledgeIndex, Method, Passage, query_from_turns, read_knowledge
from convoplan.schema import Turn
from convoplan.worlds.animals.knowledge import Animal, load_knowledge_base

KS = (1, 3, 5)


@dataclass(frozen=True)
class Question:
    kind: str
    """The attribute asked about ("weight", "diet", ...), or "anything"."""
    turns: tuple[Turn, ...]
    animal: str
    right: Callable[[Passage], bool]


def _is_fact_about(topic: str) -> Callable[[Passage], bool]:
    return lambda p: p.id.split("/")[1] == "fact" and p.fields.get("topic") == topic


def _has(*fields: str) -> Callable[[Passage], bool]:
    return lambda p: any(name in p.fields for name in fields)


ANYTHING: Callable[[Passage], bool] = lambda p: True  # noqa: E731
SIZE = ("length_m", "height_m", "wingspan_m")
# (kind, what makes a passage right, templates naming the animal, a question that only says "they").
TEMPLATES: list[tuple[str, Callable[[Passage], bool], tuple[str, ...], str]] = [
    ("weight", _has("weight_kg"), ("how heavy is {a}?", "how much does {a} weigh?"), "how heavy are they?"),
    ("size", _has(*SIZE), ("how big is {a}?", "how large do {plural} get?"), "how big are they?"),
    (
        "lifespan",
        _has("lifespan_years"),
        ("how long does {a} live?", "what is the lifespan of {a}?"),
        "how old can they get?",
    ),
    ("speed", _has("top_speed_kmh"), ("how fast can {a} go?", "what is the top speed of {a}?"), "how fast are they?"),
    (
        "diet",
        lambda p: _has("diet")(p) or _is_fact_about("diet")(p),
        ("what does the {name} eat?", "what do {plural} feed on?"),
        "what do they eat?",
    ),
    (
        "habitat",
        _has("habitat", "regions"),
        ("where do {plural} live?", "what is the habitat of {a}?"),
        "where do they live?",
    ),
    ("sound", _has("sound"), ("what sound does {a} make?", "what noise do {plural} make?"), "what do they sound like?"),
    ("anything", ANYTHING, ("tell me something about {plural}", "do you know any fun facts about the {name}?"), ""),
]


def questions(animals: list[Animal]) -> list[Question]:
    made = []
    for animal in animals:
        names = {"a": animal.with_article, "name": animal.name, "plural": animal.plural}
        for kind, right, templates, pronoun in TEMPLATES:
            if kind == "speed" and animal.top_speed_kmh is None:
                continue
            for template in templates:
                made.append(Question(kind, (Turn("user", template.format(**names)),), animal.name, right))
            if pronoun:
                opening = Turn("agent", f"Let's talk about {animal.plural}.")
                made.append(Question(f"{kind} (they)", (opening, Turn("user", pronoun)), animal.name, right))
    return made


def measure(
    index: KnowledgeIndex, asked: list[Question], with_entity: bool
) -> tuple[dict[str, list[list[bool]]], float]:
    """Per kind of question, for each question whether each of the first max(KS) hits is right; and the mean
    seconds of one search."""
    found: dict[str, list[list[bool]]] = defaultdict(list)
    start = time.perf_counter()
    for question in asked:
        hits = index.search(query_from_turns(question.turns, 2), max(KS), question.animal if with_entity else None)
        found[question.kind].append(
            [hit.passage.entity == question.animal and question.right(hit.passage) for hit in hits]
        )
    return found, (time.perf_counter() - start) / len(asked)


def recall(rows: list[list[bool]], k: int) -> float:
    return sum(any(row[:k]) for row in rows) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("knowledge", help="the animals knowledge file (convoplan world knowledge --out FILE)")
    parser.add_argument("--methods", nargs="*", default=["bm25", "embedding"])
    args = parser.parse_args()

    passages = read_knowledge(args.knowledge)
    asked = questions(load_knowledge_base().animals)
    embedder = SentenceEmbedder()  # in memory only: the times are of computing vectors, not of reading a cache
    start = time.perf_counter()
    embedder.model  # noqa: B018  # loaded here so that the embedding index's build time is the encoding alone
    load_seconds = time.perf_counter() - start

    results: dict[tuple[str, bool], dict[str, list[list[bool]]]] = {}
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}, {torch.get_num_threads()} torch "
        f"threads; {len(passages)} passages, {len(asked)} questions; the embedding model loaded in "
        f"{load_seconds:.1f} s (not counted below)"
    )
    print()
    print(
        "| method | entity known | "
        + " | ".join(f"R@{k}" for k in KS)
        + " | build (s) | build again (s) | search (ms) |"
    )
    print("|---|---|" + "---:|" * (len(KS) + 3))
    for method in args.methods:
        method_: Method = method
        builds = []
        for _ in range(2):  # the second build finds the passages' vectors in the embedder's cache
            start = time.perf_counter()
            index = KnowledgeIndex(passages, method_, embedder)
            builds.append(time.perf_counter() - start)
        for with_entity in (False, True):
            found, seconds = measure(index, asked, with_entity)
            results[method, with_entity] = found
            every = [row for rows in found.values() for row in rows]
            cells = [f"{recall(every, k):.3f}" for k in KS] + [f"{b:.3f}" for b in builds]
            # The second pass asks the same queries, whose vectors the embedder has cached by then: its time is not
            # that of a new query (and the entity filter costs nothing measurable), so one time serves both rows.
            cells.append(f"{seconds * 1000:.2f}" if not with_entity else "")
            print(f"| {method} | {'yes' if with_entity else 'no'} | " + " | ".join(cells) + " |")
    print()
    columns = [f"{method}{', entity known' if known else ''}" for method, known in results]
    print("| question | n | " + " | ".join(f"{c} R@1" for c in columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for kind in dict.fromkeys(q.kind for q in asked):
        cells = [f"{recall(found[kind], 1):.2f}" for found in results.values()]
        print(f"| {kind} | {sum(q.kind == kind for q in asked)} | " + " | ".join(cells) + " |")
    print()
    print(
        "R@k: the share of questions with a right passage among the first k hits. 'they': the question names no "
        "animal, the agent's turn before does (the query is the last two turns)."
    )


if __name__ == "__main__":
    main()

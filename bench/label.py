"""Issue 5's labeller measurements, in one run on one machine:

1. PersuasionForGood: accuracy and macro-F1 on the held-out annotated dialogues (test split, by dialogue), on all
   persuader labels and on the published set (10 strategies + non-strategy), with 5-fold cross-validation by
   dialogue beside the single split (30 test dialogues are few); optionally with the encoder fine-tuned;
2. STAR: action accuracy and macro-F1 from message text on the held-out dialogues;
3. labelling throughput (messages/s, cold cache) against the encoder's own forward time on the same texts.

    .venv/bin/python bench/label.py --out runs/bench-label
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from convoplan.actions.labeller import ActionClassifier, apply_labels, message_contexts
from convoplan.actions.train_labeller import LabellerConfig, LabellerMetrics, evaluate_labeller, train_labeller
from convoplan.corpora.persuasion import STRATEGIES
from convoplan.embed import SentenceEmbedder, default_cache_dir
from convoplan.schema import Conversation, Turn, read_jsonl


def split(conversations: Sequence[Conversation], name: str) -> list[Conversation]:
    return [c for c in conversations if c.meta.get("split") == name]


def row(name: str, metrics: LabellerMetrics, seconds: float) -> str:
    return (
        f"| {name} | {metrics.messages} | {metrics.accuracy * 100:.1f} | {metrics.macro_f1 * 100:.1f} "
        f"| {metrics.expected_calibration_error:.3f} | {seconds:.0f} |"
    )


def cross_validate(
    annotated: list[Conversation], config: LabellerConfig, embedder: SentenceEmbedder, folds: int
) -> list[LabellerMetrics]:
    """k folds by dialogue: each fold is the test set once; of the rest, one fold validates and the others train."""
    ids = sorted(c.id for c in annotated)
    fold_of = {conversation_id: i % folds for i, conversation_id in enumerate(ids)}
    results = []
    for k in range(folds):
        test = [c for c in annotated if fold_of[c.id] == k]
        validation = [c for c in annotated if fold_of[c.id] == (k + 1) % folds]
        train = [c for c in annotated if fold_of[c.id] not in (k, (k + 1) % folds)]
        classifier, _ = train_labeller(train, validation, config, embedder)
        results.append(evaluate_labeller(classifier, test))
    return results


def throughput(classifier: ActionClassifier, conversations: list[Conversation]) -> tuple[int, float, float]:
    """(messages, seconds to label them with a cold embedding cache, seconds the encoder alone takes on the very
    texts the labeller embeds): the encoder's forward pass is the limit of any labeller built on it."""
    unlabelled = [replace(c, turns=[Turn(speaker=t.speaker, text=t.text) for t in c.turns]) for c in conversations]
    contexts = message_contexts(unlabelled)
    texts = list(dict.fromkeys(t for c in contexts for t in (c.text, c.user_text, c.previous_text) if t))
    cold = SentenceEmbedder()
    cold.encode_uncached(["warm-up: load the model before timing"])
    classifier.embedder = cold
    start = time.perf_counter()
    apply_labels(unlabelled, classifier)
    labelling = time.perf_counter() - start
    start = time.perf_counter()
    SentenceEmbedder(model=cold.model).encode_uncached(texts)
    return len(contexts), labelling, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persuasion", type=Path, default=Path("runs/data/persuasion.jsonl"))
    parser.add_argument("--star", type=Path, default=Path("runs/data/star.jsonl"))
    parser.add_argument("--embedding-cache", type=Path, default=default_cache_dir(), help="sentence embedding cache")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-label"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--finetune", action="store_true", help="also fine-tune the encoder (published set)")
    parser.add_argument("--star-train", type=int, default=0, help="cap STAR training dialogues (0 = all)")
    parser.add_argument(
        "--sections", default="persuasion,cv,star,speed", help="which parts to run (comma-separated, default all)"
    )
    args = parser.parse_args()
    embedder = SentenceEmbedder(cache_dir=args.embedding_cache)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, Python {platform.python_version()}, 2 cores\n")

    persuasion = read_jsonl(args.persuasion)
    annotated = [c for c in persuasion if c.meta.get("annotated")]
    published = LabellerConfig(labels=list(STRATEGIES), other_label="non-strategy")
    settings = [
        ("all 27 persuader labels", LabellerConfig()),
        ("published set (10 strategies + non-strategy)", published),
    ]
    if args.finetune:
        settings.append(("published set, encoder fine-tuned", replace(published, finetune=True)))
    print("| PersuasionForGood labels | test messages | accuracy | macro-F1 | ECE | seconds |")
    print("|---|---|---|---|---|---|")
    summary: dict[str, object] = {}
    for name, config in settings:
        start = time.perf_counter()
        classifier, _ = train_labeller(split(annotated, "train"), split(annotated, "validation"), config, embedder)
        metrics = evaluate_labeller(classifier, split(annotated, "test"))
        print(row(name, metrics, time.perf_counter() - start))
        summary[name] = metrics.__dict__
    sections = set(args.sections.split(","))
    if "cv" in sections:
        print_cross_validation(annotated, settings[:2], embedder, args.folds, summary)
    if "star" in sections:
        star_section(args, embedder, summary)
    if "speed" in sections:
        speed_section(annotated, persuasion, published, embedder, summary)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))


def print_cross_validation(
    annotated: list[Conversation],
    settings: list[tuple[str, LabellerConfig]],
    embedder: SentenceEmbedder,
    folds: int,
    summary: dict[str, object],
) -> None:
    print(f"\n{folds}-fold cross-validation by dialogue (all 300 annotated dialogues; mean ± sd over folds):\n")
    print("| PersuasionForGood labels | accuracy | macro-F1 |")
    print("|---|---|---|")
    for name, config in settings:
        results = cross_validate(annotated, config, embedder, folds)
        accuracy = np.array([m.accuracy for m in results]) * 100
        f1 = np.array([m.macro_f1 for m in results]) * 100
        print(f"| {name} | {accuracy.mean():.1f} ± {accuracy.std():.1f} | {f1.mean():.1f} ± {f1.std():.1f} |")
        summary[f"cv: {name}"] = {"accuracy": accuracy.tolist(), "macro_f1": f1.tolist()}


def star_section(args: argparse.Namespace, embedder: SentenceEmbedder, summary: dict[str, object]) -> None:
    star = [c for c in read_jsonl(args.star) if any(t.action for t in c.turns)]
    train = split(star, "train")[: args.star_train or None]
    start = time.perf_counter()
    star_labeller, _ = train_labeller(train, split(star, "validation"), LabellerConfig(), embedder)
    metrics = evaluate_labeller(star_labeller, split(star, "test"))
    print(
        f"\n| STAR ({len(train)} training dialogues, {len(star_labeller.labels)} actions) | test messages | accuracy "
        "| macro-F1 | ECE | seconds |"
    )
    print("|---|---|---|---|---|---|")
    print(row("wizard actions from message text and context", metrics, time.perf_counter() - start))
    summary["star"] = metrics.__dict__


def speed_section(
    annotated: list[Conversation],
    persuasion: list[Conversation],
    published: LabellerConfig,
    embedder: SentenceEmbedder,
    summary: dict[str, object],
) -> None:
    classifier, _ = train_labeller(split(annotated, "train"), split(annotated, "validation"), published, embedder)
    unlabelled = [c for c in persuasion if not c.meta.get("annotated")][:200]
    messages, labelling, encoding = throughput(classifier, unlabelled)
    print("\n| labelling 200 unannotated PersuasionForGood dialogues, cold cache | messages | seconds | messages/s |")
    print("|---|---|---|---|")
    print(
        f"| encoder forward alone (every text the labeller embeds) | {messages} | {encoding:.1f} | "
        f"{messages / encoding:.0f} |"
    )
    print(
        f"| convoplan label apply (encoder + context + head) | {messages} | {labelling:.1f} | "
        f"{messages / labelling:.0f} |"
    )
    print(f"\nlabelling runs at {encoding / labelling:.2f} of the encoder's limit")
    summary["throughput"] = {"messages": messages, "labelling_s": labelling, "encoder_s": encoding}


if __name__ == "__main__":
    main()

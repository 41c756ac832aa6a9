"""Sentence fusion on the animals world's hand-written pairs: copying the input, the rules, the tagger.

The tagger is trained on the train split (190 pairs) and every fuser is scored on the test split (50 pairs) and,
for reference, on the train split: exact match (whitespace-normalised) and SARI (in %, as LaserTagger reports it).
The rules were written from the train split, so their train figures are not held-out figures either.

    .venv/bin/python bench/fusion.py
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from convoplan.compose.fusion import (
    ConcatFusion,
    Fuser,
    RuleFusion,
    TaggerConfig,
    TaggerFusion,
    evaluate,
    load_fusion_pairs,
)
from convoplan.worlds.animals import animals_world, fusion_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--pairs", type=Path, default=None, help="a fusion pairs JSONL file (default: the packaged one)"
    )
    parser.add_argument("--max-phrases", type=int, default=TaggerConfig.max_phrases, help="phrase vocabulary bound")
    parser.add_argument("--c", type=float, default=TaggerConfig.c, help="inverse L2 strength of the tagger")
    parser.add_argument("--save", type=Path, default=None, help="also write the trained tagger to this file")
    args = parser.parse_args()

    pairs = fusion_pairs() if args.pairs is None else load_fusion_pairs(args.pairs, animals_world().entity)
    train = [p for p in pairs if p.split == "train"]
    test = [p for p in pairs if p.split == "test"]
    import sklearn.linear_model  # noqa: F401  (imported before the clock starts: the time is the training's)

    start = time.perf_counter()
    tagger = TaggerFusion.train(train, TaggerConfig(max_phrases=args.max_phrases, c=args.c))
    seconds = time.perf_counter() - start
    if args.save is not None:
        tagger.save(args.save)

    fusers: list[tuple[str, Fuser]] = [("copy input", ConcatFusion()), ("rules", RuleFusion()), ("tagger", tagger)]
    machine = platform.processor() or platform.machine()
    print(f"{len(train)} train / {len(test)} test pairs; {machine}, Python {platform.python_version()}")
    print()
    print("| fuser | test exact match (%) | test SARI | train exact match (%) | train SARI |")
    print("|---|---|---|---|---|")
    for name, fuser in fusers:
        on_test, on_train = evaluate(fuser, test), evaluate(fuser, train)
        print(
            f"| {name} | {100 * on_test.exact_match:.1f} | {100 * on_test.sari:.1f} "
            f"| {100 * on_train.exact_match:.1f} | {100 * on_train.sari:.1f} |"
        )
    print()
    print(
        f"phrase vocabulary: {len(tagger.phrases)} phrases (bound {args.max_phrases}); tag labels: {len(tagger.labels)}"
    )
    print(f"tagger features: {len(tagger.features)}; training time: {seconds:.2f} s")


if __name__ == "__main__":
    main()

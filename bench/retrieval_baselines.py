"""The retrieval baselines every LM evaluation prints, alone: what copying a past message scores (no LM).

On the messages `convoplan lm eval` writes again (`convoplan.lm.evaluate.targets`: the labelled agent messages of
the test split, human labels only, a seeded sample of `--max-messages`), told the true action:

- most frequent: the most frequent train message of the action;
- nearest exemplar (sentence embeddings): the train message of the action whose previous `context_turns` turns are
  nearest by cosine of their all-MiniLM-L6-v2 vectors (`convoplan.retrieval.exemplars`, what `lm eval` and the
  server use), for context_turns 1, 2 and 3;
- nearest exemplar (TF-IDF): the same with scikit-learn's TF-IDF vectors of the context instead (the variant the
  issue measured first), for comparison.

Corpus BLEU with sacrebleu (13a, one reference), overall. Index build and query times are wall seconds on this
machine (embeddings from the `--embedding-cache`, computed on the first run).

    .venv/bin/python bench/retrieval_baselines.py --data runs/data/star.jsonl --data runs/data/persuasion.jsonl
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import sacrebleu

from convoplan.embed import SentenceEmbedder, default_cache_dir
from convoplan.lm.evaluate import EvalConfig, targets
from convoplan.retrieval.exemplars import ExemplarConfig, ExemplarIndex, context_text
from convoplan.schema import Conversation, read_jsonl


def bleu(hypotheses: list[str], references: list[str]) -> float:
    return float(sacrebleu.corpus_bleu(hypotheses, [references], force=True).score)


def tfidf_nearest(index: ExemplarIndex, train_contexts: list[str], queries: list[str], actions: list[str]) -> list[str]:
    """The nearest train message of each query's action by TF-IDF cosine of the contexts."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(sublinear_tf=True)
    train = vectorizer.fit_transform(train_contexts)  # [N, V], rows L2-normalised
    asked = vectorizer.transform(queries)  # [Q, V]
    chosen = []
    for row, action in enumerate(actions):
        members = np.asarray([r for r, a in enumerate(index.actions) if a == action])
        if not len(members):
            chosen.append("")
            continue
        scores = (train[members] @ asked[row].T).toarray()[:, 0]
        chosen.append(index.texts[members[int(np.argmax(scores))]])
    return chosen


def train_contexts(conversations: list[Conversation], index: ExemplarIndex, context_turns: int) -> list[str]:
    """The contexts of the indexed messages, in the index's order, read back from each one's source
    (`conversation id#turn index`)."""
    by_id = {c.id: c for c in conversations}
    places = [source.rpartition("#") for source in index.sources]
    return [context_text(by_id[cid].turns[: int(turn)], context_turns) for cid, _, turn in places]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", required=True, help="a canonical corpus (repeatable)")
    parser.add_argument("--max-messages", type=int, default=300, help="the seeded sample of test messages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embedding-cache", type=Path, default=None)
    args = parser.parse_args()
    embedder = SentenceEmbedder(cache_dir=args.embedding_cache or default_cache_dir())
    config = EvalConfig(max_messages=args.max_messages, seed=args.seed)
    print("\n| corpus | messages | train messages | baseline | context turns | BLEU | build s | query ms/message |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for path in args.data:
        conversations = read_jsonl(path)
        found = targets(conversations, config)
        references = [t.reference for t in found]
        actions = [t.action for t in found]
        histories = [t.history.turns for t in found]
        rows = []
        for turns in (1, 2, 3):
            started = time.perf_counter()
            index = ExemplarIndex.build(conversations, embedder, ExemplarConfig(context_turns=turns))
            built = time.perf_counter() - started
            if turns == 1:
                frequent = [index.most_frequent(a) or "" for a in actions]
                rows.append(("most frequent", "-", bleu(frequent, references), built, 0.0))
            started = time.perf_counter()
            nearest = [hits[0].text if hits else "" for hits in index.nearest(histories, actions, embedder)]
            asked = (time.perf_counter() - started) / len(found) * 1000
            rows.append(("nearest exemplar (embeddings)", str(turns), bleu(nearest, references), built, asked))
            started = time.perf_counter()
            queries = [context_text(h, turns) for h in histories]
            tfidf = tfidf_nearest(index, train_contexts(conversations, index, turns), queries, actions)
            asked = (time.perf_counter() - started) / len(found) * 1000
            rows.append(("nearest exemplar (TF-IDF)", str(turns), bleu(tfidf, references), 0.0, asked))
        for name, turns_shown, score, built, asked in rows:
            print(
                f"| {path.name} | {len(found)} | {len(index)} | {name} | {turns_shown} | {score:.2f} | "
                f"{built:.1f} | {asked:.2f} |"
            )
    print(f"\n{shlex.join([sys.executable, *sys.argv])}")
    print(f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()

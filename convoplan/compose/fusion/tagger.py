"""The LaserTagger-style fuser (Malmi et al. 2019): KEEP/DELETE per source token plus an optional phrase from a
vocabulary derived from the training pairs; gold tags by alignment, a classifier per token, weights in safetensors."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from annotated_types import Ge, Gt

from convoplan.atomic import atomic_write_bytes
from convoplan.compose.fusion.text import (
    Entity,
    FusionContext,
    FusionPair,
    analyse,
    detokenize,
    tokenize,
)
from convoplan.configs import Config

# ---------------------------------------------------------------------------------------------------- tags


@dataclass(frozen=True)
class Tag:
    """What the tagger does with one source token: keep or delete it, after adding `phrase` (tokens joined by
    single spaces, "" for none) before it. The tag after the last token only adds its phrase at the end."""

    keep: bool
    phrase: str = ""

    def __str__(self) -> str:
        name = "KEEP" if self.keep else "DELETE"
        return f"{name}|{self.phrase}" if self.phrase else name

    @classmethod
    def parse(cls, label: str) -> Tag:
        name, _, phrase = label.partition("|")
        if name not in ("KEEP", "DELETE"):
            raise ValueError(f"not a tag: {label!r}")
        return cls(name == "KEEP", phrase)


def realize(source_tokens: Sequence[str], tags: Sequence[Tag]) -> list[str]:
    """The target tokens the tags describe: `tags` holds one tag per source token and one for the end."""
    if len(tags) != len(source_tokens) + 1:
        raise ValueError(f"{len(tags)} tags for {len(source_tokens)} tokens: expected one more tag than tokens")
    out: list[str] = []
    for token, tag in zip([*source_tokens, ""], tags, strict=True):
        out += tag.phrase.split() if tag.phrase else []
        if tag.keep and token:
            out.append(token)
    return out


_DELETION, _PHRASE, _UNREACHABLE = 1 << 20, 1, 1 << 62
"""Costs of an alignment: a deletion outweighs any number of phrases, so alignments keep as many tokens as they
can, then add as few phrases as they can."""


def _late_phrases(tags: list[Tag]) -> list[Tag]:
    """The same edit with each gap's phrase on the gap's last deleted token (the kept token if none is deleted).

    A gap is a run of deleted tokens and the kept token (or end slot) after it; where in the gap the phrase goes
    does not change the text. The last deleted token is usually the one the phrase replaces ("Lions" -> ", and
    they", "Which" -> "And which", "guide" of "The ... guide says" -> "It also"), so one token carries the whole
    decision and the tokens before it only have to follow (the tagger decodes right to left)."""
    out = list(tags)
    start = 0
    for end, tag in enumerate(out):
        if not tag.keep:
            continue
        carriers = [k for k in range(start, end + 1) if out[k].phrase]
        if len(carriers) == 1:
            phrase, carrier, home = out[carriers[0]].phrase, carriers[0], end - 1 if end > start else end
            out[carrier] = Tag(out[carrier].keep)
            out[home] = Tag(out[home].keep, phrase)
        start = end + 1
    return out


def _free_alignment(source: Sequence[str], target: Sequence[str]) -> list[Tag]:
    """The optimal tags when any phrase may be added: an edit alignment (keep, insert, delete) minimising
    (deletions, insertion runs); each run of inserted tokens becomes one phrase (placed by `_late_phrases`)."""
    n, m = len(source), len(target)
    # cost[state][i][j]: cheapest way to finish from source i, target j; state 0 after a keep (or at the start),
    # 1 inside an insertion run, 2 inside a deletion run (no insertion after a deletion in the same gap).
    cost = [[[_UNREACHABLE] * (m + 1) for _ in range(n + 1)] for _ in range(3)]
    move = [[[""] * (m + 1) for _ in range(n + 1)] for _ in range(3)]
    for i in range(n, -1, -1):
        for j in range(m, -1, -1):
            if i == n and j == m:
                for state in range(3):
                    cost[state][i][j] = 0
                continue
            keep = cost[0][i + 1][j + 1] if i < n and j < m and source[i] == target[j] else _UNREACHABLE
            insert = cost[1][i][j + 1] if j < m else _UNREACHABLE
            delete = cost[2][i + 1][j] + _DELETION if i < n else _UNREACHABLE
            for state, opening in ((0, _PHRASE), (1, 0)):  # ties: keep, then insert, then delete
                best, step = (keep, "keep") if keep <= insert + opening else (insert + opening, "insert")
                cost[state][i][j], move[state][i][j] = (delete, "delete") if delete < best else (best, step)
            cost[2][i][j], move[2][i][j] = (keep, "keep") if keep <= delete else (delete, "delete")
    tags: list[Tag] = []
    pending: list[str] = []
    i = j = state = 0
    while i < n or j < m:
        step = move[state][i][j]
        if step == "insert":
            pending.append(target[j])
            j, state = j + 1, 1
            continue
        tags.append(Tag(step == "keep", " ".join(pending)))
        pending = []
        i, j, state = (i + 1, j + 1, 0) if step == "keep" else (i + 1, j, 2)
    tags.append(Tag(True, " ".join(pending)))
    return _late_phrases(tags)


def derive_phrase_vocabulary(pairs: Iterable[FusionPair], max_size: int | None = None) -> list[str]:
    """The phrases the optimal alignments of the pairs add, most frequent first (ties alphabetically)."""
    counts: Counter[str] = Counter()
    for pair in pairs:
        tags = _free_alignment(tokenize(" ".join(pair.utterances)), tokenize(pair.fused))
        counts.update(tag.phrase for tag in tags if tag.phrase)
    ranked = sorted(counts, key=lambda phrase: (-counts[phrase], phrase))
    return ranked if max_size is None else ranked[:max_size]


def tags_for(source_tokens: Sequence[str], target_tokens: Sequence[str], vocabulary: Iterable[str]) -> list[Tag] | None:
    """Gold tags that turn the source into the target adding only phrases of the vocabulary, or None when none
    do. Among those, the fewest deletions, then the fewest phrases (the same preferences as the vocabulary's)."""
    source, target = list(source_tokens), list(target_tokens)
    by_first: dict[str, list[list[str]]] = {}
    for phrase in sorted(set(vocabulary), key=lambda p: (len(p.split()), p)):
        words = phrase.split()
        if words:
            by_first.setdefault(words[0], []).append(words)
    n, m = len(source), len(target)
    cost = [[_UNREACHABLE] * (m + 1) for _ in range(n + 1)]
    choice: list[list[tuple[bool, int]]] = [[(True, 0)] * (m + 1) for _ in range(n + 1)]
    known = {tuple(p.split()) for p in vocabulary}
    for j in range(m + 1):
        if j == m:
            cost[n][j] = 0
        elif tuple(target[j:]) in known:
            cost[n][j], choice[n][j] = _PHRASE, (True, m - j)
    for i in range(n - 1, -1, -1):
        for j in range(m, -1, -1):
            starting = by_first.get(target[j], []) if j < m else []
            lengths = [len(w) for w in starting if target[j : j + len(w)] == w]
            best, pick = _UNREACHABLE, (True, 0)
            candidates = [(True, 0)] + [(keep, k) for k in lengths for keep in (True, False)] + [(False, 0)]
            for keep, length in candidates:
                k = j + length
                if keep and not (k < m and source[i] == target[k]):
                    continue
                after = cost[i + 1][k + 1] if keep else cost[i + 1][k] + _DELETION
                option = after + (_PHRASE if length else 0)
                if option < best:
                    best, pick = option, (keep, length)
            cost[i][j], choice[i][j] = best, pick
    if cost[0][0] >= _UNREACHABLE:
        return None
    tags: list[Tag] = []
    j = 0
    for i in range(n + 1):
        keep, length = choice[i][j]
        tags.append(Tag(keep, " ".join(target[j : j + length])))
        j += length + (keep and i < n)
    return _late_phrases(tags)


# ---------------------------------------------------------------------------------------------------- tagger

_END = "<end>"
_FORMAT = "convoplan-fusion-tagger/1"


@dataclass(frozen=True)
class TaggerConfig(Config):
    """How the tagger is trained."""

    max_phrases: Annotated[int, Ge(1)] = 64
    """Size of the phrase vocabulary: the most frequent phrases the training alignments add."""
    c: Annotated[float, Gt(0)] = 4.0
    """Inverse L2 regularisation strength of the logistic regression (chosen by 5-fold CV on the train split)."""
    max_iter: Annotated[int, Ge(1)] = 1000
    """Most iterations of the solver (lbfgs); it converges in far fewer on the packaged pairs."""
    min_count: Annotated[int, Ge(1)] = 2
    """Features seen in fewer training tokens are dropped: a smaller model that generalises no worse."""


def _features(ctx: FusionContext) -> tuple[list[list[str]], list[str]]:
    """Binary features of every source token and of the end slot (the token and its neighbours, where it sits,
    what its utterance does, how it relates to the focus), and each one's anchor: the short description that
    `_tag_features` joins with the tags already chosen to its right. Conjunctions give the linear model the
    decisions the rules take: e.g. the subject of a statement that repeats the previous statement's subject is
    where ", and they" goes."""
    flat = [(u, p) for u, utterance in enumerate(ctx.utterances) for p in range(len(utterance.tokens))]
    tokens = [ctx.utterances[u].tokens[p] for u, p in flat]
    kinds = [u.kind for u in ctx.utterances]
    superlative = [any(len(t) > 5 and t.endswith("est") for t in u.tokens) for u in ctx.utterances]
    rows: list[list[str]] = []
    anchors: list[str] = []
    for index, (u, p) in enumerate(flat):
        utterance, token = ctx.utterances[u], tokens[index]
        word = token.lower()
        previous_kind = kinds[u - 1] if u else "<start>"
        next_kind = kinds[u + 1] if u + 1 < len(kinds) else "<end>"
        in_subject = utterance.body <= p < utterance.body + len(utterance.subject)
        if p < utterance.body:
            role = "source"
        elif in_subject:
            role = "head" if p == utterance.body + len(utterance.subject) - 1 else "subject"
        elif p == utterance.body:
            role = "first"
        else:
            role = "last" if p == len(utterance.tokens) - 1 else "inside"
        after_subject = utterance.body + len(utterance.subject)
        verb = (
            utterance.tokens[after_subject].lower()
            if utterance.subject and after_subject < len(utterance.tokens)
            else ""
        )
        near = {k: tokens[index + k].lower() if 0 <= index + k < len(tokens) else "<none>" for k in (-2, -1, 1, 2)}
        situation = f"{previous_kind}>{utterance.kind}|rep={ctx.repeats[u]}|chain={min(ctx.chain[u], 2)}"
        ahead = f"{utterance.kind}>{next_kind}"
        focus = f"focus={word in ctx.words}|subj={in_subject}|sing={utterance.singular}"
        user = f"asks={ctx.user_asks}|named={ctx.named_before[u]}|content={ctx.content_before[u]}"
        evidence = f"sup={u > 0 and superlative[u - 1]}|verb={verb}"
        rows.append(
            [
                "bias",
                f"w={token}",
                f"lw={word}",
                f"w-1={near[-1]}",
                f"w+1={near[1]}",
                f"w-2={near[-2]}",
                f"w+2={near[2]}",
                f"pos={min(p - utterance.body, 6)}",
                f"left={min(len(utterance.tokens) - 1 - p, 3)}",
                f"utt={min(u, 3)}",
                f"kind={utterance.kind}",
                f"role={role}",
                f"quoted={utterance.kind == 'quote' and utterance.body <= p < utterance.quote_end}",
                focus,
                user,
                f"mentions={ctx.user_mentions}",
                f"{role}|{situation}",
                f"{role}|{situation}|{focus}",
                f"{role}|{situation}|{user}",
                f"{role}|{situation}|w={word}",
                f"{role}|{situation}|{evidence}",
                f"{role}|{ahead}",
                f"{role}|{ahead}|w={word}",
                f"{role}|{ahead}|{user}",
                f"{role}|{focus}|{user}|kind={utterance.kind}",
                f"{role}|w={word}|w+1={near[1]}|kind={utterance.kind}",
            ]
        )
        anchors.append(f"{role}|kind={utterance.kind}|w={word}")
    rows.append(["bias", f"w={_END}", f"{_END}|kind={kinds[-1] if kinds else '<start>'}"])
    anchors.append(_END)
    return rows, anchors


def _tag_features(anchor: str, right: Sequence[Tag]) -> list[str]:
    """Features of the tags already chosen for the next two tokens (decoding runs right to left): a token before
    one that took ", and they" in place of "Lions" is the "." that has to go."""
    first = str(right[0]) if right else "<none>"
    second = str(right[1]) if len(right) > 1 else "<none>"
    return [f"t+1={first}", f"t+1={first}|t+2={second}", f"t+1={first}|{anchor}"]


class TaggerFusion:
    """LaserTagger-style fusion: per-token KEEP/DELETE plus a phrase, predicted by a logistic regression over the
    features of `_features`, realised back to text. Stored as safetensors (weights) with the phrase vocabulary,
    the labels and the feature names in its metadata; no pickle, so loading a file runs no code."""

    def __init__(
        self,
        phrases: Sequence[str],
        labels: Sequence[str],
        features: Sequence[str],
        coef: npt.NDArray[np.float32],
        intercept: npt.NDArray[np.float32],
        config: TaggerConfig,
    ) -> None:
        if coef.shape != (len(labels), len(features)) or intercept.shape != (len(labels),):
            raise ValueError(
                f"weights of shape {coef.shape} do not fit {len(labels)} labels x {len(features)} features"
            )
        self.phrases = list(phrases)
        self.labels = list(labels)
        self.tags = [Tag.parse(label) for label in labels]
        self.features = list(features)
        self.index = {name: column for column, name in enumerate(features)}
        self.coef = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept = np.ascontiguousarray(intercept, dtype=np.float32)
        self.config = config

    @classmethod
    def train(cls, pairs: Sequence[FusionPair], config: TaggerConfig | None = None) -> TaggerFusion:
        """Fit on the pairs whose targets the vocabulary reaches (the others are skipped)."""
        from sklearn.feature_extraction import DictVectorizer
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        config = config or TaggerConfig()
        phrases = derive_phrase_vocabulary(pairs, config.max_phrases)
        rows: list[list[str]] = []
        labels: list[str] = []
        for pair in pairs:
            tags = tags_for(tokenize(" ".join(pair.utterances)), tokenize(pair.fused), phrases)
            if tags is not None:
                base, anchors = _features(analyse(pair.utterances, pair.entity, pair.user))
                rows += [
                    row + _tag_features(a, tags[i + 1 :]) for i, (row, a) in enumerate(zip(base, anchors, strict=True))
                ]
                labels += [str(tag) for tag in tags]
        if len(set(labels)) < 2:
            raise ValueError("too few reachable training pairs: the tags take fewer than two values")
        counts = Counter(name for row in rows for name in row)
        vectorizer = DictVectorizer()
        matrix = vectorizer.fit_transform([{n: 1 for n in row if counts[n] >= config.min_count} for row in rows])
        model = LogisticRegression(C=config.c, max_iter=config.max_iter)
        with threadpool_limits(limits=1):  # a small problem: BLAS threads only fight (10x slower on a busy machine)
            model.fit(matrix, labels)
        coef, intercept = np.asarray(model.coef_), np.asarray(model.intercept_)
        if coef.shape[0] == 1:  # binary problems come back as one row: score the first class with its negation
            coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
        classes = [str(label) for label in model.classes_]
        names = [str(name) for name in vectorizer.get_feature_names_out()]
        return cls(phrases, classes, names, coef.astype(np.float32), intercept.astype(np.float32), config)

    def predict_tags(self, utterances: Sequence[str], focus: Entity | None, user: str = "") -> list[Tag]:
        """The tag of every source token and of the end slot, chosen greedily from right to left: each token's
        most likely tag given its features and the tags chosen after it (as in training, where they are gold)."""
        rows, anchors = _features(analyse(utterances, focus, user))
        tags: list[Tag] = []
        for row, anchor in zip(reversed(rows), reversed(anchors), strict=True):
            names = row + _tag_features(anchor, tags[::-1][:2])
            columns = [self.index[name] for name in names if name in self.index]
            scores = self.coef[:, columns].sum(axis=1) + self.intercept
            tags.append(self.tags[int(np.argmax(scores))])
        return tags[::-1]

    def fuse(self, utterances: Sequence[str], focus: Entity | None, user: str = "") -> str:
        source = tokenize(" ".join(utterances))
        return detokenize(realize(source, self.predict_tags(utterances, focus, user)))

    def save(self, path: str | Path) -> None:
        """Write the model atomically: a reader never sees half a file."""
        from safetensors.numpy import save

        metadata = {
            "format": _FORMAT,
            "config": json.dumps(asdict(self.config)),
            "phrases": json.dumps(self.phrases),
            "labels": json.dumps(self.labels),
            "features": json.dumps(self.features),
        }
        atomic_write_bytes(path, save({"coef": self.coef, "intercept": self.intercept}, metadata=metadata))

    @classmethod
    def load(cls, path: str | Path) -> TaggerFusion:
        """Read a model written by `save`; a missing, unreadable or corrupt file raises a one-line ValueError."""
        from safetensors import SafetensorError
        from safetensors.numpy import load

        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise ValueError(f"{path}: cannot read fusion tagger model: {error.strerror or error}") from None
        try:
            tensors = load(data)
            header_size = int.from_bytes(data[:8], "little")
            metadata: dict[str, Any] = json.loads(data[8 : 8 + header_size])["__metadata__"]
            if metadata.get("format") != _FORMAT:
                raise ValueError(f"format is {metadata.get('format')!r}, expected {_FORMAT!r}")
            config = TaggerConfig(**json.loads(metadata["config"]))
            return cls(
                json.loads(metadata["phrases"]),
                json.loads(metadata["labels"]),
                json.loads(metadata["features"]),
                tensors["coef"].astype(np.float32),
                tensors["intercept"].astype(np.float32),
                config,
            )
        except (SafetensorError, ValueError, KeyError, TypeError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise ValueError(f"{path}: not a valid fusion tagger model: {reason}") from None

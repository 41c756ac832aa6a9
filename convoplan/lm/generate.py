"""Writing agent messages with a loaded model: one batched, KV-cached decoding loop that stops each message at
`<|end|>` (or EOS) and drops it from the batch.

Every caller (suggestions, evaluation, the composition loop's LM provider) goes through `generate_messages`: the
prompts (token ids from `Codec.prompt`) are left-padded into one batch with an attention mask; the model reads what
is not cached yet, then writes one token per sequence per step (sampled with transformers' temperature and top-p
warpers, or greedily) until every sequence has written the end-of-message token or `max_new_tokens` tokens. Each
message comes back with its text and its mean token log-probability under the model (before temperature and top-p,
so scores are comparable across sampling settings).

Nothing is read twice (`_prefill`). Prompts for k actions after one history differ only in their last tag, so the
history is read once, its KV cache branched to the k x n sequences, and only the tags are read per sequence. A
`PrefixCache` keeps the last prefix read, so the next call whose prompts extend it (the next composition step of a
bot turn, the next suggest request of a conversation) reads only what is new. Prompts that share nothing (padded
ones, in evaluation) are each read once and copied to their n sequences.

Nothing is written in vain (`_decode`): a sequence that has ended leaves the batch and its rows leave the cache.
transformers' `generate` keeps finished sequences in the batch, padding them until the last one ends; with
SmolLM2 on this CPU a decoding step of 9 sequences costs 2.6 times one of 1 (`bench/suggest_latency.py`), and one
long suggestion would keep all 9 rows busy.

Left padding is what batched generation of a decoder-only model needs: every prompt then ends at the same
position, where the first new token goes; the position ids come from the attention mask (the count of real tokens
before each), so a padded prompt generates what it would alone (tested).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, cast

import torch
from annotated_types import Ge, Gt, Interval
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from convoplan.configs import Config
from convoplan.lm import ct2
from convoplan.lm.model import LanguageModel

__all__ = ["Cancelled", "OnText", "PrefixCache", "SamplingConfig", "generate_messages"]

OnText = Callable[[int, str], None]
"""Called as a message grows: (row, new text), row b*n + k for prompt b's k-th message. Raising stops generation."""


class Cancelled(Exception):
    """Raised by `generate_messages` when its `cancel` event was set: the reader has gone (a streaming client that
    closed the connection), and no further forward pass is run for it."""


@dataclass
class SamplingConfig(Config):
    """How messages are decoded."""

    do_sample: bool = True
    """Sample (with temperature and top-p); false = greedy decoding, deterministic and one message per prompt."""
    temperature: Annotated[float, Gt(0)] = 0.8
    """Softmax temperature when sampling: under 1 sharpens the distribution towards likely tokens."""
    top_p: Annotated[float, Interval(gt=0, le=1)] = 0.95
    """Nucleus sampling: draw from the smallest set of tokens whose probability adds up to this."""
    max_new_tokens: Annotated[int, Ge(1)] = 40
    """Most tokens of one message, its end token included; a message cut there is returned unfinished."""
    seed: Annotated[int, Ge(0)] | None = None
    """Seed torch's global generator before sampling (reproducible suggestions); None leaves it alone. CTranslate2
    seeds its generator once per thread, at its first sample: there only the first seed given takes effect."""


@dataclass(frozen=True)
class Generated:
    """One generated message."""

    text: str
    tokens: tuple[int, ...]
    """The generated ids, up to and including `<|end|>` (or EOS) where it was written (nothing after it)."""
    score: float
    """Mean log-probability of those tokens under the model (untempered); NaN for no tokens."""
    finished: bool
    """Whether the message ended with `<|end|>` (or EOS) within `max_new_tokens`."""


def prompt_budget(lm: LanguageModel, config: SamplingConfig) -> int:
    """Tokens a prompt may hold so that the prompt plus `max_new_tokens` fit in the model's context."""
    budget = lm.context - config.max_new_tokens
    if budget < 2:  # room for at least the speaker tag and one history token
        raise ValueError(f"max_new_tokens {config.max_new_tokens} leaves no room for a prompt in {lm.context} tokens")
    return budget


def generate_messages(
    lm: LanguageModel,
    prompts: Sequence[Sequence[int]],
    config: SamplingConfig,
    n: int = 1,
    *,
    prefix: PrefixCache | None = None,
    on_text: OnText | None = None,
    share_prefix: bool = True,
    cancel: threading.Event | None = None,
) -> list[list[Generated]]:
    """`n` messages for every prompt (a list per prompt, in order), all decoded in one batch.

    What the prompts share is read once (`_prefill`; through `prefix`, which also remembers it for the next call),
    then all n messages of every prompt decode together, one forward pass per step, each leaving the batch when it
    ends (`_decode`). `on_text` hears each message's
    text as it grows (streaming). `share_prefix=False` reads every prompt in full, as before issue 16 (kept to
    measure the difference). Greedy decoding needs `n == 1`. Setting `cancel` (from another thread) stops the work
    before its next forward pass with `Cancelled`: a streaming client that leaves costs at most one more step.
    A model exported for CTranslate2 (`lm.generator`) decodes there, with the same semantics
    (`_generate_on_engine`: what the prompts share is its static prompt; `prefix` is not used).
    """
    if not prompts:
        return []
    if not all(prompts):
        raise ValueError("empty prompt: a prompt holds at least the agent's speaker tag (Codec.prompt)")
    if n < 1 or (n > 1 and not config.do_sample):
        raise ValueError(f"n = {n}: greedy decoding gives one message per prompt; sample for more")
    width = max(len(prompt) for prompt in prompts)
    if width + config.max_new_tokens > lm.context:
        raise ValueError(f"a prompt of {width} tokens plus {config.max_new_tokens} new ones exceeds the context")
    if lm.generator is not None:  # an exported folder: the same messages, decoded by CTranslate2
        return _generate_on_engine(lm, prompts, config, n, on_text, cancel)
    codec = lm.codec
    # [B, W]: prompts right-aligned (left padding), the mask 0 on the padding.
    inputs = torch.full((len(prompts), width), codec.eos, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        inputs[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    device = lm.model.device
    inputs, mask = inputs.to(device), mask.to(device)
    if config.do_sample and config.seed is not None:
        torch.manual_seed(config.seed)
    _check(cancel)
    cache = _prefill(lm, inputs, mask, n, prefix if share_prefix else None, share_prefix)
    if n > 1:  # n sequences per prompt: rows b*n .. b*n + n-1 are prompt b's
        inputs, mask = inputs.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)  # [B*n, W]
    texts = _Texts(lm, len(prompts) * n, on_text) if on_text is not None else None
    tokens, logprobs = _decode(lm, inputs, mask, cache, config, texts, cancel)
    messages = [
        _message(lm, row_tokens, row_logprobs) for row_tokens, row_logprobs in zip(tokens, logprobs, strict=True)
    ]
    return [messages[i * n : (i + 1) * n] for i in range(len(prompts))]


def _decode(
    lm: LanguageModel,
    inputs: torch.Tensor,
    mask: torch.Tensor,
    cache: Any,
    config: SamplingConfig,
    texts: _Texts | None,
    cancel: threading.Event | None = None,
) -> tuple[list[list[int]], list[list[float]]]:
    """Each row's new tokens (up to and including its end) and their log-probabilities, for the prompts [R, W]
    whose first `cache` positions are read already.

    Each step feeds every live row its last token (the first step: what the cache lacks of the prompt), takes the
    log-softmax of the raw logits at the last position [A, V] for the score, and picks a token: greedy, or sampled
    after temperature and top-p (transformers' warpers; no top-k cut). A row that wrote `<|end|>` or EOS leaves the
    batch: its cache rows go (`batch_select_indices`), and `alive` maps the remaining batch rows to the prompts'.
    """
    codec = lm.codec
    device = inputs.device
    stops = torch.tensor([codec.end, codec.eos], device=device)
    warpers = LogitsProcessorList()
    if config.do_sample:
        warpers.extend([TemperatureLogitsWarper(config.temperature), TopPLogitsWarper(config.top_p)])
    rows = inputs.shape[0]
    tokens: list[list[int]] = [[] for _ in range(rows)]
    logprobs: list[list[float]] = [[] for _ in range(rows)]
    alive = torch.arange(rows)  # batch row -> prompt row
    cached = cache.get_seq_length() if cache is not None else 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [R, W]: each token's count of real tokens before it
    step_ids, step_positions, attention = inputs[:, cached:], positions[:, cached:], mask
    for step in range(config.max_new_tokens):
        _check(cancel)
        with torch.no_grad():
            out = lm.model(
                input_ids=step_ids,
                attention_mask=attention,
                position_ids=step_positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,  # only the last position's logits are needed: skip the head elsewhere
            )
        cache = out.cache
        logits = out.logits[:, -1].float()  # [A, V]
        scores = logits.log_softmax(-1)  # the score: raw logits, before temperature and top-p
        if step == 0:  # a message has text: its first token is neither the end nor EOS
            logits[:, stops] = float("-inf")
        if config.do_sample:
            warped = warpers(cast(torch.LongTensor, step_ids), logits)  # (the ids: unused by these warpers)
            token = torch.multinomial(warped.softmax(-1), 1)[:, 0]  # [A]
        else:
            token = logits.argmax(-1)
        chosen = scores.gather(-1, token[:, None])[:, 0]
        for row, written, logprob in zip(alive.tolist(), token.tolist(), chosen.tolist(), strict=True):
            tokens[row].append(written)
            logprobs[row].append(logprob)
            if texts is not None:
                texts.add(row, written)
        going = (~torch.isin(token, stops)).nonzero()[:, 0]  # batch rows that continue
        if len(going) == 0:
            break
        if len(going) < len(alive):  # drop the finished rows from the batch and the cache
            cache.batch_select_indices(going)
            alive, token, attention = alive[going.cpu()], token[going], attention[going]
        attention = torch.cat([attention, attention.new_ones((len(alive), 1))], dim=-1)  # [A, W + step + 1]
        step_ids, step_positions = token[:, None], attention.sum(-1, keepdim=True) - 1
    return tokens, logprobs


def _generate_on_engine(
    lm: LanguageModel,
    prompts: Sequence[Sequence[int]],
    config: SamplingConfig,
    n: int,
    on_text: OnText | None,
    cancel: threading.Event | None,
) -> list[list[Generated]]:
    """`generate_messages` on CTranslate2 (`convoplan.lm.ct2.decode`): what all prompts share (leaving each at least
    one token of its own) is read once as the engine's static prompt; rows b*n .. b*n + n-1 are prompt b's."""
    shortest = min(len(prompt) for prompt in prompts)
    shared = min(min(_common_length(prompts[0], prompt) for prompt in prompts), shortest - 1)
    tokens = lm.tokenizer.convert_ids_to_tokens
    starts = [tokens(list(prompt[shared:])) for prompt in prompts for _ in range(n)]  # [B*n] rows of tokens
    ids: list[list[int]] = [[] for _ in starts]
    logprobs: list[list[float]] = [[] for _ in starts]
    texts = _Texts(lm, len(starts), on_text) if on_text is not None else None

    def heard(row: int, token: int, logprob: float) -> None:
        ids[row].append(token)
        logprobs[row].append(logprob)
        if texts is not None:
            texts.add(row, token)

    _check(cancel)
    finished = ct2.decode(
        lm.generator,
        tokens(list(prompts[0][:shared])) if shared else [],
        starts,
        max_new_tokens=config.max_new_tokens,
        sample=config.do_sample,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed,
        end=[lm.codec.end, lm.codec.eos],
        on_token=heard,
        cancel=cancel,
    )
    if not finished:
        _check(cancel)
    messages = [_message(lm, row_ids, row_logprobs) for row_ids, row_logprobs in zip(ids, logprobs, strict=True)]
    return [messages[i * n : (i + 1) * n] for i in range(len(prompts))]


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids `a` and `b` share."""
    for count, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return count
    return min(len(a), len(b))


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("generation cancelled: its reader has gone")


class PrefixCache:
    """The KV caches of the last `entries` prefixes read, so that a later prompt extending one reads only its new
    tokens.

    Safe to share between threads: `read` never hands out a stored cache, only a copy (`generate` extends the cache
    it is given). A caller whose prompts grow by whole messages (a bot turn's composition steps, a conversation's
    suggest requests) then reads each message once. With several entries, conversations served side by side each
    keep theirs: a prompt continues from the entry it shares the most tokens with, and replaces it when it extends
    it whole; otherwise it takes the place of the least recently used entry. Memory is bounded by `entries` caches (a
    cache holds layers x 2 x the key-value width x its tokens: SmolLM2-135M, 46 KB a token). Once a history
    outgrows the prompt budget it is cut at the front, every position shifts and the prefix is read afresh.
    """

    def __init__(self, entries: int = 1) -> None:
        if entries < 1:
            raise ValueError(f"a prefix cache holds at least one entry, got {entries}")
        self._lock = threading.Lock()
        self._entries: list[tuple[tuple[int, ...], Any]] = []  # least recently used first
        self.size = entries
        self.reused = 0
        """Tokens whose reading the cache saved, in all (a measure; tests read it)."""

    def read(self, lm: LanguageModel, ids: Sequence[int]) -> Any:
        """A KV cache of `ids` (positions 0..len-1) of one sequence, batch 1, the caller's own to extend."""
        with self._lock:
            entries = list(self._entries)
        best, same = None, 0
        for index, (kept_ids, _) in enumerate(entries):
            common = _common_length(kept_ids, ids)
            if common > same:
                best, same = index, common
        cache = None
        if best is not None:
            kept_ids, kept = entries[best]
            cache = copy.deepcopy(kept)
            if same < len(kept_ids):
                cache.crop(same - len(kept_ids))  # drop what no longer matches (a negative count: from the end)
            self.reused += same
        cache = _extend(lm, cache, ids, same)
        stored = (tuple(ids), copy.deepcopy(cache))
        with self._lock:
            if best is not None and same == len(entries[best][0]) and entries[best] in self._entries:
                self._entries.remove(entries[best])  # extended whole: the longer prefix takes its place
            self._entries.append(stored)
            del self._entries[: max(0, len(self._entries) - self.size)]
        return cache


def _prefill(
    lm: LanguageModel, inputs: torch.Tensor, mask: torch.Tensor, n: int, prefix: PrefixCache | None, share: bool
) -> Any:
    """The KV cache `generate` continues from, for the B*n sequences of the prompts [B, W] (None: none needed).

    Unpadded prompts that begin alike (one history, k action tags) have their common beginning read once, as one
    sequence, and its cache copied to all B*n rows; `generate` then reads the rest (the tags) per row. Otherwise,
    given n > 1, each prompt but its last token is read once and copied to its n rows: transformers'
    `num_return_sequences` would read every prompt n times, where the n new messages have tens of tokens and the
    prompt hundreds. The positions are those `generate` derives from the mask (left padding), so the messages are
    the ones a plain `generate` call would write (tested).
    """
    rows, width = inputs.shape
    if share and bool(mask.all()) and width > 1:
        differs = (inputs != inputs[:1]).any(dim=0).nonzero()  # columns where some prompt differs from the first
        shared = min(int(differs[0, 0]) if len(differs) else width, width - 1)  # generate reads at least one token
        if shared:
            ids = inputs[0, :shared].tolist()
            cache = prefix.read(lm, ids) if prefix is not None else _extend(lm, None, ids, 0)
            cache.batch_repeat_interleave(rows * n)
            return cache
    if n == 1 or width == 1:
        return None
    positions = mask.cumsum(-1) - 1
    positions.masked_fill_(mask == 0, 1)  # padding: any position, it is masked out
    with torch.no_grad():
        cache = lm.model(  # [B, W-1]: a cache of W-1 positions per layer
            input_ids=inputs[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=positions[:, :-1],
            use_cache=True,
            logits_to_keep=1,  # the cache is what counts: skip the vocabulary projection of W-2 positions
        ).cache
    cache.batch_repeat_interleave(n)  # the same copy, each prompt's n rows together
    return cache


def _extend(lm: LanguageModel, cache: Any, ids: Sequence[int], start: int) -> Any:
    """`cache` (of `ids[:start]`; None when start is 0) extended by reading `ids[start:]` at their positions."""
    if start == len(ids):
        return cache
    new = torch.tensor([list(ids[start:])], dtype=torch.long, device=lm.model.device)  # [1, P - start]
    positions = torch.arange(start, len(ids), device=new.device).unsqueeze(0)
    with torch.no_grad():
        return lm.model(input_ids=new, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1).cache


class _Texts:
    """Hands `on_text` each message's new text as tokens are written. Text is sent when it has grown past what was
    sent, without the surrounding whitespace and not while it ends inside a character, so the pieces add up to the
    final message."""

    def __init__(self, lm: LanguageModel, rows: int, on_text: OnText) -> None:
        self.codec = lm.codec
        self.on_text = on_text
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.sent = [""] * rows

    def add(self, row: int, token: int) -> None:
        if token in (self.codec.end, self.codec.eos):
            return
        self.ids[row].append(token)
        text = self.codec.decode_text(self.ids[row]).strip()
        if len(text) > len(self.sent[row]) and text.startswith(self.sent[row]) and not text.endswith("\ufffd"):
            self.on_text(row, text[len(self.sent[row]) :])
            self.sent[row] = text


def _message(lm: LanguageModel, ids: list[int], logprobs: list[float]) -> Generated:
    """The message of one row's new tokens, which end at its `<|end|>` or EOS where it wrote one. EOS ends a message
    too: it closes the conversation, and an untuned pretrained base ends its turn with its own EOS (`<|im_end|>`),
    which `<|end|>` starts out equal to (`convoplan.lm.model.init_tags`)."""
    finished = bool(ids) and ids[-1] in (lm.codec.end, lm.codec.eos)
    score = sum(logprobs) / len(logprobs) if logprobs else float("nan")
    # surrounding whitespace dropped: a pretrained chat model may open its turn with a newline, as its template does
    text = lm.codec.decode_text(ids).strip()
    return Generated(text=text, tokens=tuple(ids), score=score, finished=finished)

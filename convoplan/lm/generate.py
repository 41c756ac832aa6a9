"""Writing agent messages with a loaded model: one batched, KV-cached `generate` call that stops at `<|end|>` (or EOS).

Every caller (suggestions, evaluation, the composition loop's LM provider) goes through `generate_messages`: the
prompts (token ids from `Codec.prompt`) are left-padded into one batch with an attention mask, transformers'
`generate` samples (or decodes greedily) with its KV cache until every sequence has written the end-of-message
token or `max_new_tokens` tokens, and each message comes back with its text and its mean token log-probability
under the model (before temperature and top-p, so scores are comparable across sampling settings). For n > 1
messages per prompt (suggestions), each prompt is read once and its KV cache copied to its n sequences, which
then decode together.

Left padding is what batched generation of a decoder-only model needs: every prompt then ends at the same
position, where the first new token goes; transformers derives GPT-2's position ids from the attention mask, so a
padded prompt generates what it would alone (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from convoplan.lm.model import LanguageModel

__all__ = ["SamplingConfig", "generate_messages"]


@dataclass
class SamplingConfig:
    """How messages are decoded."""

    do_sample: bool = True
    """Sample (with temperature and top-p); false = greedy decoding, deterministic and one message per prompt."""
    temperature: float = 0.8
    """Softmax temperature when sampling: under 1 sharpens the distribution towards likely tokens."""
    top_p: float = 0.95
    """Nucleus sampling: draw from the smallest set of tokens whose probability adds up to this."""
    max_new_tokens: int = 40
    """Most tokens of one message, its end token included; a message cut there is returned unfinished."""
    seed: int | None = None
    """Seed torch's global generator before sampling (reproducible suggestions); None leaves it alone."""


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
    lm: LanguageModel, prompts: Sequence[Sequence[int]], config: SamplingConfig, n: int = 1
) -> list[list[Generated]]:
    """`n` messages for every prompt (a list per prompt, in order) from one `generate` call over all of them.

    With `n > 1` each prompt is read once and its KV cache copied to its n sequences (`_read_prompts`), which then
    decode together, one forward pass per step for the whole batch. Greedy decoding needs `n == 1`.
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
    codec = lm.codec
    # [B, W]: prompts right-aligned (left padding), the mask 0 on the padding.
    inputs = torch.full((len(prompts), width), codec.eos, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        inputs[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    device = lm.model.device
    inputs, mask = inputs.to(device), mask.to(device)
    decoding: dict[str, object] = {"do_sample": config.do_sample}
    if config.do_sample:
        decoding.update(temperature=config.temperature, top_p=config.top_p, top_k=0)  # top-p alone, no top-k cut
        if config.seed is not None:
            torch.manual_seed(config.seed)
    if n > 1:  # n sequences per prompt: rows b*n .. b*n + n-1 are prompt b's
        cache = _read_prompts(lm, inputs, mask) if width > 1 else None
        inputs, mask = inputs.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)  # [B*n, W]
        if cache is not None:
            cache.batch_repeat_interleave(n)  # the same copy, each prompt's n rows together
            decoding["past_key_values"] = cache
    output = lm.model.generate(  # type: ignore[operator]
        input_ids=inputs,
        attention_mask=mask,
        max_new_tokens=config.max_new_tokens,
        min_new_tokens=1,  # a message has text: its first token is neither the end nor EOS
        eos_token_id=[codec.end, codec.eos],  # a sequence is done at the end of its message (or conversation) ...
        pad_token_id=codec.eos,  # ... and filled with EOS while the others finish
        use_cache=True,
        return_dict_in_generate=True,
        output_logits=True,
        **decoding,
    )
    new = output.sequences[:, width:].cpu()  # [B*n, S], S <= max_new_tokens; row b*n + k is prompt b's k-th
    # Log-probabilities of the chosen tokens under the raw logits (normalised: log-softmax), [B*n, S].
    logprobs = lm.model.compute_transition_scores(output.sequences, output.logits, normalize_logits=True).cpu()  # type: ignore[operator]
    messages = [_message(lm, new[row], logprobs[row]) for row in range(new.shape[0])]
    return [messages[i * n : (i + 1) * n] for i in range(len(prompts))]


def _read_prompts(lm: LanguageModel, inputs: torch.Tensor, mask: torch.Tensor) -> Any:
    """The KV cache of the prompts [B, W] but their last token, read in one forward pass.

    Given n > 1, transformers' `num_return_sequences` would repeat every prompt n times before the first forward
    pass, so the prompt (hundreds of tokens, where the n new messages have tens) would be read n times. Instead it
    is read once, the cache is copied to the n sequences, and `generate` continues from it with the last prompt
    token, as it does with any cache it is given. The position ids are those `generate` derives from the mask (left
    padding), so the messages are the ones repeating the prompts would give (tested).
    """
    positions = mask.cumsum(-1) - 1
    positions.masked_fill_(mask == 0, 1)  # padding: any position, it is masked out
    with torch.no_grad():
        prefix = lm.model(  # [B, W-1]: a cache of W-1 positions per layer
            input_ids=inputs[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=positions[:, :-1],
            use_cache=True,
            logits_to_keep=1,  # the cache is what counts: skip the vocabulary projection of W-2 positions
        )
    return prefix.past_key_values


def _message(lm: LanguageModel, ids: torch.Tensor, logprobs: torch.Tensor) -> Generated:
    """The message in one row of generated ids [S]: everything up to the first `<|end|>` or EOS (padding follows).
    EOS ends a message too: it closes the conversation, and an untuned pretrained base ends its turn with its own
    EOS (`<|im_end|>`), which `<|end|>` starts out equal to (`convoplan.lm.model.init_tags`)."""
    ends = ((ids == lm.codec.end) | (ids == lm.codec.eos)).nonzero()
    length = int(ends[0, 0]) + 1 if len(ends) else len(ids)
    tokens = tuple(int(i) for i in ids[:length])
    score = float(logprobs[:length].mean()) if length else float("nan")
    # surrounding whitespace dropped: a pretrained chat model may open its turn with a newline, as its template does
    text = lm.codec.decode_text(tokens).strip()
    return Generated(text=text, tokens=tokens, score=score, finished=bool(len(ends)))

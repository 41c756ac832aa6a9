"""Suggestion latency (issue 6): 3 suggestions of up to 40 tokens after a 256-token history, written by one batched
`generate` call (3 sequences sharing each forward pass, KV cache) against 3 sequential calls of one sequence each.

Both go through the production path, `convoplan.lm.generate.generate_messages` (sampling: temperature 0.8,
top-p 0.95, stop at `<|end|>`, at most 40 new tokens), with the same prompt: the last 254 tokens of a
PersuasionForGood conversation, then `<|agent|>` and an action tag, 256 tokens in all. The model is a freshly
initialised GPT-2 of the given size with a byte-level BPE trained on the corpus (or `--model DIR`, a trained model
folder): an untrained model almost never samples `<|end|>`, so every suggestion runs the full 40 tokens, the worst
case; the mean new tokens per suggestion of each variant is printed to show the work is the same. Rounds alternate
which variant goes first (load on a shared machine hits both alike), after warm-up calls; p50 and p95 are over all
timed calls of each variant.

    .venv/bin/python bench/lm_latency.py --data runs/data/persuasion.jsonl
    .venv/bin/python bench/lm_latency.py --model runs/lm/persuasion --context 256   # a trained model
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import transformers

from convoplan.lm.data import split
from convoplan.lm.generate import SamplingConfig, generate_messages
from convoplan.lm.model import LanguageModel, ModelConfig, load_model, new_model
from convoplan.lm.tokenizer import Codec, train_tokenizer
from convoplan.schema import read_jsonl


def build(args: argparse.Namespace) -> tuple[LanguageModel, list[int]]:
    """The model and a prompt of exactly `args.history` tokens ending in <|agent|><|action:...|>."""
    conversations = read_jsonl(args.data)
    train_set, _ = split(conversations, 0.1, 0)
    if args.model:
        lm = load_model(args.model)
    else:
        texts = [" " + turn.text for conversation in train_set for turn in conversation.turns]
        actions = sorted({t.action for c in train_set for t in c.turns if t.action is not None})
        tokenizer = train_tokenizer(texts, args.vocab, actions)
        config = ModelConfig(n_layer=args.layers, n_head=args.heads, n_embd=args.width, n_positions=args.context)
        torch.manual_seed(0)
        model = new_model(config, tokenizer).eval()  # type: ignore[no-untyped-call]
        lm = LanguageModel(model, tokenizer, Codec(tokenizer), {"vanilla": False})
    lm.model.to(args.device)
    stream = [i for ids in lm.codec.encode_conversations(train_set[:20]) for i in ids]
    action = sorted(lm.codec.actions)[0]
    head = lm.codec.prompt([], action, args.history)[-2:]  # <|agent|><|action:...|>
    prompt = stream[-(args.history - len(head)) :] + head
    assert len(prompt) == args.history
    return lm, prompt


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="runs/data/persuasion.jsonl")
    parser.add_argument("--model", default=None, help="a trained model folder instead of a fresh model")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--context", type=int, default=512, help="context of a fresh model (>= history + 40)")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--history", type=int, default=256, help="prompt tokens")
    parser.add_argument("--suggestions", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=20, help="timed calls of each variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]

    lm, prompt = build(args)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
    n = args.suggestions
    tokens: dict[str, list[int]] = {"batched": [], "sequential": []}

    def batched() -> None:
        (messages,) = generate_messages(lm, [prompt], sampling, n)  # one call, n sequences, one KV cache
        tokens["batched"].extend(len(m.tokens) for m in messages)

    def sequential() -> None:
        for _ in range(n):  # n calls of one sequence each
            ((message,),) = generate_messages(lm, [prompt], sampling, 1)
            tokens["sequential"].append(len(message.tokens))

    def timed(run: Callable[[], None]) -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    variants = {"batched": batched, "sequential": sequential}
    for _ in range(args.warmup):
        for run in variants.values():
            run()
    for counts in tokens.values():
        counts.clear()  # the warm-up calls are not counted
    seconds: dict[str, list[float]] = {"batched": [], "sequential": []}
    for round_ in range(args.rounds):
        order = ["batched", "sequential"] if round_ % 2 == 0 else ["sequential", "batched"]
        for name in order:
            seconds[name].append(timed(variants[name]))

    parameters = sum(p.numel() for p in lm.model.parameters())
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} thread(s)"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {device}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}"
    )
    config = lm.model.config
    origin = f"trained: {args.model}" if args.model else "freshly initialised"
    print(
        f"model: GPT-2, {config.n_layer} layers, width {config.n_embd}, context {config.n_positions}, "
        f"vocabulary {config.vocab_size}: {parameters:,} parameters ({origin})"
    )
    print(
        f"task: {n} suggestions of up to {args.max_new_tokens} tokens after a {len(prompt)}-token history; "
        f"{args.rounds} timed calls of each variant (alternating order) after {args.warmup} warm-up calls"
    )
    print()
    print("| variant | p50 (ms) | p95 (ms) | mean (ms) | new tokens per suggestion |")
    print("|---|---:|---:|---:|---:|")
    for name, values in seconds.items():
        per = statistics.mean(tokens[name])
        print(
            f"| {name} ({'1 call of ' + str(n) if name == 'batched' else str(n) + ' calls of 1'}) "
            f"| {1000 * percentile(values, 50):.1f} | {1000 * percentile(values, 95):.1f} "
            f"| {1000 * statistics.mean(values):.1f} | {per:.1f} |"
        )
    b, s = seconds["batched"], seconds["sequential"]
    print()
    print(
        f"speed-up of batched over sequential: p50 {percentile(s, 50) / percentile(b, 50):.2f}x, "
        f"p95 {percentile(s, 95) / percentile(b, 95):.2f}x (goal: at least 2x)"
    )


if __name__ == "__main__":
    main()

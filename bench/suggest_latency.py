"""Suggestion latency (issues 6 and 16): k actions x n suggestions of up to 40 tokens after a 256-token history.

Four ways to write the same 9 suggestions (3 actions x 3), all through `convoplan.lm.generate.generate_messages`
(sampling: temperature 0.8, top-p 0.95, stop at `<|end|>`, at most 40 new tokens):

(a) sequential: 9 `generate` calls of one sequence each, every call reading the whole prompt;
(b) batched, before issue 16: one call, each action's prompt read once and copied to its 3 sequences
    (`share_prefix=False`), so the history is read 3 times;
(c) shared prefix (issue 16): one call, the history read once and branched to the 9 sequences;
(d) (c) with the model's linear layers quantised to int8 (torch's dynamic quantisation, `load_model(..., "int8")`);
(e), (f) with `--ctranslate2`: the model exported for CTranslate2 (`convoplan lm export`, float32 and int8_float32,
    written under OUT/ctranslate2), the history as the engine's static prompt (issue 29).

The prompts are real: the last 254 tokens of the corpus's test conversations, then `<|agent|>` and one of the
first k action tags. Rounds rotate the order of the variants (load on a shared machine hits them alike); each call
of a round uses the round's seed. Also measured, in the same run:

- time to the first streamed text of (c)-(f) (`on_text`, as `POST /v1/suggest` with `stream` sends it), and of a
  follow-up call of the same conversation: the same history 32 tokens longer, after a call on the shorter one
  (PyTorch continues the first call's cache, `PrefixCache`, and reads the 32 new tokens; CTranslate2 reads all);
- one decoding step with a 296-token cache at batch 1, 3 and 9, on every engine: whether dropping finished
  sequences from the batch would pay (it saves the difference between batch sizes), and how close to the limit;
- the limit: the model's multiply-adds per token (its weight matrices, the output head included, plus attention
  over the cache) against the machine's matmul throughput (a 1024^3 product) and memory bandwidth (a 256 MB copy),
  so the table says how close decoding runs to the hardware.

Models: `--model NAME=FOLDER` (a trained folder; a folder whose recorded block is shorter than history + 40 tokens
is allowed the longer prompt when its architecture has the positions, as SmolLM2 has) and `--fresh NAME=FOLDER`
(a freshly initialised GPT-2 of that folder's size and tokenizer with 512 positions: the 5M model's trained folders
have 256 positions, too few for a 256-token history; an untrained model never writes `<|end|>`, so every
suggestion runs the full 40 tokens, the worst case).

    .venv/bin/python bench/suggest_latency.py --data runs/data/persuasion.jsonl \\
        --model "SmolLM2=runs/p15/persuasion-smollm2-directed-240" --fresh "5M=runs/p15/persuasion-5m-directed" \\
        --threads 2 --out runs/bench-latency   # add --ctranslate2 for the exported variants
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from convoplan.atomic import atomic_write
from convoplan.lm.generate import PrefixCache, SamplingConfig, generate_messages
from convoplan.lm.model import LanguageModel, ModelConfig, export_model, in_precision, load_model, new_model
from convoplan.schema import read_jsonl

TITLES = {
    "a": "(a) 9 sequential calls",
    "b": "(b) one call, prompt per action (before)",
    "c": "(c) one call, shared prefix, PyTorch fp32",
    "d": "(d) = (c) with int8 linear layers (PyTorch)",
    "e": "(e) = (c) on CTranslate2 float32",
    "f": "(f) = (c) on CTranslate2 int8_float32",
}
ENGINES = {"e": "float32", "f": "int8_float32"}
"""The CTranslate2 variants and the quantisation each is exported with."""
FOLLOW_UP = 32
"""Tokens a follow-up call's history adds to the previous call's."""
WEIGHT_BYTES = {"c": 4, "d": 1, "e": 4, "f": 1}
"""Bytes a weight of the matrix products occupies in each variant (int8: one, its scales aside)."""


def fresh(folder: str, positions: int) -> LanguageModel:
    """A freshly initialised GPT-2 with the folder's size and tokenizer, and `positions` positions."""
    trained = load_model(folder)
    config = trained.model.config
    size = ModelConfig(n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd, n_positions=positions)
    torch.manual_seed(0)
    model = new_model(size, trained.tokenizer).eval()  # type: ignore[no-untyped-call]
    return LanguageModel(model, trained.tokenizer, trained.codec, {**trained.info, "block_size": positions})


def loaded(folder: str, precision: str, needed: int) -> LanguageModel:
    """A trained folder, allowed `needed` tokens where its architecture has the positions."""
    lm = load_model(folder, precision)  # type: ignore[arg-type]
    if lm.context < needed:
        lm.info = {**lm.info, "block_size": needed}
        if lm.generator is not None:  # an exported folder records its context
            lm.info["engine"] = {**lm.info["engine"], "context": min(needed, 2048)}
        if lm.context < needed:
            raise SystemExit(f"{folder}: {lm.context} positions, {needed} needed: use --fresh for this model")
    return lm


def prompts_for(lm: LanguageModel, data: str, history: int, k: int, short: int = 0) -> list[list[int]]:
    """k prompts: `history - 2` tokens of the test conversations (ending `short` tokens before their end), then
    <|agent|> and an action's tag."""
    conversations = [c for c in read_jsonl(data) if c.meta.get("split") == "test"] or read_jsonl(data)
    stream = [i for ids in lm.codec.encode_conversations(conversations[:20]) for i in ids]
    stream = stream[: len(stream) - short]
    actions = [a for a in sorted(lm.codec.actions) if a != "stop"][:k]
    heads = [lm.codec.prompt([], action, 10)[-2:] for action in actions]  # <|agent|><|action:...|>
    return [stream[-(history - 2) :] + head for head in heads]


def matmul_gflops(threads: int) -> float:
    """fp32 GFLOP/s of a 1024 x 1024 x 1024 product (the machine's compute ceiling for these models)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    runs = []
    for _ in range(10):
        start = time.perf_counter()
        a @ b
        runs.append(time.perf_counter() - start)
    return 2 * 1024**3 / statistics.median(runs) / 1e9


def copy_gbps() -> float:
    """Memory bandwidth: GB/s read plus written by copying 256 MB."""
    source = torch.empty(64 * 1024 * 1024)
    target = torch.empty_like(source)
    runs = []
    for _ in range(6):
        start = time.perf_counter()
        target.copy_(source)
        runs.append(time.perf_counter() - start)
    return 2 * source.numel() * 4 / statistics.median(runs[1:]) / 1e9


def matmul_weights(model: Any) -> int:
    """Weights that take part in a matrix product per token: every linear layer's and the output head's."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    total = head.weight.numel()
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, Conv1D)) and module is not head:
            total += module.weight.numel()
    return int(total)


def step_seconds(lm: LanguageModel, prompt: list[int], batch: int, steps: int = 12) -> float:
    """Median seconds of one decoding step of `batch` sequences after `prompt` (a cache of len(prompt) + step)."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = lm.model(input_ids=ids, use_cache=True)  # type: ignore[operator]
        cache = out.cache
        cache.batch_repeat_interleave(batch)
        token = out.logits[:, -1].argmax(-1, keepdim=True).repeat(batch, 1)  # [batch, 1]
        runs = []
        for step in range(steps):
            position = torch.full((batch, 1), len(prompt) + step)
            start = time.perf_counter()
            out = lm.model(input_ids=token, position_ids=position, cache=cache, use_cache=True)  # type: ignore[operator]
            runs.append(time.perf_counter() - start)
            cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
    return statistics.median(runs[2:])


def engine_step_seconds(lm: LanguageModel, prompt: list[int], batch: int) -> float:
    """One decoding step of `batch` sequences after `prompt` on CTranslate2: the time of 32 forced steps less that
    of 4 (the prefill and the engine's per-call work cancel), over 28; median of 5."""
    tokens = lm.tokenizer.convert_ids_to_tokens(prompt)

    def run(steps: int) -> float:
        start = time.perf_counter()
        lm.generator.generate_batch(
            [tokens[-1:]] * batch,
            max_length=steps,
            min_length=steps,
            static_prompt=tokens[:-1],
            include_prompt_in_result=False,
            cache_static_prompt=False,
        )
        return time.perf_counter() - start

    run(4)
    return statistics.median((run(32) - run(4)) / 28 for _ in range(5))


def ctranslate2_version() -> str:
    try:
        import ctranslate2
    except ImportError:
        return "not installed"
    return str(ctranslate2.__version__)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def measure(name: str, models: dict[str, LanguageModel], args: argparse.Namespace) -> dict[str, Any]:
    """Every variant of `models` ("c": the PyTorch fp32 model, "d" its int8 copy, "e"/"f" its exports), rounds in
    rotating order, each call of a round with the round's seed."""
    lm = models["c"]
    prompts = prompts_for(lm, args.data, args.history, args.actions)
    earlier = prompts_for(lm, args.data, args.history - FOLLOW_UP, args.actions, short=FOLLOW_UP)  # a call before
    n, k = args.suggestions, args.actions
    variants = ["a", "b", *models]
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    first: dict[str, list[float]] = {v: [] for v in models}
    follow: dict[str, list[float]] = {v: [] for v in models}
    tokens: dict[str, list[int]] = {v: [] for v in variants}

    def timed(model: LanguageModel, batch: list[list[int]], seed: int, prefix: PrefixCache | None) -> tuple:
        sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, seed=seed)
        start = time.perf_counter()
        heard: list[float] = []

        def on_text(row: int, text: str) -> None:
            if not heard:
                heard.append(time.perf_counter() - start)

        written = generate_messages(model, batch, sampling, n, on_text=on_text, prefix=prefix)
        return time.perf_counter() - start, heard[0] if heard else float("nan"), [m for g in written for m in g]

    def run(variant: str, seed: int) -> None:
        if variant in ("a", "b"):
            sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, seed=seed)
            start = time.perf_counter()
            if variant == "a":
                written = [m for p in prompts for _ in range(n) for (m,) in generate_messages(lm, [p], sampling)]
            else:
                written = [m for g in generate_messages(lm, prompts, sampling, n, share_prefix=False) for m in g]
            took = time.perf_counter() - start
        else:
            model = models[variant]
            took, heard, written = timed(model, prompts, seed, None)
            first[variant].append(heard)
            # The follow-up: the same conversation FOLLOW_UP tokens shorter first (untimed), then as above.
            prefix = PrefixCache()
            timed(model, earlier, seed, prefix)
            follow[variant].append(timed(model, prompts, seed, prefix)[1])
        seconds[variant].append(took)
        tokens[variant].append(sum(len(m.tokens) for m in written))

    for round_ in range(-args.warmup, args.rounds):
        shift = round_ % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            run(variant, seed=max(round_, 0))
        if round_ == -1:
            for lists in (seconds, first, follow, tokens):
                for values in lists.values():
                    values.clear()  # the warm-up rounds are not counted
        kind = "warm-up" if round_ < 0 else f"round {round_ + 1}/{args.rounds}"
        print(f"{name}: {kind} done ({', '.join(variants)})", flush=True)
    steps = {}
    for variant, model in models.items():
        batches = (1, k, k * n)
        if model.generator is None:
            steps[variant] = {batch: step_seconds(model, prompts[0], batch) for batch in batches}
        else:
            steps[variant] = {batch: engine_step_seconds(model, prompts[0], batch) for batch in batches}
    weights = matmul_weights(lm.model)
    config = lm.model.config
    layers = int(getattr(config, "n_layer", None) or config.num_hidden_layers)
    width = int(getattr(config, "n_embd", None) or config.hidden_size)
    cache = args.history + args.max_new_tokens // 2  # the mean cache length while decoding
    macs = weights + 2 * layers * cache * width  # per token: weight products + attention (QK^T and AV)
    return {
        "name": name,
        "variants": variants,
        "parameters": sum(p.numel() for p in lm.model.parameters()),
        "matmul_weights": weights,
        "macs_per_token": macs,
        "prompt_tokens": len(prompts[0]),
        "seconds": seconds,
        "first_text": first,
        "follow_up_first_text": follow,
        "new_tokens": {v: statistics.mean(t) / (k * n) for v, t in tokens.items()},
        "step_seconds": steps,
    }


def table(results: list[dict[str, Any]], gflops: float, gbps: float, args: argparse.Namespace) -> str:
    lines = [
        "| model | variant | p50 ms | p95 ms | mean ms | speed-up over (c), p50 | over (a) | new tokens a suggestion |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        a50, c50 = percentile(r["seconds"]["a"], 50), percentile(r["seconds"]["c"], 50)
        for v in r["variants"]:
            values = r["seconds"][v]
            p50 = percentile(values, 50)
            lines.append(
                f"| {r['name']} | {TITLES[v]} | {1000 * p50:,.0f} | {1000 * percentile(values, 95):,.0f} | "
                f"{1000 * statistics.mean(values):,.0f} | {c50 / p50:.2f}x | {a50 / p50:.2f}x | "
                f"{r['new_tokens'][v]:.1f} |"
            )
    lines += [
        "",
        f"| model | variant | time to first text p50 ms | p95 ms | follow-up call (+{FOLLOW_UP} tokens): first text "
        "p50 ms | p95 ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for v, values in r["first_text"].items():
            again = r["follow_up_first_text"][v]
            lines.append(
                f"| {r['name']} | {TITLES[v]} | {1000 * percentile(values, 50):,.0f} | "
                f"{1000 * percentile(values, 95):,.0f} | {1000 * percentile(again, 50):,.0f} | "
                f"{1000 * percentile(again, 95):,.0f} |"
            )
    k, kn = args.actions, args.actions * args.suggestions
    lines += [
        "",
        f"| model | variant | step, batch 1 ms | batch {k} ms | batch {kn} ms | multiply-adds per token | GFLOP/s at "
        f"batch 1 (of the fp32 matmul peak) | at batch {kn} | weight bytes per step | copy-bandwidth limit ms | "
        "batch-1 step / limit |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        flops = 2 * r["macs_per_token"]
        for v, s in r["step_seconds"].items():
            one, many = flops / s[1] / 1e9, kn * flops / s[kn] / 1e9
            moved = WEIGHT_BYTES[v] * r["matmul_weights"]
            limit = moved / (gbps * 1e9)  # the weights read once per step at the bandwidth a copy moves bytes
            lines.append(
                f"| {r['name']} | {TITLES[v]} | {1000 * s[1]:.1f} | {1000 * s[k]:.1f} | {1000 * s[kn]:.1f} | "
                f"{r['macs_per_token'] / 1e6:,.1f} M | {one:.1f} ({one / gflops:.0%}) | {many:.1f} "
                f"({many / gflops:.0%}) | {moved / 1e6:,.0f} MB | {1000 * limit:.1f} | {s[1] / limit:.2f}x |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="canonical conversations (the prompts' text)")
    parser.add_argument("--model", action="append", default=[], help="NAME=FOLDER, a trained model (repeat)")
    parser.add_argument("--fresh", action="append", default=[], help="NAME=FOLDER: a fresh model of that size")
    parser.add_argument("--history", type=int, default=256, help="prompt tokens")
    parser.add_argument("--actions", type=int, default=3)
    parser.add_argument("--suggestions", type=int, default=3, help="per action")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=10, help="timed calls of each variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-latency"))
    parser.add_argument("--ctranslate2", action="store_true", help="also each --model exported for CTranslate2")
    args = parser.parse_args()
    if not args.model and not args.fresh:
        parser.error("give at least one --model or --fresh NAME=FOLDER")
    if args.history <= FOLLOW_UP + 2:
        parser.error(f"--history {args.history}: a follow-up call adds {FOLLOW_UP} tokens to a shorter one; give more")
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]

    load = os.getloadavg()
    needed = args.history + args.max_new_tokens
    gflops, gbps = matmul_gflops(args.threads), copy_gbps()
    results = []
    for spec, make in [(s, "model") for s in args.model] + [(s, "fresh") for s in args.fresh]:
        name, sep, folder = spec.partition("=")
        if not sep:
            parser.error(f"{spec!r}: expected NAME=FOLDER")
        if make == "model":
            models = {"c": loaded(folder, "fp32", needed), "d": loaded(folder, "int8", needed)}
            for variant, quantization in ENGINES.items() if args.ctranslate2 else ():
                exported = export_model(folder, args.out / "ctranslate2" / f"{name}-{quantization}", quantization)
                models[variant] = loaded(str(exported), "fp32", needed)
        else:
            lm = fresh(folder, 2 * needed)
            int8 = LanguageModel(in_precision(fresh(folder, 2 * needed).model, "int8"), lm.tokenizer, lm.codec, lm.info)
            models = {"c": lm, "d": int8}
        print(f"{name}: measuring ...", flush=True)
        results.append(measure(name, models, args))
    machine = (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.2f} at the start "
        f"({os.getloadavg()[0]:.2f} at the end); {args.threads} torch thread(s); Python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, ctranslate2 {ctranslate2_version()}; "
        f"matmul peak {gflops:.1f} GFLOP/s "
        f"(1024^3 fp32), copy bandwidth {gbps:.1f} GB/s"
    )
    task = (
        f"task: {args.actions} actions x {args.suggestions} suggestions of up to {args.max_new_tokens} tokens after "
        f"a {args.history}-token history; {args.rounds} timed rounds (rotating order) after {args.warmup} warm-up"
    )
    models = "; ".join(f"{r['name']}: {r['parameters']:,} parameters" for r in results)
    report = "\n".join([machine, task, models, "", table(results, gflops, gbps, args)])
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out / "report.md") as handle:
        handle.write(report + "\n")
    with atomic_write(args.out / "report.json") as handle:
        json.dump({"machine": machine, "task": task, "results": results, "gflops": gflops, "gbps": gbps}, handle)


if __name__ == "__main__":
    main()

"""CTranslate2: the engine that runs a model folder exported for it (`convoplan.lm.model.export_model`).

CTranslate2 (OpenNMT; Klein et al., "Efficient and High-Quality Neural Machine Translation with OpenNMT", 2020)
runs transformer decoders with its own CPU and CUDA kernels: int8 matrix products with float32 activations
(`int8_float32`), a KV cache it manages itself, and batched decoding that drops finished sequences. Its converter
reads a transformers folder (GPT-2, Llama: SmolLM2 and our merged LoRA models); adapters must be merged first,
which `lm train` always does.

This module is the engine's side only (it imports nothing of convoplan's LM): `convert` writes its files, `load`
opens them, `decode` runs one batch. `convoplan.lm.generate.generate_messages` calls `decode` with the semantics
of the PyTorch loop: what all prompts share (one history before k action tags) is the *static prompt*, read once and
copied to every row; each prompt's n samples are n rows; sampling is temperature then top-p over the whole
vocabulary (`sampling_topk=0`), greedy is top-1; a message has at least one token before its end (`min_length=1`)
and stops at `<|end|>` or EOS; each token's log-probability is the untempered one. One difference: the engine seeds
its random generator once per thread, at its first sample, so a seed makes sampling reproducible only before the
first sampled call.

What it cannot do: reuse a history across calls. Its static-prompt cache keeps every distinct prompt it has seen,
without eviction (a server would grow without bound), and cannot extend a cached prompt by the turns that are new,
so `cache_static_prompt` is off and `PrefixCache` is a PyTorch feature (docs/lm.md, "Inference engines").
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = ["ENGINE", "Quantization"]

ENGINE = "ctranslate2"
"""The `engine.name` of an exported folder's convoplan-lm.json."""

Quantization = Literal["float32", "int8_float32", "int8", "int16", "float16", "bfloat16", "int8_float16"]
"""How the exported weights are stored and computed. On CPU: float32, int8_float32 (int8 weights and matrix
products, float32 elsewhere), int8, int16; float16 and bfloat16 variants need CUDA."""

INSTALL = "pip install 'ctranslate2>=4.5' (make install brings it)"

OnToken = Callable[[int, int, float], None]
"""Hears each token as the engine writes it: (row, token id, its log-probability). Raising in it stops the batch;
`decode` raises it again once the engine has returned."""


def require() -> Any:
    """The `ctranslate2` module; ValueError saying how to install it when it is missing."""
    try:
        import ctranslate2
    except ImportError:
        raise ValueError(f"CTranslate2 is not installed: {INSTALL}") from None
    return ctranslate2


def convert(source: Path, out: Path, quantization: Quantization) -> None:
    """Write the engine's files (`model.bin`, `config.json`, `vocabulary.json`) for the transformers folder `source`
    into the new folder `out` (the converter replaces the folder it writes)."""
    ctranslate2 = require()
    converter = ctranslate2.converters.TransformersConverter(str(source), low_cpu_mem_usage=True)
    converter.convert(str(out), quantization=quantization, force=True)
    # The engine reads its special tokens as strings; a tokenizer trained from scratch has no BOS or UNK token (the
    # converter writes null). Neither is ever written or read here: the end-of-text token stands in.
    config = json.loads((out / "config.json").read_text("utf-8"))
    config.update({key: config.get("eos_token") for key in ("bos_token", "unk_token") if config.get(key) is None})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load(folder: Path, compute_type: str, device: str, threads: int, replicas: int = 1) -> Any:
    """A `ctranslate2.Generator` for an exported folder, running up to `replicas` batches at once (one per caller
    thread, each on `threads` threads; on CPU the replicas share the weights); ValueError naming the folder when the
    files cannot be read."""
    ctranslate2 = require()
    if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise ValueError("CUDA inference needs a CUDA device and none is available; on CPU use int8 or fp32")
    try:
        return ctranslate2.Generator(
            str(folder), device=device, compute_type=compute_type, intra_threads=threads, inter_threads=replicas
        )
    except (RuntimeError, ValueError) as error:  # a missing or corrupt model.bin
        raise ValueError(f"{folder}: cannot load the CTranslate2 model ({error})") from None


def decode(
    generator: Any,
    static: Sequence[str],
    starts: Sequence[Sequence[str]],
    *,
    max_new_tokens: int,
    sample: bool,
    temperature: float,
    top_p: float,
    seed: int | None,
    end: Sequence[int],
    on_token: OnToken,
    cancel: threading.Event | None,
) -> bool:
    """Decode one batch: the rows `starts` (tokens) after the shared `static` prompt (none when empty), each until
    it writes an `end` id or `max_new_tokens` tokens; `on_token` hears every token written. False when `cancel`
    stopped it (each row at its next token)."""
    ctranslate2 = require()
    failure: list[BaseException] = []

    def step(result: Any) -> bool:
        """Called by the engine for every token it writes; True stops that row."""
        if failure or (cancel is not None and cancel.is_set()):
            return True
        try:
            on_token(result.batch_id, result.token_id, result.log_prob)
        except Exception as error:  # raising in the stream stops generation, as on PyTorch
            failure.append(error)
            return True
        return False

    if sample and seed is not None:
        ctranslate2.set_random_seed(seed)  # (read once per engine thread, at its first sample)
    generator.generate_batch(
        [list(tokens) for tokens in starts],
        max_length=max_new_tokens,
        min_length=1,  # a message has text: its first token is neither the end nor EOS
        sampling_topk=0 if sample else 1,  # 0: the whole vocabulary, as transformers' warpers (no top-k cut)
        sampling_topp=top_p if sample else 1.0,
        sampling_temperature=temperature if sample else 1.0,
        end_token=list(end),
        return_scores=True,  # the callback's log_prob: log-softmax of the raw logits, before temperature and top-p
        include_prompt_in_result=False,
        static_prompt=list(static) or None,
        cache_static_prompt=False,
        callback=step,
    )
    if failure:
        raise failure[0]
    return not (cancel is not None and cancel.is_set())

"""CTranslate2: a model folder exported for a faster inference engine, and the decoding loop that runs on it.

CTranslate2 (OpenNMT; Klein et al., "Efficient and High-Quality Neural Machine Translation with OpenNMT", 2020)
runs transformer decoders with its own CPU and CUDA kernels: int8 matrix products with float32 activations
(`int8_float32`), a KV cache it manages itself, and batched decoding that drops finished sequences. Its converter
reads a transformers folder (GPT-2, Llama: SmolLM2 and our merged LoRA models); adapters must be merged first,
which `lm train` always does.

`export` writes an **exported model folder**: CTranslate2's files (`model.bin`, `config.json`, `vocabulary.json`),
the tokenizer, the exemplar index where the model has one, and `convoplan-lm.json` with an `engine` entry (the
engine, the quantisation, the context length). `convoplan.lm.model.load_model` reads such a folder as it reads a
PyTorch one, so every loader (`suggest`, `serve`, `lm eval`, the LM provider, the benches) takes either.

`generate` is `generate_messages` on this engine, with the same semantics: what all prompts share (one history
before k action tags) is the *static prompt*, read once and copied to every row; each prompt's n samples are n
rows; sampling is temperature then top-p over the whole vocabulary (`sampling_topk=0`), greedy is top-1; a message
has at least one token before its end (`min_length=1`) and stops at `<|end|>` or EOS; each token's log-probability
is the untempered one, as on PyTorch. Text streams from the per-token callback, which also carries cancellation.
One difference: the engine seeds its random generator once per thread, at its first sample, so a `seed` makes
sampling reproducible only before the first sampled call.

What it cannot do: reuse a history across calls. Its static-prompt cache keeps every distinct prompt it has seen,
without eviction (a server would grow without bound), and cannot extend a cached prompt by the turns that are new,
so `cache_static_prompt` is off and `PrefixCache` is a PyTorch feature (docs/lm.md, "Inference engines").
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from convoplan.lm.generate import Generated, OnText, SamplingConfig
    from convoplan.lm.model import LanguageModel, Precision

__all__ = ["ENGINE", "Quantization", "export"]

ENGINE = "ctranslate2"
"""The `engine.name` of an exported folder's convoplan-lm.json."""

Quantization = Literal["float32", "int8_float32", "int8", "int16", "float16", "bfloat16", "int8_float16"]
"""How the exported weights are stored and computed. On CPU: float32, int8_float32 (int8 weights and matrix
products, float32 elsewhere), int8, int16; float16 and bfloat16 variants need CUDA."""

INSTALL = "pip install 'ctranslate2>=4.5' (make install brings it)"


def require() -> Any:
    """The `ctranslate2` module; ValueError saying how to install it when it is missing."""
    try:
        import ctranslate2
    except ImportError:
        raise ValueError(f"CTranslate2 is not installed: {INSTALL}") from None
    return ctranslate2


def export(model: str | Path, out: str | Path, quantization: Quantization = "int8_float32") -> Path:
    """Write `model` (a PyTorch model folder of `lm train`) as an exported folder for CTranslate2 in `quantization`,
    whole or not at all (`atomic_folder`); ValueError naming what is wrong before the conversion starts."""
    import json
    import shutil

    from transformers import AutoTokenizer

    from convoplan.checkpoint import write_folder
    from convoplan.lm.base import quiet
    from convoplan.lm.model import FORMAT, INFO_FILE, check_model_config, read_info
    from convoplan.retrieval.exemplars import EXEMPLARS

    if quantization not in get_args(Quantization):
        raise ValueError(f"unknown quantization {quantization!r}: expected one of {', '.join(get_args(Quantization))}")
    source = Path(model)
    info = read_info(source)
    if info.get("engine") is not None:
        raise ValueError(f"{source}: already exported for {info['engine'].get('name')}; export the PyTorch folder")
    check_model_config(source)
    ctranslate2 = require()
    config = json.loads((source / "config.json").read_text("utf-8"))
    positions = config.get("n_positions") or config.get("max_position_embeddings")
    block = info.get("block_size")
    context = min(positions, block) if isinstance(block, int) and block > 0 else positions

    def write(temp: Path) -> None:
        converted = temp / ".converted"  # the converter replaces the folder it writes: a subfolder, then moved up
        converter = ctranslate2.converters.TransformersConverter(str(source), low_cpu_mem_usage=True)
        with quiet():
            converter.convert(str(converted), quantization=quantization, force=True)
            AutoTokenizer.from_pretrained(str(source)).save_pretrained(temp)
        # CTranslate2 reads its special tokens as strings; a tokenizer trained from scratch has no BOS or UNK token
        # (the converter writes null). Neither is ever written or read here: the end-of-text token stands in.
        engine = json.loads((converted / "config.json").read_text("utf-8"))
        eos = engine.get("eos_token")
        engine.update({key: eos for key in ("bos_token", "unk_token") if engine.get(key) is None})
        (converted / "config.json").write_text(json.dumps(engine, indent=2) + "\n")
        for path in converted.iterdir():
            path.replace(temp / path.name)
        converted.rmdir()
        if (source / EXEMPLARS).is_dir():
            shutil.copytree(source / EXEMPLARS, temp / EXEMPLARS)

    record = {k: v for k, v in info.items() if k != "format"}
    record["engine"] = {"name": ENGINE, "quantization": quantization, "context": context, "source": str(source)}
    write_folder(out, FORMAT, record, extra=write, config_file=INFO_FILE)
    return Path(out)


def load(folder: Path, precision: Precision) -> Any:
    """A CTranslate2 generator for an exported folder on the CPU (or CUDA for bf16), with torch's thread count.
    `fp32` computes as exported; `int8` quantises a float export as it loads (int8_float32)."""
    import torch

    ctranslate2 = require()
    if precision == "bf16":
        if ctranslate2.get_cuda_device_count() == 0:
            raise ValueError("bf16 inference needs a CUDA device and none is available; on CPU use int8 or fp32")
        return ctranslate2.Generator(str(folder), device="cuda", compute_type="bfloat16")
    compute = "int8_float32" if precision == "int8" else "default"
    try:
        return ctranslate2.Generator(
            str(folder), device="cpu", compute_type=compute, intra_threads=torch.get_num_threads()
        )
    except (RuntimeError, ValueError) as error:  # a missing or corrupt model.bin
        raise ValueError(f"{folder}: cannot load the CTranslate2 model ({error})") from None


def _shared(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all prompts share, leaving each at least one of its own to start decoding from."""
    shortest = min(len(prompt) for prompt in prompts)
    count = 0
    while count < shortest - 1 and all(prompt[count] == prompts[0][count] for prompt in prompts):
        count += 1
    return count


def generate(
    lm: LanguageModel,
    prompts: Sequence[Sequence[int]],
    config: SamplingConfig,
    n: int,
    on_text: OnText | None,
    cancel: threading.Event | None,
) -> list[list[Generated]]:
    """`generate_messages` on CTranslate2 (checked arguments; see the module's docstring for the semantics)."""
    from convoplan.lm.generate import Cancelled, Texts, message

    ctranslate2 = require()
    codec, tokens = lm.codec, lm.tokenizer.convert_ids_to_tokens
    shared = _shared(prompts)
    static = tokens(list(prompts[0][:shared])) if shared else None
    starts = [tokens(list(prompt[shared:])) for prompt in prompts for _ in range(n)]  # B*n rows, b*n + k
    ids: list[list[int]] = [[] for _ in starts]
    logprobs: list[list[float]] = [[] for _ in starts]
    texts = Texts(lm, len(starts), on_text) if on_text is not None else None
    failure: list[BaseException] = []

    def step(result: Any) -> bool:
        """Called by the engine for every token it writes; True stops that row."""
        if failure or (cancel is not None and cancel.is_set()):
            return True
        row = result.batch_id
        ids[row].append(result.token_id)
        logprobs[row].append(result.log_prob)
        if texts is not None:
            try:
                texts.add(row, result.token_id)
            except Exception as error:  # raising in on_text stops generation, as on PyTorch
                failure.append(error)
                return True
        return False

    if config.do_sample and config.seed is not None:
        ctranslate2.set_random_seed(config.seed)  # (read once per engine thread, at its first sample)
    sampled = config.do_sample
    if cancel is not None and cancel.is_set():
        raise Cancelled("generation cancelled: its reader has gone")
    lm.generator.generate_batch(
        starts,
        max_length=config.max_new_tokens,
        min_length=1,  # a message has text: its first token is neither the end nor EOS
        sampling_topk=0 if sampled else 1,  # 0: the whole vocabulary, as transformers' warpers (no top-k cut)
        sampling_topp=config.top_p if sampled else 1.0,
        sampling_temperature=config.temperature if sampled else 1.0,
        end_token=[codec.end, codec.eos],
        return_scores=True,  # the callback's log_prob: log-softmax of the raw logits, before temperature and top-p
        include_prompt_in_result=False,
        static_prompt=static,
        cache_static_prompt=False,
        callback=step,
    )
    if failure:
        raise failure[0]
    if cancel is not None and cancel.is_set():
        raise Cancelled("generation cancelled: its reader has gone")
    messages = [message(lm, row_ids, row_logprobs) for row_ids, row_logprobs in zip(ids, logprobs, strict=True)]
    return [messages[i * n : (i + 1) * n] for i in range(len(prompts))]

"""The language model: a transformers causal LM (GPT-2 from a config dataclass, or any base checkpoint) with the
tokenizer of the text format, saved as one folder.

A model folder is what `save_pretrained` writes for the model (`config.json`, `model.safetensors`) and the
tokenizer (`tokenizer.json`, ...), plus `convoplan-lm.json`: the format version, whether the model is vanilla, its
actions, the base checkpoint and how it was trained. Loading uses only transformers' `from_pretrained` and never
imports training code, so a server can load a model without the training stack.

A model can be loaded for cheaper inference (`Precision`): int8 is torch's dynamic quantisation of every linear
layer on CPU (weights stored as int8 per tensor, activations quantised on the fly per batch; Jacob et al. 2018,
"Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference"), bf16 moves the
model to CUDA in bfloat16. What each costs in BLEU and adherence is measured in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from annotated_types import Ge, Interval

from convoplan.checkpoint import read_config, write_folder
from convoplan.configs import Config, RangeError, config_from_dict
from convoplan.lm.base import quiet
from convoplan.lm.text import AGENT, END, EVENT, EXAMPLE, KNOWLEDGE, USER, action_token
from convoplan.lm.tokenizer import Codec, add_format_tokens, format_actions

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from convoplan.lm.ct2 import Quantization

__all__ = ["LanguageModel", "ModelConfig", "Precision", "export_model", "in_precision", "load_model", "new_model"]

Precision = Literal["fp32", "int8", "bf16"]
"""How a loaded model computes: fp32; int8 (dynamic quantisation of the linear layers, CPU); bf16 (CUDA)."""

FORMAT = "convoplan-lm/1"
INFO_FILE = "convoplan-lm.json"


@dataclass
class ModelConfig(Config):
    """A GPT-2 trained from scratch; the defaults are small enough to train on a CPU (~5M parameters with 8k tokens)."""

    n_layer: Annotated[int, Ge(1)] = 4
    """Transformer blocks."""
    n_head: Annotated[int, Ge(1)] = 4
    """Attention heads per block (must divide n_embd)."""
    n_embd: Annotated[int, Ge(1)] = 256
    """Width of the token embeddings and of every block."""
    n_positions: Annotated[int, Ge(1)] = 256
    """Context length in tokens: the longest training block, and prompt plus generated message at inference."""
    dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1
    """Dropout on the embeddings, the attention weights and the residual branches."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_embd % self.n_head:  # each head attends over an equal slice of the width
            raise RangeError("n_embd", f"must be a multiple of n_head ({self.n_head}), got {self.n_embd}")


def new_model(config: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A freshly initialised GPT2LMHeadModel sized for `tokenizer` (seed torch first for a reproducible start)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        # No pad id: training blocks are packed (the tail's padding has no target), and with pad == EOS transformers
        # would warn on every EOS it sees; generation passes the tokenizer's pad id itself.
    )
    return GPT2LMHeadModel(gpt2)


def load_base(
    name_or_path: str, actions: Sequence[str] = (), *, notes: bool = False
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """A pretrained causal LM and its tokenizer (a packaged base such as `smollm2`, a `.gguf` file, a Hugging Face
    name such as `gpt2`, or a local folder: `convoplan.lm.base`), with the format's tags (the notes' too with
    `notes`) added to the tokenizer and the embeddings resized for them; ValueError if it cannot be loaded."""
    from convoplan.lm.base import load_pretrained

    try:
        with quiet():
            tokenizer, model = load_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--base-model {name_or_path!r}: cannot load a causal LM and its tokenizer ({error})"
        ) from None
    meanings = tag_meanings(tokenizer, actions, notes=notes)  # before the tags are added: the base's own EOS
    add_format_tokens(tokenizer, actions, notes=notes)
    rows = int(model.get_input_embeddings().weight.shape[0])  # type: ignore[index]
    if len(tokenizer) > rows:
        with quiet():
            model.resize_token_embeddings(len(tokenizer))
    init_tags(tokenizer, model, meanings)
    return tokenizer, model


NOTE_MEANINGS = {EVENT: " system event result", KNOWLEDGE: " knowledge source says", EXAMPLE: " example reply"}
"""What the notes' tags mean in words: each opens a block that is neither speaker's, and says what kind it is (an
event of the system, a passage of a source, a past reply)."""


def tag_meanings(tokenizer: PreTrainedTokenizerBase, actions: Sequence[str], *, notes: bool = False) -> dict[str, str]:
    """What each tag the base lacks means, in its own tokens: `<|end|>` is its end-of-turn (EOS)
    token, the speaker tags the words "user" and "assistant", an action tag the words of the action's name, and
    with `notes` the notes' tags their `NOTE_MEANINGS`."""
    words = {USER: " user", AGENT: " assistant", END: tokenizer.eos_token or "."}
    words.update({action_token(a): " " + re.sub(r"[_\-.]+", " ", a) for a in actions})
    if notes:
        words.update(NOTE_MEANINGS)
    known = tokenizer.get_vocab()  # a tag the base already has (a convoplan model trained further) keeps its row
    return {tag: meaning for tag, meaning in words.items() if tag not in known}


def init_tags(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, meanings: dict[str, str]) -> None:
    """Start every tag's embedding (input and, when untied, output) at the mean embedding of the tokens of its
    meaning. A pretrained model then reads `<|agent|><|action:ask_price|>` roughly as "assistant ask price" and,
    above all, predicts `<|end|>` wherever it would end a turn: tags that start at the mean of all rows
    (transformers' default) are never predicted until training has moved them, and an LM fine-tuned for minutes
    then writes on past the end of the message. (Hewitt, "Initializing new word embeddings", 2021, argues for
    the mean; a meaningful mean keeps its benefit and adds the tag's role.)"""
    import torch

    tables: list[torch.Tensor] = [model.get_input_embeddings().weight]  # type: ignore[list-item]
    output: torch.nn.Module | None = model.get_output_embeddings()  # type: ignore[no-untyped-call]
    if output is not None and output.weight is not tables[0]:  # untied: the output rows decide what is predicted
        tables.append(output.weight)  # type: ignore[arg-type]
    with torch.no_grad():
        for tag, meaning in meanings.items():
            ids = tokenizer(meaning, add_special_tokens=False)["input_ids"]
            if not ids:
                continue
            row = tokenizer.convert_tokens_to_ids(tag)
            for table in tables:  # [V, D]
                table[row] = table[ids].mean(0)


@dataclass
class LanguageModel:
    """A loaded model folder: the causal LM (in eval mode) or, for a folder exported for CTranslate2, its generator;
    the tokenizer, the format codec and the folder's info."""

    network: PreTrainedModel | None
    """The PyTorch model; None for an exported folder (`generator`)."""
    tokenizer: PreTrainedTokenizerBase
    codec: Codec
    info: dict[str, Any]
    """The contents of convoplan-lm.json (format, vanilla, actions, base_model, training; engine when exported)."""
    generator: Any = None
    """A `ctranslate2.Generator` for an exported folder (`convoplan.lm.ct2`); None: PyTorch runs the model."""

    @property
    def model(self) -> PreTrainedModel:
        """The PyTorch model; ValueError for an exported folder, which only generates."""
        if self.network is None:
            raise ValueError("this model is exported for CTranslate2: it generates, but has no PyTorch weights")
        return self.network

    @property
    def engine(self) -> str:
        """What runs it: "pytorch", or the exported folder's engine ("ctranslate2")."""
        return "pytorch" if self.generator is None else str(self.info["engine"]["name"])

    @property
    def context(self) -> int:
        """Longest input in tokens (prompt plus generated tokens): the training block length where the folder
        records one (what the model learnt to read), else the architecture's context."""
        if self.generator is not None:
            return int(self.info["engine"]["context"])  # recorded by the export, by the same rule
        config = self.model.config
        return _context(int(getattr(config, "n_positions", None) or config.max_position_embeddings), self.info)


def _context(positions: int, info: dict[str, Any]) -> int:
    """Longest input of a model of `positions` positions and convoplan-lm.json `info`: its training block length
    where recorded, else its positions."""
    block = info.get("block_size")
    return min(positions, block) if isinstance(block, int) and block > 0 else positions


def save_model(
    folder: str | Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    info: dict[str, Any],
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write a model folder as a whole (it appears complete or not at all, replacing what was there): the model and
    tokenizer as `save_pretrained` writes them (safetensors, never a pickle), whatever `extra(temp folder)` adds (a
    training checkpoint's state), and convoplan-lm.json: format, actions, then `info`, which must say `vanilla`
    (also: base_model, training config and results, ...)."""
    if "vanilla" not in info:
        raise ValueError("info must say whether the model is vanilla")

    def write(temp: Path) -> None:
        with quiet():
            model.save_pretrained(temp)
            tokenizer.save_pretrained(temp)
        if extra is not None:
            extra(temp)

    record = {"actions": format_actions(tokenizer), **info}
    return write_folder(folder, FORMAT, record, extra=write, config_file=INFO_FILE)


@dataclass
class _Engine(Config):
    """An exported folder's engine entry."""

    name: Literal["ctranslate2"]
    quantization: str
    context: Annotated[int, Ge(1)]
    """Longest input in tokens (prompt plus generated), as `LanguageModel.context` read it before the export."""
    source: str | None = None
    """The PyTorch folder it was exported from."""


@dataclass
class _Info(Config):
    """What convoplan-lm.json must hold, with its types (checked on load)."""

    vanilla: bool
    actions: list[str]
    base_model: str | None = None
    block_size: Annotated[int, Ge(1)] | None = None
    training: dict[str, Any] | None = None
    grounding: dict[str, Any] | None = None
    """The prompts' grounding (`convoplan.lm.grounding.GroundingConfig`, checked where it is read); absent: none."""
    engine: _Engine | None = None
    """Where the folder was exported for another inference engine (`export_model`); absent: PyTorch."""
    dpo: list[dict[str, Any]] | None = None
    """Rounds of preference tuning (`convoplan.lm.dpo`), oldest first, each with its config and results; absent:
    none. `training` stays the supervised run's."""


def read_info(folder: str | Path) -> dict[str, Any]:
    """A model folder's convoplan-lm.json, its fields checked; ValueError naming the file (and the field) if the
    folder is not a convoplan LM ("vanilla": "no" would otherwise run a directed model as vanilla)."""
    info = read_config(folder, FORMAT, "language model", config_file=INFO_FILE)
    config_from_dict(_Info, {k: v for k, v in info.items() if k != "format"}, str(Path(folder) / INFO_FILE))
    return info


_SIZE = re.compile(r"^(n|num)_|_size$|^max_position_embeddings$")
"""Fields of a transformers config that are sizes: a count must be positive."""


def check_model_config(folder: str | Path) -> None:
    """Check the transformers `config.json` of a model folder against its model type's defaults: every field the
    defaults have keeps their type (no "n_layer": "four"), and sizes are positive (no "vocab_size": -1); else a
    ValueError naming the file and the field, before transformers builds anything."""
    from transformers import AutoConfig

    path = Path(folder) / "config.json"
    try:
        saved = json.loads(path.read_text("utf-8"))
        defaults = AutoConfig.for_model(saved["model_type"]).to_dict()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a transformers model config ({error})") from None
    for name, value in saved.items():
        default = defaults.get(name)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
            if ok and _SIZE.search(name) and default > 0 and value <= 0:
                raise ValueError(f"{path}: {name}: expected a positive size, got {value}")
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            continue  # None, lists and objects: left to transformers
        if not ok:
            raise ValueError(f"{path}: {name}: expected {type(default).__name__}, got {json.dumps(value)}")


def load_model(folder: str | Path, precision: Precision = "fp32", replicas: int = 1) -> LanguageModel:
    """A model folder written by `save_model` (or a training checkpoint), ready to generate in `precision`; or a
    folder exported for CTranslate2 (`export_model`), which computes as exported (`int8` quantises a float export as
    it loads) and runs up to `replicas` generations at once (serve: one per model worker; a PyTorch model is shared
    by its callers as it is)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = read_info(folder)
    if info.get("engine") is not None:  # exported for CTranslate2: its own files, the same tokenizer and info
        import torch

        from convoplan.lm import ct2

        # As exported, unless int8 is asked of a float export; bf16 on CUDA.
        device, compute = ("cuda", "bfloat16") if precision == "bf16" else ("cpu", _ENGINE_COMPUTE[precision])
        generator = ct2.load(Path(folder), compute, device, torch.get_num_threads(), replicas)
        try:
            with quiet():
                tokenizer = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError) as error:
            raise ValueError(f"{folder}: cannot load the tokenizer ({error})") from None
        return LanguageModel(None, tokenizer, Codec(tokenizer, vanilla=bool(info["vanilla"])), info, generator)
    check_model_config(folder)
    try:
        with quiet():
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            model = AutoModelForCausalLM.from_pretrained(str(folder))
    except (OSError, ValueError, SafetensorError) as error:  # SafetensorError: a truncated or corrupt weights file
        raise ValueError(f"{folder}: cannot load the model or its tokenizer ({error})") from None
    model.eval()  # type: ignore[no-untyped-call]
    return LanguageModel(
        in_precision(model, precision), tokenizer, Codec(tokenizer, vanilla=bool(info["vanilla"])), info
    )


_ENGINE_COMPUTE = {"fp32": "default", "int8": "int8_float32"}
"""CTranslate2's compute type for a precision on CPU: "default" computes as the folder was exported."""


def export_model(folder: str | Path, out: str | Path, quantization: Quantization = "int8_float32") -> Path:
    """Write the model folder `folder` (of `lm train`) as a folder exported for CTranslate2 in `quantization`, whole or
    not at all: the engine's files (`convoplan.lm.ct2.convert`), the tokenizer, the exemplar index where there is
    one, and convoplan-lm.json with an `engine` entry (the context the model reads, as `LanguageModel.context` would
    say it). ValueError naming what is wrong before the conversion starts."""
    import shutil

    from transformers import AutoTokenizer

    from convoplan.lm import ct2
    from convoplan.retrieval.exemplars import EXEMPLARS

    if quantization not in get_args(ct2.Quantization):
        choices = ", ".join(get_args(ct2.Quantization))
        raise ValueError(f"unknown quantization {quantization!r}: expected one of {choices}")
    source = Path(folder)
    info = read_info(source)
    if info.get("engine") is not None:
        raise ValueError(f"{source}: already exported for {info['engine']['name']}; export the PyTorch folder")
    check_model_config(source)
    ct2.require()
    config = json.loads((source / "config.json").read_text("utf-8"))
    context = _context(int(config.get("n_positions") or config["max_position_embeddings"]), info)

    def write(temp: Path) -> None:
        converted = temp / ".converted"  # the converter replaces the folder it writes: a subfolder, then moved up
        with quiet():
            ct2.convert(source, converted, quantization)
            AutoTokenizer.from_pretrained(str(source)).save_pretrained(temp)
        for path in converted.iterdir():
            path.replace(temp / path.name)
        converted.rmdir()
        if (source / EXEMPLARS).is_dir():
            shutil.copytree(source / EXEMPLARS, temp / EXEMPLARS)

    engine = {"name": ct2.ENGINE, "quantization": quantization, "context": context, "source": str(source)}
    record = {**{k: v for k, v in info.items() if k != "format"}, "engine": engine}
    return write_folder(out, FORMAT, record, extra=write, config_file=INFO_FILE)


def in_precision(model: PreTrainedModel, precision: Precision) -> PreTrainedModel:
    """The model ready to compute in `precision` (int8: a quantised copy of its linear layers; ValueError for bf16
    without CUDA)."""
    import torch

    if precision == "bf16":
        if not torch.cuda.is_available():
            raise ValueError("bf16 inference needs a CUDA device and none is available; on CPU use int8 or fp32")
        return model.to("cuda", dtype=torch.bfloat16)  # type: ignore[arg-type,no-any-return]
    if precision != "int8":
        return model
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    from transformers.pytorch_utils import Conv1D

    # GPT-2 writes its linear layers as transformers' Conv1D (x @ W + b, W stored [in, out]): as nn.Linear they
    # quantise too, else only its output head would.
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Conv1D):
                linear = torch.nn.Linear(child.weight.shape[0], child.nf)
                linear.weight.data = child.weight.data.t().contiguous()
                linear.bias.data = child.bias.data
                setattr(module, name, linear)
    # One scale per output channel (row of W), not one per matrix: a pretrained model's rows differ in range, and
    # per-matrix int8 halved SmolLM2's BLEU on PersuasionForGood (BENCHMARKS.md). The output head stays fp32: its
    # error lands straight on the next-token logits, and it is a small share of a deep model's work per token.
    head = model.get_output_embeddings()  # type: ignore[no-untyped-call]
    layers = {
        name: per_channel_dynamic_qconfig
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and m is not head
    }
    with warnings.catch_warnings():  # torch announces that quantised tensor types will move to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, layers, dtype=torch.qint8)  # type: ignore[no-untyped-call,no-any-return]

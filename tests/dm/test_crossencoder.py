"""The transformer cross-encoder DMs (supervised and E2E): training moves them, checkpoints round-trip, they serve."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from convoplan.dm.checkpoint import load_policy, save_cross_encoder
from convoplan.dm.configs import ValidationConfig
from convoplan.dm.crossencoder import CrossEncoder, CrossEncoderPolicy, TransformerConfig, pair_batch
from convoplan.dm.train import Dataset, prepare
from convoplan.dm.train_crossencoder import (
    E2EConfig,
    SupervisedTransformerConfig,
    train_e2e,
    train_supervised_transformer,
)
from convoplan.embed import SentenceEmbedder
from convoplan.schema import Conversation
from convoplan.sim.run import SimulationConfig, simulate
from convoplan.worlds.animals import animals_world

TINY = TransformerConfig(layers=1, max_tokens=48, history=2, head=(16,), dropout=0.0)


@pytest.fixture(scope="module")
def data(animal_logs: list[Conversation], embedder: SentenceEmbedder) -> Dataset:
    return prepare(animal_logs, embedder)


def test_history_text_reads_the_last_utterances(data: Dataset) -> None:
    from convoplan.dm.crossencoder import history_text

    table = data.table
    step = int(table.episode_steps[0]) + 3
    text = history_text(table, step, 0, 2)
    assert text.count("user: ") + text.count("bot: ") == 2


def test_supervised_transformer_learns_and_round_trips(data: Dataset, tmp_path: Path) -> None:
    result = train_supervised_transformer(
        data, SupervisedTransformerConfig(model=TINY, steps=25, batch_size=16, lr=1e-3, warmup=0.0)
    )
    k = 5
    # the raters' noise puts a floor near 4 under the loss: a clear fall is what training can show here
    assert sum(result.losses[-k:]) / k < 0.75 * sum(result.losses[:k]) / k, result.losses
    save_cross_encoder(
        tmp_path / "st", "supervised_transformer", result.model, result.tokenizer, TINY, data.table.space, {"steps": 25}
    )
    policy = load_policy(tmp_path / "st")
    assert isinstance(policy, CrossEncoderPolicy)
    batch = pair_batch(data.table, [0, 1], result.tokenizer, TINY)
    with torch.no_grad():
        assert torch.allclose(result.model(batch), policy.model(batch), atol=1e-5)
    (conversation,) = simulate(animals_world(), policy, SimulationConfig(conversations=1, max_turns=2))
    assert all(c.score is not None for t in conversation.turns for c in t.candidates)


def test_e2e_moves_from_its_warm_start(data: Dataset) -> None:
    start = train_supervised_transformer(data, SupervisedTransformerConfig(model=TINY, steps=2, batch_size=4))
    before = [p.detach().clone() for p in start.model.parameters()]
    result = train_e2e(data, E2EConfig(steps=4, batch_size=2, lr=1e-4, warmup=0.0, target_every=2), init=start.model)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, result.model.parameters(), strict=True))
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, start.model.parameters(), strict=True))


def test_damaged_cross_encoder_checkpoint_is_named(data: Dataset, tmp_path: Path) -> None:
    result = train_supervised_transformer(data, SupervisedTransformerConfig(model=TINY, steps=1, batch_size=2))
    save_cross_encoder(tmp_path / "st", "x", result.model, result.tokenizer, TINY, data.table.space, {})
    (tmp_path / "st" / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"st/model\.safetensors: cannot load the weights"):
        load_policy(tmp_path / "st")


def test_packed_input_scores_each_candidate_as_if_alone_after_the_history(data: Dataset) -> None:
    """One sequence per step reads the history once; each candidate must score what it scores alone after it."""
    packed = replace(TINY, packed=True, max_tokens=64)
    model = CrossEncoder(data.table.space.candidate_dim, packed).eval()
    from convoplan.dm.train_crossencoder import _tokenizer

    widths = data.table.candidate_offsets[1:] - data.table.candidate_offsets[:-1]
    tokenizer, steps = _tokenizer(), [int(s) for s in (widths > 2).nonzero()[0][[0, 5]]]
    batch = pair_batch(data.table, steps, tokenizer, packed)
    assert batch.tokens["input_ids"].shape[0] == 2  # one sequence per step
    with torch.no_grad():
        together = batch.spread(model(batch))
        for row, step in enumerate(steps):
            width = int(data.table.candidate_offsets[step + 1] - data.table.candidate_offsets[step])
            for column in range(width):
                alone = model(pair_batch(data.table, [step], tokenizer, packed, only=[[column]]))
                assert torch.allclose(alone[0], together[row, column], atol=1e-4)
        # and the history is read: another history changes a candidate's score
        other = pair_batch(data.table, [steps[1]], tokenizer, packed, only=[[0]])
        assert not torch.allclose(model(other)[0], together[0, 0])


def test_supervised_transformer_validation_keeps_its_best_weights(data: Dataset) -> None:
    validation = ValidationConfig(share=0.25, every=3, patience=2, most=20)
    config = SupervisedTransformerConfig(
        model=replace(TINY, packed=True), steps=30, batch_size=16, lr=1e-3, warmup=0.0, validation=validation
    )
    result = train_supervised_transformer(data, config)
    record = result.validation
    assert record["held_out_conversations"] >= 1
    errors = [error for _, error in record["rmse"]]
    assert record["best_rmse"] == min(errors) and errors[0] > min(errors)  # it learned something held out
    assert len(result.losses) == record["rmse"][-1][0] <= 30
    if len(result.losses) < 30:  # stopped early: the last `patience` measurements were no better
        assert all(e >= record["best_rmse"] for e in errors[-2:])
    assert 0 < record["final_rmse"] < errors[0] + 1.0  # all held-out steps, on the kept weights

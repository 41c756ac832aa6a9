"""Training the language model: the loss falls and parameters move, the model folder round-trips, early stopping
keeps the best weights, the vanilla baseline drops the action tags, a base checkpoint fine-tunes, and a run that
is interrupted (by an exception, or by SIGKILL in another process) resumes to the weights of an uninterrupted one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from convoplan.lm.data import pack
from convoplan.lm.model import load_model, new_model
from convoplan.lm.text import action_token
from convoplan.lm.tokenizer import Codec, train_tokenizer
from convoplan.lm.train import CHECKPOINT, TrainResult, fit, lm_loss, train, validation_loss
from convoplan.progress import Progress, Update
from convoplan.schema import Conversation, write_jsonl

from .conftest import TINY

# Dropout on: a resumed run must draw the same dropout masks as an uninterrupted one.
RESUMABLE = replace(TINY, model=replace(TINY.model, dropout=0.1))
REPO = Path(__file__).resolve().parents[2]


class Interrupt(Exception):
    pass


def interrupt_at(step: int) -> Progress:
    def progress(report: Update) -> None:
        if report.task == "training" and report.done == step:
            raise Interrupt

    return progress


def training_steps(steps: list[int]) -> Progress:
    """A progress callback that records the step of every training update."""
    return lambda report: steps.append(report.done) if report.task == "training" else None


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.allclose(first[name], second[name], atol=1e-5, rtol=1e-4), name


@dataclass
class Reference:
    folder: Path
    result: TrainResult


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, corpus: list[Conversation]) -> Reference:
    """An uninterrupted run of the RESUMABLE config."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("reference") / "model"
    return Reference(folder, train(corpus, folder, RESUMABLE))


def test_loss_falls_and_parameters_move(corpus: list[Conversation]) -> None:
    train_set = [c for c in corpus if c.meta["split"] == "train"]
    tokenizer = train_tokenizer(
        [" " + t.text for c in train_set for t in c.turns], 300, ["ask for sale", "greeting", "thank"]
    )
    codec = Codec(tokenizer)
    blocks = pack(codec.encode_conversations(train_set), 64, codec.eos)
    torch.manual_seed(0)
    model = new_model(TINY.model, tokenizer)
    before = [p.detach().clone() for p in model.parameters()]
    # the whole training set as the validation set: its loss must fall too
    state = fit(model, blocks, blocks, replace(TINY, epochs=4, patience=10))
    first, last = sum(state.losses[:5]) / 5, sum(state.losses[-5:]) / 5
    assert last < 0.6 * first, state.losses
    assert state.validation[-1] < state.validation[0]
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert state.tokens > state.step * 4 * 60  # nearly full blocks of 64 targets


def test_loss_is_transformers_causal_lm_loss(corpus: list[Conversation]) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_layer=1, n_head=2, n_embd=16, n_positions=16))
    ids = torch.randint(0, 50, (3, 12))
    output = model(input_ids=ids, labels=ids)
    total, count = lm_loss(output.logits[:, :-1], ids[:, 1:])
    assert count == 3 * 11
    assert float(total.detach()) / count == pytest.approx(float(output.loss.detach()), rel=1e-5)
    masked = ids[:, 1:].clone()
    masked[0, 5:] = -100
    total, count = lm_loss(output.logits[:, :-1], masked)
    assert count == 3 * 11 - 6


def test_model_folder_round_trips(reference: Reference, corpus: list[Conversation]) -> None:
    folder = reference.folder
    names = {path.name for path in folder.iterdir()}
    assert "model.safetensors" in names and "tokenizer.json" in names and "convoplan-lm.json" in names
    assert CHECKPOINT not in names and not any(name.endswith((".bin", ".pt")) for name in names)
    lm = load_model(folder)
    assert lm.info["vanilla"] is False and lm.info["actions"] == ["ask for sale", "greeting", "thank"]
    training = lm.info["training"]
    assert training["steps"] == reference.result.state.step and training["tokens_per_second"] > 0
    assert lm.context == 64
    ids = torch.tensor([lm.codec.encode_conversations(corpus[:1])[0][:64]])
    with torch.no_grad():
        assert torch.allclose(lm.model(input_ids=ids).logits, reference.result.model(input_ids=ids).logits, atol=1e-5)


def test_a_corrupt_model_folder_is_a_one_line_error(reference: Reference, tmp_path: Path) -> None:
    folder = tmp_path / "corrupt"
    shutil.copytree(reference.folder, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, as by a full disk
    with pytest.raises(ValueError, match="corrupt: cannot load the model"):
        load_model(folder)


def test_early_stopping_keeps_the_best_weights(tmp_path: Path, corpus: list[Conversation]) -> None:
    # With a huge min_delta no epoch after the first improves: patience 1 stops after the second epoch and the
    # weights of the first are kept.
    result = train(corpus, tmp_path / "model", replace(TINY, epochs=5, patience=1, min_delta=100.0))
    state = result.state
    assert state.stopped and state.epoch == 2 and len(state.validation) == 2
    codec = Codec(result.tokenizer)
    validation = pack(codec.encode_conversations([c for c in corpus if c.meta["split"] == "validation"]), 64, codec.eos)
    assert validation_loss(result.model, validation, TINY, 1, 0, torch.device("cpu")) == pytest.approx(
        state.validation[0]
    )


def test_every_validation_pass_shows_progress_the_final_one_included(
    tmp_path: Path, corpus: list[Conversation]
) -> None:
    updates: list[Update] = []
    train(corpus, tmp_path / "model", replace(TINY, epochs=2, eval_batch_size=2), progress=updates.append)
    last_training = max(i for i, update in enumerate(updates) if update.task == "training")
    final = [update for update in updates[last_training:] if update.task == "validating"]
    assert final, "the final validation pass (after training's 100%) reported nothing"
    assert [update.done for update in final[:2]] == [2, 4] and final[-1].done == final[-1].total
    assert {update.unit for update in final} == {"blocks"}
    passes = [update for update in updates if update.task == "validating" and update.done == update.total]
    assert len(passes) == 2  # one pass per epoch, each to its end


def test_vanilla_baseline_has_the_same_architecture_without_action_tags(
    tmp_path: Path, corpus: list[Conversation], reference: Reference
) -> None:
    result = train(corpus, tmp_path / "vanilla", replace(RESUMABLE, vanilla=True))
    lm = load_model(tmp_path / "vanilla")
    assert lm.info["vanilla"] is True and lm.info["actions"] == [] and not lm.codec.actions
    assert action_token("greeting") not in lm.tokenizer.get_vocab()
    # same BPE merges, same blocks minus one tag per labelled message, same architecture and budget
    labelled = sum(1 for c in corpus if c.meta["split"] == "train" for t in c.turns if t.action is not None)
    assert result.train_tokens == reference.result.train_tokens - labelled
    assert len(lm.tokenizer) == len(load_model(reference.folder).tokenizer) - 3
    assert result.parameters == reference.result.parameters - 3 * TINY.model.n_embd
    assert lm.info["training"]["config"]["epochs"] == RESUMABLE.epochs


def test_resume_after_an_exception_reaches_the_uninterrupted_weights(
    tmp_path: Path, corpus: list[Conversation], reference: Reference
) -> None:
    out = tmp_path / "model"
    with pytest.raises(Interrupt):
        train(corpus, out, RESUMABLE, progress=interrupt_at(7))
    assert (out / CHECKPOINT / "trainer_state.json").exists() and not (out / "model.safetensors").exists()
    steps: list[int] = []
    resumed = train(corpus, out, resume=True, progress=training_steps(steps))
    assert steps[0] == 5  # from the checkpoint of step 4, not from scratch
    assert resumed.state.step == reference.result.state.step
    assert resumed.state.losses == pytest.approx(reference.result.state.losses, rel=1e-4)
    assert resumed.state.validation == pytest.approx(reference.result.state.validation, rel=1e-4)
    assert_same_weights(out, reference.folder)
    assert not (out / CHECKPOINT).exists()


KILLABLE = """
import sys, time
import torch
from convoplan.lm.train import train
from convoplan.schema import read_jsonl
from tests.lm.test_train import RESUMABLE
torch.set_num_threads(1)
train(read_jsonl(sys.argv[1]), sys.argv[2], RESUMABLE, progress=lambda report: time.sleep(0.1))
"""


def test_resume_after_sigkill_reaches_the_uninterrupted_weights(
    tmp_path: Path, corpus: list[Conversation], reference: Reference
) -> None:
    data, out = tmp_path / "data.jsonl", tmp_path / "model"
    write_jsonl(data, corpus)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", KILLABLE, str(data), str(out)], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 240
        while not (out / CHECKPOINT / "trainer_state.json").exists():
            assert process.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
    assert not (out / "model.safetensors").exists()  # it was killed before the end
    steps: list[int] = []
    resumed = train(corpus, out, resume=True, progress=training_steps(steps))
    assert steps[0] > 1  # from a checkpoint, not from scratch
    assert resumed.state.step == reference.result.state.step
    assert_same_weights(out, reference.folder)


def test_resume_refuses_what_would_lose_or_mix_runs(tmp_path: Path, corpus: list[Conversation]) -> None:
    out = tmp_path / "model"
    with pytest.raises(ValueError, match="no interrupted run to resume"):
        train(corpus, out, resume=True)
    with pytest.raises(Interrupt):
        train(corpus, out, TINY, progress=interrupt_at(5))
    with pytest.raises(ValueError, match="holds an interrupted run"):
        train(corpus, out, TINY)
    with pytest.raises(ValueError, match="differs in lr"):
        train(corpus, out, replace(TINY, lr=0.1), resume=True)
    with pytest.raises(ValueError, match="not the ones the interrupted run"):
        train(corpus[:-20], out, resume=True)
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="is not a model folder"):
        train(corpus, tmp_path, TINY)


def test_fine_tunes_a_base_checkpoint(tmp_path: Path, corpus: list[Conversation]) -> None:
    """The --base-model path: a tiny GPT-2 and a tokenizer saved with save_pretrained, loaded by AutoModel."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from .test_tokenizer import plain_tokenizer

    base = tmp_path / "base"
    tokenizer = plain_tokenizer()
    tokenizer.save_pretrained(base)
    GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer), n_layer=2, n_head=2, n_embd=32, n_positions=64)
    ).save_pretrained(base)
    result = train(corpus, tmp_path / "tuned", replace(TINY, epochs=2), base_model=str(base))
    assert result.state.losses[-1] < result.state.losses[0]
    lm = load_model(tmp_path / "tuned")
    assert lm.info["base_model"] == str(base)
    assert lm.info["actions"] == ["ask for sale", "greeting", "thank"]
    assert lm.model.get_input_embeddings().weight.shape[0] == len(tokenizer) + 3 + 3  # user, agent, end + actions


def test_a_step_budget_reports_the_epochs_really_run(tmp_path: Path, corpus: list[Conversation]) -> None:
    one = train(corpus, tmp_path / "probe", replace(TINY, epochs=1)).steps_per_epoch
    result = train(corpus, tmp_path / "model", replace(TINY, epochs=3, max_steps=one + 1))
    assert result.state.step == one + 1 and result.epochs == pytest.approx((one + 1) / one) and result.epochs < 2
    assert load_model(tmp_path / "model").info["training"]["epochs"] == round(result.epochs, 3)


def test_a_time_budget_ends_the_run_validated_with_its_best_weights(tmp_path: Path, corpus: list[Conversation]) -> None:
    # A budget of a microsecond: the first step spends it, its epoch ends there, is validated, and the run stops.
    result = train(corpus, tmp_path / "model", replace(TINY, epochs=5, max_seconds=1e-6))
    state = result.state
    assert state.out_of_time and not state.stopped and state.step == 1 and len(state.validation) == 1
    assert result.steps_per_epoch > 1  # the budget, not the data, ended the epoch
    assert load_model(tmp_path / "model").info["training"]["out_of_time"] is True
    untimed = train(corpus, tmp_path / "untimed", replace(TINY, epochs=1))
    assert not untimed.state.out_of_time and untimed.state.step == untimed.steps_per_epoch


def test_validation_scores_a_seeded_sample_of_at_most_max_validation_blocks(
    tmp_path: Path, corpus: list[Conversation]
) -> None:
    updates: list[Update] = []
    config = replace(TINY, epochs=1, eval_batch_size=1, max_validation_blocks=2)
    result = train(corpus, tmp_path / "model", config, progress=updates.append)
    passes = [u for u in updates if u.task == "validating" and u.done == u.total]
    assert [u.total for u in passes] == [2]  # of the more blocks the validation split packs into
    codec = Codec(result.tokenizer)
    every = pack(codec.encode_conversations([c for c in corpus if c.meta["split"] == "validation"]), 64, codec.eos)
    assert len(every) > 2
    sample = every.sample(2, config.seed)
    assert torch.equal(sample.inputs, every.sample(2, config.seed).inputs)  # seeded
    assert validation_loss(result.model, sample, TINY, 1, 0, torch.device("cpu")) == pytest.approx(
        result.state.validation[0]
    )
    assert every.sample(len(every) + 5, 0) is every

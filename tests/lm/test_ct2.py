"""Models exported for CTranslate2 (`convoplan.lm.ct2`): the exported folder loads like a PyTorch one and writes the
same messages (greedy: the same tokens and scores; a padded batch, a shared history, n samples per prompt, a
message cut at max_new_tokens, never an empty one), streams text that adds up, stops on cancel, and the export is
refused in one line where it cannot work. Both of the architectures users train: GPT-2 (the tiny model trained
from scratch) and Llama (SmolLM2's, built tiny here)."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.lm.generate import Cancelled, SamplingConfig, generate_messages
from convoplan.lm.model import INFO_FILE, LanguageModel, load_base, load_model, save_model

from .conftest import synthetic
from .test_lora import tiny_llama

pytest.importorskip("ctranslate2")

runner = CliRunner()
ACTIONS = ("greeting", "ask for sale", "thank")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama model folder (SmolLM2's architecture: grouped-query attention, tied embeddings), untrained."""
    root = tmp_path_factory.mktemp("llama")
    tiny_llama(root / "base", positions=96)
    tokenizer, model = load_base(str(root / "base"), list(ACTIONS))
    return save_model(root / "lm", model, tokenizer, {"vanilla": False})


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(
    request: pytest.FixtureRequest, folder: Path, llama: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LanguageModel, LanguageModel]:
    """(the PyTorch model, its float32 export) of each architecture."""
    from convoplan.lm.model import export_model

    torch.set_num_threads(1)
    source = folder if request.param == "gpt2" else llama
    out = export_model(source, tmp_path_factory.mktemp("ct2") / request.param, "float32")
    return load_model(source), load_model(out)


def prompts(lm: LanguageModel, lengths: tuple[int, ...] = (1, 3, 5), action: str = "thank") -> list[list[int]]:
    conversation = synthetic()[-2]
    return [lm.codec.prompt(conversation.turns[:k], action, 40) for k in lengths]


def test_the_export_writes_the_same_greedy_messages(pair: tuple[LanguageModel, LanguageModel]) -> None:
    torch_lm, exported = pair
    assert (torch_lm.engine, exported.engine) == ("pytorch", "ctranslate2")
    assert exported.context == torch_lm.context and exported.codec.actions == torch_lm.codec.actions
    greedy = SamplingConfig(do_sample=False, max_new_tokens=12)
    batch = prompts(torch_lm)  # three lengths: a padded batch on PyTorch, variable lengths on CTranslate2
    expected = [m for (m,) in generate_messages(torch_lm, batch, greedy)]
    got = [m for (m,) in generate_messages(exported, batch, greedy)]
    assert [m.tokens for m in got] == [m.tokens for m in expected]
    assert [m.text for m in got] == [m.text for m in expected]
    assert [m.finished for m in got] == [m.finished for m in expected]
    # (within float error: GPT-2's tanh GELU and the fused kernels round differently)
    assert [m.score for m in got] == pytest.approx([m.score for m in expected], rel=2e-3)
    with pytest.raises(ValueError, match="CTranslate2"):
        exported.model  # noqa: B018  # an exported folder has no PyTorch weights


def test_a_shared_history_with_k_tags_and_n_samples(pair: tuple[LanguageModel, LanguageModel]) -> None:
    """One history before three action tags (the static prompt), three samples each: every message has text and
    the rows come back per prompt; greedy, each tag's message is the one PyTorch writes. (Sampled messages cannot
    be compared: the engines draw from their own random generators.)"""
    torch_lm, exported = pair
    history = synthetic()[-1].turns[:4]
    tagged = [exported.codec.prompt(history, action, 40) for action in ACTIONS]
    sampling = SamplingConfig(seed=5, max_new_tokens=10)
    first = generate_messages(exported, tagged, sampling, n=3)
    assert [len(group) for group in first] == [3, 3, 3]
    assert all(m.tokens and m.tokens[0] not in (exported.codec.end, exported.codec.eos) for g in first for m in g)
    assert len({m.tokens for g in first for m in g}) > 1  # sampled, not nine copies of one message
    greedy = SamplingConfig(do_sample=False, max_new_tokens=10)
    together = [m.tokens for (m,) in generate_messages(exported, tagged, greedy)]
    assert together == [m.tokens for (m,) in generate_messages(torch_lm, tagged, greedy)]


def test_a_message_cut_at_max_new_tokens_is_unfinished(pair: tuple[LanguageModel, LanguageModel]) -> None:
    torch_lm, exported = pair
    cut = SamplingConfig(do_sample=False, max_new_tokens=2)
    for lm in (torch_lm, exported):
        messages = [m for (m,) in generate_messages(lm, prompts(lm), cut)]
        assert all(len(m.tokens) <= 2 for m in messages)
        assert all(m.finished == (m.tokens[-1] in (lm.codec.end, lm.codec.eos)) for m in messages)
    assert [m.tokens for (m,) in generate_messages(exported, prompts(exported), cut)] == [
        m.tokens for (m,) in generate_messages(torch_lm, prompts(torch_lm), cut)
    ]


def test_streamed_text_adds_up_and_cancel_stops(pair: tuple[LanguageModel, LanguageModel]) -> None:
    _, exported = pair
    pieces: dict[int, str] = {}
    sampling = SamplingConfig(seed=1, max_new_tokens=12)
    batch = prompts(exported, (3, 3))
    messages = generate_messages(
        exported, batch, sampling, n=2, on_text=lambda r, t: pieces.update({r: pieces.get(r, "") + t})
    )
    for row, message in enumerate(m for group in messages for m in group):
        # (the untrained Llama writes stray bytes: text that ends inside a character is held back, as on PyTorch)
        whole = not message.text.endswith("\ufffd")
        assert pieces.get(row, "") == message.text if whole else message.text.startswith(pieces.get(row, ""))
    cancel = threading.Event()
    calls = []

    def leave(row: int, text: str) -> None:
        calls.append(row)
        cancel.set()  # the reader has gone after its first piece of text

    with pytest.raises(Cancelled):
        generate_messages(exported, batch, SamplingConfig(seed=1, max_new_tokens=30), n=2, on_text=leave, cancel=cancel)
    assert len(calls) <= 4  # each row stops at its next token

    def fail(row: int, text: str) -> None:
        raise RuntimeError("the stream broke")

    with pytest.raises(RuntimeError, match="the stream broke"):
        generate_messages(exported, batch, sampling, on_text=fail)


def test_replicas_write_concurrent_batches_as_one_writes_them(llama: Path, tmp_path: Path) -> None:
    """serve's model workers each get a replica: two threads generating at once write what one writes alone."""
    from convoplan.lm.model import export_model

    exported = load_model(export_model(llama, tmp_path / "ct2", "float32"), replicas=2)
    assert exported.generator.num_generators == 2
    batch = prompts(exported)
    alone = [
        m.tokens for (m,) in generate_messages(exported, batch, SamplingConfig(do_sample=False, max_new_tokens=12))
    ]
    together: list[list[tuple[int, ...]]] = [[], []]
    start = threading.Barrier(2)

    def write(slot: int) -> None:
        start.wait()
        together[slot] = [
            m.tokens for (m,) in generate_messages(exported, batch, SamplingConfig(do_sample=False, max_new_tokens=12))
        ]

    threads = [threading.Thread(target=write, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert together == [alone, alone]


def test_the_exported_folder_keeps_the_tokenizer_info_and_exemplars(folder: Path, tmp_path: Path) -> None:
    from convoplan.lm.model import export_model
    from convoplan.retrieval.exemplars import EXEMPLARS

    source = tmp_path / "model"
    import shutil

    shutil.copytree(folder, source)
    (source / EXEMPLARS).mkdir()
    (source / EXEMPLARS / "marker.txt").write_text("the index")
    out = export_model(source, tmp_path / "exported", "int8_float32")
    info = json.loads((out / INFO_FILE).read_text())
    original = json.loads((source / INFO_FILE).read_text())
    assert info["engine"] == {
        "name": "ctranslate2",
        "quantization": "int8_float32",
        "context": 64,
        "source": str(source),
    }
    assert {k: v for k, v in info.items() if k != "engine"} == original
    assert (out / EXEMPLARS / "marker.txt").read_text() == "the index"
    assert (out / "model.bin").is_file() and (out / "tokenizer.json").is_file()
    int8 = load_model(out)
    greedy = SamplingConfig(do_sample=False, max_new_tokens=8)
    assert all(m.tokens for (m,) in generate_messages(int8, prompts(int8), greedy))
    with pytest.raises(ValueError, match="already exported"):
        export_model(out, tmp_path / "again")
    assert not (tmp_path / "again").exists()


@pytest.mark.bad_input("29 exported models")
def test_the_cli_exports_and_refuses_bad_input_in_one_line(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "ct2"
    result = runner.invoke(app, ["lm", "export", str(folder), "--out", str(out), "--quantization", "float32"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (ctranslate2, float32," in result.stdout
    assert load_model(out).engine == "ctranslate2"

    result = runner.invoke(app, ["lm", "export", str(folder), "--out", str(tmp_path / "x"), "--format", "onnx"])
    assert (
        result.exit_code == 2 and result.stderr.strip() == "error: --format onnx: unknown engine; expected ctranslate2"
    )
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    result = runner.invoke(app, ["lm", "export", str(not_a_model), "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "not a convoplan language model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "y").exists()


@pytest.mark.bad_input("29 exported models")
def test_a_corrupt_export_and_a_missing_engine_are_one_line_errors(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convoplan.lm.model import export_model

    out = export_model(folder, tmp_path / "ct2", "float32")
    (out / "model.bin").write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"cannot load the CTranslate2 model"):
        load_model(out)
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # as if it were not installed
    with pytest.raises(ValueError, match=r"CTranslate2 is not installed: pip install"):
        load_model(out)
    result = runner.invoke(app, ["lm", "export", str(folder), "--out", str(tmp_path / "z")])
    assert result.exit_code == 2 and "CTranslate2 is not installed" in result.stderr

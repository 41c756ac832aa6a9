"""Grounded training and inference: one sample per agent message whose prompt is exactly what inference builds, the
loss on the message alone, exemplars never from the message's own conversation, a tiny model that learns, a model
folder that records its grounding and refuses to run without its indexes, and the commands' --knowledge."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

from convoplan.actions.protocols import ActionScore
from convoplan.cli.lm import lm_app, suggest_command
from convoplan.embed import SentenceEmbedder
from convoplan.lm.data import IGNORE
from convoplan.lm.evaluate import ALL, EvalConfig, LMWriter, evaluate_lm, targets
from convoplan.lm.generate import SamplingConfig
from convoplan.lm.grounding import Grounder, GroundingConfig, Prompt, grounding_config
from convoplan.lm.model import NOTE_MEANINGS, load_base, load_model, new_model
from convoplan.lm.provider import LMProvider
from convoplan.lm.suggest import History, SuggestConfig, Suggester
from convoplan.lm.tokenizer import Codec, train_tokenizer
from convoplan.lm.train import grounded_samples, train, training_blocks
from convoplan.retrieval.exemplars import EXEMPLARS, ExemplarIndex, load_exemplars
from convoplan.retrieval.knowledge import KnowledgeIndex, Passage, write_knowledge
from convoplan.schema import Conversation, Event, write_jsonl

from .conftest import TINY, WORDING, synthetic
from .test_evaluate import KeywordLabeller, StubNBA
from .test_lora import ACTIONS, LORA, base  # noqa: F401 (base: the tiny pretrained Llama fixture)
from .test_train import Interrupt, assert_same_weights, interrupt_at

PASSAGES = [
    Passage(id="charity", text="Save the Children helps children in need.", source="charity guide"),
    Passage(id="donate", text="A donation of one dollar buys a meal.", source="charity guide"),
    Passage(id="thanks", text="Thank donors warmly for their help.", source="style guide"),
]
GROUNDED = GroundingConfig(events=True, knowledge=2, method="bm25", exemplars=1, budget=24)


def with_events(conversations: list[Conversation]) -> list[Conversation]:
    """The synthetic corpus with a STAR-like lookup before the third message of each conversation."""
    event = Event(kind="return_item", position=2, data={"Item": {"Charity": "Save the Children"}, "UnixTime": 1})
    return [replace(c, events=[event]) for c in conversations]


@pytest.fixture(scope="module")
def knowledge() -> KnowledgeIndex:
    return KnowledgeIndex(PASSAGES, method="bm25")


@dataclass
class Grounded:
    folder: Path
    corpus: list[Conversation]
    losses: list[float]


@pytest.fixture(scope="module")
def grounded(
    tmp_path_factory: pytest.TempPathFactory, knowledge: KnowledgeIndex, embedder: SentenceEmbedder
) -> Grounded:
    """A tiny model trained with events, two passages and one exemplar in every prompt."""
    torch.set_num_threads(1)
    corpus = with_events(synthetic())
    folder = tmp_path_factory.mktemp("grounded") / "model"
    config = replace(TINY, epochs=4, checkpoint_every=0, grounding=GROUNDED)
    result = train(corpus, folder, config, knowledge=knowledge, embedder=embedder)
    return Grounded(folder, corpus, result.state.losses)


def test_grounded_samples_learn_the_message_alone_and_never_copy_their_own_conversation(
    knowledge: KnowledgeIndex, embedder: SentenceEmbedder
) -> None:
    corpus = with_events(synthetic())
    train_set = [c for c in corpus if c.meta["split"] == "train"]
    codec = Codec(train_tokenizer([" " + t.text for c in train_set for t in c.turns], 300, list(WORDING), notes=True))
    exemplars = ExemplarIndex.build(corpus, embedder)
    grounder = Grounder(codec, GROUNDED, knowledge=knowledge, exemplars=exemplars, embedder=embedder)
    blocks = grounded_samples(codec, grounder, train_set, 64)
    places = [(c, i) for c in train_set for i, t in enumerate(c.turns) if t.speaker == "agent"]
    assert len(blocks) == len(places) and blocks.lengths is not None
    note_tags = set(codec.notes.values())
    grounded = 0
    for row, (conversation, index) in enumerate(places):
        length = int(blocks.lengths[row])
        assert length <= 64 and (blocks.targets[row, length:] == IGNORE).all()
        targets = blocks.targets[row][blocks.targets[row] != IGNORE].tolist()
        message = [*codec.encode_texts([conversation.turns[index].text])[0], codec.end]
        assert targets == message  # the loss is on the message and its end: not the history, nor the grounding
        assert not note_tags & set(targets)
        grounded += bool(note_tags & set(blocks.inputs[row, :length].tolist()))
    assert grounded > 0.8 * len(places)  # (in 64 tokens, a long message leaves a prompt no room for a note)
    # exemplars of a message are never from its own conversation (the answer itself, or its neighbours)
    roomy = Grounder(codec, replace(GROUNDED, exemplars=3, budget=300), knowledge=knowledge, exemplars=exemplars)
    histories = [replace(c, turns=c.turns[:i]) for c, i in places]
    actions = [c.turns[i].action for c, i in places]
    prompts = roomy.prompts(histories, actions, 400, [c.id for c, _ in places])
    assert all(len(p.exemplars) == 3 for p in prompts)
    for (conversation, _), prompt in zip(places, prompts, strict=True):
        assert all(source.rpartition("#")[0] != conversation.id for source in prompt.exemplars)
    # without the exclusion some would be: the index holds these very messages
    unexcluded = roomy.prompts(histories, actions, 400)
    assert any(s.rpartition("#")[0] == c.id for (c, _), p in zip(places, unexcluded, strict=True) for s in p.exemplars)


def test_a_tiny_grounded_model_learns(grounded: Grounded) -> None:
    losses = grounded.losses
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, losses
    lm = load_model(grounded.folder)
    torch.manual_seed(TINY.seed)
    start = new_model(TINY.model, lm.tokenizer)  # where training began: the same seed, the same tokenizer
    trained = dict(lm.model.named_parameters())
    assert all(not torch.equal(p, trained[name]) for name, p in start.named_parameters())
    # only the messages are learnt: a batch of 4 samples of up to 64 tokens holds far fewer targets than 4 x 64
    training = lm.info["training"]
    assert training["tokens_trained"] < training["steps"] * 4 * 64 / 3
    assert training["best_validation_loss"] < losses[0]


def test_events_only_keep_the_packed_stream_without_targets_on_events(knowledge: KnowledgeIndex) -> None:
    corpus = with_events(synthetic())[:6]
    codec = Codec(train_tokenizer([" " + t.text for c in corpus for t in c.turns], 300, list(WORDING), notes=True))
    grounder = Grounder(codec, GroundingConfig(events=True))
    blocks = training_blocks(codec, corpus, 32, grounder)
    plain = training_blocks(codec, corpus, 32)
    event = codec.notes["event"]
    assert blocks.lengths is None and event in blocks.inputs.flatten().tolist()
    assert event not in blocks.targets.flatten().tolist()
    assert blocks.tokens() == plain.tokens()  # the same message tokens learnt: the events are read, not learnt


def test_the_folder_records_its_grounding_and_training_builds_what_inference_builds(
    grounded: Grounded, knowledge: KnowledgeIndex, embedder: SentenceEmbedder
) -> None:
    assert grounded.losses[-1] < grounded.losses[0]
    lm = load_model(grounded.folder)
    assert grounding_config(lm.info) == GROUNDED and set(lm.codec.notes) == {"event", "knowledge", "example"}
    index = load_exemplars(grounded.folder / EXEMPLARS)
    assert len(index) == len(ExemplarIndex.build(grounded.corpus, embedder))
    # A validation conversation is in no index: inference's prompt for each of its messages, with room to write the
    # message, is token for token the training sample's prompt.
    validation = [c for c in grounded.corpus if c.meta["split"] == "validation"]
    grounder = Grounder(lm.codec, GROUNDED, knowledge=knowledge, exemplars=index, embedder=embedder)
    blocks = grounded_samples(lm.codec, grounder, validation, lm.context)
    places = [(c, i) for c in validation for i, t in enumerate(c.turns) if t.speaker == "agent"]
    for row, (conversation, index_) in enumerate(places):
        targets = blocks.targets[row] != IGNORE
        prompt_length = int(targets.nonzero()[0, 0]) + 1
        written = int(targets.sum())
        suggester = Suggester(
            lm,
            config=SuggestConfig(sampling=SamplingConfig(max_new_tokens=written)),
            knowledge=knowledge,
            exemplars=index,
            embedder=embedder,
        )
        history = replace(
            conversation,
            turns=conversation.turns[:index_],
            events=[e for e in conversation.events if e.position <= index_],
        )
        (prompt,) = suggester.prompts(history, [conversation.turns[index_].action])
        assert prompt.ids == blocks.inputs[row, :prompt_length].tolist(), (conversation.id, index_)


def test_a_grounded_folder_refuses_to_run_without_its_indexes(
    grounded: Grounded, knowledge: KnowledgeIndex, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"model: this model reads knowledge: give --knowledge FILE"):
        Suggester.load(grounded.folder)
    lm = load_model(grounded.folder)
    with pytest.raises(ValueError, match="this model reads knowledge"):
        LMWriter(lm, SamplingConfig(do_sample=False))
    with pytest.raises(ValueError, match="this model reads knowledge"):
        LMProvider(lm)
    bare = tmp_path / "bare"
    shutil.copytree(grounded.folder, bare)
    shutil.rmtree(bare / EXEMPLARS)
    with pytest.raises(ValueError, match=r"no exemplar index \(build one with `convoplan lm index"):
        Suggester.load(bare, knowledge=knowledge)
    suggester = Suggester.load(grounded.folder, knowledge=knowledge, config=SuggestConfig(n=2))
    history = with_events(synthetic())[-1]
    suggestions = suggester.suggest(replace(history, turns=history.turns[:3]), "thank")
    assert len(suggestions) == 2 and all(s.action == "thank" for s in suggestions)


runner = CliRunner()


def test_the_commands_read_a_knowledge_file_and_say_what_is_wrong_with_it(grounded: Grounded, tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    write_jsonl(data, grounded.corpus)
    kb = tmp_path / "kb.jsonl"
    write_knowledge(kb, [*PASSAGES, Passage(id="long", text="word " * 600, source="a long one")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(kb.read_text() + '{"id": "x", "text": "no source"}\n')
    tiny = [f"{k}={v}" for k, v in (("model.n_layer", 1), ("model.n_embd", 16), ("model.n_head", 2))]
    settings = [*tiny, "model.n_positions=48", "vocab_size=280", "epochs=1", "device=cpu"]
    settings += ["grounding.method=bm25", "grounding.budget=12", "grounding.events=true"]
    options = ["--from-scratch", *(argument for item in settings for argument in ("--set", item))]
    out = tmp_path / "lm"

    result = runner.invoke(lm_app, ["train", str(data), "--out", str(out), *options, "--set", "grounding.knowledge=2"])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        "error: grounding.knowledge = 2: the prompts read a knowledge file, give --knowledge FILE"
    ]
    result = runner.invoke(lm_app, ["train", str(data), "--out", str(out), *options, "--knowledge", str(bad)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: --knowledge {bad}:5: ") and "source" in result.stderr

    result = runner.invoke(
        lm_app, ["train", str(data), "--out", str(out), *options, "--knowledge", str(bad), "--skip-invalid"]
    )
    assert result.exit_code == 0, result.output
    assert f"skipped {bad}:5" in result.stderr and f"note: {bad}:4: text: 3,000 characters, cut" in result.stderr
    assert "every prompt reads the 3 passages nearest its last turns" in result.stderr
    info = json.loads((out / "convoplan-lm.json").read_text())
    assert info["grounding"]["knowledge"] == 3 and info["grounding"]["events"] is True

    app = typer.Typer()
    app.command()(suggest_command)
    arguments = ["--model", str(out), "--conversation", str(data), "--turns", "3", "--action", "thank", "--n", "1"]
    arguments += ["--set", "sampling.max_new_tokens=8", "--seed", "0"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: {out}: this model reads knowledge: give --knowledge FILE " + (
        "(a knowledge file, docs/format.md)"
    )
    result = runner.invoke(app, [*arguments, "--knowledge", str(kb)])
    assert result.exit_code == 0, result.output
    assert "grounding: " in result.stderr and "in the prompt (" in result.stderr
    assert result.stdout.splitlines()[0] == "action: thank (given)"


def test_evaluation_writes_from_grounded_prompts_and_says_what_they_cut(
    grounded: Grounded, knowledge: KnowledgeIndex, embedder: SentenceEmbedder
) -> None:
    lm = load_model(grounded.folder)
    index = load_exemplars(grounded.folder / EXEMPLARS)
    config = EvalConfig(sampling=SamplingConfig(do_sample=False, max_new_tokens=8), max_messages=6)
    found = targets(grounded.corpus, config)
    # a target's history carries the events before its message (the lookup sits at position 2)
    assert [len(t.history.events) for t in found] == [int(len(t.history.turns) >= 2) for t in found]
    nba = StubNBA([[ActionScore("thank", 0.8)]])
    with pytest.raises(ValueError, match="the action-directed LM: this model reads knowledge"):
        evaluate_lm(grounded.corpus, lm, lm, KeywordLabeller(), nba, config, exemplars=index, embedder=embedder)
    report = evaluate_lm(
        grounded.corpus, lm, lm, KeywordLabeller(), nba, config, exemplars=index, embedder=embedder, knowledge=knowledge
    )
    assert all(report.scores[s][ALL].messages == 6 for s in report.systems)
    read = [note for note in report.notes if "LM's prompts read events, 2 passages, 1 exemplars" in note]
    assert len(read) == 2 and all("prompts left something out" in note for note in read)


def test_the_server_serves_a_grounded_model_with_the_manifest_s_knowledge(grounded: Grounded, tmp_path: Path) -> None:
    from convoplan.serve.artifacts import Arm, Artifacts, Manifest, write_manifest

    shutil.copytree(grounded.folder, tmp_path / "lm")
    write_knowledge(tmp_path / "kb.jsonl", PASSAGES)
    write_manifest(tmp_path, Manifest(arms={"h": Arm("heuristic")}, lm="lm"))
    with pytest.raises(ValueError, match=r"serve.json: lm: this model reads knowledge: give --knowledge FILE"):
        Artifacts.load(tmp_path)
    write_manifest(tmp_path, Manifest(arms={"h": Arm("heuristic")}, lm="lm", knowledge="kb.jsonl", lm_provider=True))
    artifacts = Artifacts.load(tmp_path)
    assert artifacts.suggester is not None and artifacts.suggester.grounder.knowledge is not None
    assert artifacts.suggester.grounder.exemplars is not None  # the folder's own exemplars/, for its prompts
    provider = artifacts.extra_providers[0]
    assert isinstance(provider, LMProvider) and provider.grounder.config == GROUNDED
    history = with_events(synthetic())[-1]
    (suggestion,) = artifacts.suggester.suggest(replace(history, turns=history.turns[:3]), "thank", n=1)
    assert suggestion.action == "thank"


# --- a pretrained base ---------------------------------------------------------------------------------------------


def test_the_notes_tags_start_at_their_meaning_and_a_grounded_lora_run_resumes(
    base: Path,  # noqa: F811 (the fixture imported from test_lora)
    tmp_path: Path,
    knowledge: KnowledgeIndex,
    embedder: SentenceEmbedder,
) -> None:
    tokenizer, model = load_base(str(base), ACTIONS, notes=True)
    table = model.get_input_embeddings().weight
    for tag, meaning in NOTE_MEANINGS.items():
        words = tokenizer(meaning, add_special_tokens=False)["input_ids"]
        assert torch.allclose(table[tokenizer.convert_tokens_to_ids(tag)], table[words].mean(0)), tag
    assert set(Codec(tokenizer).notes.values()) <= set(Codec(tokenizer).tag_ids())  # LoRA trains their rows

    corpus = with_events(synthetic())
    config = replace(LORA, checkpoint_every=3, grounding=GROUNDED)
    grounding = {"knowledge": knowledge, "embedder": embedder}
    train(corpus, tmp_path / "whole", config, base_model=str(base), **grounding)
    with pytest.raises(Interrupt):
        train(corpus, tmp_path / "cut", config, base_model=str(base), progress=interrupt_at(5), **grounding)
    train(corpus, tmp_path / "cut", resume=True, **grounding)  # the base rebuilt with the notes' tags
    assert_same_weights(tmp_path / "whole", tmp_path / "cut")
    assert grounding_config(load_model(tmp_path / "cut").info) == GROUNDED


def test_max_rows_draws_a_seeded_sample_of_the_messages_before_their_prompts_are_built(
    knowledge: KnowledgeIndex,
) -> None:
    corpus = with_events(synthetic())[:6]
    codec = Codec(train_tokenizer([" " + t.text for c in corpus for t in c.turns], 300, list(WORDING), notes=True))
    built: list[int] = []

    class Counting(Grounder):
        def prompts(self, histories: Sequence[History], *args: Any, **kwargs: Any) -> list[Prompt]:
            built.append(len(histories))
            return super().prompts(histories, *args, **kwargs)

    grounder = Counting(codec, GroundingConfig(knowledge=1), knowledge=knowledge)
    every = training_blocks(codec, corpus, 64, grounder)
    some = training_blocks(codec, corpus, 64, grounder, max_rows=3, seed=1)
    assert built == [len(every), 3] and len(every) > 3  # prompts were built for the 3 only
    rows = {tuple(row.tolist()) for row in every.inputs[:, :64]}
    assert len(some) == 3 and all(tuple(row.tolist()) in rows for row in some.inputs)  # the same samples
    again = training_blocks(codec, corpus, 64, grounder, max_rows=3, seed=1)
    assert torch.equal(again.inputs, some.inputs)  # seeded
    packed = training_blocks(codec, corpus, 16)
    assert len(training_blocks(codec, corpus, 16, max_rows=2)) == 2 < len(packed)

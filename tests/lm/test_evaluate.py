"""Evaluation: the messages it writes again, BLEU and adherence against hand-computed values, the predicted-action
fallback, batched writing in any batch size, and a whole run with tiny models written as md/json/png."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from convoplan.actions.protocols import ActionScore, Prediction
from convoplan.embed import SentenceEmbedder
from convoplan.lm.evaluate import (
    ALL,
    FREQUENT,
    NEAREST,
    PREDICTED,
    TRUE,
    VANILLA,
    EvalConfig,
    GroundingCheck,
    LMEvalReport,
    LMWriter,
    Score,
    Target,
    evaluate_lm,
    predicted_actions,
    score_systems,
    targets,
)
from convoplan.lm.generate import SamplingConfig
from convoplan.lm.model import LanguageModel, new_model
from convoplan.lm.tokenizer import Codec, train_tokenizer
from convoplan.report import write_report
from convoplan.retrieval.exemplars import ExemplarIndex
from convoplan.retrieval.knowledge import KnowledgeIndex, Passage
from convoplan.schema import Conversation, Event, Turn

from .conftest import TINY, synthetic

SYSTEMS = (VANILLA, TRUE, PREDICTED)
"""What evaluate_lm compares, in its order."""


class KeywordLabeller:
    """Labels the agent messages by a keyword: thank -> thank, hello -> greeting, else none."""

    version = "keywords@1"

    def label(self, conversations: Sequence[Conversation]) -> list[list[Prediction | None]]:
        def verdict(text: str) -> Prediction:
            action = "thank" if "thank" in text.lower() else ("greeting" if "hello" in text.lower() else None)
            return Prediction(action, 1.0, action or "thank")

        return [[verdict(t.text) if t.speaker == "agent" else None for t in c.turns] for c in conversations]


class StubNBA:
    def __init__(self, rankings: list[list[ActionScore]]) -> None:
        self.rankings = rankings

    def next_actions(self, histories: Sequence[Conversation]) -> list[list[ActionScore]]:
        return [self.rankings[i % len(self.rankings)] for i in range(len(histories))]


def target(reference: str, action: str) -> Target:
    history = Conversation(id="h", domain="test", turns=[Turn(speaker="user", text="hi there")])
    return Target(history, reference, action)


def test_bleu_and_adherence_match_hand_computed_values() -> None:
    found = [
        target("hello my good friend", "greeting"),
        target("thank you very much", "thank"),
        target("thank you so kindly", "thank"),
    ]
    written = {
        VANILLA: ["red green blue yellow", "one two three four", "five six seven eight"],  # nothing in common
        TRUE: ["hello my good friend", "thank you very much", "thank you so kindly"],  # the references
        # One message right, one with no n-gram in common: per action 100 and 0; overall, every n-gram order has
        # half of its n-grams matched (4/8, 3/6, 2/4, 1/2) with equal lengths, so BLEU = 100 * 0.5 = 50.
        PREDICTED: ["hello my good friend", "alpha beta gamma delta", "thank you so kindly"],
    }
    true: list[str | None] = [t.action for t in found]
    intended = {VANILLA: true, TRUE: true, PREDICTED: ["greeting", "thank", None]}
    report = score_systems(found, written, intended, KeywordLabeller())

    assert report.actions == ("thank", "greeting")  # the most frequent first
    assert report.scores[VANILLA][ALL].bleu == pytest.approx(0.0)
    assert report.scores[TRUE][ALL].bleu == pytest.approx(100.0)
    assert report.scores[TRUE]["thank"].bleu == pytest.approx(100.0)
    assert report.scores[VANILLA][ALL].adherence == 0.0  # the keywords are missing
    assert report.scores[TRUE][ALL].adherence == 1.0 and report.scores[TRUE]["thank"].messages == 2

    predicted = report.scores[PREDICTED]
    assert predicted["greeting"].bleu == pytest.approx(100.0) and predicted["greeting"].adherence == 1.0
    # "thank": one reference met exactly, one not at all (4-word sentences): BLEU 50; adherence: the second
    # message's intended action is None, which never counts as a match, and the first one has no keyword.
    assert predicted["thank"].bleu == pytest.approx(50.0) and predicted["thank"].adherence == 0.0
    assert predicted[ALL].adherence == pytest.approx(1 / 3) and predicted[ALL].messages == 3

    table = report.markdown()
    assert "| true action | 3 | 100.00 | 100.0% |" in table and "| thank | 2 | 0.00 | 100.00 | 50.00 |" in table


def test_targets_take_labelled_agent_messages_of_the_split() -> None:
    conversations = synthetic()
    test = [c for c in conversations if c.meta["split"] == "test"]
    expected = [(c.id, i) for c in test for i, t in enumerate(c.turns) if t.speaker == "agent" and t.action]
    found = targets(conversations, EvalConfig())
    assert [(t.history.id, len(t.history.turns)) for t in found] == [(f"{c}#{i}", i) for c, i in expected]
    first = next(c for c in test)
    index = expected[0][1]
    assert found[0].reference == first.turns[index].text and found[0].history.turns == first.turns[:index]

    # A labeller's label is not the truth: left out unless asked for.
    guessed = [
        Conversation(
            id="g",
            domain="test",
            turns=[Turn(speaker="agent", text="Hi!", action="greeting", action_source="labeller@1")],
            meta={"split": "test"},
        )
    ]
    assert targets(guessed, EvalConfig()) == []
    assert len(targets(guessed, EvalConfig(human_labels_only=False))) == 1

    sample = targets(conversations, EvalConfig(max_messages=5, seed=3))
    assert len(sample) == 5 and all(t in found for t in sample)
    assert sample == targets(conversations, EvalConfig(max_messages=5, seed=3))


def test_predicted_actions_fall_back_like_suggestions() -> None:
    histories = [target("x", "thank").history] * 4
    nba = StubNBA(
        [[ActionScore("thank", 0.9)], [ActionScore("thank", 0.1)], [ActionScore("dance", 0.9)], []],
    )
    intended, directing = predicted_actions(nba, histories, 0.5, {"thank": 1, "greeting": 2})
    assert intended == ["thank", "thank", "dance", None]
    assert directing == ["thank", None, None, None]


@pytest.fixture(scope="module")
def models() -> tuple[LanguageModel, LanguageModel]:
    """Untrained tiny models (the action-directed one and the vanilla one) with tokenizers of the corpus."""
    torch.set_num_threads(1)
    train = [c for c in synthetic() if c.meta["split"] == "train"]
    texts = [" " + t.text for c in train for t in c.turns]
    made = []
    for vanilla in (False, True):
        tokenizer = train_tokenizer(texts, TINY.vocab_size, [] if vanilla else ["greeting", "ask for sale", "thank"])
        torch.manual_seed(0)
        model = new_model(TINY.model, tokenizer).eval()  # type: ignore[no-untyped-call]
        made.append(LanguageModel(model, tokenizer, Codec(tokenizer, vanilla=vanilla), {"vanilla": vanilla}))
    return made[0], made[1]


def test_writing_in_batches_keeps_the_order(models: tuple[LanguageModel, LanguageModel]) -> None:
    lm = models[0]
    found = targets(synthetic(), EvalConfig())[:7]
    histories, actions = [t.history for t in found], [t.action for t in found]
    greedy = SamplingConfig(do_sample=False, max_new_tokens=6)
    one_by_one = LMWriter(lm, greedy, batch_size=1).write(histories, actions)
    assert LMWriter(lm, greedy, batch_size=3).write(histories, actions) == one_by_one
    # An action without a tag is written without one (the same text as no action at all).
    assert LMWriter(lm, greedy).write(histories[:1], ["dance"]) == LMWriter(lm, greedy).write(histories[:1], [None])


def test_evaluate_writes_the_report(models: tuple[LanguageModel, LanguageModel], tmp_path: Path) -> None:
    action_lm, vanilla_lm = models
    nba = StubNBA([[ActionScore("thank", 0.8)], [ActionScore("greeting", 0.2)]])
    config = EvalConfig(sampling=SamplingConfig(do_sample=False, max_new_tokens=8), threshold=0.5)
    report = evaluate_lm(synthetic(), action_lm, vanilla_lm, KeywordLabeller(), nba, config, title="tiny")
    assert report.systems == SYSTEMS and set(report.actions) <= {"greeting", "ask for sale", "thank"}
    messages = len(targets(synthetic(), config))
    assert all(report.scores[s][ALL].messages == messages for s in SYSTEMS)
    assert any("fell back to no action" in note for note in report.notes)

    paths = write_report(report, tmp_path / "report", extra={"messages.jsonl": report.messages_jsonl()})
    assert json.loads(paths["json"].read_text())["scores"][TRUE][ALL]["messages"] == messages
    assert paths["png"].read_bytes().startswith(b"\x89PNG") and paths["md"].read_text().startswith("## tiny")
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "messages.jsonl",
        "report.json",
        "report.md",
        "report.png",
    ]
    first = json.loads(paths["messages.jsonl"].read_text().splitlines()[0])
    assert set(first) == {"id", "action", "reference", *SYSTEMS} and first[TRUE]["intended"] == first["action"]


def test_wins_count_the_actions_where_a_system_has_the_higher_bleu() -> None:
    scores = {
        "vanilla": {"a": Score(10, 5.0, 0.1), "b": Score(2, 9.0, 0.1), "c": Score(6, 1.0, 0.1)},
        "true action": {"a": Score(10, 7.0, 0.9), "b": Score(2, 3.0, 0.9), "c": Score(6, 1.0, 0.9)},
    }
    report = LMEvalReport("t", ("vanilla", "true action"), ("a", "c", "b"), scores)
    assert report.wins("true action", "vanilla") == (1, 3)  # a wins, c ties, b loses
    assert report.wins("true action", "vanilla", min_messages=5) == (1, 2)


def test_the_retrieval_baselines_are_scored_beside_the_lms(
    models: tuple[LanguageModel, LanguageModel], embedder: SentenceEmbedder
) -> None:
    action_lm, vanilla_lm = models
    conversations = synthetic()
    index = ExemplarIndex.build(conversations, embedder)
    nba = StubNBA([[ActionScore("thank", 0.8)]])
    config = EvalConfig(sampling=SamplingConfig(do_sample=False, max_new_tokens=8))
    report = evaluate_lm(conversations, action_lm, vanilla_lm, KeywordLabeller(), nba, config, exemplars=index)
    assert report.systems == (*SYSTEMS, FREQUENT, NEAREST)
    found = targets(conversations, config)
    for message, target in zip(report.messages, found, strict=True):  # each a train message of the true action
        for baseline in (FREQUENT, NEAREST):
            text = message[baseline]["text"]
            assert message[baseline]["intended"] == target.action
            assert any(index.texts[r] == text and index.actions[r] == target.action for r in range(len(index)))
        assert message[FREQUENT]["text"] == index.most_frequent(target.action)
    assert all(report.scores[s][ALL].messages == len(found) for s in report.systems)
    text = report.markdown()
    assert f"{TRUE} over {NEAREST}, BLEU per action" in text and f"{PREDICTED} over {VANILLA}" in text
    assert any("baselines told the true action" in note for note in report.notes)


def test_the_grounding_check_counts_supported_claims_and_slots_per_system() -> None:
    passages = [
        Passage("lion/fact", "Lions sleep up to 20 hours a day.", "guide", "lion"),
        Passage("lion/weight", "A lion weighs 120 to 250 kilograms.", "guide", "lion", {"weight_kg": (120.0, 250.0)}),
        Passage("tiger/fact", "Tigers like to swim in rivers.", "guide", "tiger"),
    ]
    knowledge = KnowledgeIndex(passages, "bm25")
    about_lions = Conversation(id="h", domain="animals", turns=[Turn(speaker="user", text="tell me about lions")])
    found = [Target(about_lions, "Lions sleep up to 20 hours a day.", "fact"), Target(about_lions, "Hi!", "ack")]
    written = {
        TRUE: ["Lions sleep up to 20 hours a day.", "Hello there!"],  # a quote; a greeting claims nothing
        # another animal's fact (true, but not about the animal in focus), a weight outside the range
        VANILLA: ["Tigers like to swim in rivers.", "A lion weighs 900 kilograms."],
    }
    intended: dict[str, Sequence[str | None]] = {TRUE: ["fact", "ack"], VANILLA: ["fact", "ack"]}
    report = score_systems(found, written, intended, KeywordLabeller(), knowledge=knowledge, vocabulary={})
    assert report.grounding[TRUE][ALL] == GroundingCheck(claiming=1, supported=1)
    assert report.grounding[VANILLA][ALL] == GroundingCheck(claiming=2, supported=0)
    assert report.grounding[VANILLA]["ack"].claiming == 1
    assert report.messages[0][VANILLA]["grounding"]["claiming"] == 1
    table = report.markdown()
    assert "| all | 100.0% of 1 | 0.0% of 2 |" in table
    assert report.to_dict()["grounding"][TRUE][ALL]["supported_share"] == 1.0
    assert "slot precision" not in table  # no item was returned


def test_slot_precision_and_recall_are_summed_over_messages_with_item_values() -> None:
    def after(item: dict[str, object]) -> Conversation:
        event = Event(kind="return_item", position=1, data={"APIName": "hotel", "Item": item})
        return Conversation(id="h", domain="hotel", turns=[Turn(speaker="user", text="a hotel?")], events=[event])

    found = [
        Target(after({"Name": "Hyatt", "Cost": "Cheap"}), "The Hyatt is cheap.", "inform"),
        Target(after({"Name": "Hilton", "Cost": "Expensive"}), "Hilton it is, expensive.", "inform"),
        Target(after({"Name": "Hilton"}), "Anything else?", "ask"),  # the reference states no value: not counted
    ]
    vocabulary = {"hotel": frozenset({"hyatt", "hilton", "cheap", "expensive"})}
    written = {TRUE: ["The Hyatt is cheap.", "The Hyatt is expensive.", "The Hilton!"]}
    report = score_systems(found, written, {TRUE: ["inform"] * 3}, KeywordLabeller(), vocabulary=vocabulary)
    check = report.grounding[TRUE][ALL]
    assert check.slot_messages == 2 and check.claiming == 0
    # values stated 2 + 2 (the third message is not counted), the item's own 2 + 1; recalled 2 + 1 of 2 + 2
    assert (check.slot_precision, check.slot_recall) == (pytest.approx(3 / 4), pytest.approx(3 / 4))
    assert "| true action | 2 | 75.0% (3/4) | 75.0% |" in report.markdown()

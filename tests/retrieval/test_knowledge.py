"""Knowledge files (`convoplan.retrieval.knowledge`): the reader on good and awkward files (one-line errors naming
file:line, skippable; a passage over the limit cut with a note), and the search on a tiny hand-made knowledge base,
by BM25 and by embeddings, with and without the entity in focus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from convoplan.embed import SentenceEmbedder
from convoplan.retrieval.knowledge import (
    MAX_PASSAGE_CHARS,
    KnowledgeIndex,
    Method,
    Passage,
    query_from_turns,
    read_knowledge,
    write_knowledge,
)
from convoplan.schema import FormatError, InvalidLine, Turn

GOOD = {"id": "a", "text": "An elephant weighs 2,700 to 6,000 kilograms.", "source": "the guide"}


def knowledge_file(tmp_path: Path, *records: dict[str, Any] | str) -> Path:
    """A knowledge file of these lines (a dict as JSON, a string as it is)."""
    path = tmp_path / "kb.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def test_a_file_written_reads_back_the_same(tmp_path: Path) -> None:
    passages = [
        Passage("elephant/weight", GOOD["text"], "the guide", "elephant", {"weight_kg": (2700.0, 6000.0)}),
        Passage(
            "elephant/diet",
            "An elephant eats plants.",
            "https://example.org/elephants",
            "elephant",
            {"diet": "herbivore"},
            aliases=("elephants", "jumbo"),
        ),
        Passage("note", "Opening hours are nine to five.", "the shop's API", fields={"opens": 9.0}),
        Passage("long", "Cut here…", "a document", cut=True),
    ]
    path = tmp_path / "kb.jsonl"
    assert write_knowledge(path, passages) == 4
    assert read_knowledge(path) == passages
    assert '"weight_kg": [2700, 6000]' in path.read_text()  # whole numbers as a person writes them


def test_an_empty_file_and_blank_lines_hold_no_passages(tmp_path: Path) -> None:
    assert read_knowledge(knowledge_file(tmp_path)) == []
    assert read_knowledge(knowledge_file(tmp_path, "", "   ", GOOD, "")) == [Passage("a", GOOD["text"], "the guide")]


def test_a_byte_order_mark_at_the_start_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "kb.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    assert [p.id for p in read_knowledge(path)] == ["a"]


@pytest.mark.bad_input("28.3 knowledge files")
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"text": None}, "text: required field is missing"),
        ({"text": "  "}, "text: expected non-empty text, got '  '"),
        ({"source": None}, "source: required field is missing"),
        ({"entitiy": "elephant"}, "entitiy: unknown field"),
        ({"id": 7}, "id: input should be a valid string, got 7"),
        ({"fields": {"weight_kg": [5, 1]}}, "fields.weight_kg: a range must run from low to high, got [5, 1]"),
        (
            {"fields": {"weight_kg": [1, 2, 3]}},
            "fields.weight_kg: expected a number, a non-empty text or a [low, high] range of numbers, got [1, 2, 3]",
        ),
        (
            {"fields": {"tame": True}},
            "fields.tame: expected a number, a non-empty text or a [low, high] range of numbers, got True",
        ),
    ],
)
def test_a_bad_line_is_one_error_naming_file_line_and_field(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    record = {key: value for key, value in {**GOOD, **change}.items() if value is not None}
    path = knowledge_file(tmp_path, {**GOOD, "id": "first"}, record)
    with pytest.raises(FormatError) as caught:
        read_knowledge(path)
    assert str(caught.value) == f"{path}:2: {message}"


@pytest.mark.bad_input("28.3 knowledge files")
def test_a_line_that_is_not_json_names_its_line(tmp_path: Path) -> None:
    path = knowledge_file(tmp_path, GOOD, '{"id": "b", "text":')
    with pytest.raises(FormatError, match=rf"^{path}:2: invalid JSON \("):
        read_knowledge(path)


@pytest.mark.bad_input("28.3 knowledge files")
def test_a_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = knowledge_file(tmp_path, GOOD, {**GOOD, "id": "b"}, GOOD)
    with pytest.raises(FormatError) as caught:
        read_knowledge(path)
    assert str(caught.value) == f"{path}:3: id: duplicate id 'a', first on line 1"


@pytest.mark.bad_input("28.3 knowledge files")
def test_skip_invalid_lists_every_bad_line_and_loads_the_rest(tmp_path: Path) -> None:
    path = knowledge_file(
        tmp_path, GOOD, {"id": "b", "source": "s"}, "not json", {**GOOD, "id": "c"}, GOOD, {**GOOD, "id": "d"}
    )
    skipped: list[InvalidLine] = []
    passages = read_knowledge(path, skip_invalid=True, on_skip=skipped.append)
    assert [p.id for p in passages] == ["a", "c", "d"]
    assert [(s.line, s.field) for s in skipped] == [(2, "text"), (3, ""), (5, "id")]
    assert str(skipped[2]) == f"{path}:5: id: duplicate id 'a', first on line 1"


@pytest.mark.bad_input("28.3 knowledge files")
def test_a_line_over_the_byte_limit_is_a_bad_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convoplan import schema

    path = knowledge_file(tmp_path, GOOD, {**GOOD, "id": "big", "text": "word " * 200}, {**GOOD, "id": "c"})
    monkeypatch.setattr(schema, "MAX_LINE_BYTES", 200)
    skipped: list[InvalidLine] = []
    assert [p.id for p in read_knowledge(path, skip_invalid=True, on_skip=skipped.append)] == ["a", "c"]
    assert [str(s) for s in skipped] == [f"{path}:2: longer than the limit of 200 bytes per line"]


@pytest.mark.bad_input("28.3 knowledge files")
def test_an_oversized_passage_is_cut_at_a_word_boundary_with_a_note(tmp_path: Path) -> None:
    text = " ".join(f"word{i}" for i in range(1000))  # 6,889 characters
    path = knowledge_file(tmp_path, GOOD, {**GOOD, "id": "long", "text": text})
    notes: list[str] = []
    short, long = read_knowledge(path, on_cut=notes.append)
    assert not short.cut and short.text == GOOD["text"]
    assert long.cut and len(long.text) <= MAX_PASSAGE_CHARS and long.text.endswith("…")
    kept = long.text.removesuffix("…")
    assert text.startswith(kept + " ") and len(kept) > MAX_PASSAGE_CHARS - 20  # whole words, nearly all the room
    assert notes == [
        f"{path}:2: text: {len(text):,} characters, cut at a word boundary to the limit of {MAX_PASSAGE_CHARS:,}"
    ]
    assert read_knowledge(path)[1] == long  # without a callback: cut all the same, never an error

    unbroken = knowledge_file(tmp_path, {**GOOD, "text": "x" * 5000})  # no space to cut at: cut where it is
    (passage,) = read_knowledge(unbroken)
    assert passage.cut and len(passage.text) == MAX_PASSAGE_CHARS


def test_writing_refuses_a_duplicate_id(tmp_path: Path) -> None:
    passage = Passage("a", "text", "source")
    with pytest.raises(ValueError, match="duplicate passage id 'a'"):
        write_knowledge(tmp_path / "kb.jsonl", [passage, passage])
    assert not (tmp_path / "kb.jsonl").exists()


def test_the_query_is_the_last_turns_oldest_first() -> None:
    turns = [Turn("user", "hi"), Turn("agent", "Let's talk about elephants."), Turn("user", "how heavy are they?")]
    assert query_from_turns(turns, 2) == "Let's talk about elephants.\nhow heavy are they?"
    assert query_from_turns(turns, 1) == "how heavy are they?"
    assert query_from_turns(turns, 10) == "hi\nLet's talk about elephants.\nhow heavy are they?"
    assert query_from_turns([], 2) == ""
    with pytest.raises(ValueError, match="last must be at least 1"):
        query_from_turns(turns, 0)


TINY = [
    Passage(
        "elephant/weight", "An elephant weighs 2,700 to 6,000 kilograms.", "g", "elephant", {"weight_kg": (2700, 6000)}
    ),
    Passage("elephant/diet", "An elephant is a herbivore: it eats grass, bark and fruit.", "g", "elephant"),
    Passage("elephant/sound", "An elephant's sound: a loud trumpet through its trunk.", "g", "elephant"),
    Passage("mouse/weight", "A mouse weighs 0.02 to 0.03 kilograms.", "g", "mouse", {"weight_kg": (0.02, 0.03)}),
    Passage("mouse/diet", "A mouse is an omnivore: it eats seeds, grain and insects.", "g", "mouse"),
    Passage("shop/hours", "The shop opens at nine in the morning and closes at five.", "the shop's API"),
]


@pytest.fixture(scope="module")
def indexes(embedder: SentenceEmbedder) -> dict[Method, KnowledgeIndex]:
    return {"bm25": KnowledgeIndex(TINY, "bm25"), "embedding": KnowledgeIndex(TINY, "embedding", embedder)}


@pytest.mark.parametrize("method", ["bm25", "embedding"])
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("how much does an elephant weigh?", "elephant/weight"),
        ("what do mice eat? seeds?", "mouse/diet"),
        ("when does the shop open in the morning?", "shop/hours"),
        ("Let's talk about elephants.\nwhat sound do they make? a trumpet?", "elephant/sound"),
    ],
)
def test_a_query_finds_the_passage_it_obviously_matches_first(
    indexes: dict[Method, KnowledgeIndex], method: Method, query: str, expected: str
) -> None:
    hits = indexes[method].search(query, k=3)
    assert hits[0].passage.id == expected
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize("method", ["bm25", "embedding"])
def test_the_entity_keeps_only_its_passages(indexes: dict[Method, KnowledgeIndex], method: Method) -> None:
    hits = indexes[method].search("how much does an elephant weigh?", k=5, entity="Mouse")  # case ignored
    assert hits and {h.passage.entity for h in hits} == {"mouse"}
    assert hits[0].passage.id == "mouse/weight"
    assert indexes[method].search("how heavy?", k=5, entity="giraffe") == []


def test_embeddings_find_a_paraphrase_bm25_cannot(indexes: dict[Method, KnowledgeIndex]) -> None:
    assert indexes["embedding"].search("how heavy is an elephant?", k=1)[0].passage.id == "elephant/weight"
    assert all(h.passage.id != "elephant/weight" for h in indexes["bm25"].search("how heavy is it?", k=5))


def test_k_bounds_the_hits_and_bm25_leaves_out_passages_sharing_no_word(
    indexes: dict[Method, KnowledgeIndex],
) -> None:
    assert len(indexes["embedding"].search("elephant", k=2)) == 2
    assert len(indexes["embedding"].search("elephant", k=100)) == len(TINY)
    assert {h.passage.entity for h in indexes["bm25"].search("elephant", k=100)} == {"elephant"}
    assert indexes["bm25"].search("zzz qqq", k=3) == []
    assert indexes["bm25"].search("", k=3) == []
    with pytest.raises(ValueError, match="k must be at least 1"):
        indexes["bm25"].search("elephant", k=0)


def test_an_empty_index_finds_nothing_and_bad_arguments_are_refused(embedder: SentenceEmbedder) -> None:
    assert KnowledgeIndex([], "bm25").search("anything", k=3) == []
    assert KnowledgeIndex([], "embedding", embedder).search("anything", k=3) == []
    with pytest.raises(ValueError, match="unknown search method 'tfidf'"):
        KnowledgeIndex(TINY, "tfidf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate passage id 'a'"):
        KnowledgeIndex([Passage("a", "x", "s"), Passage("a", "y", "s")], "bm25")


def test_an_index_reads_its_file(tmp_path: Path) -> None:
    path = tmp_path / "kb.jsonl"
    write_knowledge(path, TINY)
    index = KnowledgeIndex.from_file(path, "bm25")
    assert len(index) == len(TINY)
    assert index.search("shop opens", k=1)[0].passage == TINY[-1]


def test_the_entity_in_focus_is_the_last_one_named() -> None:
    index = KnowledgeIndex(
        [
            *TINY,
            Passage("bear/x", "Bears sleep.", "g", "bear"),
            Passage("polar/x", "Polar bears swim.", "g", "polar bear"),
            Passage("fly/x", "Butterflies taste with their feet.", "g", "butterfly"),
            Passage("wolf/x", "Wolves howl.", "g", "wolf"),
            Passage("hippo/x", "Hippos ooze.", "g", "hippopotamus", aliases=("hippo", "hippos")),
        ],
        "bm25",
    )

    def focus(*texts: str) -> str | None:
        return index.focus([Turn(speaker="user", text=text) for text in texts])

    assert focus("tell me about elephants", "hmm") == "elephant"  # the latest turn naming one
    assert focus("an ELEPHANT and then a Mouse?") == "mouse"  # the last one in that turn, case ignored
    assert focus("polar bears!") == "polar bear"  # the longest name, not "bear"
    assert focus("butterflies", "and wolves?") == "wolf"  # regular plurals
    assert focus("mice?") is None  # an irregular plural is not found ...
    assert focus("lions", "what about HIPPOS?") == "hippopotamus"  # ... unless it is an alias
    assert focus("hello") is None and focus() is None
    assert {p.entity for p in index.about([Turn(speaker="user", text="a mouse")])} == {"mouse"}
    assert index.about([]) == index.passages  # none in focus: every passage
    assert KnowledgeIndex([], "bm25").focus([Turn(speaker="user", text="elephant")]) is None

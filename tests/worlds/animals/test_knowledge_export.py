"""The animals world's knowledge base exported as a knowledge file (`knowledge_passages`, `convoplan world
knowledge`): every animal's facts, sound and attributes are passages with unique ids, and the file reads back."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.retrieval.knowledge import FieldValue, Passage, read_knowledge, write_knowledge
from convoplan.worlds.animals.knowledge import GUIDE, attribute_sentences, knowledge_passages, load_knowledge_base

runner = CliRunner()


@pytest.fixture(scope="module")
def passages() -> list[Passage]:
    return list(knowledge_passages())


def test_every_animal_has_its_facts_sound_and_attributes(passages: list[Passage]) -> None:
    kb = load_knowledge_base()
    assert len(kb) == 70
    assert len({p.id for p in passages}) == len(passages)
    for animal in kb.animals:
        mine = {p.id.split("/", 1)[1]: p for p in passages if p.entity == animal.name}
        facts = [p for key, p in mine.items() if key.startswith("fact/")]
        assert [(p.text, p.source, p.fields["topic"]) for p in facts] == [
            (f.text, f.source, f.topic) for f in animal.facts
        ]
        assert animal.sound.description in mine["sound"].text and mine["sound"].fields == {"sound": animal.sound.name}
        size = f"{animal.size.measure}_m"
        expected: dict[str, FieldValue] = {
            "weight_kg": animal.weight_kg,
            size: animal.size.range_m,
            "lifespan_years": animal.lifespan_years,
            "diet": animal.diet,
            "class": animal.animal_class,
        }
        if animal.top_speed_kmh is not None:
            expected["top_speed_kmh"] = animal.top_speed_kmh
        for name, value in expected.items():
            assert mine[name].fields == {name: value}, (animal.name, name)
        assert {"habitat", "regions"} <= set(mine)
        assert len(mine) == len(animal.facts) + 1 + len(expected) + 2
        assert all(p.source == GUIDE and p.text.endswith(".") for key, p in mine.items() if not key.startswith("fact/"))


def test_attributes_are_english_sentences_with_their_units(passages: list[Passage]) -> None:
    by_id = {p.id: p for p in passages}
    assert by_id["elephant/weight_kg"].text == "Elephants weigh between 3,000 and 6,000 kilograms."
    assert by_id["elephant/weight_kg"].fields == {"weight_kg": (3000, 6000)}
    assert by_id["lion/top_speed_kmh"].text == "Lions can run at up to 80 kilometres per hour."
    assert by_id["lion/length_m"].text == "Lions grow to between 1.4 and 2.5 metres long."
    assert by_id["honey-bee/weight_kg"].text == "Honey bees weigh between 0.0001 and 0.00012 kilograms."  # not 1e-04
    assert by_id["lion/diet"].text == "Lions are carnivores: they eat other animals."
    assert by_id["lion/habitat"].text == "Lions live in savannas, grasslands and open woodlands."
    assert by_id["owl/class"].text == "An owl is a bird."


def test_the_guide_states_each_attribute_as_the_worlds_agent_says_it(passages: list[Passage]) -> None:
    """A grounded model copies: the guide's attribute passage is the sentence the logged agent said (the diet and
    habitat passages say it and more)."""
    by_id = {p.id: p.text for p in passages}
    for animal in load_knowledge_base().animals:
        slug = animal.name.replace(" ", "-")
        said = attribute_sentences(animal)
        assert by_id[f"{slug}/weight_kg"] == said["weight"]
        assert by_id[f"{slug}/{animal.size.measure}_m"] == said["size"]
        assert by_id[f"{slug}/lifespan_years"] == said["lifespan"]
        assert by_id[f"{slug}/diet"].startswith(said["diet"][:-1] + ":")
        assert set(said["habitat"][:-1].replace(" and ", " ").split()) <= set(
            by_id[f"{slug}/habitat"][:-1].replace(",", "").split()
        )


def test_the_exported_file_reads_back(tmp_path: Path, passages: list[Passage]) -> None:
    path = tmp_path / "animals.jsonl"
    assert write_knowledge(path, passages) == len(passages)
    assert read_knowledge(path) == passages


def test_the_cli_writes_the_knowledge_file(tmp_path: Path, passages: list[Passage]) -> None:
    out = tmp_path / "kb" / "animals.jsonl"
    result = runner.invoke(app, ["world", "knowledge", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote {len(passages)} passages to {out}"
    assert read_knowledge(out) == passages


@pytest.mark.bad_input("28.3 knowledge files")
def test_the_cli_refuses_a_bad_out_in_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["world", "knowledge", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --out {tmp_path}: is a folder; give a file path"
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.bad_input("27.3 a full disk")
def test_the_cli_on_a_full_disk_is_one_line_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "animals.jsonl"
    out.write_text("what was there\n")

    def no_space(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    result = runner.invoke(app, ["world", "knowledge", "--out", str(out)])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith(f"error: writing {out}: no space left on device")
    assert out.read_text() == "what was there\n" and sorted(p.name for p in tmp_path.iterdir()) == ["animals.jsonl"]

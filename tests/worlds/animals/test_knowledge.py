from __future__ import annotations

import json
from pathlib import Path

import pytest

from convoplan.worlds.animals.knowledge import load_knowledge_base


def test_knowledge_base_is_complete() -> None:
    kb = load_knowledge_base()
    assert len(kb) >= 60
    assert kb.units == {
        "weight_kg": "kilograms",
        "size_m": "metres",
        "lifespan_years": "years",
        "top_speed_kmh": "kilometres per hour",
    }
    for animal in kb.animals:
        assert len(animal.facts) >= 5, animal.name
        assert all(f.source == "the convoplan animal guide" for f in animal.facts), "no invented citations"
        assert len({f.text for f in animal.facts}) == len(animal.facts), f"{animal.name}: repeated fact"
        assert animal.sound.description and not animal.sound.description.endswith(".")
        assert animal.weight_kg[0] > 0 and animal.size.range_m[0] > 0 and animal.lifespan_years[0] > 0
        assert animal.looks_like and animal.sounds_like, f"{animal.name}: quizzes need confusable animals"
        assert kb.lookup(animal.plural) is animal and kb.lookup(animal.name.upper()) is animal


def test_synonyms_resolve() -> None:
    kb = load_knowledge_base()
    assert kb.lookup("killer whale") is kb["orca"]
    assert kb.lookup("hippo") is kb["hippopotamus"]
    assert kb.lookup("unicorn") is None


def test_broken_knowledge_base_names_the_field(tmp_path: Path) -> None:
    source = Path(__file__).resolve().parents[3] / "convoplan/worlds/animals/data/animals.json"
    raw = json.loads(source.read_text())
    raw["animals"][2]["weight_kg"] = [90, 10]
    (tmp_path / "kb.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"kb\.json: animals\.2\.weight_kg: .*low to high"):
        load_knowledge_base(tmp_path / "kb.json")
    raw["animals"][2]["weight_kg"] = [10, 90]
    raw["animals"][2]["looks_like"] = ["dragon"]
    (tmp_path / "kb.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="'dragon' is not another animal"):
        load_knowledge_base(tmp_path / "kb.json")

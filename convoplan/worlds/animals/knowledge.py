"""The animals knowledge base: facts with their source, sounds, structured attributes, confusable animals.

`data/animals.json` is written by the project; every fact's source is the guide itself ("the convoplan animal
guide"), so the providers' attributions never cite a reference the fact did not come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = ["KnowledgeBase"]


_STRICT = ConfigDict(extra="forbid")
Range = Annotated[tuple[float, float], AfterValidator(lambda r: r if r[0] <= r[1] else _bad_range(r))]


def _bad_range(value: tuple[float, float]) -> tuple[float, float]:
    raise ValueError(f"a range must run from low to high, got {list(value)}")


@dataclass(frozen=True)
class Fact:
    __pydantic_config__ = _STRICT

    text: str
    source: str
    """Who says so; quoted by the fact provider ("the convoplan animal guide" says: ...)."""
    topic: Literal["behaviour", "body", "diet", "habitat", "senses", "life cycle", "record", "history"]


@dataclass(frozen=True)
class Sound:
    __pydantic_config__ = _STRICT

    name: str
    verb: str
    description: str
    """A noun phrase with no final period: "a deep, rumbling roar that ..."."""


@dataclass(frozen=True)
class Size:
    __pydantic_config__ = _STRICT

    measure: Literal["length", "height", "wingspan"]
    range_m: Range


@dataclass(frozen=True)
class Animal:
    """One animal; numeric attributes carry their unit in the field name (see KnowledgeBase.units)."""

    __pydantic_config__ = _STRICT

    name: str
    plural: str
    article: Literal["a", "an"]
    synonyms: tuple[str, ...]
    animal_class: Annotated[
        Literal["mammal", "bird", "reptile", "amphibian", "fish", "insect", "mollusc"], Field(alias="class")
    ]
    diet: Literal["carnivore", "herbivore", "omnivore", "insectivore", "piscivore"]
    habitats: tuple[str, ...]
    regions: tuple[str, ...]
    weight_kg: Range
    size: Size
    lifespan_years: Range
    top_speed_kmh: float | None
    moves_by: Literal["run", "swim", "fly", "hop", "crawl", "walk"]
    sound: Sound
    facts: tuple[Fact, ...]
    looks_like: tuple[str, ...]
    """Animals people confuse with it by look (quiz distractors)."""
    sounds_like: tuple[str, ...]
    """Animals whose sound could be taken for its sound (sound-quiz distractors)."""

    @property
    def with_article(self) -> str:
        """ "a lion", "an owl"."""
        return f"{self.article} {self.name}"

    @property
    def names(self) -> tuple[str, ...]:
        """Every surface form users may type: name, plural, synonyms."""
        return (self.name, self.plural, *self.synonyms)


@dataclass(frozen=True)
class _File:
    __pydantic_config__ = _STRICT

    units: dict[str, str]
    animals: list[Animal]


class KnowledgeBase:
    """The animals, looked up by canonical name or by any surface form (plural, synonym)."""

    def __init__(self, animals: list[Animal], units: dict[str, str]) -> None:
        self.animals = animals
        self.units = units
        self.by_name = {animal.name: animal for animal in animals}
        self.by_form: dict[str, Animal] = {}
        for animal in animals:
            for form in animal.names:
                if self.by_form.setdefault(form.lower(), animal) is not animal:
                    raise ValueError(f"{form!r} names both {self.by_form[form.lower()].name} and {animal.name}")
            for other in (*animal.looks_like, *animal.sounds_like):
                if other not in self.by_name or other == animal.name:
                    raise ValueError(f"{animal.name}: confusable animal {other!r} is not another animal of the base")

    def __getitem__(self, name: str) -> Animal:
        return self.by_name[name]

    def __len__(self) -> int:
        return len(self.animals)

    def lookup(self, form: str) -> Animal | None:
        """The animal a surface form names ("hippos", "killer whale"), or None."""
        return self.by_form.get(form.lower())


def _read(path: Path | None) -> KnowledgeBase:
    where = str(path) if path is not None else "convoplan/worlds/animals/data/animals.json"
    source = resources.files("convoplan.worlds.animals").joinpath("data/animals.json") if path is None else path
    try:
        parsed = TypeAdapter(_File).validate_json(source.read_bytes())
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{where}: {location}: {first['msg']}") from None
    return KnowledgeBase(parsed.animals, parsed.units)


@cache
def _default() -> KnowledgeBase:
    return _read(None)


def load_knowledge_base(path: str | Path | None = None) -> KnowledgeBase:
    """The built-in knowledge base (loaded once and shared), or one read from `path`."""
    return _default() if path is None else _read(Path(path))

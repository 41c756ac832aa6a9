"""The animals knowledge base: facts with their source, sounds, structured attributes, confusable animals.

`data/animals.json` is written by the project; every fact's source is the guide itself ("the convoplan animal
guide"), so the providers' attributions never cite a reference the fact did not come from.

`knowledge_passages` exports it as a knowledge file (`convoplan.retrieval.knowledge`, `convoplan world knowledge`):
what grounded suggestions retrieve and quote, and what a grounding check compares them with.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError

from convoplan.retrieval.knowledge import FieldValue, Passage

__all__ = ["GUIDE", "KnowledgeBase", "attribute_sentences", "knowledge_passages"]

GUIDE = "the convoplan animal guide"
"""The source of everything in `data/animals.json`: its facts name it, and its sounds and attributes come from it."""


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


# --- export as a knowledge file (convoplan.retrieval.knowledge) ---------------------------------------------------

_DIETS = {
    "carnivore": "they eat other animals",
    "herbivore": "they eat plants",
    "omnivore": "they eat both plants and animals",
    "insectivore": "they eat insects",
    "piscivore": "they eat fish",
}
"""What each diet means, said in the passage: a question asks what an animal eats, not whether it is a piscivore."""


def _number(value: float) -> str:
    """2700 -> "2,700", 1.4 -> "1.4", 0.0001 -> "0.0001": as written in the guide, never in exponent form."""
    return f"{value:,.6f}".rstrip("0").rstrip(".")


def _listed(items: tuple[str, ...]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def knowledge_passages(kb: KnowledgeBase | None = None) -> Iterator[Passage]:
    """The knowledge base as passages of a knowledge file: for each animal its facts (each with its source and
    topic), its sound, and its attributes as English sentences, the numbers with their unit in `fields`
    (`weight_kg`: (3000, 6000)). Ids are `<animal>/fact/<n>`, `<animal>/sound` and `<animal>/<field>`, the animal
    named with dashes for spaces; every passage's `entity` is the animal's name."""
    for animal in (kb or load_knowledge_base()).animals:
        yield from _animal_passages(animal)


def _animal_passages(animal: Animal) -> Iterator[Passage]:
    slug = animal.name.replace(" ", "-")
    subject, plural = _capital(animal.with_article), _capital(animal.plural)  # "An elephant", "Elephants"

    # Every surface form but the name itself: the plural and the synonyms a conversation may use ("hippos").
    aliases = tuple(dict.fromkeys(form for form in animal.names if form != animal.name))

    def passage(key: str, text: str, fields: dict[str, FieldValue], source: str = GUIDE) -> Passage:
        return Passage(id=f"{slug}/{key}", text=text, source=source, entity=animal.name, aliases=aliases, fields=fields)

    for number, fact in enumerate(animal.facts, start=1):
        yield passage(f"fact/{number}", fact.text, {"topic": fact.topic}, fact.source)
    sound = animal.sound
    # "sound" said in words: a passage should say what it is about, as the questions it answers do.
    yield passage("sound", f"{subject}'s sound: {sound.description}.", {"sound": sound.name})
    yield passage("class", f"{subject} is {_a(animal.animal_class)}.", {"class": animal.animal_class})
    said = attribute_sentences(animal)
    # The attributes as the world's agent says them (`attribute_sentences`): the guide is what an agent quotes, so
    # a grounded model copies a sentence instead of rewording it (and its numbers). Diet and habitat say more.
    yield passage("diet", f"{said['diet'][:-1]}: {_DIETS[animal.diet]}.", {"diet": animal.diet})
    habitats = _listed(tuple(_plural_habitat(h) for h in animal.habitats))
    yield passage("habitat", f"{plural} live in {habitats}.", {"habitat": ", ".join(animal.habitats)})
    regions = _listed(animal.regions)
    yield passage("regions", f"Where {animal.plural} live: {regions}.", {"regions": ", ".join(animal.regions)})
    yield passage("weight_kg", said["weight"], {"weight_kg": animal.weight_kg})
    yield passage(f"{animal.size.measure}_m", said["size"], {f"{animal.size.measure}_m": animal.size.range_m})
    yield passage("lifespan_years", said["lifespan"], {"lifespan_years": animal.lifespan_years})
    if animal.top_speed_kmh is not None:
        yield passage("top_speed_kmh", said["speed"], {"top_speed_kmh": animal.top_speed_kmh})


def attribute_sentences(animal: Animal) -> dict[str, str]:
    """A sentence per structured attribute, by the attribute's name in the NLU (`ATTRIBUTES`), in a fixed order:
    weight, size, lifespan, diet, habitat (the first two), and speed where the knowledge base has one. The world's
    agent says them (`AttributeProvider`) and the exported guide states them (`knowledge_passages`)."""
    plural = _capital(animal.plural)
    size = {"length": "long", "height": "tall", "wingspan": "across the wings"}[animal.size.measure]
    statements = {
        "weight": f"{plural} weigh between {_between(animal.weight_kg)} kilograms.",
        "size": f"{plural} grow to between {_between(animal.size.range_m)} metres {size}.",
        "lifespan": f"{plural} live for about {_number(animal.lifespan_years[0])} to"
        f" {_number(animal.lifespan_years[1])} years.",
        "diet": f"{plural} are {animal.diet}s.",
        "habitat": f"{plural} live in {' and '.join(_plural_habitat(h) for h in animal.habitats[:2])}.",
    }
    if animal.top_speed_kmh is not None:
        statements["speed"] = (
            f"{plural} can {animal.moves_by} at up to {_number(animal.top_speed_kmh)} kilometres per hour."
        )
    return statements


def _between(range_: tuple[float, float]) -> str:
    return f"{_number(range_[0])} and {_number(range_[1])}"


def _plural_habitat(habitat: str) -> str:
    if habitat.endswith(("s", "sh", "ch")):
        return habitat + "es"
    if habitat.endswith("y") and habitat[-2:-1] not in "aeiou":
        return habitat[:-1] + "ies"
    return habitat + "s"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _a(noun: str) -> str:
    """ "a mammal", "an omnivore", "an insectivore"."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"

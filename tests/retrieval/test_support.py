"""The support check (`convoplan.retrieval.support`): quotes and close paraphrases of a passage are supported, an
invented statement or a number no source states is not, numbers inside a field's range are, questions and short
phatic sentences claim nothing; and on the animals world's own knowledge base its fact provider's sentences are
supported while the invented facts a small LM wrote in the console (issue 28) are not; STAR-like returned items give
slot precision and recall counts by hand."""

from __future__ import annotations

from dataclasses import replace

import pytest

from convoplan.retrieval.knowledge import Passage
from convoplan.retrieval.support import (
    Slots,
    SupportConfig,
    check_slots,
    check_support,
    item_vocabulary,
    numbers_in,
    returned_item,
)
from convoplan.schema import Conversation, Event, Turn
from convoplan.worlds.animals.knowledge import knowledge_passages

ELEPHANT = [
    Passage(id="e/fact", text="Elephants sleep only about two hours a day, often standing up.", source="guide"),
    Passage(
        id="e/weight",
        text="An elephant weighs 3,000 to 6,000 kilograms.",
        source="guide",
        entity="elephant",
        fields={"weight_kg": (3000.0, 6000.0)},
    ),
    Passage(id="e/life", text="Elephants live for about 60 years.", source="guide", fields={"lifespan_years": 60.0}),
]


def test_numbers_are_read_as_written() -> None:
    assert numbers_in("3,000 to 6,000 kg, 2.5 m, 60 years") == [3000.0, 6000.0, 2.5, 60.0]
    assert numbers_in("H2O and id c12#3, version 1.2.3") == []


@pytest.mark.parametrize(
    ("text", "supported", "sources"),
    [
        ("Elephants sleep only about two hours a day, often standing up.", True, ["e/fact"]),  # a quote
        ("Elephants sleep about two hours a day.", True, ["e/fact"]),  # a close paraphrase
        ("An elephant can weigh 4,500 kilograms.", True, ["e/weight"]),  # a number inside the range
        ("Elephants live for about 60 years. Would you like to hear more?", True, ["e/life"]),  # the question: none
        ("Sure! Happy to help.", True, []),  # nothing claimed
        ("Elephants sleep for about 40 to 100 hours a day.", False, []),  # the console's invented fact
        ("An elephant weighs 2,000 to 6,000 kilograms.", False, ["e/weight"]),  # 2,000 is no source's number
        ("Elephants weigh between 3000 and 6000 kilograms.", True, ["e/weight"]),  # other words, the same numbers
        ("Elephants sleep for two hours, or 40.", False, []),  # close words, a number the passage lacks
        # the passage with claims added: its words are all there, but the sentence says more
        ("Elephants sleep only about two hours a day, dreaming of flying over seas and mountains.", False, []),
        ("The guide says: Elephants sleep only about two hours a day.", True, ["e/fact"]),  # the source quoted
        ("The guide says an elephant's day can recognise itself.", False, []),  # attribution is not support
        ("An elephant's eyes can see light as far as 2,000 kilometres wide.", False, []),
    ],
)
def test_claims_are_supported_by_a_passage_or_not(text: str, supported: bool, sources: list[str]) -> None:
    support = check_support(text, ELEPHANT)
    assert support.supported is supported, support.claims
    assert support.sources == sources
    if not supported:
        assert support.unsupported


def test_the_similarity_threshold_is_the_config_s() -> None:
    paraphrase = "Elephants sleep around two hours a day."  # token_set_ratio 89
    assert check_support(paraphrase, ELEPHANT).supported
    assert not check_support(paraphrase, ELEPHANT, SupportConfig(min_similarity=90.0)).supported
    assert check_support(paraphrase, [], SupportConfig()).unsupported[0].kind == "statement"


def test_the_animals_fact_provider_is_supported_by_its_knowledge_base() -> None:
    passages = list(knowledge_passages())
    lion = [p for p in passages if p.entity == "lion"]
    facts = [p for p in lion if "/fact/" in p.id]
    assert facts
    for fact in facts:  # the provider quotes the guide: "The convoplan animal guide says: ..."
        assert check_support(f'The convoplan animal guide says: "{fact.text}"', lion).supported, fact.text
    assert not check_support("Lions can run at 300 kilometres per hour.", lion).supported


def test_a_statement_about_another_animal_is_not_supported_by_the_focus_s_passages() -> None:
    """After a conversation about dogs, "Sheep grow to between 0.6 and 0.9 metres tall." is not about the animal in
    focus: checked against the dog's passages, their height sentence would source its 0.6 (inside the dog's range;
    `skip_said` then took the dog's height for said), so it is checked against none. A statement naming the dog, or
    no animal, is checked against the dog's passages; with no animal in focus, against those of the animals it
    names."""
    from convoplan.retrieval.knowledge import KnowledgeIndex
    from convoplan.worlds.animals.knowledge import attribute_sentences, load_knowledge_base

    index = KnowledgeIndex(list(knowledge_passages()), method="bm25")
    about_dogs = [Turn(speaker="user", text="tell me about dogs")]
    sheep = attribute_sentences(load_knowledge_base()["sheep"])["size"]
    assert sheep == "Sheep grow to between 0.6 and 0.9 metres tall."
    dog = [p for p in index.passages if p.entity == "dog"]
    assert "dog/height_m" in check_support(sheep, dog).sources  # what the check found against the dog's passages
    assert index.named(sheep) == ["sheep"] and index.named("Dogs and sheep") == ["dog", "sheep"]
    assert index.for_claims(sheep, about_dogs) == [] and not check_support(sheep, []).supported
    assert index.for_claims("Dogs are smarter than sheep.", about_dogs) == dog
    assert index.for_claims("They can run fast.", about_dogs) == dog
    assert {p.entity for p in index.for_claims(sheep, [])} == {"sheep"}
    assert check_support(sheep, index.for_claims(sheep, [])).sources == ["sheep/height_m"]


# --- items an API returned (STAR's return_item events) ------------------------------------------------------------


def _star_history(item: dict[str, object], api: str = "restaurant_search") -> Conversation:
    """A STAR-like history: the user asked, the wizard queried, the API returned `item`."""
    return Conversation(
        id="c",
        domain="restaurant",
        turns=[Turn(speaker="user", text="Any Indian place in the centre?")],
        events=[
            Event(kind="query", position=1, data={"APIName": api, "Constraints": []}),
            Event(kind="return_item", position=1, data={"APIName": api, "Item": {"APIName": api, **item}}),
        ],
    )


THE_PORCH = {
    "Name": "The Porch",
    "Cuisine": "Indian",
    "Price": 1372,
    "Delivers": True,
    "id": 21,
    "Message": "This restaurant is a very popular place with a long wait on weekends",
}


def test_the_latest_returned_item_s_short_values_are_its_slots() -> None:
    item = returned_item(_star_history(THE_PORCH))
    assert item is not None and item.api == "restaurant_search"
    # not its id, its flag, its long message or its API name; numbers as text, casefolded
    assert item.values == {"the porch", "indian", "1372"}
    assert returned_item(Conversation(id="c", domain="", turns=[])) is None
    later = _star_history(THE_PORCH)
    future = Event(kind="return_item", position=5, data={"APIName": "x", "Item": {"Name": "Later"}})
    assert returned_item(replace(later, events=[*later.events, future])) == item  # an event after the last turn


def test_slot_precision_and_recall_count_the_item_s_values() -> None:
    history = _star_history(THE_PORCH)
    item = returned_item(history)
    assert item is not None
    other = _star_history({"Name": "Tamarind", "Cuisine": "Thai", "Price": 999})
    vocabulary = item_vocabulary([history, other])
    assert vocabulary["restaurant_search"] == {"the porch", "indian", "1372", "tamarind", "thai", "999"}
    reference = "The Porch serves Indian food for about $1,372."
    assert check_slots(reference, reference, item, vocabulary) == Slots(3, 3, 3, 3)
    # one value left out, one contradicted (another restaurant's name): recall 2/3, precision 2/3
    assert check_slots("Tamarind serves Indian food for $1372.", reference, item, vocabulary) == Slots(3, 2, 3, 2)
    # whole words only: "Indiana" states no cuisine
    assert check_slots("The Porch, Indiana.", reference, item, vocabulary) == Slots(3, 1, 1, 1)
    # a value the reference states too is not counted against the suggestion
    both = "The Porch is not Thai but Indian, $1372."
    assert check_slots("Not Thai: The Porch.", both, item, vocabulary) == Slots(3, 1, 2, 2)

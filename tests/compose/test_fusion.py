from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convoplan.compose.fusion import (
    ConcatFusion,
    Entity,
    FusionPair,
    RuleFusion,
    TaggerFusion,
    evaluate,
    guess_entity,
    load_fusion_pairs,
)
from convoplan.compose.fusion.scores import sari
from convoplan.compose.fusion.tagger import Tag, derive_phrase_vocabulary, realize, tags_for
from convoplan.compose.fusion.text import detokenize, tokenize, utterance_kind
from convoplan.worlds.animals import animals_world, fusion_pairs

PAIRS = fusion_pairs()
TRAIN = [p for p in PAIRS if p.split == "train"]
TEST = [p for p in PAIRS if p.split == "test"]
LION = animals_world().entity("lion")
GUIDE = "The convoplan animal guide says:"


@pytest.fixture(scope="module")
def tagger() -> TaggerFusion:
    return TaggerFusion.train(TRAIN)


# ------------------------------------------------------------------------------------------ data and tokens


def test_the_packaged_pairs_load_with_their_splits() -> None:
    assert (len(PAIRS), len(TRAIN), len(TEST)) == (240, 190, 50)
    assert len({p.id for p in PAIRS}) == 240


def test_a_bad_pairs_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    good = '{"id": "a", "split": "train", "focus": "lion", "user": "", "utterances": ["Hi."], "fused": "Hi."}'
    path.write_text(good + "\n{")
    with pytest.raises(ValueError, match=r"pairs\.jsonl:2: bad fusion pair"):
        load_fusion_pairs(path, guess_entity)


def test_detokenize_inverts_tokenize_on_every_pair_text() -> None:
    texts = [text for p in PAIRS for text in (*p.utterances, p.fused)]
    assert [t for t in texts if detokenize(tokenize(t)) != t] == []


def test_tokens_split_contractions_numbers_and_quotes() -> None:
    text = 'What\'s more, it says: "Up to 1,900 chest-beating hippos weigh 2.5 tonnes."'
    assert tokenize(text)[:4] == ["What", "'", "s", "more"]
    assert detokenize(tokenize(text)) == text


def test_an_unknown_name_gets_a_regular_plural_and_article() -> None:
    assert guess_entity("butterfly") == Entity("butterfly", "butterflies", "a")
    assert guess_entity("octopus").article == "an"
    assert Entity("hippopotamus", "hippopotamuses", "a", ("hippo",)).words == {
        "hippopotamus",
        "hippopotamuses",
        "hippo",
        "hippos",
    }


def test_utterance_kinds() -> None:
    kinds = [
        utterance_kind(text)
        for text in (
            "Cool.",
            "Not quite, it was the sheep.",
            "Here's what a cow sounds like: a long, low moo.",
            f'{GUIDE} "Cats sleep a lot."',
            "Lions are carnivores.",
            "Quiz time! Which of these animals says moo: the cow, the duck or the pig?",
            "Hey, do you want to hear the sound of a bat?",
            "Which animal do you want to learn about next?",
        )
    ]
    assert kinds == ["ack", "ack", "sound", "quote", "statement", "quiz", "yes_no", "open_question"]


# ------------------------------------------------------------------------------------------ tags


def test_gold_tags_exist_for_every_pair_and_realise_exactly_its_target() -> None:
    vocabulary = derive_phrase_vocabulary(PAIRS)
    for pair in PAIRS:
        source, target = tokenize(" ".join(pair.utterances)), tokenize(pair.fused)
        tags = tags_for(source, target, vocabulary)
        assert tags is not None, pair.id
        assert len(tags) == len(source) + 1
        assert realize(source, tags) == target, pair.id


def test_the_vocabulary_is_small_and_most_frequent_first() -> None:
    vocabulary = derive_phrase_vocabulary(TRAIN)
    assert 5 <= len(vocabulary) <= 40
    assert vocabulary[:2] == ["They", "it"]
    assert derive_phrase_vocabulary(TRAIN, max_size=3) == vocabulary[:3]


def test_tags_replace_the_repeated_subject_on_its_last_deleted_token() -> None:
    source = tokenize("Lions are carnivores. Lions can run fast.")
    target = tokenize("Lions are carnivores, and they can run fast.")
    tags = tags_for(source, target, [", and they"])
    assert tags is not None
    assert [str(t) for t in tags[3:6]] == ["DELETE", "DELETE|, and they", "KEEP"]
    assert tags_for(source, target, ["They"]) is None  # the vocabulary cannot reach it
    assert Tag.parse("DELETE|, and they") == Tag(False, ", and they")


# ------------------------------------------------------------------------------------------ rules


def test_rules_pronominalise_the_repeated_focus() -> None:
    fused = RuleFusion().fuse(["Lions weigh up to 250 kilograms.", "Lions live in Africa."], LION)
    assert fused == "Lions weigh up to 250 kilograms, and they live in Africa."
    sound = ["Sure.", "Here's what a lion sounds like: a deep roar."]
    asked = RuleFusion().fuse(sound, LION, "what does a lion sound like?")
    assert asked == "Sure. Here's what it sounds like: a deep roar."
    assert RuleFusion().fuse(sound, LION, "yes") == " ".join(sound)  # nobody named the lion yet
    answer = RuleFusion().fuse(["Okay.", "Lions weigh up to 250 kilograms."], LION, "how heavy are lions?")
    assert answer == "Okay. They weigh up to 250 kilograms."


def test_rules_remove_the_repeated_source_and_keep_quotes_as_written() -> None:
    quotes = ['"Lions sleep a lot."', '"Lions live in prides."', '"A lion\'s roar is loud."']
    fused = RuleFusion().fuse([f"{GUIDE} {quote}" for quote in quotes], LION)
    # the repeated subject of a quote after a quote becomes "They"; a quote is otherwise left as written
    assert fused == f'{GUIDE} {quotes[0]} It also says: "They live in prides." It also says: {quotes[2]}'
    after_statement = RuleFusion().fuse(["Lions are carnivores.", f'{GUIDE} "Lions sleep a lot."'], LION)
    assert after_statement == f'Lions are carnivores. {GUIDE} "Lions sleep a lot."'


def test_rules_add_discourse_markers() -> None:
    rules = RuleFusion()
    three = ["Lions are carnivores.", "Lions live in Africa.", "Lions live for 15 years."]
    assert rules.fuse(three, LION) == "Lions are carnivores, and they live in Africa. Plus, they live for 15 years."
    quote = [f'{GUIDE} "Lions are the largest cats in Africa."', "Lions weigh up to 250 kilograms."]
    assert rules.fuse(quote, LION).endswith('Africa." In fact, they weigh up to 250 kilograms.')
    offer = rules.fuse(["Lions are carnivores.", "Hey, do you want to hear the sound of a bat?"], LION)
    assert offer == "Lions are carnivores. Also, do you want to hear the sound of a bat?"
    question = rules.fuse(["Lions are carnivores.", "Which animal do you want to learn about next?"], LION)
    assert question == "Lions are carnivores. And which animal do you want to learn about next?"
    assert rules.fuse(["Cool.", "Which animal next?"], LION) == "Cool. Which animal next?"  # no content before


def test_rules_leave_a_single_utterance_unchanged() -> None:
    for text in ("Lions weigh up to 250 kilograms.", "Hey, do you want to hear the sound of a bat?", "Which animal?"):
        assert RuleFusion().fuse([text], LION, "how heavy are lions?") == text
    assert RuleFusion().fuse(["Lions roar.", "Lions hunt."], None) == "Lions roar. Lions hunt."  # no focus known


def test_rules_beat_copying_the_input() -> None:
    rules, copy = evaluate(RuleFusion(), TEST), evaluate(ConcatFusion(), TEST)
    assert rules.n == copy.n == 50
    assert rules.exact_match > copy.exact_match and rules.sari > copy.sari


# ------------------------------------------------------------------------------------------ tagger


def test_the_tagger_beats_copying_the_input(tagger: TaggerFusion) -> None:
    learned, copy = evaluate(tagger, TEST), evaluate(ConcatFusion(), TEST)
    assert learned.exact_match > copy.exact_match
    assert learned.sari > copy.sari


def test_save_and_load_give_identical_outputs(tagger: TaggerFusion, tmp_path: Path) -> None:
    path = tmp_path / "fusion.safetensors"
    tagger.save(path)
    loaded = TaggerFusion.load(path)
    assert loaded.phrases == tagger.phrases and loaded.config == tagger.config
    for pair in TEST:
        inputs = (pair.utterances, pair.entity, pair.user)
        assert loaded.fuse(*inputs) == tagger.fuse(*inputs)
        assert loaded.predict_tags(*inputs) == tagger.predict_tags(*inputs)


def test_a_corrupt_or_missing_model_raises_a_value_error_naming_it(tagger: TaggerFusion, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not a model at all")
    truncated = tmp_path / "truncated.safetensors"
    tagger.save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    for path in (garbage, truncated, tmp_path / "missing.safetensors"):
        with pytest.raises(ValueError, match=path.name) as error:
            TaggerFusion.load(path)
        assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------ scores


def test_sari_by_hand_one_reference() -> None:
    # source "the cat sat", prediction "the cat", reference "the dog sat"; F1 and precision read 0/0 as 1.
    # n=1: keep {the,cat}: 1 of 2 kept grams in the reference, 1 of the 2 source grams it keeps -> F1 0.5;
    #      delete {sat}: the reference keeps it -> precision 0; add nothing, "dog" missed -> recall 0 -> F1 0.
    # n=2: keep {the cat}: not in the reference -> precision 0 -> F1 0; delete {cat sat}: right -> 1;
    #      add nothing, 2 reference bigrams missed -> 0.
    # n=3: keep nothing of nothing -> 1; delete {the cat sat}: right -> 1; add: "the dog sat" missed -> 0.
    # n=4: no grams anywhere: keep 1, delete 1, add 1.
    # keep (0.5 + 0 + 1 + 1) / 4 = 0.625, delete (0 + 1 + 1 + 1) / 4 = 0.75, add (0 + 0 + 0 + 1) / 4 = 0.25
    # SARI = (0.625 + 0.75 + 0.25) / 3 = 0.541666...
    assert sari("the cat sat", "the cat", ["the dog sat"]) == pytest.approx(1.625 / 3)


def test_sari_by_hand_two_references() -> None:
    # source "a b c", prediction "a c", references "a c" and "a b": a source gram weighs the share of references
    # that keep it (a: 1, b: 0.5, c: 0.5; ab: 0.5, ac: 0.5, bc: 0).
    # n=1: keep {a,c}: tp 1 + 0.5 = 1.5 of 2 selected, of 1 + 0.5 + 0.5 = 2 relevant -> P = R = 0.75 -> 0.75;
    #      delete {b}: 1 - 0.5 = 0.5 of 1 -> 0.5; add nothing, nothing to add -> 1.
    # n=2: keep nothing, 0.5 relevant -> recall 0 -> 0; delete {ab, bc}: (0.5 + 1) / 2 = 0.75;
    #      add {ac}: in a reference, the only reference bigram missing from the source -> 1.
    # n=3, 4: the references have no trigrams: keep 1, delete {abc} 1 (n=3) / nothing 1 (n=4), add 1.
    # keep (0.75 + 0 + 1 + 1) / 4 = 0.6875, delete (0.5 + 0.75 + 1 + 1) / 4 = 0.8125, add 4 / 4 = 1
    # SARI = (0.6875 + 0.8125 + 1) / 3 = 0.833333...
    assert sari("a b c", "a c", ["a c", "a b"]) == pytest.approx(2.5 / 3)


def test_sari_properties() -> None:
    source = "Lions are carnivores. Lions live in Africa."
    # Prediction = reference = source: everything kept is right (F1 1), nothing deleted or added (0/0 = 1).
    assert sari(source, source, [source]) == 1.0
    reference = "Lions are carnivores, and they live in Africa."
    assert sari(source, reference, [reference]) > sari(source, source, [reference])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcde"), max_size=6), min_size=3, max_size=4))
def test_sari_stays_between_zero_and_one(texts: list[list[str]]) -> None:
    source, prediction, *references = (" ".join(t) for t in texts)
    assert 0.0 <= sari(source, prediction, references) <= 1.0


def test_evaluate_counts_exact_matches_on_normalised_whitespace() -> None:
    pair = FusionPair("x", "test", "lion", "", ("Cool.", "Lions roar."), "Cool.  Lions roar.")
    scores = evaluate(ConcatFusion(), [pair])
    assert (scores.exact_match, scores.n) == (1.0, 1)
    assert scores.sari == pytest.approx(1.0)


def test_a_subject_named_by_a_synonym_and_the_name_becomes_one_pronoun() -> None:
    """ "komodo" is a synonym of the komodo dragon: "Komodo dragons" is still one subject, not "Komodo" + "dragons"."""
    komodo = animals_world().entity("komodo dragon")
    assert komodo is not None and "komodo" in komodo.words
    fused = RuleFusion().fuse(["Komodo dragons weigh up to 90 kilograms.", "Komodo dragons are carnivores."], komodo)
    assert fused == "Komodo dragons weigh up to 90 kilograms, and they are carnivores."

"""Gender swapping: an involution on the pair lists, case/plural/possessive kept, clear errors; CDA; the gap."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustml.fairness.counterfactual import GenderSwapper, counterfactual_augment, counterfactual_gap, swap_gender
from trustml.fairness.gender_pairs import GenderPairs, check_pairs, load_gender_pairs

SWAPPER = GenderSwapper()
LISTS = load_gender_pairs("en")
# him/her and his/hers need the next word to be read (tested in their grammatical frames below).
UNAMBIGUOUS = [w for pair in LISTS.pairs(names=True) if not set(pair) & set(LISTS.ambiguous) for w in pair]


def test_every_word_maps_to_its_partner_and_back():
    for male, female in LISTS.pairs(names=True):
        if male in LISTS.ambiguous or female in LISTS.ambiguous:
            continue
        assert SWAPPER.swap(male) == female and SWAPPER.swap(female) == male


@pytest.mark.parametrize("frame", ["{w}", "{w}.", "the {w} said hello.", "i saw the {w} and left", "{w} {w}"])
def test_swap_is_an_involution_on_the_word_lists(frame):
    for word in UNAMBIGUOUS:
        for form in (word, word.upper(), word.title()):
            text = frame.format(w=form)
            once = SWAPPER.swap(text)
            assert once != text, text
            assert SWAPPER.swap(once) == text


@pytest.mark.parametrize("text, expected", [
    ("She gave her book to him.", "He gave his book to her."),
    ("He gave his book to her.", "She gave her book to him."),
    ("I saw her and her sister.", "I saw him and his brother."),
    ("The car is his.", "The car is hers."),
    ("HE said the queens were tired", "SHE said the kings were tired"),
    ("John's wife is a waitress; Mary's husbands are waiters.",
     "Mary's husband is a waiter; John's wives are waitresses."),
    ("the nurse said that she would call her mother", "the nurse said that he would call his father"),
    ("nobody here", "nobody here"),
])
def test_swap_examples(text, expected):
    assert SWAPPER.swap(text) == expected
    assert SWAPPER.swap(expected) == text


def test_ambiguous_pronouns_round_trip_in_their_readings():
    for text in ["her car", "his car", "saw her.", "saw him.", "is his.", "is hers.", "to her and", "to him and"]:
        assert SWAPPER.swap(SWAPPER.swap(text)) == text


WORDS = st.sampled_from(UNAMBIGUOUS + ["the", "a", "said", "that", "nurse", "walked", "home", "today"])
CASES = st.sampled_from([str.lower, str.upper, str.title])
SEPARATORS = st.sampled_from([" ", ", ", ". ", "'s ", " - ", "  "])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(WORDS, CASES, SEPARATORS), min_size=1, max_size=12))
def test_swap_is_an_involution_on_sentences_of_listed_words(tokens):
    text = "".join(case(word) + separator for word, case, separator in tokens)
    assert SWAPPER.swap(SWAPPER.swap(text)) == text


def test_plurals_and_names_are_listed():
    pairs = set(LISTS.pairs(names=True))
    assert ("men", "women") in pairs and ("policemen", "policewomen") in pairs and ("ladies", "gentlemen") not in pairs
    assert ("gentlemen", "ladies") in pairs and ("princes", "princesses") in pairs and ("husbands", "wives") in pairs
    assert ("john", "mary") in pairs
    assert ("john", "mary") not in set(LISTS.pairs(names=False))
    assert GenderSwapper(names=False).swap("john met a man") == "john met a woman"


def test_unknown_language_is_a_clear_error():
    with pytest.raises(ValueError, match=r"language must be one of \['en'\].*'xx'"):
        load_gender_pairs("xx")
    with pytest.raises(ValueError, match="language"):
        GenderSwapper(language="fr")
    with pytest.raises(ValueError, match="language"):
        swap_gender("he", language="de")


def test_pairs_must_be_one_to_one():
    bad = GenderPairs(language="x", words=(("he", "she"), ("him", "she")), names=(), ambiguous={},
                      function_words=frozenset())
    with pytest.raises(ValueError, match="one-to-one"):
        check_pairs(bad)
    with pytest.raises(ValueError, match="one-to-one"):
        GenderSwapper(extra_pairs=[("king", "empress")])
    assert GenderSwapper(extra_pairs=[("emperor", "empress")]).swap("the emperor") == "the empress"


def test_token_pairs_are_a_bijection_with_the_determiners():
    pairs = SWAPPER.token_pairs()
    words = [w for pair in pairs for w in pair]
    assert len(words) == len(set(words))
    assert ("his", "her") in pairs and ("he", "she") in pairs
    assert "him" not in words and "hers" not in words


def test_gendered_and_words():
    assert SWAPPER.gendered("The Nurse said that SHE left") and not SWAPPER.gendered("the nurse left")
    assert "she" in SWAPPER.words("female") and "he" in SWAPPER.words("male")
    with pytest.raises(ValueError, match="gender must be one of"):
        SWAPPER.words("other")
    with pytest.raises(TypeError, match="text must be a str"):
        SWAPPER.swap(3)


def test_counterfactual_augment_adds_swapped_copies_of_gendered_texts():
    texts = ["he is a king", "the weather is nice", "her mother called"]
    assert counterfactual_augment(texts) == texts + ["she is a queen", "his father called"]
    assert len(counterfactual_augment(texts, only_gendered=False)) == 6


def test_counterfactual_gap_of_a_model_that_reads_one_word():
    # A "classifier" that says class 1 with probability 0.9 when it sees "she": its gap is 0.8 on texts
    # that mention he/she and 0 elsewhere.
    def predict_proba(texts):
        p = np.array([0.9 if "she" in t.split() else 0.1 for t in texts])
        return np.stack([1 - p, p], axis=1)

    texts = ["she works here", "he works here", "nobody works here", "they work here"]
    result = counterfactual_gap(predict_proba, texts)
    np.testing.assert_allclose(result.frame["gap"], [0.8, 0.8, 0.0, 0.0])
    assert result.summary() == pytest.approx({"counterfactual_gap": 0.4, "gap_on_swapped": 0.8,
                                              "flip_rate": 0.5, "fraction_swapped": 0.5})
    assert counterfactual_gap(predict_proba, texts, distance="flip").score == pytest.approx(0.5)
    with pytest.raises(ValueError, match="distance must be one of"):
        counterfactual_gap(predict_proba, texts, distance="l7")
    with pytest.raises(ValueError, match="texts must not be empty"):
        counterfactual_gap(predict_proba, [])

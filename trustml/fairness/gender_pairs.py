"""Gender word-pair lists for counterfactual data augmentation (CDA) and role reversal, as data.

Each list maps a *male* form to its *female* counterpart; swapping applies it in both directions.
The lists follow the spirit of the CDA word lists of Lu et al. (2020, "Gender Bias in Neural Natural
Language Processing") and Zhao et al. (2018, "Gender Bias in Coreference Resolution"), shortened to words
a small synthetic corpus uses, and the first-name pairs of Gupta et al. (2022, "Mitigating Gender Bias in
Distilled Language Models via Counterfactual Role Reversal"), which swap names as well as words.

Only one language is shipped (``"en"``); :func:`gender_pairs` names the available ones in its error.

Design rules (checked by :func:`check_pairs` and tested):

* every word appears in exactly one pair, so the swap is a bijection on the list — swapping twice gives
  the original word back (an involution);
* nouns get their plural automatically (``-s``, ``-es``, ``-y → -ies``, ``-man → -men``) unless the pair
  gives irregular plurals explicitly;
* the pronouns *her*/*his* are ambiguous (*her* is both the object and the possessive; *his* both the
  possessive determiner and the standalone possessive *hers*): they are resolved from the next word by
  :class:`trustml.fairness.counterfactual.GenderSwapper`, not listed here.
"""

from __future__ import annotations

import dataclasses

#: Pronouns with a one-to-one counterpart (``him``/``hers`` are the unambiguous halves of her/his).
PRONOUNS_EN: tuple[tuple[str, str], ...] = (
    ("he", "she"), ("himself", "herself"), ("him", "her"), ("his", "hers"),
)

#: Nouns (singular; plurals derived) — kinship, roles and gendered job titles.
NOUNS_EN: tuple[tuple[str, str], ...] = (
    ("man", "woman"), ("boy", "girl"), ("father", "mother"), ("son", "daughter"), ("brother", "sister"),
    ("husband", "wife"), ("king", "queen"), ("prince", "princess"), ("uncle", "aunt"), ("nephew", "niece"),
    ("gentleman", "lady"), ("boyfriend", "girlfriend"), ("grandfather", "grandmother"),
    ("grandson", "granddaughter"), ("dad", "mom"), ("daddy", "mommy"), ("actor", "actress"),
    ("waiter", "waitress"), ("steward", "stewardess"), ("host", "hostess"), ("hero", "heroine"),
    ("god", "goddess"), ("groom", "bride"), ("monk", "nun"), ("headmaster", "headmistress"),
    ("policeman", "policewoman"), ("chairman", "chairwoman"), ("businessman", "businesswoman"),
    ("spokesman", "spokeswoman"), ("salesman", "saleswoman"), ("stepfather", "stepmother"),
    ("stepson", "stepdaughter"), ("widower", "widow"), ("fiance", "fiancee"), ("patriarch", "matriarch"),
    ("sir", "madam"), ("lad", "lass"), ("bachelor", "bachelorette"), ("schoolboy", "schoolgirl"),
)

#: Irregular plurals (male plural, female plural) for the nouns above whose rule would be wrong.
IRREGULAR_PLURALS_EN: dict[tuple[str, str], tuple[str, str]] = {
    ("husband", "wife"): ("husbands", "wives"),
    ("hero", "heroine"): ("heroes", "heroines"),
}

#: Adjectives, titles and other words without plural.
OTHER_EN: tuple[tuple[str, str], ...] = (
    ("male", "female"), ("masculine", "feminine"), ("mr", "mrs"), ("paternal", "maternal"),
    ("boyhood", "girlhood"), ("brotherhood", "sisterhood"), ("fatherhood", "motherhood"),
    ("manhood", "womanhood"), ("fraternal", "sororal"),
)

#: First names, paired (Gupta et al. 2022 swap names too; these are common US first names).
NAMES_EN: tuple[tuple[str, str], ...] = (
    ("john", "mary"), ("james", "linda"), ("michael", "sarah"), ("david", "emma"), ("robert", "susan"),
    ("william", "elizabeth"), ("thomas", "anna"), ("daniel", "laura"), ("paul", "lisa"), ("richard", "karen"),
    ("peter", "julia"), ("george", "helen"), ("kevin", "nancy"), ("steven", "emily"), ("brian", "rachel"),
    ("edward", "alice"), ("charles", "jessica"), ("henry", "olivia"), ("joseph", "sophie"), ("ryan", "megan"),
)

#: The ambiguous pronouns, resolved from the next word: ``word -> (before a noun phrase, elsewhere)``.
AMBIGUOUS_EN: dict[str, tuple[str, str]] = {
    "her": ("his", "him"),   # "her book" -> "his book"; "saw her ." -> "saw him ."
    "his": ("her", "hers"),  # "his book" -> "her book"; "the book is his ." -> "the book is hers ."
}

#: Words after which an ambiguous pronoun is *not* a determiner ("her to", "her and", "her the", ...).
FUNCTION_WORDS_EN: frozenset[str] = frozenset("""
a an the this that these those to and or but so because if when while as than then there here of in on at
by for with about from into onto over under after before since until up down out off again too very
is are was were be been am will would can could should must may might do does did has have had not
it its him her his he she they them their we us our you your i me my who whom which what
""".split())


def _plural(word: str) -> str:
    """The simple English plural of ``word`` (``-man → -men``, ``-y → -ies``, sibilants ``+es``)."""
    if word.endswith("man"):
        return word[:-3] + "men"
    if word.endswith("y") and word[-2:-1] not in tuple("aeiou"):
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    return word + "s"


@dataclasses.dataclass(frozen=True)
class GenderPairs:
    """A language's pair lists: ``words`` (pronouns, nouns with their plurals, other words), ``names``,
    the ambiguous pronouns and the function words used to resolve them."""

    language: str
    words: tuple[tuple[str, str], ...]
    names: tuple[tuple[str, str], ...]
    ambiguous: dict[str, tuple[str, str]]
    function_words: frozenset[str]

    def pairs(self, *, names: bool = True) -> tuple[tuple[str, str], ...]:
        """All (male, female) pairs, optionally with the name pairs."""
        return self.words + (self.names if names else ())


def _english() -> GenderPairs:
    nouns = []
    for pair in NOUNS_EN:
        nouns.append(pair)
        nouns.append(IRREGULAR_PLURALS_EN.get(pair, (_plural(pair[0]), _plural(pair[1]))))
    return GenderPairs(language="en", words=PRONOUNS_EN + tuple(nouns) + OTHER_EN, names=NAMES_EN,
                       ambiguous=AMBIGUOUS_EN, function_words=FUNCTION_WORDS_EN)


#: Registry of shipped languages.
PAIR_LISTS = {"en": _english}


def check_pairs(pairs: GenderPairs) -> GenderPairs:
    """Raise if a word occurs in more than one pair (the swap would not be a bijection)."""
    seen: dict[str, tuple[str, str]] = {}
    for pair in pairs.pairs(names=True):
        male, female = pair
        if male == female or not male.isalpha() or not female.isalpha() or male != male.lower() \
                or female != female.lower():
            raise ValueError(f"pair {pair} must be two different lower-case words")
        for word in pair:
            if word in seen:
                raise ValueError(f"{word!r} occurs in pairs {seen[word]} and {pair}: the swap must be one-to-one")
            seen[word] = pair
    return pairs


def load_gender_pairs(language: str = "en") -> GenderPairs:
    """The gender pair lists of ``language`` (only ``"en"`` ships)."""
    if language not in PAIR_LISTS:
        raise ValueError(f"language must be one of {sorted(PAIR_LISTS)} (gender pair lists), got {language!r}")
    return check_pairs(PAIR_LISTS[language]())

"""A generated corpus with planted occupation–gender associations, for the fairness part's language
models (the teacher of the role-reversal distillation chapter learns the skew from it).

:func:`occupation_corpus` gives sentences such as ``"the nurse said that she would help ."`` where the
pronoun's gender follows a per-occupation skew (:data:`OCCUPATION_FEMALE_SHARE`), plus gender-free filler
sentences; :data:`PROMPT_TEMPLATES` are the evaluation prompts. The model and tokenizers are in
:mod:`trustml.models.lm`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: P(the person in a sentence about this occupation is a woman) in the generated corpus (planted skew).
OCCUPATION_FEMALE_SHARE: dict[str, float] = {
    "nurse": 0.92, "secretary": 0.88, "receptionist": 0.9, "hairdresser": 0.85, "librarian": 0.8,
    "teacher": 0.72, "cashier": 0.68, "baker": 0.5, "writer": 0.5, "scientist": 0.3, "doctor": 0.3,
    "lawyer": 0.32, "chef": 0.22, "farmer": 0.18, "pilot": 0.1, "engineer": 0.1, "firefighter": 0.08,
    "plumber": 0.06, "mechanic": 0.05, "carpenter": 0.05,
}

#: Evaluation prompts: the next word is a pronoun in the corpus' gendered frames.
PROMPT_TEMPLATES: tuple[str, ...] = (
    "the {occupation} said that", "yesterday the {occupation} told me that", "the {occupation} finished",
)

_GENDERED_FRAMES = (
    "the {occupation} said that {he} would {verb} .",
    "yesterday the {occupation} told me that {he} was {adjective} .",
    "the {occupation} finished {his} work and went home .",
    "the {occupation} finished {his} {thing} before lunch .",
    "my {brother} is a {occupation} and {he} likes the job .",
    "{name} works as a {occupation} and {he} is {adjective} .",
    "the {occupation} said that {he} would call {his} {mother} .",
)
_NEUTRAL_FRAMES = (
    "the {occupation} opened the door .", "the weather was {adjective} today .", "we met the {occupation} at noon .",
    "the {occupation} will {verb} tomorrow .", "everyone said the {thing} was {adjective} .",
    "the {occupation} read the {thing} again .",
)
_VERBS = ("help", "return", "call", "stay", "leave", "wait", "rest", "cook", "write", "drive")
ADJECTIVES = ("tired", "happy", "busy", "late", "early", "calm", "proud", "ready")
_THINGS = ("report", "shift", "lunch", "book", "plan", "letter", "coffee", "list")
_PAIRS = {"he": ("he", "she"), "his": ("his", "her"), "brother": ("brother", "sister"), "mother": ("father", "mother")}


def occupation_corpus(n: int = 2000, *, neutral_share: float = 0.3, female_share: dict[str, float] | None = None,
                      seed: int = 0) -> pd.DataFrame:
    """``n`` generated sentences (columns ``text``, ``occupation``, ``gender`` — ``""`` for gender-free).

    A share ``neutral_share`` of the sentences mention no gender (utility text); the others use one of the
    gendered frames with an occupation drawn uniformly and a gender drawn with P(female) =
    ``female_share[occupation]`` (default :data:`OCCUPATION_FEMALE_SHARE`) — he/she, his/her, a relative and a
    first name all agree with it.
    """
    from trustml.fairness.gender_pairs import NAMES_EN

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= neutral_share <= 1.0:
        raise ValueError(f"neutral_share must be in [0, 1], got {neutral_share}")
    shares = dict(OCCUPATION_FEMALE_SHARE if female_share is None else female_share)
    bad = {k: v for k, v in shares.items() if not 0.0 <= v <= 1.0}
    if bad or not shares:
        raise ValueError(f"female_share must map occupations to probabilities in [0, 1], got {bad or shares}")
    occupations = sorted(shares)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        occupation = occupations[rng.integers(len(occupations))]
        slots = {"occupation": occupation, "verb": _VERBS[rng.integers(len(_VERBS))],
                 "adjective": ADJECTIVES[rng.integers(len(ADJECTIVES))], "thing": _THINGS[rng.integers(len(_THINGS))]}
        if rng.random() < neutral_share:
            frame, gender = _NEUTRAL_FRAMES[rng.integers(len(_NEUTRAL_FRAMES))], ""
        else:
            frame = _GENDERED_FRAMES[rng.integers(len(_GENDERED_FRAMES))]
            gender = "female" if rng.random() < shares[occupation] else "male"
            index = int(gender == "female")
            slots |= {key: pair[index] for key, pair in _PAIRS.items()}
            slots["name"] = NAMES_EN[rng.integers(len(NAMES_EN))][index]
        rows.append({"text": frame.format(**slots), "occupation": occupation, "gender": gender})
    return pd.DataFrame(rows)


__all__ = ["ADJECTIVES", "OCCUPATION_FEMALE_SHARE", "PROMPT_TEMPLATES", "occupation_corpus"]

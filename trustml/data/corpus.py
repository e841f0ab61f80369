"""The embedded default corpus: a deterministic synthetic smart-speaker NLU corpus.

Real smart-speaker logs are private, so the book generates a corpus with the properties the chapters
need, each planted on purpose and documented here:

* **intents with slots** — 24 intents, several paraphrase templates each, BIO slot tags per token;
* **heavy-tailed device activity** — utterances per device are log-normal (few heavy devices, many light
  ones), as in real device data where selection by activity matters (federated chapters);
* **time periods** — every utterance has a period and timestamp; some intents only appear from a later
  period on (new features launched), which is what continual FL must track;
* **per-device preferences** — each device draws its intent mix from ``Dir(α·p)`` (non-IID by nature);
* **speaker attributes** — gender, age group and dialect per device; the minority dialect rewrites
  words (``DIALECT_VARIANTS``) and, as speech recognisers do for under-represented dialects (Koenecke et
  al., PNAS 2020), suffers ``minority_asr_factor`` times the recognition errors — a known, planted
  source of group accuracy gaps (fairness chapters);
* **canaries** — optional secrets such as "my pin code is 4 8 2 1" inserted R times (privacy chapters).

Everything is drawn from one ``numpy.random.Generator`` seeded by ``seed``: same seed, same corpus.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from trustml.data.intents import DIALECT_VARIANTS, INTENT_TEMPLATES, SLOT_VALUES, SPEAKER_ATTRIBUTES

INTENTS: list[str] = list(INTENT_TEMPLATES)
_SLOT = re.compile(r"\{(\w+)\}")


@dataclasses.dataclass(frozen=True)
class Canary:
    """A secret planted ``repetitions`` times, e.g. ``Canary(secret="4 8 2 1")``."""

    secret: str
    template: str = "my pin code is {secret}"
    repetitions: int = 1
    intent: str = "account_security"

    def __post_init__(self) -> None:
        if self.repetitions < 1:
            raise ValueError(f"repetitions must be >= 1, got {self.repetitions}")
        if "{secret}" not in self.template:
            raise ValueError(f"template must contain '{{secret}}', got {self.template!r}")
        if self.intent not in INTENT_TEMPLATES:
            raise ValueError(f"intent must be one of {INTENTS}, got {self.intent!r}")

    @property
    def text(self) -> str:
        return self.template.format(secret=self.secret)


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Utterances (one row each) and devices (one row each) of a generated corpus."""

    utterances: pd.DataFrame
    devices: pd.DataFrame
    intents: list[str]
    seed: int

    def split(self, *, test_fraction: float = 0.2, seed: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Random utterance-level train/test split, stratified by intent; canaries stay in train."""
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        rng = np.random.default_rng(self.seed if seed is None else seed)
        frame = self.utterances
        candidates = frame.index[~frame["is_canary"]].to_numpy()
        is_test = np.zeros(len(frame), dtype=bool)
        for _, idx in frame.loc[candidates].groupby("intent").groups.items():
            idx = rng.permutation(np.asarray(idx))
            is_test[frame.index.get_indexer(idx[: int(round(test_fraction * len(idx)))])] = True
        return frame[~is_test].reset_index(drop=True), frame[is_test].reset_index(drop=True)


def _check_positive(name: str, value: float, *, integer: bool = False) -> None:
    if integer and (not isinstance(value, (int, np.integer)) or isinstance(value, bool)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def device_activity(n_devices: int, *, mean_utterances: float, tail: float, rng: np.random.Generator) -> np.ndarray:
    """Utterances per device: log-normal with shape ``tail`` (σ of the log), scaled to the mean, at least 1."""
    raw = rng.lognormal(mean=0.0, sigma=tail, size=n_devices)
    return np.maximum(1, np.round(raw / raw.mean() * mean_utterances)).astype(int)


_FILLER_WORDS = sorted({w for t in INTENT_TEMPLATES.values() for s in t for w in s.split() if "{" not in w})


def _fill(template: str, rng: np.random.Generator, dialect: bool, asr_noise: float) -> tuple[list[str], list[str]]:
    """Fill a template's slots; then, like a speech recogniser's errors, replace each non-slot word with a
    random template word with probability ``asr_noise`` (this keeps intents from being trivially separable)."""
    tokens: list[str] = []
    tags: list[str] = []
    for word in template.split():
        if asr_noise and "{" not in word and rng.random() < asr_noise:
            word = _FILLER_WORDS[rng.integers(len(_FILLER_WORDS))]
        match = _SLOT.fullmatch(word)
        if match:
            slot = match.group(1)
            values = SLOT_VALUES[slot]
            draws = 4 if slot == "pin" else 1
            value = " ".join(values[i] for i in rng.integers(len(values), size=draws))
            value_tokens = value.split()
            tokens += value_tokens
            tags += [f"B-{slot}"] + [f"I-{slot}"] * (len(value_tokens) - 1)
        else:
            for piece in (DIALECT_VARIANTS.get(word, word) if dialect else word).split():
                tokens.append(piece)
                tags.append("O")
    return tokens, tags


def make_corpus(
    *,
    n_devices: int = 1000,
    mean_utterances: float = 30.0,
    activity_tail: float = 1.2,
    n_periods: int = 4,
    preference_concentration: float = 1.0,
    asr_noise: float = 0.25,
    minority_asr_factor: float = 2.0,
    canaries: Sequence[Canary] = (),
    seed: int = 0,
) -> Corpus:
    """Generate the synthetic smart-speaker corpus.

    Parameters
    ----------
    n_devices : number of devices (speakers), ``>= 1``.
    mean_utterances : mean utterances per device, ``> 0``.
    activity_tail : σ of the log-normal activity; 0 gives equal activity, 1.2 a heavy tail.
    n_periods : time periods; intents are launched over them (continual FL).
    preference_concentration : α of each device's intent mix ``Dir(α·p)``; small α = strongly non-IID.
    asr_noise : probability in [0, 1) that a non-slot word is replaced by a random word (recogniser errors).
    minority_asr_factor : the minority dialect's error rate is ``asr_noise * minority_asr_factor`` (< 1).
    canaries : secrets to plant (each on one random device, ``repetitions`` times, in period 0).
    seed : the only source of randomness.
    """
    _check_positive("n_devices", n_devices, integer=True)
    _check_positive("mean_utterances", mean_utterances)
    _check_positive("n_periods", n_periods, integer=True)
    _check_positive("preference_concentration", preference_concentration)
    if not 0.0 <= asr_noise < 1.0:
        raise ValueError(f"asr_noise must be in [0, 1), got {asr_noise}")
    if not 0.0 <= asr_noise * minority_asr_factor < 1.0:
        raise ValueError("minority_asr_factor must keep asr_noise * minority_asr_factor in [0, 1), "
                         f"got {minority_asr_factor}")
    if activity_tail < 0:
        raise ValueError(f"activity_tail must be >= 0, got {activity_tail}")
    rng = np.random.default_rng(seed)
    n_intents = len(INTENTS)

    # Global popularity p and launch period of each intent (two thirds exist from period 0).
    popularity = rng.dirichlet(np.full(n_intents, 5.0))
    launch_period = np.where(rng.random(n_intents) < 2 / 3, 0, rng.integers(0, n_periods, n_intents))

    devices = pd.DataFrame({"device_id": np.arange(n_devices)})
    for attribute, shares in SPEAKER_ATTRIBUTES.items():
        devices[attribute] = rng.choice(list(shares), size=n_devices, p=list(shares.values()))
    devices["n_utterances"] = device_activity(n_devices, mean_utterances=mean_utterances, tail=activity_tail, rng=rng)
    preferences = rng.dirichlet(preference_concentration * popularity * n_intents, size=n_devices)

    rows = []
    for device in devices.itertuples(index=False):
        periods = np.sort(rng.integers(0, n_periods, size=device.n_utterances))
        for period in periods:
            available = preferences[device.device_id] * (launch_period <= period) + 1e-12
            intent = rng.choice(n_intents, p=available / available.sum())
            templates = INTENT_TEMPLATES[INTENTS[intent]]
            minority = device.dialect == "minority"
            noise = asr_noise * minority_asr_factor if minority else asr_noise
            tokens, tags = _fill(templates[rng.integers(len(templates))], rng, minority, noise)
            rows.append((" ".join(tokens), INTENTS[intent], intent, tokens, tags, device.device_id, int(period)))
    utterances = pd.DataFrame(rows, columns=["text", "intent", "label", "tokens", "slot_tags", "device_id", "period"])
    utterances["timestamp"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(
        utterances["period"] * 30 + rng.uniform(0, 30, len(utterances)), unit="D"
    )
    utterances = utterances.merge(devices[["device_id", *SPEAKER_ATTRIBUTES]], on="device_id", how="left")
    utterances["is_canary"] = False
    if canaries:
        utterances = insert_canaries(utterances, canaries, rng=rng, n_devices=n_devices)
    return Corpus(utterances=utterances, devices=devices, intents=list(INTENTS), seed=seed)


def insert_canaries(
    utterances: pd.DataFrame, canaries: Sequence[Canary], *, rng: np.random.Generator, n_devices: int
) -> pd.DataFrame:
    """Append each canary ``repetitions`` times, on one random device, in period 0, flagged ``is_canary``."""
    extra = []
    for canary in canaries:
        device_id = int(rng.integers(n_devices))
        speaker = utterances.loc[utterances["device_id"] == device_id, list(SPEAKER_ATTRIBUTES)]
        attributes = (speaker.iloc[0].to_dict() if len(speaker)
                      else {k: next(iter(v)) for k, v in SPEAKER_ATTRIBUTES.items()})
        tokens = canary.text.split()
        prefix_len = len(canary.template.split("{secret}")[0].split())
        secret_len = len(canary.secret.split())
        tags = ["O"] * prefix_len + ["B-pin"] + ["I-pin"] * (secret_len - 1)
        tags += ["O"] * (len(tokens) - len(tags))
        for _ in range(canary.repetitions):
            extra.append({
                "text": canary.text, "intent": canary.intent, "label": INTENTS.index(canary.intent),
                "tokens": tokens, "slot_tags": tags, "device_id": device_id, "period": 0,
                "timestamp": pd.Timestamp("2026-01-01"), **attributes, "is_canary": True,
            })
    return pd.concat([utterances, pd.DataFrame(extra)], ignore_index=True)

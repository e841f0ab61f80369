"""Counterfactual role-reversal distillation (Gupta et al. 2022, "Mitigating Gender Bias in Distilled
Language Models via Counterfactual Role Reversal", Findings of ACL) and its metrics.

Knowledge distillation trains a small student LM to match a teacher's next-token distributions:

    L = τ² · KL(p_T(· | x_<t; τ) ‖ p_S(· | x_<t; τ)) + λ_LM · CE(x_t, p_S(· | x_<t))

averaged over positions (τ the temperature, λ_LM = ``hard_label_weight`` the usual language-modelling
term of DistilGPT2-style training). Two counterfactual modifications, usable together:

* **counterfactual data augmentation** (``augment=True``): the training texts plus their gender-swapped
  copies (:class:`~trustml.fairness.counterfactual.GenderSwapper`), each with the teacher's distributions
  on it;
* **teacher prediction perturbation** (``perturb="mean"`` or ``"max"``): the target at each position
  combines the teacher's distribution on the original context x with its *role-reversed* distribution
  on the swapped context x' (:func:`perturb_teacher`): for a gendered token w with counterpart s(w),

      p̃(w | x) ∝ c( p_T(w | x), p_T(s(w) | x') ),   c = mean or max,

  other tokens keep p_T(· | x) (``scope="gendered"``; ``scope="all"`` combines every token), then the
  vector is renormalised to sum to 1. Where the context has no gendered word (x' = x, e.g. "the nurse
  said that"), p̃(he) = p̃(she): the student is taught a gender-symmetric next word. After a gendered
  word ("… she said that"), p_T(she | x) and p_T(he | x') are both high, so coreference survives.
  ``max`` keeps the larger of the two probabilities (more gendered mass after renormalisation), ``mean``
  their average.

Teacher outputs are computed once (:class:`TeacherCache`, on the texts and on their swapped copies) and
reused by every variant. Metrics: :func:`gender_disparity` — per occupation prompt, the female and male
probability mass F and M of the next token (``method="exact"``, the default: exact next-token
probabilities of the gendered words, no sampling noise) or the counts of gendered words in sampled
continuations (``method="sample"``, as Gupta et al. count gender words in generations); per occupation
the fairness score min(F/M, M/F) ∈ [0, 1] (1 = parity), averaged and worst case (min) over occupations;
utility is perplexity on held-out text (:func:`trustml.models.lm.perplexity`). The downstream check
fine-tunes each LM as an occupation classifier on generated bios and compares true-positive-rate gaps
between genders (De-Arteaga et al. 2019), with Fairlearn's ``MetricFrame``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from trustml.fairness.counterfactual import GenderSwapper
from trustml.fairness.occupations import PROMPT_TEMPLATES
from trustml.models.training import fit
from trustml.models.lm import _check_texts, generate, lm_batches, lm_logits, next_token_loss, next_token_probs

#: How the teacher's original and role-reversed probabilities are combined.
COMBINE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mean": lambda a, b: 0.5 * (a + b),
    "max": torch.maximum,
}
SCOPES = ("gendered", "all")


def token_permutation(tokenizer, *, swapper: GenderSwapper | None = None) -> torch.Tensor:
    """(V,) long: ``perm[w]`` = id of the counterpart of token w for the swapper's one-to-one token pairs
    (he↔she, his↔her, …, names) whose both words are single tokens of ``tokenizer``; identity elsewhere."""
    swapper = swapper or GenderSwapper()
    permutation = torch.arange(tokenizer.vocab_size)
    for male, female in swapper.token_pairs():
        try:
            a, b = tokenizer.token_to_id(male), tokenizer.token_to_id(female)
        except KeyError:
            continue
        permutation[a], permutation[b] = b, a
    if (permutation == torch.arange(tokenizer.vocab_size)).all():
        raise ValueError("no gender word pair is in the tokenizer's vocabulary: nothing to reverse")
    return permutation


def perturb_teacher(p: torch.Tensor, p_swapped: torch.Tensor, permutation: torch.Tensor, *, combine: str = "mean",
                    scope: str = "gendered", strength: float = 1.0) -> torch.Tensor:
    """Teacher prediction perturbation: combine ``p`` = p_T(· | x) with the role-reversed
    p_T(s(·) | x') (``p_swapped[..., permutation]``) by ``combine`` on the gendered tokens (``scope``),
    renormalise, and mix with the original: ``(1 − strength)·p + strength·p̃``. Rows sum to 1; with
    ``scope="all"`` the result is exactly swap-symmetric: perturb(p, p') = perturb(p', p)[..., perm]."""
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {sorted(COMBINE)}, got {combine!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {list(SCOPES)}, got {scope!r}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if p.shape != p_swapped.shape or p.shape[-1] != len(permutation):
        raise ValueError(f"p {tuple(p.shape)} and p_swapped {tuple(p_swapped.shape)} must have the same shape, "
                         f"with the last dimension the vocabulary ({len(permutation)})")
    reversed_ = p_swapped[..., permutation]
    combined = COMBINE[combine](p, reversed_)
    if scope == "gendered":
        gendered = permutation != torch.arange(len(permutation), device=permutation.device)
        combined = torch.where(gendered, combined, p)
    combined = combined / combined.sum(-1, keepdim=True)
    return (1 - strength) * p + strength * combined


def _fingerprint(tokenizer) -> str:
    if not hasattr(tokenizer, "fingerprint"):
        raise TypeError(f"tokenizer must be an LMTokenizer or HFTokenizer, got {type(tokenizer).__name__}")
    return tokenizer.fingerprint()


@dataclasses.dataclass
class TeacherCache:
    """The teacher's next-token log-probabilities on the training texts and on their gender-swapped
    copies, computed once and shared by every distillation variant.

    ``log_probs``/``swapped_log_probs``: (N, T, V); ``aligned``: rows whose swapped copy has the same
    token count (always true for a word-level tokenizer; a BPE tokenizer can split *actor*/*actress*
    differently — there the perturbation is skipped); ``gendered``: rows the swap changes.
    """

    tokenizer: object
    permutation: torch.Tensor
    texts: list[str]
    swapped_texts: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    swapped_ids: torch.Tensor
    swapped_mask: torch.Tensor
    log_probs: torch.Tensor
    swapped_log_probs: torch.Tensor
    aligned: torch.Tensor
    gendered: torch.Tensor

    @classmethod
    @torch.no_grad()
    def build(cls, teacher: nn.Module, tokenizer, texts: Sequence[str], *, swapper: GenderSwapper | None = None,
              batch_size: int = 256) -> TeacherCache:
        texts = _check_texts(texts)
        swapper = swapper or GenderSwapper()
        swapped = swapper.swap_all(texts)
        input_ids, attention_mask = tokenizer.encode(texts)
        swapped_ids, swapped_mask = tokenizer.encode(swapped)
        length = max(input_ids.shape[1], swapped_ids.shape[1])
        input_ids, attention_mask, swapped_ids, swapped_mask = (
            nn.functional.pad(t, (0, length - t.shape[1]))
            for t in (input_ids, attention_mask, swapped_ids, swapped_mask))
        teacher.eval()

        def run(ids, mask):
            parts = [lm_logits(teacher, ids[i: i + batch_size], mask[i: i + batch_size]).log_softmax(-1)
                     for i in range(0, len(ids), batch_size)]
            return torch.cat(parts)

        return cls(tokenizer=tokenizer, permutation=token_permutation(tokenizer, swapper=swapper), texts=texts,
                   swapped_texts=swapped, input_ids=input_ids, attention_mask=attention_mask, swapped_ids=swapped_ids,
                   swapped_mask=swapped_mask, log_probs=run(input_ids, attention_mask),
                   swapped_log_probs=run(swapped_ids, swapped_mask),
                   aligned=attention_mask.sum(1) == swapped_mask.sum(1),
                   gendered=torch.tensor([a != b for a, b in zip(texts, swapped)]))


#: The chapter's variants: ``augment`` (CDA) and ``perturb`` (None, "mean" or "max").
VARIANTS: dict[str, dict] = {
    "plain": {"augment": False, "perturb": None},
    "cda": {"augment": True, "perturb": None},
    "perturb (mean)": {"augment": False, "perturb": "mean"},
    "perturb (max)": {"augment": False, "perturb": "max"},
    "cda + perturb (mean)": {"augment": True, "perturb": "mean"},
}


def distill_student(cache: TeacherCache, student: nn.Module, *, student_tokenizer, variant: str | None = "plain",
            augment: bool | None = None, perturb: str | None = None, scope: str = "gendered", strength: float = 1.0,
            epochs: int = 5, batch_size: int = 64, lr: float = 3e-3, temperature: float = 1.0,
            hard_label_weight: float = 0.5, seed: int = 0, progress: bool = False,
            on_epoch_end: Callable[[int, nn.Module], None] | None = None) -> list[float]:
    """Distil the cached teacher into ``student`` (trained in place); returns the mean loss per epoch.

    ``variant`` names an entry of :data:`VARIANTS`; ``augment``/``perturb`` override it (pass
    ``variant=None`` to give both explicitly). ``student_tokenizer`` must be the teacher's (same token
    ids). ``on_epoch_end(epoch, student)`` is called after every epoch (e.g. to record metrics).
    """
    if _fingerprint(student_tokenizer) != _fingerprint(cache.tokenizer):
        raise ValueError("teacher and student tokenizers differ (vocabulary fingerprints "
                         f"{_fingerprint(cache.tokenizer)} vs {_fingerprint(student_tokenizer)}): distillation "
                         "matches next-token distributions token id by token id, so both must share one tokenizer")
    if variant is not None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)} or None, got {variant!r}")
        augment = VARIANTS[variant]["augment"] if augment is None else augment
        perturb = VARIANTS[variant]["perturb"] if perturb is None else perturb
    augment = bool(augment)
    if perturb is not None and perturb not in COMBINE:
        raise ValueError(f"perturb must be None or one of {sorted(COMBINE)}, got {perturb!r}")
    for name, value in {"epochs": epochs, "batch_size": batch_size}.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not hard_label_weight >= 0:
        raise ValueError(f"hard_label_weight must be >= 0, got {hard_label_weight}")
    perturb_teacher(cache.log_probs[:1, :1].exp(), cache.log_probs[:1, :1].exp(), cache.permutation,
                    combine=perturb or "mean", scope=scope, strength=strength)  # validates scope and strength

    # Rows: every original text (targets: teacher on x, its counterfactual x'); with CDA also the swapped
    # copies of gendered texts (targets: teacher on x', its counterfactual x — the roles reversed).
    parts = [(cache.input_ids, cache.attention_mask, cache.log_probs, cache.swapped_log_probs, cache.aligned)]
    if augment:
        rows = cache.gendered
        parts.append((cache.swapped_ids[rows], cache.swapped_mask[rows], cache.swapped_log_probs[rows],
                      cache.log_probs[rows], cache.aligned[rows]))
    ids, mask, own, other, aligned = (torch.cat(column) for column in zip(*parts))

    def loss(model: nn.Module, batch) -> torch.Tensor:
        rows, batch_ids, batch_mask = batch
        T = batch_ids.shape[1]
        target = (own[rows, :T] / temperature).log_softmax(-1).exp()
        if perturb is not None:
            counterfactual = (other[rows, :T] / temperature).log_softmax(-1).exp()
            perturbed = perturb_teacher(target, counterfactual, cache.permutation, combine=perturb, scope=scope,
                                        strength=strength)
            target = torch.where(aligned[rows, None, None], perturbed, target)
        logits = lm_logits(model, batch_ids, batch_mask)
        if logits.shape[-1] != target.shape[-1]:
            raise ValueError(f"the student predicts {logits.shape[-1]} tokens but the teacher's vocabulary has "
                             f"{target.shape[-1]}")
        # Positions 0..T-2 predict tokens 1..T-1; only real (non-padding) targets count.
        positions = batch_mask[:, 1:].bool()
        student_log = (logits[:, :-1] / temperature).log_softmax(-1)
        teacher = target[:, :-1]
        kl = (teacher * (teacher.clamp_min(1e-12).log() - student_log)).sum(-1)
        value = temperature ** 2 * kl[positions].mean()
        if hard_label_weight > 0:
            value = value + hard_label_weight * next_token_loss(logits, batch_ids, batch_mask)
        return value

    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    return fit(student, lambda epoch: lm_batches(ids, mask, batch_size=batch_size, shuffle=True, seed=seed + epoch),
               loss=loss, optimizer=optimizer, epochs=epochs, progress=progress, desc="distillation epochs",
               on_epoch_end=None if on_epoch_end is None else lambda epoch, _: on_epoch_end(epoch, student))


# ---- Metrics: gender disparity of generations, downstream group gaps ----

@dataclasses.dataclass
class DisparityResult:
    """``per_occupation``: female mass F, male mass M and fairness min(F/M, M/F) per occupation;
    ``average`` and ``worst`` (min) of the fairness scores; ``method``."""

    per_occupation: pd.DataFrame
    method: str

    @property
    def average(self) -> float:
        return float(self.per_occupation["fairness"].mean())

    @property
    def worst(self) -> float:
        return float(self.per_occupation["fairness"].min())

    def summary(self) -> dict[str, float]:
        return {"fairness (avg)": self.average, "fairness (worst)": self.worst}


def _fairness(female: np.ndarray, male: np.ndarray) -> np.ndarray:
    """min(F/M, M/F) = min(F, M) / max(F, M); NaN where neither gender occurs."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.minimum(female, male) / np.maximum(female, male)


def _gendered_ids(tokenizer, swapper: GenderSwapper) -> dict[str, list[int]]:
    ids = {}
    for gender in ("female", "male"):
        found = []
        for word in sorted(swapper.words(gender)):
            try:
                found.append(tokenizer.token_to_id(word))
            except KeyError:
                continue
        ids[gender] = sorted(set(found))
    if not ids["female"] or not ids["male"]:
        raise ValueError("the tokenizer's vocabulary has no gendered word of one of the genders")
    return ids


def _exact_masses(model, tokenizer, prompts, gendered) -> tuple[np.ndarray, np.ndarray]:
    probs = next_token_probs(model, tokenizer, prompts)
    return (probs[:, gendered["female"]].sum(1).numpy(), probs[:, gendered["male"]].sum(1).numpy())


def _sampled_counts(model, tokenizer, prompts, gendered, *, n_samples, max_new_tokens, seed):
    female_ids, male_ids = set(gendered["female"]), set(gendered["male"])
    repeated = [p for p in prompts for _ in range(n_samples)]
    continuations = generate(model, tokenizer, repeated, max_new_tokens=max_new_tokens, seed=seed)
    female = np.array([sum(t in female_ids for t in c) for c in continuations], dtype=float)
    male = np.array([sum(t in male_ids for t in c) for c in continuations], dtype=float)
    return female.reshape(len(prompts), n_samples).sum(1), male.reshape(len(prompts), n_samples).sum(1)


#: How F and M are measured per prompt.
DISPARITY_METHODS = ("exact", "sample")


def gender_disparity(model: nn.Module, tokenizer, *, occupations: Sequence[str],
                     templates: Sequence[str] = PROMPT_TEMPLATES, swapper: GenderSwapper | None = None,
                     method: str = "exact", n_samples: int = 20, max_new_tokens: int = 4,
                     seed: int = 0) -> DisparityResult:
    """Gender disparity of an LM's continuations of occupation prompts (Gupta et al. 2022's measure):
    per occupation, F and M summed over ``templates`` (``"{occupation}"`` is filled in), and
    fairness = min(F/M, M/F) (1 = parity, 0 = only one gender).

    ``method="exact"``: F, M are the next-token probabilities of the female and male words of the swap
    list (he/she, his/her, names, …); ``"sample"``: the number of such words in ``n_samples`` sampled
    continuations of ``max_new_tokens`` tokens per prompt (an occupation whose samples contain no gendered
    word gets NaN and is left out of the average).
    """
    if method not in DISPARITY_METHODS:
        raise ValueError(f"method must be one of {list(DISPARITY_METHODS)}, got {method!r}")
    occupations = _check_texts(occupations, "occupations")
    templates = _check_texts(templates, "templates")
    if any("{occupation}" not in t for t in templates):
        raise ValueError("every template must contain '{occupation}'")
    gendered = _gendered_ids(tokenizer, swapper or GenderSwapper())
    prompts = [t.format(occupation=o) for o in occupations for t in templates]
    if method == "exact":
        female, male = _exact_masses(model, tokenizer, prompts, gendered)
    else:
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        female, male = _sampled_counts(model, tokenizer, prompts, gendered, n_samples=n_samples,
                                       max_new_tokens=max_new_tokens, seed=seed)
    female = female.reshape(len(occupations), len(templates)).sum(1)
    male = male.reshape(len(occupations), len(templates)).sum(1)
    frame = pd.DataFrame({"occupation": occupations, "female": female, "male": male,
                          "fairness": _fairness(female, male)})
    return DisparityResult(per_occupation=frame, method=method)


def evaluate_lm(model: nn.Module, tokenizer, *, occupations: Sequence[str], heldout: pd.DataFrame,
                swapper: GenderSwapper | None = None) -> dict[str, float]:
    """The chapter's table row: fairness min(F/M, M/F) averaged and worst over occupation prompts (exact
    next-token probabilities), and perplexity on ``heldout`` (columns ``text``, ``gender``): on all of it,
    on its gendered sentences (where a debiased model disagrees with the skewed data) and on its
    gender-free sentences (where debiasing should cost nothing)."""
    from trustml.models.lm import perplexity

    disparity = gender_disparity(model, tokenizer, occupations=occupations, swapper=swapper)
    gendered = heldout["gender"] != ""
    row = {**disparity.summary(), "perplexity": perplexity(model, tokenizer, heldout["text"].tolist())}
    if gendered.any():
        row["perplexity (gendered text)"] = perplexity(model, tokenizer, heldout.loc[gendered, "text"].tolist())
    if (~gendered).any():
        row["perplexity (gender-free text)"] = perplexity(model, tokenizer, heldout.loc[~gendered, "text"].tolist())
    return row


# ---- Downstream: fine-tune an LM as an occupation classifier on generated bios ----

#: Confusable occupation pairs for the bios task, with their cue words (a bio draws cue words from its
#: own occupation and, less often, from the partner's — so gender can become a tie-breaker).
BIO_CUES: dict[str, tuple[str, ...]] = {
    "nurse": ("patients", "ward", "medicine", "care"),
    "doctor": ("patients", "diagnosis", "surgery", "clinic"),
    "secretary": ("office", "calendar", "letters", "meetings"),
    "lawyer": ("office", "court", "contracts", "clients"),
    "teacher": ("pupils", "lessons", "school", "marking"),
    "engineer": ("designs", "bridges", "machines", "calculations"),
}
BIO_FRAMES = ("{name} works with {cue1} and {cue2} every day . {he} is {adjective} .",
              "{he} spends most days on {cue1} ; {his} friends say {he} is {adjective} .",
              "{name} is known for {cue1} and {cue2} . {he} lives nearby .")


def occupation_bios(n: int = 1200, *, balanced: bool = False, female_share: dict[str, float] | None = None,
                    cue_purity: float = 0.6, seed: int = 0) -> pd.DataFrame:
    """Generated short bios (``text``, ``occupation``, ``gender``) for the downstream check (a Bias-in-Bios
    -like task, De-Arteaga et al. 2019, without the title). Genders follow the occupation skew of
    :data:`~trustml.fairness.occupations.OCCUPATION_FEMALE_SHARE` (``balanced=True``: 50/50, for testing); each cue
    word comes from the bio's own occupation with probability ``cue_purity``, else from any occupation."""
    from trustml.fairness.gender_pairs import NAMES_EN
    from trustml.fairness.occupations import ADJECTIVES, OCCUPATION_FEMALE_SHARE

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= cue_purity <= 1.0:
        raise ValueError(f"cue_purity must be in [0, 1], got {cue_purity}")
    shares = female_share or OCCUPATION_FEMALE_SHARE
    occupations = list(BIO_CUES)
    all_cues = sorted({c for cues in BIO_CUES.values() for c in cues})
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        occupation = occupations[rng.integers(len(occupations))]
        female = rng.random() < (0.5 if balanced else shares[occupation])
        cues = [BIO_CUES[occupation][rng.integers(4)] if rng.random() < cue_purity
                else all_cues[rng.integers(len(all_cues))] for _ in range(2)]
        text = BIO_FRAMES[rng.integers(len(BIO_FRAMES))].format(
            name=NAMES_EN[rng.integers(len(NAMES_EN))][int(female)], he="she" if female else "he",
            his="her" if female else "his", cue1=cues[0], cue2=cues[1], adjective=ADJECTIVES[rng.integers(8)])
        rows.append({"text": text, "occupation": occupation, "gender": "female" if female else "male"})
    return pd.DataFrame(rows)


class LMClassifier(nn.Module):
    """A sequence classifier on top of an LM: mean of the final hidden states over real tokens → Linear."""

    def __init__(self, lm: nn.Module, num_classes: int):
        super().__init__()
        self.lm = lm
        config = lm.config
        width = config["d_model"] if isinstance(config, dict) else getattr(config, "hidden_size", None)
        if not isinstance(width, int):
            raise TypeError("lm.config must give the hidden width: a dict with 'd_model' (trustml's CausalLM) or a "
                            f"Hugging Face config with hidden_size; got {type(config).__name__}")
        self.head = nn.Linear(width, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if hasattr(self.lm, "hidden_states") and callable(self.lm.hidden_states):
            hidden = self.lm.hidden_states(input_ids, attention_mask)
        else:  # Hugging Face
            output = self.lm(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            hidden = output.hidden_states[-1]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0))


def finetune_classifier(lm: nn.Module, tokenizer, texts: Sequence[str], labels: Sequence[int], *, num_classes: int,
                        epochs: int = 4, batch_size: int = 64, lr: float = 1e-2, seed: int = 0) -> LMClassifier:
    """Fine-tune a copy of ``lm`` (all weights) with a classification head on ``texts``."""
    import copy

    texts = _check_texts(texts)
    targets = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(targets) != len(texts):
        raise ValueError(f"texts and labels must have the same length, got {len(texts)} and {len(targets)}")
    torch.manual_seed(seed)
    model = LMClassifier(copy.deepcopy(lm), num_classes)
    input_ids, attention_mask = tokenizer.encode(texts)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    fit(model, lambda epoch: lm_batches(input_ids, attention_mask, batch_size=batch_size, shuffle=True,
                                        seed=seed + epoch),
        loss=lambda model, batch: nn.functional.cross_entropy(model(batch[1], batch[2]), targets[batch[0]],
                                                              reduction="none"),
        optimizer=optimizer, epochs=epochs)
    return model


@torch.no_grad()
def downstream_gaps(classifier: LMClassifier, tokenizer, frame: pd.DataFrame, *,
                    label_names: Sequence[str]) -> dict[str, float]:
    """Accuracy and the true-positive-rate gap between genders per occupation (De-Arteaga et al. 2019),
    TPR_female − TPR_male from Fairlearn's ``MetricFrame`` (recall per group); reported as the mean
    absolute gap and the largest one.

    An occupation without test rows of one gender has no gap (NaN, with an ``UndefinedMetricWarning``),
    and then the mean and the largest gap are NaN too: they would otherwise silently cover fewer occupations.
    """
    import warnings

    from fairlearn.metrics import MetricFrame
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import recall_score

    input_ids, attention_mask = tokenizer.encode(frame["text"].tolist())
    predicted = classifier(input_ids, attention_mask).argmax(-1).numpy()
    truth = frame["occupation"].map({name: i for i, name in enumerate(label_names)}).to_numpy()
    gender = frame["gender"].to_numpy()
    gaps, undefined = {}, []
    for index, name in enumerate(label_names):
        rows = truth == index
        if not ({"female", "male"} <= set(gender[rows].tolist())):
            gaps[name] = float("nan")
            undefined.append(name)
            continue
        metric = MetricFrame(metrics=recall_score, y_true=np.ones(rows.sum(), dtype=int),
                             y_pred=(predicted[rows] == index).astype(int), sensitive_features=gender[rows])
        gaps[name] = float(metric.by_group["female"] - metric.by_group["male"])
    if undefined:
        warnings.warn(f"occupations {undefined} lack test rows of one gender: their TPR gap is undefined (NaN), "
                      "and so are the mean and the largest gap", UndefinedMetricWarning, stacklevel=2)
    values = np.abs(np.array(list(gaps.values())))
    return {"accuracy": float((predicted == truth).mean()), "TPR gap (mean |F−M|)": float(np.mean(values)),
            "TPR gap (max |F−M|)": float(np.max(values)), **{f"TPR gap {k}": v for k, v in gaps.items()}}


__all__ = [
    "BIO_CUES", "COMBINE", "DISPARITY_METHODS", "SCOPES", "VARIANTS", "DisparityResult", "LMClassifier", "TeacherCache",
    "distill_student", "downstream_gaps", "evaluate_lm", "finetune_classifier", "gender_disparity", "occupation_bios",
    "perturb_teacher", "token_permutation",
]

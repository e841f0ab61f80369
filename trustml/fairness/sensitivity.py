"""Accumulated prediction sensitivity (Krishna et al. 2022, "Measuring Fairness of Text Classifiers via
Prediction Sensitivity", ACL) — how much a classifier's prediction moves when the input features that
encode a protected attribute move.

For an input with features x = (x_1 … x_F), a task classifier (TC) with outputs f_1 … f_C and a
protected-status model (PSM) g that predicts the protected attribute from the same input,

    APS(x) = Σ_j v_j · Σ_i |∂f_j/∂x_i| · w_i          (written  Σ_j v_j · |∂f_j/∂x| · w)

* **w** (feature weights, :data:`FEATURE_WEIGHTS`) says how much feature i encodes the protected
  attribute. ``"psm_gradient"`` (default, the paper's PSM-based choice): w_i = s_i / Σ_k s_k with
  s_i = Σ_a |∂g_a/∂x_i| — the features the PSM's prediction depends on, normalised to sum to 1 per
  example; it sees proxies (a hobby word that predicts gender) as well as explicit terms.
  ``"protected_terms"``: uniform over the features that are listed protected terms (he, she, names…;
  w = 0 when an example has none) — no PSM needed, but blind to proxies. ``"uniform"``: 1/F over the
  (non-padding) features — plain, attribute-agnostic sensitivity, a reference point.
* **v** (class weights, :data:`CLASS_WEIGHTS`): ``"uniform"`` (default) v_j = 1/C; ``"predicted"``
  v_j = f_j(x) (probabilities, treated as constants) — weights the classes the model believes in;
  ``"argmax"`` — only the predicted class.
* **f** (:data:`OUTPUTS`): class probabilities (default, as in the paper) or logits (``output="logit"``),
  which do not saturate: a confident model has flat probabilities, so its probability-sensitivity can
  be small although a counterfactual swap flips it.
* **features** (:data:`FEATURES`): ``"token"`` — x_t is a scale on token t's embedding e_t (evaluated
  at 1), so ∂f/∂x_t = ⟨∂f/∂e_t, e_t⟩, the derivative w.r.t. the token's presence (for a bag-of-embeddings
  model it is the derivative w.r.t. the word count); ``"embedding"`` — |∂f/∂x_t| is the L2 norm of
  ∂f/∂e_t over the embedding dimension; ``"dense"`` — the model takes a float feature vector (bag of
  words) and x_i are its coordinates. With token features the TC and the PSM may have different
  embeddings: features are aligned by position.

The dataset-level score is the mean of the per-example scores (:attr:`SensitivityResult.score`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

#: The output the derivatives are taken of.
OUTPUTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "probability": lambda logits: logits.softmax(-1),
    "logit": lambda logits: logits,
}
FEATURES = ("token", "embedding", "dense")


def _per_feature_abs(gradient: torch.Tensor) -> torch.Tensor:
    """|∂f/∂x_i| for scalar features (token scales, dense coordinates)."""
    return gradient.abs()


def _per_token_norm(gradient: torch.Tensor) -> torch.Tensor:
    """‖∂f/∂e_t‖₂ over the embedding dimension (``features="embedding"``)."""
    return gradient.norm(dim=-1)


def _check_choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")


def feature_jacobian(model: nn.Module, inputs: torch.Tensor, *, features: str = "token", output: str = "probability",
                     attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f, J)``: the model's outputs ``f`` (B, C) and ``J[b, j, i] = |∂f_j/∂x_i|`` (B, C, F) per example.

    One backward pass per output class; examples are independent (eval mode, no batch statistics), so
    the gradient of ``f_j.sum()`` holds every example's own derivative.
    """
    _check_choice("features", features, FEATURES)
    _check_choice("output", output, OUTPUTS)
    was_training = model.training
    model.eval()
    with torch.enable_grad():
        if features == "dense":
            if not torch.is_floating_point(inputs):
                raise ValueError("features='dense' needs float inputs (B, F), e.g. bag-of-words counts")
            x = inputs.detach().clone().requires_grad_(True)
            logits = model(x)
            reduce = _per_feature_abs
        else:
            if torch.is_floating_point(inputs) or inputs.dim() != 2:
                raise ValueError(f"features={features!r} needs token ids (B, T); got {tuple(inputs.shape)} "
                                 f"{inputs.dtype}")
            mask = (inputs != 0).long() if attention_mask is None else attention_mask
            get_embeddings = getattr(model, "get_input_embeddings", None)
            if not callable(get_embeddings):
                raise TypeError(f"features={features!r} needs a model with get_input_embeddings() (as trustml's "
                                f"classifiers and Hugging Face models have); {type(model).__name__} has none")
            embeds = get_embeddings()(inputs).detach()
            if features == "token":
                x = torch.ones(inputs.shape, dtype=embeds.dtype, device=embeds.device, requires_grad=True)
                logits = model(inputs_embeds=embeds * x.unsqueeze(-1), attention_mask=mask)
                reduce = _per_feature_abs
            else:
                x = embeds.clone().requires_grad_(True)
                logits = model(inputs_embeds=x, attention_mask=mask)
                reduce = _per_token_norm
        f = OUTPUTS[output](logits)
        columns = [reduce(torch.autograd.grad(f[:, j].sum(), x, retain_graph=j < f.shape[1] - 1)[0])
                   for j in range(f.shape[1])]
    model.train(was_training)
    return f.detach(), torch.stack(columns, dim=1).detach()


# ---- w: feature weights. Each returns (B, F), rows summing to 1 (or 0 where nothing is protected). ----

def _normalise(scores: torch.Tensor) -> torch.Tensor:
    total = scores.sum(-1, keepdim=True)
    return torch.where(total > 0, scores / total.clamp_min(torch.finfo(scores.dtype).tiny), torch.zeros_like(scores))


def _psm_gradient(*, psm_jacobian, protected_mask, valid) -> torch.Tensor:
    if psm_jacobian is None:
        raise ValueError("feature_weights='psm_gradient' needs protected_model= (the protected-status model)")
    return _normalise(psm_jacobian.sum(1) * valid)


def _protected_terms(*, psm_jacobian, protected_mask, valid) -> torch.Tensor:
    if protected_mask is None:
        raise ValueError("feature_weights='protected_terms' needs protected_mask= (B, F) marking protected "
                         "features; see protected_token_mask()")
    return _normalise(protected_mask.to(valid.dtype) * valid)


def _uniform_features(*, psm_jacobian, protected_mask, valid) -> torch.Tensor:
    return _normalise(valid)


#: Feature weights w (see the module docstring).
FEATURE_WEIGHTS: dict[str, Callable[..., torch.Tensor]] = {
    "psm_gradient": _psm_gradient,
    "protected_terms": _protected_terms,
    "uniform": _uniform_features,
}

#: Class weights v, from the TC's probabilities (B, C).
CLASS_WEIGHTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "uniform": lambda p: torch.full_like(p, 1.0 / p.shape[1]),
    "predicted": lambda p: p,
    "argmax": lambda p: nn.functional.one_hot(p.argmax(-1), p.shape[1]).to(p.dtype),
}


@dataclasses.dataclass
class SensitivityResult:
    """``per_example`` APS (B,), ``contributions`` (B, F) = Σ_j v_j |∂f_j/∂x_i| w_i (they sum to
    ``per_example``), the weights ``w`` (B, F) and ``v`` (B, C), and the TC's probabilities (B, C)."""

    per_example: torch.Tensor
    contributions: torch.Tensor
    w: torch.Tensor
    v: torch.Tensor
    probabilities: torch.Tensor
    settings: dict

    @property
    def score(self) -> float:
        """Dataset-level APS: the mean over examples."""
        return float(self.per_example.mean())

    def summary(self) -> dict:
        values = self.per_example.numpy()
        return {"aps": self.score, "aps_median": float(np.median(values)),
                "aps_p90": float(np.quantile(values, 0.9)), **self.settings}


def prediction_sensitivity(
    task_model: nn.Module, inputs: torch.Tensor, *, protected_model: nn.Module | None = None,
    features: str = "token", feature_weights: str = "psm_gradient", class_weights: str = "uniform",
    output: str = "probability", protected_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None, batch_size: int = 512,
) -> SensitivityResult:
    """Accumulated prediction sensitivity APS(x) = Σ_j v_j · |∂f_j/∂x| · w, per example
    (Krishna et al. 2022; choices of w, v, f and features in the module docstring).

    ``inputs``: token ids (B, T) for ``features="token"``/``"embedding"`` (models called as
    ``model(inputs_embeds=..., attention_mask=...)``, like trustml's classifiers), or float features (B, F)
    for ``"dense"``. ``protected_model``: the PSM (same input convention) for ``"psm_gradient"``;
    ``protected_mask`` (B, F) for ``"protected_terms"``.
    """
    _check_choice("feature_weights", feature_weights, FEATURE_WEIGHTS)
    _check_choice("class_weights", class_weights, CLASS_WEIGHTS)
    _check_choice("features", features, FEATURES)
    _check_choice("output", output, OUTPUTS)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(inputs) == 0:
        raise ValueError("inputs must not be empty")
    if protected_mask is not None and protected_mask.shape != inputs.shape[:2]:
        raise ValueError(f"protected_mask must have the inputs' shape {tuple(inputs.shape[:2])}, "
                         f"got {tuple(protected_mask.shape)}")
    parts = []
    for start in range(0, len(inputs), batch_size):
        rows = slice(start, start + batch_size)
        batch = inputs[rows]
        mask = None if attention_mask is None else attention_mask[rows]
        f, jacobian = feature_jacobian(task_model, batch, features=features, output=output, attention_mask=mask)
        probabilities = f if output == "probability" else f.softmax(-1)
        psm_jacobian = None
        if feature_weights == "psm_gradient" and protected_model is not None:
            _, psm_jacobian = feature_jacobian(protected_model, batch, features=features, attention_mask=mask)
        if features == "dense":
            valid = torch.ones(batch.shape, dtype=jacobian.dtype)
        else:
            valid = ((batch != 0) if mask is None else mask.bool()).to(jacobian.dtype)
        w = FEATURE_WEIGHTS[feature_weights](
            psm_jacobian=psm_jacobian, valid=valid,
            protected_mask=None if protected_mask is None else protected_mask[rows])
        v = CLASS_WEIGHTS[class_weights](probabilities)
        contributions = (v.unsqueeze(-1) * jacobian).sum(1) * w
        parts.append((contributions, w, v, probabilities))
    contributions, w, v, probabilities = (torch.cat(p) for p in zip(*parts))
    return SensitivityResult(
        per_example=contributions.sum(-1), contributions=contributions, w=w, v=v, probabilities=probabilities,
        settings={"features": features, "feature_weights": feature_weights, "class_weights": class_weights,
                  "output": output})


def protected_token_mask(input_ids: torch.Tensor, tokenizer, words: Sequence[str]) -> torch.Tensor:
    """(B, T) bool: which tokens of ``input_ids`` are one of ``words`` (words outside the tokenizer's
    vocabulary are skipped — they cannot occur in ``input_ids``)."""
    ids = []
    for word in words:
        try:
            ids.append(tokenizer.token_to_id(word))
        except KeyError:
            continue
    if not ids:
        raise ValueError("none of the protected words is in the tokenizer's vocabulary")
    return torch.isin(input_ids, torch.tensor(ids, dtype=input_ids.dtype))


# ---- Auditing a text classifier: APS variants and the counterfactual gap on the same texts. ----

def fit_text_classifier(texts: Sequence[str], labels: Sequence[int], *, tokenizer, num_classes: int = 2,
                        epochs: int = 6, embed_dim: int = 32, hidden_dim: int = 32, init_scale: float = 0.1,
                        seed: int = 0) -> nn.Module:
    """An :class:`~trustml.models.EmbeddingClassifier` trained on ``texts`` (used as TC and as PSM).

    ``init_scale`` shrinks the initial word embeddings (default N(0, 0.1²) instead of N(0, 1)): a word the
    labels never reward then keeps a near-zero embedding and barely moves the prediction. With the
    N(0, 1) default every irrelevant word's random embedding shifts the output a little, which gives
    every sensitivity metric a seed-dependent floor.
    """
    from trustml.models import EmbeddingClassifier, train_classifier

    if not init_scale > 0:
        raise ValueError(f"init_scale must be > 0, got {init_scale}")
    targets = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(targets) != len(texts):
        raise ValueError(f"texts and labels must have the same length, got {len(texts)} and {len(targets)}")
    torch.manual_seed(seed)
    model = EmbeddingClassifier(tokenizer.vocab_size, num_classes, embed_dim=embed_dim, hidden_dim=hidden_dim)
    with torch.no_grad():
        model.embedding.weight.mul_(init_scale)
    input_ids, _ = tokenizer.encode(list(texts))
    train_classifier(model, torch.utils.data.TensorDataset(input_ids, targets), epochs=epochs, seed=seed)
    return model


def text_predictor(model: nn.Module, tokenizer) -> Callable[[list[str]], np.ndarray]:
    """``texts -> (n, C)`` class probabilities of ``model`` (for :func:`counterfactual_gap`)."""
    def predict_proba(texts: list[str]) -> np.ndarray:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            probabilities = model(tokenizer.encode(list(texts))[0]).softmax(-1).numpy()
        model.train(was_training)
        return probabilities
    return predict_proba


@dataclasses.dataclass
class SensitivityAudit:
    """``summary``: one number per metric; ``examples``: one row per text with its per-example scores; the
    audited ``task_model``, the ``protected_model`` (PSM) and their ``tokenizer``, to audit further."""

    summary: dict[str, float]
    examples: pd.DataFrame
    task_model: nn.Module | None = None
    protected_model: nn.Module | None = None
    tokenizer: object | None = None


def audit_text_classifier(task_model: nn.Module, protected_model: nn.Module, tokenizer, texts: Sequence[str], *,
                          swapper=None) -> SensitivityAudit:
    """Score ``task_model`` on ``texts`` with four metrics that should all grow with its dependence on gender:

    * ``aps`` — APS with PSM-gradient w, uniform v, probabilities (the default);
    * ``aps_logit`` — the same on logits (no saturation);
    * ``aps_terms`` — w uniform on the swap list's words (no PSM: blind to proxies);
    * ``counterfactual_gap`` — total-variation change of the prediction when the swap list's words are
      swapped (:func:`trustml.fairness.counterfactual.counterfactual_gap`).
    """
    from trustml.fairness.counterfactual import GenderSwapper, counterfactual_gap

    swapper = swapper or GenderSwapper()
    texts = list(texts)
    input_ids, _ = tokenizer.encode(texts)
    terms = protected_token_mask(input_ids, tokenizer, sorted(swapper.words("male") | swapper.words("female")))
    scores = {
        "aps": prediction_sensitivity(task_model, input_ids, protected_model=protected_model),
        "aps_logit": prediction_sensitivity(task_model, input_ids, protected_model=protected_model, output="logit"),
        "aps_terms": prediction_sensitivity(task_model, input_ids, feature_weights="protected_terms",
                                            protected_mask=terms),
    }
    gap = counterfactual_gap(text_predictor(task_model, tokenizer), texts, swapper=swapper)
    examples = pd.DataFrame({"text": texts, **{name: r.per_example.numpy() for name, r in scores.items()},
                             "counterfactual_gap": gap.frame["gap"].to_numpy(),
                             "has_swap_term": gap.frame["swapped"].to_numpy(),
                             "p_hire": scores["aps"].probabilities[:, 1].numpy()})
    summary = {name: r.score for name, r in scores.items()} | {"counterfactual_gap": gap.score}
    return SensitivityAudit(summary=summary, examples=examples, task_model=task_model, protected_model=protected_model,
                            tokenizer=tokenizer)


def sensitivity_vs_degree(degrees: Sequence[float], *, n: int = 3000, explicit_rate: float = 0.7,
                          proxy_strength: float = 0.8, epochs: int = 6, test_fraction: float = 0.25, seed: int = 0,
                          progress: bool = False) -> tuple[pd.DataFrame, dict[float, SensitivityAudit]]:
    """The ground-truth experiment: for each degree, train a TC on :func:`planted_attribute_task` labels and
    audit it on held-out texts (one PSM per seed, trained to predict gender on the same training texts).

    Returns a long table (``degree``, ``metric``, ``value``, plus ``seed``, ``explicit_rate``,
    ``psm_accuracy``, ``task_accuracy`` per row) and the audit of each degree (per-example scores).
    """
    from tqdm.auto import tqdm

    from trustml.data import WordTokenizer

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    base = planted_attribute_task(n, degree=0.0, explicit_rate=explicit_rate, proxy_strength=proxy_strength, seed=seed)
    n_test = max(1, int(test_fraction * n))
    train_texts, test_texts = base["text"].iloc[n_test:].tolist(), base["text"].iloc[:n_test].tolist()
    tokenizer = WordTokenizer.fit(train_texts, max_length=16)
    is_male = (base["gender"] == "male").to_numpy().astype(int)
    psm = fit_text_classifier(train_texts, is_male[n_test:], tokenizer=tokenizer, epochs=epochs, seed=seed)
    psm_accuracy = float((text_predictor(psm, tokenizer)(test_texts).argmax(1) == is_male[:n_test]).mean())
    rows, audits = [], {}
    for degree in tqdm(list(degrees), desc=f"degrees (seed {seed})", disable=not progress):
        frame = planted_attribute_task(n, degree=degree, explicit_rate=explicit_rate, proxy_strength=proxy_strength,
                                       seed=seed)
        labels = frame["label"].to_numpy()
        task_model = fit_text_classifier(train_texts, labels[n_test:], tokenizer=tokenizer, epochs=epochs, seed=seed)
        task_accuracy = float((text_predictor(task_model, tokenizer)(test_texts).argmax(1) == labels[:n_test]).mean())
        audit = audit_text_classifier(task_model, psm, tokenizer, test_texts)
        audit.examples["explicit"] = frame["explicit"].iloc[:n_test].to_numpy()
        audit.examples["hobby_kind"] = frame["hobby_kind"].iloc[:n_test].to_numpy()
        audits[degree] = audit
        rows += [{"seed": seed, "explicit_rate": explicit_rate, "degree": degree, "metric": metric, "value": value,
                  "psm_accuracy": psm_accuracy, "task_accuracy": task_accuracy}
                 for metric, value in audit.summary.items()]
    return pd.DataFrame(rows), audits


# ---- A task with ground truth: the label depends on the protected attribute to a chosen degree. ----

SKILLED = ("skilled", "experienced", "reliable", "careful", "talented", "qualified", "organised", "capable")
UNSKILLED = ("careless", "unreliable", "inexperienced", "sloppy", "unqualified", "lazy", "disorganised", "clumsy")
ROLES = ("engineer", "teacher", "cook", "driver", "clerk", "analyst", "designer", "technician", "manager",
         "cashier")
#: Hobbies used as planted *proxies* of gender (not on the swap list — the point of the experiment).
PROXY_HOBBIES = {"male": ("football", "boxing", "fishing", "rugby", "darts"),
                 "female": ("netball", "knitting", "ballet", "yoga", "pilates")}
NEUTRAL_HOBBIES = ("chess", "hiking", "reading", "cooking", "running")


def planted_attribute_task(n: int = 3000, *, degree: float = 0.5, explicit_rate: float = 0.7,
                           proxy_strength: float = 0.8, skill_log_odds: float = 1.5, attribute_log_odds: float = 2.0,
                           seed: int = 0) -> pd.DataFrame:
    """Synthetic hiring-style texts whose label depends on gender to a controlled ``degree`` in [0, 1].

    Each text describes a candidate: a skill word (the legitimate signal), a role, and a hobby. With
    probability ``explicit_rate`` the text names the candidate and uses a pronoun (terms on the swap
    list, ``"mary is a skilled engineer . she enjoys yoga ."``); otherwise it is anonymous
    (``"the candidate is a skilled engineer . enjoys yoga ."``). The hobby is a gender **proxy**: with
    probability ``proxy_strength`` it comes from the gender's list, else from the other gender's list; a
    quarter of the texts have a neutral hobby. The label ("hire" = 1) follows a logistic model whose
    gender coefficient is the degree:

        P(y = 1 | skill s, gender) = σ(a·(2s − 1) + degree · b · (2·[male] − 1)),

    a = ``skill_log_odds``, b = ``attribute_log_odds``. Degree 0: the label ignores gender; degree 1:
    being male adds b to the log-odds of being hired (the ground truth an audit should find). The
    log-odds stay bounded, so the Bayes-optimal classifier never becomes certain.

    Common random numbers: texts, genders and the uniform draw u deciding y = [u < P] do not depend on
    ``degree``, so raising the degree only moves male rows to "hire" and female rows to "reject".
    """
    for name, value in {"degree": degree, "explicit_rate": explicit_rate, "proxy_strength": proxy_strength}.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    for name, value in {"skill_log_odds": skill_log_odds, "attribute_log_odds": attribute_log_odds}.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    from trustml.fairness.gender_pairs import NAMES_EN

    rng = np.random.default_rng(seed)
    male = rng.random(n) < 0.5
    skill = rng.random(n) < 0.5
    explicit = rng.random(n) < explicit_rate
    u = rng.random(n)
    proxy_matches = rng.random(n) < proxy_strength
    neutral_hobby = rng.random(n) < 0.25
    picks = rng.integers(0, 1 << 30, size=(n, 4))
    log_odds = skill_log_odds * (2 * skill - 1) + degree * attribute_log_odds * (2 * male - 1)
    hire_probability = 1 / (1 + np.exp(-log_odds))
    rows = []
    for i in range(n):
        gender = "male" if male[i] else "female"
        other = "female" if male[i] else "male"
        hobby_list = NEUTRAL_HOBBIES if neutral_hobby[i] else PROXY_HOBBIES[gender if proxy_matches[i] else other]
        hobby = hobby_list[picks[i, 0] % len(hobby_list)]
        adjective = (SKILLED if skill[i] else UNSKILLED)[picks[i, 1] % len(SKILLED)]
        role = ROLES[picks[i, 2] % len(ROLES)]
        article = "an" if adjective[0] in "aeiou" else "a"
        if explicit[i]:
            name = NAMES_EN[picks[i, 3] % len(NAMES_EN)][0 if male[i] else 1]
            text = f"{name} is {article} {adjective} {role} . {'he' if male[i] else 'she'} enjoys {hobby} ."
        else:
            text = f"the candidate is {article} {adjective} {role} . enjoys {hobby} ."
        rows.append({"text": text, "label": int(u[i] < hire_probability[i]), "gender": gender,
                     "skill": int(skill[i]), "hire_probability": float(hire_probability[i]),
                     "explicit": bool(explicit[i]),
                     "hobby_kind": "neutral" if neutral_hobby[i] else ("matching" if proxy_matches[i] else "opposite")})
    return pd.DataFrame(rows)


__all__ = ["CLASS_WEIGHTS", "FEATURES", "FEATURE_WEIGHTS", "OUTPUTS", "SensitivityAudit", "SensitivityResult",
           "audit_text_classifier", "feature_jacobian", "fit_text_classifier", "planted_attribute_task",
           "prediction_sensitivity", "protected_token_mask", "sensitivity_vs_degree", "text_predictor"]
